//! Tokens, users, quotas, jobs and running instances on etcd.

use super::{EtcdStore, Inner, Tree};
use crate::error::RuntimeError;
use crate::model::{
    Job, JobId, Page, PageRequest, Quota, RunningInstance, Token, TokenId, UserId, UserName,
};
use crate::store::{
    InstanceRecords, JobChange, JobStore, TokenStore, corrupt_index, decode, encode, index,
};
use std::time::SystemTime;

/// A job as stored on etcd: with the node that runs it, so that a node starting
/// again fails only the jobs it left unfinished, not those another node runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct NodeJob {
    node: String,
    job: Job,
}

impl Inner {
    async fn insert_token(&self, hash: &[u8], token: &Token) -> Result<(), RuntimeError> {
        let value = encode(token)?;
        loop {
            let mut tx = self.tx();
            if let Some(old) = tx.get::<Token>(Tree::Tokens, hash).await? {
                for (key, _) in index::token_entries(&old, hash) {
                    tx.delete(Tree::Index, &key);
                }
            }
            tx.put(Tree::Tokens, hash, value.clone());
            for (key, value) in index::token_entries(token, hash) {
                tx.put(Tree::Index, &key, value);
            }
            if tx.commit().await? {
                return Ok(());
            }
        }
    }

    async fn tokens(&self, page: PageRequest) -> Result<Page<Token>, RuntimeError> {
        let prefix = self.keys.of(Tree::Index, &index::tokens_by_age_prefix());
        let limit = page.skip().saturating_add(page.rows_per_page as usize);
        let entries = self
            .scan_range(
                prefix.clone(),
                super::prefix_end(&prefix),
                Some(limit),
                false,
            )
            .await?;
        let hashes: Vec<Vec<u8>> = entries
            .into_iter()
            .skip(page.skip())
            .map(|(_, hash)| hash)
            .collect();
        let items = self
            .get_many::<Token>(Tree::Tokens, &hashes)
            .await?
            .into_iter()
            .map(|found| found.ok_or_else(corrupt_index))
            .collect::<Result<_, _>>()?;
        let total = self
            .count(Tree::Index, &index::tokens_by_age_prefix())
            .await?;
        Ok(page.page_of(items, total, None))
    }

    async fn token_by_id(&self, id: TokenId) -> Result<Option<Token>, RuntimeError> {
        let Some(hash) = self
            .get_raw(self.keys.of(Tree::Index, &index::token_by_id(&id)))
            .await?
        else {
            return Ok(None);
        };
        self.get(Tree::Tokens, &hash).await
    }

    async fn remove_token(&self, id: TokenId) -> Result<Option<Token>, RuntimeError> {
        loop {
            let mut tx = self.tx();
            let Some(hash) = tx.get_raw(Tree::Index, &index::token_by_id(&id)).await? else {
                return Ok(None);
            };
            let Some(token) = tx.get::<Token>(Tree::Tokens, &hash).await? else {
                return Ok(None);
            };
            tx.delete(Tree::Tokens, &hash);
            for (key, _) in index::token_entries(&token, &hash) {
                tx.delete(Tree::Index, &key);
            }
            if tx.commit().await? {
                return Ok(Some(token));
            }
        }
    }

    async fn user_id(&self, name: &UserName, new: UserId) -> Result<UserId, RuntimeError> {
        loop {
            let mut tx = self.tx();
            if let Some(existing) = tx
                .get::<UserId>(Tree::Users, name.as_str().as_bytes())
                .await?
            {
                return Ok(existing);
            }
            tx.put(Tree::Users, name.as_str().as_bytes(), encode(&new)?);
            if tx.commit().await? {
                return Ok(new);
            }
        }
    }

    async fn quotas(&self) -> Result<Vec<(UserId, Quota)>, RuntimeError> {
        self.scan(Tree::Quotas, &[])
            .await?
            .into_iter()
            .map(|(key, value)| {
                let bytes: [u8; 16] = key.as_slice().try_into().map_err(|_| corrupt_index())?;
                Ok((UserId::from_bytes(bytes), decode(&value)?))
            })
            .collect()
    }

    async fn save_job(&self, job: Job) -> Result<(), RuntimeError> {
        let id = job.id;
        let stored = NodeJob {
            node: self.node_name.clone(),
            job,
        };
        self.put(Tree::Jobs, id.as_bytes(), encode(&stored)?).await
    }

    async fn jobs(&self) -> Result<Vec<NodeJob>, RuntimeError> {
        self.scan(Tree::Jobs, &[])
            .await?
            .into_iter()
            .map(|(_, value)| decode(&value))
            .collect()
    }

    async fn update_job(&self, id: JobId, change: JobChange) -> Result<Option<Job>, RuntimeError> {
        let _one_at_a_time = self.job_updates.lock().await;
        let Some(mut stored) = self.get::<NodeJob>(Tree::Jobs, id.as_bytes()).await? else {
            return Ok(None);
        };
        change(&mut stored.job);
        let job = stored.job.clone();
        self.put(Tree::Jobs, id.as_bytes(), encode(&stored)?)
            .await?;
        Ok(Some(job))
    }

