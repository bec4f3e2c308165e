//! Typed path extractors: each reads the ids its route's path holds, parses them
//! into the model's types, and refuses a bad one with a 400 naming it, so that no
//! handler parses a path segment itself.
//!
//! A handler that must check the caller's scope or capability first (a caller
//! without them hears that before anything about the request) takes
//! `Result<Extractor, ApiError>` and applies `?` after its check.

use crate::error::ApiError;
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use ember_runtime::PowerAction;
use ember_runtime::model::{
    ContainerId, InstanceId, InvalidId, InvalidUserName, JobId, TokenId, UserName,
};

/// The path's parameters by name.
struct Params(RawPathParams);

impl Params {
    async fn read<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        RawPathParams::from_request_parts(parts, state)
            .await
            .map(Self)
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }

    /// The parameter `name`; every route that uses an extractor declares the
    /// parameters it reads, so a missing one is a bug in the route table.
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find_map(|(key, value)| (key == name).then_some(value))
            .unwrap_or_else(|| panic!("the route has no path parameter `{name}`"))
    }

    /// The parameter `name` parsed as an id, or a 400 naming `field`.
    fn id<T: std::str::FromStr<Err = InvalidId>>(
        &self,
        name: &str,
        field: &str,
    ) -> Result<T, ApiError> {
        self.get(name)
            .parse()
            .map_err(|e: InvalidId| ApiError::invalid_field(field, e.to_string()))
    }
}

/// Implements `FromRequestParts` for an extractor from a function of its params.
macro_rules! extractor {
    ($name:ident, |$params:ident| $body:expr) => {
        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let $params = Params::read(parts, state).await?;
                $body
            }
        }
    };
}

/// `{id}`: a container's UUID (`/v1/containers/{id}...`).
pub(crate) struct ContainerIdPath(pub(crate) ContainerId);
extractor!(ContainerIdPath, |p| Ok(Self(p.id("id", "id")?)));

/// `{id}/instances/{instance}`: a container's UUID and one of its instances'.
pub(crate) struct InstanceIdPath(pub(crate) ContainerId, pub(crate) InstanceId);
extractor!(InstanceIdPath, |p| Ok(Self(
    p.id("id", "id")?,
    p.id("instance", "instanceId")?
)));

/// `{id}`: a job's UUID.
pub(crate) struct JobIdPath(pub(crate) JobId);
extractor!(JobIdPath, |p| Ok(Self(p.id("id", "id")?)));

/// `{id}`: a token's UUID.
pub(crate) struct TokenIdPath(pub(crate) TokenId);
extractor!(TokenIdPath, |p| Ok(Self(p.id("id", "id")?)));

/// `{user}`: a user's name (`/v1/users/{user}/quota`).
pub(crate) struct UserNamePath(pub(crate) UserName);
extractor!(UserNamePath, |p| Ok(Self(p.get("user").parse().map_err(
    |e: InvalidUserName| ApiError::invalid_field("user", e.to_string())
)?)));

/// `{uuid}`: an instance's UUID, as the Tutum face names it.
pub(crate) struct TutumUuidPath(pub(crate) InstanceId);
extractor!(TutumUuidPath, |p| Ok(Self(p.id("uuid", "uuid")?)));

/// `{id}`: the integer id of the numbered containers and container services faces.
pub(crate) struct NumberPath(pub(crate) u64);
extractor!(NumberPath, |p| {
    let raw = p.get("id");
    raw.parse()
        .map(Self)
        .map_err(|_| ApiError::invalid_field("id", format!("`{raw}` is not an integer id")))
});

/// `{action}`: a power action of the numbered containers and container services faces.
pub(crate) struct PowerActionPath(pub(crate) PowerAction);
extractor!(PowerActionPath, |p| {
    let raw = p.get("action");
    match raw {
        "start" => Ok(Self(PowerAction::Start)),
        "stop" => Ok(Self(PowerAction::Stop)),
        "restart" => Ok(Self(PowerAction::Restart)),
        "rebuild" => Ok(Self(PowerAction::Rebuild)),
        _ => Err(ApiError::invalid_field(
            "action",
            format!("`{raw}` is not a power action (`start`, `stop`, `restart`, `rebuild`)"),
        )),
    }
});
