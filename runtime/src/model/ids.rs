//! Typed identifiers, validated when parsed, so one can never be passed for another.

use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random identifier.
            pub fn generate() -> Self {
                Self(Uuid::new_v4())
            }

            /// The identifier's bytes, used as store keys.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// The identifier whose bytes are `bytes` (as stored in a key).
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }

            /// The integer id the faces that number things (the numbered containers and container services faces)
            /// show: the UUID's first 48 bits, so it is stable, needs no counter, and
            /// is exact in every JSON number type.
            pub fn number(&self) -> u64 {
                let bytes = self.0.as_bytes();
                u64::from_be_bytes([0, 0, bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]])
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| InvalidId {
                    what: $what,
                    value: s.chars().take(80).collect(),
                })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

/// An identifier that did not parse.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` is not a valid {what} id (expected a UUID)")]
pub struct InvalidId {
    /// Which kind of id.
    pub what: &'static str,
    /// The offending text (truncated).
    pub value: String,
}

uuid_id!(
    /// Identifies a container (a deployed service).
    ContainerId,
    "container"
);
uuid_id!(
    /// Identifies one running instance of a container.
    InstanceId,
    "instance"
);
uuid_id!(
    /// Identifies a user; containers record their creator's.
    UserId,
    "user"
);
uuid_id!(
    /// Identifies a job: an asynchronous operation a client can poll.
    JobId,
    "job"
);
uuid_id!(
    /// Identifies an API token (not the secret itself).
    TokenId,
    "token"
);
uuid_id!(
    /// Identifies a server (node) that runs instances.
    ServerId,
    "server"
);
