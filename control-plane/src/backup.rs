//! Backups of a data dir, taken while the server runs, and restores into an empty dir.
//!
//! A backup holds the store (every sled tree, key by key), the PKI (CA and server keys), the
//! audit trail's files (with its signed head and key) and any other file of the data dir.
//! While it is taken, writes to the store wait (`store::pause_writes`), so the copy is one
//! moment of the store: every change acknowledged before it began is in it, and a group of
//! writes is in it whole or not at all. The audit files are copied after the store, in the same
//! pause, so they hold at least the records the index does; records the file has beyond the
//! index are indexed again when the restored dir is first served.
//!
//! A running server holds the store's lock, so `axon-cp backup` asks it over a Unix socket in
//! the data dir (`admin.sock`, 0600: only the data dir's owner can take backups); a stopped
//! server's dir is read directly. Both write the same archive:
//!
//! ```text
//! "AXONBAK1\n"
//! 'M' u32 len, JSON {"version", "created_at"}
//! 'F' u32 len, relative path; u32 mode; u64 len, bytes      (a file)
//! 'T' u16 len, tree name; u32 len, key; u32 len, value      (a store entry)
//! 'E' 32 bytes: SHA-256 of everything before them
//! ```

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use crate::store::StoreError;

const MAGIC: &[u8] = b"AXONBAK1\n";
/// The server's admin socket in the data dir.
pub const SOCKET: &str = "admin.sock";
/// What a client sends to ask for a backup.
const ASK: &[u8] = b"backup\n";
/// Entries larger than this are refused when restoring (a damaged length, not data).
const MAX_ENTRY: u64 = 1 << 30;

/// A backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} is not an axon-cp backup")]
    NotABackup(PathBuf),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("{0} is not empty; restore only into an empty or new directory")]
    NotEmpty(PathBuf),
    #[error("{0} is not an initialised data dir (no pki/)")]
    NotInitialised(PathBuf),
    #[error("the server did not send a backup: {0}")]
    Server(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a backup held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub trees: usize,
    pub entries: usize,
    pub bytes: u64,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: aws_lc_rs::digest::Context,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the archive of `data_dir`, whose store is `db`, to `out`. Store writes wait while it
/// runs; call it on a thread that no store writer waits on.
pub fn write_archive(
    data_dir: &Path,
    db: &crate::store::Db,
    out: impl Write,
) -> Result<Summary, BackupError> {
    let mut w = Hashing {
        inner: BufWriter::with_capacity(1 << 16, out),
        hash: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
        bytes: 0,
    };
    let stream = Path::new("<backup stream>");
    let mut summary = Summary::default();
    let meta = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "created_at": crate::model::now(),
    })
    .to_string();
    w.write_all(MAGIC).map_err(io(stream))?;
    w.write_all(b"M").map_err(io(stream))?;
    put_bytes32(&mut w, meta.as_bytes()).map_err(io(stream))?;
    {
        let _paused = crate::store::pause_writes();
        db.flush_blocking()?;
        for name in db.tree_names() {
            let tree = db.raw_tree(&name)?;
            summary.trees += 1;
            for item in tree.iter() {
                let (key, value) = item.map_err(|source| StoreError::Io {
                    op: "iter",
                    tree: "backup",
                    source,
                })?;
                w.write_all(b"T").map_err(io(stream))?;
                w.write_all(&(name.len() as u16).to_be_bytes())
                    .map_err(io(stream))?;
                w.write_all(&name).map_err(io(stream))?;
                put_bytes32(&mut w, &key).map_err(io(stream))?;
                put_bytes32(&mut w, &value).map_err(io(stream))?;
                summary.entries += 1;
            }
        }
        // In the same pause: the audit writer waits on its index write, so the file holds at
        // least what the index does.
        for path in files_of(data_dir)? {
            let rel = path.strip_prefix(data_dir).unwrap_or(&path);
            // Streamed, not read whole: rotated trail files are up to 64 MiB each.
            let file = std::fs::File::open(&path).map_err(io(&path))?;
            let meta = file.metadata().map_err(io(&path))?;
            let len = meta.len();
            w.write_all(b"F").map_err(io(stream))?;
            put_bytes32(&mut w, rel.as_os_str().as_encoded_bytes()).map_err(io(stream))?;
            w.write_all(&(meta.permissions().mode() & 0o777).to_be_bytes())
                .map_err(io(stream))?;
            w.write_all(&len.to_be_bytes()).map_err(io(stream))?;
            let copied = std::io::copy(&mut file.take(len), &mut w).map_err(io(&path))?;
            if copied != len {
                return Err(BackupError::Damaged(format!(
                    "{} shrank while it was copied",
                    path.display()
                )));
            }
            summary.files += 1;
        }
    }
    w.write_all(b"E").map_err(io(stream))?;
    let digest = w.hash.clone().finish();
    summary.bytes = w.bytes + 32;
    w.inner.write_all(digest.as_ref()).map_err(io(stream))?;
    w.inner.flush().map_err(io(stream))?;
    Ok(summary)
}

