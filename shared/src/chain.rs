//! The hash chain both audit trails use, and the signed checkpoint of a chain's head.
//!
//! Each record carries the SHA-256 of the record before it and its own (computed with `hash`
//! empty), so editing, removing or reordering a record breaks the chain. Cutting records off
//! the end leaves a valid chain, so the head is anchored apart from the records: a checkpoint
//! `(seq, hash)` with an HMAC-SHA256 under a key kept beside the trail. A trail whose end falls
//! short of its checkpoint, or disagrees with it, was cut or rewritten.

use aws_lc_rs::hmac;
use serde::{Deserialize, Serialize};

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex_encode(&sha256(bytes))
}

/// A record of a hash-chained trail.
pub trait Chained: Serialize + Clone {
    fn seq(&self) -> u64;
    fn prev_hash(&self) -> &str;
    fn hash(&self) -> &str;
    /// Places the record after `(seq, hash)` of the one before it.
    fn link(&mut self, seq: u64, prev_hash: String);
    fn set_hash(&mut self, hash: String);
}

/// SHA-256 (hex) of the record serialised with `hash` empty.
pub fn digest<T: Chained>(record: &T) -> String {
    let mut unsigned = record.clone();
    unsigned.set_hash(String::new());
    // Records are plain strings and numbers: serialising cannot fail.
    sha256_hex(&serde_json::to_vec(&unsigned).unwrap_or_default())
}

/// Links `record` after `head` (`None`: the first record) and computes its hash.
pub fn seal<T: Chained>(record: &mut T, head: Option<(u64, &str)>) {
    let (seq, prev) = match head {
        Some((seq, hash)) => (seq + 1, hash.to_owned()),
        None => (1, GENESIS.to_owned()),
    };
    record.link(seq, prev);
    let hash = digest(record);
    record.set_hash(hash);
}

/// Why a trail does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("its content does not match its hash (edited)")]
    Edited,
    #[error("it does not follow record {0} (a record was removed, inserted or reordered)")]
    Unlinked(u64),
    #[error("sequence jumps from {from} to {to}")]
    SeqJump { from: u64, to: u64 },
    #[error("the first record does not start the chain")]
    BadStart,
    #[error(
        "the trail ends at record {last} but its signed head is record {head} (records were cut off the end)"
    )]
    Truncated { last: u64, head: u64 },
    #[error("record {0} differs from the signed head (the trail was rewritten)")]
    HeadMismatch(u64),
    #[error("the signed head's signature does not verify")]
    BadSignature,
}

/// Walks a trail record by record.
#[derive(Debug, Default)]
pub struct ChainCheck {
    last: Option<(u64, String)>,
    head: Option<Checkpoint>,
    count: usize,
}

impl ChainCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// Also checks the trail against a verified checkpoint of its head.
    pub fn with_head(head: Checkpoint) -> Self {
        Self {
            head: Some(head),
            ..Self::default()
        }
    }

    /// Checks the next record.
    pub fn check<T: Chained>(&mut self, record: &T) -> Result<(), ChainBreak> {
        if digest(record) != record.hash() {
            return Err(ChainBreak::Edited);
        }
        match &self.last {
            Some((seq, hash)) => {
                if record.prev_hash() != hash {
                    return Err(ChainBreak::Unlinked(*seq));
                }
                if record.seq() != seq + 1 {
                    return Err(ChainBreak::SeqJump {
                        from: *seq,
                        to: record.seq(),
                    });
                }
            }
            // The oldest records may have been rotated away; a trail that claims to start
            // must start at the genesis.
            None if record.seq() <= 1 && record.prev_hash() != GENESIS => {
                return Err(ChainBreak::BadStart);
            }
            None => {}
        }
        if let Some(head) = &self.head
            && head.seq == record.seq()
            && head.hash != record.hash()
        {
            return Err(ChainBreak::HeadMismatch(head.seq));
        }
        self.last = Some((record.seq(), record.hash().to_owned()));
        self.count += 1;
        Ok(())
    }

    /// Ends the walk: the number of records checked, once the end reaches the head.
    pub fn finish(self) -> Result<usize, ChainBreak> {
        if let Some(head) = &self.head {
            let last = self.last.as_ref().map_or(0, |(seq, _)| *seq);
            if last < head.seq {
                return Err(ChainBreak::Truncated {
                    last,
                    head: head.seq,
                });
            }
        }
        Ok(self.count)
    }

    /// The last record checked.
    pub fn last(&self) -> Option<(u64, &str)> {
        self.last.as_ref().map(|(seq, hash)| (*seq, hash.as_str()))
    }
}

