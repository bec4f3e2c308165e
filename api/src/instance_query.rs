//! The query of the instances API's list: `filter[field]=value`, `sort` (a
//! comma-separated list, `-` for descending), `page[size]` and `page[number]`, and
//! `include` (the related resources to add under `includes`).

use crate::error::ApiError;
use ember_runtime::model::{InstanceInfo, InstanceState};
use std::cmp::Ordering;

/// Related resources a list may include. Ember has no locations, integrations or
/// environments: asking for them is valid and adds an empty map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Include {
    Creators,
    Servers,
    Locations,
    Integrations,
    Containers,
    Environments,
}

impl Include {
    const ALL: [(&'static str, Self); 6] = [
        ("creators", Self::Creators),
        ("servers", Self::Servers),
        ("locations", Self::Locations),
        ("integrations", Self::Integrations),
        ("containers", Self::Containers),
        ("environments", Self::Environments),
    ];

    pub(crate) fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, include)| *include == self)
            .map(|(name, _)| *name)
            .expect("every include is named")
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    State(InstanceState),
    ServerId(String),
    Revision(u32),
    Pinned(bool),
}

impl Filter {
    fn keeps(&self, instance: &InstanceInfo) -> bool {
        match self {
            Self::State(state) => instance.state == *state,
            Self::ServerId(id) => instance.server_id.to_string() == *id,
            Self::Revision(revision) => instance.revision == *revision,
            Self::Pinned(pinned) => instance.pinned == *pinned,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    Id,
    State,
    Revision,
    Changed,
}

impl SortKey {
    const ALL: [(&'static str, Self); 4] = [
        ("id", Self::Id),
        ("state", Self::State),
        ("revision", Self::Revision),
        ("changed", Self::Changed),
    ];

    fn compare(self, a: &InstanceInfo, b: &InstanceInfo) -> Ordering {
        match self {
            Self::Id => a.id.cmp(&b.id),
            Self::State => state_rank(a.state).cmp(&state_rank(b.state)),
            Self::Revision => a.revision.cmp(&b.revision),
            Self::Changed => a.state_changed.cmp(&b.state_changed),
        }
    }
}

fn state_rank(state: InstanceState) -> u8 {
    // The order an instance goes through them.
    LISTED_STATES
        .iter()
        .position(|s| *s == state)
        .map_or(u8::MAX, |p| p as u8)
}

/// The states an instances API list shows (instances on their way out are not listed there).
const LISTED_STATES: [InstanceState; 4] = [
    InstanceState::Starting,
    InstanceState::Running,
    InstanceState::Stopping,
    InstanceState::Stopped,
];

/// Most items one page of an instances API list may hold.
pub(crate) const MAX_PAGE_SIZE: usize = 100;

/// A parsed list query.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct InstanceQuery {
    filters: Vec<Filter>,
    sort: Vec<(SortKey, bool)>,
    page: Option<(usize, usize)>,
    pub(crate) includes: Vec<Include>,
}

impl InstanceQuery {
    /// Parses the query's pairs; an unknown parameter or value is a 400 naming it.
    pub(crate) fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut query = Self::default();
        let (mut size, mut number) = (None, None);
        for (key, value) in pairs {
            match key.as_str() {
                "include" => {
                    for name in list(value) {
                        let include = named(key, name, Include::ALL)?;
                        if !query.includes.contains(&include) {
                            query.includes.push(include);
                        }
                    }
                }
                "sort" => {
                    for name in list(value) {
                        let (field, descending) = match name.strip_prefix('-') {
                            Some(field) => (field, true),
                            None => (name, false),
                        };
                        let sort_key = named(key, field, SortKey::ALL)
                            .map_err(|_| unknown(key, name, SortKey::ALL.map(|(n, _)| n)))?;
                        query.sort.push((sort_key, descending));
                    }
                }
                "page[size]" => size = Some(number_in(key, value, 1, MAX_PAGE_SIZE)?),
                "page[number]" => number = Some(number_in(key, value, 1, usize::MAX)?),
                _ => match key
                    .strip_prefix("filter[")
                    .and_then(|k| k.strip_suffix(']'))
                {
                    Some(field) => query.filters.push(filter(key, field, value)?),
                    None => {
                        return Err(ApiError::invalid_field(
                            key.clone(),
                            "is not a parameter of this list (include, filter[...], sort, page[size], page[number])",
                        ));
                    }
                },
            }
        }
        if size.is_some() || number.is_some() {
            query.page = Some((size.unwrap_or(20), number.unwrap_or(1)));
        }
        Ok(query)
    }

    /// Filters, sorts (by id when nothing else decides) and cuts the page.
    pub(crate) fn apply(&self, mut instances: Vec<InstanceInfo>) -> Vec<InstanceInfo> {
        instances.retain(|i| self.filters.iter().all(|f| f.keeps(i)));
        instances.sort_by(|a, b| {
            self.sort
                .iter()
                .map(|&(key, descending)| {
                    let order = key.compare(a, b);
                    if descending { order.reverse() } else { order }
                })
                .find(|order| order.is_ne())
                .unwrap_or_else(|| a.id.cmp(&b.id))
        });
        match self.page {
            None => instances,
            Some((size, number)) => instances
                .into_iter()
                .skip(size.saturating_mul(number - 1))
                .take(size)
                .collect(),
        }
    }
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// The member of `table` called `name`; a 400 naming `key` and listing the names
/// otherwise.
fn named<T: Copy, const N: usize>(
    key: &str,
    name: &str,
    table: [(&'static str, T); N],
) -> Result<T, ApiError> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, member)| *member)
        .ok_or_else(|| unknown(key, name, table.map(|(n, _)| n)))
}

fn unknown<const N: usize>(key: &str, name: &str, known: [&str; N]) -> ApiError {
    ApiError::invalid_field(
        key,
        format!(
            "`{}` is not one of {}",
            name.chars().take(80).collect::<String>(),
            known.map(|k| format!("`{k}`")).join(", ")
        ),
    )
}

/// `value` as a whole number from `min` to `max`, or a 400 naming `key`.
pub(crate) fn number_in(key: &str, value: &str, min: usize, max: usize) -> Result<usize, ApiError> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            let range = if max == usize::MAX {
                format!("{min} or more")
            } else {
                format!("between {min} and {max}")
            };
            ApiError::invalid_field(key, format!("`{value}` is not a number {range}"))
        })
}

