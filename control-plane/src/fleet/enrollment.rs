//! Enrollment tokens: made by admins (API) or by the operator on the server itself (CLI,
//! on a stopped server's data dir), traded once by a new host for its certificate.

use std::collections::BTreeMap;
use std::path::Path;

use axon_shared::EnrollmentToken;
use time::OffsetDateTime;

use crate::fleet::pki::{Pki, PkiError};
use crate::identity::auth::{new_id, secret_digest};
use crate::model::{EnrollToken, Store, now};
use crate::store::StoreError;

/// Default token lifetime, seconds.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Longest token lifetime, seconds.
pub const MAX_TTL_SECS: u64 = 7 * 86_400;
const MAX_LABELS: usize = 32;
const MAX_LABEL_LEN: usize = 128;

/// A token just made; the text is shown once and never stored.
#[derive(Debug)]
pub struct NewToken {
    pub id: String,
    pub token: String,
    pub expires_at: OffsetDateTime,
}

/// Token creation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the data dir is not initialised ({0}); run `axon-cp init` first")]
    Pki(#[from] PkiError),
}

fn valid_label(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_LABEL_LEN && !s.chars().any(char::is_control)
}

/// Checks a lifetime and labels.
pub fn validate(ttl_secs: u64, labels: &BTreeMap<String, String>) -> Result<(), TokenError> {
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(TokenError::Invalid(format!(
            "ttl must be between 1 s and {MAX_TTL_SECS} s"
        )));
    }
    if labels.len() > MAX_LABELS || !labels.iter().all(|(k, v)| valid_label(k) && valid_label(v)) {
        return Err(TokenError::Invalid(format!(
            "labels: at most {MAX_LABELS}, keys and values 1 to {MAX_LABEL_LEN} printable characters"
        )));
    }
    Ok(())
}

/// Makes and stores (hashed) a new token. The caller flushes.
pub fn create(
    store: &Store,
    ca_fingerprint: [u8; 32],
    created_by: &str,
    ttl_secs: u64,
    labels: BTreeMap<String, String>,
) -> Result<NewToken, TokenError> {
    validate(ttl_secs, &labels)?;
    let token = EnrollmentToken {
        ca_fingerprint,
        secret: rand::random(),
    };
    let record = EnrollToken {
        id: new_id(),
        created_by: created_by.to_owned(),
        created_at: now(),
        expires_at: now() + time::Duration::seconds(i64::try_from(ttl_secs).unwrap_or(3600)),
        labels,
    };
    store
        .enroll_tokens
        .put(&secret_digest(&token.secret), &record)?;
    Ok(NewToken {
        id: record.id,
        token: token.encode(),
        expires_at: record.expires_at,
    })
}

/// Makes a token directly in a data dir whose server is stopped (sled allows one process).
pub fn create_offline(
    data_dir: &Path,
    ttl_secs: u64,
    labels: BTreeMap<String, String>,
) -> Result<NewToken, TokenError> {
    let pki = Pki::load(data_dir)?;
    let store = Store::open(&data_dir.join("db"))?;
    let token = create(&store, pki.ca_fingerprint(), "cli", ttl_secs, labels)?;
    store.db.flush_blocking()?;
    Ok(token)
}
