//! A small client for the management API.

use crate::cli::ClientArgs;
use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;
use std::time::{Duration, Instant};

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl ApiClient {
    /// Token from `EMBER_TOKEN`, else the local runtime's admin token file.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = match std::env::var("EMBER_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(token) => token,
            None => {
                let path = args.data_dir.join(ember_runtime::auth::ADMIN_TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!("no EMBER_TOKEN set and no token file at {}", path.display())
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Self::with_token(&args.api, token))
    }

    /// A client for the API at `base` that authenticates with `token`.
    pub fn with_token(base: &str, token: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        json(self.request(Method::GET, path).send().await).await
    }

    /// As [`ApiClient::get`], with `None` for a `404`.
    pub async fn get_if_found(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let response = self
            .request(Method::GET, path)
            .send()
            .await
            .context("calling the API")?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        json(Ok(response)).await.map(Some)
    }

    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        json(self.request(method, path).json(body).send().await).await
    }

    pub async fn upload(&self, bytes: Vec<u8>) -> anyhow::Result<Value> {
        self.upload_as(bytes, "application/wasm").await
    }

    /// Uploads a blob as `media_type` (an image's layer, config or manifest).
    pub async fn upload_as(&self, bytes: Vec<u8>, media_type: &str) -> anyhow::Result<Value> {
        let request = self
            .request(Method::POST, "/v1/blobs")
            .header(reqwest::header::CONTENT_TYPE, media_type)
            .body(bytes);
        json(request.send().await).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let response = self
            .request(Method::DELETE, path)
            .send()
            .await
            .context("calling the API")?;
        check(response).await.map(drop)
    }

    /// The answer to `GET path`, to be read as it arrives (an event stream).
    pub async fn open(&self, path: &str) -> anyhow::Result<Response> {
        let response = self
            .request(Method::GET, path)
            .send()
            .await
            .context("calling the API")?;
        check(response).await
    }

    /// The Prometheus text at `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self
            .request(Method::GET, "/metrics")
            .send()
            .await
            .context("calling the API")?;
        check(response)
            .await?
            .text()
            .await
            .context("reading the metrics")
    }

    /// Polls `container` (as the API returned it) until it is no longer deploying,
    /// for at most `limit`; passes each new status reason (pull progress) to
    /// `progress`. Fails when the deployment failed.
    pub async fn wait_deployed(
        &self,
        mut container: Value,
        limit: Duration,
        mut progress: impl FnMut(&str),
    ) -> anyhow::Result<Value> {
        let id = container["id"].as_str().unwrap_or_default().to_string();
        let started = Instant::now();
        let mut shown = None;
        while container["status"] == "deploying" {
            if started.elapsed() > limit {
                bail!("the deployment did not finish within {limit:?}");
            }
            let reason = container["statusReason"].as_str().map(str::to_string);
            if reason.is_some() && reason != shown {
                progress(reason.as_deref().unwrap_or_default());
                shown = reason;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            container = self.get(&format!("/v1/containers/{id}")).await?;
        }
        if container["status"] == "failed" {
            bail!(
                "the deployment failed: {}",
                container["statusReason"]
                    .as_str()
                    .unwrap_or("no reason given")
            );
        }
        Ok(container)
    }

    /// Every container, following the pages.
    pub async fn all_containers(&self) -> anyhow::Result<Vec<Value>> {
        self.all_items("/v1/containers").await
    }

    /// Every item of a paged /v1 list at `path`, following its cursors (or, for a
    /// list without them, its page numbers).
    pub async fn all_items(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut next = format!("{path}?rowsPerPage=100");
        for page in 2.. {
            let body = self.get(&next).await?;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            let total = body["total"].as_u64().unwrap_or(0) as usize;
            let empty = items.is_empty();
            all.extend(items);
            next = match body["continue"].as_str() {
                Some(cursor) => format!("{path}?rowsPerPage=100&continue={cursor}"),
                None if all.len() < total && !empty => {
                    format!("{path}?rowsPerPage=100&page={page}")
                }
                None => break,
            };
        }
        Ok(all)
    }

    /// A container by name or id: one read of the API either way.
    pub async fn find(&self, name_or_id: &str) -> anyhow::Result<Option<Value>> {
        if name_or_id
            .parse::<ember_runtime::model::ContainerId>()
            .is_ok()
        {
            return self
                .get_if_found(&format!("/v1/containers/{name_or_id}"))
                .await;
        }
        let body = self
            .get(&format!("/v1/containers?name={name_or_id}"))
            .await?;
        Ok(body["items"]
            .as_array()
            .and_then(|items| items.first().cloned()))
    }
}

async fn check(response: Response) -> anyhow::Result<Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match body["message"].as_str() {
        Some(message) => bail!("{message} ({status})"),
        None => bail!("the API answered {status}"),
    }
}

async fn json(response: reqwest::Result<Response>) -> anyhow::Result<Value> {
    let response = check(response.context("calling the API")?).await?;
    response.json().await.context("reading the API's answer")
}
