//! A container's two steps, apart: creating its sandbox (root filesystem, namespaces,
//! cgroups, network; the init process waits, and no workload process runs yet), and
//! starting it (the init executes the workload, which then listens on its port).
//!
//! Creating takes tens of milliseconds, starting well under one, so a sandbox created
//! ahead of a request (see `prepared`) makes a cold start only the second step.

use super::creator::{self, Stdio3};
use super::instance::{self, OciInstance, Resources};
use super::network::{Network, veth_name};
use super::process::ProcessPlan;
use super::record::InstanceRecord;
use super::rootfs::{IdMapping, InstanceDir};
use super::{START_LOCK, Shared};
use super::{spec, stdio};
use crate::cdi::{CdiDeviceName, DeviceNodes};
use crate::{BoxError, IdRange, Instance, LogSinkRef, LogStream, SandboxError};
use libcontainer::container::Container;
use nix::unistd::Pid;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Everything needed to create a sandbox for one revision.
pub(crate) struct Recipe {
    pub(crate) shared: Arc<Shared>,
    pub(crate) network: Arc<Network>,
    /// The container's name: the instances' hostname.
    pub(crate) name: String,
    pub(crate) layers: Vec<PathBuf>,
    pub(crate) plan: ProcessPlan,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) limits: spec::Limits,
    pub(crate) ephemeral_storage: u64,
    pub(crate) request_timeout: Duration,
    /// How long the workload may take to listen; `None`: the sandbox's
    /// `startup_timeout`.
    pub(crate) startup_timeout: Option<Duration>,
    /// Whether the instance speaks h2c.
    pub(crate) http2: bool,
    pub(crate) logs: LogSinkRef,
    /// CDI devices every sandbox gets.
    pub(crate) devices: Vec<CdiDeviceName>,
    /// Whether the instance's PID 1 is Ember's init.
    pub(crate) init: bool,
    /// The host ids the instances' user namespace maps onto; `None` for none.
    pub(crate) id_range: Option<IdRange>,
}

/// A created sandbox whose workload has not started.
pub(crate) struct CreatedSandbox {
    parts: SandboxParts,
    resources: Resources,
}

/// What a sandbox's creation made besides the resources it holds.
struct SandboxParts {
    id: String,
    pid: Pid,
    exit: watch::Receiver<Option<String>>,
    address: SocketAddr,
    /// The instance name its output is logged under, known once it starts.
    instance_name: Arc<OnceLock<String>>,
    /// The runtime's end of the container's standard input.
    stdin: OwnedFd,
}

impl CreatedSandbox {
    /// Whether its init process has ended (killed, say) while it waited.
    pub(crate) fn has_ended(&self) -> bool {
        self.parts.exit.borrow().is_some()
    }

    /// Kills the waiting init and removes everything the sandbox holds.
    pub(crate) async fn release(self) {
        self.resources.discard_after_exit(&self.parts.exit).await;
    }
}

/// A fresh libcontainer id. Not derived from an instance's name: a sandbox may be
/// created before the instance it will become has one.
fn new_sandbox_id() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // RandomState is seeded from the OS's randomness once per process.
    let random = std::collections::hash_map::RandomState::new().hash_one(n);
    format!("ember-{random:016x}")
}

impl Recipe {
    /// Creates a sandbox: mounts its root filesystem, creates the container (its init
    /// waits for the start signal) and connects it to the network. It gets the
    /// recipe's devices and `extra_devices`.
    pub(crate) async fn create(
        &self,
        extra_devices: &[CdiDeviceName],
    ) -> Result<CreatedSandbox, SandboxError> {
        let mut resources = Resources {
            container: None,
            attachment: None,
            dir: None,
            network: self.network.clone(),
        };
        match self.create_into(&mut resources, extra_devices).await {
            Ok(parts) => Ok(CreatedSandbox { parts, resources }),
            Err(e) => {
                resources.discard().await;
                Err(e)
            }
        }
    }

