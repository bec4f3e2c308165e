//! Unpacking one OCI image layer into a directory used as an overlayfs lower directory.
//!
//! Layers come from registries and are untrusted. Every entry is checked before anything
//! is written: nothing lands outside the destination, nothing is written through a
//! symlink, and the only device nodes created are overlayfs whiteouts (0:0 character
//! devices) derived from the OCI `.wh.` convention.
//!
//! The checks walk the destination with `symlink_metadata` and then use plain paths; that
//! is sound only because nobody else writes into the destination while a layer is being
//! unpacked (it is a fresh directory owned by the caller).

use std::ffi::{CString, OsStr};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use tar::{Entry, EntryType, Header};

/// File name marking its directory opaque (OCI image spec, "whiteouts").
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of whiteout file names; names starting with it are never created as files.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The overlayfs xattr that hides the content of lower directories.
const OPAQUE_XATTR: &std::ffi::CStr = c"trusted.overlay.opaque";
/// Mode of directories the archive needs but does not list.
const IMPLICIT_DIR_MODE: u32 = 0o755;
/// Permission bits a header may set (including setuid, setgid and sticky).
const PERMISSION_BITS: u32 = 0o7777;

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// A plain tar archive.
    None,
    /// A gzip-compressed tar archive.
    Gzip,
    /// A zstd-compressed tar archive.
    Zstd,
}

impl LayerCompression {
    /// From an OCI or Docker layer media type, e.g. `application/vnd.oci.image.layer.v1.tar+gzip`
    /// or `application/vnd.docker.image.rootfs.diff.tar.gzip`.
    ///
    /// Non-distributable (foreign) layers are refused: their blobs live outside the registry
    /// and Ember does not fetch them.
    pub fn from_media_type(media_type: &str) -> Result<Self, LayerError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Self::Zstd),
            other => Err(LayerError::UnsupportedMediaType(other.to_owned())),
        }
    }
}

/// Errors of unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The media type is not a layer Ember can unpack.
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    /// An entry would escape the destination, or is of a kind that is not allowed.
    #[error("refused layer entry {path:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the archive.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A filesystem operation on `path` failed.
    #[error("unpacking to {path}: {source}")]
    Io {
        /// The path on the host that the operation was about.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The layer stream could not be read: bad compression or a malformed tar header.
    #[error("reading the layer archive: {0}")]
    Archive(#[source] io::Error),
    /// The destination is not an existing, empty directory.
    #[error("invalid unpack destination {path}: {reason}")]
    InvalidDestination {
        /// The destination given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Unpacks the layer read from `blob` into `dest` (which must exist and be empty).
///
/// The caller has already verified the blob's digest. On error, `dest` is left partly
/// unpacked and should be discarded.
pub fn unpack_layer(
    blob: impl Read,
    compression: LayerCompression,
    dest: &Path,
) -> Result<(), LayerError> {
    check_destination(dest)?;
    let mut archive = tar::Archive::new(decompress(blob, compression)?);
    // Directory metadata is applied once everything is unpacked: a read-only directory
    // must still accept its children, and writing children would bump its mtime.
    let mut directories = Vec::new();
    for entry in archive.entries().map_err(LayerError::Archive)? {
        let mut entry = entry.map_err(LayerError::Archive)?;
        if let Some(directory) = unpack_entry(&mut entry, dest)? {
            directories.push(directory);
        }
    }
    for directory in &directories {
        apply_directory_metadata(dest, directory)?;
    }
    Ok(())
}

fn check_destination(dest: &Path) -> Result<(), LayerError> {
    let invalid = |reason: &str| LayerError::InvalidDestination {
        path: dest.display().to_string(),
        reason: reason.to_owned(),
    };
    let meta = fs::symlink_metadata(dest).map_err(|e| io_error(dest, e))?;
    if !meta.is_dir() {
        return Err(invalid("not a directory"));
    }
    let mut children = fs::read_dir(dest).map_err(|e| io_error(dest, e))?;
    if children.next().is_some() {
        return Err(invalid("not empty"));
    }
    Ok(())
}

fn decompress<'a, R: Read + 'a>(
    blob: R,
    compression: LayerCompression,
) -> Result<Box<dyn Read + 'a>, LayerError> {
    Ok(match compression {
        LayerCompression::None => Box::new(blob),
        // Multi-member gzip streams are valid layers (some tools compress in parallel).
        LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        LayerCompression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(blob).map_err(LayerError::Archive)?)
        }
    })
}

/// Ownership, permissions and mtime of an entry, as read from its header.
#[derive(Debug, Clone, Copy)]
struct Attributes {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Option<SystemTime>,
}

impl Attributes {
    fn from_header(header: &Header) -> Result<Self, LayerError> {
        let id = |value: u64| {
            u32::try_from(value).map_err(|_| {
                LayerError::Archive(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("owner id {value} does not fit in 32 bits"),
                ))
            })
        };
        Ok(Self {
            mode: header.mode().map_err(LayerError::Archive)? & PERMISSION_BITS,
            uid: id(header.uid().map_err(LayerError::Archive)?)?,
            gid: id(header.gid().map_err(LayerError::Archive)?)?,
            // Best effort: a bogus mtime must not fail the whole layer.
            mtime: header
                .mtime()
                .ok()
                .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))),
        })
    }

    /// Applies the attributes through an open descriptor, so no path is re-resolved.
    fn apply(&self, file: &File, path: &Path) -> Result<(), LayerError> {
        // Ownership first: chown clears the setuid and setgid bits set by chmod.
        std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid))
            .map_err(|e| io_error(path, e))?;
        file.set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(|e| io_error(path, e))?;
        if let Some(mtime) = self.mtime
            && let Err(e) = file.set_modified(mtime)
        {
            tracing::debug!(path = %path.display(), error = %e, "could not set the mtime");
        }
        Ok(())
    }
}

