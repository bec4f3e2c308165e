//! Strict JSON bodies: size-limited, unknown fields refused, errors naming the field.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;

/// Largest JSON body accepted.
pub(crate) const MAX_JSON_BYTES: usize = 1 << 20;

/// A JSON object body deserialized strictly into `T`.
pub(crate) struct StrictJson<T>(pub(crate) T);

/// A JSON array body deserialized strictly into a list of `T`.
pub(crate) struct StrictJsonList<T>(pub(crate) Vec<T>);

/// Reads a whole body, refusing more than `limit` bytes with a 413.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::body_too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(
            "bad_body",
            format!("reading the request body failed: {e}"),
        )),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = json_body(req).await?;
        // serde fills a struct from an array too, field by field in order: a body of
        // `["alice"]` would pass for `{"user": "alice"}`.
        if first_token(&bytes) == Some(b'[') {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body must be a JSON object, not an array",
            ));
        }
        parse(&bytes).map(StrictJson)
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJsonList<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = json_body(req).await?;
        parse(&bytes).map(StrictJsonList)
    }
}

/// The body of a request that must say it is JSON.
async fn json_body(req: Request) -> Result<axum::body::Bytes, ApiError> {
    let is_json = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::unsupported_media_type(
            "send the body as Content-Type: application/json",
        ));
    }
    read_body(req.into_body(), MAX_JSON_BYTES).await
}

fn first_token(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Deserializes `bytes`, naming the field at fault when one is.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            );
        }
        // The path names the field at fault, unknown fields included.
        let message = inner.to_string();
        if path == "." {
            ApiError::bad_request("invalid_body", strip_position(&message))
        } else {
            ApiError::invalid_field(path, strip_position(&message))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("trailing data after the JSON value: {e}"),
        )
    })?;
    Ok(value)
}

/// serde_json appends " at line L column C", which means little to an API client.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        cpu: Option<f64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: Option<u16>,
    }

    fn field_of(json: &str) -> String {
        let e = parse::<Body>(json.as_bytes()).unwrap_err();
        e.field().unwrap_or_default().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"cpu": "x"}"#), "cpu");
        assert_eq!(field_of(r#"{"bogus": 1}"#), "bogus");
        assert_eq!(field_of(r#"{"inner": {"port": -1}}"#), "inner.port");
        assert_eq!(field_of(r#"{"inner": {"nope": 1}}"#), "inner.nope");
        let e = parse::<Body>(b"{not json").unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
