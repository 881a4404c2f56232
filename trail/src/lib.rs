//! The audit files of agentd and the control plane: append-only JSONL, one hash-chained record
//! per line ([`axon_shared::chain`]), rotated by size (`audit.jsonl.1` is the newest rotated
//! file), with the head of the chain signed into `<name>.head` under a key in `<name>.key`, so
//! records cut off the end are detected. [`Writer`] owns a trail on a thread of its own and
//! commits records in groups: one `fdatasync` covers every record that queued while the last
//! one ran, and nothing blocks an async thread unless its bounded queue is full.
//!
//! Everything here is blocking I/O; only [`Writer::write`] is async.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use axon_shared::chain::{ChainBreak, ChainCheck, Chained, Checkpoint, seal};
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// A trail file could not be read, written or verified.
#[derive(Debug, thiserror::Error)]
pub enum TrailError {
    #[error("audit file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit file {path} line {line}: {reason}")]
    Broken {
        path: PathBuf,
        line: usize,
        reason: ChainBreak,
    },
    #[error("audit file {path} line {line}: not a record: {reason}")]
    Unreadable {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("audit head {path}: {reason}")]
    Head { path: PathBuf, reason: String },
    #[error("audit trail in {dir}: {reason}")]
    Cut { dir: PathBuf, reason: ChainBreak },
    #[error("the audit writer has stopped: {0}")]
    Stopped(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrailError + '_ {
    move |source| TrailError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where a trail lives and how it rotates.
#[derive(Debug, Clone)]
pub struct TrailConfig {
    pub dir: PathBuf,
    /// File name of the current file, e.g. `audit.jsonl`.
    pub name: String,
    /// Rotate the current file before it grows past this.
    pub max_file_bytes: u64,
    /// Rotated files kept.
    pub keep_rotated: u32,
}

impl TrailConfig {
    pub fn new(dir: &Path, name: &str, max_file_bytes: u64, keep_rotated: u32) -> Self {
        Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            max_file_bytes,
            keep_rotated,
        }
    }

    /// The current file.
    pub fn current(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Rotated file `i` (1 is the newest).
    pub fn rotated(&self, i: u32) -> PathBuf {
        self.dir.join(format!("{}.{i}", self.name))
    }

    /// The signed head.
    pub fn head_path(&self) -> PathBuf {
        self.dir.join(format!("{}.head", self.name))
    }

    /// The head's key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.name))
    }

    /// Existing files, oldest first.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = (1..=self.keep_rotated.max(1) + 1)
            .rev()
            .map(|i| self.rotated(i))
            .filter(|p| p.exists())
            .collect();
        if self.current().exists() {
            files.push(self.current());
        }
        files
    }
}

/// The records of one file; torn or unreadable lines are skipped (`verify` reports them).
fn read_records<R: DeserializeOwned>(path: &Path) -> Result<Vec<R>, TrailError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(record) => out.push(record),
            Err(e) => {
                tracing::warn!(path = %path.display(), line = i + 1, error = %e, "unreadable audit line")
            }
        }
    }
    Ok(out)
}

/// The sequence number of a file's first readable record.
fn first_seq<R: Chained + DeserializeOwned>(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .find_map(|l| serde_json::from_str::<R>(&l).ok())
        .map(|r| r.seq())
}

/// The sequence number of the oldest record kept in the files.
pub fn oldest_seq<R: Chained + DeserializeOwned>(config: &TrailConfig) -> Option<u64> {
    config.files().first().and_then(|p| first_seq::<R>(p))
}