/// A directory whose attributes are applied after the whole layer is unpacked.
#[derive(Debug)]
struct PendingDirectory {
    rel: PathBuf,
    attributes: Attributes,
}

fn unpack_entry<R: Read>(
    entry: &mut Entry<'_, R>,
    dest: &Path,
) -> Result<Option<PendingDirectory>, LayerError> {
    let raw = entry.path().map_err(LayerError::Archive)?.into_owned();
    let Some(rel) = relative_path(&raw).map_err(|reason| unsafe_entry(&raw, reason))? else {
        // The layer root itself: `dest` already exists and belongs to the caller.
        // Only a directory may name it: a device (or a file, or a link) at `.` is
        // refused as one anywhere else would be, not skipped.
        if entry.header().entry_type() != EntryType::Directory {
            return Err(unsafe_entry(
                &raw,
                "only a directory may name the layer's root",
            ));
        }
        return Ok(None);
    };
    if let Some(parent) = reserved_parent(&rel) {
        // Only aufs metadata (`.wh..wh.plnk/...`) lives under a whiteout name; overlayfs
        // has no use for it.
        tracing::debug!(path = %raw.display(), parent = %parent.display(), "skipping entry under a whiteout name");
        return Ok(None);
    }
    if let Some(whiteout) = whiteout(&rel).map_err(|reason| unsafe_entry(&raw, reason))? {
        apply_whiteout(dest, &rel, whiteout)?;
        return Ok(None);
    }
    match entry.header().entry_type() {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
            unpack_file(entry, dest, &rel)?;
        }
        EntryType::Directory => return unpack_directory(entry, dest, &rel).map(Some),
        EntryType::Symlink => unpack_symlink(entry, dest, &rel)?,
        EntryType::Link => unpack_hard_link(entry, dest, &rel, &raw)?,
        EntryType::Char | EntryType::Block => {
            return Err(unsafe_entry(&raw, "device nodes are not allowed"));
        }
        EntryType::Fifo => return Err(unsafe_entry(&raw, "FIFOs are not allowed")),
        other => {
            tracing::debug!(path = %raw.display(), entry_type = ?other, "skipping unsupported tar entry type");
        }
    }
    Ok(None)
}

/// Checks an archive path and returns it relative to the destination, or `None` for the
/// root itself. The reason is returned on refusal.
fn relative_path(raw: &Path) -> Result<Option<PathBuf>, &'static str> {
    let mut rel = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute paths are not allowed");
            }
            Component::ParentDir => return Err("`..` components are not allowed"),
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// The first parent component of `rel` that carries the whiteout prefix, if any.
fn reserved_parent(rel: &Path) -> Option<&Path> {
    rel.parent()?
        .components()
        .map(|component| Path::new(component.as_os_str()))
        .find(|name| name.as_os_str().as_bytes().starts_with(WHITEOUT_PREFIX))
}

/// What a whiteout entry asks for.
#[derive(Debug, PartialEq, Eq)]
enum Whiteout<'a> {
    /// Hide everything the lower layers have in the parent directory.
    Opaque,
    /// Hide this name of the parent directory.
    Remove(&'a OsStr),
    /// Another aufs-specific `.wh..wh.` marker, meaningless to overlayfs.
    Ignored,
}

fn whiteout(rel: &Path) -> Result<Option<Whiteout<'_>>, &'static str> {
    let Some(name) = rel.file_name() else {
        return Ok(None);
    };
    let bytes = name.as_bytes();
    if bytes == OPAQUE_MARKER {
        return Ok(Some(Whiteout::Opaque));
    }
    let Some(hidden) = bytes.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(None);
    };
    if hidden.starts_with(WHITEOUT_PREFIX) {
        return Ok(Some(Whiteout::Ignored));
    }
    if hidden.is_empty() || hidden == b"." || hidden == b".." {
        return Err("whiteout of an invalid name");
    }
    Ok(Some(Whiteout::Remove(OsStr::from_bytes(hidden))))
}

fn apply_whiteout(dest: &Path, rel: &Path, whiteout: Whiteout<'_>) -> Result<(), LayerError> {
    // The whiteout entry's own path is never created; only its parent is needed.
    prepare_parents(dest, rel)?;
    let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
    match whiteout {
        Whiteout::Opaque => set_opaque(&parent),
        Whiteout::Remove(name) => {
            let path = parent.join(name);
            remove_existing(&path)?;
            // overlayfs reads a 0:0 character device as "deleted in this layer".
            mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                .map_err(|e| io_error(&path, e.into()))
        }
        Whiteout::Ignored => Ok(()),
    }
}

