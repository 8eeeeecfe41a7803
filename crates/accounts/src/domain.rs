//! Accounts' domain types, valid once constructed: emails, passwords, roles and scopes.

use std::collections::BTreeSet;
use std::fmt;

use common::problem::FieldError;
use unicode_normalization::UnicodeNormalization;

/// A syntactically valid email address, kept as given (NFC); accounts are told apart by its
/// [canonical form](Email::normalized).
///
/// Refused: control, format (zero-width, bidi overrides), private-use and unassigned
/// characters, whitespace, and compatibility characters (the Kelvin sign `K` that case-folds
/// into `k`, fullwidth letters, ligatures): an address must already be in the form it is
/// compared in, so no spelling of it can squat another account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    given: String,
    canonical: String,
}

impl Email {
    /// Accepts `local@domain` with a plausible domain, at most 254 characters.
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let invalid = |why: &str| FieldError::new("email", why);
        let trimmed = raw.trim();
        if let Some(c) = trimmed.chars().find(|c| !is_visible(*c)) {
            return Err(invalid(&format!(
                "must not contain invisible or control characters (found U+{:04X})",
                u32::from(c)
            )));
        }
        // A character that normalization replaces (the Kelvin sign becomes `K` even under
        // NFC) or that only has a compatibility form (fullwidth letters, ligatures) would
        // give a second spelling of somebody's address.
        let replaced = |c: char| {
            let mut normal = std::iter::once(c).nfc();
            normal.next() != Some(c) || normal.next().is_some()
        };
        let email: String = trimmed.nfc().collect();
        if trimmed.chars().any(replaced) || email.nfkc().ne(email.chars()) {
            return Err(invalid(
                "must not contain compatibility characters (such as the Kelvin sign or fullwidth letters); type the address in plain letters",
            ));
        }
        if email.is_empty() || email.len() > 254 {
            return Err(invalid(
                "must be an email address of at most 254 characters",
            ));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err(invalid("must be an email address (name@example.com)"));
        };
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.contains(char::is_whitespace)
            && !local.contains(['@', '"', '(', ')', ',', ':', ';', '<', '>', '[', '\\', ']']);
        if !local_ok || !domain.split('.').all(label_ok) {
            return Err(invalid("must be an email address (name@example.com)"));
        }
        let ascii_domain =
            idna::domain_to_ascii(domain).map_err(|_| invalid("must have a valid domain name"))?;
        Ok(Self {
            canonical: format!("{}@{ascii_domain}", fold(local)),
            given: email,
        })
    }

    /// The address as given (NFC).
    pub fn as_str(&self) -> &str {
        &self.given
    }

    /// The canonical form accounts are unique by and looked up by: the local part NFKC
    /// normalized and case-folded, the domain in its ASCII (IDNA) form, lowercase.
    pub fn normalized(&self) -> String {
        self.canonical.clone()
    }
}

/// The canonical form of a login name: an [`Email`]'s when it is one, else the same folding
/// of whatever was typed (it will find no user, but is throttled under one key).
pub fn email_key(raw: &str) -> String {
    Email::parse(raw).map_or_else(|_| fold(raw.trim()), |email| email.canonical)
}

/// NFKC, then full Unicode case folding (`ß` → `ss`, `K` → `k`), then NFC.
fn fold(text: &str) -> String {
    let folded = caseless::default_case_fold_str(&text.nfkc().collect::<String>());
    folded.nfc().collect()
}

/// Whether `c` is something a person can see and type in an address: not a control, format
/// (zero-width, bidi override), separator, private-use, surrogate or unassigned character.
fn is_visible(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    !matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::SpaceSeparator
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Surrogate
            | GeneralCategory::Unassigned
    )
}