/// At most `limit` records after `seq`, in order, read from the files without opening the
/// trail for writing (a writer may be appending meanwhile). Only the files that can hold them
/// are read, line by line, so memory stays bounded by `limit`. Where the oldest kept file
/// starts past `seq + 1` (older files were rotated away) the records start there.
pub fn read_after<R: Chained + DeserializeOwned>(
    config: &TrailConfig,
    seq: u64,
    limit: usize,
) -> Result<Vec<R>, TrailError> {
    let files = config.files();
    // The newest file that starts at or before the wanted record: reading starts there.
    let start = files
        .iter()
        .rposition(|p| first_seq::<R>(p).is_some_and(|first| first <= seq + 1))
        .unwrap_or(0);
    let mut out = Vec::new();
    for path in &files[start..] {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(path)(e)),
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(io(path))?;
            let Ok(record) = serde_json::from_str::<R>(&line) else {
                continue;
            };
            if record.seq() > seq {
                out.push(record);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// Records are short (their text fields are capped): the last whole one lies in the tail.
const TAIL_BYTES: u64 = 1 << 20;

/// How a file ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// With a newline (or empty).
    Whole,
    /// With a line torn by a crash mid-append, starting at this offset.
    TornAt(u64),
    /// With a torn line longer than the tail read.
    TornLong,
}

/// The last readable record of a file, and how the file ends. Reads only the tail, unless no
/// whole record lies there.
fn last_record<R: DeserializeOwned>(path: &Path) -> Result<(Option<R>, Ending), TrailError> {
    use std::os::unix::fs::FileExt;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Ending::Whole)),
        Err(e) => return Err(io(path)(e)),
    };
    let size = file.metadata().map_err(io(path))?.len();
    let start = size.saturating_sub(TAIL_BYTES);
    let mut tail = vec![0u8; usize::try_from(size - start).unwrap_or(0)];
    file.read_exact_at(&mut tail, start).map_err(io(path))?;
    let ending = if tail.last().is_none_or(|b| *b == b'\n') {
        Ending::Whole
    } else {
        match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) => Ending::TornAt(start + i as u64 + 1),
            None if start == 0 => Ending::TornAt(0),
            None => Ending::TornLong,
        }
    };
    // A line torn by a crash mid-append, or cut by the window's start, is passed over.
    let mut lines = tail
        .split(|b| *b == b'\n')
        .rev()
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .peekable();
    if let Some(Err(e)) = lines.peek().map(|l| serde_json::from_slice::<R>(l)) {
        tracing::warn!(path = %path.display(), error = %e, "unreadable audit line at the end");
    }
    let found = lines.find_map(|l| serde_json::from_slice(l).ok());
    match found {
        Some(record) => Ok((Some(record), ending)),
        None if start > 0 => Ok((read_records(path)?.pop(), ending)),
        None => Ok((None, ending)),
    }
}