fn set_opaque(dir: &Path) -> Result<(), LayerError> {
    let c_path = c_path(dir)?;
    let value = b"y";
    // SAFETY: both names are NUL-terminated C strings that outlive the call, and `value`
    // points to `value.len()` readable bytes.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            OPAQUE_XATTR.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io_error(dir, io::Error::last_os_error()));
    }
    Ok(())
}

fn unpack_file<R: Read>(
    entry: &mut Entry<'_, R>,
    dest: &Path,
    rel: &Path,
) -> Result<(), LayerError> {
    let attributes = Attributes::from_header(entry.header())?;
    let path = prepare_parents(dest, rel)?;
    remove_existing(&path)?;
    // create_new plus O_NOFOLLOW: whatever raced into the path is never written through.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    io::copy(entry, &mut file).map_err(|e| io_error(&path, e))?;
    attributes.apply(&file, &path)
}

fn unpack_directory<R: Read>(
    entry: &mut Entry<'_, R>,
    dest: &Path,
    rel: &Path,
) -> Result<PendingDirectory, LayerError> {
    let attributes = Attributes::from_header(entry.header())?;
    let path = prepare_parents(dest, rel)?;
    let existing = match fs::symlink_metadata(&path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error(&path, e)),
    };
    // A directory listed twice keeps its content; anything else in the way goes.
    if !existing.is_some_and(|meta| meta.is_dir()) {
        remove_existing(&path)?;
        create_dir(&path)?;
    }
    Ok(PendingDirectory {
        rel: rel.to_path_buf(),
        attributes,
    })
}

fn unpack_symlink<R: Read>(
    entry: &mut Entry<'_, R>,
    dest: &Path,
    rel: &Path,
) -> Result<(), LayerError> {
    let attributes = Attributes::from_header(entry.header())?;
    // The target is kept verbatim: it is resolved inside the container's root later,
    // and no entry is ever written through a symlink here.
    let target = entry
        .link_name()
        .map_err(LayerError::Archive)?
        .ok_or_else(|| unsafe_entry(rel, "symlink without a target"))?
        .into_owned();
    let path = prepare_parents(dest, rel)?;
    remove_existing(&path)?;
    std::os::unix::fs::symlink(&target, &path).map_err(|e| io_error(&path, e))?;
    std::os::unix::fs::lchown(&path, Some(attributes.uid), Some(attributes.gid))
        .map_err(|e| io_error(&path, e))
}

fn unpack_hard_link<R: Read>(
    entry: &mut Entry<'_, R>,
    dest: &Path,
    rel: &Path,
    raw: &Path,
) -> Result<(), LayerError> {
    let raw_target = entry
        .link_name()
        .map_err(LayerError::Archive)?
        .ok_or_else(|| unsafe_entry(raw, "hard link without a target"))?
        .into_owned();
    let refuse = |reason: &str| {
        unsafe_entry(
            raw,
            format!("hard link target {}: {reason}", raw_target.display()),
        )
    };
    let target_rel = relative_path(&raw_target)
        .map_err(refuse)?
        .ok_or_else(|| refuse("the layer root cannot be linked"))?;
    let target = existing_path(dest, &target_rel).map_err(|e| match e {
        LayerError::UnsafeEntry { reason, .. } => refuse(&reason),
        other => other,
    })?;
    let target_meta = match fs::symlink_metadata(&target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(refuse("does not exist")),
        Err(e) => return Err(io_error(&target, e)),
    };
    if target_meta.is_dir() {
        return Err(refuse("is a directory"));
    }
    let path = prepare_parents(dest, rel)?;
    if path == target {
        // Removing the path first would destroy the very file being linked to.
        return Ok(());
    }
    remove_existing(&path)?;
    // std's hard_link does not follow a symlink target: the link shares the symlink's
    // inode, never the file it points to.
    fs::hard_link(&target, &path).map_err(|e| io_error(&path, e))
}

/// Makes sure every parent of `rel` inside `dest` is a real directory, creating missing
/// ones, and returns the full path of `rel`. Refuses symlinked or non-directory parents.
fn prepare_parents(dest: &Path, rel: &Path) -> Result<PathBuf, LayerError> {
    walk_parents(dest, rel, MissingParent::Create)
}

/// Like [`prepare_parents`], but for something that must already exist: a missing parent
/// is refused instead of created.
fn existing_path(dest: &Path, rel: &Path) -> Result<PathBuf, LayerError> {
    walk_parents(dest, rel, MissingParent::Refuse)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MissingParent {
    Create,
    Refuse,
}

fn walk_parents(dest: &Path, rel: &Path, missing: MissingParent) -> Result<PathBuf, LayerError> {
    let mut current = dest.to_path_buf();
    for component in rel.parent().into_iter().flat_map(Path::components) {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.is_symlink() => {
                return Err(unsafe_entry(rel, "a parent directory is a symlink"));
            }
            Ok(_) => return Err(unsafe_entry(rel, "a parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match missing {
                MissingParent::Create => create_dir(&current)?,
                MissingParent::Refuse => {
                    return Err(unsafe_entry(rel, "does not exist"));
                }
            },
            Err(e) => return Err(io_error(&current, e)),
        }
    }
    Ok(dest.join(rel))
}

fn create_dir(path: &Path) -> Result<(), LayerError> {
    DirBuilder::new()
        .mode(IMPLICIT_DIR_MODE)
        .create(path)
        .map_err(|e| io_error(path, e))
}

/// Removes whatever is at `path` (the link itself for a symlink); absent is fine.
fn remove_existing(path: &Path) -> Result<(), LayerError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| io_error(path, e))
}