fn filter(key: &str, field: &str, value: &str) -> Result<Filter, ApiError> {
    let bad = |what: &str| ApiError::invalid_field(key, format!("`{value}` is not {what}"));
    Ok(match field {
        "state" => Filter::State(
            LISTED_STATES
                .into_iter()
                .find(|s| s.name() == value)
                .ok_or_else(|| bad("a state (`starting`, `running`, `stopping`, `stopped`)"))?,
        ),
        "server_id" => Filter::ServerId(value.to_string()),
        "revision" => Filter::Revision(value.parse().map_err(|_| bad("a revision number"))?),
        "pinned" => Filter::Pinned(value.parse().map_err(|_| bad("`true` or `false`"))?),
        _ => {
            return Err(ApiError::invalid_field(
                key,
                "instances filter on `state`, `server_id`, `revision` or `pinned`",
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_runtime::model::{ContainerId, InstanceId, ServerId};
    use std::time::{Duration, SystemTime};

    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn instances() -> Vec<InstanceInfo> {
        let (container, server) = (ContainerId::generate(), ServerId::generate());
        (0..5)
            .map(|n| InstanceInfo {
                id: InstanceId::generate(),
                ordinal: n + 1,
                created: SystemTime::UNIX_EPOCH,
                container_id: container,
                server_id: server,
                revision: 1 + n % 2,
                state: if n == 0 {
                    InstanceState::Starting
                } else {
                    InstanceState::Running
                },
                state_changed: SystemTime::UNIX_EPOCH + Duration::from_secs(n.into()),
                in_flight: 0,
                pinned: n < 2,
                waiting_reason: None,
                sandbox_id: None,
                address: None,
            })
            .collect()
    }

    #[test]
    fn filters_sort_and_pages_apply_in_that_order() {
        let all = instances();
        let query = InstanceQuery::parse(&pairs(
            "filter[state]=running&sort=-revision,changed&page[size]=2&page[number]=1",
        ))
        .unwrap();
        let page = query.apply(all.clone());
        let revisions: Vec<_> = page.iter().map(|i| i.revision).collect();
        assert_eq!(revisions, [2, 2]);
        assert!(page[0].state_changed < page[1].state_changed);
        let second = InstanceQuery::parse(&pairs(
            "filter[state]=running&sort=-revision,changed&page[size]=2&page[number]=2",
        ))
        .unwrap()
        .apply(all.clone());
        assert_eq!(
            second.iter().map(|i| i.revision).collect::<Vec<_>>(),
            [1, 1]
        );

        let by_id_desc = InstanceQuery::parse(&pairs("sort=-id"))
            .unwrap()
            .apply(all.clone());
        assert!(by_id_desc.windows(2).all(|w| w[0].id > w[1].id));
        let pinned = InstanceQuery::parse(&pairs("filter[pinned]=true"))
            .unwrap()
            .apply(all.clone());
        assert_eq!(pinned.len(), 2);
        assert_eq!(InstanceQuery::parse(&[]).unwrap().apply(all).len(), 5);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (query, field) in [
            ("sort=name", "sort"),
            ("sort=-", "sort"),
            ("include=friends", "include"),
            ("filter[color]=red", "filter[color]"),
            ("filter[state]=asleep", "filter[state]"),
            ("filter[revision]=x", "filter[revision]"),
            ("page[size]=0", "page[size]"),
            ("page[size]=101", "page[size]"),
            ("page[number]=0", "page[number]"),
            ("limit=3", "limit"),
        ] {
            let e = InstanceQuery::parse(&pairs(query)).unwrap_err();
            assert_eq!(e.field(), Some(field), "{query}");
        }
        let includes = InstanceQuery::parse(&pairs("include=servers,containers,servers"))
            .unwrap()
            .includes;
        assert_eq!(includes, [Include::Servers, Include::Containers]);
    }
}
