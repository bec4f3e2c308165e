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
//! Fork copies only the calling thread, and a lock another thread held at that moment
//! stays held in the copy. glibc re-arms the allocator's locks, but Rust's standard
//! library has its own: libcontainer's intermediate process ends with
//! `std::process::exit`, whose clean-up takes a mutex that threads take as they
//! start and end. When a thread of the runtime was starting or ending at the fork,
//! the intermediate process waits for it forever (seen with gdb in a burst of 15
//! creations). Such a creation is killed after [`run_forked`]'s time limit and
//! reported as a failed start. Forking from a single-threaded helper process started
//! before any thread would remove the cause.
//!
//! The copy exits once the container is created. Its children, the container's init
//! among them, are then reparented to the runtime, which is their subreaper (see
//! [`become_subreaper`]), so the runtime reaps them as before.

use nix::fcntl::OFlag;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork, pipe2};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

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
/// message when it failed, or when it did not finish within `limit` (the copy is then
/// killed). In the copy, only the standard streams and the descriptors in `keep`
/// stay open.
pub(crate) fn run_forked(
    keep: &[RawFd],
    limit: Duration,
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
            if !exits_within(child, limit) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(format!(
                    "the creating process did not finish within {limit:?} and was killed"
                ));
            }
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

/// Waits until `child` has exited (without reaping it), for at most `limit`.
fn exits_within(child: nix::unistd::Pid, limit: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    if fd < 0 {
        // No pidfd (a kernel before 5.3): wait without a limit.
        return true;
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for at most `millis`.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready > 0 {
            return true;
        }
        let interrupted =
            ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
        if !interrupted && Instant::now() >= deadline {
            return false;
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
        let limit = Duration::from_secs(60);
        assert_eq!(run_forked(&[], limit, || Ok(())), Ok(()));
        assert_eq!(
            run_forked(&[], limit, || Err("no room".into())),
            Err("no room".to_string())
        );
        let big = "x".repeat(10_000);
        assert_eq!(
            run_forked(&[], limit, || Err(big.clone())),
            Err(big.clone())
        );
    }

    #[test]
    fn a_copy_that_hangs_is_killed_at_the_limit() {
        let outcome = run_forked(&[], Duration::from_millis(100), || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        assert!(outcome.unwrap_err().contains("did not finish"));
    }

    #[test]
    fn the_copy_keeps_only_the_descriptors_it_is_given() {
        let kept = std::fs::File::open("/proc/self/status").unwrap();
        let other = std::fs::File::open("/proc/self/status").unwrap();
        let (kept_fd, other_fd) = (kept.as_raw_fd(), other.as_raw_fd());
        let open = |fd: RawFd| std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists();
        assert_eq!(
            run_forked(&[kept_fd], Duration::from_secs(60), || {
                match (open(kept_fd), open(other_fd)) {
                    (true, false) => Ok(()),
                    seen => Err(format!("kept, other open: {seen:?}")),
                }
            }),
            Ok(())
        );
    }
}
