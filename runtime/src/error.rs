//! The runtime's error type; the API maps it to HTTP statuses in one place.

/// What can go wrong in a runtime command.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A field of the request is invalid.
    #[error("{field}: {message}")]
    InvalidField {
        /// The field, as the API names it.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The thing does not exist, or the caller may not see it.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of thing.
        what: &'static str,
        /// Its id as given.
        id: String,
    },
    /// The caller is known but their role, scopes or capabilities do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The request conflicts with the state of what it names.
    #[error("{message}")]
    Conflict {
        /// A stable code for clients.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// Another container already has this name (and so this URL).
    #[error("name `{0}` is already used by another container")]
    NameTaken(String),
    /// The caller's tenant has used up one of its quotas.
    #[error("the {quota} quota is used up: {message}")]
    QuotaExceeded {
        /// Which quota.
        quota: crate::model::QuotaKind,
        /// The use against the limit.
        message: String,
    },
    /// The caller's tenant sent more API requests than its quota allows.
    #[error(
        "the requestsPerMinute quota is used up: {per_minute} requests a minute; try again in {retry_after_seconds} s"
    )]
    RateLimited {
        /// The quota.
        per_minute: u32,
        /// When one more request may come.
        retry_after_seconds: u64,
    },
    /// The payload is not acceptable as a whole.
    #[error("{0}")]
    Unprocessable(String),
    /// The state store failed.
    #[error("state store: {0}")]
    Storage(#[from] crate::store::StoreError),
    /// The disk of the data dir is too full to keep a change: nothing of it was
    /// kept. Reads still work; writes do again once there is room.
    #[error("no room to keep the change: {0}")]
    StorageFull(String),
    /// The data directory was written by a newer Ember.
    #[error("the data directory has schema version {found}; this Ember reads up to {supported}")]
    SchemaTooNew {
        /// Version on disk.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// A sandbox failed.
    #[error(transparent)]
    Sandbox(#[from] ember_sandbox::SandboxError),
    /// A task the work ran on failed (it panicked, or the runtime is shutting down).
    #[error("{context} failed: {source}")]
    TaskFailed {
        /// What the task was doing.
        context: String,
        /// Why it ended.
        source: tokio::task::JoinError,
    },
    /// I/O outside the store (data dir, sockets).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// An invalid-field error.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// Whether this failed for want of disk space (directly, or through an I/O
    /// error of a sandbox or the content store).
    pub fn is_storage_full(&self) -> bool {
        if matches!(self, Self::StorageFull(_)) {
            return true;
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(error) = cause {
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::StorageFull)
            {
                return true;
            }
            cause = error.source();
        }
        false
    }

    /// What the caller of a change hears when the batch it was in did not become
    /// durable.
    pub(crate) fn not_made_durable(&self) -> Self {
        match self {
            Self::StorageFull(why) => Self::StorageFull(why.clone()),
            other => Self::Storage(crate::store::StoreError::NotDurable(other.to_string())),
        }
    }

    pub(crate) fn task(context: impl Into<String>) -> impl FnOnce(tokio::task::JoinError) -> Self {
        let context = context.into();
        move |source| Self::TaskFailed { context, source }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

impl From<ember_sandbox::BlobError> for RuntimeError {
    fn from(e: ember_sandbox::BlobError) -> Self {
        Self::Sandbox(e.into())
    }
}
