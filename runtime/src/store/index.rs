//! The store's indexes: keys kept in order so that a list reads only the rows it
//! returns, and counters so that its total costs one read.
//!
//! Every key lives in one tree (`index`), its first byte saying which index it
//! belongs to. A *scope* is whose containers an index covers: each container is
//! indexed under its owner and under [`ALL`] (what an admin sees).
//!
//! | index | key | value |
//! |---|---|---|
//! | by age | `O` scope created id | — |
//! | by status and age | `S` scope status created id | — |
//! | by name | `N` scope name | id |
//! | by number | `#` number id | — |
//! | tokens by age | `T` created token-id | secret hash |
//! | tokens by id | `t` token-id | secret hash |
//! | counters | `C` what | count (u64, big-endian) |
//!
//! `created` is nanoseconds since the Unix epoch, big-endian, so keys sort by age;
//! ids break ties. Index entries are written in the same transaction as the record
//! they point to.

use crate::model::{Container, ContainerId, ContainerStatus, Token, UserId};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The scope every container is indexed under: all of them, as an admin sees.
pub(super) const ALL: [u8; 16] = [0; 16];

const BY_AGE: u8 = b'O';
const BY_STATUS: u8 = b'S';
pub(super) const BY_NAME: u8 = b'N';
const BY_NUMBER: u8 = b'#';
const TOKENS_BY_AGE: u8 = b'T';
const TOKENS_BY_ID: u8 = b't';
const COUNTER: u8 = b'C';
/// In a container counter's key, in place of a status: every status.
const ANY_STATUS: u8 = 0xff;
const TOKEN_COUNTER: &[u8] = b"Ctokens";

/// The scope of an owner's containers.
pub(super) fn scope_of(owner: Option<UserId>) -> [u8; 16] {
    owner.map_or(ALL, |user| *user.as_bytes())
}

fn status_byte(status: ContainerStatus) -> u8 {
    match status {
        ContainerStatus::Deploying => 0,
        ContainerStatus::Deployed => 1,
        ContainerStatus::Failed => 2,
    }
}

