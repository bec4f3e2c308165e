//! Shared harness for the integration tests: the real `ember` binary on free loopback
//! ports with a temporary data dir, fixture components built from WAT, and a real
//! registry (Debian's docker-registry).
#![allow(dead_code)]

pub mod component;
pub mod etcd;
pub mod fixtures;
pub mod in_process;
pub mod oci;
pub mod oci_image;
pub mod proxy;
#[allow(unused_imports)]
pub use ember::workloads::registry;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `ember serve`.
pub struct Ember {
    child: Child,
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub ingress: SocketAddr,
    pub ssh: SocketAddr,
    pub token: String,
    http: reqwest::Client,
}

impl Ember {
    /// Starts `ember serve` on `data_dir` with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_as(None, data_dir, extra)
    }

    /// Starts `ember serve` with its API and ingress on these addresses (a restart
    /// on the ports clients already use).
    pub fn start_on(data_dir: &Path, extra: &[&str], api: SocketAddr, ingress: SocketAddr) -> Self {
        Self::spawn(
            None,
            data_dir,
            extra,
            (api.to_string(), ingress.to_string()),
        )
    }

    /// Starts `ember serve` as user `uid` (and group `uid`) when given.
    pub fn start_as(uid: Option<u32>, data_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(
            uid,
            data_dir,
            extra,
            ("127.0.0.1:0".into(), "127.0.0.1:0".into()),
        )
    }

    fn spawn(
        uid: Option<u32>,
        data_dir: &Path,
        extra: &[&str],
        (api_addr, ingress_addr): (String, String),
    ) -> Self {
        let binary = match uid {
            None => PathBuf::from(env!("CARGO_BIN_EXE_ember")),
            // The build tree may sit where other users cannot reach (/root): run a copy.
            Some(_) => {
                use std::os::unix::fs::PermissionsExt;
                let copy = data_dir.join("ember-bin");
                std::fs::copy(env!("CARGO_BIN_EXE_ember"), &copy).unwrap();
                std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
                copy
            }
        };
        let mut command = Command::new(binary);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let mut child = command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--api-addr", &api_addr, "--ingress-addr", &ingress_addr])
            .args(["--ssh-addr", "127.0.0.1:0"])
            .args(extra)
            // EMBER_TEST_LOG (say `info`) shows more of the runtime's log.
            .env(
                "EMBER_LOG",
                std::env::var("EMBER_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("EMBER_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting ember serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut api, mut ingress, mut ssh) = (None, None, None);
        while api.is_none() || ingress.is_none() || ssh.is_none() {
            let line = lines
                .next()
                .expect("ember serve exited before listening")
                .expect("reading ember's stdout");
            let addr = |prefix: &str| {
                line.strip_prefix(prefix).map(|rest| {
                    rest.split_whitespace()
                        .next()
                        .unwrap()
                        .parse::<SocketAddr>()
                        .unwrap()
                })
            };
            api = api.or(addr("api listening on http://"));
            ingress = ingress.or(addr("ingress listening on http://"));
            ssh = ssh.or(addr("ssh listening on "));
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let token = std::fs::read_to_string(data_dir.join("admin.token"))
            .expect("admin token file")
            .trim()
            .to_string();
        Self {
            child,
            data_dir: data_dir.to_path_buf(),
            api: api.unwrap(),
            ingress: ingress.unwrap(),
            ssh: ssh.unwrap(),
            token,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
        }
    }

    /// Stops the process as an operator would (SIGTERM) and waits for it to exit;
    /// how long that took, and whether it exited with success.
    pub fn terminate(mut self) -> (Duration, bool) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let sent = Instant::now();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        (sent.elapsed(), status.success())
    }

    /// The runtime's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (a crash, as far as the runtime can tell).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The client requests go out on (no token attached).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// An authenticated API request.
    pub fn api_request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.api_url(path))
            .bearer_auth(&self.token)
    }

    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .api_request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let response = self
            .api_request(method, path)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A request with another bearer token (`None`: with none at all); the body is
    /// sent as JSON when given.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.api_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Uploads a component and returns its `sha256:` digest.
    pub async fn upload(&self, wasm: &[u8]) -> String {
        let response = self
            .api_request(reqwest::Method::POST, "/v1/blobs")
            .body(wasm.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        body["digest"].as_str().unwrap().to_string()
    }

    /// Creates a container and waits until it is deployed; returns it.
    pub async fn deploy(&self, body: Value) -> Value {
        let (status, created) = self
            .send_json(reqwest::Method::POST, "/v1/containers", &body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        self.wait_deployed(created["id"].as_str().unwrap()).await
    }

    /// Uploads `wasm` and deploys it as `name` with extra fields.
    pub async fn deploy_wasm(&self, name: &str, wasm: &[u8], extra: Value) -> Value {
        let digest = self.upload(wasm).await;
        let mut body = json!({ "name": name, "image": digest });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        self.deploy(body).await
    }

    pub async fn wait_deployed(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, container) = self.get_json(&format!("/v1/containers/{id}")).await;
            match container["status"].as_str() {
                Some("deployed") => return container,
                Some("failed") => panic!("deployment failed: {container}"),
                _ => assert!(
                    Instant::now() < deadline,
                    "not deployed in time: {container}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client whose requests to `<name>.ember.localhost` reach this ingress.
    pub fn ingress_client(&self, name: &str) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve(&format!("{name}.ember.localhost"), self.ingress)
            .pool_max_idle_per_host(64)
            .build()
            .unwrap()
    }

    pub fn ingress_url(&self, name: &str, path: &str) -> String {
        format!(
            "http://{name}.ember.localhost:{}{path}",
            self.ingress.port()
        )
    }

    /// GET through the ingress; returns status and body.
    pub async fn invoke(&self, name: &str) -> (StatusCode, String) {
        let response = self
            .ingress_client(name)
            .get(self.ingress_url(name, "/"))
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    }

    pub async fn instances(&self, id: &str) -> Vec<Value> {
        let (status, body) = self
            .get_json(&format!("/v1/containers/{id}/instances"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    /// Every log line the container has kept, as the logs stream's closed range
    /// (`period_end`) sends them: one `data: {json}` event per line.
    pub async fn logs(&self, id: &str) -> String {
        let response = self
            .api_request(
                reqwest::Method::GET,
                &format!("/v1/containers/{id}/logs?period_end=9999999999"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// The value of one metric line (`name{labels}`) in /metrics.
    pub async fn metric(&self, series: &str) -> f64 {
        // Per-container series need a token with the `metrics` scope (or an
        // admin's, as here).
        let text = self
            .api_request(reqwest::Method::GET, "/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    /// Sends `n` requests at once, each on its own connection (all connected first);
    /// returns the responses' statuses, `Retry-After` headers and bodies.
    pub async fn burst(
        &self,
        name: &str,
        path: &str,
        n: usize,
    ) -> Vec<(StatusCode, Option<String>, String)> {
        let go = std::sync::Arc::new(tokio::sync::Barrier::new(n));
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                // One client per request: every request has its own connection.
                let client = self.ingress_client(name);
                let url = self.ingress_url(name, path);
                let health = self.ingress_url(name, "/.well-known/ember/health");
                let go = go.clone();
                tokio::spawn(async move {
                    // Connect first (the ingress answers its health path itself), so
                    // that the requests proper arrive together.
                    client.get(health).send().await.unwrap();
                    go.wait().await;
                    let response = client.get(url).send().await.unwrap();
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    // A body cut short is reported, not a panic of its task.
                    let text = response
                        .text()
                        .await
                        .unwrap_or_else(|e| format!("the body was cut: {e}"));
                    (status, retry_after, text)
                })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    }

    /// Polls GET `path` until `found` finds something in its OK answer; fails after
    /// `within`.
    pub async fn wait_for<T>(
        &self,
        path: &str,
        within: Duration,
        found: impl Fn(&Value) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get_json(path).await;
            if status == StatusCode::OK
                && let Some(found) = found(&body)
            {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never showed it: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until the container has no instance left.
    pub async fn wait_scaled_to_zero(&self, id: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.instances(id).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "still has instances after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Ember {
    /// Stops the runtime as an operator would (SIGTERM), so that it stops its
    /// containers; SIGKILL only if it hangs.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that every response of a burst is 200 with `body`.
pub fn assert_all_answered(results: &[(StatusCode, Option<String>, String)], body: &str) {
    let failed: Vec<_> = results
        .iter()
        .filter(|(status, _, text)| *status != StatusCode::OK || text != body)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        results.len(),
        &failed[..failed.len().min(3)]
    );
}

/// A fresh temporary directory.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ember-test-")
        .tempdir()
        .unwrap()
}
