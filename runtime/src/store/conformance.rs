//! The behaviour every [`StateStore`] implementation must have, written once and
//! run against each: [`store_conformance_suite!`] turns each case into a test for
//! an implementation, given where to open it. A case may open the store again
//! at the same place (after dropping it) to check what was kept.

use super::*;
use crate::model::{
    ContainerPatch, ContainerStatus, Job, JobAction, JobState, Role, Token, TokenId, UserName,
};
use std::time::{Duration, SystemTime};

/// Where a store under test lives: each `open` opens the same state.
#[async_trait::async_trait]
pub(crate) trait StorePlace: Sync {
    async fn open(&self) -> Store;
}

/// One test per conformance case for the store `$place` opens (an expression
/// giving a fresh [`StorePlace`] for each test).
macro_rules! store_conformance_suite {
    ($place:expr) => {
        #[tokio::test]
        async fn only_jobs_finished_before_the_cutoff_are_removed() {
            let place = $place;
            $crate::store::conformance::only_jobs_finished_before_the_cutoff_are_removed(&place).await;
        }
        #[tokio::test]
        async fn names_are_unique_and_freed_on_removal() {
            let place = $place;
            $crate::store::conformance::names_are_unique_and_freed_on_removal(&place).await;
        }
        #[tokio::test]
        async fn tokens_are_listed_and_removed_by_id_and_users_keep_their_ids() {
            let place = $place;
            $crate::store::conformance::tokens_are_listed_and_removed_by_id_and_users_keep_their_ids(&place).await;
        }
        #[tokio::test]
        async fn pages_come_from_the_index_by_number_and_by_cursor_in_each_scope() {
            let place = $place;
            $crate::store::conformance::pages_come_from_the_index_by_number_and_by_cursor_in_each_scope(&place).await;
        }
        #[tokio::test]
        async fn status_and_name_filters_read_their_own_index_and_follow_changes() {
            let place = $place;
            $crate::store::conformance::status_and_name_filters_read_their_own_index_and_follow_changes(&place).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn a_thousand_concurrent_writers_finish_and_every_write_is_kept() {
            let place = $place;
            $crate::store::conformance::a_thousand_concurrent_writers_finish_and_every_write_is_kept(&place).await;
        }
        #[tokio::test]
        async fn quotas_are_kept_per_user_and_replaced_whole() {
            let place = $place;
            $crate::store::conformance::quotas_are_kept_per_user_and_replaced_whole(&place).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn id_ranges_are_given_once_kept_and_never_shared() {
            let place = $place;
            $crate::store::conformance::id_ranges_are_given_once_kept_and_never_shared(&place).await;
        }
        #[tokio::test]
        async fn a_write_expecting_a_record_changed_meanwhile_writes_nothing() {
            let place = $place;
            $crate::store::conformance::a_write_expecting_a_record_changed_meanwhile_writes_nothing(&place).await;
        }
    };
}
pub(crate) use store_conformance_suite;

pub(crate) fn container(name: &str, owner: UserId) -> (Container, Revision) {
    let spec = ContainerPatch {
        name: Some(name.parse().unwrap()),
        image: Some("a/b:1".into()),
        ..Default::default()
    }
    .into_new_spec()
    .unwrap();
    let now = SystemTime::now();
    let container = Container::new(spec.clone(), owner, now);
    let revision = Revision::new(container.id, 1, spec, now);
    (container, revision)
}

pub(crate) fn query(owner: Option<UserId>, rows: u32) -> ContainerQuery {
    ContainerQuery {
        owner,
        page: PageRequest {
            page: 1,
            rows_per_page: rows,
        },
        ..Default::default()
    }
}

pub(crate) fn names(page: &Page<Container>) -> Vec<String> {
    page.items.iter().map(|c| c.spec.name.to_string()).collect()
}

pub(crate) async fn only_jobs_finished_before_the_cutoff_are_removed(place: &dyn StorePlace) {
    let store = place.open().await;
    let day_ago = SystemTime::now() - Duration::from_secs(86_400);
    let mut ids = Vec::new();
    for (state, updated) in [
        (JobState::Completed, day_ago),
        (JobState::Error, day_ago),
        (JobState::Running, day_ago),
        (JobState::Completed, SystemTime::now()),
    ] {
        let mut job = Job::new(
            JobAction::DeleteInstances,
            ContainerId::generate(),
            UserId::generate(),
            1,
            updated,
        );
        job.state = state;
        ids.push(job.id);
        store.save_job(job).await.unwrap();
    }
    let cutoff = SystemTime::now() - Duration::from_secs(3_600);
    assert_eq!(store.remove_jobs_finished_before(cutoff).await.unwrap(), 2);
    for (id, kept) in ids.into_iter().zip([false, false, true, true]) {
        assert_eq!(store.job(id).await.unwrap().is_some(), kept, "{id}");
    }
}

/// A status write or an update that expects a record another writer has
/// changed since writes nothing and hands back the record as it is; one of a
/// deleted container writes nothing either (and does not bring it back).
pub(crate) async fn a_write_expecting_a_record_changed_meanwhile_writes_nothing(
    place: &dyn StorePlace,
) {
    let store = place.open().await;
    let (read, revision) = container("raced", UserId::generate());
    store
        .insert_container(read.clone(), revision)
        .await
        .unwrap();
    let mut theirs = read.clone();
    theirs.status = ContainerStatus::Deployed;
    assert_eq!(
        store
            .save_status(read.clone(), theirs.clone())
            .await
            .unwrap(),
        Saved::Written
    );
    let mut mine = read.clone();
    mine.status_reason = Some("mine".into());
    assert_eq!(
        store.save_status(read.clone(), mine.clone()).await.unwrap(),
        Saved::Changed(Box::new(theirs.clone()))
    );
    let mut renamed = read.clone();
    renamed.spec.name = "renamed".parse().unwrap();
    renamed.latest_revision = 2;
    let second = Revision::new(read.id, 2, renamed.spec.clone(), SystemTime::now());
    assert_eq!(
        store
            .update_container(read.clone(), renamed.clone(), second.clone())
            .await
            .unwrap(),
        Saved::Changed(Box::new(theirs.clone()))
    );
    assert_eq!(
        store.container(read.id).await.unwrap(),
        Some(theirs.clone())
    );
    assert!(store.revision(read.id, 2).await.unwrap().is_none());
    assert_eq!(
        store
            .update_container(theirs.clone(), renamed.clone(), second)
            .await
            .unwrap(),
        Saved::Written
    );
    assert_eq!(
        names(&store.list_containers(query(None, 10)).await.unwrap()),
        ["renamed"]
    );
    store.remove_container(renamed.clone()).await.unwrap();
    assert_eq!(
        store.save_status(renamed.clone(), mine).await.unwrap(),
        Saved::Gone
    );
    assert_eq!(store.container(read.id).await.unwrap(), None);
}

pub(crate) async fn names_are_unique_and_freed_on_removal(place: &dyn StorePlace) {
    let store = place.open().await;
    let owner = UserId::generate();
    let (a, rev_a) = container("same", owner);
    let (b, rev_b) = container("same", owner);
    store.insert_container(a.clone(), rev_a).await.unwrap();
    assert!(matches!(
        store.insert_container(b.clone(), rev_b.clone()).await,
        Err(RuntimeError::NameTaken(_))
    ));
    assert_eq!(
        store.list_containers(query(None, 10)).await.unwrap().total,
        1
    );
    store.remove_container(a.clone()).await.unwrap();
    assert!(
        store
            .revisions(a.id, PageRequest::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        store.list_containers(query(None, 10)).await.unwrap().total,
        0
    );
    store.insert_container(b, rev_b).await.unwrap();
}

pub(crate) async fn tokens_are_listed_and_removed_by_id_and_users_keep_their_ids(
    place: &dyn StorePlace,
) {
    let store = place.open().await;
    let alice: UserName = "alice".parse().unwrap();
    let id = store
        .user_id(alice.clone(), Box::new(UserId::generate))
        .await
        .unwrap();
    assert_eq!(
        store
            .user_id(alice.clone(), Box::new(UserId::generate))
            .await
            .unwrap(),
        id
    );
    let bob = store
        .user_id("bob".parse().unwrap(), Box::new(UserId::generate))
        .await
        .unwrap();
    assert_ne!(bob, id);
    let token = |seconds| Token {
        id: TokenId::generate(),
        user_id: id,
        user: alice.clone(),
        role: Role::User,
        scopes: crate::model::Scopes::all(),
        capabilities: crate::model::Capabilities::none(),
        created: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)),
        bootstrap: false,
    };
    let (first, second) = (token(1), token(2));
    store
        .insert_token(b"hash-2".to_vec(), second.clone())
        .await
        .unwrap();
    store
        .insert_token(b"hash-1".to_vec(), first.clone())
        .await
        .unwrap();
    let listed = store.tokens(PageRequest::default()).await.unwrap();
    assert_eq!(listed.total, 2);
    assert_eq!(
        listed.items,
        vec![first.clone(), second.clone()],
        "oldest first"
    );
    assert_eq!(
        store.token_by_id(second.id).await.unwrap(),
        Some(second.clone())
    );
    assert_eq!(
        store.remove_token(first.id).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.remove_token(first.id).await.unwrap(), None);
    assert!(store.token(b"hash-1".to_vec()).await.unwrap().is_none());
    assert_eq!(
        store.token(b"hash-2".to_vec()).await.unwrap(),
        Some(second.clone())
    );
    // Replacing the token under a hash keeps one entry.
    let replaced = Token {
        bootstrap: true,
        ..second
    };
    store
        .insert_token(b"hash-2".to_vec(), replaced.clone())
        .await
        .unwrap();
    let listed = store.tokens(PageRequest::default()).await.unwrap();
    assert_eq!((listed.total, listed.items), (1, vec![replaced]));
}

pub(crate) async fn pages_come_from_the_index_by_number_and_by_cursor_in_each_scope(
    place: &dyn StorePlace,
) {
    let store = place.open().await;
    let (alice, bob) = (UserId::generate(), UserId::generate());
    for n in 0..25 {
        let owner = if n % 5 == 0 { bob } else { alice };
        let (c, r) = container(&format!("app-{n:02}"), owner);
        store.insert_container(c, r).await.unwrap();
    }
    let all = store.list_containers(query(None, 10)).await.unwrap();
    assert_eq!(all.total, 25);
    assert_eq!(
        names(&all)[..3],
        ["app-00", "app-01", "app-02"],
        "oldest first"
    );
    // Following cursors reads every container once, in order.
    let mut seen = names(&all);
    let mut cursor = all.next.clone();
    while let Some(after) = cursor {
        let page = store
            .list_containers(ContainerQuery {
                after: Some(after),
                ..query(None, 10)
            })
            .await
            .unwrap();
        seen.extend(names(&page));
        cursor = page.next;
    }
    let expected: Vec<_> = (0..25).map(|n| format!("app-{n:02}")).collect();
    assert_eq!(seen, expected);
    // Page numbers give the same rows.
    let third = store
        .list_containers(ContainerQuery {
            page: PageRequest {
                page: 3,
                rows_per_page: 10,
            },
            ..query(None, 10)
        })
        .await
        .unwrap();
    assert_eq!(names(&third), expected[20..]);
    assert!(third.next.is_none());
    // A user's scope holds only theirs.
    let bobs = store.list_containers(query(Some(bob), 100)).await.unwrap();
    assert_eq!(bobs.total, 5);
    assert_eq!(
        names(&bobs),
        ["app-00", "app-05", "app-10", "app-15", "app-20"]
    );
    // A cursor of another list is refused.
    let refused = store
        .list_containers(ContainerQuery {
            after: all.next.clone(),
            ..query(Some(bob), 10)
        })
        .await
        .unwrap_err();
    assert!(refused.to_string().starts_with("continue:"), "{refused}");
    for garbage in ["zz", ""] {
        let refused = store
            .list_containers(ContainerQuery {
                after: Some(garbage.into()),
                ..query(None, 10)
            })
            .await;
        assert!(refused.is_err(), "{garbage:?}");
    }
}

pub(crate) async fn status_and_name_filters_read_their_own_index_and_follow_changes(
    place: &dyn StorePlace,
) {
    let store = place.open().await;
    let owner = UserId::generate();
    let mut made = Vec::new();
    for name in ["web-a", "web-b", "api-a", "worker"] {
        let (c, r) = container(name, owner);
        store.insert_container(c.clone(), r).await.unwrap();
        made.push(c);
    }
    for c in &mut made[..2] {
        let before = c.clone();
        c.status = ContainerStatus::Deployed;
        assert_eq!(
            store.save_status(before, c.clone()).await.unwrap(),
            Saved::Written
        );
    }
    let filtered = |status, name_prefix: Option<&str>| {
        let store = store.clone();
        let name_prefix = name_prefix.map(str::to_string);
        async move {
            store
                .list_containers(ContainerQuery {
                    status,
                    name_prefix,
                    ..query(Some(owner), 100)
                })
                .await
                .unwrap()
        }
    };
    let deployed = filtered(Some(ContainerStatus::Deployed), None).await;
    assert_eq!(
        (deployed.total, names(&deployed)),
        (2, vec!["web-a".into(), "web-b".into()])
    );
    let deploying = filtered(Some(ContainerStatus::Deploying), None).await;
    assert_eq!(deploying.total, 2);
    let webs = filtered(None, Some("web")).await;
    assert_eq!(webs.total, 2);
    let a = filtered(Some(ContainerStatus::Deploying), Some("api")).await;
    assert_eq!((a.total, names(&a)), (1, vec!["api-a".to_string()]));
    let none = filtered(Some(ContainerStatus::Failed), Some("web")).await;
    assert_eq!(none.total, 0);
    // An exact name is one index read.
    let exact = store
        .list_containers(ContainerQuery {
            name: Some("worker".parse().unwrap()),
            ..query(Some(owner), 10)
        })
        .await
        .unwrap();
    assert_eq!(names(&exact), ["worker"]);
    let others = store
        .list_containers(ContainerQuery {
            name: Some("worker".parse().unwrap()),
            ..query(Some(UserId::generate()), 10)
        })
        .await
        .unwrap();
    assert_eq!(others.total, 0);
    // A removed container leaves no entry and no count behind.
    store.remove_container(made[0].clone()).await.unwrap();
    assert_eq!(
        filtered(Some(ContainerStatus::Deployed), None).await.total,
        1
    );
    assert_eq!(filtered(None, Some("web")).await.total, 1);
    assert_eq!(
        store
            .containers_numbered(made[1].id.number())
            .await
            .unwrap()[0]
            .id,
        made[1].id
    );
    assert!(
        store
            .containers_numbered(made[0].id.number())
            .await
            .unwrap()
            .is_empty()
    );
}

/// The deadlock of sled 0.34 seen after restarts: many tasks writing and flushing
/// at once on a multi-threaded runtime. Through the one writer they all finish,
/// and every write can be read back.
pub(crate) async fn a_thousand_concurrent_writers_finish_and_every_write_is_kept(
    place: &dyn StorePlace,
) {
    let store = place.open().await;
    let owner = UserId::generate();
    let writes = async {
        let tasks: Vec<_> = (0..1000)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move {
                    let (mut c, r) = container(&format!("c-{n}"), owner);
                    store.insert_container(c.clone(), r).await.unwrap();
                    let before = c.clone();
                    c.status = ContainerStatus::Deployed;
                    assert_eq!(
                        store.save_status(before, c.clone()).await.unwrap(),
                        Saved::Written
                    );
                    let job = Job::new(
                        JobAction::DeleteInstances,
                        c.id,
                        owner,
                        1,
                        SystemTime::now(),
                    );
                    store.save_job(job.clone()).await.unwrap();
                    (c.id, job.id)
                })
            })
            .collect();
        let mut written = Vec::new();
        for task in tasks {
            written.push(task.await.unwrap());
        }
        written
    };
    let written = tokio::time::timeout(Duration::from_secs(30), writes)
        .await
        .expect("1000 concurrent writers finish within 30 s");
    drop(store);
    let store = place.open().await;
    for (container, job) in written {
        let found = store.container(container).await.unwrap().unwrap();
        assert_eq!(found.status, ContainerStatus::Deployed);
        assert!(store.job(job).await.unwrap().is_some());
    }
    let deployed = store
        .list_containers(ContainerQuery {
            status: Some(ContainerStatus::Deployed),
            ..query(None, 1)
        })
        .await
        .unwrap();
    assert_eq!(deployed.total, 1000);
}

