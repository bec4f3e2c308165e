//! The runtime under test: one this command starts on free loopback ports with a
//! data dir of its own (removed afterwards), or one already running (`--api`).

use crate::client::ApiClient;
use anyhow::{Context, bail};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bridge and subnet of a runtime this command starts: its own, so that it
/// never touches a running runtime's network.
pub const BENCH_BRIDGE: &str = "emberbench0";
const BENCH_SUBNET: &str = "10.251.0.0/24";

/// How long a deployment (pull, compile) may take.
const DEPLOY_LIMIT: Duration = Duration::from_secs(300);

/// A runtime to measure, and how to reach it.
pub struct Target {
    pub client: ApiClient,
    own: Option<OwnRuntime>,
}

struct OwnRuntime {
    child: Child,
    // Read by `--cluster`, built with the `cluster` feature only.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    ingress: SocketAddr,
    bridge: String,
    _data_dir: tempfile::TempDir,
}

impl Target {
    /// Starts `ember serve` (this executable) on free loopback ports.
    pub fn start_own() -> anyhow::Result<Self> {
        Self::start_node(&[], BENCH_BRIDGE, BENCH_SUBNET)
    }

    /// As [`Self::start_own`], with `extra` flags and OCI instances on `bridge` and
    /// `subnet` (a cluster's nodes on one machine each need their own).
    pub fn start_node(extra: &[&str], bridge: &str, subnet: &str) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir().context("creating a data dir")?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .args(["--api-addr", "127.0.0.1:0", "--ingress-addr", "127.0.0.1:0"])
            .args(["--ssh-addr", "127.0.0.1:0"])
            .args(["--bridge", bridge, "--subnet", subnet])
            .args(extra)
            .args(["--idle-timeout", "3600", "--stop-grace", "0"])
            // Room for the 10,000 slow connections of the attack case beside the
            // measured client (the default is half the open files limit).
            .args(["--max-connections", "16000"])
            .env("EMBER_LOG", "error")
            .env_remove("EMBER_ADMIN_TOKEN")
            .stdout(Stdio::piped());
        let mut child =
            super::servers::spawn_tied_to_bench(&mut command).context("starting ember serve")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let (mut api, mut ingress) = (None, None);
        while api.is_none() || ingress.is_none() {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                bail!("ember serve exited before listening");
            };
            let line = line?;
            let address = |prefix: &str| {
                line.strip_prefix(prefix)
                    .and_then(|rest| rest.split_whitespace().next()?.parse::<SocketAddr>().ok())
            };
            api = api.or(address("api listening on http://"));
            ingress = ingress.or(address("ingress listening on http://"));
        }
        let (api, ingress) = (api.expect("read above"), ingress.expect("read above"));
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let token =
            std::fs::read_to_string(data_dir.path().join(ember_runtime::auth::ADMIN_TOKEN_FILE))
                .context("reading the admin token")?;
        Ok(Self {
            client: ApiClient::with_token(&format!("http://{api}"), token.trim().to_string()),
            own: Some(OwnRuntime {
                child,
                ingress,
                bridge: bridge.to_string(),
                _data_dir: data_dir,
            }),
        })
    }

    /// A runtime already running at `client`'s API.
    pub fn existing(client: ApiClient) -> Self {
        Self { client, own: None }
    }

    /// The ingress of a runtime this command started.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub fn ingress(&self) -> Option<SocketAddr> {
        self.own.as_ref().map(|own| own.ingress)
    }

    /// The process id of a runtime this command started.
    pub fn pid(&self) -> Option<u32> {
        self.own.as_ref().map(|own| own.child.id())
    }

    /// Creates a container from `spec` (a POST body) and waits until it is deployed.
    pub async fn deploy(&self, spec: Value) -> anyhow::Result<Deployed> {
        let created = self
            .client
            .send_json(reqwest::Method::POST, "/v1/containers", &spec)
            .await
            .with_context(|| format!("creating {}", spec["name"]))?;
        let container = self
            .client
            .wait_deployed(created, DEPLOY_LIMIT, |_| {})
            .await?;
        let id = container["id"]
            .as_str()
            .context("a container id")?
            .to_string();
        let url = container["urls"][0]
            .as_str()
            .context("the container has no URL")?
            .to_string();
        Ok(Deployed { id, url })
    }

    pub async fn remove(&self, container: &Deployed) -> anyhow::Result<()> {
        self.client
            .delete(&format!("/v1/containers/{}", container.id))
            .await
    }

    /// Stops every instance of `container` and waits until none is left; then,
    /// for OCI containers that keep `prepared` sandboxes, until they are ready (as
    /// for a container that has been idle a while).
    pub async fn scale_to_zero(&self, container: &Deployed, prepared: u32) -> anyhow::Result<()> {
        let instances = format!("/v1/containers/{}/instances", container.id);
        self.client.delete(&instances).await?;
        // Instances still starting (after a burst, say) stop once they are up.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = self.client.get(&instances).await?;
            if listed["data"].as_array().is_some_and(Vec::is_empty) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{} did not scale to zero within 60 s", container.id);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if prepared > 0 {
            let ready = format!(
                "ember_container_prepared_sandboxes{{container=\"{}\"}} {prepared}",
                container.id
            );
            while !self.client.metrics().await?.lines().any(|l| l == ready) {
                if Instant::now() > deadline {
                    bail!("{} prepared no sandbox within 60 s", container.id);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// The running instances' addresses on the node's network (OCI).
    pub async fn instance_addresses(
        &self,
        container: &Deployed,
    ) -> anyhow::Result<Vec<SocketAddr>> {
        let listed = self
            .client
            .get(&format!("/v1/containers/{}/instances", container.id))
            .await?;
        Ok(listed["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["address"].as_str()?.parse().ok())
            .collect())
    }

    /// Stops a runtime this command started (SIGTERM: it stops its instances and
    /// gives back their resources), then removes the bridge it made.
    pub fn stop(mut self) {
        if let Some(own) = self.own.as_mut() {
            let pid = nix::unistd::Pid::from_raw(own.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = own.child.wait();
            let _ = Command::new("ip")
                .args(["link", "del", &own.bridge])
                .stderr(Stdio::null())
                .status();
            let table = format!("ember_{}", own.bridge.replace('-', "_"));
            let _ = Command::new("nft")
                .args(["delete", "table", "bridge", &table])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(own) = self.own.as_mut()
            && own.child.try_wait().ok().flatten().is_none()
        {
            let _ = own.child.kill();
            let _ = own.child.wait();
        }
    }
}

/// A container the bench deployed.
pub struct Deployed {
    pub id: String,
    pub url: String,
}
