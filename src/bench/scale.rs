//! `ember bench --scale`: what many containers cost one node. For each count, a
//! fresh runtime gets that many wasm containers of one image from a loopback
//! registry, created one after another over one keep-alive connection while the
//! earlier ones deploy; then the bench measures how long deployment trails the
//! last create, what a page of the list costs (first, by cursor, and deep by
//! number), the runtime's resident memory and idle CPU, and how soon it answers
//! again after a SIGKILL.

use super::servers::spawn_tied_to_bench;
use super::watched::WatchedRuntime;
use crate::workloads::HELLO_COMPONENT;
use crate::workloads::registry::Registry;
use anyhow::{Context, ensure};
use serde::Serialize;
use serde_json::json;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Clients creating containers at once, each on its own keep-alive connection:
/// one, creating containers one after another, so that a create's latency is the
/// API's own and not a queue behind other clients on a saturated machine.
const CLIENTS: usize = 1;
/// Page size measured.
const PAGE: usize = 100;
/// Times each page is read for its median.
const PAGE_READS: usize = 30;
/// How long idle CPU is measured over.
const IDLE_WINDOW: Duration = Duration::from_secs(10);
/// Longest the bench waits for every container to deploy.
const DEPLOY_LIMIT: Duration = Duration::from_secs(900);

/// The counts measured by default, and with `--quick`.
pub const DEFAULT_COUNTS: [usize; 4] = [100, 1_000, 10_000, 100_000];
pub const QUICK_COUNTS: [usize; 2] = [100, 1_000];

/// What one count cost.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub containers: usize,
    pub create_p50_ms: f64,
    pub create_p99_ms: f64,
    /// The slowest `/healthz` or `/readyz` answer while the containers were
    /// created and deployed (probed every 10 ms).
    pub probe_max_ms: f64,
    /// Wall time of all the creates.
    pub create_seconds: f64,
    /// From the last create answered until no container is deploying.
    pub deployed_after_last_create_seconds: f64,
    /// Changes of the state store per flush while creating and deploying (the
    /// writer's group commit).
    pub changes_per_flush: f64,
    /// Median time of the first page of 100.
    pub first_page_ms: f64,
    /// Median time of a page of 100 in the middle of the list, by cursor.
    pub cursor_page_ms: f64,
    /// Median time of the same page by number (`page=`).
    pub numbered_page_ms: f64,
    /// Resident memory once every container is deployed and idle.
    pub rss_mib: f64,
    /// CPU the idle runtime uses, in percent of one core.
    pub idle_cpu_percent: f64,
    /// From the restarted process's start until it is ready and lists every
    /// container.
    pub restart_seconds: f64,
}

/// The whole run, as `--json` writes it.
#[derive(Debug, Serialize)]
pub struct ScaleReport {
    pub machine: super::report::Machine,
    pub rows: Vec<ScaleRow>,
    /// The goals of issue 23, checked where the run measured them.
    pub goals: Vec<ScaleGoal>,
}

