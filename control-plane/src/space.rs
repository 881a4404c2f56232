//! Room on the data dir's filesystem.
//!
//! sled keeps the first failed write as a fatal error until the process restarts, so the
//! control plane stops before the disk stops it: below a reserve of free space, changes through
//! the API are refused with 503 while reads go on. The writes that still happen (agents' audit
//! records, sessions, usage) land in space the store's and the audit trail's files hold ahead of
//! their ends (allocated while there was room, without changing their length), so they do not
//! meet a full disk either. Once space is freed, changes are accepted again.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the free space is read in the background (a change reads it too).
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The data dir is below its reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Low {
    pub free: u64,
    pub reserve: u64,
}

impl std::fmt::Display for Low {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the data directory is nearly full ({} KiB free, {} KiB kept in reserve): changes are refused until space is freed",
            self.free >> 10,
            self.reserve >> 10
        )
    }
}

/// Watches the free space of the data dir and keeps space allocated ahead of the files that
/// are written to.
pub struct Space {
    dir: PathBuf,
    reserve: u64,
    /// Bytes held allocated past the end of each file in `files`.
    ahead: u64,
    files: Vec<PathBuf>,
    low: AtomicBool,
    /// Set once allocating ahead was refused by the filesystem (logged once).
    no_fallocate: AtomicBool,
}

impl Space {
    /// `reserve` bytes must stay free for changes to be accepted; `files` are kept with
    /// space allocated ahead of them (half the reserve, at most 16 MiB each).
    pub fn new(dir: &Path, reserve: u64, files: Vec<PathBuf>) -> Self {
        Self {
            dir: dir.to_owned(),
            reserve,
            ahead: (reserve / 2).min(16 << 20),
            files,
            low: AtomicBool::new(false),
            no_fallocate: AtomicBool::new(false),
        }
    }

    /// Free bytes for an unprivileged writer on the data dir's filesystem.
    pub fn free(&self) -> std::io::Result<u64> {
        free_bytes(&self.dir)
    }

    /// Reads the free space now: `Err` while it is below the reserve. Logs the change when
    /// the data dir fills up or is freed.
    pub fn check(&self) -> Result<(), Low> {
        let free = match self.free() {
            Ok(free) => free,
            // Unknown room is not a reason to refuse; the writes themselves will say.
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the data dir's free space");
                return Ok(());
            }
        };
        let low = free < self.reserve;
        let was = self.low.swap(low, Ordering::SeqCst);
        if low && !was {
            tracing::error!(
                dir = %self.dir.display(),
                free_bytes = free,
                reserve_bytes = self.reserve,
                "DATA DIR NEARLY FULL: changes are refused with 503 until space is freed; reads go on"
            );
        } else if was && !low {
            tracing::warn!(dir = %self.dir.display(), free_bytes = free, "space on the data dir was freed: changes are accepted again");
        }
        if low {
            Err(Low {
                free,
                reserve: self.reserve,
            })
        } else {
            Ok(())
        }
    }

    /// Whether the last check found the data dir below its reserve.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::SeqCst)
    }

    /// The background pass: checks, and while there is room tops up the space held ahead of
    /// the files, never taking the free space below the reserve.
    pub fn tick(&self) {
        if self.check().is_err() || self.no_fallocate.load(Ordering::Relaxed) {
            return;
        }
        for path in &self.files {
            let Ok(free) = self.free() else { return };
            let room = free.saturating_sub(self.reserve);
            if let Err(e) = allocate_ahead(path, self.ahead, room) {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    self.no_fallocate.store(true, Ordering::Relaxed);
                    tracing::info!(
                        "the data dir's filesystem cannot allocate ahead; only the reserve guards the store"
                    );
                    return;
                }
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::debug!(path = %path.display(), error = %e, "cannot allocate ahead");
                }
            }
        }
    }

    /// Runs [`Space::tick`] every [`CHECK_EVERY`] until the task is dropped.
    pub async fn watch(self: std::sync::Arc<Self>) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        loop {
            every.tick().await;
            let space = self.clone();
            let _ = tokio::task::spawn_blocking(move || space.tick()).await;
        }
    }
}

/// `statvfs`: blocks available to unprivileged users times the fragment size.
#[allow(unsafe_code)] // statvfs fills a struct of ours
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: a zeroed statvfs is a valid value of the plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and the struct is ours to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Makes sure `ahead` bytes past the end of `path` are allocated to it (taking at most `room`
/// new bytes), without changing its length: writes that extend it then need no new space.
#[allow(unsafe_code)] // fallocate on a descriptor we hold
fn allocate_ahead(path: &Path, ahead: u64, room: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    let meta = file.metadata()?;
    let allocated = meta.blocks() * 512;
    let wanted = meta.len() + ahead;
    if allocated >= wanted {
        return Ok(());
    }
    // Holes below the end would be filled too; count them against the room.
    let grow = (wanted - allocated).min(room);
    if grow == 0 {
        return Ok(());
    }
    let upto = allocated.max(meta.len()) + grow;
    // SAFETY: the descriptor is open for writing for the duration of the call.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_KEEP_SIZE,
            0,
            i64::try_from(upto).unwrap_or(i64::MAX),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_ahead_without_changing_the_length() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").expect("write");
        match allocate_ahead(&path, 1 << 20, u64::MAX) {
            Ok(()) => {}
            // Some filesystems (overlay on some kernels) refuse; nothing to check there.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
            Err(e) => panic!("fallocate: {e}"),
        }
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.len(), 5, "length unchanged");
        assert!(
            meta.blocks() * 512 >= 1 << 20,
            "space held: {}",
            meta.blocks() * 512
        );
        assert_eq!(std::fs::read(&path).expect("read"), b"hello");
    }

    #[test]
    fn a_reserve_above_the_free_space_refuses_and_a_small_one_allows() {
        let dir = tempfile::tempdir().expect("dir");
        let free = free_bytes(dir.path()).expect("statvfs");
        assert!(free > 0);
        let tight = Space::new(dir.path(), u64::MAX, Vec::new());
        let low = tight.check().expect_err("below an impossible reserve");
        assert_eq!(low.reserve, u64::MAX);
        assert!(tight.is_low());
        assert!(low.to_string().contains("nearly full"));
        let easy = Space::new(dir.path(), 1, Vec::new());
        assert_eq!(easy.check(), Ok(()));
        assert!(!easy.is_low());
    }
}
