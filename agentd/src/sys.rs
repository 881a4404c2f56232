//! The only unsafe code of the agent: libc calls the standard library does not offer.
#![allow(unsafe_code)]

use std::io;

/// Sends SIGKILL to every process of the process group `pgid`.
pub fn kill_process_group(pgid: u32) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid).map_err(|_| io::Error::other("pid out of range"))?;
    if pgid <= 1 {
        return Err(io::Error::other("refusing to signal process group 0 or 1"));
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a process
    // group, and pgid > 1 rules out "every process" (-1) and our own group (0).
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One malloc arena for every thread. glibc gives each thread that allocates an arena of its
/// own (up to eight per core), each holding freed memory apart; the agent's threads allocate
/// little and seldom at the same time, so sharing one costs nothing measurable.
pub fn one_malloc_arena() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the free memory at the top and in the middle of the heap to the kernel: what
/// starting the agent allocated and freed (configuration, TLS set-up, the first probes)
/// otherwise stays resident in the allocator's free lists.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory the allocator holds; no pointer is
    // involved.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hands the pages of this program's own code and read-only data back to the kernel
/// (`MADV_PAGEOUT`): most of them ran once, at start (argument parsing, configuration,
/// enrollment, TLS set-up), yet stay mapped, and counted in the resident set, for the life of
/// the process. They are clean copies of the executable: the kernel drops them as it would
/// under memory pressure, and a page needed again is read back from the file on its next
/// use. Pages other processes map too are left alone by the kernel. Returns the bytes advised.
pub fn release_code_pages() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let exe = std::fs::metadata("/proc/self/exe")?;
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let mut advised = 0;
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(_offset), Some(_dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        if !perms.starts_with('r') || perms.as_bytes().get(1) != Some(&b'-') {
            continue;
        }
        if inode.parse::<u64>().ok() != Some(exe.ino()) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is one of this process's own read-only file mappings, as listed
        // by the kernel; MADV_PAGEOUT changes no content (the pages are re-read from the
        // file on their next use), only whether they are resident.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        advised += (end - start) as u64;
    }
    Ok(advised)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_resident_kib() -> u64 {
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata("/proc/self/exe").expect("exe").ino();
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut ours = false;
        let mut kib = 0;
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if fields
                .first()
                .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
            {
                ours = fields.get(4).and_then(|i| i.parse::<u64>().ok()) == Some(ino)
                    && fields.get(1).is_some_and(|p| !p.contains('w'));
            } else if ours && fields.first() == Some(&"Rss:") {
                kib += fields
                    .get(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        kib
    }

    /// The program's own code pages leave the resident set, and the program goes on running
    /// the code it needs (read back on use).
    #[test]
    fn code_pages_are_handed_back_and_read_again_on_use() {
        let before = code_resident_kib();
        let advised = release_code_pages().expect("madvise");
        assert!(advised > 0, "no read-only mapping of the executable found");
        let after = code_resident_kib();
        assert!(
            after < before,
            "resident code {before} KiB before, {after} KiB after"
        );
        // Code runs after the release: formatting and parsing fault their pages back in.
        assert_eq!(
            format!("{:?}", vec![1, 2])
                .parse::<String>()
                .ok()
                .as_deref(),
            Some("[1, 2]")
        );
    }
}