/// One goal and whether the run met it.
#[derive(Debug, Serialize)]
pub struct ScaleGoal {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

pub async fn run(counts: &[usize]) -> anyhow::Result<ScaleReport> {
    ensure!(!counts.is_empty(), "--scale needs at least one count");
    let registry = Registry::start_with(spawn_tied_to_bench)?;
    registry
        .push_wasm("scale/hello", "v1", HELLO_COMPONENT)
        .await?;
    let image = format!("{}/scale/hello:v1", registry.addr);
    let mut rows = Vec::new();
    for &count in counts {
        eprintln!("[scale] {count} containers");
        rows.push(measure(count, &image).await?);
        eprintln!("[scale] {:?}", rows.last());
    }
    let goals = goals(&rows);
    Ok(ScaleReport {
        machine: super::report::Machine::this(),
        rows,
        goals,
    })
}

async fn measure(count: usize, image: &str) -> anyhow::Result<ScaleRow> {
    let data = tempfile::tempdir().context("creating a data dir")?;
    let mut runtime = WatchedRuntime::start(data.path())?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()?;

    let probing = Arc::new(AtomicBool::new(true));
    let prober = tokio::spawn(probe(client.clone(), runtime.api, probing.clone()));
    let started = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for first in 0..CLIENTS {
        let (client, api, token, image) = (
            client.clone(),
            runtime.api,
            runtime.token.clone(),
            image.to_string(),
        );
        creators.spawn(async move {
            let mut latencies = Vec::new();
            for n in (first..count).step_by(CLIENTS) {
                let body =
                    json!({ "name": format!("s{n}"), "image": image, "idleTimeoutSeconds": 1 });
                let sent = Instant::now();
                let response = client
                    .post(format!("http://{api}/v1/containers"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await?;
                let status = response.status();
                response.bytes().await?;
                latencies.push(sent.elapsed());
                ensure!(
                    status == reqwest::StatusCode::CREATED,
                    "create {n}: {status}"
                );
            }
            Ok::<_, anyhow::Error>(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = creators.join_next().await {
        latencies.extend(done??);
    }
    let create_seconds = started.elapsed().as_secs_f64();
    let last_create = Instant::now();
    let deadline = last_create + DEPLOY_LIMIT;
    while runtime.total(&client, "status=deploying").await? > 0 {
        ensure!(
            Instant::now() < deadline,
            "not all deployed within {DEPLOY_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deployed_after = last_create.elapsed().as_secs_f64();
    probing.store(false, Ordering::Relaxed);
    let probe_max_ms = prober.await??;
    let (changes, flushes) = runtime.store_writes(&client).await?;
    let changes_per_flush = changes as f64 / flushes.max(1) as f64;
    let failed = runtime.total(&client, "status=failed").await?;
    ensure!(failed == 0, "{failed} deployments failed");
    latencies.sort_unstable();
    let percentile = |q: f64| {
        let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
        latencies[rank - 1].as_secs_f64() * 1e3
    };

    let first_page = page_time(&runtime, &client, &format!("rowsPerPage={PAGE}")).await?;
    let middle = (count / PAGE / 2).max(1);
    let cursor = cursor_before_page(&runtime, &client, middle).await?;
    let cursor_page = match &cursor {
        Some(cursor) => {
            page_time(
                &runtime,
                &client,
                &format!("rowsPerPage={PAGE}&continue={cursor}"),
            )
            .await?
        }
        None => first_page,
    };
    let numbered_page = page_time(
        &runtime,
        &client,
        &format!("rowsPerPage={PAGE}&page={middle}"),
    )
    .await?;

    // Let the deployments' last writes and the first idle scale-downs pass.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_cpu_percent = runtime.cpu_percent(IDLE_WINDOW).await?;
    let rss_mib = runtime.rss_mib()?;

    runtime.kill();
    let restarted = Instant::now();
    runtime = WatchedRuntime::start(data.path())?;
    loop {
        let ready = client
            .get(format!("http://{}/readyz", runtime.api))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready && runtime.total(&client, "").await? == count as u64 {
            break;
        }
        ensure!(
            restarted.elapsed() < Duration::from_secs(120),
            "the restarted runtime did not list every container within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let restart_seconds = restarted.elapsed().as_secs_f64();
    runtime.stop();
    Ok(ScaleRow {
        containers: count,
        create_p50_ms: percentile(0.5),
        create_p99_ms: percentile(0.99),
        probe_max_ms,
        create_seconds,
        deployed_after_last_create_seconds: deployed_after,
        changes_per_flush,
        first_page_ms: first_page,
        cursor_page_ms: cursor_page,
        numbered_page_ms: numbered_page,
        rss_mib,
        idle_cpu_percent,
        restart_seconds,
    })
}

/// Asks `/healthz` and `/readyz` in turn every 10 ms while `probing`; the slowest
/// answer, in milliseconds. A probe that fails is an error.
async fn probe(
    client: reqwest::Client,
    api: SocketAddr,
    probing: Arc<AtomicBool>,
) -> anyhow::Result<f64> {
    let mut slowest: f64 = 0.0;
    for path in ["/healthz", "/readyz"].iter().cycle() {
        if !probing.load(Ordering::Relaxed) {
            break;
        }
        let sent = Instant::now();
        let status = client
            .get(format!("http://{api}{path}"))
            .send()
            .await?
            .status();
        slowest = slowest.max(sent.elapsed().as_secs_f64() * 1e3);
        ensure!(status.is_success(), "{path} answered {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(slowest)
}

/// Issue 23's goals, for the counts the run measured.
fn goals(rows: &[ScaleRow]) -> Vec<ScaleGoal> {
    let mut goals = Vec::new();
    if let (Some(small), Some(large)) = (rows.first(), rows.last())
        && large.containers > small.containers
    {
        for (what, at_small, at_large) in [
            ("first page", small.first_page_ms, large.first_page_ms),
            ("page by cursor", small.cursor_page_ms, large.cursor_page_ms),
        ] {
            let ratio = at_large / at_small;
            goals.push(ScaleGoal {
                goal: format!(
                    "a {what} of {PAGE} at {} containers within 2x of at {}",
                    large.containers, small.containers
                ),
                measured: format!("{at_large:.2} ms / {at_small:.2} ms = {ratio:.2}x"),
                met: ratio <= 2.0,
            });
        }
    }
    if let Some(row) = rows.iter().find(|r| r.containers == 10_000) {
        goals.push(ScaleGoal {
            goal: "10,000 containers: restart answers within 2 s".into(),
            measured: format!("{:.2} s", row.restart_seconds),
            met: row.restart_seconds <= 2.0,
        });
        goals.push(ScaleGoal {
            goal: "10,000 creates of one image all deployed within 30 s of the last".into(),
            measured: format!("{:.2} s", row.deployed_after_last_create_seconds),
            met: row.deployed_after_last_create_seconds <= 30.0,
        });
        goals.push(ScaleGoal {
            goal: "10,000 creates: the API's p99 under 10 ms meanwhile".into(),
            measured: format!("{:.2} ms", row.create_p99_ms),
            met: row.create_p99_ms < 10.0,
        });
        goals.push(ScaleGoal {
            goal: "10,000 creates: /healthz and /readyz always under 10 ms meanwhile".into(),
            measured: format!("slowest {:.2} ms", row.probe_max_ms),
            met: row.probe_max_ms < 10.0,
        });
    }
    goals
}

/// A panel of the plot: its title, and the figure it draws of each row.
type Panel = (&'static str, fn(&ScaleRow) -> f64);

impl ScaleReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>9}  {:>10}  {:>10}  {:>9}  {:>9}  {:>10}  {:>9}  {:>10}  {:>10}  {:>10}  {:>8}  {:>8}  {:>9}",
            "containers",
            "create p50",
            "create p99",
            "probe max",
            "creates",
            "deployed+",
            "per flush",
            "page 1",
            "by cursor",
            "by number",
            "RSS MiB",
            "idle CPU",
            "restart"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:>10}  {:>8.2}ms  {:>8.2}ms  {:>7.2}ms  {:>8.1}s  {:>9.2}s  {:>9.1}  {:>8.2}ms  {:>8.2}ms  {:>8.2}ms  {:>8.1}  {:>7.2}%  {:>8.2}s",
                r.containers,
                r.create_p50_ms,
                r.create_p99_ms,
                r.probe_max_ms,
                r.create_seconds,
                r.deployed_after_last_create_seconds,
                r.changes_per_flush,
                r.first_page_ms,
                r.cursor_page_ms,
                r.numbered_page_ms,
                r.rss_mib,
                r.idle_cpu_percent,
                r.restart_seconds
            );
        }
        for goal in &self.goals {
            let _ = writeln!(
                out,
                "{}: {} ({})",
                goal.goal,
                goal.measured,
                if goal.met { "met" } else { "NOT met" }
            );
        }
        out
    }

    /// Three panels against the container count (log scale): a page's time,
    /// restart time, and resident memory.
    pub fn svg(&self) -> String {
        let panels: [Panel; 3] = [
            ("page of 100, by cursor (ms)", |r| r.cursor_page_ms),
            ("restart until ready (s)", |r| r.restart_seconds),
            ("resident memory (MiB)", |r| r.rss_mib),
        ];
        let (panel_w, panel_h, margin) = (300.0, 220.0, 50.0);
        let width = panels.len() as f64 * (panel_w + margin) + margin;
        let height = panel_h + 2.0 * margin + 20.0;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"20\" font-size=\"14\">ember bench --scale: against the number of containers (log scale)</text>\n"
        );
        let counts: Vec<f64> = self.rows.iter().map(|r| r.containers as f64).collect();
        let (lo, hi) = (
            counts.iter().copied().fold(f64::MAX, f64::min).log10(),
            counts.iter().copied().fold(1.0, f64::max).log10(),
        );
        for (i, (title, value)) in panels.iter().enumerate() {
            let left = margin + i as f64 * (panel_w + margin);
            let top = margin;
            let max = self.rows.iter().map(value).fold(0.0, f64::max).max(1e-9) * 1.1;
            let x = |count: f64| {
                left + if hi > lo {
                    (count.log10() - lo) / (hi - lo) * panel_w
                } else {
                    panel_w / 2.0
                }
            };
            let y = |v: f64| top + panel_h - v / max * panel_h;
            let _ = writeln!(
                svg,
                "<text x=\"{left}\" y=\"{:.1}\">{title}</text>\
                 <rect x=\"{left}\" y=\"{top}\" width=\"{panel_w}\" height=\"{panel_h}\" fill=\"none\" stroke=\"#999\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{max:.2}</text>",
                top - 8.0,
                left - 4.0,
                top + 10.0
            );
            let points: Vec<String> = self
                .rows
                .iter()
                .map(|r| format!("{:.1},{:.1}", x(r.containers as f64), y(value(r))))
                .collect();
            let _ = writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"#d9480f\" stroke-width=\"2\"/>",
                points.join(" ")
            );
            for r in &self.rows {
                let (px, py) = (x(r.containers as f64), y(value(r)));
                let _ = writeln!(
                    svg,
                    "<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"3\" fill=\"#d9480f\"/>\
                     <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                    top + panel_h + 16.0,
                    r.containers
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// The median time of reading one page of the list.
async fn page_time(
    runtime: &WatchedRuntime,
    client: &reqwest::Client,
    query: &str,
) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(PAGE_READS);
    for _ in 0..PAGE_READS {
        let sent = Instant::now();
        let page = runtime.list(client, query).await?;
        times.push(sent.elapsed().as_secs_f64() * 1e3);
        ensure!(
            page["items"].as_array().is_some_and(|i| !i.is_empty()),
            "an empty page"
        );
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The cursor that continues the list at page `page` (from 1), following
/// cursors there.
async fn cursor_before_page(
    runtime: &WatchedRuntime,
    client: &reqwest::Client,
    page: usize,
) -> anyhow::Result<Option<String>> {
    let mut cursor: Option<String> = None;
    for _ in 1..page.max(1) {
        let query = match &cursor {
            Some(c) => format!("rowsPerPage={PAGE}&continue={c}"),
            None => format!("rowsPerPage={PAGE}"),
        };
        cursor = runtime.list(client, &query).await?["continue"]
            .as_str()
            .map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(containers: usize, page: f64, restart: f64) -> ScaleRow {
        ScaleRow {
            containers,
            create_p50_ms: 0.5,
            create_p99_ms: 2.0,
            probe_max_ms: 1.0,
            create_seconds: 1.0,
            deployed_after_last_create_seconds: 0.5,
            changes_per_flush: 2.0,
            first_page_ms: page,
            cursor_page_ms: page,
            numbered_page_ms: page * 3.0,
            rss_mib: containers as f64 / 100.0,
            idle_cpu_percent: 0.5,
            restart_seconds: restart,
        }
    }

    #[test]
    fn goals_compare_the_largest_count_with_the_smallest_and_check_ten_thousand() {
        let rows = vec![
            row(100, 1.0, 0.1),
            row(10_000, 1.5, 0.3),
            row(100_000, 2.5, 3.0),
        ];
        let goals = goals(&rows);
        let page = goals
            .iter()
            .find(|g| g.goal.starts_with("a first page"))
            .unwrap();
        assert!(!page.met, "{page:?}");
        let restart = goals.iter().find(|g| g.goal.contains("restart")).unwrap();
        assert!(restart.met, "{restart:?}");
        let report = ScaleReport {
            machine: super::super::report::Machine::this(),
            rows,
            goals,
        };
        let table = report.table();
        assert!(
            table.contains("100000") && table.contains("NOT met"),
            "{table}"
        );
        let svg = report.svg();
        assert_eq!(svg.matches("<polyline").count(), 3, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 9, "{svg}");
    }
}
