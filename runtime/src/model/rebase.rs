//! An edit of a container record made again on a record another writer changed
//! meanwhile (another node of a cluster, between this node's read and its
//! write): the edit's changes, field by field, on the newer record, so neither
//! writer's change is lost.
//!
//! Counts are merged by their difference (two nodes pinning one instance each
//! make two), lists of instances and maps by entry; a plain field the edit
//! changed takes the edit's value.

use super::{Container, StoppedInstance};
use std::collections::BTreeMap;
use std::hash::Hash;

impl Container {
    /// The edit that turned `before` into `after`, made on `current` instead.
    pub fn rebase(before: &Container, after: &Container, mut current: Container) -> Container {
        // Destructured so that a field added to `Container` does not compile
        // until it is merged here too.
        let Container {
            id: _,
            spec,
            created_by,
            date_created,
            date_updated,
            status,
            status_reason,
            latest_revision,
            serving_revision,
            traffic_revision,
            traffic_changes,
            pinned_instances,
            pinned_on,
            moves,
            moved_from,
            stopped_instances,
        } = after;
        take_if_changed(&mut current.spec, &before.spec, spec);
        take_if_changed(&mut current.created_by, &before.created_by, created_by);
        take_if_changed(
            &mut current.date_created,
            &before.date_created,
            date_created,
        );
        take_if_changed(
            &mut current.date_updated,
            &before.date_updated,
            date_updated,
        );
        take_if_changed(&mut current.status, &before.status, status);
        take_if_changed(
            &mut current.status_reason,
            &before.status_reason,
            status_reason,
        );
        take_if_changed(
            &mut current.latest_revision,
            &before.latest_revision,
            latest_revision,
        );
        take_if_changed(
            &mut current.serving_revision,
            &before.serving_revision,
            serving_revision,
        );
        take_if_changed(
            &mut current.traffic_revision,
            &before.traffic_revision,
            traffic_revision,
        );
        current.traffic_changes = current.traffic_changes.max(*traffic_changes);
        current.pinned_instances = add_difference(
            current.pinned_instances,
            before.pinned_instances,
            *pinned_instances,
        );
        let servers: std::collections::BTreeSet<_> =
            before.pinned_on.keys().chain(pinned_on.keys()).collect();
        for server in servers {
            let was = before.pinned_on.get(server).copied().unwrap_or(0);
            let is = pinned_on.get(server).copied().unwrap_or(0);
            let now = current.pinned_on.get(server).copied().unwrap_or(0);
            match add_difference(now, was, is) {
                0 => current.pinned_on.remove(server),
                count => current.pinned_on.insert(*server, count),
            };
        }
        merge_map(&mut current.moved_from, &before.moved_from, moved_from);
        merge_list(&mut current.moves, &before.moves, moves, |m| m.instance.id);
        merge_list(
            &mut current.stopped_instances,
            &before.stopped_instances,
            stopped_instances,
            |s: &StoppedInstance| s.id,
        );
        current
    }
}

fn take_if_changed<T: PartialEq + Clone>(current: &mut T, before: &T, after: &T) {
    if after != before {
        *current = after.clone();
    }
}

/// `current` moved by as much as the edit moved `before` to `after`.
fn add_difference(current: u32, before: u32, after: u32) -> u32 {
    if after >= before {
        current.saturating_add(after - before)
    } else {
        current.saturating_sub(before - after)
    }
}

/// The entries the edit added, changed or removed, done on `current`.
fn merge_map<K: Ord + Clone, V: PartialEq + Clone>(
    current: &mut BTreeMap<K, V>,
    before: &BTreeMap<K, V>,
    after: &BTreeMap<K, V>,
) {
    for key in before.keys().filter(|k| !after.contains_key(k)) {
        current.remove(key);
    }
    for (key, value) in after {
        if before.get(key) != Some(value) {
            current.insert(key.clone(), value.clone());
        }
    }
}

