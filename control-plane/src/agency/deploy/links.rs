//! Download links for an order's artifacts, handed to the n8n workflow with a WhatsApp deploy:
//! `/api/artifacts/{token}`, where the token names the order and an expiry and carries an
//! HMAC over both with a key kept in the store. No login is needed; the link is the grant.

use aws_lc_rs::hmac;
use time::OffsetDateTime;

use crate::store::{Db, StoreError};

/// How long a link works.
pub const LINK_LIFETIME: time::Duration = time::Duration::days(7);

pub struct Links {
    key: hmac::Key,
}

impl Links {
    /// Loads the signing key, making it on first use.
    pub fn open(db: &Db) -> Result<Self, StoreError> {
        let tree = db.tree::<String>("deploy_keys")?;
        let secret = match tree.get("artifact_links")? {
            Some(s) => s,
            None => {
                let fresh = crate::identity::auth::random_secret("alk_");
                if tree.insert_new("artifact_links", &fresh)? {
                    fresh
                } else {
                    tree.get("artifact_links")?.unwrap_or(fresh)
                }
            }
        };
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        })
    }

    fn mac(&self, order_id: &str, expires: i64) -> hmac::Tag {
        hmac::sign(&self.key, format!("{order_id}.{expires}").as_bytes())
    }

    /// A token for `order_id` valid until `expires`.
    pub fn token(&self, order_id: &str, expires: OffsetDateTime) -> String {
        let expires = expires.unix_timestamp();
        let mac = self.mac(order_id, expires);
        format!(
            "{order_id}.{expires}.{}",
            axon_shared::hex_encode(mac.as_ref())
        )
    }

    /// The order a token names, if it is genuine and unexpired.
    pub fn verify(&self, token: &str, at: OffsetDateTime) -> Option<String> {
        let mut parts = token.splitn(3, '.');
        let (order_id, expires, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: i64 = expires.parse().ok()?;
        let mac = axon_shared::hex_decode(mac)?;
        if order_id.is_empty() || order_id.len() > 64 {
            return None;
        }
        hmac::verify(&self.key, format!("{order_id}.{expires}").as_bytes(), &mac).ok()?;
        (at.unix_timestamp() < expires).then(|| order_id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_expire_and_cannot_be_forged_or_moved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        let links = Links::open(&db).expect("links");
        let now = OffsetDateTime::now_utc();
        let token = links.token("01ORDER", now + LINK_LIFETIME);
        assert_eq!(links.verify(&token, now).as_deref(), Some("01ORDER"));
        assert_eq!(links.verify(&token, now + LINK_LIFETIME), None);
        // Another order, a later expiry, or a changed MAC: refused.
        let (_, rest) = token.split_once('.').expect("dot");
        assert_eq!(links.verify(&format!("01OTHER.{rest}"), now), None);
        let (head, mac) = token.rsplit_once('.').expect("dot");
        let (order, _) = head.split_once('.').expect("dot");
        let later = (now + LINK_LIFETIME * 10i32).unix_timestamp();
        assert_eq!(links.verify(&format!("{order}.{later}.{mac}"), now), None);
        let mut bad = token.clone();
        bad.pop();
        bad.push(if token.ends_with('0') { '1' } else { '0' });
        assert_eq!(links.verify(&bad, now), None);
        assert_eq!(links.verify("garbage", now), None);
        // The key survives a reopen; a new store's key does not accept the old token.
        drop(links);
        let again = Links::open(&db).expect("links");
        assert!(again.verify(&token, now).is_some());
        let other = tempfile::tempdir().expect("tempdir");
        let other = Links::open(&Db::open(other.path()).expect("db")).expect("links");
        assert_eq!(other.verify(&token, now), None);
    }
}
