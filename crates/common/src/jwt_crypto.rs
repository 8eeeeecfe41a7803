//! The process's JWT crypto provider: `jsonwebtoken`'s pure-Rust (`rust_crypto`) backend for
//! everything, except RSA signature verification, which goes to `ring`.
//!
//! Why by hand: verifying an RS256 access token is the one crypto operation on every
//! authenticated request, and `rust_crypto` does it with `num-bigint-dig` (under load, 39 % of
//! accounts' CPU went to its Montgomery multiplication). `ring`, already in the tree for
//! rustls, verifies RSA PKCS#1 v1.5 and PSS signatures with constant-time assembly several
//! times faster. `jsonwebtoken`'s other backend (`aws_lc_rs`) would do the same but builds
//! AWS-LC from C for every build; `jsonwebtoken` takes a custom provider instead
//! (`CryptoProvider::install_default`), which this is: a few lines that only pick ring's
//! algorithm for the token's and hand ring the key's parts. Signing, EdDSA, ECDSA, HMAC and
//! the JWK utilities stay with `rust_crypto`.
//!
//! ring refuses RSA keys shorter than 2048 bits (NIST's floor since 2013); accounts makes
//! 2048-bit keys or longer.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils, rust_crypto};
use jsonwebtoken::errors::Error;
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as ring_signature, RsaParameters, UnparsedPublicKey};

/// Installs the provider for this process (the first call wins; later ones do nothing). Call
/// it before any other use of `jsonwebtoken`: its first use fixes the provider for good.
pub fn install() {
    let _ = PROVIDER.install_default();
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils {
        rsa_pub_components_from_private_key: |der| {
            (rust_crypto::DEFAULT_PROVIDER
                .key_utils
                .rsa_pub_components_from_private_key)(der)
        },
        rsa_pub_components_from_public_key: |der| {
            (rust_crypto::DEFAULT_PROVIDER
                .key_utils
                .rsa_pub_components_from_public_key)(der)
        },
        ec_pub_components_from_private_key: |der, curve| {
            (rust_crypto::DEFAULT_PROVIDER
                .key_utils
                .ec_pub_components_from_private_key)(der, curve)
        },
        ed_pub_components_from_private_key: |der, curve| {
            (rust_crypto::DEFAULT_PROVIDER
                .key_utils
                .ed_pub_components_from_private_key)(der, curve)
        },
        compute_digest: |data, hash| {
            (rust_crypto::DEFAULT_PROVIDER.key_utils.compute_digest)(data, hash)
        },
    },
};

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    (rust_crypto::DEFAULT_PROVIDER.signer_factory)(algorithm, key)
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let parameters: &'static RsaParameters = match algorithm {
        Algorithm::RS256 => &ring_signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring_signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring_signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring_signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring_signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring_signature::RSA_PSS_2048_8192_SHA512,
        _ => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
    };
    let key = match key.kind() {
        DecodingKeyKind::RsaModulusExponent { n, e } => RsaKey::Components {
            n: n.clone(),
            e: e.clone(),
        },
        // A PKCS#1 RSAPublicKey in DER, as `DecodingKey::from_rsa_pem`/`from_rsa_der` keep it.
        DecodingKeyKind::SecretOrDer(der) => RsaKey::Der(der.clone()),
    };
    Ok(Box::new(RingRsaVerifier {
        algorithm: *algorithm,
        parameters,
        key,
    }))
}

enum RsaKey {
    Components { n: Vec<u8>, e: Vec<u8> },
    Der(Vec<u8>),
}

struct RingRsaVerifier {
    algorithm: Algorithm,
    parameters: &'static RsaParameters,
    key: RsaKey,
}

impl signature::Verifier<Vec<u8>> for RingRsaVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        let verified =
            match &self.key {
                RsaKey::Components { n, e } => ring_signature::RsaPublicKeyComponents { n, e }
                    .verify(self.parameters, message, signature),
                RsaKey::Der(der) => {
                    UnparsedPublicKey::new(self.parameters, der).verify(message, signature)
                }
            };
        verified.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingRsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;

    fn keys(bits: usize) -> (EncodingKey, DecodingKey, DecodingKey) {
        let private = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), bits).unwrap();
        let der = private.to_pkcs1_der().unwrap();
        let public = private.to_public_key();
        let components = DecodingKey::from_rsa_raw_components(
            &public.n().to_bytes_be(),
            &public.e().to_bytes_be(),
        );
        use rsa::pkcs1::EncodeRsaPublicKey;
        let public_der = DecodingKey::from_rsa_der(public.to_pkcs1_der().unwrap().as_bytes());
        (
            EncodingKey::from_rsa_der(der.as_bytes()),
            components,
            public_der,
        )
    }

    /// Signs `message` with rust_crypto's signer; verifies it with this provider's verifier.
    fn verifies(
        algorithm: Algorithm,
        signing: &EncodingKey,
        key: &DecodingKey,
        message: &[u8],
    ) -> bool {
        let signature = signer(&algorithm, signing)
            .unwrap()
            .try_sign(b"the message")
            .unwrap();
        let verifier = verifier(&algorithm, key).unwrap();
        assert_eq!(verifier.algorithm(), algorithm);
        verifier.verify(message, &signature).is_ok()
    }

    #[test]
    fn ring_verifies_what_rust_crypto_signs_and_nothing_else() {
        let (signing, components, der) = keys(2048);
        for algorithm in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
        ] {
            assert!(
                verifies(algorithm, &signing, &components, b"the message"),
                "{algorithm:?}"
            );
            assert!(
                verifies(algorithm, &signing, &der, b"the message"),
                "{algorithm:?} (DER)"
            );
            assert!(
                !verifies(algorithm, &signing, &components, b"another message"),
                "{algorithm:?}"
            );
        }
        let (_, other, _) = keys(2048);
        assert!(
            !verifies(Algorithm::RS256, &signing, &other, b"the message"),
            "another key"
        );
        // Keys under 2048 bits are refused.
        let (short, short_key, _) = keys(1024);
        assert!(!verifies(
            Algorithm::RS256,
            &short,
            &short_key,
            b"the message"
        ));
    }

    #[test]
    fn the_installed_provider_verifies_tokens() {
        install();
        let (signing, key, _) = keys(2048);
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::RS256),
            &serde_json::json!({"sub": "x", "exp": 4_000_000_000u64}),
            &signing,
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
        assert_eq!(claims.claims["sub"], "x");
    }
}
