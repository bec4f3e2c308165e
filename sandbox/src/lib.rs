//! Ember's sandboxes.
//!
//! A [`Sandbox`] turns a workload (a revision's artifact plus its limits) into a
//! [`PreparedWorkload`] ahead of time, and a prepared workload starts
//! [`Instance`]s quickly: the cold-start path. Instances serve HTTP requests.
//! This crate knows nothing of routing, users or persistent state.
#![deny(missing_docs)]

pub mod blob_store;
pub mod capabilities;
pub mod cdi;
pub mod digest;
pub mod entered;
pub mod id_range;
pub mod image;
pub mod oci;
pub mod processes;
pub mod wasm;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use blob_store::{BlobError, BlobStore};
pub use digest::Digest;
pub use entered::{EnterRequest, EnteredProcess, Terminal, TerminalSize};
pub use id_range::IdRange;

/// Boxed error carried by HTTP bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type requests and responses carry through a sandbox.
pub type HttpBody = UnsyncBoxBody<Bytes, BoxError>;
/// A boxed, sendable future (the trait methods below are object-safe through it).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which sandbox runs a workload; decided by the image's media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// A WebAssembly component exporting `wasi:http/incoming-handler`.
    Wasm,
    /// An OCI container image.
    Oci,
}

impl WorkloadKind {
    /// The label used in metrics (`kind="wasm"`).
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Wasm => "wasm",
            WorkloadKind::Oci => "oci",
        }
    }
}

/// Everything a sandbox needs to know to run one revision.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// Human-readable name, used as the hostname, in logs and as a wasm `argv[0]`.
    pub name: String,
    /// The runnable blob in the content store.
    pub artifact: Digest,
    /// Memory an instance may use, in bytes.
    pub memory_limit_bytes: u64,
    /// CPUs an instance may use (OCI: a CFS quota).
    pub cpus: f64,
    /// Bytes an instance may write to its filesystem (OCI).
    pub ephemeral_storage_bytes: u64,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Replaces the image's entrypoint (OCI).
    pub command: Option<Vec<String>>,
    /// Replaces the image's arguments (OCI), or follows `argv[0]` (wasm).
    pub arguments: Option<Vec<String>>,
    /// The port the workload listens on (OCI); `None` takes the image's.
    pub port: Option<u16>,
    /// Longest time one request may run before it is cut.
    pub request_timeout: Duration,
    /// Where the instances' output goes.
    pub logs: LogSinkRef,
    /// How many sandboxes (OCI) to keep created ahead of need, so that a cold start
    /// only starts one.
    pub prepared_sandboxes: u32,
    /// Whether an OCI instance's PID 1 is Ember's init, which runs the workload as
    /// its child, passes signals on and reaps orphans (wasm has no processes).
    pub init: bool,
    /// CDI devices every instance gets (OCI).
    pub devices: Vec<cdi::CdiDeviceName>,
    /// What the container changes in the default capabilities (OCI).
    pub capabilities: capabilities::CapabilityChanges,
    /// The host ids an OCI instance's user namespace maps its ids onto; `None`
    /// runs it with the host's ids (no user namespace).
    pub id_range: Option<IdRange>,
    /// How long an OCI workload may take to listen on its port (a startup
    /// probe's allowance); `None`: the sandbox's own limit.
    pub startup_timeout: Option<Duration>,
    /// Where a wasm guest may send HTTP requests (none by default).
    pub outbound: wasm::OutboundPolicy,
    /// Whether an OCI instance speaks HTTP/2 with prior knowledge (h2c) rather
    /// than HTTP/1.1 (Cloud Run's end-to-end HTTP/2): gRPC servers do.
    pub http2: bool,
}

/// How requests reach an OCI instance, as its workload spec says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxying {
    /// Longest one request may run.
    pub request_timeout: Duration,
    /// HTTP/2 with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Receives the output of instances, a line at a time.
pub trait LogSink: Send + Sync {
    /// One line (without its newline) written by `instance`.
    fn line(&self, instance: &str, stream: LogStream, text: &str);
}

/// A shared [`LogSink`].
#[derive(Clone)]
pub struct LogSinkRef(pub Arc<dyn LogSink>);

impl std::fmt::Debug for LogSinkRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

/// A sink that drops everything (for workloads whose output nobody reads).
pub struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn line(&self, _: &str, _: LogStream, _: &str) {}
}