fn apply_directory_metadata(dest: &Path, directory: &PendingDirectory) -> Result<(), LayerError> {
    // A later entry may have replaced the directory or one of its parents (with a
    // symlink, say); then there is nothing left to apply the attributes to.
    let path = match existing_path(dest, &directory.rel) {
        Ok(path) => path,
        Err(LayerError::UnsafeEntry { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&path);
    let dir = match opened {
        Ok(dir) => dir,
        Err(e) if is_gone(&e) => return Ok(()),
        Err(e) => return Err(io_error(&path, e)),
    };
    directory.attributes.apply(&dir, &path)
}

/// Whether opening a directory failed because it is no longer a directory at that path.
fn is_gone(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
    )
}

fn c_path(path: &Path) -> Result<CString, LayerError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_error(path, io::Error::new(io::ErrorKind::InvalidInput, e)))
}

fn unsafe_entry(path: &Path, reason: impl Into<String>) -> LayerError {
    LayerError::UnsafeEntry {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn io_error(path: &Path, source: io::Error) -> LayerError {
    LayerError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    //! These tests create device nodes, set `trusted.*` xattrs and change owners, so they
    //! must run as root.

    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use tempfile::TempDir;

    /// Builds a tar archive in memory, writing header names raw so that malicious paths
    /// (which `tar::Builder` refuses) can be expressed.
    struct Layer {
        builder: tar::Builder<Vec<u8>>,
    }

    impl Layer {
        fn new() -> Self {
            Self {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        fn entry(
            mut self,
            path: &str,
            kind: EntryType,
            mode: u32,
            link: Option<&str>,
            data: &[u8],
        ) -> Self {
            let mut header = Header::new_gnu();
            let name = &mut header.as_old_mut().name;
            assert!(path.len() < name.len(), "test path too long: {path}");
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(kind);
            header.set_mode(mode);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_600_000_000);
            header.set_size(data.len() as u64);
            if let Some(link) = link {
                header.set_link_name_literal(link).unwrap();
            }
            header.set_cksum();
            self.builder.append(&header, data).unwrap();
            self
        }

        fn file(self, path: &str, mode: u32, data: &[u8]) -> Self {
            self.entry(path, EntryType::Regular, mode, None, data)
        }

        fn owned_file(mut self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Self {
            let mut header = Header::new_gnu();
            header.set_path(path).unwrap();
            header.set_entry_type(EntryType::Regular);
            header.set_mode(mode);
            header.set_uid(uid);
            header.set_gid(gid);
            header.set_size(data.len() as u64);
            header.set_cksum();
            self.builder.append(&header, data).unwrap();
            self
        }

        fn dir(self, path: &str, mode: u32) -> Self {
            self.entry(path, EntryType::Directory, mode, None, b"")
        }

        fn symlink(self, path: &str, target: &str) -> Self {
            self.entry(path, EntryType::Symlink, 0o777, Some(target), b"")
        }

        fn hard_link(self, path: &str, target: &str) -> Self {
            self.entry(path, EntryType::Link, 0o644, Some(target), b"")
        }

        fn tar(self) -> Vec<u8> {
            self.builder.into_inner().unwrap()
        }
    }

    /// A temporary directory holding an empty `dest` to unpack into; anything appearing
    /// elsewhere in it is an escape.
    struct Scratch {
        root: TempDir,
    }

    impl Scratch {
        fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            fs::create_dir(root.path().join("dest")).unwrap();
            Self { root }
        }

        fn dest(&self) -> PathBuf {
            self.root.path().join("dest")
        }

        fn outside(&self, name: &str) -> PathBuf {
            self.root.path().join(name)
        }

        fn unpack(&self, tar: &[u8]) -> Result<(), LayerError> {
            unpack_layer(tar, LayerCompression::None, &self.dest())
        }
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & PERMISSION_BITS
    }

    fn assert_unsafe(result: Result<(), LayerError>) {
        match result {
            Err(LayerError::UnsafeEntry { .. }) => {}
            other => panic!("expected UnsafeEntry, got {other:?}"),
        }
    }

    fn sample_layer() -> Vec<u8> {
        Layer::new()
            .dir("etc/", 0o755)
            .file("etc/hello", 0o640, b"hello world\n")
            .owned_file("bin/tool", 0o4755, 1000, 1001, b"#!/bin/sh\n")
            .dir("var/empty/", 0o700)
            .symlink("etc/absolute", "/etc/hello")
            .symlink("relative", "etc/hello")
            .tar()
    }

    fn check_sample(dest: &Path) {
        assert_eq!(fs::read(dest.join("etc/hello")).unwrap(), b"hello world\n");
        assert_eq!(mode_of(&dest.join("etc/hello")), 0o640);
        let tool = fs::symlink_metadata(dest.join("bin/tool")).unwrap();
        assert_eq!(tool.mode() & PERMISSION_BITS, 0o4755, "setuid kept");
        assert_eq!((tool.uid(), tool.gid()), (1000, 1001));
        assert_eq!(mode_of(&dest.join("bin")), IMPLICIT_DIR_MODE);
        assert_eq!(mode_of(&dest.join("var/empty")), 0o700);
        assert_eq!(
            fs::read_link(dest.join("etc/absolute")).unwrap(),
            Path::new("/etc/hello")
        );
        assert_eq!(
            fs::read_link(dest.join("relative")).unwrap(),
            Path::new("etc/hello")
        );
        assert_eq!(
            fs::symlink_metadata(dest.join("etc/hello"))
                .unwrap()
                .modified()
                .unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000)
        );
    }

    #[test]
    fn media_types_map_to_compression() {
        use LayerCompression as C;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", C::None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", C::Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", C::Zstd),
            ("application/vnd.docker.image.rootfs.diff.tar", C::None),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", C::Gzip),
            ("application/vnd.docker.image.rootfs.diff.tar.zstd", C::Zstd),
        ];
        for (media_type, expected) in cases {
            assert_eq!(
                LayerCompression::from_media_type(media_type).unwrap(),
                expected
            );
        }
        for refused in [
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.config.v1+json",
            "application/wasm",
            "",
        ] {
            assert!(matches!(
                LayerCompression::from_media_type(refused),
                Err(LayerError::UnsupportedMediaType(m)) if m == refused
            ));
        }
    }

    #[test]
    fn plain_layer_unpacks() {
        let scratch = Scratch::new();
        scratch.unpack(&sample_layer()).unwrap();
        check_sample(&scratch.dest());
    }

    #[test]
    fn gzip_layer_unpacks() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&sample_layer()).unwrap();
        let blob = encoder.finish().unwrap();
        let scratch = Scratch::new();
        unpack_layer(&blob[..], LayerCompression::Gzip, &scratch.dest()).unwrap();
        check_sample(&scratch.dest());
    }

    #[test]
    fn zstd_layer_unpacks() {
        let blob = zstd::stream::encode_all(&sample_layer()[..], 3).unwrap();
        let scratch = Scratch::new();
        unpack_layer(&blob[..], LayerCompression::Zstd, &scratch.dest()).unwrap();
        check_sample(&scratch.dest());
    }

    #[test]
    fn corrupt_compressed_stream_is_an_archive_error() {
        let scratch = Scratch::new();
        let result = unpack_layer(&b"not gzip"[..], LayerCompression::Gzip, &scratch.dest());
        assert!(matches!(result, Err(LayerError::Archive(_))), "{result:?}");
    }

    #[test]
    fn destination_must_be_empty() {
        let scratch = Scratch::new();
        fs::write(scratch.dest().join("stale"), b"").unwrap();
        let result = scratch.unpack(&sample_layer());
        assert!(
            matches!(result, Err(LayerError::InvalidDestination { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn read_only_directory_still_receives_its_children() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .dir("ro/", 0o555)
            .file("ro/file", 0o644, b"x")
            .tar();
        scratch.unpack(&layer).unwrap();
        assert_eq!(mode_of(&scratch.dest().join("ro")), 0o555);
        assert_eq!(fs::read(scratch.dest().join("ro/file")).unwrap(), b"x");
    }

    #[test]
    fn root_entries_are_skipped_and_dot_slash_is_stripped() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .dir("./", 0o700)
            .dir(".", 0o700)
            .file("./etc/file", 0o644, b"x")
            .tar();
        scratch.unpack(&layer).unwrap();
        assert_eq!(fs::read(scratch.dest().join("etc/file")).unwrap(), b"x");
        assert_ne!(mode_of(&scratch.dest()), 0o700, "the root is left alone");
    }

    #[test]
    fn parent_dir_components_are_refused() {
        for path in ["../escape", "a/../../escape", "./../escape"] {
            let scratch = Scratch::new();
            let layer = Layer::new().file(path, 0o644, b"pwned").tar();
            assert_unsafe(scratch.unpack(&layer));
            assert!(!scratch.outside("escape").exists(), "{path} escaped");
        }
    }

    #[test]
    fn absolute_paths_are_refused() {
        let scratch = Scratch::new();
        let target = scratch.outside("escape");
        let layer = Layer::new()
            .file(target.to_str().unwrap(), 0o644, b"pwned")
            .tar();
        assert_unsafe(scratch.unpack(&layer));
        assert!(!target.exists());
    }

    #[test]
    fn writing_through_an_absolute_symlink_is_refused() {
        let scratch = Scratch::new();
        let outside = scratch.outside("outside");
        fs::create_dir(&outside).unwrap();
        let layer = Layer::new()
            .symlink("link", outside.to_str().unwrap())
            .file("link/file", 0o644, b"pwned")
            .tar();
        assert_unsafe(scratch.unpack(&layer));
        assert!(!outside.join("file").exists());
    }

    #[test]
    fn writing_through_a_relative_symlink_is_refused() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .symlink("link", "..")
            .file("link/escape", 0o644, b"pwned")
            .tar();
        assert_unsafe(scratch.unpack(&layer));
        assert!(!scratch.outside("escape").exists());
    }

    #[test]
    fn directories_through_a_symlink_are_refused() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .symlink("link", "..")
            .dir("link/escape/", 0o755)
            .tar();
        assert_unsafe(scratch.unpack(&layer));
        assert!(!scratch.outside("escape").exists());
    }

    #[test]
    fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
        let scratch = Scratch::new();
        let target = scratch.outside("target");
        let layer = Layer::new()
            .symlink("file", target.to_str().unwrap())
            .file("file", 0o644, b"inside")
            .tar();
        scratch.unpack(&layer).unwrap();
        assert!(!target.exists());
        let meta = fs::symlink_metadata(scratch.dest().join("file")).unwrap();
        assert!(meta.is_file());
        assert_eq!(fs::read(scratch.dest().join("file")).unwrap(), b"inside");
    }

    #[test]
    fn existing_entries_are_replaced_and_directories_kept() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .file("x", 0o644, b"file")
            .symlink("x", "elsewhere")
            .dir("d/", 0o700)
            .file("d/kept", 0o644, b"kept")
            .dir("d/", 0o750)
            .dir("f/", 0o755)
            .file("f/child", 0o644, b"")
            .file("f", 0o600, b"now a file")
            .tar();
        scratch.unpack(&layer).unwrap();
        let dest = scratch.dest();
        assert_eq!(
            fs::read_link(dest.join("x")).unwrap(),
            Path::new("elsewhere")
        );
        assert_eq!(fs::read(dest.join("d/kept")).unwrap(), b"kept");
        assert_eq!(mode_of(&dest.join("d")), 0o750);
        assert_eq!(fs::read(dest.join("f")).unwrap(), b"now a file");
    }

    #[test]
    fn directory_replaced_by_a_symlink_gets_no_late_attributes() {
        let scratch = Scratch::new();
        let outside = scratch.outside("outside");
        fs::create_dir(&outside).unwrap();
        fs::create_dir(outside.join("sub")).unwrap();
        fs::set_permissions(outside.join("sub"), fs::Permissions::from_mode(0o755)).unwrap();
        let layer = Layer::new()
            .dir("d/sub/", 0o700)
            .symlink("d", outside.to_str().unwrap())
            .tar();
        scratch.unpack(&layer).unwrap();
        assert_eq!(mode_of(&outside.join("sub")), 0o755);
    }

    #[test]
    fn valid_hard_link_shares_the_inode() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .file("bin/busybox", 0o755, b"elf")
            .hard_link("bin/sh", "bin/busybox")
            .hard_link("./usr/bin/ls", "./bin/busybox")
            .tar();
        scratch.unpack(&layer).unwrap();
        let dest = scratch.dest();
        let original = fs::metadata(dest.join("bin/busybox")).unwrap();
        for link in ["bin/sh", "usr/bin/ls"] {
            assert_eq!(fs::metadata(dest.join(link)).unwrap().ino(), original.ino());
        }
        assert_eq!(original.nlink(), 3);
    }

    #[test]
    fn hard_link_outside_the_destination_is_refused() {
        let scratch = Scratch::new();
        fs::write(scratch.outside("secret"), b"secret").unwrap();
        for target in ["../secret", "/etc/passwd"] {
            let layer = Layer::new().hard_link("stolen", target).tar();
            let dest = Scratch::new();
            assert_unsafe(unpack_layer(
                &layer[..],
                LayerCompression::None,
                &dest.dest(),
            ));
            assert!(!dest.dest().join("stolen").exists());
        }
        let layer = Layer::new().hard_link("stolen", "../secret").tar();
        assert_unsafe(scratch.unpack(&layer));
        assert_eq!(
            fs::symlink_metadata(scratch.outside("secret"))
                .unwrap()
                .nlink(),
            1
        );
    }

    #[test]
    fn hard_link_through_a_symlink_is_refused() {
        let scratch = Scratch::new();
        let outside = scratch.outside("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        let layer = Layer::new()
            .symlink("link", outside.to_str().unwrap())
            .hard_link("stolen", "link/secret")
            .tar();
        assert_unsafe(scratch.unpack(&layer));
        assert!(!scratch.dest().join("stolen").exists());
        assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1);
    }

    #[test]
    fn hard_link_to_a_symlink_links_the_symlink_itself() {
        let scratch = Scratch::new();
        let outside = scratch.outside("secret");
        fs::write(&outside, b"secret").unwrap();
        let layer = Layer::new()
            .symlink("link", outside.to_str().unwrap())
            .hard_link("alias", "link")
            .tar();
        scratch.unpack(&layer).unwrap();
        let alias = fs::symlink_metadata(scratch.dest().join("alias")).unwrap();
        assert!(alias.file_type().is_symlink());
        assert_eq!(fs::metadata(&outside).unwrap().nlink(), 1);
    }

    #[test]
    fn hard_link_to_a_missing_target_or_directory_is_refused() {
        for layer in [
            Layer::new().hard_link("a", "missing").tar(),
            Layer::new().hard_link("a", "no/such/dir/file").tar(),
            Layer::new().dir("d/", 0o755).hard_link("a", "d").tar(),
            Layer::new().hard_link("a", "./").tar(),
        ] {
            let scratch = Scratch::new();
            assert_unsafe(scratch.unpack(&layer));
            assert!(!scratch.dest().join("a").exists());
        }
    }

    #[test]
    fn device_nodes_and_fifos_are_refused() {
        for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
            let scratch = Scratch::new();
            let layer = Layer::new().entry("dev/node", kind, 0o666, None, b"").tar();
            assert_unsafe(scratch.unpack(&layer));
            assert!(!scratch.dest().join("dev/node").exists());
            // Named as the layer's root, too (found by the property test below).
            for root in [".", "./"] {
                let scratch = Scratch::new();
                let layer = Layer::new().entry(root, kind, 0o666, None, b"").tar();
                assert_unsafe(scratch.unpack(&layer));
            }
        }
    }

    #[test]
    fn unknown_entry_types_are_skipped() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .entry("volume", EntryType::new(b'V'), 0o644, None, b"")
            .file("after", 0o644, b"x")
            .tar();
        scratch.unpack(&layer).unwrap();
        assert!(!scratch.dest().join("volume").exists());
        assert!(scratch.dest().join("after").exists());
    }

    fn opaque_xattr(path: &Path) -> Option<Vec<u8>> {
        let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
        let mut value = [0u8; 16];
        // SAFETY: NUL-terminated strings and a writable buffer of the given length.
        let len = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                OPAQUE_XATTR.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        usize::try_from(len).ok().map(|len| value[..len].to_vec())
    }

    #[test]
    fn opaque_marker_sets_the_overlay_xattr() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .dir("etc/", 0o755)
            .file("etc/.wh..wh..opq", 0o644, b"")
            .file("etc/kept", 0o644, b"")
            .file("new/dir/.wh..wh..opq", 0o644, b"")
            .dir("plain/", 0o755)
            .tar();
        scratch.unpack(&layer).unwrap();
        let dest = scratch.dest();
        assert_eq!(opaque_xattr(&dest.join("etc")).as_deref(), Some(&b"y"[..]));
        assert_eq!(
            opaque_xattr(&dest.join("new/dir")).as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(opaque_xattr(&dest.join("plain")), None);
        assert!(!dest.join("etc/.wh..wh..opq").exists());
        assert!(dest.join("etc/kept").exists());
    }

    #[test]
    fn whiteout_becomes_a_zero_char_device() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .file("dir/.wh.foo", 0o644, b"")
            .file("bar", 0o644, b"replaced")
            .file(".wh.bar", 0o644, b"")
            .tar();
        scratch.unpack(&layer).unwrap();
        let dest = scratch.dest();
        for path in ["dir/foo", "bar"] {
            let meta = fs::symlink_metadata(dest.join(path)).unwrap();
            assert!(meta.file_type().is_char_device(), "{path}");
            assert_eq!(meta.rdev(), 0, "{path}");
        }
        assert!(fs::symlink_metadata(dest.join("dir/.wh.foo")).is_err());
        assert!(fs::symlink_metadata(dest.join(".wh.bar")).is_err());
    }

    #[test]
    fn whiteout_through_a_symlink_is_refused() {
        let scratch = Scratch::new();
        fs::write(scratch.outside("victim"), b"victim").unwrap();
        let layer = Layer::new()
            .symlink("link", "..")
            .file("link/.wh.victim", 0o644, b"")
            .tar();
        assert_unsafe(scratch.unpack(&layer));
        assert!(
            fs::symlink_metadata(scratch.outside("victim"))
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn invalid_whiteouts_are_refused() {
        for path in [".wh.", "a/.wh..", "a/.wh..."] {
            let scratch = Scratch::new();
            let layer = Layer::new().file(path, 0o644, b"").tar();
            assert_unsafe(scratch.unpack(&layer));
        }
    }

    #[test]
    fn aufs_metadata_is_skipped() {
        let scratch = Scratch::new();
        let layer = Layer::new()
            .dir(".wh..wh.plnk/", 0o700)
            .file(".wh..wh.plnk/123.456", 0o644, b"")
            .file(".wh..wh.aufs", 0o644, b"")
            .tar();
        scratch.unpack(&layer).unwrap();
        assert_eq!(fs::read_dir(scratch.dest()).unwrap().count(), 0);
    }

    #[test]
    fn relative_paths_are_checked() {
        assert_eq!(relative_path(Path::new("")), Ok(None));
        assert_eq!(relative_path(Path::new("./")), Ok(None));
        assert_eq!(
            relative_path(Path::new("./a//b/./c/")),
            Ok(Some(PathBuf::from("a/b/c")))
        );
        assert!(relative_path(Path::new("/a")).is_err());
        assert!(relative_path(Path::new("a/..")).is_err());
    }

    mod hostile {
        //! Property tests: archives made of arbitrary, often hostile, entries.
        use super::*;
        use proptest::prelude::*;

        /// A path from parts that make trouble: `..`, absolute roots, empty and
        /// dot components, names a symlink may take over.
        fn path() -> impl Strategy<Value = String> {
            let part = prop_oneof![
                Just("..".to_string()),
                Just(".".to_string()),
                Just("".to_string()),
                Just("a".to_string()),
                Just("b".to_string()),
                Just("link".to_string()),
                Just("outside".to_string()),
                Just(".wh.a".to_string()),
            ];
            (any::<bool>(), prop::collection::vec(part, 1..4))
                .prop_map(|(absolute, parts)| {
                    let joined = parts.join("/");
                    if absolute {
                        format!("/{joined}")
                    } else {
                        joined
                    }
                })
                .prop_filter("a name fits a tar header", |p| {
                    !p.is_empty() && p.len() < 90
                })
        }

        #[derive(Debug, Clone)]
        enum Kind {
            File,
            Dir,
            Symlink(String),
            HardLink(String),
            Device(EntryType),
        }

        fn kind() -> impl Strategy<Value = Kind> {
            prop_oneof![
                3 => Just(Kind::File),
                2 => Just(Kind::Dir),
                2 => path().prop_map(Kind::Symlink),
                2 => path().prop_map(Kind::HardLink),
                1 => prop_oneof![
                    Just(EntryType::Char),
                    Just(EntryType::Block),
                    Just(EntryType::Fifo)
                ]
                .prop_map(Kind::Device),
            ]
        }

        /// Whether a path, as written, could never be inside the destination.
        fn escapes(path: &str) -> bool {
            path.starts_with('/') || path.split('/').any(|c| c == "..")
        }

        /// Everything under `dir`, as paths relative to it.
        fn listing(dir: &Path) -> Vec<PathBuf> {
            let mut found = Vec::new();
            let mut pending = vec![dir.to_path_buf()];
            while let Some(next) = pending.pop() {
                for entry in fs::read_dir(&next).into_iter().flatten().flatten() {
                    let path = entry.path();
                    found.push(path.strip_prefix(dir).unwrap().to_path_buf());
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        pending.push(path);
                    }
                }
            }
            found.sort();
            found
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the entries, nothing is written outside the destination, the
            /// only device nodes are whiteouts, and an entry with an absolute path, a
            /// `..` or a device is refused with its name in the error. Cutting the
            /// archive short, or giving an entry a size the archive does not have,
            /// is refused too.
            #[test]
            fn no_archive_writes_outside_its_layer(
                entries in prop::collection::vec((path(), kind()), 1..8),
                cut in prop::option::of(0usize..4096),
                huge in any::<bool>(),
            ) {
                let scratch = Scratch::new();
                // A directory beside the destination, and its content, that a
                // symlink or hard link could point at.
                fs::create_dir(scratch.outside("outside")).unwrap();
                fs::write(scratch.outside("outside/secret"), b"s").unwrap();
                let mut layer = Layer::new();
                let mut hostile = None;
                for (path, kind) in &entries {
                    if escapes(path) && hostile.is_none() {
                        hostile = Some(path.clone());
                    }
                    layer = match kind {
                        Kind::File => layer.file(path, 0o644, b"data"),
                        Kind::Dir => layer.dir(path, 0o755),
                        Kind::Symlink(target) => layer.symlink(path, target),
                        Kind::HardLink(target) => layer.hard_link(path, target),
                        Kind::Device(kind) => {
                            // A device named as a whiteout (`.wh.a/.` names `.wh.a`) is
                            // taken as one (overlayfs's char 0:0, never the device), and
                            // one under a whiteout name is aufs metadata, skipped.
                            let whiteout = Path::new(path)
                                .components()
                                .any(|c| c.as_os_str().to_string_lossy().starts_with(".wh."));
                            if hostile.is_none() && !whiteout {
                                hostile = Some(path.clone());
                            }
                            layer.entry(path, *kind, 0o666, None, b"")
                        }
                    };
                }
                let mut tar = layer.tar();
                if huge {
                    // The first header claims 2^40 bytes the archive does not hold.
                    let mut header = Header::new_gnu();
                    header.set_path("big").unwrap();
                    header.set_size(1 << 40);
                    header.set_cksum();
                    let mut big = header.as_bytes().to_vec();
                    big.extend_from_slice(&tar);
                    tar = big;
                }
                let truncated = cut.filter(|at| *at < tar.len().saturating_sub(1024));
                if let Some(at) = truncated {
                    tar.truncate(at);
                }
                let result = scratch.unpack(&tar);

                // Nothing outside the destination changed.
                let beside: Vec<_> = fs::read_dir(scratch.root.path())
                    .unwrap()
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                prop_assert_eq!(beside.len(), 2, "{:?}", beside);
                prop_assert_eq!(listing(&scratch.outside("outside")), vec![PathBuf::from("secret")]);
                prop_assert_eq!(fs::read(scratch.outside("outside/secret")).unwrap(), b"s".to_vec());
                // Inside, no device but whiteouts.
                for found in listing(&scratch.dest()) {
                    let meta = fs::symlink_metadata(scratch.dest().join(&found)).unwrap();
                    let kind = meta.file_type();
                    if kind.is_block_device() || kind.is_fifo() {
                        prop_assert!(false, "{} is a device or fifo", found.display());
                    }
                    if kind.is_char_device() {
                        prop_assert_eq!(meta.rdev(), 0, "{}", found.display());
                    }
                }
                if huge || truncated.is_some() {
                    prop_assert!(result.is_err(), "a cut or oversized archive was taken");
                }
                if let Some(path) = hostile {
                    match &result {
                        Err(LayerError::UnsafeEntry { reason, .. }) => prop_assert!(!reason.is_empty()),
                        // Cut or oversized before the hostile entry was reached.
                        Err(LayerError::Archive(_)) if huge || truncated.is_some() => {}
                        other => prop_assert!(false, "{path:?} was not refused: {other:?}"),
                    }
                }
            }
        }
    }
}
