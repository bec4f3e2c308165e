//! `page` and `rowsPerPage` query parameters, and the list envelope.

use crate::error::ApiError;
use ember_runtime::model::{Page, PageRequest};
use serde::Serialize;
use std::collections::HashMap;

/// Parses `page` (from 1) and `rowsPerPage` (1 to 100); other parameters are ignored.
pub(crate) fn page_request(query: &HashMap<String, String>) -> Result<PageRequest, ApiError> {
    let mut request = PageRequest::default();
    if let Some(raw) = query.get("page") {
        request.page = raw.parse().ok().filter(|&p| p >= 1).ok_or_else(|| {
            ApiError::invalid_field("page", format!("`{raw}` is not a page number (1 or more)"))
        })?;
    }
    if let Some(raw) = query.get("rowsPerPage") {
        request.rows_per_page = raw
            .parse()
            .ok()
            .filter(|r| (1..=PageRequest::MAX_ROWS).contains(r))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "rowsPerPage",
                    format!("`{raw}` is not between 1 and {}", PageRequest::MAX_ROWS),
                )
            })?;
    }
    Ok(request)
}

/// The list envelope of the /v1 API: `items`, `total`, `page`, `rowsPerPage`, and
/// `continue` when the list goes on and can be continued by cursor.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListEnvelope<T> {
    items: Vec<T>,
    total: usize,
    page: u32,
    rows_per_page: u32,
    /// Pass as `?continue=` for the page after this one (with the same filters).
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

impl<T> ListEnvelope<T> {
    pub(crate) fn from_page<U>(page: Page<U>, map: impl FnMut(U) -> T) -> Self {
        Self {
            items: page.items.into_iter().map(map).collect(),
            total: page.total,
            page: page.page,
            rows_per_page: page.rows_per_page,
            next: page.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pages_default_to_the_first_and_ignore_other_parameters() {
        let request = page_request(&query(&[("status", "deployed")])).unwrap();
        assert_eq!(request.page, 1);
        assert_eq!(request.rows_per_page, PageRequest::DEFAULT_ROWS);
        let request = page_request(&query(&[("page", "3"), ("rowsPerPage", "100")])).unwrap();
        assert_eq!((request.page, request.rows_per_page), (3, 100));
    }

    #[test]
    fn bad_pages_and_sizes_name_their_parameter() {
        for (key, value) in [
            ("page", "0"),
            ("page", "-1"),
            ("page", "two"),
            ("rowsPerPage", "0"),
            ("rowsPerPage", "101"),
            ("rowsPerPage", ""),
        ] {
            let error = page_request(&query(&[(key, value)])).unwrap_err();
            assert_eq!(error.field(), Some(key), "{key}={value}");
        }
    }

    #[test]
    fn the_envelope_maps_items_and_shows_a_cursor_only_when_there_is_one() {
        let page = Page {
            items: vec![1, 2],
            total: 7,
            page: 1,
            rows_per_page: 2,
            next: None,
        };
        let json = serde_json::to_value(ListEnvelope::from_page(page, |n| n * 10)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "items": [10, 20], "total": 7, "page": 1, "rowsPerPage": 2 })
        );
        let page = Page {
            items: Vec::<u32>::new(),
            total: 7,
            page: 1,
            rows_per_page: 2,
            next: Some("abc".into()),
        };
        let json = serde_json::to_value(ListEnvelope::from_page(page, |n| n)).unwrap();
        assert_eq!(json["continue"], "abc");
    }
}
