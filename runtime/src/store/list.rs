//! A page of containers, read from the index (see [`super::index`]).

use super::{Trees, corrupt_index, get, index};
use crate::error::RuntimeError;
use crate::model::{Container, ContainerQuery, Page, PageRequest};
use std::ops::Bound;

/// One page of the containers `query` asks for: the index keys from the cursor (or
/// the start) on, skipped without reading their records for a page by number,
/// and the records of the rows returned. `total` comes from a counter, or for a
/// name prefix from the keys under it.
pub(super) fn list_containers(
    t: &Trees,
    query: &ContainerQuery,
) -> Result<Page<Container>, RuntimeError> {
    let page = query.page;
    if let Some(name) = &query.name {
        // One name is one row at most: the names index answers.
        let found = match t.names.get(name.as_str().as_bytes())? {
            Some(id) => get::<Container>(&t.containers, &id)?,
            None => None,
        };
        return Ok(page_of_named(found, query));
    }
    let plan = ListPlan::of(query)?;
    let (prefix, counter, filter) = (plan.prefix, plan.counter, plan.status_filter);
    let keep = |container: &Container| filter.is_none_or(|s| container.status == s);
    let start = plan.start;
    let entries = t
        .index
        .range::<Vec<u8>, _>((start, Bound::Unbounded))
        .take_while(|entry| {
            entry
                .as_ref()
                .map_or(true, |(key, _)| key.starts_with(&prefix))
        });
    let row = |key: &[u8], value: &[u8]| -> Result<Container, RuntimeError> {
        let id = index::container_id_of(key, value).ok_or_else(corrupt_index)?;
        get(&t.containers, id.as_bytes())?.ok_or_else(corrupt_index)
    };
    let rows = page.rows_per_page as usize;
    let mut items = Vec::with_capacity(rows.min(PageRequest::MAX_ROWS as usize));
    let mut last_key = None;
    let mut more = false;
    let mut skipped = 0;
    for entry in entries {
        let (key, value) = entry?;
        // Without a filter the rows skipped are never read.
        let filtered = match filter {
            Some(_) => match row(&key, &value)? {
                container if keep(&container) => Some(container),
                _ => continue,
            },
            None => None,
        };
        if skipped < page.skip() {
            skipped += 1;
            continue;
        }
        if items.len() == rows {
            more = true;
            break;
        }
        items.push(match filtered {
            Some(container) => container,
            None => row(&key, &value)?,
        });
        last_key = Some(key);
    }
    let total = match counter {
        Some(counter) => usize::try_from(index::decode_count(t.index.get(counter)?.as_deref()))
            .unwrap_or(usize::MAX),
        // A name prefix: the keys under it, read without their rows unless the
        // status filter needs them.
        None => {
            let mut total = 0;
            for entry in t.index.scan_prefix(&prefix) {
                let (key, value) = entry?;
                if filter.is_none() || keep(&row(&key, &value)?) {
                    total += 1;
                }
            }
            total
        }
    };
    let next = more.then(|| last_key.map(hex::encode)).flatten();
    Ok(page.page_of(items, total, next))
}

/// Which index a list of containers reads, from where, and what it filters: the
/// part of a list every store shares.
pub(super) struct ListPlan {
    /// The prefix every index key of the list has.
    pub(super) prefix: Vec<u8>,
    /// The counter of the list's total, when one keeps it.
    pub(super) counter: Option<Vec<u8>>,
    /// A status the rows must have, checked on the rows themselves: only a name
    /// prefix with a status needs it.
    pub(super) status_filter: Option<crate::model::ContainerStatus>,
    /// The first index key to read.
    pub(super) start: Bound<Vec<u8>>,
}

impl ListPlan {
    /// The plan of `query`, which has no exact name (one name is one row: the
    /// names index answers it). A cursor not of this list is a 400.
    pub(super) fn of(query: &ContainerQuery) -> Result<Self, RuntimeError> {
        let scope = index::scope_of(query.owner);
        let (prefix, counter) = match (&query.name_prefix, query.status) {
            (Some(name_prefix), _) => (index::by_name_prefix(&scope, name_prefix), None),
            (None, Some(status)) => (
                index::by_status_prefix(&scope, status),
                Some(index::container_counter(&scope, Some(status))),
            ),
            (None, None) => (
                index::by_age_prefix(&scope),
                Some(index::container_counter(&scope, None)),
            ),
        };
        let start = match &query.after {
            None => Bound::Included(prefix.clone()),
            Some(cursor) => {
                let key = hex::decode(cursor)
                    .ok()
                    .filter(|key| key.starts_with(&prefix) && key.len() > prefix.len())
                    .ok_or_else(|| {
                        RuntimeError::invalid(
                            "continue",
                            "is not a cursor of this list: pass the `continue` of the page before, with the same filters",
                        )
                    })?;
                Bound::Excluded(key)
            }
        };
        Ok(Self {
            prefix,
            counter,
            status_filter: query.name_prefix.as_ref().and(query.status),
            start,
        })
    }
}

/// The page of a query for one exact name, given the container of that name.
pub(super) fn page_of_named(found: Option<Container>, query: &ContainerQuery) -> Page<Container> {
    let items: Vec<_> = found
        .filter(|c| query.owner.is_none_or(|owner| c.created_by == owner))
        .filter(|c| query.status.is_none_or(|s| c.status == s))
        .into_iter()
        .collect();
    let total = items.len();
    let items = items.into_iter().skip(query.page.skip()).collect();
    query.page.page_of(items, total, None)
}
