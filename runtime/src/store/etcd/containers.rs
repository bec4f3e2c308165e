//! Containers and their revisions on etcd: the same records and index keys as
//! sled's, each change one optimistic transaction.

use super::{EtcdStore, Inner, Tree, prefix_end, successor};
use crate::error::RuntimeError;
use crate::model::{Container, ContainerId, ContainerQuery, Page, PageRequest, Revision};
use crate::store::index::{self, IndexChange};
use crate::store::list::{ListPlan, page_of_named};
use crate::store::{ContainerStore, Saved, corrupt_index, encode, revision_key};
use ember_sandbox::IdRange;
use etcd_client::{GetOptions, SortOrder, SortTarget};
use std::ops::Bound;

impl Inner {
    /// Writes a container, its revision and its name, with the index entries that
    /// point to it, in one transaction, if its record is still `before` (a new
    /// container has none); `before`'s name is freed when it changed.
    async fn write_container(
        &self,
        container: &Container,
        before: Option<&Container>,
        revision: &Revision,
    ) -> Result<Saved, RuntimeError> {
        let value = encode(container)?;
        let revision_value = encode(revision)?;
        let id = container.id;
        let name = container.spec.name.as_str().as_bytes();
        loop {
            let mut tx = self.tx();
            let old: Option<Container> = tx.get(Tree::Containers, id.as_bytes()).await?;
            match (before, &old) {
                (Some(_), None) => return Ok(Saved::Gone),
                (Some(before), Some(old)) if old != before => {
                    return Ok(Saved::Changed(Box::new(old.clone())));
                }
                _ => {}
            }
            let holder = tx.get_raw(Tree::Names, name).await?;
            if holder.is_some_and(|holder| holder != id.as_bytes()) {
                return Err(RuntimeError::NameTaken(container.spec.name.to_string()));
            }
            if let Some(old) = before
                .map(|b| &b.spec.name)
                .filter(|old| *old != &container.spec.name)
            {
                tx.delete(Tree::Names, old.as_str().as_bytes());
            }
            tx.put(Tree::Names, name, id.as_bytes().to_vec());
            tx.put(Tree::Containers, id.as_bytes(), value.clone());
            tx.put(
                Tree::Revisions,
                &revision_key(id, revision.number),
                revision_value.clone(),
            );
            tx.apply_index_change(&IndexChange::containers(old.as_ref(), Some(container)));
            if tx.commit().await? {
                return Ok(Saved::Written);
            }
        }
    }