/// The head of a trail as it was last written, signed with the trail's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: String,
    /// HMAC-SHA256 (hex) of `axon-audit-head:v1:{seq}:{hash}`.
    pub mac: String,
}

fn head_message(seq: u64, hash: &str) -> String {
    format!("axon-audit-head:v1:{seq}:{hash}")
}

impl Checkpoint {
    /// Signs the head `(seq, hash)`.
    pub fn sign(seq: u64, hash: &str, key: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        let tag = hmac::sign(&key, head_message(seq, hash).as_bytes());
        Self {
            seq,
            hash: hash.to_owned(),
            mac: crate::hex_encode(tag.as_ref()),
        }
    }

    /// Checks the signature (in constant time).
    pub fn verify(&self, key: &[u8]) -> Result<(), ChainBreak> {
        let tag = crate::hex_decode(&self.mac).ok_or(ChainBreak::BadSignature)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, key);
        hmac::verify(&key, head_message(self.seq, &self.hash).as_bytes(), &tag)
            .map_err(|_| ChainBreak::BadSignature)
    }
}

/// Implements [`Chained`] for a record type with `seq: u64`, `prev_hash: String` and
/// `hash: String` fields.
#[macro_export]
macro_rules! chained_record {
    ($t:ty) => {
        impl $crate::chain::Chained for $t {
            fn seq(&self) -> u64 {
                self.seq
            }
            fn prev_hash(&self) -> &str {
                &self.prev_hash
            }
            fn hash(&self) -> &str {
                &self.hash
            }
            fn link(&mut self, seq: u64, prev_hash: String) {
                self.seq = seq;
                self.prev_hash = prev_hash;
            }
            fn set_hash(&mut self, hash: String) {
                self.hash = hash;
            }
        }
    };
}

crate::chained_record!(crate::AuditRecord);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Serialize)]
    struct R {
        seq: u64,
        body: String,
        prev_hash: String,
        hash: String,
    }

    crate::chained_record!(R);

    fn trail(n: usize) -> Vec<R> {
        let mut out: Vec<R> = Vec::new();
        for i in 0..n {
            let mut r = R {
                seq: 0,
                body: format!("r{i}"),
                prev_hash: String::new(),
                hash: String::new(),
            };
            seal(&mut r, out.last().map(|p| (p.seq, p.hash.as_str())));
            out.push(r);
        }
        out
    }

    fn walk(records: &[R], head: Option<Checkpoint>) -> Result<usize, ChainBreak> {
        let mut check = head.map_or_else(ChainCheck::new, ChainCheck::with_head);
        for r in records {
            check.check(r)?;
        }
        check.finish()
    }

    #[test]
    fn breaks_are_named() {
        let good = trail(5);
        assert_eq!(walk(&good, None), Ok(5));
        let mut edited = good.clone();
        edited[2].body = "x".into();
        assert_eq!(walk(&edited, None), Err(ChainBreak::Edited));
        let mut removed = good.clone();
        removed.remove(2);
        assert_eq!(walk(&removed, None), Err(ChainBreak::Unlinked(2)));
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert_eq!(walk(&swapped, None), Err(ChainBreak::Unlinked(1)));
        // A suffix (older files rotated away) still verifies.
        assert_eq!(walk(&good[2..], None), Ok(3));
    }

    #[test]
    fn a_signed_head_catches_cut_and_rewritten_ends() {
        let key = b"a key kept apart from the trail";
        let good = trail(5);
        let head = Checkpoint::sign(5, &good[4].hash, key);
        head.verify(key).expect("signature");
        assert_eq!(walk(&good, Some(head.clone())), Ok(5));
        assert_eq!(
            walk(&good[..3], Some(head.clone())),
            Err(ChainBreak::Truncated { last: 3, head: 5 })
        );
        // The same length, rebuilt with other content, is a valid chain but not this head.
        let mut other = trail(4);
        let mut last = R {
            seq: 0,
            body: "forged".into(),
            prev_hash: String::new(),
            hash: String::new(),
        };
        seal(&mut last, Some((4, &other[3].hash)));
        other.push(last);
        assert_eq!(
            walk(&other, Some(head.clone())),
            Err(ChainBreak::HeadMismatch(5))
        );
        // A checkpoint moved back with the old signature, or signed with another key, fails.
        let mut moved = head.clone();
        moved.seq = 3;
        moved.hash = good[2].hash.clone();
        assert_eq!(moved.verify(key), Err(ChainBreak::BadSignature));
        assert_eq!(head.verify(b"another key"), Err(ChainBreak::BadSignature));
    }
}
