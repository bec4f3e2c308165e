//! Tenants' quotas through the API: an admin sets and reads a user's quota and
//! use; a create past the containers quota is refused. Instances, CPU and memory
//! are held to the quota where instances are placed (`tenants.rs`).

use crate::error::RuntimeError;
use crate::model::{Caller, ContainerQuery, PageRequest, Quota, QuotaUse, UserId, UserName};
use crate::runtime::Runtime;

impl Runtime {
    /// User `user`'s quota (the one set on it, or the default) and its use now.
    pub async fn quota(
        &self,
        caller: &Caller,
        user: UserName,
    ) -> Result<(Quota, QuotaUse), RuntimeError> {
        caller.require_admin("reading quotas")?;
        let id = self.user_named(user).await?;
        self.quota_and_use(id).await
    }

    /// Sets user `user`'s quota; its instances already placed stay, new ones are
    /// held to it.
    pub async fn set_quota(
        &self,
        caller: &Caller,
        user: UserName,
        quota: Quota,
    ) -> Result<(Quota, QuotaUse), RuntimeError> {
        caller.require_admin("setting quotas")?;
        quota
            .validate()
            .map_err(|(field, message)| RuntimeError::invalid(field, message))?;
        let id = self.user_named(user).await?;
        self.store().set_quota(id, quota.clone()).await?;
        self.node().set_quota(id, quota);
        self.quota_and_use(id).await
    }

    /// Counts one API request of `caller`'s tenant against its rate quota.
    pub fn admit_api_request(&self, caller: &Caller) -> Result<(), RuntimeError> {
        self.node()
            .tenants()
            .take_request(caller.user_id)
            .map_err(|(per_minute, wait)| RuntimeError::RateLimited {
                per_minute,
                retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
            })
    }

    /// Refuses a new container for `caller` past its containers quota.
    pub(crate) async fn check_containers_quota(&self, caller: &Caller) -> Result<(), RuntimeError> {
        let quota = self.node().tenants().quota_of(caller.user_id);
        if quota.containers.is_none() {
            return Ok(());
        }
        let used = QuotaUse {
            containers: self.containers_of(caller.user_id).await?,
            ..QuotaUse::default()
        };
        let adding = QuotaUse {
            containers: 1,
            ..QuotaUse::default()
        };
        match quota.refuses(used, adding) {
            Some((quota, message)) => Err(RuntimeError::QuotaExceeded { quota, message }),
            None => Ok(()),
        }
    }

    async fn quota_and_use(&self, id: UserId) -> Result<(Quota, QuotaUse), RuntimeError> {
        let quota = self.node().tenants().quota_of(id);
        let mut used = self.node().tenants().in_use(id);
        used.containers = self.containers_of(id).await?;
        Ok((quota, used))
    }

    /// How many containers user `id` has (a count the store's index keeps).
    async fn containers_of(&self, id: UserId) -> Result<u32, RuntimeError> {
        let page = self
            .store()
            .list_containers(ContainerQuery {
                owner: Some(id),
                page: PageRequest {
                    page: 1,
                    rows_per_page: 1,
                },
                ..Default::default()
            })
            .await?;
        Ok(u32::try_from(page.total).unwrap_or(u32::MAX))
    }

    async fn user_named(&self, user: UserName) -> Result<UserId, RuntimeError> {
        self.store().user_id(user, Box::new(UserId::generate)).await
    }
}