/// Whether a display name may hold `c`: anything but control characters and the bidi
/// overrides and isolates that reorder the text around them.
pub fn name_char_allowed(c: char) -> bool {
    !c.is_control() && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A password within the accepted length (8–128 characters). Never logged or displayed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Accepts 8 to 128 characters.
    pub fn parse(raw: String) -> Result<Self, FieldError> {
        let length = raw.chars().count();
        if !(8..=128).contains(&length) {
            return Err(FieldError::new(
                "password",
                "must be 8 to 128 characters long",
            ));
        }
        Ok(Self(raw))
    }

    /// The secret itself, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(****)")
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A customer: their own payments.
    User,
    /// An operator: everything.
    Admin,
}

impl Role {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }

    /// Parses the stored form.
    pub fn from_db(raw: &str) -> Self {
        if raw == "admin" {
            Self::Admin
        } else {
            Self::User
        }
    }

    /// The roles listed on a user: an admin is also a user.
    pub fn names(self) -> Vec<&'static str> {
        match self {
            Self::User => vec!["user"],
            Self::Admin => vec!["user", "admin"],
        }
    }

    /// The scopes a user with this role may hold.
    pub fn scopes(self) -> Scopes {
        let mut scopes = vec![scope::PAYMENTS_READ, scope::PAYMENTS_WRITE];
        if self == Self::Admin {
            scopes.extend([scope::ACCOUNTS_ADMIN, scope::PAYMENTS_ADMIN]);
        }
        Scopes(scopes.into_iter().map(str::to_owned).collect())
    }
}

/// The scopes this system knows.
pub mod scope {
    /// Read one's payments.
    pub const PAYMENTS_READ: &str = "payments:read";
    /// Create and cancel one's payments.
    pub const PAYMENTS_WRITE: &str = "payments:write";
    /// See every principal's payments.
    pub const PAYMENTS_ADMIN: &str = "payments:admin";
    /// Administer accounts: clients, keys, imports.
    pub const ACCOUNTS_ADMIN: &str = "accounts:admin";
    /// OpenID Connect: an ID token, and `/userinfo` with the access token.
    pub const OPENID: &str = "openid";
    /// OpenID Connect: the `name` claim.
    pub const PROFILE: &str = "profile";
    /// OpenID Connect: the `email` and `email_verified` claims.
    pub const EMAIL: &str = "email";
    /// OpenID Connect: a refresh token (for a client that has the `refresh_token` grant).
    pub const OFFLINE_ACCESS: &str = "offline_access";
    /// The API scopes (what a service checks).
    pub const API: [&str; 4] = [
        PAYMENTS_READ,
        PAYMENTS_WRITE,
        PAYMENTS_ADMIN,
        ACCOUNTS_ADMIN,
    ];
    /// The OpenID Connect scopes (what the user's identity may be shown as).
    pub const IDENTITY: [&str; 4] = [OPENID, PROFILE, EMAIL, OFFLINE_ACCESS];
    /// All of them.
    pub const ALL: [&str; 8] = [
        PAYMENTS_READ,
        PAYMENTS_WRITE,
        PAYMENTS_ADMIN,
        ACCOUNTS_ADMIN,
        OPENID,
        PROFILE,
        EMAIL,
        OFFLINE_ACCESS,
    ];
}

