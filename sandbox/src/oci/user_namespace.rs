//! User namespaces for OCI instances: root in an instance is an unprivileged host
//! user, the first of its container's [`IdRange`].
//!
//! The image's layers stay owned by host root on disk. Each instance sees them
//! through idmapped mounts (one per layer, made with `mount_setattr`), which show
//! host id N as container id N, so nothing is copied or chowned. Overlayfs cannot be
//! idmapped itself (`mount_setattr` answers EINVAL on this kernel) and an idmapped
//! upper directory makes overlayfs mount read-only (its work directory is written
//! as host root, which the mapping cannot show: EOVERFLOW), so the writable layer
//! is a plain tmpfs whose top directory belongs to the range's root.

use crate::IdRange;
use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

/// A user namespace per id range, made once and kept open: `mount_setattr` takes
/// one to say how an idmapped mount maps ids.
#[derive(Default)]
pub(crate) struct UserNamespaces {
    made: parking_lot::Mutex<HashMap<IdRange, Arc<OwnedFd>>>,
}

impl UserNamespaces {
    /// The user namespace that maps container ids onto `range`.
    pub(crate) fn of(&self, range: IdRange) -> io::Result<Arc<OwnedFd>> {
        if let Some(namespace) = self.made.lock().get(&range) {
            return Ok(namespace.clone());
        }
        let made = Arc::new(make(range)?);
        Ok(self.made.lock().entry(range).or_insert(made).clone())
    }
}

/// The line `uid_map` and `gid_map` take for `range`.
pub(crate) fn map_line(range: IdRange) -> String {
    format!("0 {} {}\n", range.host_base(), IdRange::SIZE)
}

/// Makes a user namespace mapped onto `range`: a child unshares one and waits, the
/// parent writes its maps and opens it, then kills the child. The namespace lives
/// on as long as the descriptor does.
///
/// The child first closes every descriptor it inherited but its pipe, and dies
/// with its parent: a runtime killed while the child waits must leave nothing
/// running, least of all a process holding the state store's lock (a forked
/// child shares the parent's `flock`s, and the next runtime could not start).
fn make(range: IdRange) -> io::Result<OwnedFd> {
    let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child calls only async-signal-safe system calls (close_range,
    // prctl, getppid, unshare, write, pause, _exit) before it ends, so forking a
    // threaded process is sound.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw system calls on descriptors this process owns.
        unsafe {
            let keep = ready_write.as_raw_fd() as libc::c_uint;
            if keep > 0 {
                libc::syscall(libc::SYS_close_range, 0u32, keep - 1, 0u32);
            }
            libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            let unshared = libc::unshare(libc::CLONE_NEWUSER) == 0;
            let byte = [u8::from(unshared)];
            libc::write(ready_write.as_raw_fd(), byte.as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    drop(ready_write);
    let child = nix::unistd::Pid::from_raw(pid);
    let result = (|| {
        let mut byte = [0u8];
        let read = nix::unistd::read(ready_read.as_raw_fd(), &mut byte)?;
        if read != 1 || byte[0] != 1 {
            return Err(io::Error::other(
                "the child could not unshare a user namespace",
            ));
        }
        let line = map_line(range);
        std::fs::write(format!("/proc/{pid}/uid_map"), &line)?;
        std::fs::write(format!("/proc/{pid}/gid_map"), &line)?;
        Ok(OwnedFd::from(std::fs::File::open(format!(
            "/proc/{pid}/ns/user"
        ))?))
    })();
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    // Another reaper may have collected it first: ECHILD is fine.
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

/// The `mount_setattr` argument (linux/mount.h), spelled out so as not to depend
/// on which libc release exports it.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Mounts `source` at `target` (an existing directory) with its ids mapped as
/// `namespace` maps them: what host id N owns, the namespace's id N owns.
pub(crate) fn bind_idmapped(
    source: &Path,
    target: &Path,
    namespace: BorrowedFd<'_>,
) -> io::Result<()> {
    let source = c_path(source)?;
    let target = c_path(target)?;
    // SAFETY: open_tree takes a directory fd, a NUL-terminated path and flags; it
    // returns a new descriptor, owned from here on.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `tree` was just returned by open_tree and nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: namespace.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `attr`, whose size is passed, on the detached
    // tree `tree`.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: move_mount attaches the detached tree `tree` at `target`.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_map_line_names_the_range() {
        let range = IdRange::new(2).unwrap();
        assert_eq!(map_line(range), "0 1179648 65536\n");
    }

    /// Needs root, as the OCI sandbox does.
    #[test]
    fn an_idmapped_mount_shows_host_ids_as_the_ranges() {
        if !nix::unistd::Uid::effective().is_root() {
            panic!("this test needs root (the OCI sandbox's tests run as root in CI)");
        }
        let dir = tempfile::tempdir().unwrap();
        let (source, target) = (dir.path().join("source"), dir.path().join("target"));
        std::fs::create_dir(&source).unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(source.join("file"), b"x").unwrap();
        std::os::unix::fs::chown(source.join("file"), Some(5), Some(6)).unwrap();
        let range = IdRange::new(3).unwrap();
        let namespaces = UserNamespaces::default();
        let namespace = namespaces.of(range).unwrap();
        // Made once per range.
        assert!(Arc::ptr_eq(&namespace, &namespaces.of(range).unwrap()));
        bind_idmapped(&source, &target, namespace.as_fd()).unwrap();
        let seen = std::fs::metadata(target.join("file")).unwrap();
        let unmount = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
        assert_eq!(seen.uid(), range.host_id(5).unwrap());
        assert_eq!(seen.gid(), range.host_id(6).unwrap());
        // The source is unchanged.
        assert_eq!(std::fs::metadata(source.join("file")).unwrap().uid(), 5);
        unmount.unwrap();
    }
}
