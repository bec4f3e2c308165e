//! Following the keys under a prefix: a full read, then every change from the
//! revision after it; when the watch breaks (etcd restarted, or compacted past
//! it) the prefix is read again whole and the watch set up anew.

use super::prefix_end;
use etcd_client::{Client, EventType, GetOptions, KeyValue, WatchOptions};
use std::time::Duration;

/// The wait before a failed read or a broken watch is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What a follower is told.
pub(super) enum Seen<'a> {
    /// Every key and value under the prefix, as of one revision.
    All(&'a [KeyValue]),
    /// A key written since.
    Put(&'a KeyValue),
    /// A key removed since.
    Removed(&'a KeyValue),
}

/// Tells `seen` about the keys under `prefix` for as long as it answers `true`.
pub(super) async fn follow(
    mut client: Client,
    prefix: Vec<u8>,
    mut seen: impl FnMut(Seen<'_>) -> bool,
) {
    let end = prefix_end(&prefix);
    loop {
        let listed = client
            .get(
                prefix.clone(),
                Some(GetOptions::new().with_range(end.clone())),
            )
            .await;
        let Ok(listed) = listed else {
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        };
        if !seen(Seen::All(listed.kvs())) {
            return;
        }
        let revision = listed.header().map_or(0, |h| h.revision());
        let options = WatchOptions::new()
            .with_range(end.clone())
            .with_start_revision(revision + 1);
        let Ok(mut stream) = client.watch(prefix.clone(), Some(options)).await else {
            tokio::time::sleep(RETRY_AFTER).await;
            continue;
        };
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled() {
                break;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let going_on = match event.event_type() {
                    EventType::Put => seen(Seen::Put(kv)),
                    EventType::Delete => seen(Seen::Removed(kv)),
                };
                if !going_on {
                    return;
                }
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}
