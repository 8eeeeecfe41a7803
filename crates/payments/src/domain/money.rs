//! Money: an amount in integer minor units of an ISO 4217 currency, converted exactly (never
//! through a float) from a decimal in major units.

use std::fmt;

use iso_currency::Currency;

/// The largest amount accepted, in minor units (fits comfortably in i64 and in JSON numbers).
pub const MAX_MINOR: i64 = 999_999_999_999;

/// A positive amount of a currency that has minor units (ISO 4217 exponent 0–4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    minor: i64,
    currency: Currency,
    exponent: u32,
}

/// Why an amount or a currency was refused; names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoneyError {
    /// `amount` or `currency`.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn amount_error(message: impl Into<String>) -> MoneyError {
    MoneyError {
        field: "amount",
        message: message.into(),
    }
}

/// Parses a currency code (any case): a real ISO 4217 currency with minor units defined.
/// The ISO 4217 codes of every currency that can be charged (those with minor units), sorted.
pub fn chargeable_currencies() -> Vec<&'static str> {
    use iso_currency::IntoEnumIterator;
    let mut codes: Vec<&'static str> = Currency::iter()
        .filter(|currency| currency.exponent().is_some())
        .map(|currency| currency.code())
        .collect();
    codes.sort_unstable();
    codes
}

/// Parses an ISO 4217 code (case-insensitive) of a currency that can be charged.
pub fn parse_currency(raw: &str) -> Result<(Currency, u32), MoneyError> {
    let code = raw.trim().to_ascii_uppercase();
    let unknown = || MoneyError {
        field: "currency",
        message: format!("{raw:?} is not an ISO 4217 currency code that can be charged"),
    };
    let currency = Currency::from_code(&code).ok_or_else(unknown)?;
    let exponent = currency.exponent().ok_or_else(unknown)?;
    Ok((currency, u32::from(exponent)))
}

impl Money {
    /// From a decimal in major units (`"100.00"`, `100.5`, `1e2`), exactly: more decimal places
    /// than the currency has, zero, negatives and absurd sizes are refused.
    pub fn from_major(
        decimal: &str,
        currency: Currency,
        exponent: u32,
    ) -> Result<Self, MoneyError> {
        let minor = decimal_to_minor(decimal.trim(), exponent)?;
        if minor <= 0 {
            return Err(amount_error("must be greater than zero"));
        }
        if minor > MAX_MINOR {
            return Err(amount_error("is too large"));
        }
        Ok(Self {
            minor,
            currency,
            exponent,
        })
    }

    /// From stored minor units.
    pub fn from_minor(minor: i64, code: &str) -> Result<Self, MoneyError> {
        let (currency, exponent) = parse_currency(code)?;
        Ok(Self {
            minor,
            currency,
            exponent,
        })
    }

    /// Integer minor units (cents for USD, yen for JPY).
    pub fn minor(&self) -> i64 {
        self.minor
    }

    /// The ISO code, upper case.
    pub fn currency_code(&self) -> &'static str {
        self.currency.code()
    }
}

impl fmt::Display for Money {
    /// The major-unit decimal with exactly the currency's decimals: `100.00`, `100`, `1.500`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = 10i64.pow(self.exponent);
        let (whole, fraction) = (self.minor / scale, self.minor % scale);
        if self.exponent == 0 {
            write!(f, "{whole}")
        } else {
            write!(
                f,
                "{whole}.{fraction:0width$}",
                width = self.exponent as usize
            )
        }
    }
}

/// Converts a JSON-number-like decimal to minor units without floating point.
fn decimal_to_minor(text: &str, exponent: u32) -> Result<i64, MoneyError> {
    let malformed = || amount_error(format!("{text:?} is not a decimal number"));
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, power) = match unsigned.find(['e', 'E']) {
        Some(at) => {
            let power: i64 = unsigned[at + 1..].parse().map_err(|_| malformed())?;
            (&unsigned[..at], power)
        }
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || (mantissa.contains('.') && fraction.is_empty())
    {
        return Err(malformed());
    }
    // digits × 10^(power − len(fraction)) major units = digits × 10^(power − len(fraction) + exponent) minor.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if negative && !digits.is_empty() {
        return Err(amount_error("must be greater than zero"));
    }
    let shift = power - fraction.len() as i64 + i64::from(exponent);
    let (kept, dropped) = if shift >= 0 {
        (
            format!(
                "{digits}{}",
                "0".repeat(usize::try_from(shift.min(40)).unwrap_or(40))
            ),
            "",
        )
    } else {
        let cut = usize::try_from(-shift).unwrap_or(usize::MAX);
        if cut >= digits.len() {
            (String::new(), digits)
        } else {
            let (kept, dropped) = digits.split_at(digits.len() - cut);
            (kept.to_owned(), dropped)
        }
    };
    if dropped.bytes().any(|b| b != b'0') {
        return Err(amount_error(format!(
            "has more decimal places than the currency allows ({exponent})"
        )));
    }
    if kept.is_empty() {
        return Ok(0);
    }
    if kept.len() > 18 {
        return Err(amount_error("is too large"));
    }
    kept.parse().map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(amount: &str, currency: &str) -> Result<Money, MoneyError> {
        let (currency, exponent) = parse_currency(currency)?;
        Money::from_major(amount, currency, exponent)
    }

    #[test]
    fn amounts_convert_exactly_to_minor_units() {
        assert_eq!(money("100.00", "USD").unwrap().minor(), 10_000);
        assert_eq!(money("100", "USD").unwrap().minor(), 10_000);
        assert_eq!(money("0.1", "USD").unwrap().minor(), 10);
        assert_eq!(money("19.99", "usd").unwrap().minor(), 1_999);
        assert_eq!(money("100.000", "USD").unwrap().minor(), 10_000);
        assert_eq!(money("1e2", "USD").unwrap().minor(), 10_000);
        assert_eq!(money("1.5E1", "EUR").unwrap().minor(), 1_500);
        assert_eq!(money("100", "JPY").unwrap().minor(), 100);
        assert_eq!(money("1.234", "BHD").unwrap().minor(), 1_234);
        assert_eq!(
            money("0.30000000000000004e1", "USD").unwrap_err().field,
            "amount"
        );
    }

    #[test]
    fn bad_amounts_and_currencies_are_refused_by_field() {
        for (amount, currency, field) in [
            ("100.001", "USD", "amount"),
            ("100.5", "JPY", "amount"),
            ("0", "USD", "amount"),
            ("0.00", "USD", "amount"),
            ("-5", "USD", "amount"),
            ("abc", "USD", "amount"),
            ("1.", "USD", "amount"),
            ("", "USD", "amount"),
            ("1e400", "USD", "amount"),
            ("10000000000", "USD", "amount"),
            ("10", "XYZ", "currency"),
            ("10", "XAU", "currency"),
            ("10", "US", "currency"),
        ] {
            assert_eq!(
                money(amount, currency).unwrap_err().field,
                field,
                "{amount} {currency}"
            );
        }
    }

    #[test]
    fn display_has_the_currency_decimals() {
        assert_eq!(money("100", "USD").unwrap().to_string(), "100.00");
        assert_eq!(money("0.05", "USD").unwrap().to_string(), "0.05");
        assert_eq!(money("100", "JPY").unwrap().to_string(), "100");
        assert_eq!(money("1.5", "BHD").unwrap().to_string(), "1.500");
    }
}