pub(crate) async fn quotas_are_kept_per_user_and_replaced_whole(place: &dyn StorePlace) {
    let store = place.open().await;
    let (alice, bob) = (UserId::generate(), UserId::generate());
    assert_eq!(store.quota(alice).await.unwrap(), None);
    let quota: crate::model::Quota =
        serde_json::from_str(r#"{"containers": 3, "cpu": 1.5}"#).unwrap();
    store.set_quota(alice, quota.clone()).await.unwrap();
    assert_eq!(store.quota(alice).await.unwrap(), Some(quota.clone()));
    assert_eq!(store.quota(bob).await.unwrap(), None);
    let smaller: crate::model::Quota = serde_json::from_str(r#"{"instances": 1}"#).unwrap();
    store.set_quota(alice, smaller.clone()).await.unwrap();
    drop(store);
    let store = place.open().await;
    assert_eq!(store.quota(alice).await.unwrap(), Some(smaller.clone()));
    assert_eq!(store.quotas_blocking().unwrap(), vec![(alice, smaller)]);
}

pub(crate) async fn id_ranges_are_given_once_kept_and_never_shared(place: &dyn StorePlace) {
    let store = place.open().await;
    let owner = UserId::generate();
    let mut containers = Vec::new();
    for n in 0..20 {
        let (container, revision) = container(&format!("ranged-{n}"), owner);
        store
            .insert_container(container.clone(), revision)
            .await
            .unwrap();
        containers.push(container);
    }
    // Asked for at once, twice each: one range per container, never one for two.
    let asks = containers
        .iter()
        .chain(&containers)
        .map(|c| {
            let store = store.clone();
            let id = c.id;
            tokio::spawn(async move { (id, store.id_range(id).await.unwrap()) })
        })
        .collect::<Vec<_>>();
    let mut given = std::collections::HashMap::new();
    for ask in asks {
        let (id, range) = ask.await.unwrap();
        assert_eq!(
            *given.entry(id).or_insert(range),
            range,
            "one range per container"
        );
    }
    let distinct: std::collections::HashSet<_> = given.values().collect();
    assert_eq!(distinct.len(), containers.len());
    drop(store);
    // Kept across a reopen; a removed container's range is not given to the next.
    let store = place.open().await;
    let first = &containers[0];
    assert_eq!(store.id_range(first.id).await.unwrap(), given[&first.id]);
    store.remove_container(first.clone()).await.unwrap();
    let (next, revision) = container("ranged-next", owner);
    store
        .insert_container(next.clone(), revision)
        .await
        .unwrap();
    let range = store.id_range(next.id).await.unwrap();
    assert!(!distinct.contains(&range));
}