    async fn fail_unfinished_jobs(
        &self,
        error: &str,
        now: SystemTime,
    ) -> Result<usize, RuntimeError> {
        let _one_at_a_time = self.job_updates.lock().await;
        let mut failed = 0;
        for mut stored in self.jobs().await? {
            if stored.node == self.node_name && !stored.job.is_finished() {
                stored.job.state = crate::model::JobState::Error;
                stored.job.error = Some(error.to_string());
                stored.job.date_updated = now;
                self.put(Tree::Jobs, stored.job.id.as_bytes(), encode(&stored)?)
                    .await?;
                failed += 1;
            }
        }
        Ok(failed)
    }

    async fn remove_jobs_finished_before(&self, cutoff: SystemTime) -> Result<usize, RuntimeError> {
        let mut removed = 0;
        for stored in self.jobs().await? {
            if stored.job.is_finished() && stored.job.date_updated < cutoff {
                self.delete(Tree::Jobs, stored.job.id.as_bytes()).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The key of `sandbox` among this node's running instances.
    fn running_key(&self, sandbox: &str) -> Vec<u8> {
        [self.node_name.as_bytes(), b"/", sandbox.as_bytes()].concat()
    }
}

#[async_trait::async_trait]
impl TokenStore for EtcdStore {
    async fn insert_token(&self, secret_hash: Vec<u8>, token: Token) -> Result<(), RuntimeError> {
        self.call(move |s| async move { s.insert_token(&secret_hash, &token).await })
            .await
    }

    async fn token(&self, secret_hash: Vec<u8>) -> Result<Option<Token>, RuntimeError> {
        self.call(move |s| async move { s.get(Tree::Tokens, &secret_hash).await })
            .await
    }

    async fn tokens(&self, page: PageRequest) -> Result<Page<Token>, RuntimeError> {
        self.call(move |s| async move { s.tokens(page).await })
            .await
    }

    async fn token_by_id(&self, id: TokenId) -> Result<Option<Token>, RuntimeError> {
        self.call(move |s| async move { s.token_by_id(id).await })
            .await
    }

    async fn remove_token(&self, id: TokenId) -> Result<Option<Token>, RuntimeError> {
        self.call(move |s| async move { s.remove_token(id).await })
            .await
    }

    async fn user_id(
        &self,
        name: UserName,
        generate: Box<dyn FnOnce() -> UserId + Send>,
    ) -> Result<UserId, RuntimeError> {
        let new = generate();
        self.call(move |s| async move { s.user_id(&name, new).await })
            .await
    }

    async fn quota(&self, id: UserId) -> Result<Option<Quota>, RuntimeError> {
        self.call(move |s| async move { s.get(Tree::Quotas, id.as_bytes()).await })
            .await
    }

    async fn set_quota(&self, id: UserId, quota: Quota) -> Result<(), RuntimeError> {
        self.call(move |s| async move { s.put(Tree::Quotas, id.as_bytes(), encode(&quota)?).await })
            .await
    }

    fn quotas_blocking(&self) -> Result<Vec<(UserId, Quota)>, RuntimeError> {
        self.call_blocking(|s| async move { s.quotas().await })
    }
}

#[async_trait::async_trait]
impl JobStore for EtcdStore {
    async fn save_job(&self, job: Job) -> Result<(), RuntimeError> {
        self.call(move |s| async move { s.save_job(job).await })
            .await
    }

    async fn update_job(&self, id: JobId, change: JobChange) -> Result<Option<Job>, RuntimeError> {
        self.call(move |s| async move { s.update_job(id, change).await })
            .await
    }

    async fn job(&self, id: JobId) -> Result<Option<Job>, RuntimeError> {
        self.call(move |s| async move {
            Ok(s.get::<NodeJob>(Tree::Jobs, id.as_bytes())
                .await?
                .map(|stored| stored.job))
        })
        .await
    }

    async fn fail_unfinished_jobs(
        &self,
        error: String,
        now: SystemTime,
    ) -> Result<usize, RuntimeError> {
        self.call(move |s| async move { s.fail_unfinished_jobs(&error, now).await })
            .await
    }

    async fn remove_jobs_finished_before(&self, cutoff: SystemTime) -> Result<usize, RuntimeError> {
        self.call(move |s| async move { s.remove_jobs_finished_before(cutoff).await })
            .await
    }
}

#[async_trait::async_trait]
impl InstanceRecords for EtcdStore {
    async fn record_running(
        &self,
        sandbox: String,
        instance: RunningInstance,
    ) -> Result<(), RuntimeError> {
        self.call(move |s| async move {
            let key = s.running_key(&sandbox);
            s.put(Tree::Running, &key, encode(&instance)?).await
        })
        .await
    }

    async fn forget_running(&self, sandbox: String) -> Result<(), RuntimeError> {
        self.call(move |s| async move {
            let key = s.running_key(&sandbox);
            s.delete(Tree::Running, &key).await
        })
        .await
    }

    fn running_blocking(&self) -> Result<Vec<(String, RunningInstance)>, RuntimeError> {
        self.call_blocking(|s| async move {
            let mine = s.running_key("");
            s.scan(Tree::Running, &mine)
                .await?
                .into_iter()
                .map(|(key, value)| {
                    let sandbox = String::from_utf8_lossy(&key[mine.len()..]).into_owned();
                    Ok((sandbox, decode(&value)?))
                })
                .collect()
        })
    }
}
