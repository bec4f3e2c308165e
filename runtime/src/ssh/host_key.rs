//! The SSH server's Ed25519 host key: made on the first start, kept (mode 0600) in
//! the data directory in OpenSSH's format.

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The key's file in the data directory.
pub(crate) const FILE_NAME: &str = "ssh_host_ed25519_key";

pub(crate) fn load_or_create(path: &Path) -> std::io::Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| {
            std::io::Error::other(format!(
                "the SSH host key {} is unreadable: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(e) => Err(e),
    }
}

fn create(path: &Path) -> std::io::Result<PrivateKey> {
    let key = PrivateKey::random(&mut russh::keys::key::safe_rng(), Algorithm::Ed25519)
        .map_err(|e| std::io::Error::other(format!("generating the SSH host key: {e}")))?;
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|e| std::io::Error::other(format!("encoding the SSH host key: {e}")))?;
    // Written whole under a temporary name, then renamed: a crash leaves no half key.
    let partial = path.with_extension("partial");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let made = load_or_create(&path).unwrap();
        let read = load_or_create(&path).unwrap();
        assert_eq!(made.public_key(), read.public_key());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
