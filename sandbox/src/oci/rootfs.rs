//! Each instance's root filesystem: the image's unpacked layers as read-only overlay
//! lowers, under a writable upper directory on a tmpfs sized to the container's
//! `ephemeralStorage` (a write past it fails with ENOSPC, "No space left on device").
//! With a user namespace, the lowers are idmapped mounts of the layers (see
//! `user_namespace`).

use super::user_namespace::bind_idmapped;
use crate::IdRange;
use nix::mount::{MntFlags, MsFlags};
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

/// How an instance's ids map onto the host's.
#[derive(Clone, Copy)]
pub struct IdMapping<'a> {
    /// The host ids its ids map onto.
    pub range: IdRange,
    /// A user namespace with that mapping.
    pub namespace: BorrowedFd<'a>,
}

/// An instance's directory: `config.json` (the bundle), `rw/` (the sized tmpfs with
/// `upper/` and `work/`) and `rootfs/` (the overlay).
#[derive(Debug)]
pub struct InstanceDir {
    dir: PathBuf,
}

impl InstanceDir {
    /// Mounts the instance's filesystems in `dir` (created if missing): a tmpfs of
    /// `size` bytes for the writable layer, and the overlay. `lowers` are the image's
    /// unpacked layers, bottom first. With `ids`, the instance's root owns the
    /// writable layer and sees the layers' files as its own. Needs root.
    pub fn mount(
        dir: PathBuf,
        lowers: &[PathBuf],
        size: u64,
        ids: Option<IdMapping<'_>>,
    ) -> std::io::Result<Self> {
        // Traversable by the instance's root, an unprivileged host user; listable
        // by root alone.
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o711)
            .recursive(true)
            .create(&dir)?;
        // From here on, tearing down undoes whatever part was done.
        let instance = Self { dir };
        match instance.mount_parts(lowers, size, ids) {
            Ok(()) => Ok(instance),
            Err(e) => {
                instance.remove();
                Err(e)
            }
        }
    }

    fn mount_parts(
        &self,
        lowers: &[PathBuf],
        size: u64,
        ids: Option<IdMapping<'_>>,
    ) -> std::io::Result<()> {
        let mapped_lowers;
        let lowers = match ids {
            None => lowers,
            Some(ids) => {
                mapped_lowers = self.map_lowers(lowers, ids.namespace)?;
                &mapped_lowers
            }
        };
        let rw = self.dir.join("rw");
        std::fs::create_dir_all(&rw)?;
        nix::mount::mount(
            Some("tmpfs"),
            &rw,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0755").as_str()),
        )?;
        let (upper, work) = (rw.join("upper"), rw.join("work"));
        std::fs::create_dir(&upper)?;
        std::fs::create_dir(&work)?;
        if let Some(ids) = ids {
            // The overlay's root is the upper directory's: the instance's root owns it.
            let root = ids.range.host_base();
            std::os::unix::fs::chown(&upper, Some(root), Some(root))?;
        }
        let rootfs = self.rootfs();
        std::fs::create_dir_all(&rootfs)?;
        // Overlayfs lists lowers topmost first.
        let lowerdir = lowers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let options = format!(
            "lowerdir={lowerdir},upperdir={},workdir={}",
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )?;
        Ok(())
    }

    /// Mounts each layer, idmapped, at `lower/<n>` and returns those paths.
    fn map_lowers(
        &self,
        lowers: &[PathBuf],
        namespace: BorrowedFd<'_>,
    ) -> std::io::Result<Vec<PathBuf>> {
        let parent = self.dir.join("lower");
        std::fs::create_dir_all(&parent)?;
        lowers
            .iter()
            .enumerate()
            .map(|(n, layer)| {
                let mapped = parent.join(n.to_string());
                std::fs::create_dir(&mapped)?;
                bind_idmapped(layer, &mapped, namespace)?;
                Ok(mapped)
            })
            .collect()
    }

    /// An instance directory already mounted (by an earlier run of the runtime).
    pub(crate) fn existing(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The overlay: the instance's root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Unmounts and removes everything; nothing of the instance stays on disk.
    pub fn remove(self) {
        remove_instance_dir(&self.dir);
    }
}

/// Unmounts whatever is mounted under `dir` (deepest first), then deletes it. Used for
/// instances torn down normally and for those a crashed runtime left behind.
pub(crate) fn remove_instance_dir(dir: &Path) {
    for mount_point in mounts_under(dir) {
        if let Err(e) = nix::mount::umount2(&mount_point, MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %mount_point.display(), error = %e, "unmounting failed");
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing an instance directory failed");
    }
}

/// Mount points at or under `dir`, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(code) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(
            unescape_mount_path("/tmp/a\\040b"),
            PathBuf::from("/tmp/a b")
        );
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
    }
}