    async fn create_into(
        &self,
        resources: &mut Resources,
        extra_devices: &[CdiDeviceName],
    ) -> Result<SandboxParts, SandboxError> {
        let id = new_sandbox_id();

        // Filesystems, streams, spec and the container's processes: all blocking work.
        let (dir, created) = {
            let shared = self.shared.clone();
            let layers = self.layers.clone();
            let (plan, limits, size) = (self.plan.clone(), self.limits, self.ephemeral_storage);
            let (hostname, uid, gid) = (self.name.clone(), self.uid, self.gid);
            let init = self.init.then(|| self.shared.init.clone());
            let id = id.clone();
            let id_range = self.id_range;
            let devices: Vec<CdiDeviceName> =
                self.devices.iter().chain(extra_devices).cloned().collect();
            tokio::task::spawn_blocking(move || {
                let ids = match id_range {
                    None => None,
                    Some(range) => match shared.user_namespaces.of(range) {
                        Ok(namespace) => Some((range, namespace)),
                        Err(e) => return (None, Err(fail("making a user namespace", e))),
                    },
                };
                let ids = ids.as_ref().map(|(range, namespace)| IdMapping {
                    range: *range,
                    namespace: namespace.as_fd(),
                });
                let dir_path = shared.instances_dir().join(&id);
                let dir = match InstanceDir::mount(dir_path, &layers, size, ids) {
                    Ok(dir) => dir,
                    Err(e) => return (None, Err(fail("mounting the root filesystem", e))),
                };
                let (container_ends, runtime_ends) =
                    match stdio::make(dir.path(), id_range.map(IdRange::host_base)) {
                        Ok(ends) => ends,
                        Err(e) => return (Some(dir), Err(fail("making the standard streams", e))),
                    };
                let stdio = Stdio3 {
                    stdin: container_ends.stdin,
                    stdout: container_ends.stdout,
                    stderr: container_ends.stderr,
                };
                let instance = spec::InstanceSpec {
                    rootfs: &dir.rootfs(),
                    hostname: &hostname,
                    cgroups_path: &super::spec::cgroups_path(&id),
                    uid,
                    gid,
                    init: init.as_deref(),
                    id_range,
                };
                let bundle = dir.path().to_path_buf();
                let device_nodes = match id_range {
                    Some(_) => DeviceNodes::BindMounted,
                    None => DeviceNodes::Created,
                };
                let created = spec::build(&plan, limits, &instance)
                    .map_err(|e| fail("building the runtime spec", e))
                    .and_then(|mut spec| {
                        shared
                            .cdi
                            .inject(&devices, &mut spec, device_nodes)
                            .map_err(|e| SandboxError::start_failed("", e))?;
                        Ok(spec)
                    })
                    .and_then(|spec| {
                        let path = bundle.join("config.json");
                        spec.save(&path)
                            .map_err(|e| fail("writing config.json", e))?;
                        // It holds the environment, secrets included: the instance's
                        // root's alone (its hooks read it), or host root's.
                        use std::os::unix::fs::PermissionsExt;
                        let owner = id_range.map(IdRange::host_base);
                        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                            .and_then(|()| std::os::unix::fs::chown(&path, owner, owner))
                            .map_err(|e| fail("protecting config.json", e))
                    })
                    .and_then(|()| build_container(&shared, &id, &bundle, stdio))
                    .and_then(|()| {
                        Container::load(shared.state_dir().join(&id))
                            .map_err(|e| fail("loading the created container", e))
                    })
                    .map(|container| (container, runtime_ends));
                (Some(dir), created)
            })
            .await
            .map_err(|e| fail("creating the container", e))?
        };
        resources.dir = dir;
        let (container, streams) = match created {
            Ok(created) => created,
            Err(e) => {
                // libcontainer may have left its state directory behind.
                if let Ok(container) = Container::load(self.shared.state_dir().join(&id)) {
                    resources.container = Some(container);
                }
                return Err(e);
            }
        };
        let pid = container.pid();
        // Recorded before anything can fail, so that a failure still deletes it.
        resources.container = Some(container);
        let pid = pid.ok_or_else(|| SandboxError::start("the container has no init process"))?;
        let exit = instance::reap_on_exit(pid).map_err(|e| fail("watching the init process", e))?;
        let instance_name = Arc::new(OnceLock::new());
        let stdin = streams.stdin;
        for (pipe, stream) in [
            (streams.stdout, LogStream::Stdout),
            (streams.stderr, LogStream::Stderr),
        ] {
            instance::forward_output(
                pipe,
                instance_name.clone(),
                id.clone(),
                stream,
                self.logs.clone(),
            )
            .map_err(|e| fail("reading the container's output", e))?;
        }

        let attachment = self
            .network
            .attach(pid.as_raw(), &veth_name(&id))
            .await
            .map_err(|e| fail("connecting the network", e))?;
        let address = SocketAddr::from((attachment.address, self.plan.port));
        resources.attachment = Some(attachment);
        Ok(SandboxParts {
            id,
            pid,
            exit,
            address,
            instance_name,
            stdin,
        })
    }

