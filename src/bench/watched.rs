//! A runtime a bench starts on a data dir of its own, kills and starts again, and
//! watches from outside: its API, its ingress, its memory, descriptors, threads
//! and CPU time, read from /proc.

use super::servers::spawn_tied_to_bench;
use anyhow::{Context, bail, ensure};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The bridge and subnet of these runtimes: their own, apart from a running
/// runtime's and from the main bench's, so that benches can run beside them.
const BRIDGE: &str = "embersoak0";
const SUBNET: &str = "10.253.0.0/24";

/// A runtime this bench starts, kills and starts again on one data dir.
pub struct WatchedRuntime {
    child: Child,
    pub api: SocketAddr,
    pub ingress: SocketAddr,
    pub token: String,
}

impl WatchedRuntime {
    /// Starts `ember serve` (this executable) on `data_dir`, on free loopback ports
    /// and the bench's own bridge.
    pub fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--api-addr", "127.0.0.1:0", "--ingress-addr", "127.0.0.1:0"])
            .args(["--ssh-addr", "127.0.0.1:0"])
            .args(["--bridge", BRIDGE, "--subnet", SUBNET])
            .env("EMBER_LOG", "error")
            .env_remove("EMBER_ADMIN_TOKEN")
            .stdout(Stdio::piped());
        let mut child = spawn_tied_to_bench(&mut command).context("starting ember serve")?;
        let stdout = child.stdout.take().context("stdout is piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut api, mut ingress) = (None, None);
        while api.is_none() || ingress.is_none() {
            let Some(line) = lines.next() else {
                let _ = child.kill();
                bail!("ember serve exited before listening");
            };
            let line = line?;
            let addr = |prefix: &str| -> Option<SocketAddr> {
                line.strip_prefix(prefix)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            };
            api = api.or(addr("api listening on http://"));
            ingress = ingress.or(addr("ingress listening on http://"));
        }
        let (api, ingress) = (
            api.context("an API address")?,
            ingress.context("an ingress address")?,
        );
        std::thread::spawn(move || lines.for_each(drop));
        let token = std::fs::read_to_string(data_dir.join(ember_runtime::auth::ADMIN_TOKEN_FILE))
            .context("reading the admin token")?
            .trim()
            .to_string();
        Ok(Self {
            child,
            api,
            ingress,
            token,
        })
    }

    fn get(&self, client: &reqwest::Client, query: &str) -> reqwest::RequestBuilder {
        client
            .get(format!("http://{}/v1/containers?{query}", self.api))
            .bearer_auth(&self.token)
    }

    pub async fn list(&self, client: &reqwest::Client, query: &str) -> anyhow::Result<Value> {
        let response = self.get(client, query).send().await?;
        ensure!(
            response.status().is_success(),
            "listing: {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    pub async fn total(&self, client: &reqwest::Client, filter: &str) -> anyhow::Result<u64> {
        let page = self
            .list(client, &format!("rowsPerPage=1&{filter}"))
            .await?;
        page["total"].as_u64().context("a total")
    }

    /// The store writer's changes and flushes so far, from `/metrics`.
    pub async fn store_writes(&self, client: &reqwest::Client) -> anyhow::Result<(u64, u64)> {
        let text = client
            .get(format!("http://{}/metrics", self.api))
            .send()
            .await?
            .text()
            .await?;
        let counter = |name: &str| -> anyhow::Result<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .with_context(|| format!("{name} in /metrics"))?
                .parse()
                .with_context(|| format!("{name} in /metrics"))
        };
        Ok((
            counter("ember_store_changes_total")?,
            counter("ember_store_flushes_total")?,
        ))
    }

    /// Open file descriptors of the runtime.
    pub fn open_fds(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(self.proc_file("fd"))?.count())
    }

    /// Threads of the runtime.
    pub fn threads(&self) -> anyhow::Result<usize> {
        let status = std::fs::read_to_string(self.proc_file("status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .context("Threads")?
            .trim()
            .parse()
            .context("Threads")
    }

    fn proc_file(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{name}", self.child.id()))
    }

    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(self.proc_file("status"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .context("VmRSS")?
            .parse()?;
        Ok(kib / 1024.0)
    }

    /// CPU time (user and system) the process used over `window`, in percent of
    /// one core.
    pub async fn cpu_percent(&self, window: Duration) -> anyhow::Result<f64> {
        let ticks = || -> anyhow::Result<f64> {
            let stat = std::fs::read_to_string(self.proc_file("stat"))?;
            // The fields after the command name, which is in parentheses.
            let after = stat.rsplit_once(')').context("a stat line")?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let (utime, stime): (f64, f64) = (fields[11].parse()?, fields[12].parse()?);
            Ok(utime + stime)
        };
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
        let before = ticks()?;
        tokio::time::sleep(window).await;
        let used = (ticks()? - before) / hz;
        Ok(used / window.as_secs_f64() * 100.0)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the runtime (SIGTERM: it stops its instances), then removes the
    /// bridge it made; a later start makes it again.
    pub fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(Stdio::null())
            .status();
    }
}