fn put_bytes32(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_be_bytes())?;
    w.write_all(bytes)
}

/// The files of the data dir a backup keeps: everything but the store (copied key by key),
/// the admin socket and temporary files, oldest paths first.
fn files_of(data_dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out = Vec::new();
    let mut dirs = vec![data_dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io(&path))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if dir == data_dir && name == "db" {
                continue;
            }
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() && !name.ends_with(".tmp") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Backs up a stopped server's data dir into `out`.
pub fn backup_offline(data_dir: &Path, out: impl Write) -> Result<Summary, BackupError> {
    if !data_dir.join("pki").exists() {
        return Err(BackupError::NotInitialised(data_dir.to_owned()));
    }
    let db = crate::store::Db::open(&data_dir.join("db"))?;
    write_archive(data_dir, &db, out)
}

/// Asks the server serving `data_dir` for a backup, into `out`.
pub fn backup_from_server(data_dir: &Path, mut out: impl Write) -> Result<u64, BackupError> {
    let socket = data_dir.join(SOCKET);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).map_err(io(&socket))?;
    stream.write_all(ASK).map_err(io(&socket))?;
    let copied = std::io::copy(&mut stream, &mut out).map_err(io(&socket))?;
    if copied < (MAGIC.len() + 33) as u64 {
        return Err(BackupError::Server(format!(
            "{copied} bytes; see the server's log"
        )));
    }
    Ok(copied)
}

/// The admin socket's thread; [`BackupSocket::close`] stops it and lets go of the store.
pub struct BackupSocket {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackupSocket {
    /// Stops serving: wakes the thread, waits for it (and a backup under way) and removes the
    /// socket, so the store's lock goes with the server.
    pub fn close(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::os::unix::net::UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Serves backups on `<data-dir>/admin.sock` from a thread of its own (a backup pauses store
/// writes, so it must not wait on the async runtime) until closed.
pub fn serve_socket(data_dir: PathBuf, db: crate::store::Db) -> std::io::Result<BackupSocket> {
    let path = data_dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let thread = std::thread::Builder::new()
        .name("backups".into())
        .spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut ask = [0u8; ASK.len()];
                if stream.read_exact(&mut ask).is_err() || ask != ASK {
                    continue;
                }
                let started = std::time::Instant::now();
                match write_archive(&data_dir, &db, &mut stream) {
                    Ok(s) => tracing::info!(
                        files = s.files,
                        trees = s.trees,
                        entries = s.entries,
                        bytes = s.bytes,
                        ms = started.elapsed().as_millis() as u64,
                        "backup taken"
                    ),
                    Err(e) => tracing::error!(error = %e, "backup failed"),
                }
            }
        })?;
    Ok(BackupSocket {
        path,
        stop,
        thread: Some(thread),
    })
}

/// Reads a whole archive, checking its structure and hash; calls `each` per entry only when
/// `apply` (a first pass checks everything before anything is written).
fn read_archive(
    from: &Path,
    mut each: impl FnMut(Entry<'_>) -> Result<(), BackupError>,
    apply: bool,
) -> Result<Summary, BackupError> {
    let file = std::fs::File::open(from).map_err(io(from))?;
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let damaged = |what: &str| BackupError::Damaged(what.to_owned());
    let take = |r: &mut BufReader<std::fs::File>,
                n: u64,
                hash: &mut aws_lc_rs::digest::Context|
     -> Result<Vec<u8>, BackupError> {
        if n > MAX_ENTRY {
            return Err(damaged("an entry is larger than 1 GiB"));
        }
        let mut buf = vec![0u8; n as usize];
        r.read_exact(&mut buf)
            .map_err(|_| damaged("it ends in the middle of an entry"))?;
        hash.update(&buf);
        Ok(buf)
    };
    let magic = take(&mut r, MAGIC.len() as u64, &mut hash)
        .map_err(|_| BackupError::NotABackup(from.to_owned()))?;
    if magic != MAGIC {
        return Err(BackupError::NotABackup(from.to_owned()));
    }
    let mut summary = Summary::default();
    let mut trees = std::collections::BTreeSet::new();
    let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap_or([0; 4])) as u64;
    loop {
        let kind = take(&mut r, 1, &mut hash)?;
        match kind[0] {
            b'M' => {
                let n = be32(&take(&mut r, 4, &mut hash)?);
                take(&mut r, n, &mut hash)?;
            }
            b'T' => {
                let n = u16::from_be_bytes(take(&mut r, 2, &mut hash)?.try_into().unwrap_or([0; 2]))
                    as u64;
                let name = take(&mut r, n, &mut hash)?;
                let n = be32(&take(&mut r, 4, &mut hash)?);
                let key = take(&mut r, n, &mut hash)?;
                let n = be32(&take(&mut r, 4, &mut hash)?);
                let value = take(&mut r, n, &mut hash)?;
                trees.insert(name.clone());
                summary.entries += 1;
                if apply {
                    each(Entry::Tree {
                        name: &name,
                        key: &key,
                        value: &value,
                    })?;
                }
            }
            b'F' => {
                let n = be32(&take(&mut r, 4, &mut hash)?);
                let raw = take(&mut r, n, &mut hash)?;
                let rel = PathBuf::from(
                    String::from_utf8(raw).map_err(|_| damaged("a file name is not UTF-8"))?,
                );
                if rel.as_os_str().is_empty()
                    || !rel.components().all(|c| matches!(c, Component::Normal(_)))
                    || rel.starts_with("db")
                {
                    return Err(damaged(&format!(
                        "file name {} leaves the data dir",
                        rel.display()
                    )));
                }
                let mode = be32(&take(&mut r, 4, &mut hash)?) as u32 & 0o777;
                let len =
                    u64::from_be_bytes(take(&mut r, 8, &mut hash)?.try_into().unwrap_or([0; 8]));
                let bytes = take(&mut r, len, &mut hash)?;
                summary.files += 1;
                if apply {
                    each(Entry::File {
                        rel: &rel,
                        mode,
                        bytes: &bytes,
                    })?;
                }
            }
            b'E' => {
                let mut digest = [0u8; 32];
                r.read_exact(&mut digest)
                    .map_err(|_| damaged("its checksum is cut off"))?;
                if hash.finish().as_ref() != digest {
                    return Err(damaged("its checksum does not match"));
                }
                let mut rest = [0u8; 1];
                if r.read(&mut rest).map_err(io(from))? != 0 {
                    return Err(damaged("bytes follow its end"));
                }
                summary.trees = trees.len();
                return Ok(summary);
            }
            _ => return Err(damaged("an entry of an unknown kind")),
        }
    }
}

enum Entry<'a> {
    Tree {
        name: &'a [u8],
        key: &'a [u8],
        value: &'a [u8],
    },
    File {
        rel: &'a Path,
        mode: u32,
        bytes: &'a [u8],
    },
}

