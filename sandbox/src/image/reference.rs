//! Image references as users write them, validated once at the edge.
//!
//! Two forms are accepted:
//! - `sha256:<hex>`: a blob already in the runtime's content store (uploaded through
//!   the API), in the way `docker run sha256:<id>` names a local image;
//! - an OCI reference that names its tag or digest explicitly
//!   (`registry.example.com/team/app:1.2`, `app@sha256:...`). There is no implicit
//!   `latest`: a reference without either is refused.

use crate::digest::Digest;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Registry used when a reference names none, as Docker does.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// Why an image reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidImageRef {
    /// Neither a tag nor a digest.
    #[error(
        "image `{0}` has no tag or digest; name one explicitly, e.g. `{0}:1.0` (there is no implicit `latest`)"
    )]
    MissingTag(String),
    /// Syntax error somewhere in the reference.
    #[error("image `{reference}` is not a valid OCI reference: {reason}")]
    Malformed {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A digest part that is not `sha256:<64 hex>`.
    #[error(transparent)]
    Digest(#[from] crate::digest::InvalidDigest),
}

/// A reference to an image in a registry, with its tag and/or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// Registry host, with port when given (`127.0.0.1:5000`).
    pub registry: String,
    /// Repository path inside the registry (`library/hello`).
    pub repository: String,
    /// Tag, when given.
    pub tag: Option<String>,
    /// Digest, when given; it wins over the tag when both are present.
    pub digest: Option<Digest>,
}

impl RegistryRef {
    /// Whether the registry lives on this machine's loopback interface. Such
    /// registries are spoken to over plain HTTP, as Docker does; all others over TLS.
    pub fn is_loopback_registry(&self) -> bool {
        let host = match self.registry.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => self.registry.split(':').next().unwrap_or(&self.registry),
        };
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

/// A validated image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// A blob in the content store.
    Local(Digest),
    /// An image in a registry.
    Registry(RegistryRef),
}

impl FromStr for ImageRef {
    type Err = InvalidImageRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("sha256:") {
            return Ok(ImageRef::Local(s.parse()?));
        }
        parse_registry_ref(s).map(ImageRef::Registry)
    }
}

fn parse_registry_ref(s: &str) -> Result<RegistryRef, InvalidImageRef> {
    let malformed = |reason| InvalidImageRef::Malformed {
        reference: s.to_string(),
        reason,
    };
    if s.is_empty() || s.len() > 4096 {
        return Err(malformed("it must be between 1 and 4096 characters"));
    }
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((name, digest)) => (name, Some(digest.parse::<Digest>()?)),
        None => (s, None),
    };
    // A tag is whatever follows the last ':' after the last '/', so that a
    // registry port (`localhost:5000/app`) is not mistaken for one.
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_and_tag[..last_slash + i],
            Some(&name_and_tag[last_slash + i + 1..]),
        ),
        None => (name_and_tag, None),
    };
    if let Some(tag) = tag {
        let valid = !tag.is_empty()
            && tag.len() <= 128
            && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(malformed(
                "a tag is 1-128 letters, digits, '_', '.' or '-', not starting with '.' or '-'",
            ));
        }
    }
    if tag.is_none() && digest.is_none() {
        return Err(InvalidImageRef::MissingTag(s.to_string()));
    }

    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        Some(_) => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        None => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
    };
    let valid_component = |c: &str| {
        !c.is_empty()
            && c.starts_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.ends_with(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    };
    if !repository.split('/').all(valid_component) {
        return Err(malformed(
            "repository path components are lowercase letters and digits, separated by '.', '_' or '-'",
        ));
    }
    if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(malformed("the registry host is not valid"));
    }
    Ok(RegistryRef {
        registry,
        repository,
        tag: tag.map(str::to_string),
        digest,
    })
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(s: &str) -> RegistryRef {
        match s.parse::<ImageRef>().unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    #[test]
    fn docker_hub_names_are_expanded() {
        let r = registry("nginxdemos/hello:latest");
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "nginxdemos/hello");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(registry("busybox:1.36").repository, "library/busybox");
    }

    #[test]
    fn registry_ports_are_not_tags() {
        let r = registry("127.0.0.1:5000/apps/hello:v1");
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "apps/hello");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(r.is_loopback_registry());
        assert!(registry("localhost:5000/a:1").is_loopback_registry());
        assert!(registry("[::1]:5000/a:1").is_loopback_registry());
        assert!(!registry("ghcr.io/a/b:1").is_loopback_registry());
    }

    #[test]
    fn a_reference_without_tag_or_digest_is_refused() {
        assert!(matches!(
            "localhost:5000/hello".parse::<ImageRef>(),
            Err(InvalidImageRef::MissingTag(_))
        ));
        assert!(matches!(
            "hello".parse::<ImageRef>(),
            Err(InvalidImageRef::MissingTag(_))
        ));
    }

    #[test]
    fn digests_pin_images() {
        let hex = "a".repeat(64);
        let r = registry(&format!("ghcr.io/x/y@sha256:{hex}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().hex(), hex);
        assert!(matches!(
            format!("sha256:{hex}").parse::<ImageRef>().unwrap(),
            ImageRef::Local(_)
        ));
    }

    #[test]
    fn malformed_references_are_refused() {
        for bad in [
            "",
            "Upper/Case:1",
            "a:",
            "a:-x",
            "a//b:1",
            "a@sha256:zz",
            "a b:1",
        ] {
            assert!(bad.parse::<ImageRef>().is_err(), "{bad:?} was accepted");
        }
    }
}