/// The head's key, if the trail has one.
fn read_key(config: &TrailConfig) -> Result<Option<Vec<u8>>, TrailError> {
    let path = config.key_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => axon_shared::hex_decode(text.trim())
            .filter(|k| k.len() >= 32)
            .map(Some)
            .ok_or_else(|| TrailError::Head {
                path,
                reason: "the key file does not hold a 32-byte hex key".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// The head's key, made when the trail has none yet (then `true`).
fn load_key(config: &TrailConfig) -> Result<(Vec<u8>, bool), TrailError> {
    if let Some(key) = read_key(config)? {
        return Ok((key, false));
    }
    let path = config.key_path();
    let mut key = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| TrailError::Head {
        path: path.clone(),
        reason: "no randomness for a key".into(),
    })?;
    write_synced(&path, axon_shared::hex_encode(&key).as_bytes(), 0o600)?;
    Ok((key, true))
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TrailError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Reads and checks the signed head, if there is one.
fn read_head(config: &TrailConfig, key: &[u8]) -> Result<Option<Checkpoint>, TrailError> {
    let path = config.head_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let head: Checkpoint = serde_json::from_str(&text).map_err(|e| TrailError::Head {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    head.verify(key).map_err(|e| TrailError::Head {
        path,
        reason: e.to_string(),
    })?;
    Ok(Some(head))
}

/// What opening a trail found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The signed head is ahead of the last record in the files: records were cut off the
    /// end. The chain continues from the signed head, so the gap stays visible.
    pub cut: Option<(u64, u64)>,
}

/// An open trail: appends, rotates and signs its head.
pub struct TrailFile {
    config: TrailConfig,
    file: File,
    size: u64,
    head: Option<(u64, String)>,
    key: Vec<u8>,
}

impl TrailFile {
    /// Opens the trail, continuing its chain from the last record (or the signed head, when
    /// that is further on).
    pub fn open<R: Chained + DeserializeOwned>(
        config: TrailConfig,
    ) -> Result<(Self, Opened), TrailError> {
        let path = config.current();
        let (mut last, ending) = last_record::<R>(&path)?;
        if last.is_none() {
            last = last_record::<R>(&config.rotated(1))?.0;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        match ending {
            Ending::Whole => {}
            // A group is acknowledged only once synced whole, so a torn last line was never
            // acknowledged to anyone: it is cut off, and the chain goes on from the last
            // whole record.
            Ending::TornAt(at) => {
                tracing::warn!(path = %path.display(), at, "a record torn by a crash mid-write was cut off the end");
                file.set_len(at).map_err(io(&path))?;
                file.sync_data().map_err(io(&path))?;
            }
            // Never glue a new record onto a torn line.
            Ending::TornLong => (&file).write_all(b"\n").map_err(io(&path))?,
        }
        let size = file.metadata().map_err(io(&path))?.len();
        let (key, new_key) = load_key(&config)?;
        let mut head = last.map(|r| (r.seq(), r.hash().to_owned()));
        let mut opened = Opened::default();
        if !new_key && let Some(signed) = read_head(&config, &key)? {
            let at = head.as_ref().map_or(0, |(seq, _)| *seq);
            if signed.seq > at {
                tracing::error!(path = %path.display(), last = at, head = signed.seq, "audit records were cut off the end of the trail");
                opened.cut = Some((at, signed.seq));
                head = Some((signed.seq, signed.hash));
            }
        }
        let trail = Self {
            config,
            file,
            size,
            head,
            key,
        };
        if new_key && trail.head.is_some() {
            trail.sign_head()?;
        }
        Ok((trail, opened))
    }

    /// Sequence number and hash of the last record.
    pub fn head(&self) -> Option<(u64, &str)> {
        self.head.as_ref().map(|(seq, hash)| (*seq, hash.as_str()))
    }

    /// Continues the chain from `(seq, hash)` when that is further on than the files (an
    /// index that knows more records than a file that was lost).
    pub fn adopt_head(&mut self, seq: u64, hash: &str) {
        if self.head.as_ref().is_none_or(|(at, _)| *at < seq) {
            self.head = Some((seq, hash.to_owned()));
        }
    }

    fn sign_head(&self) -> Result<(), TrailError> {
        if let Some((seq, hash)) = &self.head {
            let signed = Checkpoint::sign(*seq, hash, &self.key);
            let bytes = serde_json::to_vec(&signed).unwrap_or_default();
            write_synced(&self.config.head_path(), &bytes, 0o644)?;
        }
        Ok(())
    }

    /// Links, hashes and appends `records`, syncs once per file touched and signs the new
    /// head. On failure (a full disk) the file is cut back to its last whole record and the
    /// chain goes on from the last record written, so a later append succeeds where this one
    /// failed. Records before a rotation in the same group may have been written: they are
    /// in the file and the head, and the error is returned for the group.
    pub fn append<R: Chained>(&mut self, records: &mut [R]) -> Result<(), TrailError> {
        let mut sealed = self.head.clone();
        let mut pending: Vec<u8> = Vec::new();
        let mut outcome = Ok(());
        for record in records.iter_mut() {
            seal(record, sealed.as_ref().map(|(s, h)| (*s, h.as_str())));
            let mut line = serde_json::to_vec(&*record).unwrap_or_default();
            line.push(b'\n');
            let would_be = self.size + (pending.len() + line.len()) as u64;
            if self.size + pending.len() as u64 > 0 && would_be > self.config.max_file_bytes {
                outcome = self.commit(&pending).and_then(|()| {
                    self.head = sealed.clone();
                    self.rotate()
                });
                pending.clear();
                if outcome.is_err() {
                    break;
                }
            }
            pending.extend_from_slice(&line);
            sealed = Some((record.seq(), record.hash().to_owned()));
        }
        if outcome.is_ok() {
            outcome = self.commit(&pending);
            if outcome.is_ok() {
                self.head = sealed;
            }
        }
        // The head is a checkpoint against records cut off the end; one that cannot be
        // written now (a full disk) is written with the next group, and the records stand.
        if let Err(e) = self.sign_head() {
            tracing::warn!(error = %e, "the audit trail's head was not signed this time");
        }
        outcome
    }

    /// Appends and syncs whole lines; on failure cuts the file back to where it was, so no
    /// torn line is left for the next group to follow.
    fn commit(&mut self, bytes: &[u8]) -> Result<(), TrailError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let path = self.config.current();
        let written = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(self.size) {
                    tracing::error!(error = %cut, path = %path.display(), "a failed audit write could not be cut back");
                }
                Err(io(&path)(e))
            }
        }
    }

    fn rotate(&mut self) -> Result<(), TrailError> {
        let keep = self.config.keep_rotated.max(1);
        let _ = std::fs::remove_file(self.config.rotated(keep));
        for i in (1..keep).rev() {
            let from = self.config.rotated(i);
            if from.exists() {
                std::fs::rename(&from, self.config.rotated(i + 1)).map_err(io(&from))?;
            }
        }
        let current = self.config.current();
        std::fs::rename(&current, self.config.rotated(1)).map_err(io(&current))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .map_err(io(&current))?;
        self.size = 0;
        Ok(())
    }

    /// Records after `seq`, in order, from the current and as many rotated files as needed.
    pub fn records_after<R: Chained + DeserializeOwned>(
        &self,
        seq: u64,
    ) -> Result<Vec<R>, TrailError> {
        read_after(&self.config, seq, usize::MAX)
    }
}

/// What a verified trail holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: usize,
    pub files: usize,
    /// The signed head the trail reaches, when there is one.
    pub head: Option<u64>,
}

/// Checks one file's chain (no signed head): every line parses, hashes right and follows the
/// line before. Returns the number of records.
pub fn verify_file<R: Chained + DeserializeOwned>(path: &Path) -> Result<usize, TrailError> {
    let mut check = ChainCheck::new();
    walk::<R>(path, &mut check)?;
    check.finish().map_err(|reason| TrailError::Broken {
        path: path.to_owned(),
        line: 0,
        reason,
    })
}

fn walk<R: Chained + DeserializeOwned>(
    path: &Path,
    check: &mut ChainCheck,
) -> Result<(), TrailError> {
    let file = File::open(path).map_err(io(path))?;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io(path))?;
        let record: R = serde_json::from_str(&line).map_err(|e| TrailError::Unreadable {
            path: path.to_owned(),
            line: i + 1,
            reason: e.to_string(),
        })?;
        check.check(&record).map_err(|reason| TrailError::Broken {
            path: path.to_owned(),
            line: i + 1,
            reason,
        })?;
    }
    Ok(())
}

