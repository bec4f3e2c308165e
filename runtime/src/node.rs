//! This machine as a node (a server, in the API documents' words): its capacity, what
//! instances hold of it, and waiting for room.

use crate::clock::Clock;
use crate::model::{ContainerId, ContainerSpec, GpuModel, Quota, QuotaUse, ServerId, UserId};
use crate::tenants::Tenants;
use ember_sandbox::cdi::{CdiDeviceName, CdiRegistry};
use ember_scheduler::fair_share::{FairQueue, Ticket};
use ember_scheduler::placement::{self, Allocation, Gpu, Node, Request, Resources, Unplaced};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;

/// Frees room on the node for `request` by stopping idle instances of containers
/// other than the one given; returns whether it stopped any.
pub(crate) type Reclaimer = Box<dyn Fn(ContainerId, &Request) -> bool + Send + Sync>;

/// The node's capacity and allocations, shared by every container's instances.
pub(crate) struct NodeCapacity {
    node: Mutex<Node<ServerId>>,
    released: Notify,
    /// Starts waiting for room or quota, and whose turn it is to try.
    waiting: Mutex<FairQueue<UserId>>,
    /// Where the queue's time starts.
    clock: Clock,
    /// When room (or quota) was last released.
    last_release: Mutex<Duration>,
    reclaimer: OnceLock<Reclaimer>,
    /// What each tenant may hold and holds.
    tenants: Arc<Tenants>,
}

/// Room held on the node by one instance, and its share of its tenant's quota;
/// given back when dropped.
pub(crate) struct Placement {
    node: Arc<NodeCapacity>,
    allocation: Allocation<ServerId>,
    tenant: Option<(UserId, QuotaUse)>,
}

/// Why an instance cannot be placed now.
enum Refused {
    /// The node has no room.
    Node(Unplaced),
    /// Its tenant's quota is used up; the reason says which and how.
    Tenant(String),
}

impl Placement {
    /// The GPUs it holds, as the CDI devices that give them to the instance.
    pub(crate) fn gpu_devices(&self) -> Vec<CdiDeviceName> {
        self.allocation
            .held
            .gpus
            .iter()
            // Node GPUs come from CDI names (see `detect_capacity`), so they parse.
            .filter_map(|gpu| gpu.device.parse().ok())
            .collect()
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.node.node.lock().release(&self.allocation);
        if let Some((user, taken)) = self.tenant {
            self.node.tenants.give_back(user, taken);
        }
        self.node.release();
    }
}

/// Takes a start out of the queue however its wait ends (placed, given up, or
/// its task cancelled).
struct QueuedStart<'a> {
    node: &'a NodeCapacity,
    ticket: Ticket,
}

impl Drop for QueuedStart<'_> {
    fn drop(&mut self) {
        self.node.waiting.lock().leave(self.ticket);
        // The one whose turn it was may have been this one.
        self.node.released.notify_waiters();
    }
}

/// Why a start waits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Waiting {
    /// The node has no room for it.
    Room(String),
    /// Its tenant's quota is used up.
    TenantQuota(String),
    /// Starts of tenants holding fewer instances go first.
    Turn,
}

impl Waiting {
    /// Why, in words, for the instance's state.
    pub(crate) fn reason(&self) -> String {
        match self {
            Self::Room(why) => format!("waiting for room: {why}"),
            Self::TenantQuota(why) => format!("waiting for {why}"),
            Self::Turn => {
                "waiting for its turn: starts of tenants holding fewer instances go first".into()
            }
        }
    }
}

/// How long a start waiting for room sleeps before it looks again on its own.
const RECHECK: Duration = Duration::from_secs(1);

impl NodeCapacity {
    pub(crate) fn new(
        id: ServerId,
        name: String,
        capacity: Resources,
        tenants: Arc<Tenants>,
    ) -> Arc<Self> {
        Arc::new(Self {
            node: Mutex::new(Node::new(id, name, capacity)),
            released: Notify::new(),
            waiting: Mutex::new(FairQueue::new()),
            clock: Clock::start(),
            last_release: Mutex::new(Duration::ZERO),
            reclaimer: OnceLock::new(),
            tenants,
        })
    }

    /// Every tenant's quota and use.
    pub(crate) fn tenants(&self) -> &Tenants {
        &self.tenants
    }

    /// Sets `user`'s quota; starts waiting for it look again.
    pub(crate) fn set_quota(&self, user: UserId, quota: Quota) {
        self.tenants.set(user, quota);
        self.release();
    }

    /// Room (or quota) was released: every waiting start gets a turn again, in
    /// fair order.
    fn release(&self) {
        *self.last_release.lock() = self.clock.now();
        self.waiting.lock().released();
        self.released.notify_waiters();
    }

    /// A fresh round when nothing was released for [`RECHECK`], in case a change
    /// went unnoticed. Once per quiet spell, not once per waiter: each round lets
    /// every waiter try.
    fn release_if_quiet(&self) {
        let quiet = self.clock.now().saturating_sub(*self.last_release.lock()) >= RECHECK;
        if quiet {
            self.release();
        }
    }

