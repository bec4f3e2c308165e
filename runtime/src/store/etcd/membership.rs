//! Membership on etcd: each node's record at `nodes/<name>` under a lease of its
//! own, renewed every second; a node that stops renewing (killed, cut off) loses
//! its record when the lease lapses, and every node sees it go on its watch.

use super::follow::{Seen, follow};
use super::{EtcdStore, Tree};
use crate::cluster::{Membership, NodeRecord, NodeSnapshot};
use crate::error::RuntimeError;
use etcd_client::{Client, PutOptions};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Seconds a node's registration outlives its last renewal.
pub const LEASE_TTL_SECONDS: i64 = 3;
/// How often a member renews its lease and republishes a changed record.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// The wait before a lost lease is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The cluster's members as seen through etcd.
pub struct EtcdMembership {
    store: EtcdStore,
    members: Arc<RwLock<BTreeMap<String, NodeRecord>>>,
    /// The lease this node's record is under, while it is a member.
    lease: Arc<Mutex<Option<i64>>>,
    /// Ends the renewals (and, on drop, the watch).
    renewals: Mutex<Option<CancellationToken>>,
    watch: CancellationToken,
}

impl EtcdStore {
    /// The membership of this store's cluster: it watches the members from now on.
    pub fn membership(&self) -> Arc<EtcdMembership> {
        let membership = Arc::new(EtcdMembership {
            store: self.clone(),
            members: Arc::default(),
            lease: Arc::default(),
            renewals: Mutex::new(None),
            watch: CancellationToken::new(),
        });
        let watch = watch_members(
            self.client(),
            self.inner.keys.tree(Tree::Nodes),
            membership.members.clone(),
        );
        let stop = membership.watch.clone();
        self.io.handle().spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = watch => {}
            }
        });
        membership
    }
}

impl Drop for EtcdMembership {
    fn drop(&mut self) {
        self.watch.cancel();
        if let Some(renewals) = self.renewals.lock().take() {
            renewals.cancel();
        }
    }
}

/// Keeps `members` equal to the records under `prefix` (see `follow.rs`).
async fn watch_members(
    client: Client,
    prefix: Vec<u8>,
    members: Arc<RwLock<BTreeMap<String, NodeRecord>>>,
) {
    let name_of = |key: &[u8]| String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
    follow(client, prefix.clone(), |seen| {
        match seen {
            Seen::All(kvs) => {
                *members.write() = kvs
                    .iter()
                    .filter_map(|kv| {
                        Some((name_of(kv.key()), serde_json::from_slice(kv.value()).ok()?))
                    })
                    .collect();
            }
            Seen::Put(kv) => {
                if let Ok(record) = serde_json::from_slice(kv.value()) {
                    members.write().insert(name_of(kv.key()), record);
                }
            }
            Seen::Removed(kv) => {
                members.write().remove(&name_of(kv.key()));
            }
        }
        true
    })
    .await;
}

/// Publishes `record` at `key` under a new lease; the lease.
async fn publish(
    client: &mut Client,
    key: &[u8],
    record: &NodeRecord,
) -> Result<i64, RuntimeError> {
    let lease = client.lease_grant(LEASE_TTL_SECONDS, None).await?.id();
    let value = crate::store::encode(record)?;
    client
        .put(
            key.to_vec(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    Ok(lease)
}

/// Renews `lease` every second and republishes the record when it changed; a
/// lapsed lease (etcd was out of reach longer than its TTL) is replaced by a new
/// registration, so a node cut off for a while comes back by itself.
async fn renew(
    mut client: Client,
    key: Vec<u8>,
    snapshot: NodeSnapshot,
    mut published: NodeRecord,
    lease: Arc<Mutex<Option<i64>>>,
) {
    loop {
        let current = *lease.lock();
        let renewed = match current {
            Some(id) => keep_alive_once(&mut client, id).await,
            None => false,
        };
        if !renewed {
            let record = snapshot();
            match publish(&mut client, &key, &record).await {
                Ok(id) => {
                    *lease.lock() = Some(id);
                    published = record;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing this node's cluster membership failed; trying again");
                    *lease.lock() = None;
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                }
            }
        } else {
            let record = snapshot();
            if record != published
                && let Some(id) = current
            {
                let put = match crate::store::encode(&record) {
                    Ok(value) => client
                        .put(key.clone(), value, Some(PutOptions::new().with_lease(id)))
                        .await
                        .is_ok(),
                    Err(_) => false,
                };
                if put {
                    published = record;
                }
            }
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// One renewal of `lease`: whether it still holds.
async fn keep_alive_once(client: &mut Client, lease: i64) -> bool {
    let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await else {
        return false;
    };
    if keeper.keep_alive().await.is_err() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.message()).await,
        Ok(Ok(Some(response))) if response.ttl() > 0
    )
}

#[async_trait::async_trait]
impl Membership for EtcdMembership {
    async fn join(&self, snapshot: NodeSnapshot) -> Result<(), RuntimeError> {
        let record = snapshot();
        let key = self
            .store
            .inner
            .keys
            .of(Tree::Nodes, self.store.node_name().as_bytes());
        let mut client = self.store.client();
        let (first, published) = {
            let key = key.clone();
            let record = record.clone();
            self.store
                .call(move |_| async move {
                    let lease = publish(&mut client, &key, &record).await?;
                    Ok((lease, record))
                })
                .await?
        };
        *self.lease.lock() = Some(first);
        self.members
            .write()
            .insert(published.name.clone(), published.clone());
        let stop = CancellationToken::new();
        if let Some(old) = self.renewals.lock().replace(stop.clone()) {
            old.cancel();
        }
        let renewals = renew(
            self.store.client(),
            key,
            snapshot,
            published,
            self.lease.clone(),
        );
        self.store.io.handle().spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = renewals => {}
            }
        });
        Ok(())
    }

    fn visit_members(&self, visit: &mut dyn FnMut(&NodeRecord)) {
        self.members.read().values().for_each(visit);
    }

    async fn leave(&self) {
        if let Some(renewals) = self.renewals.lock().take() {
            renewals.cancel();
        }
        let Some(lease) = self.lease.lock().take() else {
            return;
        };
        let mut client = self.store.client();
        let revoked = self
            .store
            .call(move |_| async move { Ok(client.lease_revoke(lease).await?) })
            .await;
        if let Err(e) = revoked {
            tracing::warn!(error = %e, "leaving the cluster: the lease will lapse instead");
        }
    }
}
