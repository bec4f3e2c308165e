//! This node's place in a cluster (`ember serve --cluster`): the record each node
//! publishes about itself, and the membership that keeps it published while the
//! node lives and tells every node who the others are. One machine on sled has
//! no membership: it is the only server.

mod member_logs;
mod peers;

pub use peers::MemberAnswer;
pub(crate) use peers::Peers;

use crate::error::RuntimeError;
use crate::model::ServerId;
use ember_scheduler::placement::{Gpu, Resources};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// Whose instances, and whose instances' output, a read takes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// This node's alone (a member of the cluster asking for them).
    ThisNode,
    /// Every member's: on one machine, this node's.
    Cluster,
}

/// Where a node finds its cluster, and who it is in it.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// etcd's client URLs.
    pub endpoints: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node_name: String,
    /// The address the other nodes and clients reach this node on; its API and
    /// ingress are published on it, with the ports they listen on.
    pub advertise_addr: std::net::IpAddr,
}

/// What a node publishes about itself while it is a member.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// Its name (`--node-name`).
    pub name: String,
    /// Its server id, made the first time its name joined.
    pub server_id: ServerId,
    /// Where its management API answers.
    pub api: SocketAddr,
    /// Where its ingress answers.
    pub ingress: SocketAddr,
    /// Everything it has for instances.
    pub capacity: ResourceRecord,
    /// What its instances hold now (refreshed every second or so).
    pub allocated: ResourceRecord,
    /// When it joined, this time.
    pub joined: SystemTime,
    /// The containers it has instances of now, and how many: where a request for
    /// one is sent rather than cold-starting it on a node that has none.
    #[serde(default)]
    pub warm: std::collections::BTreeMap<crate::model::ContainerId, u32>,
}

/// A node's resources as published.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ResourceRecord {
    /// Thousandths of a CPU.
    pub millicpus: u64,
    /// Bytes of memory.
    pub memory_bytes: u64,
    /// Each GPU: its model and its CDI device.
    pub gpus: Vec<(String, String)>,
}

impl From<&Resources> for ResourceRecord {
    fn from(r: &Resources) -> Self {
        Self {
            millicpus: r.millicpus,
            memory_bytes: r.memory_bytes,
            gpus: r
                .gpus
                .iter()
                .map(|g| (g.model.clone(), g.device.clone()))
                .collect(),
        }
    }
}

impl From<&ResourceRecord> for Resources {
    fn from(r: &ResourceRecord) -> Self {
        Self {
            millicpus: r.millicpus,
            memory_bytes: r.memory_bytes,
            gpus: r
                .gpus
                .iter()
                .map(|(model, device)| Gpu {
                    model: model.clone(),
                    device: device.clone(),
                })
                .collect(),
        }
    }
}

/// A change to a container, made by any node, as a node hears of it.
#[derive(Debug)]
pub enum ContainerChange {
    /// The container as stored now (new, updated, or its status changed).
    Stored(Box<crate::model::Container>),
    /// The container was deleted.
    Removed(crate::model::ContainerId),
}

/// This node's record as it is now, asked for each time it is published.
pub type NodeSnapshot = Arc<dyn Fn() -> NodeRecord + Send + Sync>;

/// A node's membership of its cluster.
#[async_trait::async_trait]
pub trait Membership: Send + Sync {
    /// Publishes this node, and keeps it published until [`Self::leave`] or the
    /// node's end: a node that stops renewing is gone a few seconds later.
    async fn join(&self, snapshot: NodeSnapshot) -> Result<(), RuntimeError>;

    /// Shows `visit` each member now, by name, as this node last heard, without
    /// copying the records (they carry every container a member holds warm).
    fn visit_members(&self, visit: &mut dyn FnMut(&NodeRecord));

    /// The members now, by name, as this node last heard.
    fn members(&self) -> Vec<NodeRecord> {
        let mut members = Vec::new();
        self.visit_members(&mut |m| members.push(m.clone()));
        members
    }

    /// The members' names and server ids now, by name: what dealing instances
    /// needs.
    fn member_ids(&self) -> Vec<(String, ServerId)> {
        let mut ids = Vec::new();
        self.visit_members(&mut |m| ids.push((m.name.clone(), m.server_id)));
        ids
    }

    /// The members' names and capacities now, by name: what dealing kept
    /// instances by what each member could hold needs.
    fn member_capacities(&self) -> Vec<(String, Resources)> {
        let mut capacities = Vec::new();
        self.visit_members(&mut |m| capacities.push((m.name.clone(), (&m.capacity).into())));
        capacities
    }

    /// Leaves at once (a graceful stop), rather than when the registration lapses.
    async fn leave(&self);
}

/// A server as the API lists it: a node, with its addresses when it is a
/// cluster's member.
#[derive(Clone, Debug)]
pub struct Server {
    /// Its id, name, capacity and allocation.
    pub node: ember_scheduler::Node<ServerId>,
    /// Where its management API and its ingress answer (cluster members only).
    pub addresses: Option<(SocketAddr, SocketAddr)>,
}

impl From<&NodeRecord> for Server {
    fn from(record: &NodeRecord) -> Self {
        Self {
            node: ember_scheduler::Node {
                id: record.server_id,
                name: record.name.clone(),
                capacity: (&record.capacity).into(),
                allocated: (&record.allocated).into(),
            },
            addresses: Some((record.api, record.ingress)),
        }
    }
}

/// What a cluster's node has beside its store: its membership, and the stream of
/// changes to containers (opened before the containers are loaded, so that none
/// made meanwhile is missed).
pub(crate) struct ClusterLink {
    pub(crate) membership: Arc<dyn Membership>,
    pub(crate) changes: tokio::sync::mpsc::UnboundedReceiver<ContainerChange>,
}

/// Where a node gets a component uploaded to another node.
#[async_trait::async_trait]
pub trait BlobPeers: Send + Sync {
    /// The bytes of blob `digest` from a member that holds it (the caller checks
    /// them against the digest).
    async fn fetch(&self, digest: &ember_sandbox::Digest) -> Result<Vec<u8>, RuntimeError>;
}
