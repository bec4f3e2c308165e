//! What a bench run found, three ways: a table for people, JSON for scripts, and
//! an SVG plot of each case's latency distribution.

use super::stats::Summary;
use serde::Serialize;
use std::fmt::Write;
use std::time::Duration;

/// One measured case (or one that could not run, with the reason).
#[derive(Serialize)]
pub struct CaseResult {
    /// What was measured, e.g. `wasm cold start`.
    pub case: String,
    /// Who served it: `ember`, or the peer's name.
    pub subject: String,
    #[serde(flatten)]
    pub summary: Option<Summary>,
    /// Why there are no figures (a peer not installed, no root), or what to know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip)]
    pub samples: Vec<Duration>,
}

/// Ember's figure against a peer's or a fixed one.
#[derive(Serialize)]
pub struct Comparison {
    pub what: String,
    /// Ember's figure divided by the reference.
    pub ratio: f64,
    /// The project's goal for the ratio, where it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

/// A bound on a ratio.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    pub fn met_by(self, ratio: f64) -> bool {
        match self {
            Self::AtMost(bound) => ratio <= bound,
            Self::AtLeast(bound) => ratio >= bound,
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AtMost(bound) => write!(f, "<= {bound}"),
            Self::AtLeast(bound) => write!(f, ">= {bound}"),
        }
    }
}

impl Serialize for Goal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Comparison {
    pub fn new(what: impl Into<String>, ratio: f64, goal: Option<Goal>) -> Self {
        Self {
            what: what.into(),
            ratio,
            goal,
            met: goal.map(|g| g.met_by(ratio)),
        }
    }
}

