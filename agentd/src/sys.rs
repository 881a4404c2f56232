//! The only unsafe code of the agent: two libc calls the standard library does not offer.
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

/// Makes the child drop every supplementary group before exec, so a command run as another
/// user does not keep the agent's (root's) groups.
pub fn clear_supplementary_groups(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only setgroups(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}