    /// The containers the index entries `entries` point to, in their order.
    async fn rows(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<Container>, RuntimeError> {
        let ids = entries
            .iter()
            .map(|(key, value)| {
                index::container_id_of(key, value)
                    .map(|id| id.as_bytes().to_vec())
                    .ok_or_else(corrupt_index)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.get_many::<Container>(Tree::Containers, &ids)
            .await?
            .into_iter()
            .map(|found| found.ok_or_else(corrupt_index))
            .collect()
    }

    /// Index entries of `plan`, from its start on, at most `limit`; keys without
    /// the index's own prefix.
    async fn index_entries(
        &self,
        plan: &ListPlan,
        limit: Option<usize>,
        keys_only: bool,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, RuntimeError> {
        let start = match &plan.start {
            Bound::Included(key) => self.keys.of(Tree::Index, key),
            Bound::Excluded(key) => successor(&self.keys.of(Tree::Index, key)),
            Bound::Unbounded => self.keys.tree(Tree::Index),
        };
        let end = prefix_end(&self.keys.of(Tree::Index, &plan.prefix));
        let found = self.scan_range(start, end, limit, keys_only).await?;
        Ok(found
            .into_iter()
            .map(|(key, value)| (self.keys.strip(Tree::Index, &key).to_vec(), value))
            .collect())
    }

    /// One page of the containers `query` asks for, as sled's list reads it: the
    /// index keys from the cursor on, the records of the rows returned only, and
    /// the total counted by etcd.
    async fn list_containers(
        &self,
        query: &ContainerQuery,
    ) -> Result<Page<Container>, RuntimeError> {
        if let Some(name) = &query.name {
            let found = match self
                .get_raw(self.keys.of(Tree::Names, name.as_str().as_bytes()))
                .await?
            {
                Some(id) => self.get::<Container>(Tree::Containers, &id).await?,
                None => None,
            };
            return Ok(page_of_named(found, query));
        }
        let plan = ListPlan::of(query)?;
        let page = query.page;
        let rows = page.rows_per_page as usize;
        if let Some(status) = plan.status_filter {
            // A name prefix with a status: every row under the prefix is read to
            // filter it (names under one prefix are few).
            let entries = self.index_entries(&plan, None, false).await?;
            let all = self.rows(&entries).await?;
            let kept: Vec<(Vec<u8>, Container)> = entries
                .into_iter()
                .map(|(key, _)| key)
                .zip(all)
                .filter(|(_, c)| c.status == status)
                .collect();
            let total = if matches!(plan.start, Bound::Included(_)) {
                kept.len()
            } else {
                let whole = ListPlan::of(&ContainerQuery {
                    after: None,
                    ..query.clone()
                })?;
                let entries = self.index_entries(&whole, None, false).await?;
                self.rows(&entries)
                    .await?
                    .iter()
                    .filter(|c| c.status == status)
                    .count()
            };
            let mut page_rows: Vec<_> = kept.into_iter().skip(page.skip()).take(rows + 1).collect();
            let more = page_rows.len() > rows;
            page_rows.truncate(rows);
            let next = more
                .then(|| page_rows.last().map(|(key, _)| hex::encode(key)))
                .flatten();
            let items = page_rows.into_iter().map(|(_, c)| c).collect();
            return Ok(page.page_of(items, total, next));
        }
        // Without a filter the rows skipped are never read: their keys only (but
        // for the name index, whose values are its ids).
        let wanted = page.skip().saturating_add(rows).saturating_add(1);
        let keys_only = plan.prefix.first() != Some(&index::BY_NAME);
        let entries = self.index_entries(&plan, Some(wanted), keys_only).await?;
        let mut with_values: Vec<_> = entries.into_iter().skip(page.skip()).collect();
        let more = with_values.len() > rows;
        with_values.truncate(rows);
        let items = self.rows(&with_values).await?;
        let total = self.count(Tree::Index, &plan.prefix).await?;
        let next = more
            .then(|| with_values.last().map(|(key, _)| hex::encode(key)))
            .flatten();
        Ok(page.page_of(items, total, next))
    }

    async fn revisions(
        &self,
        id: ContainerId,
        page: PageRequest,
    ) -> Result<Page<Revision>, RuntimeError> {
        let start = self.keys.of(Tree::Revisions, id.as_bytes());
        let limit = page.skip().saturating_add(page.rows_per_page as usize);
        let options = GetOptions::new()
            .with_range(prefix_end(&start))
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let response = self.range(start, Some(options)).await?;
        let items = response
            .kvs()
            .iter()
            .skip(page.skip())
            .map(|kv| crate::store::decode(kv.value()))
            .collect::<Result<_, _>>()?;
        let total = self.count(Tree::Revisions, id.as_bytes()).await?;
        Ok(page.page_of(items, total, None))
    }

    async fn remove_container(&self, container: &Container) -> Result<(), RuntimeError> {
        let id = container.id;
        let name = container.spec.name.as_str().as_bytes();
        loop {
            let mut tx = self.tx();
            let Some(old) = tx.get::<Container>(Tree::Containers, id.as_bytes()).await? else {
                self.delete(Tree::IdRanges, id.as_bytes()).await?;
                return Ok(());
            };
            if tx.get_raw(Tree::Names, name).await?.as_deref() == Some(id.as_bytes()) {
                tx.delete(Tree::Names, name);
            }
            tx.delete(Tree::Containers, id.as_bytes());
            tx.delete_prefix(Tree::Revisions, id.as_bytes());
            tx.delete(Tree::IdRanges, id.as_bytes());
            tx.apply_index_change(&IndexChange::containers(Some(&old), None));
            if tx.commit().await? {
                return Ok(());
            }
        }
    }

    /// Container `id`'s id range, given in turn as sled gives them. Every first
    /// ask reads and writes the `next` counter, so two at once cannot both commit
    /// with one range.
    async fn id_range(&self, id: ContainerId) -> Result<IdRange, RuntimeError> {
        use crate::store::schema::NEXT_ID_RANGE_KEY;
        loop {
            let mut tx = self.tx();
            if let Some(range) = tx.get::<IdRange>(Tree::IdRanges, id.as_bytes()).await? {
                return Ok(range);
            }
            let next = match tx.get_raw(Tree::Meta, NEXT_ID_RANGE_KEY).await? {
                Some(raw) => {
                    u32::from_be_bytes(raw.as_slice().try_into().map_err(|_| corrupt_index())?)
                }
                None => 0,
            };
            let range = match IdRange::new(next) {
                Some(range) => {
                    tx.put(
                        Tree::Meta,
                        NEXT_ID_RANGE_KEY,
                        (next + 1).to_be_bytes().to_vec(),
                    );
                    range
                }
                None => {
                    let held = self
                        .scan(Tree::IdRanges, &[])
                        .await?
                        .into_iter()
                        .map(|(_, value)| crate::store::decode::<IdRange>(&value))
                        .collect::<Result<std::collections::HashSet<_>, _>>()?;
                    let range = crate::store::lowest_free_id_range_of(&held)?;
                    // Written again so that a concurrent ask conflicts.
                    tx.put(Tree::Meta, NEXT_ID_RANGE_KEY, next.to_be_bytes().to_vec());
                    range
                }
            };
            tx.put(Tree::IdRanges, id.as_bytes(), encode(&range)?);
            if tx.commit().await? {
                return Ok(range);
            }
        }
    }

    async fn containers(&self) -> Result<Vec<Container>, RuntimeError> {
        self.scan(Tree::Containers, &[])
            .await?
            .into_iter()
            .map(|(_, value)| crate::store::decode(&value))
            .collect()
    }
}

#[async_trait::async_trait]
impl ContainerStore for EtcdStore {
    async fn container(&self, id: ContainerId) -> Result<Option<Container>, RuntimeError> {
        self.call(move |s| async move { s.get(Tree::Containers, id.as_bytes()).await })
            .await
    }

    async fn containers_numbered(&self, number: u64) -> Result<Vec<Container>, RuntimeError> {
        self.call(move |s| async move {
            let entries = s
                .scan(Tree::Index, &index::by_number_prefix(number))
                .await?;
            s.rows(&entries).await
        })
        .await
    }

    async fn list_containers(
        &self,
        query: ContainerQuery,
    ) -> Result<Page<Container>, RuntimeError> {
        self.call(move |s| async move { s.list_containers(&query).await })
            .await
    }

    async fn insert_container(
        &self,
        container: Container,
        revision: Revision,
    ) -> Result<(), RuntimeError> {
        self.call(move |s| async move { s.write_container(&container, None, &revision).await })
            .await
            .map(|_| ())
    }

    async fn update_container(
        &self,
        before: Container,
        container: Container,
        revision: Revision,
    ) -> Result<Saved, RuntimeError> {
        self.call(move |s| async move {
            s.write_container(&container, Some(&before), &revision)
                .await
        })
        .await
    }

    async fn save_status(
        &self,
        before: Container,
        after: Container,
    ) -> Result<Saved, RuntimeError> {
        self.call(move |s| async move {
            let value = encode(&after)?;
            loop {
                let mut tx = s.tx();
                let key = after.id.as_bytes();
                let Some(old) = tx.get::<Container>(Tree::Containers, key).await? else {
                    return Ok(Saved::Gone);
                };
                if old != before {
                    return Ok(Saved::Changed(Box::new(old)));
                }
                tx.put(Tree::Containers, key, value.clone());
                tx.apply_index_change(&IndexChange::containers(Some(&old), Some(&after)));
                if tx.commit().await? {
                    return Ok(Saved::Written);
                }
            }
        })
        .await
    }

    async fn remove_container(&self, container: Container) -> Result<(), RuntimeError> {
        self.call(move |s| async move { s.remove_container(&container).await })
            .await
    }

    async fn save_revision(&self, revision: Revision) -> Result<(), RuntimeError> {
        self.call(move |s| async move {
            let key = revision_key(revision.container_id, revision.number);
            s.put(Tree::Revisions, &key, encode(&revision)?).await
        })
        .await
    }

    async fn revision(
        &self,
        id: ContainerId,
        number: u32,
    ) -> Result<Option<Revision>, RuntimeError> {
        self.call(move |s| async move { s.get(Tree::Revisions, &revision_key(id, number)).await })
            .await
    }

    async fn revisions(
        &self,
        id: ContainerId,
        page: PageRequest,
    ) -> Result<Page<Revision>, RuntimeError> {
        self.call(move |s| async move { s.revisions(id, page).await })
            .await
    }

    async fn id_range(&self, id: ContainerId) -> Result<IdRange, RuntimeError> {
        self.call(move |s| async move { s.id_range(id).await })
            .await
    }

    fn containers_blocking(&self) -> Result<Vec<Container>, RuntimeError> {
        self.call_blocking(|s| async move { s.containers().await })
    }

    fn revision_blocking(
        &self,
        id: ContainerId,
        number: u32,
    ) -> Result<Option<Revision>, RuntimeError> {
        self.call_blocking(move |s| async move {
            s.get(Tree::Revisions, &revision_key(id, number)).await
        })
    }
}
