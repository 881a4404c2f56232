//! The file jail: the host owner names directories ("roots") the control plane may reach, each
//! read-only or read-write with a size cap. Every path is resolved relative to an open handle
//! of its root (cap-std: `openat` walks with `RESOLVE_BENEATH` where the kernel has it), never
//! by checking a string and then opening it, so `..`, absolute symlinks, symlinks that climb out
//! and directories swapped for symlinks mid-operation cannot lead outside. Hard-linked files
//! are refused, since a link inside the root may name an inode outside it.
//!
//! Addresses are `<root name>/<relative path>`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use axon_shared::{FsContent, FsEntry, FsKind, FsListing};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, Metadata, MetadataExt, OpenOptions, OpenOptionsExt, Permissions};
use serde::Deserialize;

/// Longest address accepted.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest single name accepted.
pub const MAX_NAME_LEN: usize = 255;
/// Most bytes one read returns (the rest by ranges), so an answer fits a link frame.
pub const MAX_READ_CHUNK: u64 = 512 * 1024;
/// Most entries one listing returns.
pub const MAX_LIST_ENTRIES: usize = 5000;

/// Whether a root may be changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[serde(rename = "ro")]
    ReadOnly,
    #[serde(rename = "rw")]
    ReadWrite,
}

/// A root as written in the TOML config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootSpec {
    /// `[a-z0-9][a-z0-9._-]*`, at most 64.
    pub name: String,
    pub path: PathBuf,
    pub mode: Mode,
    /// Largest file read or written, bytes (default 16 MiB).
    #[serde(default)]
    pub max_file_size: Option<u64>,
}

impl RootSpec {
    /// Parses the command-line form `NAME=PATH:ro|rw`.
    pub fn parse_flag(text: &str) -> Result<Self, String> {
        let (name, rest) = text
            .split_once('=')
            .ok_or_else(|| format!("--jail {text:?}: expected NAME=PATH:ro|rw"))?;
        let (path, mode) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("--jail {text:?}: expected NAME=PATH:ro|rw"))?;
        let mode = match mode {
            "ro" => Mode::ReadOnly,
            "rw" => Mode::ReadWrite,
            other => return Err(format!("--jail {text:?}: mode {other:?} is not ro or rw")),
        };
        Ok(Self {
            name: name.to_owned(),
            path: PathBuf::from(path),
            mode,
            max_file_size: None,
        })
    }
}

/// A jail operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JailError {
    #[error("invalid path: {0}")]
    BadPath(String),
    #[error("no jail root named {0:?} on this host")]
    NoRoot(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{path}: {reason}")]
    Refused { path: String, reason: String },
    #[error("{path} is larger than the root's limit of {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("{path}: {reason}")]
    Conflict { path: String, reason: String },
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: {reason}")]
    State { path: String, reason: String },
}

/// A root opened once at start: the handle every operation resolves against.
struct Root {
    name: String,
    dir: Dir,
    mode: Mode,
    max_file_size: u64,
    /// Serialises writes in this root, so an etag check and the rename are one step.
    writes: Mutex<()>,
}

/// The jail of one host.
#[derive(Default)]
pub struct Jail {
    roots: Vec<Root>,
}

impl std::fmt::Debug for Jail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.roots.iter().map(|r| &r.name))
            .finish()
    }
}

/// A checked address: the root and a relative path of plain names (empty for the root).
struct Address<'a> {
    root: &'a Root,
    rel: PathBuf,
    shown: String,
}