    /// Sets what frees room when the node is full (once, at start).
    pub(crate) fn set_reclaimer(&self, reclaimer: Reclaimer) {
        let _ = self.reclaimer.set(reclaimer);
    }

    /// The node as it is now.
    pub(crate) fn snapshot(&self) -> Node<ServerId> {
        self.node.lock().clone()
    }

    fn try_place(
        self: &Arc<Self>,
        tenant: Option<UserId>,
        request: &Request,
        storage_bytes: u64,
    ) -> Result<Placement, Refused> {
        let share = QuotaUse {
            instances: 1,
            millicpus: request.millicpus,
            memory_bytes: request.memory_bytes,
            ephemeral_storage_bytes: storage_bytes,
            ..QuotaUse::default()
        };
        if let Some(user) = tenant {
            self.tenants.take(user, share).map_err(Refused::Tenant)?;
        }
        let mut node = self.node.lock();
        match placement::place(std::slice::from_mut(&mut *node), request) {
            Ok(allocation) => Ok(Placement {
                node: self.clone(),
                allocation,
                tenant: tenant.map(|user| (user, share)),
            }),
            Err(unplaced) => {
                if let Some(user) = tenant {
                    self.tenants.give_back(user, share);
                }
                Err(Refused::Node(unplaced))
            }
        }
    }

    /// Room for `request` if there is some now, for tests that need a placement.
    #[cfg(test)]
    pub(crate) fn place_at_once(self: &Arc<Self>, request: &Request) -> Option<Placement> {
        self.try_place(None, request, 0).ok()
    }

    /// Holds room for one instance of `requester`, owned by `tenant`, stopping idle
    /// instances of other containers when the node is full and otherwise waiting
    /// until room appears; past the tenant's quota it waits until the tenant frees
    /// some (or an admin raises the quota). Waiting starts try in turn, in the fair
    /// order of `ember_scheduler::fair_share` (the tenant holding the fewest
    /// instances first), so one tenant's burst never starves another's cold start.
    /// The tenant's quota counts the instance's `storage_bytes` of ephemeral
    /// storage besides. `waiting` is told why while it waits (and `None` once
    /// placed); `give_up` ends the wait when the instance is no longer wanted.
    pub(crate) async fn place(
        self: &Arc<Self>,
        requester: ContainerId,
        tenant: UserId,
        request: &Request,
        storage_bytes: u64,
        waiting: impl Fn(Option<Waiting>),
        give_up: impl Fn() -> bool,
    ) -> Option<Placement> {
        let mut noted = false;
        let queued = QueuedStart {
            node: self,
            ticket: self.waiting.lock().join(tenant, self.clock.now()),
        };
        loop {
            // Registered before looking, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let held = self.tenants.instances_held();
            if !self.waiting.lock().may_try(queued.ticket, &held) {
                if give_up() {
                    if noted {
                        waiting(None);
                    }
                    return None;
                }
                if !noted {
                    waiting(Some(Waiting::Turn));
                    noted = true;
                }
                if tokio::time::timeout(RECHECK, released).await.is_err() {
                    self.release_if_quiet();
                }
                continue;
            }
            match self.try_place(Some(tenant), request, storage_bytes) {
                Ok(placement) => {
                    self.waiting.lock().placed(queued.ticket, self.clock.now());
                    if noted {
                        waiting(None);
                    }
                    return Some(placement);
                }
                Err(refused) => {
                    // Its turn passes to the next waiter, which tries now.
                    self.waiting.lock().passed(queued.ticket);
                    self.released.notify_waiters();
                    if give_up() {
                        if noted {
                            waiting(None);
                        }
                        return None;
                    }
                    match refused {
                        Refused::Tenant(why) => {
                            waiting(Some(Waiting::TenantQuota(why)));
                            noted = true;
                        }
                        Refused::Node(unplaced) => {
                            let reclaimed =
                                self.reclaimer.get().is_some_and(|r| r(requester, request));
                            if !reclaimed {
                                waiting(Some(Waiting::Room(unplaced.to_string())));
                                noted = true;
                            }
                        }
                    }
                    if tokio::time::timeout(RECHECK, released).await.is_err() {
                        self.release_if_quiet();
                    }
                }
            }
        }
    }
}

/// The ephemeral storage one instance of `spec` may write (wasm writes none).
pub(crate) fn instance_storage(spec: &ContainerSpec, kind: ember_sandbox::WorkloadKind) -> u64 {
    match kind {
        ember_sandbox::WorkloadKind::Oci => spec.ephemeral_storage.bytes(),
        ember_sandbox::WorkloadKind::Wasm => 0,
    }
}