/// Errors of the sandboxes.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The artifact is not a runnable workload of this kind.
    #[error("invalid workload: {0}")]
    InvalidWorkload(String),
    /// Compiling, loading or unpacking the artifact, or setting up what its
    /// instances need, failed.
    #[error("preparing the workload failed: {}", with_cause(.context, .source))]
    Prepare {
        /// What was being done (`staging layer …`); empty when the cause says it.
        context: String,
        /// The error that made it fail, when it has a type of its own (so that a
        /// caller can find, say, a full disk in the chain).
        #[source]
        source: Option<BoxError>,
    },
    /// Starting an instance failed.
    #[error("starting an instance failed: {}", with_cause(.context, .source))]
    Start {
        /// What was being done (`creating the container`); empty when the cause
        /// says it.
        context: String,
        /// The error that made it fail, when it has a type of its own.
        #[source]
        source: Option<BoxError>,
    },
    /// The request ran past its deadline and was cut.
    #[error("the request ran longer than {0:?} and was stopped")]
    Timeout(Duration),
    /// The guest failed while handling the request (or taking input, or having a
    /// process entered).
    #[error("the workload failed to handle the request: {}", with_cause(.context, .source))]
    Guest {
        /// What went wrong, or what was being done; empty when the cause says it.
        context: String,
        /// The error that made it fail, when it has a type of its own.
        #[source]
        source: Option<BoxError>,
    },
    /// The content store failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// This kind of workload cannot run on this machine.
    #[error("{0}")]
    Unsupported(String),
}

impl SandboxError {
    /// Preparing failed for the reason `context` gives.
    pub fn prepare(context: impl Into<String>) -> Self {
        Self::Prepare {
            context: context.into(),
            source: None,
        }
    }

