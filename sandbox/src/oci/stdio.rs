//! An instance's standard streams: named pipes in its directory, so that they
//! outlive the runtime. The container opens each one for reading and writing, so
//! it never sees the end of its input nor a broken pipe while no runtime is
//! there (a runtime killed and not yet back): its output waits in the pipe, up to
//! the pipe's size, until the next runtime opens the pipes again and reads on.

use nix::sys::stat::Mode;
use nix::unistd::mkfifo;
use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const STDIN: &str = "stdin";
const STDOUT: &str = "stdout";
const STDERR: &str = "stderr";

/// The container's ends of its three streams.
pub(crate) struct ContainerEnds {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// The runtime's ends: it writes the container's input and reads its output.
pub(crate) struct RuntimeEnds {
    pub(crate) stdin: OwnedFd,
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
}

/// Makes the three pipes in `dir`, owned by `owner` (the instance's root, in a user
/// namespace) or root, and opens both ends of each.
pub(crate) fn make(
    dir: &Path,
    owner: Option<u32>,
) -> std::io::Result<(ContainerEnds, RuntimeEnds)> {
    for name in [STDIN, STDOUT, STDERR] {
        let path = dir.join(name);
        mkfifo(&path, Mode::from_bits_truncate(0o600))?;
        // A workload reopens its streams by path (`/proc/1/fd/1`, or nginx's
        // access.log linked to /dev/stdout): its root must own them.
        if owner.is_some() {
            std::os::unix::fs::chown(&path, owner, owner)?;
        }
    }
    let container = ContainerEnds {
        stdin: open_both(&dir.join(STDIN))?,
        stdout: open_both(&dir.join(STDOUT))?,
        stderr: open_both(&dir.join(STDERR))?,
    };
    Ok((container, reopen(dir)?))
}

/// The runtime's ends of the pipes in `dir`, opened again (by a runtime that
/// adopts the instance). The container holds both ends of each, so none of these
/// opens waits.
pub(crate) fn reopen(dir: &Path) -> std::io::Result<RuntimeEnds> {
    let open = |name: &str, write: bool| -> std::io::Result<OwnedFd> {
        let file = OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(libc::O_NONBLOCK)
            .open(dir.join(name))?;
        Ok(file.into())
    };
    Ok(RuntimeEnds {
        stdin: open(STDIN, true)?,
        stdout: open(STDOUT, false)?,
        stderr: open(STDERR, false)?,
    })
}

/// A pipe opened for reading and writing: the opener is a reader and a writer of it
/// at once, so it neither waits for the other end nor loses it.
fn open_both(path: &Path) -> std::io::Result<OwnedFd> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn output_written_while_no_runtime_reads_waits_for_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let (container, runtime) = make(dir.path(), None).unwrap();
        // The runtime goes: its ends close.
        drop(runtime);
        let mut stdout = std::fs::File::from(container.stdout);
        // No broken pipe: the line waits in the pipe.
        stdout.write_all(b"while away\n").unwrap();
        let again = reopen(dir.path()).unwrap();
        let mut read = std::fs::File::from(again.stdout);
        let mut buffer = [0u8; 64];
        let n = read.read(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"while away\n");
        // Input from the new runtime reaches the container.
        std::fs::File::from(again.stdin)
            .write_all(b"hello\n")
            .unwrap();
        let mut stdin = std::fs::File::from(container.stdin);
        let n = stdin.read(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"hello\n");
    }
}
