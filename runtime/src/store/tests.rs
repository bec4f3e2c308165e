//! Sled's own tests (schema upgrades, reopening after a failed flush), and the
//! conformance suite every store passes, run on sled.

use super::conformance::{StorePlace, container, names, query, store_conformance_suite};
use super::*;
use crate::model::{Token, UserName};
use std::sync::Arc;

/// Sled in a temporary directory.
struct SledPlace(tempfile::TempDir);

#[async_trait::async_trait]
impl StorePlace for SledPlace {
    async fn open(&self) -> Store {
        Arc::new(SledStore::open(self.0.path()).unwrap())
    }
}

store_conformance_suite!(SledPlace(tempfile::tempdir().unwrap()));

fn open(dir: &tempfile::TempDir) -> SledStore {
    SledStore::open(dir.path()).unwrap()
}

#[tokio::test]
async fn state_survives_reopening_and_newer_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (c, rev) = container("kept", UserId::generate());
    let server = {
        let store = open(&dir);
        store.insert_container(c.clone(), rev).await.unwrap();
        store.server_id()
    };
    {
        let store = open(&dir);
        let found = store.container(c.id).await.unwrap().unwrap();
        assert_eq!(found.spec.name, c.spec.name);
        assert_eq!(store.revision(c.id, 1).await.unwrap().unwrap().number, 1);
        assert_eq!(store.server_id(), server);
        store
            .slot
            .trees()
            .meta
            .insert(schema::SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
            .unwrap();
        store.slot.trees().db.flush().unwrap();
    }
    assert!(matches!(
        SledStore::open(dir.path()),
        Err(RuntimeError::SchemaTooNew { .. })
    ));
}

#[test]
fn tokens_stored_by_schema_1_hold_the_default_grants() {
    let raw = br#"{"id":"6d1c3f0a-6a3c-4b8e-9d55-2b0c4f5e7a10","userId":"5cf37266-3473-4006-984f-9325122678b7","role":"ADMIN"}"#;
    let token: Token = decode(raw).unwrap();
    assert_eq!(token.user, UserName::admin());
    // Every grant of their time; `metrics` came later, and their role (ADMIN)
    // reads every series anyway.
    assert_eq!(token.scopes, crate::model::default_scopes());
    assert_eq!(token.capabilities, crate::model::Capabilities::all());
    assert!(!token.bootstrap && token.created.is_none());
}

#[tokio::test]
async fn a_store_of_schema_1_gets_its_indexes_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let owner = UserId::generate();
    let (c, r) = container("old", owner);
    {
        let store = open(&dir);
        store.insert_container(c.clone(), r).await.unwrap();
        // What the first schema had: records, no index, version 1.
        store.slot.trees().index.clear().unwrap();
        store
            .slot
            .trees()
            .meta
            .insert(schema::SCHEMA_KEY, &1u32.to_be_bytes())
            .unwrap();
        store.slot.trees().db.flush().unwrap();
    }
    let store = open(&dir);
    let listed = store.list_containers(query(Some(owner), 10)).await.unwrap();
    assert_eq!((listed.total, names(&listed)), (1, vec!["old".to_string()]));
}

/// After a failed flush the store reopens the database: sled keeps failing every
/// write with its first I/O error until then. Reopening keeps everything durable,
/// and the store goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_reopening_the_store_keeps_what_was_durable_and_takes_writes_again() {
    use super::writer::Durable;
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let owner = UserId::generate();
    let (kept, revision) = container("kept", owner);
    store
        .insert_container(kept.clone(), revision)
        .await
        .unwrap();
    let slot = store.slot.clone();
    tokio::task::spawn_blocking(move || slot.recover())
        .await
        .unwrap()
        .unwrap();
    assert!(store.container(kept.id).await.unwrap().is_some());
    let (next, revision) = container("next", owner);
    store.insert_container(next, revision).await.unwrap();
    assert_eq!(
        store.list_containers(query(None, 10)).await.unwrap().total,
        2
    );
}
