//! `ember bench --soak DURATION`: mixed load for a long while, and the runtime's
//! resident memory, open descriptors, threads and errors over time. The load:
//! warm requests to a wasm and an OCI container (two clients each), cold requests
//! to a wasm and an OCI container that scale to zero between them, and churn: a
//! container created, invoked once and deleted every second (wasm, every fourth
//! OCI). OCI needs root; without it only the wasm load runs, and the report says
//! so. After a warm-up (a sixth of the run, at most a minute), memory and
//! descriptors must stay flat within 10%, and nothing may fail.

use super::servers::spawn_tied_to_bench;
use super::watched::WatchedRuntime;
use crate::workloads::oci_image::push_busybox_http_image;
use crate::workloads::registry::Registry;
use crate::workloads::{HELLO_BODY, HELLO_COMPONENT};
use anyhow::{Context, ensure};
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How much memory and descriptors may move after the warm-up, in percent.
const FLAT_WITHIN_PERCENT: f64 = 10.0;
/// Errors kept in the report, to say what failed.
const ERRORS_SHOWN: usize = 20;

/// One reading of the runtime.
#[derive(Debug, Clone, Serialize)]
pub struct SoakSample {
    /// Seconds since the load began.
    pub at_seconds: f64,
    pub rss_mib: f64,
    pub open_fds: usize,
    pub threads: usize,
    /// Requests and operations done so far.
    pub operations: u64,
    /// Of which failed.
    pub errors: u64,
}

#[derive(Debug, Serialize)]
pub struct SoakReport {
    pub machine: super::report::Machine,
    pub duration_seconds: f64,
    pub warm_up_seconds: f64,
    /// Whether OCI containers were part of the load (they need root).
    pub oci: bool,
    pub samples: Vec<SoakSample>,
    pub operations: u64,
    pub errors: u64,
    /// The first errors, each with what failed.
    pub error_examples: Vec<String>,
    /// After the warm-up: how the median of the last third of the samples differs
    /// from that of the first third, in percent (a trend, not the noise of one
    /// sample, such as a connection open at that moment).
    pub rss_drift_percent: f64,
    pub fd_drift_percent: f64,
    /// Memory and descriptors flat within 10% after the warm-up, and no error.
    pub steady: bool,
}

/// What the load counts.
#[derive(Default)]
struct Tally {
    operations: AtomicU64,
    errors: AtomicU64,
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn ok(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    fn failed(&self, what: String) {
        self.operations.fetch_add(1, Ordering::Relaxed);
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().unwrap_or_else(|e| e.into_inner());
        if examples.len() < ERRORS_SHOWN {
            examples.push(what);
        }
    }

    fn record<T>(&self, what: &str, outcome: anyhow::Result<T>) -> Option<T> {
        match outcome {
            Ok(value) => {
                self.ok();
                Some(value)
            }
            Err(e) => {
                self.failed(format!("{what}: {e:#}"));
                None
            }
        }
    }
}

/// The runtime and a client for its API and ingress.
struct Target {
    runtime: WatchedRuntime,
    client: reqwest::Client,
}

impl Target {
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .client
            .request(method, format!("http://{}{path}", self.runtime.api))
            .bearer_auth(&self.runtime.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "{status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn invoke(&self, name: &str, expected: &str) -> anyhow::Result<()> {
        let response = self
            .client
            .get(format!("http://{}/", self.runtime.ingress))
            .header("host", format!("{name}.ember.localhost"))
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(
            status.is_success() && body == expected,
            "{name}: {status} {body:?}"
        );
        Ok(())
    }

