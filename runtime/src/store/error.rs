//! What can go wrong in the state store, with the underlying error kept as the
//! source; the runtime's error wraps it as `RuntimeError::Storage`.

use crate::error::RuntimeError;

/// A failure of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sled::Error),
    /// A record could not be encoded.
    #[error("encoding a record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A stored record does not decode.
    #[error("decoding a record: {0}")]
    Decode(#[source] serde_json::Error),
    /// The writer's thread could not start.
    #[error("starting the store's writer: {0}")]
    Writer(#[source] std::io::Error),
    /// The store's own records contradict each other, or it cannot go on.
    #[error("{0}")]
    Broken(String),
    /// A batch of changes failed as a whole: none of it was kept. Every change of
    /// the batch hears of the one failure, so each gets its message.
    #[error("the change was not made durable: {0}")]
    NotDurable(String),
    /// The store is out of reach (a cluster's etcd without quorum, or down):
    /// nothing was changed, and the same call may succeed later.
    #[error("{0}")]
    Unavailable(String),
}

impl StoreError {
    /// A store that cannot go on, for `why`.
    pub(crate) fn broken(why: impl Into<String>) -> RuntimeError {
        RuntimeError::Storage(Self::Broken(why.into()))
    }
}

impl From<sled::Error> for RuntimeError {
    fn from(e: sled::Error) -> Self {
        match &e {
            sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
                Self::StorageFull(format!("the state store's disk is full ({e})"))
            }
            _ => Self::Storage(StoreError::Database(e)),
        }
    }
}