/// Nanoseconds since the Unix epoch, big-endian (0 before it, which no record is).
fn time_key(at: SystemTime) -> [u8; 8] {
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    nanos.to_be_bytes()
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Where a list of containers of `scope` starts: the prefix every key of the list has.
pub(super) fn by_age_prefix(scope: &[u8; 16]) -> Vec<u8> {
    key(&[&[BY_AGE], scope])
}

/// The prefix of the containers of `scope` in `status`.
pub(super) fn by_status_prefix(scope: &[u8; 16], status: ContainerStatus) -> Vec<u8> {
    key(&[&[BY_STATUS], scope, &[status_byte(status)]])
}

/// The prefix of the containers of `scope` whose name starts with `name_prefix`.
pub(super) fn by_name_prefix(scope: &[u8; 16], name_prefix: &str) -> Vec<u8> {
    key(&[&[BY_NAME], scope, name_prefix.as_bytes()])
}

/// The prefix of the containers whose integer id is `number`.
pub(super) fn by_number_prefix(number: u64) -> Vec<u8> {
    key(&[&[BY_NUMBER], &number.to_be_bytes()])
}

/// The prefix of every token, oldest first.
pub(super) fn tokens_by_age_prefix() -> Vec<u8> {
    vec![TOKENS_BY_AGE]
}

/// The key of a token by its id.
pub(super) fn token_by_id(id: &crate::model::TokenId) -> Vec<u8> {
    key(&[&[TOKENS_BY_ID], id.as_bytes()])
}

/// The id an entry of a container index points to: the key's last 16 bytes, or
/// for the name index its value.
pub(super) fn container_id_of(key: &[u8], value: &[u8]) -> Option<ContainerId> {
    let raw = if key.first() == Some(&BY_NAME) {
        value
    } else {
        key.get(key.len().checked_sub(16)?..)?
    };
    Some(ContainerId::from_bytes(raw.try_into().ok()?))
}

/// The counter of the containers of `scope`, in `status` or in any.
pub(super) fn container_counter(scope: &[u8; 16], status: Option<ContainerStatus>) -> Vec<u8> {
    key(&[
        &[COUNTER, b'c'],
        scope,
        &[status.map_or(ANY_STATUS, status_byte)],
    ])
}

/// The counter of tokens.
pub(super) fn token_counter() -> Vec<u8> {
    TOKEN_COUNTER.to_vec()
}

/// A counter's value as stored.
pub(super) fn decode_count(raw: Option<&[u8]>) -> u64 {
    raw.and_then(|r| r.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// The index entries of one container.
pub(super) fn container_entries(container: &Container) -> Vec<(Vec<u8>, Vec<u8>)> {
    let id = container.id.as_bytes();
    let created = time_key(container.date_created);
    let status = [status_byte(container.status)];
    let name = container.spec.name.as_str().as_bytes();
    let mut entries = Vec::with_capacity(7);
    for scope in [ALL, *container.created_by.as_bytes()] {
        entries.push((key(&[&[BY_AGE], &scope, &created, id]), Vec::new()));
        entries.push((
            key(&[&[BY_STATUS], &scope, &status, &created, id]),
            Vec::new(),
        ));
        entries.push((key(&[&[BY_NAME], &scope, name]), id.to_vec()));
    }
    entries.push((
        key(&[&[BY_NUMBER], &container.id.number().to_be_bytes(), id]),
        Vec::new(),
    ));
    entries
}

/// The counters one container counts toward.
pub(super) fn container_counters(container: &Container) -> Vec<Vec<u8>> {
    [ALL, *container.created_by.as_bytes()]
        .iter()
        .flat_map(|scope| {
            [
                container_counter(scope, None),
                container_counter(scope, Some(container.status)),
            ]
        })
        .collect()
}

/// The index entries of one token, stored under `hash`.
pub(super) fn token_entries(token: &Token, hash: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let created = time_key(token.created.unwrap_or(UNIX_EPOCH));
    let id = token.id.as_bytes();
    vec![
        (key(&[&[TOKENS_BY_AGE], &created, id]), hash.to_vec()),
        (token_by_id(&token.id), hash.to_vec()),
    ]
}

/// What changes in the index when a container goes from `old` to `new` (either
/// absent for an insert or a removal): entries to remove, entries to write, and how
/// each counter moves.
#[derive(Debug, Default, PartialEq)]
pub(super) struct IndexChange {
    pub(super) remove: Vec<Vec<u8>>,
    pub(super) insert: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) counts: BTreeMap<Vec<u8>, i64>,
}

impl IndexChange {
    pub(super) fn containers(old: Option<&Container>, new: Option<&Container>) -> Self {
        let before = old.map(container_entries).unwrap_or_default();
        let after = new.map(container_entries).unwrap_or_default();
        let mut change = Self {
            remove: before
                .iter()
                .filter(|(k, _)| !after.iter().any(|(a, _)| a == k))
                .map(|(k, _)| k.clone())
                .collect(),
            insert: after
                .into_iter()
                .filter(|entry| !before.contains(entry))
                .collect(),
            counts: BTreeMap::new(),
        };
        for counter in old.map(container_counters).unwrap_or_default() {
            *change.counts.entry(counter).or_default() -= 1;
        }
        for counter in new.map(container_counters).unwrap_or_default() {
            *change.counts.entry(counter).or_default() += 1;
        }
        change.counts.retain(|_, delta| *delta != 0);
        change
    }
}

/// A counter moved by `delta` (never below zero).
pub(super) fn moved(count: u64, delta: i64) -> [u8; 8] {
    count.saturating_add_signed(delta).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ContainerPatch;

    fn container(name: &str, owner: UserId) -> Container {
        let spec = ContainerPatch {
            name: Some(name.parse().unwrap()),
            image: Some("a/b:1".into()),
            ..Default::default()
        }
        .into_new_spec()
        .unwrap();
        Container::new(spec, owner, SystemTime::now())
    }

    #[test]
    fn a_status_change_moves_only_the_status_entries_and_counters() {
        let owner = UserId::generate();
        let old = container("app", owner);
        let mut new = old.clone();
        new.status = ContainerStatus::Deployed;
        let change = IndexChange::containers(Some(&old), Some(&new));
        assert_eq!(change.remove.len(), 2);
        assert_eq!(change.insert.len(), 2);
        assert!(change.remove.iter().all(|k| k[0] == BY_STATUS));
        let moved: Vec<_> = change.counts.values().copied().collect();
        assert_eq!(moved.iter().sum::<i64>(), 0);
        assert_eq!(change.counts.len(), 4, "two scopes, two statuses each");
        assert!(IndexChange::containers(Some(&new), Some(&new)) == IndexChange::default());
    }

    #[test]
    fn entries_point_back_to_their_container_and_sort_by_age() {
        let owner = UserId::generate();
        let first = container("first", owner);
        let mut second = container("second", owner);
        second.date_created = first.date_created + std::time::Duration::from_nanos(1);
        for (k, v) in container_entries(&first) {
            assert_eq!(container_id_of(&k, &v), Some(first.id));
        }
        let age = |c: &Container| {
            container_entries(c)
                .into_iter()
                .find(|(k, _)| k.starts_with(&by_age_prefix(&scope_of(Some(owner)))))
                .unwrap()
                .0
        };
        assert!(age(&first) < age(&second));
        let inserted = IndexChange::containers(None, Some(&first));
        assert_eq!(inserted.insert.len(), 7);
        assert!(inserted.counts.values().all(|d| *d == 1));
    }
}
