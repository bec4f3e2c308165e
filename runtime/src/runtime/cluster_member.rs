//! This node as a member of a cluster: its record published, the members listed
//! as servers, requests for instances that other members run, and the store
//! (sled, or the cluster's etcd) opened with the membership that comes with it.

use super::*;
use crate::model::InstanceInfo;

impl Runtime {
    /// The instances of container `id` that the cluster's other members run, as
    /// their APIs list them (none on one machine). The caller's right to see the
    /// container is checked here first; the members are asked with this node's
    /// own admin token.
    pub async fn other_members_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let Some(peers) = &self.inner.peers else {
            return Ok(Vec::new());
        };
        self.accessible(caller, id).await?;
        Ok(peers.instances_of(id).await)
    }

    /// The instances of container `id` (not those terminating or terminated):
    /// this node's, and with `Reach::Cluster` the other members' too.
    pub async fn cluster_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
        reach: Reach,
    ) -> Result<Vec<InstanceInfo>, RuntimeError> {
        let mut instances = self.list_instances(caller, id).await?;
        if reach == Reach::Cluster {
            instances.extend(self.other_members_instances(caller, id).await?);
        }
        Ok(instances)
    }

    /// The API of the member that runs `instance` of container `id`, when another
    /// member of the cluster does (the caller's right to see it checked first).
    pub async fn member_running(
        &self,
        caller: &Caller,
        id: ContainerId,
        instance: InstanceId,
    ) -> Result<Option<std::net::SocketAddr>, RuntimeError> {
        let Some(peers) = &self.inner.peers else {
            return Ok(None);
        };
        let server = self
            .other_members_instances(caller, id)
            .await?
            .into_iter()
            .find(|i| i.id == instance)
            .map(|i| i.server_id);
        Ok(server.and_then(|server| peers.api_of(server)))
    }

    /// Sends a client's API request on to the member at `api` (found with
    /// [`Self::member_running`]), with the client's own credentials; the member's
    /// status, content type and body.
    pub async fn forward_to_member(
        &self,
        api: std::net::SocketAddr,
        method: http::Method,
        path: &str,
        authorization: Option<http::HeaderValue>,
        json: Option<Vec<u8>>,
    ) -> Result<crate::cluster::MemberAnswer, RuntimeError> {
        let peers = self
            .inner
            .peers
            .as_ref()
            .ok_or_else(|| RuntimeError::Unprocessable("this node is in no cluster".into()))?;
        peers
            .forward(api, method, path, authorization, json)
            .await
            .map_err(|why| {
                RuntimeError::Unprocessable(format!("the member running the instance: {why}"))
            })
    }

    /// Sends a client's API request on to every other member, with the client's
    /// own credentials, each to answer for itself alone: their answers (status,
    /// content type, body), those that did not answer left out. None on one
    /// machine.
    pub async fn forward_to_other_members(
        &self,
        method: http::Method,
        path: &str,
        authorization: Option<http::HeaderValue>,
        json: Option<Vec<u8>>,
    ) -> Vec<crate::cluster::MemberAnswer> {
        let Some(peers) = &self.inner.peers else {
            return Vec::new();
        };
        peers
            .forward_to_others(method, path, authorization, json)
            .await
    }

    /// Whether this node is a member of a cluster.
    pub fn is_cluster_member(&self) -> bool {
        self.inner.membership.is_some()
    }

    /// How many instances of container `id` the other members run, as their
    /// published records say (a second or so old; none on one machine).
    pub fn instances_elsewhere(&self, id: ContainerId) -> u32 {
        let (Some(membership), Some(cluster)) =
            (&self.inner.membership, &self.inner.config.cluster)
        else {
            return 0;
        };
        let mut elsewhere = 0;
        membership.visit_members(&mut |m| {
            if m.name != cluster.node_name {
                elsewhere += m.warm.get(&id).copied().unwrap_or(0);
            }
        });
        elsewhere
    }

    /// Has the cluster's other members stop their instances of container `id`
    /// (nothing on one machine); the caller's right to change it is checked
    /// first.
    pub async fn stop_other_members_instances(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<(), RuntimeError> {
        let Some(peers) = &self.inner.peers else {
            return Ok(());
        };
        self.accessible(caller, id).await?;
        peers.stop_instances_of(id).await;
        Ok(())
    }

    /// This node's cluster membership, when it is in a cluster.
    pub(crate) fn membership(&self) -> Option<&Arc<dyn Membership>> {
        self.inner.membership.as_ref()
    }

    /// The kept-alive connections relayed requests go on.
    pub(crate) fn relay_connections(&self) -> &Arc<crate::relay::MemberConnections> {
        &self.inner.relay_connections
    }

    /// The servers instances run on and what they hold: this node alone, or the
    /// members of its cluster.
    pub fn servers(&self) -> Vec<Server> {
        match &self.inner.membership {
            Some(membership) => membership.members().iter().map(Server::from).collect(),
            None => vec![Server {
                node: self.inner.node.snapshot(),
                addresses: None,
            }],
        }
    }

    /// Publishes this node to its cluster (if it is in one), with the addresses its
    /// API and ingress listen on, kept published until it stops.
    pub async fn join_cluster(
        &self,
        api: std::net::SocketAddr,
        ingress: std::net::SocketAddr,
    ) -> Result<(), RuntimeError> {
        let (Some(membership), Some(cluster)) =
            (&self.inner.membership, &self.inner.config.cluster)
        else {
            return Ok(());
        };
        let advertised = |addr: std::net::SocketAddr| {
            std::net::SocketAddr::new(cluster.advertise_addr, addr.port())
        };
        let (api, ingress) = (advertised(api), advertised(ingress));
        let node = self.inner.node.clone();
        let (name, joined) = (cluster.node_name.clone(), SystemTime::now());
        let runtime = Arc::downgrade(&self.inner);
        let snapshot: NodeSnapshot = Arc::new(move || {
            let now = node.snapshot();
            let warm = runtime
                .upgrade()
                .map(|inner| {
                    inner
                        .containers
                        .all()
                        .iter()
                        .filter_map(|s| {
                            let count = u32::try_from(s.instance_count()).ok()?;
                            (count > 0).then_some((s.id, count))
                        })
                        .collect()
                })
                .unwrap_or_default();
            NodeRecord {
                name: name.clone(),
                server_id: now.id,
                api,
                ingress,
                capacity: (&now.capacity).into(),
                allocated: (&now.allocated).into(),
                joined,
                warm,
            }
        });
        membership.join(snapshot).await
    }
}