/// The whole run, as `--json` writes it.
#[derive(Serialize)]
pub struct Report {
    pub quick: bool,
    pub machine: Machine,
    pub cases: Vec<CaseResult>,
    pub comparisons: Vec<Comparison>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

/// Microseconds to a short human figure: `87.7 µs`, `4.25 ms`, `1.20 s`.
pub fn human(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut rows = vec![
            [
                "case",
                "subject",
                "n",
                "p50",
                "p90",
                "p99",
                "max",
                "requests/s",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for c in &self.cases {
            let mut row = vec![c.case.clone(), c.subject.clone()];
            match &c.summary {
                Some(s) => row.extend([
                    s.n.to_string(),
                    human(s.p50_us),
                    human(s.p90_us),
                    human(s.p99_us),
                    human(s.max_us),
                    s.requests_per_sec.map_or("-".into(), |r| format!("{r:.0}")),
                ]),
                None => row.push(format!("skipped: {}", c.note.as_deref().unwrap_or(""))),
            }
            rows.push(row);
        }
        let mut out = aligned(&rows);
        if !self.comparisons.is_empty() {
            out.push('\n');
            let mut rows = vec![
                ["comparison", "ratio", "goal", ""]
                    .map(String::from)
                    .to_vec(),
            ];
            for c in &self.comparisons {
                rows.push(vec![
                    c.what.clone(),
                    format!("{:.2}", c.ratio),
                    c.goal.map_or("-".into(), |g| g.to_string()),
                    match c.met {
                        Some(true) => "met".into(),
                        Some(false) => "NOT met".into(),
                        None => String::new(),
                    },
                ]);
            }
            out.push_str(&aligned(&rows));
        }
        for c in self.cases.iter().filter(|c| c.summary.is_some()) {
            if let Some(note) = &c.note {
                let _ = writeln!(out, "note: {} ({}): {note}", c.case, c.subject);
            }
        }
        out
    }

    /// Each case as a row on a log time axis: a line from the fastest to the
    /// slowest sample, a box from p50 to p90, and a tick at p99.
    pub fn svg(&self) -> String {
        // The percentiles come from each case's summary; only the fastest sample
        // is read from the samples.
        let cases: Vec<(&CaseResult, &Summary)> = self
            .cases
            .iter()
            .filter_map(|c| Some((c, c.summary.as_ref()?)))
            .collect();
        let (label_w, plot_w, row_h, top) = (330.0, 620.0, 26.0, 40.0);
        let height = top + row_h * cases.len() as f64 + 50.0;
        let width = label_w + plot_w + 20.0;
        // Decades from 10 µs to 10 s.
        let (lo, hi) = (1.0_f64, 7.0_f64);
        let x = |us: f64| label_w + (us.max(10.0).log10() - lo) / (hi - lo) * plot_w;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"20\" font-size=\"14\">ember bench: latency per case (log scale; \
             line min to max, box p50 to p90, tick p99)</text>\n"
        );
        for decade in 1..=7 {
            let px = x(10f64.powi(decade));
            let label = human(10f64.powi(decade))
                .replace(".0 ", " ")
                .replace(".00 ", " ");
            let _ = writeln!(
                svg,
                "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                height - 40.0,
                height - 25.0
            );
        }
        for (i, (c, s)) in cases.iter().enumerate() {
            let fastest = c
                .samples
                .iter()
                .min()
                .map_or(s.p50_us, |d| super::stats::micros(*d));
            let y = top + row_h * i as f64 + row_h / 2.0;
            let colour = if c.subject == "ember" {
                "#d9480f"
            } else {
                "#1c7ed6"
            };
            let _ = writeln!(
                svg,
                "<text x=\"10\" y=\"{:.1}\">{} ({})</text>\
                 <line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\"/>\
                 <rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"12\" fill=\"{colour}\" opacity=\"0.7\"/>\
                 <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
                y + 4.0,
                c.case,
                c.subject,
                x(fastest),
                x(s.max_us),
                x(s.p50_us),
                y - 6.0,
                (x(s.p90_us) - x(s.p50_us)).max(1.5),
                x(s.p99_us),
                y - 8.0,
                x(s.p99_us),
                y + 8.0,
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// Columns padded to their widest cell.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter(|r| r.len() == columns || i < 2)
                .filter_map(|r| r.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(name: &str, subject: &str, samples_us: &[u64]) -> CaseResult {
        let samples: Vec<Duration> = samples_us
            .iter()
            .map(|&u| Duration::from_micros(u))
            .collect();
        CaseResult {
            case: name.into(),
            subject: subject.into(),
            summary: Summary::of(&samples, Some(Duration::from_secs(1))),
            note: None,
            samples,
        }
    }

    fn report() -> Report {
        Report {
            quick: true,
            machine: Machine {
                cpus: 2,
                kernel: "6.18".into(),
            },
            cases: vec![
                case("wasm warm latency", "ember", &[80, 90, 100, 400]),
                CaseResult {
                    note: Some("nginx is not installed".into()),
                    ..case("OCI warm throughput", "nginx", &[])
                },
            ],
            comparisons: vec![Comparison::new(
                "wasm warm throughput, ember / wasmtime serve",
                1.5,
                Some(Goal::AtLeast(1.2)),
            )],
        }
    }

    #[test]
    fn the_table_shows_figures_skips_and_comparisons() {
        let table = report().table();
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("wasm warm latency") && l.contains("ember")),
            "{table}"
        );
        assert!(
            table.contains("n  p50"),
            "skips do not widen columns: {table}"
        );
        assert!(table.contains("90.0 µs"), "{table}");
        assert!(table.contains("skipped: nginx is not installed"), "{table}");
        assert!(table.contains("1.50") && table.contains("met"), "{table}");
    }

    #[test]
    fn the_json_carries_summaries_but_not_raw_samples() {
        let json = serde_json::to_value(report()).unwrap();
        let first = &json["cases"][0];
        assert_eq!(first["p50_us"], 90.0);
        assert_eq!(first["n"], 4);
        assert!(first.get("samples").is_none());
        assert_eq!(json["cases"][1]["note"], "nginx is not installed");
        assert_eq!(json["comparisons"][0]["goal"], ">= 1.2");
        assert_eq!(json["comparisons"][0]["met"], true);
    }

    #[test]
    fn the_plot_has_a_row_per_measured_case() {
        let svg = report().svg();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert_eq!(svg.matches("<rect x=").count(), 1, "{svg}");
        assert!(svg.contains("wasm warm latency (ember)"));
        assert!(!svg.contains("nginx)"));
    }
}