    /// Creates a container and waits until it is deployed; returns its id.
    async fn deploy(&self, spec: Value) -> anyhow::Result<String> {
        let created = self
            .api(reqwest::Method::POST, "/v1/containers", Some(spec))
            .await?;
        let id = created["id"].as_str().context("an id")?.to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let container = self
                .api(reqwest::Method::GET, &format!("/v1/containers/{id}"), None)
                .await?;
            match container["status"].as_str() {
                Some("deployed") => return Ok(id),
                Some("failed") => anyhow::bail!("deployment failed: {}", container["statusReason"]),
                _ => ensure!(Instant::now() < deadline, "not deployed within 2 minutes"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The OCI image's answer to `/`.
const OCI_BODY: &str = "hello from busybox httpd\n";

pub async fn run(duration: Duration) -> anyhow::Result<SoakReport> {
    let oci = nix::unistd::geteuid().is_root();
    let registry = Registry::start_with(spawn_tied_to_bench)?;
    registry
        .push_wasm("soak/hello", "v1", HELLO_COMPONENT)
        .await?;
    let wasm = format!("{}/soak/hello:v1", registry.addr);
    let busybox = format!("{}/soak/httpd:v1", registry.addr);
    if oci {
        push_busybox_http_image(registry.addr, "soak/httpd", "v1").await?;
    }
    let data = tempfile::tempdir().context("creating a data dir")?;
    let target = Arc::new(Target {
        runtime: WatchedRuntime::start(data.path())?,
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()?,
    });
    let spec = |name: &str, image: &str, idle: u64| json!({ "name": name, "image": image, "idleTimeoutSeconds": idle, "cpu": 0.1, "ram": "32Mi" });
    let mut steady = vec![
        ("warm-wasm", wasm.clone(), 3600, HELLO_BODY),
        ("cold-wasm", wasm.clone(), 1, HELLO_BODY),
    ];
    if oci {
        steady.push(("warm-oci", busybox.clone(), 3600, OCI_BODY));
        steady.push(("cold-oci", busybox.clone(), 1, OCI_BODY));
    }
    for (name, image, idle, _) in &steady {
        target.deploy(spec(name, image, *idle)).await?;
    }

    let tally = Arc::new(Tally::default());
    let running = Arc::new(AtomicBool::new(true));
    let mut load = tokio::task::JoinSet::new();
    for (name, _, idle, body) in steady {
        let (clients, pause) = if idle > 1 {
            (2, Duration::from_millis(5))
        } else {
            (1, Duration::from_millis(1500))
        };
        for _ in 0..clients {
            let (target, tally, running) = (target.clone(), tally.clone(), running.clone());
            load.spawn(async move {
                while running.load(Ordering::Relaxed) {
                    let outcome = target.invoke(name, body).await;
                    tally.record(&format!("GET {name}"), outcome);
                    tokio::time::sleep(pause).await;
                }
            });
        }
    }
    {
        let (target, tally, running) = (target.clone(), tally.clone(), running.clone());
        load.spawn(async move {
            for n in 0u64.. {
                if !running.load(Ordering::Relaxed) {
                    break;
                }
                let name = format!("churn-{n}");
                let (image, body) = if oci && n % 4 == 3 {
                    (&busybox, OCI_BODY)
                } else {
                    (&wasm, HELLO_BODY)
                };
                let churned = async {
                    let id = target.deploy(spec(&name, image, 60)).await?;
                    target.invoke(&name, body).await?;
                    target
                        .client
                        .delete(format!("http://{}/v1/containers/{id}", target.runtime.api))
                        .bearer_auth(&target.runtime.token)
                        .send()
                        .await?
                        .error_for_status()?;
                    anyhow::Ok(())
                };
                tally.record(&format!("create, invoke and delete {name}"), churned.await);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    let began = Instant::now();
    let interval = (duration / 60).max(Duration::from_secs(1));
    let mut samples = Vec::new();
    while began.elapsed() < duration {
        tokio::time::sleep(interval.min(duration.saturating_sub(began.elapsed()))).await;
        let sample = SoakSample {
            at_seconds: began.elapsed().as_secs_f64(),
            rss_mib: target.runtime.rss_mib()?,
            open_fds: target.runtime.open_fds()?,
            threads: target.runtime.threads()?,
            operations: tally.operations.load(Ordering::Relaxed),
            errors: tally.errors.load(Ordering::Relaxed),
        };
        eprintln!(
            "[soak] {:.0} s: RSS {:.1} MiB, {} descriptors, {} threads, {} operations, {} errors",
            sample.at_seconds,
            sample.rss_mib,
            sample.open_fds,
            sample.threads,
            sample.operations,
            sample.errors
        );
        samples.push(sample);
    }
    running.store(false, Ordering::Relaxed);
    while load.join_next().await.is_some() {}

    let warm_up = (duration / 6).min(Duration::from_secs(60));
    let after: Vec<_> = samples
        .iter()
        .filter(|s| s.at_seconds >= warm_up.as_secs_f64())
        .collect();
    let rss_drift_percent = drift(&after.iter().map(|s| s.rss_mib).collect::<Vec<_>>());
    let fd_drift_percent = drift(&after.iter().map(|s| s.open_fds as f64).collect::<Vec<_>>());
    let errors = tally.errors.load(Ordering::Relaxed);
    if let Ok(target) = Arc::try_unwrap(target) {
        target.runtime.stop();
    }
    Ok(SoakReport {
        machine: super::report::Machine::this(),
        duration_seconds: duration.as_secs_f64(),
        warm_up_seconds: warm_up.as_secs_f64(),
        oci,
        operations: tally.operations.load(Ordering::Relaxed),
        errors,
        error_examples: tally
            .examples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        steady: errors == 0
            && rss_drift_percent.abs() <= FLAT_WITHIN_PERCENT
            && fd_drift_percent.abs() <= FLAT_WITHIN_PERCENT,
        rss_drift_percent,
        fd_drift_percent,
        samples,
    })
}

/// A line of the plot: its colour and the figure it draws of each sample.
type Series = (&'static str, fn(&SoakSample) -> f64);

/// How the median of the last third of `values` differs from the median of the
/// first third, in percent.
fn drift(values: &[f64]) -> f64 {
    let third = values.len() / 3;
    if third == 0 {
        return 0.0;
    }
    let median = |part: &[f64]| {
        let mut sorted = part.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    let (first, last) = (
        median(&values[..third]),
        median(&values[values.len() - third..]),
    );
    if first <= 0.0 {
        0.0
    } else {
        (last - first) / first * 100.0
    }
}

impl SoakReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>9}  {:>8}  {:>6}  {:>7}  {:>10}  {:>6}",
            "seconds", "RSS MiB", "fds", "threads", "operations", "errors"
        );
        for s in &self.samples {
            let _ = writeln!(
                out,
                "{:>9.1}  {:>8.1}  {:>6}  {:>7}  {:>10}  {:>6}",
                s.at_seconds, s.rss_mib, s.open_fds, s.threads, s.operations, s.errors
            );
        }
        let _ = writeln!(
            out,
            "after the {:.0} s warm-up, from the first third to the last: RSS {:+.1}%, descriptors {:+.1}% (within {FLAT_WITHIN_PERCENT}% each); {} errors in {} operations{}: {}",
            self.warm_up_seconds,
            self.rss_drift_percent,
            self.fd_drift_percent,
            self.errors,
            self.operations,
            if self.oci {
                ""
            } else {
                " (wasm only: OCI needs root)"
            },
            if self.steady { "steady" } else { "NOT steady" }
        );
        for example in &self.error_examples {
            let _ = writeln!(out, "error: {example}");
        }
        out
    }

    /// RSS and descriptors over time, each on its own scale.
    pub fn svg(&self) -> String {
        let (width, height, left, top, plot_w, plot_h) = (760.0, 320.0, 60.0, 40.0, 660.0, 220.0);
        let end = self.duration_seconds.max(1.0);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"20\" font-size=\"14\">ember bench --soak: resident memory (orange) and open descriptors (blue) over {end:.0} s; \
             the dashed line ends the warm-up</text>\n\
             <rect x=\"{left}\" y=\"{top}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#999\"/>\n"
        );
        let x = |at: f64| left + at / end * plot_w;
        let warm = x(self.warm_up_seconds);
        let _ = writeln!(
            svg,
            "<line x1=\"{warm:.1}\" y1=\"{top}\" x2=\"{warm:.1}\" y2=\"{:.1}\" stroke=\"#999\" stroke-dasharray=\"4\"/>",
            top + plot_h
        );
        let series: [Series; 2] = [
            ("#d9480f", |s| s.rss_mib),
            ("#1c7ed6", |s| s.open_fds as f64),
        ];
        for (colour, value) in series {
            let most = self.samples.iter().map(value).fold(0.0, f64::max).max(1e-9) * 1.2;
            let points: Vec<String> = self
                .samples
                .iter()
                .map(|s| {
                    format!(
                        "{:.1},{:.1}",
                        x(s.at_seconds),
                        top + plot_h - value(s) / most * plot_h
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                points.join(" ")
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report(rss: &[f64], errors: u64) -> SoakReport {
        let samples: Vec<_> = rss
            .iter()
            .enumerate()
            .map(|(n, rss)| SoakSample {
                at_seconds: n as f64 * 10.0,
                rss_mib: *rss,
                open_fds: 50,
                threads: 12,
                operations: n as u64 * 100,
                errors,
            })
            .collect();
        SoakReport {
            machine: super::super::report::Machine::this(),
            duration_seconds: 60.0,
            warm_up_seconds: 10.0,
            oci: true,
            operations: 600,
            errors,
            error_examples: Vec::new(),
            rss_drift_percent: 0.0,
            fd_drift_percent: 0.0,
            steady: errors == 0,
            samples,
        }
    }

    #[test]
    fn drift_compares_the_thirds_and_ignores_a_spike() {
        assert_eq!(drift(&[10.0, 10.0, 30.0, 10.0, 10.0, 10.0]), 0.0);
        assert_eq!(drift(&[10.0, 10.0, 11.0, 11.0, 12.0, 12.0]), 20.0);
        assert_eq!(drift(&[5.0]), 0.0);
    }

    #[test]
    fn the_table_and_plot_show_every_sample() {
        let report = sample_report(&[40.0, 41.0, 41.5, 41.0], 0);
        let table = report.table();
        assert_eq!(table.lines().count(), 6, "{table}");
        assert!(table.contains("steady"), "{table}");
        let svg = report.svg();
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert!(!sample_report(&[40.0], 3).table().contains(": steady"));
    }
}