/// What one instance of `spec` asks of its node. `desiredGPUs` may name catalogue
/// models by code or name; placement matches codes.
pub(crate) fn instance_request(spec: &ContainerSpec) -> Request {
    Request {
        millicpus: (spec.cpu * 1000.0).ceil() as u64,
        memory_bytes: spec.ram.bytes(),
        gpus: spec.gpu,
        gpu_models: spec
            .desired_gpus
            .iter()
            .flatten()
            .map(|desired| GpuModel::find(desired).map_or(desired.clone(), |m| m.code.into()))
            .collect(),
    }
}

/// Reads the CDI specs, saying in the log what they offer and which are broken.
pub(crate) fn load_cdi_specs(dirs: &[PathBuf]) -> CdiRegistry {
    let registry = CdiRegistry::load(dirs);
    for broken in registry.broken() {
        tracing::warn!(path = %broken.path.display(), error = %broken.error, "a CDI spec is unusable");
    }
    let devices = registry.devices().count();
    let gpus = registry.gpus().len();
    tracing::info!(devices, gpus, dirs = ?dirs, "CDI specs loaded");
    registry
}

/// This machine's capacity: its CPUs and memory, unless the configuration says less,
/// and the GPUs its CDI specs define.
pub(crate) fn detect_capacity(
    cpus: Option<f64>,
    memory_bytes: Option<u64>,
    cdi: &CdiRegistry,
) -> Resources {
    let cpus = cpus
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64));
    let memory_bytes = memory_bytes.unwrap_or_else(|| total_memory().unwrap_or(1 << 30));
    Resources {
        millicpus: (cpus * 1000.0) as u64,
        memory_bytes,
        gpus: cdi
            .gpus()
            .into_iter()
            .map(|gpu| Gpu {
                model: gpu.model,
                device: gpu.device.to_string(),
            })
            .collect(),
    }
}

/// `MemTotal` from /proc/meminfo, in bytes.
fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The node's name: the machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(millicpus: u64) -> Arc<NodeCapacity> {
        NodeCapacity::new(
            ServerId::generate(),
            "test".into(),
            Resources {
                millicpus,
                memory_bytes: 1 << 30,
                gpus: Default::default(),
            },
            Arc::new(Tenants::unbounded()),
        )
    }

    fn one_cpu() -> Request {
        Request {
            millicpus: 1000,
            memory_bytes: 1 << 20,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_start_waits_for_room_and_says_why() {
        let node = node(1000);
        let held = node
            .place(
                ContainerId::generate(),
                UserId::generate(),
                &one_cpu(),
                0,
                |_| {},
                || false,
            )
            .await
            .unwrap();
        let notes = Arc::new(Mutex::new(Vec::new()));
        let waiter = {
            let node = node.clone();
            let notes = notes.clone();
            tokio::spawn(async move {
                node.place(
                    ContainerId::generate(),
                    UserId::generate(),
                    &one_cpu(),
                    0,
                    move |note| notes.lock().push(note.map(|n| n.reason())),
                    || false,
                )
                .await
                .is_some()
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert!(waiter.await.unwrap());
        let notes = notes.lock();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0]
                .as_deref()
                .unwrap()
                .contains("asks for 1 CPU, 0 available"),
            "{notes:?}"
        );
        assert_eq!(notes[1], None);
    }

    #[tokio::test]
    async fn a_full_node_asks_the_reclaimer_first() {
        let node = node(1000);
        let held = Arc::new(Mutex::new(Some(
            node.place(
                ContainerId::generate(),
                UserId::generate(),
                &one_cpu(),
                0,
                |_| {},
                || false,
            )
            .await
            .unwrap(),
        )));
        let to_free = held.clone();
        node.set_reclaimer(Box::new(move |_, _| to_free.lock().take().is_some()));
        let placed = tokio::time::timeout(
            Duration::from_millis(500),
            node.place(
                ContainerId::generate(),
                UserId::generate(),
                &one_cpu(),
                0,
                |_| {},
                || false,
            ),
        )
        .await
        .expect("the reclaimed room was used at once");
        assert!(placed.is_some());
        assert!(held.lock().is_none());
    }

    #[tokio::test]
    async fn room_released_goes_to_the_tenant_holding_fewer_instances() {
        let node = node(1000);
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let place = |tenant: UserId| {
            let node = node.clone();
            tokio::spawn(async move {
                node.place(
                    ContainerId::generate(),
                    tenant,
                    &one_cpu(),
                    0,
                    |_| {},
                    || false,
                )
                .await
                .unwrap()
            })
        };
        let held = place(alice).await.unwrap();
        // Alice's burst waits first, then Bob's one start.
        let burst: Vec<_> = (0..3).map(|_| place(alice)).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let bobs = place(bob);
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        let bobs = tokio::time::timeout(Duration::from_secs(5), bobs)
            .await
            .expect("the released room went to Bob")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(burst.iter().all(|start| !start.is_finished()));
        // Then Alice's, oldest first, as room comes back.
        drop(bobs);
        let mut placed = 0;
        for start in burst {
            if let Ok(Ok(next)) = tokio::time::timeout(Duration::from_millis(200), start).await {
                placed += 1;
                drop(next);
            }
        }
        assert_eq!(placed, 3);
    }
}
