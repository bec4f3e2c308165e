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
