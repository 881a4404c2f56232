//! Enrollment tokens: `axe1.<CA SHA-256 in hex>.<secret in hex>`.
//!
//! The CA fingerprint lets a new agent pin the control plane's CA on first contact; the secret is
//! what the control plane stores hashed and accepts once.

use crate::id::{hex_decode, hex_encode};

const PREFIX: &str = "axe1";

/// A parsed enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// SHA-256 of the control plane's CA certificate (DER).
    pub ca_fingerprint: [u8; 32],
    /// The single-use secret.
    pub secret: [u8; 32],
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("ca_fingerprint", &hex_encode(&self.ca_fingerprint))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a token could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// The text is not `axe1.<64 hex>.<64 hex>`.
    #[error("enrollment token is malformed (expected axe1.<64 hex>.<64 hex>)")]
    Malformed,
}

impl EnrollmentToken {
    /// The token's text form.
    pub fn encode(&self) -> String {
        format!(
            "{PREFIX}.{}.{}",
            hex_encode(&self.ca_fingerprint),
            hex_encode(&self.secret)
        )
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let mut parts = text.trim().split('.');
        let (Some(PREFIX), Some(fp), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let to_array = |hex: &str| -> Result<[u8; 32], TokenError> {
            hex_decode(hex)
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or(TokenError::Malformed)
        };
        Ok(Self {
            ca_fingerprint: to_array(fp)?,
            secret: to_array(secret)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips_and_hides_secret() {
        let t = EnrollmentToken {
            ca_fingerprint: [7; 32],
            secret: [9; 32],
        };
        let text = t.encode();
        assert_eq!(EnrollmentToken::parse(&text), Ok(t.clone()));
        assert!(!format!("{t:?}").contains("0909"));
    }

    #[test]
    fn token_refuses_malformed() {
        for bad in [
            "",
            "axe1",
            "axe2.00.00",
            "axe1.zz.zz",
            &format!("axe1.{}.{}", "a".repeat(64), "b".repeat(62)),
            &format!("axe1.{}.{}.x", "a".repeat(64), "b".repeat(64)),
        ] {
            assert_eq!(
                EnrollmentToken::parse(bad),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }
}