/// Checks the whole trail, oldest file first, against its signed head: a record edited,
/// removed, reordered or cut off the end, or a head that was removed or forged, fails.
pub fn verify<R: Chained + DeserializeOwned>(config: &TrailConfig) -> Result<Verified, TrailError> {
    let key = read_key(config)?;
    let head = match &key {
        Some(key) => read_head(config, key)?,
        None => None,
    };
    let files = config.files();
    let mut check = head
        .clone()
        .map_or_else(ChainCheck::new, ChainCheck::with_head);
    for path in &files {
        walk::<R>(path, &mut check)?;
    }
    if head.is_none() && check.last().is_some() && key.is_some() {
        return Err(TrailError::Head {
            path: config.head_path(),
            reason: "the signed head is missing".into(),
        });
    }
    let records = check.finish().map_err(|reason| TrailError::Cut {
        dir: config.dir.clone(),
        reason,
    })?;
    Ok(Verified {
        records,
        files: files.len(),
        head: head.map(|h| h.seq),
    })
}

type Reply<R> = oneshot::Sender<Result<R, String>>;

/// The record is boxed: the queue's slots are allocated up front, and a record is a few
/// hundred bytes, so 1,024 slots of records would hold some 340 KiB from start to end.
struct Job<R> {
    record: Box<R>,
    reply: Option<Reply<R>>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// What a writer does with records once they are in the file (index them, spool them,
/// publish them); an error is logged and answered to the waiting callers.
pub type AfterWrite<R> = Box<dyn FnMut(&[R]) -> Result<(), String> + Send>;

/// Records committed together at most.
const MAX_GROUP: usize = 512;

/// Owns a trail on its own thread; records are linked in the order they arrive.
pub struct Writer<R> {
    tx: Option<SyncSender<Job<R>>>,
    slots: Arc<Semaphore>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Records queued so far, and records handled so far (written or failed).
    queued: std::sync::atomic::AtomicU64,
    handled: tokio::sync::watch::Receiver<u64>,
    /// Records that could not be written, so far.
    failed: Arc<std::sync::atomic::AtomicU64>,
}

/// Where a writer stood at one moment: see [`Writer::mark`].
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    failed: u64,
}