fn io_err(path: &str, e: std::io::Error) -> JailError {
    match e.kind() {
        std::io::ErrorKind::NotFound => JailError::NotFound(path.to_owned()),
        std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty => {
            JailError::State {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        }
        std::io::ErrorKind::PermissionDenied => JailError::Refused {
            path: path.to_owned(),
            // cap-std reports an escape attempt as permission denied.
            reason: "outside the jail root or not permitted".into(),
        },
        _ => JailError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    }
}

fn kind_of(meta: &Metadata) -> FsKind {
    let t = meta.file_type();
    if t.is_symlink() {
        FsKind::Symlink
    } else if t.is_dir() {
        FsKind::Dir
    } else if t.is_file() {
        FsKind::File
    } else {
        FsKind::Other
    }
}

/// The empty path (or `/`) names the top, above the roots: listable and statable only.
fn is_top(path: &str) -> bool {
    path.trim_start_matches('/').is_empty()
}

fn entry(path: &str, meta: &Metadata) -> FsEntry {
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    FsEntry {
        path: path.to_owned(),
        kind: kind_of(meta),
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        modified,
        etag: None,
    }
}

/// SHA-256 (hex) of bytes: the etag of a file's content.
pub fn etag(bytes: &[u8]) -> String {
    axon_shared::sha256_hex(bytes)
}

impl Jail {
    /// Opens every root; a missing directory or a bad name is an error at start, not later.
    pub fn open(specs: &[RootSpec]) -> Result<Self, String> {
        let mut roots: Vec<Root> = Vec::new();
        for spec in specs {
            if !crate::names::valid_name(&spec.name) {
                return Err(format!(
                    "jail root name {:?}: use 1 to 64 of [a-z0-9._-]",
                    spec.name
                ));
            }
            if roots.iter().any(|r| r.name == spec.name) {
                return Err(format!("jail root {:?} is defined twice", spec.name));
            }
            if !spec.path.is_absolute() {
                return Err(format!(
                    "jail root {:?}: {} is not an absolute path",
                    spec.name,
                    spec.path.display()
                ));
            }
            let dir = Dir::open_ambient_dir(&spec.path, ambient_authority()).map_err(|e| {
                format!(
                    "jail root {:?}: cannot open {}: {e}",
                    spec.name,
                    spec.path.display()
                )
            })?;
            roots.push(Root {
                name: spec.name.clone(),
                dir,
                mode: spec.mode,
                max_file_size: spec.max_file_size.unwrap_or(16 << 20),
                writes: Mutex::new(()),
            });
        }
        Ok(Self { roots })
    }

    /// Names and modes of the roots.
    pub fn roots(&self) -> BTreeMap<String, (Mode, u64)> {
        self.roots
            .iter()
            .map(|r| (r.name.clone(), (r.mode, r.max_file_size)))
            .collect()
    }

    fn address<'a>(&'a self, path: &str) -> Result<Address<'a>, JailError> {
        let bad = |why: &str| JailError::BadPath(why.to_owned());
        if path.len() > MAX_PATH_LEN {
            return Err(bad("longer than 4096 bytes"));
        }
        if path.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        if path.chars().any(char::is_control) {
            return Err(bad("contains control characters"));
        }
        // `/www/site` is read as `www/site`: paths are relative to the roots anyway.
        let path = path.trim_start_matches('/');
        let (root_name, rel) = path.split_once('/').unwrap_or((path, ""));
        if root_name.is_empty() {
            return Err(bad(
                "a path starts with the name of a root, as in www/site/index.html",
            ));
        }
        let root = self
            .roots
            .iter()
            .find(|r| r.name == root_name)
            .ok_or_else(|| JailError::NoRoot(root_name.to_owned()))?;
        let mut clean = PathBuf::new();
        for component in Path::new(rel).components() {
            match component {
                Component::Normal(name) => {
                    if name.len() > MAX_NAME_LEN {
                        return Err(bad("a name is longer than 255 bytes"));
                    }
                    clean.push(name);
                }
                Component::CurDir => {}
                Component::ParentDir => return Err(bad("'..' is not allowed")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(bad("absolute paths are not allowed after the root name"));
                }
            }
        }
        let shown = if clean.as_os_str().is_empty() {
            root.name.clone()
        } else {
            format!("{}/{}", root.name, clean.display())
        };
        Ok(Address {
            root,
            rel: clean,
            shown,
        })
    }

    fn writable<'a>(&'a self, path: &str) -> Result<Address<'a>, JailError> {
        let addr = self.address(path)?;
        if addr.root.mode == Mode::ReadOnly {
            return Err(JailError::Refused {
                path: addr.shown,
                reason: "the root is read-only".into(),
            });
        }
        Ok(addr)
    }

    fn not_root(addr: &Address<'_>) -> Result<(), JailError> {
        if addr.rel.as_os_str().is_empty() {
            return Err(JailError::Refused {
                path: addr.shown.clone(),
                reason: "the root itself cannot be changed".into(),
            });
        }
        Ok(())
    }

    /// Metadata without following a final symlink.
    fn lstat(addr: &Address<'_>) -> Result<Metadata, JailError> {
        if addr.rel.as_os_str().is_empty() {
            return addr
                .root
                .dir
                .dir_metadata()
                .map_err(|e| io_err(&addr.shown, e));
        }
        addr.root
            .dir
            .symlink_metadata(&addr.rel)
            .map_err(|e| io_err(&addr.shown, e))
    }

    /// `fs.stat`.
    pub fn stat(&self, path: &str) -> Result<FsEntry, JailError> {
        if is_top(path) {
            return Ok(FsEntry {
                path: String::new(),
                kind: FsKind::Dir,
                size: self.roots.len() as u64,
                mode: 0o555,
                modified: 0,
                etag: None,
            });
        }
        let addr = self.address(path)?;
        Ok(entry(&addr.shown, &Self::lstat(&addr)?))
    }

    /// `fs.list`: a directory's entries, sorted by name, without following symlinks.
    pub fn list(&self, path: &str) -> Result<FsListing, JailError> {
        if is_top(path) {
            // The top lists the roots, so a browser can start somewhere.
            let mut entries = Vec::new();
            for root in &self.roots {
                let meta = root.dir.dir_metadata().map_err(|e| io_err(&root.name, e))?;
                entries.push(entry(&root.name, &meta));
            }
            return Ok(FsListing {
                path: String::new(),
                entries,
                truncated: false,
            });
        }
        let addr = self.address(path)?;
        let dir = if addr.rel.as_os_str().is_empty() {
            addr.root.dir.try_clone()
        } else {
            addr.root.dir.open_dir(&addr.rel)
        }
        .map_err(|e| io_err(&addr.shown, e))?;
        let mut entries = Vec::new();
        let mut truncated = false;
        for item in dir.entries().map_err(|e| io_err(&addr.shown, e))? {
            let item = item.map_err(|e| io_err(&addr.shown, e))?;
            if entries.len() >= MAX_LIST_ENTRIES {
                truncated = true;
                break;
            }
            let name = item.file_name().to_string_lossy().into_owned();
            let Ok(meta) = dir.symlink_metadata(item.file_name()) else {
                continue;
            };
            entries.push(entry(&format!("{}/{name}", addr.shown), &meta));
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(FsListing {
            path: addr.shown,
            entries,
            truncated,
        })
    }

    /// Opens a regular file for reading, refusing hard-linked files and ones over the cap.
    fn open_regular(addr: &Address<'_>) -> Result<(cap_std::fs::File, Metadata), JailError> {
        Self::not_root(addr)?;
        // Symlinks are followed only while they stay beneath the root (cap-std checks each
        // step); O_NONBLOCK keeps a FIFO from hanging the open.
        let mut opts = OpenOptions::new();
        opts.read(true).custom_flags(libc::O_NONBLOCK);
        let file = addr
            .root
            .dir
            .open_with(&addr.rel, &opts)
            .map_err(|e| io_err(&addr.shown, e))?;
        let meta = file.metadata().map_err(|e| io_err(&addr.shown, e))?;
        if !meta.is_file() {
            return Err(JailError::Refused {
                path: addr.shown.clone(),
                reason: "not a regular file".into(),
            });
        }
        if meta.nlink() > 1 {
            return Err(JailError::Refused {
                path: addr.shown.clone(),
                reason: "the file has other hard links, which may lie outside the jail".into(),
            });
        }
        if meta.len() > addr.root.max_file_size {
            return Err(JailError::TooLarge {
                path: addr.shown.clone(),
                limit: addr.root.max_file_size,
            });
        }
        Ok((file, meta))
    }

    /// `fs.read`: up to `length` bytes (at most 512 KiB) from `offset`, with the etag of the
    /// whole file.
    pub fn read(
        &self,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(FsEntry, Vec<u8>), JailError> {
        let addr = self.address(path)?;
        let (file, meta) = Self::open_regular(&addr)?;
        let want = length.unwrap_or(MAX_READ_CHUNK).min(MAX_READ_CHUNK);
        let end = offset.saturating_add(want);
        // The etag covers the whole file, so it is hashed as it streams past; only the range
        // asked for is kept. The cap holds even if the file grows after the size check.
        let limit = addr.root.max_file_size;
        let mut reader = file.take(limit + 1);
        let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut out = Vec::with_capacity(usize::try_from(want.min(meta.len())).unwrap_or(0));
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| io_err(&addr.shown, e))?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            hash.update(chunk);
            let (from, to) = (at, at + n as u64);
            if to > offset && from < end {
                let lo = usize::try_from(offset.saturating_sub(from)).unwrap_or(0);
                let hi = usize::try_from(end.min(to) - from).unwrap_or(n);
                out.extend_from_slice(&chunk[lo..hi]);
            }
            at = to;
        }
        if at > limit {
            return Err(JailError::TooLarge {
                path: addr.shown,
                limit,
            });
        }
        let mut info = entry(&addr.shown, &meta);
        info.size = at;
        info.etag = Some(axon_shared::hex_encode(hash.finish().as_ref()));
        Ok((info, out))
    }

    /// `fs.read` as the wire type.
    pub fn read_content(
        &self,
        path: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<FsContent, JailError> {
        use base64::Engine as _;
        let (entry, bytes) = self.read(path, offset, length)?;
        Ok(FsContent {
            entry,
            offset,
            content_b64: base64::engine::general_purpose::STANDARD.encode(bytes),
        })
    }

    /// `fs.write`: replaces the whole file atomically (temporary file, fsync, rename, fsync of
    /// the directory). `if_match`: the current etag, `*` for any, `none` for "must not exist".
    pub fn write(
        &self,
        path: &str,
        content: &[u8],
        if_match: Option<&str>,
    ) -> Result<FsEntry, JailError> {
        let addr = self.writable(path)?;
        Self::not_root(&addr)?;
        if content.len() as u64 > addr.root.max_file_size {
            return Err(JailError::TooLarge {
                path: addr.shown,
                limit: addr.root.max_file_size,
            });
        }
        let _guard = addr.root.writes.lock().unwrap_or_else(|p| p.into_inner());
        let existing = match Self::lstat(&addr) {
            Ok(meta) => Some(meta),
            Err(JailError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        if let Some(meta) = &existing
            && !meta.is_file()
        {
            return Err(JailError::Refused {
                path: addr.shown,
                reason: "not a regular file (symlinks and directories are not overwritten)".into(),
            });
        }
        match (if_match, &existing) {
            (None | Some("*"), _) => {}
            (Some("none"), None) => {}
            (Some("none"), Some(_)) => {
                return Err(JailError::Conflict {
                    path: addr.shown,
                    reason: "it exists, and the write asked that it does not (If-None-Match: *)"
                        .into(),
                });
            }
            (Some(expected), Some(_)) => {
                let (current, _) = self.read(path, 0, Some(0))?;
                if current.etag.as_deref() != Some(expected) {
                    return Err(JailError::Conflict {
                        path: addr.shown,
                        reason: format!("it changed: its etag is no longer {expected}"),
                    });
                }
            }
            (Some(expected), None) => {
                return Err(JailError::Conflict {
                    path: addr.shown,
                    reason: format!("it does not exist, so it cannot have etag {expected}"),
                });
            }
        }
        if existing.as_ref().is_some_and(|m| m.nlink() > 1) {
            return Err(JailError::Refused {
                path: addr.shown,
                reason: "the file has other hard links, which may lie outside the jail".into(),
            });
        }
        let parent = addr.rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = addr
            .rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = if parent.as_os_str().is_empty() {
            addr.root.dir.try_clone()
        } else {
            addr.root.dir.open_dir(&parent)
        }
        .map_err(|e| io_err(&addr.shown, e))?;
        let tmp = format!(".{name}.axon-{:016x}.tmp", rand::random::<u64>());
        let mode = existing.as_ref().map(|m| m.mode() & 0o777).unwrap_or(0o644);
        let mut opts = OpenOptions::new();
        opts.write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW);
        let result = (|| {
            let mut file = dir.open_with(&tmp, &opts)?;
            // The process umask must not narrow the file's mode.
            file.set_permissions(Permissions::from_std(std::fs::Permissions::from_mode(mode)))?;
            file.write_all(content)?;
            file.sync_all()?;
            dir.rename(&tmp, &dir, &name)?;
            // The rename is durable once the directory is.
            dir.open(".").and_then(|d| d.sync_all())
        })();
        if let Err(e) = result {
            let _ = dir.remove_file(&tmp);
            return Err(io_err(&addr.shown, e));
        }
        let mut written = self.stat(path)?;
        written.etag = Some(etag(content));
        Ok(written)
    }

    /// `fs.mkdir`.
    pub fn mkdir(&self, path: &str, parents: bool) -> Result<FsEntry, JailError> {
        let addr = self.writable(path)?;
        Self::not_root(&addr)?;
        let made = if parents {
            addr.root.dir.create_dir_all(&addr.rel)
        } else {
            addr.root.dir.create_dir(&addr.rel)
        };
        made.map_err(|e| io_err(&addr.shown, e))?;
        self.stat(path)
    }

    /// `fs.rename` within one root; neither side may be the root itself.
    pub fn rename(&self, from: &str, to: &str) -> Result<FsEntry, JailError> {
        let src = self.writable(from)?;
        let dst = self.writable(to)?;
        Self::not_root(&src)?;
        Self::not_root(&dst)?;
        if src.root.name != dst.root.name {
            return Err(JailError::Refused {
                path: src.shown,
                reason: "rename across roots is not supported".into(),
            });
        }
        src.root
            .dir
            .rename(&src.rel, &src.root.dir, &dst.rel)
            .map_err(|e| io_err(&src.shown, e))?;
        self.stat(to)
    }

    /// `fs.delete`: a file, a symlink (not its target), or a directory (non-empty only with
    /// `recursive`). The root itself cannot be deleted.
    pub fn delete(&self, path: &str, recursive: bool) -> Result<(), JailError> {
        let addr = self.writable(path)?;
        Self::not_root(&addr)?;
        let meta = Self::lstat(&addr)?;
        let removed = if meta.is_dir() {
            if recursive {
                addr.root.dir.remove_dir_all(&addr.rel)
            } else {
                addr.root.dir.remove_dir(&addr.rel)
            }
        } else {
            addr.root.dir.remove_file(&addr.rel)
        };
        removed.map_err(|e| io_err(&addr.shown, e))
    }

    /// `fs.chmod`: permission bits only; setuid, setgid and sticky are refused.
    pub fn chmod(&self, path: &str, mode: u32) -> Result<FsEntry, JailError> {
        let addr = self.writable(path)?;
        Self::not_root(&addr)?;
        if mode & !0o777 != 0 {
            return Err(JailError::Refused {
                path: addr.shown,
                reason: "only the permission bits 0o777 may be set".into(),
            });
        }
        // One handle for the checks and the change: a path swapped after the check (a
        // symlink, a hard link from outside) cannot receive the new mode. O_NOFOLLOW refuses
        // a final symlink swapped in; O_NONBLOCK keeps a FIFO from hanging the open.
        let mut opts = OpenOptions::new();
        opts.read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
        let handle =
            addr.root
                .dir
                .open_with(&addr.rel, &opts)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) => JailError::Refused {
                        path: addr.shown.clone(),
                        reason: "symlinks have no permissions of their own".into(),
                    },
                    _ => io_err(&addr.shown, e),
                })?;
        let meta = handle.metadata().map_err(|e| io_err(&addr.shown, e))?;
        if !meta.is_file() && !meta.is_dir() {
            return Err(JailError::Refused {
                path: addr.shown,
                reason: "only regular files and directories can change mode".into(),
            });
        }
        if meta.is_file() && meta.nlink() > 1 {
            return Err(JailError::Refused {
                path: addr.shown,
                reason: "the file has other hard links, which may lie outside the jail".into(),
            });
        }
        handle
            .set_permissions(Permissions::from_std(std::fs::Permissions::from_mode(mode)))
            .map_err(|e| io_err(&addr.shown, e))?;
        self.stat(path)
    }
}

use std::os::unix::fs::PermissionsExt as _;

#[cfg(test)]
mod tests;