/// The store `config` names, and the cluster membership that comes with it: sled
/// in the data dir, or the cluster's etcd.
pub(super) async fn open_store(
    config: &RuntimeConfig,
) -> Result<(Store, Option<ClusterLink>), RuntimeError> {
    match &config.cluster {
        None => {
            let state_dir = config.data_dir.join("state");
            let store = tokio::task::spawn_blocking(move || SledStore::open(&state_dir))
                .await
                .map_err(RuntimeError::task("opening the store"))??;
            Ok((Arc::new(store), None))
        }
        Some(cluster) => open_cluster_store(cluster).await,
    }
}

#[cfg(feature = "cluster")]
async fn open_cluster_store(
    cluster: &crate::cluster::ClusterConfig,
) -> Result<(Store, Option<ClusterLink>), RuntimeError> {
    let store = crate::store::EtcdStore::open(crate::store::EtcdConfig {
        endpoints: cluster.endpoints.clone(),
        prefix: crate::store::EtcdConfig::DEFAULT_PREFIX.into(),
        node_name: cluster.node_name.clone(),
    })
    .await?;
    let link = ClusterLink {
        membership: store.membership(),
        changes: store.container_changes(),
    };
    Ok((Arc::new(store), Some(link)))
}

#[cfg(not(feature = "cluster"))]
async fn open_cluster_store(
    _: &crate::cluster::ClusterConfig,
) -> Result<(Store, Option<ClusterLink>), RuntimeError> {
    Err(RuntimeError::Unprocessable(
        "this ember was built without cluster mode: build it with `cargo build --release --features cluster` (which needs protoc, Debian's protobuf-compiler)".into(),
    ))
}