impl<R: Chained + Send + 'static> Writer<R> {
    /// Starts the writer thread with a queue of `capacity` records.
    pub fn start(trail: TrailFile, capacity: usize, after: AfterWrite<R>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity.max(1));
        let (handled_tx, handled) = tokio::sync::watch::channel(0u64);
        let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failures = failed.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(trail, rx, after, handled_tx, failures))
            .ok();
        Self {
            tx: Some(tx),
            slots: Arc::new(Semaphore::new(capacity.max(1))),
            thread,
            queued: std::sync::atomic::AtomicU64::new(0),
            handled,
            failed,
        }
    }

    /// Marks this moment, for [`Writer::written_since`].
    pub fn mark(&self) -> Mark {
        Mark {
            failed: self.failed.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    /// Waits until every record queued so far has been handled (up to `limit`); true when
    /// they were, and no write failed since `mark`. A caller that queued records without
    /// waiting learns here whether they (and everyone's since) reached the disk.
    pub async fn written_since(&self, mark: Mark, limit: std::time::Duration) -> bool {
        let target = self.queued.load(std::sync::atomic::Ordering::SeqCst);
        let mut handled = self.handled.clone();
        let settled = tokio::time::timeout(limit, handled.wait_for(|n| *n >= target))
            .await
            .is_ok_and(|r| r.is_ok());
        settled && self.failed.load(std::sync::atomic::Ordering::SeqCst) == mark.failed
    }

    /// Waits until every record queued before this call has been handled, so a reader sees
    /// its own writes (or until `limit` passes).
    pub async fn settled(&self, limit: std::time::Duration) {
        let target = self.queued.load(std::sync::atomic::Ordering::SeqCst);
        let mut handled = self.handled.clone();
        let _ = tokio::time::timeout(limit, handled.wait_for(|n| *n >= target)).await;
    }

    /// Queues a record without waiting for it to be written. Blocks only while the queue is
    /// full (back-pressure); false when the writer has stopped.
    pub fn submit(&self, record: R) -> bool {
        self.send(Job {
            record: Box::new(record),
            reply: None,
            _permit: None,
        })
    }

    fn send(&self, job: Job<R>) -> bool {
        let Some(tx) = &self.tx else { return false };
        self.queued
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(job)) => tx.send(job).is_ok(),
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Writes a record and waits until it is synced (and handled by `after`); waits for room
    /// in the queue without blocking the thread.
    pub async fn write(&self, record: R) -> Result<R, TrailError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| TrailError::Stopped("closed".into()))?;
        let (reply, answer) = oneshot::channel();
        if !self.send(Job {
            record: Box::new(record),
            reply: Some(reply),
            _permit: Some(permit),
        }) {
            return Err(TrailError::Stopped("the writer thread is gone".into()));
        }
        answer
            .await
            .map_err(|_| TrailError::Stopped("no answer".into()))?
            .map_err(TrailError::Stopped)
    }
}

impl<R> Drop for Writer<R> {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what was queued.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop<R: Chained>(
    mut trail: TrailFile,
    rx: Receiver<Job<R>>,
    mut after: AfterWrite<R>,
    handled: tokio::sync::watch::Sender<u64>,
    failed: Arc<std::sync::atomic::AtomicU64>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut records: Vec<R> = jobs.iter().map(|j| R::clone(&j.record)).collect();
        let outcome = trail
            .append(&mut records)
            .map_err(|e| e.to_string())
            .and_then(|()| after(&records));
        if let Err(e) = &outcome {
            tracing::error!(error = %e, records = records.len(), "AUDIT RECORDS NOT WRITTEN");
            failed.fetch_add(records.len() as u64, std::sync::atomic::Ordering::SeqCst);
        }
        let count = jobs.len() as u64;
        for (job, record) in jobs.into_iter().zip(records) {
            if let Some(reply) = job.reply {
                let _ = reply.send(outcome.clone().map(|()| record));
            }
        }
        handled.send_modify(|n| *n += count);
    }
}

#[cfg(test)]
mod tests;
