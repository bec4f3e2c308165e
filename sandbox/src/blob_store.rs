//! The content store: blobs on disk named by their digest, written atomically.

use crate::digest::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of the content store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The bytes do not hash to the digest they were announced with.
    #[error("blob digest mismatch: expected {expected}, the content hashes to {actual}")]
    DigestMismatch {
        /// The digest the blob was announced with.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The blob is not in the store.
    #[error("blob {0} is not in the content store")]
    Missing(Digest),
    /// Reading or writing the store failed.
    #[error("content store I/O at {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Blobs under `<root>/sha256/<hex>`, shared by every image and upload.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        let dir = root.join("sha256");
        std::fs::create_dir_all(&dir).map_err(|source| BlobError::Io { path: dir, source })?;
        Ok(Self { root })
    }

    /// Where the blob with `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("sha256").join(digest.hex())
    }

    /// Whether the blob is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Stores `bytes`, returning their digest. Storing the same bytes twice is a no-op.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        let digest = Digest::of(bytes);
        self.write(&digest, bytes)?;
        Ok(digest)
    }

    /// Stores `bytes` only if they hash to `expected`.
    pub fn put_verified(&self, expected: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        let actual = Digest::of(bytes);
        if &actual != expected {
            return Err(BlobError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.write(expected, bytes)
    }

    /// Reads a whole blob.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BlobError::Missing(digest.clone())
            } else {
                BlobError::Io { path, source }
            }
        })
    }

    fn write(&self, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        let path = self.path(digest);
        if path.is_file() {
            return Ok(());
        }
        // Write to a private temporary name and rename, so a crash never leaves a
        // truncated blob under a digest name.
        write_atomically(&path, bytes).map_err(|source| BlobError::Io { path, source })
    }
}

/// Writes `bytes` to `path` through a temporary file, fsynced, then renamed into place.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("blob")
    ));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_by_digest_and_refuses_mismatched_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = store.put(b"wasm bytes").unwrap();
        assert!(store.contains(&digest));
        assert_eq!(store.read(&digest).unwrap(), b"wasm bytes");

        let wrong = Digest::of(b"something else");
        let err = store.put_verified(&wrong, b"wasm bytes").unwrap_err();
        assert!(matches!(err, BlobError::DigestMismatch { .. }));
        assert!(!store.contains(&wrong));
        assert!(matches!(store.read(&wrong), Err(BlobError::Missing(_))));
    }
}
