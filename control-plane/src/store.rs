//! Embedded storage: sled on disk, one tree per aggregate, values as versioned JSON.
//!
//! Each value is stored as `{"v":1,"data":...}` so a later build can migrate old records.
//! Callers flush (`Store::flush`) before telling a client that a write succeeded.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The data dir was written by a newer build.
    #[error(
        "the store was written by a newer axon-cp (store format {found}; this build reads up to {supported}): run that version, or restore a backup this version made"
    )]
    Newer { found: u32, supported: u32 },
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
    /// Where `Writes` records a group before applying it.
    journal: sled::Tree,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Tree<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            name: self.name,
            journal: self.journal.clone(),
            _kind: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Tree<T> {
    fn open(db: &sled::Db, name: &'static str) -> Result<Self, StoreError> {
        let open = |name: &'static str| {
            db.open_tree(name).map_err(|source| StoreError::Io {
                op: "open_tree",
                tree: name,
                source,
            })
        };
        Ok(Self {
            inner: open(name)?,
            name,
            journal: open(JOURNAL)?,
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
        let bytes = self.encode(key, value)?;
        let _writing = writing();
        self.inner.insert(key, bytes).map_err(self.io("insert"))?;
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
        let _writing = writing();
        self.inner
            .apply_batch(batch)
            .map_err(self.io("apply_batch"))
    }

    /// Stores `value` only if `key` is free; returns false when it was taken.
    pub fn insert_new(&self, key: &str, value: &T) -> Result<bool, StoreError> {
        let bytes = self.encode(key, value)?;
        let _writing = writing();
        let swapped = self
            .inner
            .compare_and_swap(key, None::<&[u8]>, Some(bytes))
            .map_err(self.io("compare_and_swap"))?;
        Ok(swapped.is_ok())
    }

    /// Removes and returns the value under `key`; exactly one concurrent caller gets it.
    pub fn take(&self, key: &str) -> Result<Option<T>, StoreError> {
        let removed = {
            let _writing = writing();
            self.inner.remove(key).map_err(self.io("remove"))?
        };
        match removed {
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
            let _writing = writing();
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
        self.take_matching(iter.rev(), limit, &mut keep)
    }

    /// The first `limit` values of `items` that `keep` accepts.
    fn take_matching(
        &self,
        items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        limit: usize,
        keep: &mut impl FnMut(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in items {
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

    /// Up to `limit` values matching `keep`, in key order, after `lower` (exclusive) if given.
    pub fn scan(
        &self,
        lower: Option<&str>,
        limit: usize,
        mut keep: impl FnMut(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        use std::ops::Bound;
        let iter = match lower {
            Some(l) => self
                .inner
                .range::<&[u8], _>((Bound::Excluded(l.as_bytes()), Bound::Unbounded)),
            None => self.inner.iter(),
        };
        self.take_matching(iter, limit, &mut keep)
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
            let _writing = writing();
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

/// The tree holding groups of writes being applied.
const JOURNAL: &str = "__writes";

/// Every write to the store holds this for reading, only around its own sled call (never
/// while running a caller's code), so a backup can hold it for writing and copy a store in
/// which nothing moves. Uncontended, it costs one atomic operation.
static WRITE_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn writing() -> std::sync::RwLockReadGuard<'static, ()> {
    WRITE_GATE.read().unwrap_or_else(|p| p.into_inner())
}

/// Stops every write to the store until the guard is dropped (waiting for writes under way).
/// The holder must not write to the store, and should not wait on async work.
pub fn pause_writes() -> std::sync::RwLockWriteGuard<'static, ()> {
    WRITE_GATE.write().unwrap_or_else(|p| p.into_inner())
}

/// Serialises groups of writes: a guard is checked and its group applied with no other group
/// in between.
static GROUPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes over several trees that land all together or not at all. A write may be guarded by
/// the value it replaces, so a concurrent change makes `apply` answer `Ok(false)` and write
/// nothing (optimistic concurrency).
///
/// Not a sled transaction: those take a process-wide lock that deadlocks against sled's own
/// flushes under load. Instead the group is recorded in a journal tree with one insert, then
/// applied, then dropped from the journal; a group a crash cut short is applied again when
/// the store opens (sled recovers a prefix of its log, so a journalled group is either whole
/// in the journal or absent). Guards hold against other `Writes`; keys written through
/// `Writes` are not written any other way.
#[derive(Default)]
pub struct Writes {
    trees: Vec<(sled::Tree, &'static str)>,
    journal: Option<sled::Tree>,
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
        if self.journal.is_none() {
            self.journal = Some(tree.journal.clone());
        }
        match self.trees.iter().position(|(_, n)| *n == tree.name) {
            Some(i) => i,
            None => {
                self.trees.push((tree.inner.clone(), tree.name));
                self.trees.len() - 1
            }
        }
    }

    fn push<T>(
        &mut self,
        tree: &Tree<T>,
        key: &str,
        value: Option<Vec<u8>>,
        expect: Option<Option<Vec<u8>>>,
    ) {
        let slot = self.slot(tree);
        self.ops.push(WriteOp {
            tree: slot,
            key: key.to_owned(),
            value,
            expect,
        });
    }

    /// Stores `value` under `key`.
    pub fn put<T: Serialize + DeserializeOwned>(
        &mut self,
        tree: &Tree<T>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = tree.encode(key, value)?;
        self.push(tree, key, Some(bytes), None);
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
        self.push(tree, key, Some(bytes), Some(None));
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
        self.push(tree, key, Some(bytes), Some(Some(old.raw.clone())));
        Ok(())
    }

    /// Removes `key`.
    pub fn remove<T>(&mut self, tree: &Tree<T>, key: &str) {
        self.push(tree, key, None, None);
    }

    /// Applies every write, all or none; `Ok(false)` when a guard failed (nothing written).
    pub fn apply(self) -> Result<bool, StoreError> {
        let Some(journal) = &self.journal else {
            return Ok(true);
        };
        let io = |op: &'static str, tree: &'static str| {
            move |source| StoreError::Io { op, tree, source }
        };
        let _group = GROUPS.lock().unwrap_or_else(|p| p.into_inner());
        let _writing = writing();
        for op in &self.ops {
            if let Some(expect) = &op.expect {
                let (tree, name) = &self.trees[op.tree];
                let current = tree.get(op.key.as_bytes()).map_err(io("get", name))?;
                if current.as_deref() != expect.as_deref() {
                    return Ok(false);
                }
            }
        }
        let entry: Vec<JournalOp<'_>> = self
            .ops
            .iter()
            .map(|op| JournalOp {
                tree: self.trees[op.tree].1,
                key: &op.key,
                value: op.value.as_deref(),
            })
            .collect();
        // One group at a time is in the journal (under `GROUPS`); the time orders replays.
        let id = time::OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_be_bytes();
        journal
            .insert(id, encode_group(&entry))
            .map_err(io("insert", JOURNAL))?;
        for op in &self.ops {
            let (tree, name) = &self.trees[op.tree];
            match &op.value {
                Some(v) => tree
                    .insert(op.key.as_bytes(), v.as_slice())
                    .map_err(io("insert", name))?,
                None => tree.remove(op.key.as_bytes()).map_err(io("remove", name))?,
            };
        }
        journal.remove(id).map_err(io("remove", JOURNAL))?;
        Ok(true)
    }
}

/// One write of a journalled group.
struct JournalOp<'a> {
    tree: &'a str,
    key: &'a str,
    value: Option<&'a [u8]>,
}

/// `[name len u16][name][key len u32][key][0 | 1 value len u32 value]...`
fn encode_group(ops: &[JournalOp<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        out.extend_from_slice(&(op.tree.len() as u16).to_be_bytes());
        out.extend_from_slice(op.tree.as_bytes());
        out.extend_from_slice(&(op.key.len() as u32).to_be_bytes());
        out.extend_from_slice(op.key.as_bytes());
        match op.value {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
    out
}

/// The writes of a journalled group: (tree, key, value or removal); `None` if it is damaged.
#[allow(clippy::type_complexity)]
fn decode_group(mut bytes: &[u8]) -> Option<Vec<(String, Vec<u8>, Option<Vec<u8>>)>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if bytes.len() < n {
            return None;
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Some(head)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let n = u16::from_be_bytes(take(&mut bytes, 2)?.try_into().ok()?) as usize;
        let tree = String::from_utf8(take(&mut bytes, n)?.to_vec()).ok()?;
        let n = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
        let key = take(&mut bytes, n)?.to_vec();
        let value = match take(&mut bytes, 1)?[0] {
            1 => {
                let n = u32::from_be_bytes(take(&mut bytes, 4)?.try_into().ok()?) as usize;
                Some(take(&mut bytes, n)?.to_vec())
            }
            _ => None,
        };
        out.push((tree, key, value));
    }
    Some(out)
}

/// Applies again the groups of writes a crash cut short.
fn replay_journal(db: &sled::Db) -> Result<usize, StoreError> {
    let io = |op: &'static str| {
        move |source| StoreError::Io {
            op,
            tree: JOURNAL,
            source,
        }
    };
    let journal = db.open_tree(JOURNAL).map_err(io("open_tree"))?;
    let mut replayed = 0;
    for item in journal.iter() {
        let (id, group) = item.map_err(io("iter"))?;
        match decode_group(&group) {
            Some(ops) => {
                for (tree, key, value) in ops {
                    let tree = db.open_tree(tree).map_err(io("open_tree"))?;
                    match value {
                        Some(v) => tree.insert(key, v).map_err(io("insert"))?,
                        None => tree.remove(key).map_err(io("remove"))?,
                    };
                }
                replayed += 1;
            }
            None => tracing::error!("a damaged group of writes in the journal is dropped"),
        }
        journal.remove(id).map_err(io("remove"))?;
    }
    if replayed > 0 {
        db.flush().map_err(io("flush"))?;
        tracing::warn!(
            replayed,
            "groups of writes cut short by a crash were applied again"
        );
    }
    Ok(replayed)
}

/// The store's format, kept under [`FORMAT_KEY`] in the default tree. It goes up when stored
/// records change in a way an older build cannot read; each step up has a migration, run once
/// on the first start of the newer build.
pub const FORMAT: u32 = 1;
const FORMAT_KEY: &[u8] = b"__format";

/// Refuses a store from a newer build, and brings an older one up to [`FORMAT`].
fn check_format(db: &sled::Db) -> Result<(), StoreError> {
    let io = |op: &'static str| {
        move |source| StoreError::Io {
            op,
            tree: "default",
            source,
        }
    };
    let stored = db.get(FORMAT_KEY).map_err(io("get"))?;
    let found = match &stored {
        Some(bytes) => u32::from_be_bytes(bytes.as_ref().try_into().unwrap_or([0xff; 4])),
        // Stores from before the format was kept are format 1.
        None => 1,
    };
    if found > FORMAT {
        return Err(StoreError::Newer {
            found,
            supported: FORMAT,
        });
    }
    // Migrations from `found` up to `FORMAT` go here, one step each, before the new number
    // is written. Format 1 is the first.
    if stored.is_none() || found < FORMAT {
        db.insert(FORMAT_KEY, &FORMAT.to_be_bytes())
            .map_err(io("insert"))?;
        db.flush().map_err(io("flush"))?;
    }
    Ok(())
}

/// The opened sled database; clones share it.
#[derive(Clone)]
pub struct Db {
    db: sled::Db,
    flushes: Arc<FlushGate>,
}

/// Group commit: one flush runs at a time and covers every caller that asked before it
/// started. Many concurrent `flush_async` calls each take a thread of sled's small pool and
/// can hold up the writes they wait for; waiting callers share the next flush instead.
#[derive(Default)]
struct FlushGate {
    running: tokio::sync::Mutex<()>,
    /// Tickets handed out; a caller's writes precede its ticket.
    asked: AtomicU64,
    /// Every ticket up to this one is durable.
    done: AtomicU64,
}

impl Db {
    /// Opens (or creates) the database under `dir`.
    /// A lock still held by an earlier handle of this process (sled releases it from a
    /// background thread after the last handle drops) is waited for up to a second.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut attempt = 0;
        loop {
            match sled::Config::new().path(dir).open() {
                Ok(db) => {
                    check_format(&db)?;
                    replay_journal(&db)?;
                    return Ok(Self {
                        db,
                        flushes: Arc::default(),
                    });
                }
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
        let gate = &self.flushes;
        let ticket = gate.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = gate.running.lock().await;
        if gate.done.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket handed out so far belongs to writes made before this flush starts.
        let covers = gate.asked.load(Ordering::SeqCst);
        let db = self.db.clone();
        let flushed = tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|_| StoreError::Io {
                op: "flush",
                tree: "*",
                source: sled::Error::ReportableBug("the flush thread stopped".into()),
            })?;
        flushed.map_err(|source| StoreError::Io {
            op: "flush",
            tree: "*",
            source,
        })?;
        gate.done.fetch_max(covers, Ordering::SeqCst);
        Ok(())
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

    /// Names of every tree, the default one included.
    pub fn tree_names(&self) -> Vec<sled::IVec> {
        self.db.tree_names()
    }

    /// A tree by name, untyped (for copying it whole).
    pub fn raw_tree(&self, name: &[u8]) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(|source| StoreError::Io {
            op: "open_tree",
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

    /// Guarded groups racing on one key: each success saw the value it replaced, so the count
    /// equals the successes and no increment is lost; the second tree got one entry per success.
    #[test]
    fn racing_guarded_groups_lose_no_update() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let a: Tree<Item> = db.tree("a").expect("tree");
        let log: Tree<Item> = db.tree("log").expect("tree");
        a.put("k", &Item { n: 0 }).expect("put");
        let barrier = std::sync::Barrier::new(4);
        let wins: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (a, log, barrier) = (a.clone(), log.clone(), &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        let mut wins = 0;
                        for i in 0..200 {
                            let seen = a.get_snapshot("k").expect("get").expect("present");
                            let mut w = Writes::new();
                            let next = Item {
                                n: seen.value.n + 1,
                            };
                            w.replace(&a, "k", &seen, &next).expect("stage");
                            w.put(&log, &format!("{t}-{i}"), &next).expect("stage");
                            if w.apply().expect("apply") {
                                wins += 1;
                            }
                        }
                        wins
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(a.get("k").expect("get"), Some(Item { n: wins as u32 }));
        assert_eq!(log.len(), wins);
        assert!(wins >= 200, "at least one thread's worth lands: {wins}");
    }

    /// Concurrent flushes share runs of the gate: every caller returns, and when they all have,
    /// every ticket handed out is covered by a finished flush.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_flushes_all_return_covered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(dir.path()).expect("open");
        let a: Tree<Item> = db.tree("a").expect("tree");
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let (db, a) = (db.clone(), a.clone());
                tokio::spawn(async move {
                    a.put(&format!("k{i}"), &Item { n: i }).expect("put");
                    db.flush().await.expect("flush");
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let gate = &db.flushes;
        assert_eq!(gate.asked.load(Ordering::SeqCst), 32);
        assert_eq!(gate.done.load(Ordering::SeqCst), 32, "every ticket covered");
        assert_eq!(a.len(), 32);
    }

    /// A group cut short after it was journalled is applied whole when the store opens.
    #[test]
    fn a_group_cut_short_is_applied_at_the_next_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Db::open(dir.path()).expect("open");
            let a: Tree<Item> = db.tree("a").expect("tree");
            a.put("gone", &Item { n: 0 }).expect("put");
            // What `apply` journals before writing, as if the process died right after.
            let one = serde_json::to_vec(&Envelope {
                v: 1,
                data: Item { n: 1 },
            })
            .expect("json");
            let two = serde_json::to_vec(&Envelope {
                v: 1,
                data: Item { n: 2 },
            })
            .expect("json");
            let group = encode_group(&[
                JournalOp {
                    tree: "a",
                    key: "k",
                    value: Some(&one),
                },
                JournalOp {
                    tree: "b",
                    key: "k",
                    value: Some(&two),
                },
                JournalOp {
                    tree: "a",
                    key: "gone",
                    value: None,
                },
            ]);
            a.journal
                .insert(7u64.to_be_bytes(), group)
                .expect("journal");
            db.flush_blocking().expect("flush");
        }
        let db = Db::open(dir.path()).expect("reopen");
        let a: Tree<Item> = db.tree("a").expect("tree");
        let b: Tree<Item> = db.tree("b").expect("tree");
        assert_eq!(a.get("k").expect("get"), Some(Item { n: 1 }));
        assert_eq!(b.get("k").expect("get"), Some(Item { n: 2 }));
        assert_eq!(a.get("gone").expect("get"), None);
        assert!(a.journal.is_empty(), "the journal is emptied");
        assert_eq!(
            decode_group(&[0, 9, b'x']),
            None,
            "a damaged group is recognised"
        );
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
