//! Requests for one instance by the faces that name instances alone (by UUID or
//! integer id, without their container): in a cluster, an instance another
//! member runs is not found here, so a request this node answers with 404 is
//! sent on to the other members, with the client's own credentials, and the
//! answer of the member that has the instance is the client's.

use crate::json::read_body;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ember_runtime::Runtime;

/// Most bytes of a request body kept to send on (the faces' bodies are small
/// JSON objects).
const FORWARDED_BODY_LIMIT: usize = 1 << 20;

/// Middleware: a 404 here becomes the answer of the member that has the
/// instance, when one does. The runtime comes from the request's extensions
/// (put there by [`crate::router`]).
pub(crate) async fn answered_by_its_member(request: Request, next: Next) -> Response {
    let runtime = request.extensions().get::<Runtime>().cloned();
    let Some(runtime) = runtime.filter(|r| {
        r.is_cluster_member() && !request.headers().contains_key(ember_runtime::RELAYED_BY)
    }) else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
    let authorization = request.headers().get(header::AUTHORIZATION).cloned();
    let (parts, body) = request.into_parts();
    let body = match read_body(body, FORWARDED_BODY_LIMIT).await {
        Ok(body) => body,
        Err(refused) => return refused.into_response(),
    };
    let here = next
        .run(Request::from_parts(parts, Body::from(body.clone())))
        .await;
    if here.status() != StatusCode::NOT_FOUND {
        return here;
    }
    let json = (!body.is_empty()).then(|| body.to_vec());
    let answers = runtime
        .forward_to_other_members(method, &path, authorization, json)
        .await;
    let Some((status, content_type, body)) = answers
        .into_iter()
        .find(|(status, _, _)| *status != StatusCode::NOT_FOUND)
    else {
        return here;
    };
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}
