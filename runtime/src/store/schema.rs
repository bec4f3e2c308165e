//! The on-disk schema's version, and bringing an older one up to date.
//!
//! - 1: records only.
//! - 2: the `index` tree (see [`super::index`]), built from the records when a
//!   store of version 1 is opened.

use super::StoreError;
use super::{Trees, decode, encode, index};
use crate::error::RuntimeError;
use crate::model::{Container, Token};
use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;

/// The on-disk schema this build writes and reads.
pub const SCHEMA_VERSION: u32 = 2;

pub(super) const SCHEMA_KEY: &[u8] = b"schema_version";
pub(super) const SERVER_ID_KEY: &[u8] = b"server_id";
pub(super) const ADMIN_USER_KEY: &[u8] = b"admin_user_id";
/// The number of the next user-namespace id range to give a container.
pub(super) const NEXT_ID_RANGE_KEY: &[u8] = b"next_id_range";

/// Refuses a newer schema and brings an older one to [`SCHEMA_VERSION`].
pub(super) fn bring_up_to_date(t: &Trees) -> Result<(), RuntimeError> {
    let found = match t.meta.get(SCHEMA_KEY)? {
        None if t.containers.is_empty() && t.tokens.is_empty() => SCHEMA_VERSION,
        // Records without a version were written by the first schema.
        None => 1,
        Some(raw) => u32::from_be_bytes(
            raw.as_ref()
                .try_into()
                .map_err(|_| StoreError::broken("the schema version record is corrupt"))?,
        ),
    };
    if found > SCHEMA_VERSION {
        return Err(RuntimeError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 2 {
        build_index(t)?;
    }
    t.meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
    t.db.flush()?;
    Ok(())
}

/// Builds the index from the records. A crash half-way leaves the version as it
/// was, so the next start builds it again from nothing.
fn build_index(t: &Trees) -> Result<(), RuntimeError> {
    tracing::info!("building the state store's indexes (schema 1 to 2)");
    t.index.clear()?;
    let mut counters: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for value in t.containers.iter().values() {
        let container: Container = decode(&value?)?;
        for (key, value) in index::container_entries(&container) {
            t.index.insert(key, value)?;
        }
        for counter in index::container_counters(&container) {
            *counters.entry(counter).or_default() += 1;
        }
    }
    for entry in t.tokens.iter() {
        let (hash, value) = entry?;
        let token: Token = decode(&value)?;
        for (key, value) in index::token_entries(&token, &hash) {
            t.index.insert(key, value)?;
        }
        *counters.entry(index::token_counter()).or_default() += 1;
    }
    for (counter, count) in counters {
        t.index.insert(counter, &count.to_be_bytes())?;
    }
    Ok(())
}

/// The id stored under `key`, made with `generate` the first time.
pub(super) fn id_in_meta<T: Serialize + DeserializeOwned>(
    t: &Trees,
    key: &[u8],
    generate: fn() -> T,
) -> Result<T, RuntimeError> {
    if let Some(raw) = t.meta.get(key)? {
        return decode(&raw);
    }
    let fresh = generate();
    t.meta.insert(key, encode(&fresh)?)?;
    Ok(fresh)
}
