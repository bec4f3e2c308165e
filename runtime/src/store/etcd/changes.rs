//! The containers other nodes change, as a stream: a watch on `containers/`
//! from the revision the node read them at, read again whole when the watch
//! breaks (etcd restarted, or compacted past it).

use super::{EtcdStore, Tree, prefix_end};
use crate::cluster::ContainerChange;
use crate::model::{Container, ContainerId};
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// The wait before a broken watch is set up again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

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

async fn watch_containers(
    mut client: Client,
    prefix: Vec<u8>,
    changes: UnboundedSender<ContainerChange>,
) {
    let mut known: Option<std::collections::HashSet<ContainerId>> = None;
    let mut start = None;
    loop {
        if changes.is_closed() {
            return;
        }
        // The first time, from now on; after a break, everything again.
        let revision = match start {
            Some(revision) => revision,
            None => {
                let listed = client
                    .get(
                        prefix.clone(),
                        Some(GetOptions::new().with_range(prefix_end(&prefix))),
                    )
                    .await;
                let Ok(listed) = listed else {
                    tokio::time::sleep(RETRY_AFTER).await;
                    continue;
                };
                let now: std::collections::HashSet<ContainerId> = listed
                    .kvs()
                    .iter()
                    .filter_map(|kv| id_of(&prefix, kv.key()))
                    .collect();
                if let Some(before) = known.take() {
                    for container in listed
                        .kvs()
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
                listed.header().map_or(0, |h| h.revision()) + 1
            }
        };
        let options = WatchOptions::new()
            .with_range(prefix_end(&prefix))
            .with_start_revision(revision);
        let Ok(mut stream) = client.watch(prefix.clone(), Some(options)).await else {
            start = None;
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        };
        start = None;
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled() {
                break;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(id) = id_of(&prefix, kv.key()) else {
                    continue;
                };
                let change = match event.event_type() {
                    EventType::Put => match serde_json::from_slice::<Container>(kv.value()) {
                        Ok(container) => {
                            known.get_or_insert_with(Default::default).insert(id);
                            ContainerChange::Stored(Box::new(container))
                        }
                        Err(_) => continue,
                    },
                    EventType::Delete => {
                        if let Some(known) = &mut known {
                            known.remove(&id);
                        }
                        ContainerChange::Removed(id)
                    }
                };
                if changes.send(change).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}
