//! Persistent state in sled: typed trees under a versioned schema.
//!
//! Trees: `meta` (schema version, server id, admin user), `containers`
//! (id -> container), `names` (name -> id), `revisions` (id ++ number -> revision),
//! `tokens` (sha256 of the secret -> token), `users` (name -> user id), `jobs` (id -> job). Values are JSON. Every write is
//! flushed to disk before the command that made it returns.

use crate::error::RuntimeError;
use crate::model::{
    Container, ContainerId, ContainerName, Job, JobId, Revision, ServerId, Token, TokenId, UserId,
    UserName,
};
use serde::{Serialize, de::DeserializeOwned};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::path::Path;

/// The on-disk schema this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema_version";
const SERVER_ID_KEY: &[u8] = b"server_id";
const ADMIN_USER_KEY: &[u8] = b"admin_user_id";

/// The runtime's state store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    containers: sled::Tree,
    names: sled::Tree,
    revisions: sled::Tree,
    tokens: sled::Tree,
    users: sled::Tree,
    jobs: sled::Tree,
}

impl Store {
    /// Opens (or creates) the store in `dir`, checking the schema version.
    pub fn open(dir: &Path) -> Result<Self, RuntimeError> {
        let db = sled::Config::new().path(dir).open()?;
        let store = Self {
            meta: db.open_tree("meta")?,
            containers: db.open_tree("containers")?,
            names: db.open_tree("names")?,
            revisions: db.open_tree("revisions")?,
            tokens: db.open_tree("tokens")?,
            users: db.open_tree("users")?,
            jobs: db.open_tree("jobs")?,
            db,
        };
        match store.meta.get(SCHEMA_KEY)? {
            None => {
                store
                    .meta
                    .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(raw) => {
                let found = u32::from_be_bytes(raw.as_ref().try_into().map_err(|_| {
                    RuntimeError::Storage("the schema version record is corrupt".into())
                })?);
                if found > SCHEMA_VERSION {
                    return Err(RuntimeError::SchemaTooNew {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
        store.db.flush()?;
        Ok(store)
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), RuntimeError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// This server's id, made on first start.
    pub fn server_id(&self) -> Result<ServerId, RuntimeError> {
        self.id_in_meta(SERVER_ID_KEY, ServerId::generate)
    }

    /// The admin user's id, made on first start.
    pub fn admin_user_id(&self) -> Result<UserId, RuntimeError> {
        self.id_in_meta(ADMIN_USER_KEY, UserId::generate)
    }

    /// The id stored under `key`, made with `generate` the first time.
    fn id_in_meta<T: Serialize + DeserializeOwned>(
        &self,
        key: &[u8],
        generate: fn() -> T,
    ) -> Result<T, RuntimeError> {
        if let Some(raw) = self.meta.get(key)? {
            return decode(&raw);
        }
        let fresh = generate();
        let _ = self
            .meta
            .compare_and_swap(key, None as Option<&[u8]>, Some(encode(&fresh)?))?;
        self.db.flush()?;
        decode(&self.meta.get(key)?.expect("just written"))
    }

    /// All containers.
    pub fn containers(&self) -> Result<Vec<Container>, RuntimeError> {
        self.containers
            .iter()
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// One container.
    pub fn container(&self, id: ContainerId) -> Result<Option<Container>, RuntimeError> {
        self.containers
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Stores a new container and its first revision; refuses a name in use.
    pub fn insert_container(
        &self,
        container: &Container,
        revision: &Revision,
    ) -> Result<(), RuntimeError> {
        self.write_container(container, None, revision)
    }

    /// Stores an updated container with its new revision. `previous_name` frees the old
    /// name when it changed.
    pub fn update_container(
        &self,
        container: &Container,
        previous_name: &ContainerName,
        revision: &Revision,
    ) -> Result<(), RuntimeError> {
        self.write_container(container, Some(previous_name), revision)
    }

    fn write_container(
        &self,
        container: &Container,
        previous_name: Option<&ContainerName>,
        revision: &Revision,
    ) -> Result<(), RuntimeError> {
        let value = encode(container)?;
        let revision_value = encode(revision)?;
        let id = container.id;
        let name = container.spec.name.as_str().as_bytes();
        let result = (&self.containers, &self.names, &self.revisions).transaction(
            |(containers, names, revisions)| {
                if names
                    .get(name)?
                    .is_some_and(|owner| owner.as_ref() != id.as_bytes())
                {
                    return Err(ConflictableTransactionError::Abort(()));
                }
                if let Some(old) = previous_name.filter(|old| *old != &container.spec.name) {
                    names.remove(old.as_str().as_bytes())?;
                }
                names.insert(name, id.as_bytes())?;
                containers.insert(id.as_bytes(), value.as_slice())?;
                revisions.insert(
                    &revision_key(id, revision.number)[..],
                    revision_value.as_slice(),
                )?;
                Ok(())
            },
        );
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Abort(())) => {
                Err(RuntimeError::NameTaken(container.spec.name.to_string()))
            }
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Replaces a container record (status changes); no-op if it was deleted meanwhile.
    pub fn save_status(&self, container: &Container) -> Result<bool, RuntimeError> {
        let value = encode(container)?;
        let key = container.id.as_bytes();
        let result = self.containers.transaction(|tree| {
            if tree.get(key)?.is_none() {
                return Ok(false);
            }
            tree.insert(key, value.as_slice())?;
            Ok(true)
        });
        result.map_err(|e: TransactionError<()>| RuntimeError::Storage(format!("{e:?}")))
    }

    /// Records the artifact a revision's image resolved to.
    pub fn save_revision(&self, revision: &Revision) -> Result<(), RuntimeError> {
        self.revisions.insert(
            &revision_key(revision.container_id, revision.number)[..],
            encode(revision)?,
        )?;
        Ok(())
    }

    /// One revision.
    pub fn revision(&self, id: ContainerId, number: u32) -> Result<Option<Revision>, RuntimeError> {
        self.revisions
            .get(&revision_key(id, number)[..])?
            .map(|v| decode(&v))
            .transpose()
    }

    /// A container's revisions, oldest first.
    pub fn revisions(&self, id: ContainerId) -> Result<Vec<Revision>, RuntimeError> {
        self.revisions
            .scan_prefix(id.as_bytes())
            .values()
            .map(|v| decode(&v?))
            .collect()
    }

    /// Removes a container, its name and its revisions.
    pub fn remove_container(&self, container: &Container) -> Result<(), RuntimeError> {
        let keys: Vec<_> = self
            .revisions
            .scan_prefix(container.id.as_bytes())
            .keys()
            .collect::<Result<_, _>>()?;
        let name = container.spec.name.as_str().as_bytes();
        let id = container.id;
        (&self.containers, &self.names, &self.revisions)
            .transaction(|(containers, names, revisions)| {
                containers.remove(id.as_bytes())?;
                if names
                    .get(name)?
                    .is_some_and(|owner| owner.as_ref() == id.as_bytes())
                {
                    names.remove(name)?;
                }
                for key in &keys {
                    revisions.remove(key.as_ref())?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| RuntimeError::Storage(format!("{e:?}")))
    }

    /// Writes a job (new or changed).
    pub fn save_job(&self, job: &Job) -> Result<(), RuntimeError> {
        self.jobs.insert(job.id.as_bytes(), encode(job)?)?;
        Ok(())
    }

    /// One job.
    pub fn job(&self, id: JobId) -> Result<Option<Job>, RuntimeError> {
        self.jobs
            .get(id.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Every job.
    pub fn jobs(&self) -> Result<Vec<Job>, RuntimeError> {
        self.jobs.iter().values().map(|v| decode(&v?)).collect()
    }

    /// Removes the jobs that finished before `cutoff`; returns how many.
    pub fn remove_jobs_finished_before(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<usize, RuntimeError> {
        let mut removed = 0;
        for job in self.jobs()? {
            if job.is_finished() && job.date_updated < cutoff {
                self.jobs.remove(job.id.as_bytes())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Stores a token under the hash of its secret.
    pub fn insert_token(&self, secret_hash: &[u8], token: &Token) -> Result<(), RuntimeError> {
        self.tokens.insert(secret_hash, encode(token)?)?;
        Ok(())
    }

    /// Looks a token up by the hash of its secret.
    pub fn token(&self, secret_hash: &[u8]) -> Result<Option<Token>, RuntimeError> {
        self.tokens
            .get(secret_hash)?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Every token, in no particular order.
    pub fn tokens(&self) -> Result<Vec<Token>, RuntimeError> {
        self.tokens.iter().values().map(|v| decode(&v?)).collect()
    }

    /// The token with `id`.
    pub fn token_by_id(&self, id: TokenId) -> Result<Option<Token>, RuntimeError> {
        Ok(self.find_token(id)?.map(|(_, token)| token))
    }

    /// Removes the token with `id`; returns it, or `None` when there was none.
    pub fn remove_token(&self, id: TokenId) -> Result<Option<Token>, RuntimeError> {
        let Some((hash, token)) = self.find_token(id)? else {
            return Ok(None);
        };
        self.tokens.remove(hash)?;
        Ok(Some(token))
    }

    /// The token with `id` and the hash it is stored under. Tokens are keyed by
    /// their secret's hash, so this scans them: there are few.
    fn find_token(&self, id: TokenId) -> Result<Option<(sled::IVec, Token)>, RuntimeError> {
        for entry in self.tokens.iter() {
            let (hash, raw) = entry?;
            let token: Token = decode(&raw)?;
            if token.id == id {
                return Ok(Some((hash, token)));
            }
        }
        Ok(None)
    }

    /// The id of the user called `name`, made with `generate` the first time.
    pub fn user_id(
        &self,
        name: &UserName,
        generate: impl FnOnce() -> UserId,
    ) -> Result<UserId, RuntimeError> {
        let new = generate();
        let previous = self.users.compare_and_swap(
            name.as_str().as_bytes(),
            None as Option<&[u8]>,
            Some(encode(&new)?),
        )?;
        match previous {
            Ok(()) => Ok(new),
            Err(existing) => decode(
                &existing
                    .current
                    .expect("compare_and_swap failed on a value"),
            ),
        }
    }
}

/// Revisions sort by container, then number (big-endian keeps numeric order).
fn revision_key(id: ContainerId, number: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(id.as_bytes());
    key[16..].copy_from_slice(&number.to_be_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RuntimeError> {
    serde_json::to_vec(value).map_err(|e| RuntimeError::Storage(format!("encoding: {e}")))
}

fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T, RuntimeError> {
    serde_json::from_slice(raw).map_err(|e| RuntimeError::Storage(format!("decoding: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContainerPatch, JobAction, JobState};
    use std::time::{Duration, SystemTime};

    #[test]
    fn only_jobs_finished_before_the_cutoff_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let day_ago = SystemTime::now() - Duration::from_secs(86_400);
        let job = |state, updated| {
            let mut job = Job::new(
                JobAction::DeleteInstances,
                ContainerId::generate(),
                UserId::generate(),
                1,
                updated,
            );
            job.state = state;
            store.save_job(&job).unwrap();
            job.id
        };
        let old_done = job(JobState::Completed, day_ago);
        let old_failed = job(JobState::Error, day_ago);
        let old_running = job(JobState::Running, day_ago);
        let new_done = job(JobState::Completed, SystemTime::now());
        let cutoff = SystemTime::now() - Duration::from_secs(3_600);
        assert_eq!(store.remove_jobs_finished_before(cutoff).unwrap(), 2);
        for (id, kept) in [
            (old_done, false),
            (old_failed, false),
            (old_running, true),
            (new_done, true),
        ] {
            assert_eq!(store.job(id).unwrap().is_some(), kept, "{id}");
        }
    }

    fn container(name: &str) -> (Container, Revision) {
        let spec = ContainerPatch {
            name: Some(name.parse().unwrap()),
            image: Some("a/b:1".into()),
            ..Default::default()
        }
        .into_new_spec()
        .unwrap();
        let now = SystemTime::now();
        let container = Container::new(spec.clone(), UserId::generate(), now);
        let revision = Revision::new(container.id, 1, spec, now);
        (container, revision)
    }

    #[test]
    fn names_are_unique_and_freed_on_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, rev_a) = container("same");
        let (b, rev_b) = container("same");
        store.insert_container(&a, &rev_a).unwrap();
        assert!(matches!(
            store.insert_container(&b, &rev_b),
            Err(RuntimeError::NameTaken(_))
        ));
        assert_eq!(store.containers().unwrap().len(), 1);
        store.remove_container(&a).unwrap();
        assert!(store.revisions(a.id).unwrap().is_empty());
        store.insert_container(&b, &rev_b).unwrap();
    }

    #[test]
    fn state_survives_reopening_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (c, rev) = container("kept");
        let server = {
            let store = Store::open(dir.path()).unwrap();
            store.insert_container(&c, &rev).unwrap();
            store.db.flush().unwrap();
            store.server_id().unwrap()
        };
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(
                store.container(c.id).unwrap().unwrap().spec.name,
                c.spec.name
            );
            assert_eq!(store.revision(c.id, 1).unwrap().unwrap().number, 1);
            assert_eq!(store.server_id().unwrap(), server);
            store
                .meta
                .insert(SCHEMA_KEY, &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
            store.db.flush().unwrap();
        }
        assert!(matches!(
            Store::open(dir.path()),
            Err(RuntimeError::SchemaTooNew { .. })
        ));
    }

    #[test]
    fn tokens_are_listed_and_removed_by_id_and_users_keep_their_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let alice: UserName = "alice".parse().unwrap();
        let id = store.user_id(&alice, UserId::generate).unwrap();
        assert_eq!(store.user_id(&alice, UserId::generate).unwrap(), id);
        let bob = store
            .user_id(&"bob".parse().unwrap(), UserId::generate)
            .unwrap();
        assert_ne!(bob, id);
        let token = |user_id| Token {
            id: TokenId::generate(),
            user_id,
            user: alice.clone(),
            role: crate::model::Role::User,
            scopes: crate::model::Scopes::all(),
            capabilities: crate::model::Capabilities::none(),
            created: Some(SystemTime::now()),
            bootstrap: false,
        };
        let (first, second) = (token(id), token(id));
        store.insert_token(b"hash-1", &first).unwrap();
        store.insert_token(b"hash-2", &second).unwrap();
        assert_eq!(store.tokens().unwrap().len(), 2);
        assert_eq!(store.remove_token(first.id).unwrap(), Some(first.clone()));
        assert_eq!(store.remove_token(first.id).unwrap(), None);
        assert!(store.token(b"hash-1").unwrap().is_none());
        assert_eq!(store.token(b"hash-2").unwrap(), Some(second));
    }

    #[test]
    fn tokens_stored_by_schema_1_hold_every_grant() {
        let raw = br#"{"id":"6d1c3f0a-6a3c-4b8e-9d55-2b0c4f5e7a10","userId":"5cf37266-3473-4006-984f-9325122678b7","role":"ADMIN"}"#;
        let token: Token = decode(raw).unwrap();
        assert_eq!(token.user, UserName::admin());
        assert_eq!(token.scopes, crate::model::Scopes::all());
        assert_eq!(token.capabilities, crate::model::Capabilities::all());
        assert!(!token.bootstrap && token.created.is_none());
    }
}
