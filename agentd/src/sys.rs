//! The only unsafe code of the agent: a libc call the standard library does not offer.
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
