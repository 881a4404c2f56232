//! Embedded storage: sled on disk, one tree per aggregate, values as versioned JSON.
//!
//! Each value is stored as `{"v":1,"data":...}` so a later build can migrate old records.
//! Callers flush (`Store::flush`) before telling a client that a write succeeded.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version written into every stored value.
const RECORD_VERSION: u32 = 1;

/// A storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data dir is held by another process (sled's file lock).
    #[error("data dir {path} is in use by another axon-cp process")]
    Locked { path: PathBuf },
    /// The database could not be opened.
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    /// A read or write failed.
    #[error("store {op} on tree {tree} failed: {source}")]
    Io {
        op: &'static str,
        tree: &'static str,
        source: sled::Error,
    },
    /// A file beside the database could not be opened or written.
    #[error("cannot open {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A stored value could not be decoded.
    #[error("stored record {tree}/{key} is unreadable: {source}")]
    Corrupt {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
    /// A value could not be encoded (nothing was written).
    #[error("a record for {tree}/{key} could not be encoded: {source}")]
    Encode {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    data: T,
}

/// A sled tree holding values of one type.
pub struct Tree<T> {
    inner: sled::Tree,
    name: &'static str,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Tree<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            name: self.name,
            _kind: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Tree<T> {
    fn open(db: &sled::Db, name: &'static str) -> Result<Self, StoreError> {
        let inner = db.open_tree(name).map_err(|source| StoreError::Io {
            op: "open_tree",
            tree: name,
            source,
        })?;
        Ok(Self {
            inner,
            name,
            _kind: PhantomData,
        })
    }

    fn io(&self, op: &'static str) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Io {
            op,
            tree: self.name,
            source,
        }
    }

    fn decode(&self, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice::<Envelope<T>>(bytes)
            .map(|e| e.data)
            .map_err(|source| StoreError::Corrupt {
                tree: self.name,
                key: String::from_utf8_lossy(key).into_owned(),
                source,
            })
    }

    /// Encodes a value; a failure is an error, never an empty record.
    fn encode(&self, key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(&Envelope {
            v: RECORD_VERSION,
            data: value,
        })
        .map_err(|source| StoreError::Encode {
            tree: self.name,
            key: key.to_owned(),
            source,
        })
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.inner.get(key).map_err(self.io("get"))? {
            Some(bytes) => self.decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn put(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.inner
            .insert(key, self.encode(key, value)?)
            .map_err(self.io("insert"))?;
        Ok(())
    }

    /// Stores several values in one atomic batch (cheaper than one insert each).
    pub fn put_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, &'a T)>,
    ) -> Result<(), StoreError>
    where
        T: 'a,
    {
        let mut batch = sled::Batch::default();
        for (key, value) in items {
            batch.insert(key.as_bytes(), self.encode(key, value)?);
        }
        self.inner
            .apply_batch(batch)
            .map_err(self.io("apply_batch"))
    }

    /// Stores `value` only if `key` is free; returns false when it was taken.
    pub fn insert_new(&self, key: &str, value: &T) -> Result<bool, StoreError> {
        let swapped = self
            .inner
            .compare_and_swap(key, None::<&[u8]>, Some(self.encode(key, value)?))
            .map_err(self.io("compare_and_swap"))?;
        Ok(swapped.is_ok())
    }

    /// Removes and returns the value under `key`; exactly one concurrent caller gets it.
    pub fn take(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.inner.remove(key).map_err(self.io("remove"))? {
            Some(bytes) => self.decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Applies `change` to the value under `key` atomically (retrying on a concurrent write)
    /// and returns the new value; `None` when the key is absent.
    pub fn update(
        &self,
        key: &str,
        mut change: impl FnMut(&mut T),
    ) -> Result<Option<T>, StoreError> {
        loop {
            let Some(old) = self.inner.get(key).map_err(self.io("get"))? else {
                return Ok(None);
            };
            let mut value = self.decode(key.as_bytes(), &old)?;
            change(&mut value);
            let new = self.encode(key, &value)?;
            let swapped = self
                .inner
                .compare_and_swap(key, Some(&old), Some(new))
                .map_err(self.io("compare_and_swap"))?;
            if swapped.is_ok() {
                return Ok(Some(value));
            }
        }
    }

    /// Every value, in key order.
    pub fn values(&self) -> Result<Vec<T>, StoreError> {
        self.inner
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(self.io("iter"))?;
                self.decode(&k, &v)
            })
            .collect()
    }

    /// Every key and value, in key order.
    pub fn entries(&self) -> Result<Vec<(String, T)>, StoreError> {
        self.inner
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(self.io("iter"))?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    self.decode(&k, &v)?,
                ))
            })
            .collect()
    }

    /// The value with the greatest key.
    pub fn last(&self) -> Result<Option<T>, StoreError> {
        match self.inner.last().map_err(self.io("last"))? {
            Some((k, v)) => self.decode(&k, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Up to `limit` values matching `keep`, from the greatest key down, below `upper` if given.
    pub fn scan_rev(
        &self,
        upper: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let iter = match upper {
            Some(u) => self.inner.range(..u.as_bytes()),
            None => self.inner.iter(),
        };
        let mut out = Vec::new();
        for item in iter.rev() {
            let (k, v) = item.map_err(self.io("iter"))?;
            let value = self.decode(&k, &v)?;
            if keep(&value) {
                out.push(value);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Entries with keys in `from..to`, in key order.
    pub fn range(&self, from: &str, to: &str) -> Result<Vec<(String, T)>, StoreError> {
        let mut out = Vec::new();
        for item in self.inner.range(from.as_bytes()..to.as_bytes()) {
            let (k, v) = item.map_err(self.io("range"))?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                self.decode(&k, &v)?,
            ));
        }
        Ok(out)
    }

    /// Removes the entries with keys in `from..to`; returns how many.
    pub fn remove_range(&self, from: &str, to: &str) -> Result<usize, StoreError> {
        let mut removed = 0;
        for item in self.inner.range(from.as_bytes()..to.as_bytes()) {
            let (k, _) = item.map_err(self.io("range"))?;
            self.inner.remove(k).map_err(self.io("remove"))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// Writes over several trees applied in one sled transaction: all of them or none. A write
/// may be guarded by the value it replaces, so a concurrent change makes `apply` answer
/// `Ok(false)` and write nothing (optimistic concurrency).
#[derive(Default)]
pub struct Writes {
    trees: Vec<(sled::Tree, &'static str)>,
    ops: Vec<WriteOp>,
}

struct WriteOp {
    tree: usize,
    key: String,
    value: Option<Vec<u8>>,
    /// `Some(None)`: the key must be absent; `Some(Some(v))`: it must hold exactly `v`.
    expect: Option<Option<Vec<u8>>>,
}

/// A value as read, for guarding a later write with it.
#[derive(Debug, Clone)]
pub struct Snapshot<T> {
    pub value: T,
    raw: Vec<u8>,
}

impl<T: Serialize + DeserializeOwned> Tree<T> {
    /// The value under `key` with its stored bytes, for `Writes::replace`.
    pub fn get_snapshot(&self, key: &str) -> Result<Option<Snapshot<T>>, StoreError> {
        match self.inner.get(key).map_err(self.io("get"))? {
            Some(bytes) => Ok(Some(Snapshot {
                value: self.decode(key.as_bytes(), &bytes)?,
                raw: bytes.to_vec(),
            })),
            None => Ok(None),
        }
    }
}

impl Writes {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot<T>(&mut self, tree: &Tree<T>) -> usize {
        match self.trees.iter().position(|(_, n)| *n == tree.name) {
            Some(i) => i,
            None => {
                self.trees.push((tree.inner.clone(), tree.name));
                self.trees.len() - 1
            }
        }
    }

    /// Stores `value` under `key`.
    pub fn put<T: Serialize + DeserializeOwned>(
        &mut self,
        tree: &Tree<T>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = tree.encode(key, value)?;
        let slot = self.slot(tree);
        self.ops.push(WriteOp {
            tree: slot,
            key: key.to_owned(),
            value: Some(bytes),
            expect: None,
        });
        Ok(())
    }

    /// Stores `value` under `key` only if the key is free.
    pub fn insert_new<T: Serialize + DeserializeOwned>(
        &mut self,
        tree: &Tree<T>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = tree.encode(key, value)?;
        let slot = self.slot(tree);
        self.ops.push(WriteOp {
            tree: slot,
            key: key.to_owned(),
            value: Some(bytes),
            expect: Some(None),
        });
        Ok(())
    }

    /// Replaces the value read as `old` with `value`, only if nobody changed it since.
    pub fn replace<T: Serialize + DeserializeOwned>(
        &mut self,
        tree: &Tree<T>,
        key: &str,
        old: &Snapshot<T>,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = tree.encode(key, value)?;
        let slot = self.slot(tree);
        self.ops.push(WriteOp {
            tree: slot,
            key: key.to_owned(),
            value: Some(bytes),
            expect: Some(Some(old.raw.clone())),
        });
        Ok(())
    }

    /// Removes `key`.
    pub fn remove<T>(&mut self, tree: &Tree<T>, key: &str) {
        let slot = self.slot(tree);
        self.ops.push(WriteOp {
            tree: slot,
            key: key.to_owned(),
            value: None,
            expect: None,
        });
    }

    /// Applies every write atomically; `Ok(false)` when a guard failed (nothing written).
    pub fn apply(self) -> Result<bool, StoreError> {
        use sled::Transactional;
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        if self.ops.is_empty() {
            return Ok(true);
        }
        let trees: Vec<sled::Tree> = self.trees.iter().map(|(t, _)| t.clone()).collect();
        let result = trees.as_slice().transaction(|txs| {
            for op in &self.ops {
                let tx = &txs[op.tree];
                if let Some(expect) = &op.expect {
                    let current = tx.get(op.key.as_bytes())?;
                    if current.as_deref() != expect.as_deref() {
                        return Err(ConflictableTransactionError::Abort(()));
                    }
                }
                match &op.value {
                    Some(v) => {
                        tx.insert(op.key.as_bytes(), v.as_slice())?;
                    }
                    None => {
                        tx.remove(op.key.as_bytes())?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(source)) => Err(StoreError::Io {
                op: "transaction",
                tree: self.trees.first().map_or("*", |(_, n)| n),
                source,
            }),
        }
    }
}

/// The opened sled database; clones share it.
#[derive(Clone)]
pub struct Db {
    db: sled::Db,
}

impl Db {
    /// Opens (or creates) the database under `dir`.
    /// A lock still held by an earlier handle of this process (sled releases it from a
    /// background thread after the last handle drops) is waited for up to a second.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut attempt = 0;
        loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => return Ok(Self { db }),
                Err(source) => match classify_open_error(dir, source) {
                    StoreError::Locked { .. } if attempt < 20 => {
                        attempt += 1;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    other => return Err(other),
                },
            }
        }
    }

    /// A typed tree.
    pub fn tree<T: Serialize + DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Tree<T>, StoreError> {
        Tree::open(&self.db, name)
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|source| StoreError::Io {
                op: "flush",
                tree: "*",
                source,
            })
    }

    /// Makes every write so far durable, blocking the thread.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|source| StoreError::Io {
                op: "flush",
                tree: "*",
                source,
            })
    }

    /// Cheap health probe: the database answers a read.
    pub fn check(&self) -> Result<(), StoreError> {
        self.db
            .get(b"__probe__")
            .map(|_| ())
            .map_err(|source| StoreError::Io {
                op: "get",
                tree: "default",
                source,
            })
    }
}

fn classify_open_error(dir: &Path, source: sled::Error) -> StoreError {
    if let sled::Error::Io(io) = &source
        && (io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("lock"))
    {
        return StoreError::Locked {
            path: dir.to_owned(),
        };
    }
    StoreError::Open {
        path: dir.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Item {
        n: u32,
    }

    /// A value that cannot be encoded is an error and leaves what was stored untouched,
    /// never an empty record.
    #[test]
    fn encoding_failures_are_errors_not_empty_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("db");
        // JSON objects need string keys: a map keyed by lists cannot be encoded.
        let tree: Tree<std::collections::BTreeMap<Vec<u8>, u8>> = db.tree("maps").expect("tree");
        let good = std::collections::BTreeMap::new();
        tree.put("k", &good).expect("empty map encodes");
        let bad: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1u8], 1u8)].into();
        assert!(matches!(
            tree.put("k", &bad),
            Err(StoreError::Encode { .. })
        ));
        assert!(matches!(
            tree.insert_new("other", &bad),
            Err(StoreError::Encode { .. })
        ));
        assert_eq!(tree.get("k").expect("get"), Some(good));
        assert_eq!(tree.get("other").expect("get"), None);
    }

    #[tokio::test]
    async fn tree_survives_reopen_and_take_is_single_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Db::open(dir.path()).expect("open");
            let t: Tree<Item> = db.tree("items").expect("tree");
            t.put("a", &Item { n: 1 }).expect("put");
            assert!(t.insert_new("b", &Item { n: 2 }).expect("insert"));
            assert!(!t.insert_new("b", &Item { n: 3 }).expect("insert"));
            assert_eq!(
                t.update("a", |i| i.n += 10).expect("update"),
                Some(Item { n: 11 })
            );
            assert_eq!(t.update("zz", |i| i.n += 10).expect("update"), None);
            db.flush().await.expect("flush");
        }
        let db = Db::open(dir.path()).expect("reopen");
        let t: Tree<Item> = db.tree("items").expect("tree");
        assert_eq!(
            t.values().expect("values"),
            vec![Item { n: 11 }, Item { n: 2 }]
        );
        assert_eq!(t.take("b").expect("take"), Some(Item { n: 2 }));
        assert_eq!(t.take("b").expect("take"), None);
    }

    /// A guarded group of writes lands whole or not at all.
    #[test]
    fn writes_are_atomic_and_guarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let a: Tree<Item> = db.tree("a").expect("tree");
        let b: Tree<Item> = db.tree("b").expect("tree");
        a.put("k", &Item { n: 1 }).expect("put");
        let seen = a.get_snapshot("k").expect("get").expect("present");
        // Someone else changes the record after it was read.
        a.put("k", &Item { n: 2 }).expect("put");
        let mut w = Writes::new();
        w.replace(&a, "k", &seen, &Item { n: 10 }).expect("stage");
        w.put(&b, "x", &Item { n: 99 }).expect("stage");
        assert!(!w.apply().expect("apply"), "a stale guard must refuse");
        assert_eq!(a.get("k").expect("get"), Some(Item { n: 2 }));
        assert_eq!(b.get("x").expect("get"), None, "nothing of the group lands");

        let seen = a.get_snapshot("k").expect("get").expect("present");
        let mut w = Writes::new();
        w.replace(&a, "k", &seen, &Item { n: 10 }).expect("stage");
        w.put(&b, "x", &Item { n: 99 }).expect("stage");
        w.insert_new(&b, "y", &Item { n: 7 }).expect("stage");
        assert!(w.apply().expect("apply"));
        assert_eq!(a.get("k").expect("get"), Some(Item { n: 10 }));
        assert_eq!(b.get("x").expect("get"), Some(Item { n: 99 }));
        let mut w = Writes::new();
        w.insert_new(&b, "y", &Item { n: 8 }).expect("stage");
        assert!(!w.apply().expect("apply"), "a taken key refuses insert_new");
        assert_eq!(b.get("y").expect("get"), Some(Item { n: 7 }));
    }

    #[test]
    fn second_open_reports_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _db = Db::open(dir.path()).expect("open");
        match Db::open(dir.path()) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn corrupt_value_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let t: Tree<Item> = db.tree("items").expect("tree");
        t.inner
            .insert("bad", &b"{not json"[..])
            .expect("raw insert");
        assert!(matches!(t.get("bad"), Err(StoreError::Corrupt { .. })));
    }
}