/// The items (known by `key`) the edit added, changed or removed, done on
/// `current`; the items it added go at the end.
fn merge_list<T: PartialEq + Clone, K: Eq + Hash>(
    current: &mut Vec<T>,
    before: &[T],
    after: &[T],
    key: impl Fn(&T) -> K,
) {
    let before_by_key: std::collections::HashMap<K, &T> =
        before.iter().map(|item| (key(item), item)).collect();
    let after_keys: std::collections::HashSet<K> = after.iter().map(&key).collect();
    // Those the edit removed go; the rest stay (others may have added some).
    current.retain(|item| {
        let k = key(item);
        !before_by_key.contains_key(&k) || after_keys.contains(&k)
    });
    for item in after {
        let k = key(item);
        if before_by_key.get(&k) == Some(&item) {
            continue;
        }
        match current.iter_mut().find(|c| key(c) == k) {
            Some(existing) => *existing = item.clone(),
            None => current.push(item.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerPatch, ContainerStatus, InstanceId, ServerId, UserId};
    use std::time::SystemTime;

    fn container() -> Container {
        let spec = ContainerPatch {
            name: Some("web".parse().unwrap()),
            image: Some("registry.local/web:1".into()),
            ..Default::default()
        }
        .into_new_spec()
        .unwrap();
        Container::new(spec, UserId::generate(), SystemTime::UNIX_EPOCH)
    }

    fn stopped(ordinal: u32) -> StoppedInstance {
        StoppedInstance {
            id: InstanceId::generate(),
            ordinal,
            created: SystemTime::UNIX_EPOCH,
            revision: 1,
        }
    }

    #[test]
    fn two_nodes_pinning_at_once_keep_both_pins() {
        let before = container();
        let (a, b) = (ServerId::generate(), ServerId::generate());
        let mut mine = before.clone();
        mine.pin(a, 1);
        let mut theirs = before.clone();
        theirs.pin(b, 2);
        let merged = Container::rebase(&before, &mine, theirs);
        assert_eq!(merged.pinned_instances, 3);
        assert_eq!(merged.pinned_on.get(&a), Some(&1));
        assert_eq!(merged.pinned_on.get(&b), Some(&2));
    }

    #[test]
    fn a_pin_on_a_server_both_records_had_counts_once() {
        let server = ServerId::generate();
        let mut before = container();
        before.pin(server, 2);
        let mut mine = before.clone();
        mine.pin(server, 1);
        let mut theirs = before.clone();
        theirs.pin(server, 1);
        let merged = Container::rebase(&before, &mine, theirs);
        assert_eq!(merged.pinned_instances, 4);
        assert_eq!(merged.pinned_on.get(&server), Some(&4));
    }

    #[test]
    fn an_unpin_on_a_record_pinned_again_elsewhere_takes_one_away() {
        let server = ServerId::generate();
        let mut before = container();
        before.pin(server, 1);
        let mut mine = before.clone();
        mine.unpin_one(server);
        let mut theirs = before.clone();
        theirs.pin(server, 1);
        let merged = Container::rebase(&before, &mine, theirs);
        assert_eq!(merged.pinned_instances, 1);
        assert_eq!(merged.pinned_on.get(&server), Some(&1));
    }

    #[test]
    fn a_status_change_and_a_stop_elsewhere_both_stay() {
        let before = container();
        let mut mine = before.clone();
        mine.status = ContainerStatus::Deployed;
        mine.serving_revision = Some(1);
        let mut theirs = before.clone();
        let gone = stopped(0);
        theirs.stopped_instances.push(gone);
        let merged = Container::rebase(&before, &mine, theirs);
        assert_eq!(merged.status, ContainerStatus::Deployed);
        assert_eq!(merged.serving_revision, Some(1));
        assert_eq!(merged.stopped_instances, vec![gone]);
    }

    #[test]
    fn instances_started_again_here_leave_the_list_others_added_to() {
        let (kept, started) = (stopped(0), stopped(1));
        let mut before = container();
        before.stopped_instances = vec![kept, started];
        let mut mine = before.clone();
        mine.stopped_instances.retain(|s| s.id != started.id);
        let mut theirs = before.clone();
        let added = stopped(2);
        theirs.stopped_instances.push(added);
        let merged = Container::rebase(&before, &mine, theirs);
        assert_eq!(merged.stopped_instances, vec![kept, added]);
    }

    #[test]
    fn a_field_the_edit_left_alone_keeps_the_newer_value() {
        let before = container();
        let mine = before.clone();
        let mut theirs = before.clone();
        theirs.status_reason = Some("pulling".into());
        let merged = Container::rebase(&before, &mine, theirs.clone());
        assert_eq!(merged, theirs);
    }
}
