//! Registry credentials: from the environment, or from a Docker-style config file.
//!
//! `EMBER_REGISTRY_USERNAME` and `EMBER_REGISTRY_PASSWORD` apply to every registry.
//! Otherwise the `auths` section of the file named by `EMBER_REGISTRY_AUTH_FILE`
//! (default `$DOCKER_CONFIG/config.json`, then `~/.docker/config.json`) is read, as
//! `docker login` writes it. Bearer tokens (Docker Hub style) are obtained by the
//! registry client from these credentials when the registry asks for them.

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use std::path::{Path, PathBuf};

/// Where credentials come from, resolved once per puller.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    everywhere: Option<(String, String)>,
    config_file: Option<PathBuf>,
}

impl Credentials {
    /// Credentials as the environment configures them.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let everywhere = var("EMBER_REGISTRY_USERNAME").zip(var("EMBER_REGISTRY_PASSWORD"));
        let config_file = var("EMBER_REGISTRY_AUTH_FILE")
            .map(PathBuf::from)
            .or_else(|| var("DOCKER_CONFIG").map(|d| Path::new(&d).join("config.json")))
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker/config.json")));
        Self {
            everywhere,
            config_file,
        }
    }

    /// Credentials read from `file` only.
    pub fn from_file(file: impl Into<PathBuf>) -> Self {
        Self {
            everywhere: None,
            config_file: Some(file.into()),
        }
    }

    /// The authentication to use with `registry` (`host[:port]`).
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        if let Some((user, password)) = &self.everywhere {
            return RegistryAuth::Basic(user.clone(), password.clone());
        }
        self.config_file
            .as_deref()
            .and_then(|file| std::fs::read(file).ok())
            .and_then(|bytes| from_config(&bytes, registry))
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, ConfigAuth>,
}

#[derive(serde::Deserialize)]
struct ConfigAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn from_config(bytes: &[u8], registry: &str) -> Option<RegistryAuth> {
    let config: ConfigFile = serde_json::from_slice(bytes).ok()?;
    // Docker writes Docker Hub's entry under its legacy URL, others by host.
    let entry = config.auths.iter().find_map(|(key, auth)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        let same = host == registry
            || (registry == "docker.io" && host == "index.docker.io")
            || (registry == "index.docker.io" && host == "docker.io");
        same.then_some(auth)
    })?;
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Some(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.as_deref()?)
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some(RegistryAuth::Basic(user.into(), password.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(auth: RegistryAuth) -> Option<(String, String)> {
        match auth {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn reads_docker_login_entries_by_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        // "alice:s3cret" and an entry with separate fields.
        std::fs::write(
            &file,
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcmV0"},
                "127.0.0.1:5000": {"username": "bob", "password": "pw"}
            }}"#,
        )
        .unwrap();
        let creds = Credentials::from_file(&file);
        assert_eq!(
            basic(creds.for_registry("docker.io")),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(
            basic(creds.for_registry("127.0.0.1:5000")),
            Some(("bob".into(), "pw".into()))
        );
        assert!(matches!(
            creds.for_registry("ghcr.io"),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn a_missing_or_broken_file_means_anonymous() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Credentials::from_file(dir.path().join("nope.json"));
        assert!(matches!(
            missing.for_registry("docker.io"),
            RegistryAuth::Anonymous
        ));
        std::fs::write(dir.path().join("bad.json"), "{not json").unwrap();
        let broken = Credentials::from_file(dir.path().join("bad.json"));
        assert!(matches!(
            broken.for_registry("docker.io"),
            RegistryAuth::Anonymous
        ));
    }
}