/// Checks an archive whole (structure and checksum) without writing anything.
pub fn check(from: &Path) -> Result<Summary, BackupError> {
    read_archive(from, |_| Ok(()), false)
}

/// Restores `from` into `data_dir`, which must be empty or absent. The archive is checked
/// whole first; if writing then fails, what was written is removed again.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Summary, BackupError> {
    check(from)?;
    let existed = data_dir.exists();
    if existed
        && std::fs::read_dir(data_dir)
            .map_err(io(data_dir))?
            .next()
            .is_some()
    {
        return Err(BackupError::NotEmpty(data_dir.to_owned()));
    }
    let result = restore_into(from, data_dir);
    if result.is_err() {
        if existed {
            if let Ok(entries) = std::fs::read_dir(data_dir) {
                for entry in entries.flatten() {
                    let p = entry.path();
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(data_dir);
        }
    }
    result
}

fn restore_into(from: &Path, data_dir: &Path) -> Result<Summary, BackupError> {
    std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io(data_dir))?;
    let db = sled::Config::new()
        .path(data_dir.join("db"))
        .open()
        .map_err(|source| StoreError::Open {
            path: data_dir.join("db"),
            source,
        })?;
    let store_err = |source| StoreError::Io {
        op: "restore",
        tree: "backup",
        source,
    };
    let summary = read_archive(
        from,
        |entry| match entry {
            Entry::Tree { name, key, value } => {
                db.open_tree(name)
                    .and_then(|t| t.insert(key, value))
                    .map_err(store_err)?;
                Ok(())
            }
            Entry::File { rel, mode, bytes } => {
                use std::os::unix::fs::OpenOptionsExt;
                let path = data_dir.join(rel);
                if let Some(dir) = path.parent().filter(|d| !d.exists()) {
                    std::fs::create_dir_all(dir).map_err(io(dir))?;
                    // Every dir in a data dir is the server's alone (pki/ holds keys).
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                        .map_err(io(dir))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .mode(mode)
                    .open(&path)
                    .map_err(io(&path))?;
                f.write_all(bytes).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))
            }
        },
        true,
    )?;
    db.flush().map_err(store_err)?;
    Ok(summary)
}
