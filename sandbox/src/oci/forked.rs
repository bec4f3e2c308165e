//! Container creation in a forked, single-threaded copy of the runtime.
//!
//! libcontainer starts a container's processes with raw `clone` calls, which skip
//! the allocator's fork handlers. In a multi-threaded runtime a clone made while
//! another thread holds a malloc lock gives a child whose first allocation waits for
//! that lock forever (seen when a burst created 15 containers at once). `fork`
//! takes the allocator's locks around the copy, and the copy has one thread, so the
//! clones libcontainer makes from it are safe.
//!
//! The copy closes every descriptor it does not need before creating the container:
//! the container's init is a clone of it and holds what it holds until it executes
//! the workload, which for a prepared sandbox is much later. Inherited, the runtime's
//! listening sockets and its state store's lock would outlive a killed runtime.
//!
//! The copy exits once the container is created. Its children, the container's init
//! among them, are then reparented to the runtime, which is their subreaper (see
//! [`become_subreaper`]), so the runtime reaps them as before.

use nix::fcntl::OFlag;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe2};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::panic::AssertUnwindSafe;

/// Makes orphans of this process's descendants its children, so that the init of a
/// container created by a forked copy is reaped here.
pub(crate) fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `work` in a forked copy of this process and returns its outcome: its error
/// message when it failed. In the copy, only the standard streams and the descriptors
/// in `keep` stay open.
pub(crate) fn run_forked(
    keep: &[RawFd],
    work: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    // Close-on-exec, and read only once the copy has exited: the container's init
    // inherits the write end until it execs, so waiting for end-of-file would hang.
    let (read, write) =
        pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(|e| format!("creating a pipe: {e}"))?;
    // SAFETY: the child runs only `work` (which must not touch the async runtime)
    // and leaves with _exit; glibc's fork leaves the allocator usable in it.
    match unsafe { fork() } {
        Err(e) => Err(format!("forking: {e}")),
        Ok(ForkResult::Child) => {
            drop(read);
            let mut open: Vec<RawFd> = keep.to_vec();
            open.push(write.as_raw_fd());
            if let Err(e) = close_all_but(&mut open) {
                let _ = nix::unistd::write(&write, format!("closing descriptors: {e}").as_bytes());
                // SAFETY: as below.
                unsafe { libc::_exit(1) }
            }
            // Another thread may have held the log writer's lock at the fork.
            let _no_logs = tracing::dispatcher::set_default(&tracing::Dispatch::none());
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err("creating the container panicked".into()));
            let code = match outcome {
                Ok(()) => 0,
                Err(message) => {
                    let _ = nix::unistd::write(&write, message.as_bytes());
                    1
                }
            };
            // SAFETY: ends the copy without running destructors or exit handlers
            // that belong to the runtime.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(write);
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other,
                }
            };
            let mut message = Vec::new();
            let _ = std::fs::File::from(read).read_to_end(&mut message);
            match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(WaitStatus::Exited(_, _)) if !message.is_empty() => {
                    Err(String::from_utf8_lossy(&message).into_owned())
                }
                Ok(other) => Err(format!("the creating process ended: {other:?}")),
                Err(e) => Err(format!("waiting for the creating process: {e}")),
            }
        }
    }
}

/// Closes every descriptor above the standard streams except those in `open`.
fn close_all_but(open: &mut Vec<RawFd>) -> std::io::Result<()> {
    open.retain(|&fd| fd > 2);
    open.sort_unstable();
    open.dedup();
    let mut first: u32 = 3;
    for &fd in open.iter() {
        let fd = fd as u32;
        if fd > first {
            close_range(first, fd - 1)?;
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX)
}

fn close_range(first: u32, last: u32) -> std::io::Result<()> {
    // SAFETY: close_range takes two descriptor numbers and flags; it only closes.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outcome_comes_back_from_the_copy() {
        assert_eq!(run_forked(&[], || Ok(())), Ok(()));
        assert_eq!(
            run_forked(&[], || Err("no room".into())),
            Err("no room".to_string())
        );
        let big = "x".repeat(10_000);
        assert_eq!(run_forked(&[], || Err(big.clone())), Err(big.clone()));
    }

    #[test]
    fn the_copy_keeps_only_the_descriptors_it_is_given() {
        let kept = std::fs::File::open("/proc/self/status").unwrap();
        let other = std::fs::File::open("/proc/self/status").unwrap();
        let (kept_fd, other_fd) = (kept.as_raw_fd(), other.as_raw_fd());
        let open = |fd: RawFd| std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists();
        assert_eq!(
            run_forked(&[kept_fd], || match (open(kept_fd), open(other_fd)) {
                (true, false) => Ok(()),
                seen => Err(format!("kept, other open: {seen:?}")),
            }),
            Ok(())
        );
    }
}