/// A set of known scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Parses a space-separated list; unknown scopes are an error naming them.
    pub fn parse(raw: &str) -> Result<Self, String> {
        Self::from_iter_checked(raw.split_ascii_whitespace())
    }

    /// Checks each scope is known.
    pub fn from_iter_checked<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for item in items {
            if !scope::ALL.contains(&item) {
                return Err(format!("unknown scope {item:?}"));
            }
            set.insert(item.to_owned());
        }
        Ok(Self(set))
    }

    /// Whether every scope of `self` is in `allowed`.
    pub fn is_subset(&self, allowed: &Scopes) -> bool {
        self.0.is_subset(&allowed.0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Space-separated, as in tokens.
    pub fn to_claim(&self) -> String {
        self.0
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Whether `scope` is among them.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Those in both.
    pub fn intersection(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.intersection(&other.0).cloned().collect())
    }

    /// Those in either.
    pub fn union(&self, other: &Scopes) -> Scopes {
        Scopes(self.0.union(&other.0).cloned().collect())
    }

    /// The OpenID Connect scopes, which every user may grant about themselves.
    pub fn identity() -> Scopes {
        Scopes(scope::IDENTITY.iter().map(|s| (*s).to_owned()).collect())
    }

    /// The services these scopes are for (the part before `:` of the API scopes), the
    /// token's audiences.
    pub fn audiences(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .0
            .iter()
            .filter_map(|s| s.split_once(':').map(|(service, _)| service))
            .collect();
        set.into_iter().map(str::to_owned).collect()
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// `requested` narrowed to `allowed`: all of `allowed` when nothing was asked for.
    pub fn grant(requested: Option<&str>, allowed: &Scopes) -> Result<Scopes, String> {
        match requested.map(str::trim).filter(|s| !s.is_empty()) {
            None => Ok(allowed.clone()),
            Some(raw) => {
                let wanted = Scopes::parse(raw)?;
                if wanted.is_subset(allowed) {
                    Ok(wanted)
                } else {
                    Err("the requested scope exceeds what may be granted".into())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_and_compared_case_insensitively() {
        let email = Email::parse(" Ada@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "Ada@Example.COM");
        assert_eq!(email.normalized(), "ada@example.com");
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "a b@example.com",
            "ada@exa mple.com",
            "ada@-x.com",
            "ada@x..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse("admin@localhost").is_ok());
    }

    #[test]
    fn one_canonical_form_and_no_confusable_spellings() {
        // Case folding beyond ASCII, and the domain in its ASCII form.
        assert_eq!(
            Email::parse("Straße@Bücher.example").unwrap().normalized(),
            "strasse@xn--bcher-kva.example"
        );
        assert_eq!(email_key(" KEVIN@Example.com "), "kevin@example.com");
        // The Kelvin sign folds into k: refused, so it cannot squat kevin@.
        assert_eq!(email_key("\u{212A}evin@example.com"), "kevin@example.com");
        for confusable in [
            "\u{212A}evin@example.com",  // KELVIN SIGN
            "\u{FF4B}evin@example.com",  // FULLWIDTH LATIN SMALL LETTER K
            "ke\u{200B}vin@example.com", // ZERO WIDTH SPACE
            "kevin\u{202E}@example.com", // RIGHT-TO-LEFT OVERRIDE
            "kev\u{0000}in@example.com", // NUL
            "kev\u{0007}in@example.com", // BEL
            "kevin@exa\u{00AD}mple.com", // SOFT HYPHEN
            "kev\u{2028}in@example.com",
            "kev\u{E000}in@example.com", // private use
        ] {
            assert!(Email::parse(confusable).is_err(), "{confusable:?}");
        }
        // A decomposed é is the same address as a precomposed one.
        assert_eq!(
            Email::parse("re\u{0301}ne@example.com")
                .unwrap()
                .normalized(),
            Email::parse("r\u{00E9}ne@example.com")
                .unwrap()
                .normalized()
        );
    }

    #[test]
    fn passwords_are_8_to_128_characters() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("x".repeat(129)).is_err());
        assert!(Password::parse("ünïcödé!".into()).is_ok());
        assert_eq!(
            format!("{:?}", Password::parse("secret-pass".into()).unwrap()),
            "Password(****)"
        );
    }

    #[test]
    fn scopes_are_granted_within_what_is_allowed() {
        let allowed = Role::User.scopes();
        assert_eq!(Scopes::grant(None, &allowed).unwrap(), allowed);
        assert_eq!(
            Scopes::grant(Some("payments:read"), &allowed)
                .unwrap()
                .to_claim(),
            "payments:read"
        );
        assert!(Scopes::grant(Some("accounts:admin"), &allowed).is_err());
        assert!(Scopes::grant(Some("nonsense"), &allowed).is_err());
        assert_eq!(Role::Admin.scopes().audiences(), ["accounts", "payments"]);
    }
}