    /// Preparing failed while doing `context`, because of `source`.
    pub fn prepare_failed(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Prepare {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    /// Starting failed for the reason `context` gives.
    pub fn start(context: impl Into<String>) -> Self {
        Self::Start {
            context: context.into(),
            source: None,
        }
    }

    /// Starting failed while doing `context`, because of `source`.
    pub fn start_failed(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Start {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

impl SandboxError {
    /// The guest failed for the reason `context` gives.
    pub fn guest(context: impl Into<String>) -> Self {
        Self::Guest {
            context: context.into(),
            source: None,
        }
    }

    /// The guest failed while `context` was being done, because of `source`.
    pub fn guest_failed(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self::Guest {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

/// `context: cause`, or whichever of the two there is: the messages read as they
/// did when the cause was formatted into the context.
fn with_cause(context: &str, source: &Option<BoxError>) -> String {
    match source {
        Some(source) if context.is_empty() => source.to_string(),
        Some(source) => format!("{context}: {source}"),
        None => context.to_string(),
    }
}

/// A kind of sandbox: wasm on wasmtime, or OCI on libcontainer.
pub trait Sandbox: Send + Sync + 'static {
    /// The kind of workload this sandbox runs.
    fn kind(&self) -> WorkloadKind;

    /// Does all the work that can be done before the first request (compiling,
    /// caching) and checks that the workload is runnable.
    fn prepare(
        &self,
        spec: WorkloadSpec,
    ) -> BoxFuture<'_, Result<Arc<dyn PreparedWorkload>, SandboxError>>;

    /// The host-level ids of instances an earlier run of the runtime started and
    /// left running (it was killed, say), which this one may take over.
    fn adoptable(&self) -> Vec<String> {
        Vec::new()
    }

    /// Takes over instance `sandbox_id`, left running by an earlier run: it serves
    /// requests, logs under `instance` to `logs`, and stops as an instance started
    /// here would. Fails when it no longer runs (it is then removed).
    fn adopt<'a>(
        &'a self,
        sandbox_id: &'a str,
        instance: &'a str,
        logs: LogSinkRef,
        proxying: Proxying,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        let _ = (sandbox_id, instance, logs, proxying);
        Box::pin(async {
            Err(SandboxError::Unsupported(
                "this sandbox has no instances to adopt".into(),
            ))
        })
    }

    /// Stops and removes the instances left running that were not adopted.
    fn discard_unadopted(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A revision made ready to start; cheap to keep while a container is at zero.
pub trait PreparedWorkload: Send + Sync {
    /// Starts one instance, named `instance` in logs: this is the cold-start path.
    fn start<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>>;

    /// Starts one instance that also gets `devices` (CDI devices of its own, such as
    /// the GPUs placement gave it). Kinds without devices refuse any.
    fn start_with_devices<'a>(
        &'a self,
        instance: &'a str,
        devices: &'a [cdi::CdiDeviceName],
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        if devices.is_empty() {
            return self.start(instance);
        }
        Box::pin(async {
            Err(SandboxError::Unsupported(
                "this kind of workload cannot be given devices".into(),
            ))
        })
    }

    /// Gives back what the workload holds ready for starts (OCI: its prepared
    /// sandboxes): no instance will start from it any more. Starts still work after,
    /// from nothing.
    fn retire(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// How many sandboxes are created and waiting for a start.
    fn ready_sandboxes(&self) -> usize {
        0
    }
}

/// One running sandbox that serves requests.
pub trait Instance: Send + Sync {
    /// Serves one request. Bodies stream both ways.
    fn handle(
        &self,
        request: http::Request<HttpBody>,
    ) -> BoxFuture<'_, Result<http::Response<HttpBody>, SandboxError>>;

    /// Stops the instance and frees what it holds. Requests already in flight finish first
    /// where the kind allows it.
    fn stop(&self) -> BoxFuture<'_, ()>;

    /// For instances that can end on their own (a container's process exits or
    /// crashes): a channel that turns `Some(reason)` when the instance has ended, for
    /// whatever cause, a stop included. `None` for kinds that cannot end by themselves.
    fn exit_signal(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>>;

    /// The host-level id of the sandbox (OCI: the libcontainer id, which names the
    /// instance's cgroups), for kinds that have one.
    fn sandbox_id(&self) -> Option<&str> {
        None
    }

    /// Where the instance listens on the node's network (OCI: its address on the
    /// bridge and the container's port), for kinds reachable that way.
    fn address(&self) -> Option<std::net::SocketAddr> {
        None
    }

    /// What the instance has used: CPU time since it started, memory now.
    fn usage(&self) -> ResourceUsage {
        ResourceUsage::default()
    }

    /// The processes the instance runs (OCI: every process in its pid namespace);
    /// none for kinds that run no process of their own.
    fn processes(&self) -> std::io::Result<Vec<processes::ProcessInfo>> {
        Ok(Vec::new())
    }

    /// Writes `data` to the instance's standard input, for kinds that have one.
    fn write_input<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<(), SandboxError>> {
        let _ = data;
        Box::pin(async {
            Err(SandboxError::Unsupported(
                "this instance has no standard input".into(),
            ))
        })
    }

    /// Runs a command (or a shell) inside the instance, for kinds that run processes.
    fn enter(&self, request: &EnterRequest) -> Result<EnteredProcess, SandboxError> {
        let _ = request;
        Err(SandboxError::Unsupported(
            "this instance runs no processes of its own, so there is no shell to enter".into(),
        ))
    }
}

/// An instance's use of the node: what stats and metrics report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceUsage {
    /// CPU time used since the instance started.
    pub cpu_time: std::time::Duration,
    /// Memory in use now.
    pub memory_bytes: u64,
    /// Bytes through the instance's own network interface, for kinds that have one.
    pub network: Option<NetworkUsage>,
    /// Bytes written to the instance's writable filesystem, for kinds that have one.
    pub storage_bytes: Option<u64>,
}

/// Bytes an instance's network interface carried since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkUsage {
    /// Bytes the instance received.
    pub received_bytes: u64,
    /// Bytes the instance sent.
    pub sent_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn prepare_and_start_read_as_context_then_cause() {
        let full = || std::io::Error::from(std::io::ErrorKind::StorageFull);
        let staged = SandboxError::prepare_failed("staging layer sha256:00", full());
        assert_eq!(
            staged.to_string(),
            format!(
                "preparing the workload failed: staging layer sha256:00: {}",
                full()
            )
        );
        let bare = SandboxError::start_failed("", full());
        assert_eq!(
            bare.to_string(),
            format!("starting an instance failed: {}", full())
        );
        assert_eq!(
            SandboxError::start("the container has no init process").to_string(),
            "starting an instance failed: the container has no init process"
        );
        let closed = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(
            SandboxError::guest_failed("the container's standard input is closed", closed)
                .to_string(),
            format!(
                "the workload failed to handle the request: the container's standard input is closed: {}",
                std::io::Error::from(std::io::ErrorKind::BrokenPipe)
            )
        );
    }

    #[test]
    fn a_typed_cause_stays_in_the_chain() {
        let error = SandboxError::prepare_failed(
            "storing layer sha256:00",
            std::io::Error::from(std::io::ErrorKind::StorageFull),
        );
        let cause = error.source().expect("the cause is kept");
        assert_eq!(
            cause.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::StorageFull)
        );
        assert!(SandboxError::prepare("no cause").source().is_none());
    }
}
