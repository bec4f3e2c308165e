//! The other members' APIs, asked with this node's admin token (which every
//! node accepts: tokens are the cluster's): components uploaded to them, and the
//! instances they run.

use super::{BlobPeers, Membership};
use crate::error::RuntimeError;
use crate::model::{ContainerId, InstanceInfo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The other members, as clients of their APIs.
pub(crate) struct Peers {
    membership: Arc<dyn Membership>,
    own_name: String,
    secret: String,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

/// A member's answer to a request sent on to it: status, content type, body.
pub type MemberAnswer = (http::StatusCode, Option<http::HeaderValue>, Vec<u8>);

/// Longest a blob's fetch from one peer may take.
const BLOB_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a member may take to list its instances; one that takes longer (it
/// died, and its lease has not lapsed yet) is left out of the list.
const LIST_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of one member's page of instances.
const LIST_BYTES: usize = 4 << 20;

impl Peers {
    pub(crate) fn new(membership: Arc<dyn Membership>, own_name: String, secret: String) -> Self {
        Self {
            membership,
            own_name,
            secret,
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
        }
    }

    /// The body of `GET path` on `peer`'s API, marked as a peer's so that the
    /// peer answers for itself alone.
    pub(super) async fn get(
        &self,
        peer: SocketAddr,
        path: &str,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        self.send(
            http::Method::GET,
            peer,
            path,
            limit,
            timeout,
            http::StatusCode::OK,
        )
        .await
    }

    /// `method path` on `peer`'s API, marked as a peer's: the body of a 200 as it
    /// arrives (a stream that may not end).
    pub(super) async fn open(
        &self,
        method: http::Method,
        peer: SocketAddr,
        path: &str,
    ) -> Result<hyper::body::Incoming, String> {
        let response = self
            .client
            .request(self.request(method, peer, path)?)
            .await
            .map_err(|e| e.to_string())?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("answered {}", response.status()));
        }
        Ok(response.into_body())
    }

    /// `method path` for `peer`'s API with this node's admin token, marked as a
    /// peer's.
    fn request(
        &self,
        method: http::Method,
        peer: SocketAddr,
        path: &str,
    ) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, String> {
        http::Request::builder()
            .method(method)
            .uri(format!("http://{peer}{path}"))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.secret),
            )
            .header(crate::relay::RELAYED_BY, self.own_name.as_str())
            .body(http_body_util::Full::default())
            .map_err(|e| e.to_string())
    }

    /// As [`Self::get`], for any method, expecting `answer`.
    async fn send(
        &self,
        method: http::Method,
        peer: SocketAddr,
        path: &str,
        limit: usize,
        timeout: Duration,
        answer: http::StatusCode,
    ) -> Result<Vec<u8>, String> {
        use http_body_util::BodyExt;
        let request = self.request(method, peer, path)?;
        let fetch = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            if response.status() != answer {
                return Err(format!("answered {}", response.status()));
            }
            let body = http_body_util::Limited::new(response.into_body(), limit);
            body.collect()
                .await
                .map(|collected| collected.to_bytes().to_vec())
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .map_err(|_| format!("took over {timeout:?}"))?
    }

    /// Sends a client's request on to the member at `api`, with the client's own
    /// `authorization` (the member checks it as it would the client's): the
    /// member's status, content type and body.
    pub(crate) async fn forward(
        &self,
        api: SocketAddr,
        method: http::Method,
        path: &str,
        authorization: Option<http::HeaderValue>,
        json: Option<Vec<u8>>,
    ) -> Result<MemberAnswer, String> {
        use http_body_util::BodyExt;
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{api}{path}"))
            .header(crate::relay::RELAYED_BY, self.own_name.as_str());
        if let Some(authorization) = authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        if json.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(
                json.unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        let send = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
            let body = http_body_util::Limited::new(response.into_body(), LIST_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes()
                .to_vec();
            Ok((status, content_type, body))
        };
        tokio::time::timeout(LIST_TIMEOUT * 5, send)
            .await
            .map_err(|_| "the member did not answer within 10 s".to_string())?
    }

    /// [`Self::forward`] to every other member at once: the answers of those
    /// that gave one.
    pub(crate) async fn forward_to_others(
        &self,
        method: http::Method,
        path: &str,
        authorization: Option<http::HeaderValue>,
        json: Option<Vec<u8>>,
    ) -> Vec<MemberAnswer> {
        let members = self.others();
        let sends = members.iter().map(|member| {
            let (method, authorization, json) =
                (method.clone(), authorization.clone(), json.clone());
            async move {
                let sent = self
                    .forward(member.api, method, path, authorization, json)
                    .await;
                if let Err(why) = &sent {
                    tracing::info!(member = %member.name, %why, "a member did not answer a forwarded request");
                }
                sent.ok()
            }
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The members other than this node.
    pub(super) fn others(&self) -> Vec<super::NodeRecord> {
        let mut members = self.membership.members();
        members.retain(|m| m.name != self.own_name);
        members
    }

    /// The API address of the member whose server id is `server`.
    pub(crate) fn api_of(&self, server: crate::model::ServerId) -> Option<SocketAddr> {
        self.membership
            .members()
            .into_iter()
            .find(|m| m.server_id == server)
            .map(|m| m.api)
    }

    /// Waits until the member at `api` runs `instance` of container `id` (as its
    /// API shows it), for up to `within`.
    pub(crate) async fn wait_running(
        &self,
        api: SocketAddr,
        id: ContainerId,
        instance: crate::model::InstanceId,
        within: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        let path = format!("/v1/containers/{id}/instances/{instance}");
        let mut last = String::from("not listed yet");
        while tokio::time::Instant::now() < deadline {
            match self.get(api, &path, LIST_BYTES, LIST_TIMEOUT).await {
                Ok(body) => {
                    let listed: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    let state = listed["data"]["state"]["current"].as_str().unwrap_or("");
                    if state == "running" {
                        return Ok(());
                    }
                    last = format!("it is {state}");
                }
                Err(why) => last = why,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "the target did not run it within {within:?} ({last})"
        ))
    }

    /// Has every other member stop its instances of container `id` (`DELETE
    /// /v1/containers/{id}/instances` for itself alone); a member that does not
    /// answer is logged and skipped (its instances go idle and scale to zero).
    pub(crate) async fn stop_instances_of(&self, id: ContainerId) {
        let members = self.others();
        let path = format!("/v1/containers/{id}/instances");
        let stops = members.iter().map(|member| {
            let path = path.clone();
            async move {
                let sent = self
                    .send(
                        http::Method::DELETE,
                        member.api,
                        &path,
                        LIST_BYTES,
                        LIST_TIMEOUT,
                        http::StatusCode::ACCEPTED,
                    )
                    .await;
                if let Err(why) = sent {
                    tracing::info!(member = %member.name, %why, "a member did not stop its instances");
                }
            }
        });
        futures::future::join_all(stops).await;
    }

    /// The instances of container `id` the other members run, as their APIs list
    /// them (`GET /v1/containers/{id}/instances`, every page); a member that does
    /// not answer within [`LIST_TIMEOUT`] is left out.
    pub(crate) async fn instances_of(&self, id: ContainerId) -> Vec<InstanceInfo> {
        let members = self.others();
        let lists = members.iter().map(|member| async move {
            let mut found = Vec::new();
            for page in 1.. {
                let path = format!("/v1/containers/{id}/instances?page[size]=100&page[number]={page}");
                let listed = match self.get(member.api, &path, LIST_BYTES, LIST_TIMEOUT).await {
                    Ok(body) => serde_json::from_slice::<serde_json::Value>(&body).ok(),
                    Err(why) => {
                        tracing::info!(member = %member.name, %why, "a member did not list its instances");
                        None
                    }
                };
                let Some(items) = listed.and_then(|l| l["data"].as_array().cloned()) else {
                    break;
                };
                let last = items.len() < 100;
                found.extend(items);
                if last {
                    break;
                }
            }
            found
        });
        futures::future::join_all(lists)
            .await
            .into_iter()
            .flatten()
            .filter_map(|listed| instance_from_member(&listed))
            .collect()
    }
}

/// An instance as another member's API listed it (its place among the
/// container's instances is not listed: 0).
fn instance_from_member(listed: &serde_json::Value) -> Option<InstanceInfo> {
    let changed = humantime::parse_rfc3339(listed["state"]["changed"].as_str()?).ok()?;
    Some(InstanceInfo {
        id: listed["id"].as_str()?.parse().ok()?,
        ordinal: 0,
        created: changed,
        container_id: listed["container_id"].as_str()?.parse().ok()?,
        server_id: listed["server_id"].as_str()?.parse().ok()?,
        revision: u32::try_from(listed["revision"].as_u64()?).ok()?,
        state: serde_json::from_value(listed["state"]["current"].clone()).ok()?,
        state_changed: changed,
        in_flight: u32::try_from(listed["in_flight"].as_u64()?).ok()?,
        pinned: listed["pinned"].as_bool()?,
        waiting_reason: listed["state"]["reason"].as_str().map(str::to_string),
        sandbox_id: listed["sandbox_id"].as_str().map(str::to_string),
        address: listed["address"].as_str().and_then(|a| a.parse().ok()),
    })
}

#[async_trait::async_trait]
impl BlobPeers for Peers {
    async fn fetch(&self, digest: &ember_sandbox::Digest) -> Result<Vec<u8>, RuntimeError> {
        let digest = digest.to_string();
        let mut tried = Vec::new();
        for member in self.others() {
            let path = format!("/v1/blobs/{digest}");
            let limit = crate::runtime::MAX_BLOB_BYTES;
            match self.get(member.api, &path, limit, BLOB_FETCH_TIMEOUT).await {
                Ok(bytes) => return Ok(bytes),
                Err(why) => tried.push(format!("{} {why}", member.name)),
            }
        }
        Err(RuntimeError::Unprocessable(format!(
            "blob {digest} is on no node of the cluster ({}); upload it with POST /v1/blobs",
            if tried.is_empty() {
                "no other node is a member".to_string()
            } else {
                tried.join("; ")
            }
        )))
    }
}
