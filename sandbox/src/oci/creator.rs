//! Container creation in a fresh process: the runtime's own executable, started
//! again with [`CREATOR_ARG`].
//!
//! libcontainer creates a container's processes with raw `clone` calls from the
//! process that calls it. From the multi-threaded runtime that is unsafe: a clone
//! copies only the calling thread, and any lock another thread held at that moment
//! stays held in the copy. glibc re-arms the allocator's locks on `fork`, but not on
//! a raw clone, and nothing re-arms Rust's own. Both were seen: a child waiting on a
//! malloc lock, and libcontainer's intermediate process waiting forever on the
//! standard library's thread-info mutex in `process::exit` (gdb, in a burst of 15
//! creations from a forked copy of the runtime).
//!
//! A freshly executed process has one thread and no held lock. It gets only the
//! container's output pipes and a pipe for its error message, so a container's init,
//! which is a clone of it, holds nothing of the runtime while it waits to start
//! (a prepared sandbox waits long). The process exits once the container is created;
//! the init is then reparented to the runtime, its subreaper (see
//! [`become_subreaper`]), which reaps it as its own child.
//!
//! Every binary that creates containers calls [`run_if_creator`] first thing in
//! `main`.

use super::executor::EmberExecutor;
use super::seccomp;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first argument that makes the executable create one container and exit.
const CREATOR_ARG: &str = "__ember-create-container";

/// Where the creator finds the container's stdin, stdout, stderr, and the pipe for
/// its own error message.
const STDIN_FD: RawFd = 3;
const STDOUT_FD: RawFd = 4;
const STDERR_FD: RawFd = 5;
const MESSAGE_FD: RawFd = 6;

/// Makes orphans of this process's descendants its children, so that the init of a
/// container whose creator has exited is reaped here.
pub(crate) fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// When this process was started as a creator: creates the container its arguments
/// name and exits. Otherwise returns at once.
pub fn run_if_creator() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(CREATOR_ARG.as_ref()) {
        return;
    }
    let (Some(id), Some(state_dir), Some(bundle)) = (args.next(), args.next(), args.next()) else {
        std::process::exit(2);
    };
    // SAFETY: the runtime handed these descriptors over, open, for this process alone.
    let (stdin, stdout, stderr, message) = unsafe {
        (
            OwnedFd::from_raw_fd(STDIN_FD),
            OwnedFd::from_raw_fd(STDOUT_FD),
            OwnedFd::from_raw_fd(STDERR_FD),
            std::fs::File::from_raw_fd(MESSAGE_FD),
        )
    };
    // The init inherits them; they must not reach the workload it executes.
    for fd in [&stdin, &stdout, &stderr] {
        set_close_on_exec(fd.as_raw_fd());
    }
    set_close_on_exec(message.as_raw_fd());
    let outcome = create_here(
        &id.to_string_lossy(),
        Path::new(&state_dir),
        Path::new(&bundle),
        Stdio3 {
            stdin,
            stdout,
            stderr,
        },
    );
    match outcome {
        Ok(()) => std::process::exit(0),
        Err(reason) => {
            use std::io::Write;
            let _ = (&message).write_all(reason.as_bytes());
            std::process::exit(1)
        }
    }
}

fn set_close_on_exec(fd: RawFd) {
    // SAFETY: sets a flag on a descriptor this process owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// The container's standard streams: its ends of the runtime's pipes.
pub(crate) struct Stdio3 {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

fn create_here(id: &str, state_dir: &Path, bundle: &Path, stdio: Stdio3) -> Result<(), String> {
    let seccomp = seccomp::default_profile().map_err(|e| format!("seccomp profile: {e}"))?;
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_root_path(state_dir)
        .and_then(|b| {
            b.with_executor(EmberExecutor {
                seccomp: Arc::new(seccomp),
            })
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr)
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Creates container `id` from `bundle` in a creator process, waiting at most
/// `limit` (a creator still running then is killed).
pub(crate) fn create(
    id: &str,
    state_dir: &Path,
    bundle: &Path,
    stdio: Stdio3,
    limit: Duration,
) -> Result<(), String> {
    let exe = super::RUNNING_EXECUTABLE;
    // Read only once the creator has exited: the init holds the write end until it
    // executes the workload, so waiting for end-of-file could wait for ever.
    let (message_read, message_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| format!("creating a pipe: {e}"))?;
    let handed = [
        stdio.stdin.as_raw_fd(),
        stdio.stdout.as_raw_fd(),
        stdio.stderr.as_raw_fd(),
        message_write.as_raw_fd(),
    ];
    let mut command = Command::new(exe);
    command
        .arg(CREATOR_ARG)
        .arg(id)
        .arg(state_dir)
        .arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let runtime_pid = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only prctl, getppid, dup2, fcntl and
    // close_range run, which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // A creator outliving a killed runtime would finish its container after
            // the next runtime swept the leftovers, and leave it running for good.
            // The forking thread waits for the creator, so the signal comes only
            // with the runtime's end.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != runtime_pid {
                libc::_exit(1);
            }
            // Moved above the targets first, so that no dup2 overwrites a source.
            let mut moved = [0; 4];
            for (slot, fd) in moved.iter_mut().zip(handed) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (fd, target) in moved
                .into_iter()
                .zip([STDIN_FD, STDOUT_FD, STDERR_FD, MESSAGE_FD])
            {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::syscall(libc::SYS_close_range, MESSAGE_FD as u32 + 1, u32::MAX, 0);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting the creator: {e}"))?;
    drop((stdio, message_write));
    if !exits_within(child.id() as i32, limit) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "the creating process did not finish within {limit:?} and was killed"
        ));
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the creator: {e}"))?;
    let mut message = Vec::new();
    let _ = std::fs::File::from(message_read).read_to_end(&mut message);
    if status.success() {
        Ok(())
    } else if !message.is_empty() {
        Err(String::from_utf8_lossy(&message).into_owned())
    } else {
        Err(format!(
            "the creator ended ({status}); does this executable call run_if_creator?"
        ))
    }
}

/// Waits until process `pid` (a child) has exited, without reaping it, for at most
/// `limit`.
fn exits_within(pid: i32, limit: Duration) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creator_that_does_not_finish_is_killed_at_the_limit() {
        let mut sleeper = Command::new("sleep").arg("10").spawn().unwrap();
        let began = Instant::now();
        assert!(!exits_within(
            sleeper.id() as i32,
            Duration::from_millis(100)
        ));
        assert!(began.elapsed() < Duration::from_secs(5));
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        let mut quick = Command::new("true").spawn().unwrap();
        assert!(exits_within(quick.id() as i32, Duration::from_secs(10)));
        quick.wait().unwrap();
    }
}
