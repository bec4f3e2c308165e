//! The containers other nodes change, as a stream: `containers/` followed (see
//! `follow.rs`).

use super::follow::{Seen, follow};
use super::{EtcdStore, Tree};
use crate::cluster::ContainerChange;
use crate::model::{Container, ContainerId};
use etcd_client::Client;
use std::collections::HashSet;
use tokio::sync::mpsc::UnboundedSender;

impl EtcdStore {
    /// Every change to a container from now on (the node's own included), until
    /// the receiver is dropped. After a break in the watch every container is
    /// sent again as it is, and those gone meanwhile as removed.
    pub fn container_changes(&self) -> tokio::sync::mpsc::UnboundedReceiver<ContainerChange> {
        let (changes, receiver) = tokio::sync::mpsc::unbounded_channel();
        let prefix = self.inner.keys.tree(Tree::Containers);
        self.io
            .handle()
            .spawn(watch_containers(self.client(), prefix, changes));
        receiver
    }
}

fn id_of(prefix: &[u8], key: &[u8]) -> Option<ContainerId> {
    Some(ContainerId::from_bytes(
        key.get(prefix.len()..)?.try_into().ok()?,
    ))
}

/// Sends each change under `prefix` to `changes`: nothing for the first read
/// (the node loaded the containers itself), every container again after a break
/// and those gone meanwhile as removed.
async fn watch_containers(
    client: Client,
    prefix: Vec<u8>,
    changes: UnboundedSender<ContainerChange>,
) {
    let mut known: Option<HashSet<ContainerId>> = None;
    follow(client, prefix.clone(), |seen| {
        match seen {
            Seen::All(kvs) => {
                let now: HashSet<ContainerId> = kvs
                    .iter()
                    .filter_map(|kv| id_of(&prefix, kv.key()))
                    .collect();
                if let Some(before) = known.take() {
                    for container in kvs
                        .iter()
                        .filter_map(|kv| serde_json::from_slice::<Container>(kv.value()).ok())
                    {
                        let _ = changes.send(ContainerChange::Stored(Box::new(container)));
                    }
                    for gone in before.difference(&now) {
                        let _ = changes.send(ContainerChange::Removed(*gone));
                    }
                }
                known = Some(now);
            }
            Seen::Put(kv) => {
                let (Some(id), Ok(container)) = (
                    id_of(&prefix, kv.key()),
                    serde_json::from_slice::<Container>(kv.value()),
                ) else {
                    return !changes.is_closed();
                };
                known.get_or_insert_with(HashSet::new).insert(id);
                let _ = changes.send(ContainerChange::Stored(Box::new(container)));
            }
            Seen::Removed(kv) => {
                let Some(id) = id_of(&prefix, kv.key()) else {
                    return !changes.is_closed();
                };
                if let Some(known) = &mut known {
                    known.remove(&id);
                }
                let _ = changes.send(ContainerChange::Removed(id));
            }
        }
        !changes.is_closed()
    })
    .await;
}
