//! Container names: DNS labels, since each names its ingress host.

use std::fmt;
use std::str::FromStr;

/// A container name: 1 to 63 lowercase letters, digits or '-', starting with a letter
/// and not ending with '-' (an RFC 1123 label that is also a valid subdomain).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

/// Why a name was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a valid name: use 1 to 63 lowercase letters, digits or '-', starting with a letter and not ending with '-'"
)]
pub struct InvalidName(pub String);

impl ContainerName {
    /// The longest name allowed (a DNS label).
    pub const MAX_LEN: usize = 63;

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = (1..=Self::MAX_LEN).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(InvalidName(s.chars().take(80).collect()))
        }
    }
}

impl TryFrom<String> for ContainerName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<ContainerName> for String {
    fn from(n: ContainerName) -> String {
        n.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_are_names() {
        for ok in ["hello", "a", "my-app-2", &"a".repeat(63)] {
            assert!(ok.parse::<ContainerName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Hello",
            "-a",
            "a-",
            "1abc",
            "a_b",
            "a.b",
            &"a".repeat(64),
            "héllo",
        ] {
            assert!(bad.parse::<ContainerName>().is_err(), "{bad}");
        }
    }
}