    /// Starts the workload in `sandbox` and waits until it listens: the instance is
    /// named `instance` from then on. A failure removes the sandbox, and so does
    /// `abandoned` turning true while the workload is not listening yet (the
    /// revision was retired: its container deleted, or the runtime stopping).
    pub(crate) async fn start(
        &self,
        sandbox: CreatedSandbox,
        instance: &str,
        abandoned: &(dyn Fn() -> bool + Sync),
    ) -> Result<Arc<dyn Instance>, SandboxError> {
        let CreatedSandbox {
            parts:
                SandboxParts {
                    id,
                    pid,
                    exit,
                    address,
                    instance_name,
                    stdin,
                },
            mut resources,
        } = sandbox;
        let _ = instance_name.set(instance.to_string());
        let mut container = resources
            .container
            .take()
            .expect("a created sandbox has its container");
        let (container, started) = tokio::task::spawn_blocking(move || {
            let _one_at_a_time = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let result = container.start();
            (container, result)
        })
        .await
        .map_err(|e| fail("starting the container", e))?;
        resources.container = Some(container);
        let ready = match started {
            Ok(()) => {
                let timeout = self
                    .startup_timeout
                    .unwrap_or(self.shared.config.startup_timeout);
                wait_until_ready(address, &exit, timeout, abandoned).await
            }
            Err(e) => Err(fail("starting the container", e)),
        };
        let dir = self.shared.instances_dir().join(&id);
        // What a runtime started after this one needs to take the instance over.
        let ready = ready.and_then(|()| {
            InstanceRecord::of(pid.as_raw(), address)
                .and_then(|record| record.write(&dir))
                .map_err(|e| fail("recording the instance", e))
        });
        if let Err(e) = ready {
            resources.discard_after_exit(&exit).await;
            return Err(e);
        }
        let writable_dir = dir.join("rw");
        Ok(Arc::new(OciInstance {
            sandbox_id: id,
            address,
            clients: thread_local::ThreadLocal::new(),
            exit,
            resources: tokio::sync::Mutex::new(Some(resources)),
            pid,
            grace: self.shared.config.stop_grace,
            request_timeout: self.request_timeout,
            http2: self.http2,
            writable_dir,
            stdin: tokio::sync::Mutex::new(
                tokio::net::unix::pipe::Sender::from_owned_fd(stdin)
                    .map_err(|e| fail("opening the container's standard input", e))?,
            ),
        }))
    }
}

fn fail(what: &str, e: impl Into<BoxError>) -> SandboxError {
    SandboxError::start_failed(what, e)
}

/// Longest a creation may take: tens of milliseconds normally, a few hundred under a
/// burst on two cores. Past it the creator is taken as stuck.
const CREATE_LIMIT: Duration = Duration::from_secs(10);

/// Has libcontainer create the container, in a creator process (see `creator`).
fn build_container(
    shared: &Shared,
    id: &str,
    bundle: &std::path::Path,
    stdio: Stdio3,
) -> Result<(), SandboxError> {
    creator::create(id, &shared.state_dir(), bundle, stdio, CREATE_LIMIT)
        .map_err(|e| SandboxError::start_failed("creating the container", e))
}

/// Longest one readiness probe waits for its connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(20);

/// Waits until the instance accepts TCP connections on its port, failing early when
/// its process exits first or the start is `abandoned`.
async fn wait_until_ready(
    address: SocketAddr,
    exit: &watch::Receiver<Option<String>>,
    timeout: Duration,
    abandoned: &(dyn Fn() -> bool + Sync),
) -> Result<(), SandboxError> {
    let began = Instant::now();
    let mut pause = Duration::from_micros(100);
    loop {
        if abandoned() {
            return Err(SandboxError::start(
                "the start was abandoned: the revision is no longer served",
            ));
        }
        if let Some(reason) = exit.borrow().clone() {
            return Err(SandboxError::start(format!(
                "the container {reason} before it listened on port {}",
                address.port()
            )));
        }
        // Time-boxed: a lost SYN would otherwise wait a second for its retransmit.
        let connect = tokio::net::TcpStream::connect(address);
        if let Ok(Ok(_)) = tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            return Ok(());
        }
        if began.elapsed() >= timeout {
            return Err(SandboxError::start(format!(
                "the container did not listen on port {} within {timeout:?}",
                address.port()
            )));
        }
        tokio::time::sleep(pause).await;
        // Capped low: a cold start waits on this loop.
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids_are_distinct_and_make_valid_interface_names() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_sandbox_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert!(id.starts_with("ember-"), "{id}");
            let veth = veth_name(id);
            assert_eq!(veth.len(), 15, "{veth}");
        }
    }
}
