//! Health probes: the startup and readiness probes a start waits for before the
//! instance takes requests, and the liveness probe asked while it runs (an
//! instance that fails it is replaced, as one that crashed is).

use super::*;
use crate::model::{Probe, Probes};
use http_body_util::BodyExt;

/// The longest a start waits between two tries of a probe: a cold start waits on
/// them, so they come quickly at first, whatever the probe's period.
const START_RETRY_CAP: Duration = Duration::from_millis(100);

/// One try of `probe` on `instance`: passed, or why not. A TCP probe passes: the
/// sandbox waited for the port before it answered (a wasm instance has none).
pub(super) async fn try_once(instance: &dyn Instance, probe: &Probe) -> Result<(), String> {
    let Some(path) = probe.path() else {
        return Ok(());
    };
    let request = http::Request::get(format!("http://localhost{path}"))
        .header(http::header::USER_AGENT, "Ember-Probe/1")
        .body(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| format!("GET {path}: {e}"))?;
    let limit = probe.timeout();
    let asked = async {
        let response = instance
            .handle(request)
            .await
            .map_err(|e| format!("GET {path} failed: {e}"))?;
        let status = response.status();
        // Read to the end, so that the connection is reused.
        let _ = response.into_body().collect().await;
        if status.is_success() || status.is_redirection() {
            Ok(())
        } else {
            Err(format!("GET {path} answered {status}"))
        }
    };
    tokio::time::timeout(limit, asked)
        .await
        .unwrap_or_else(|_| Err(format!("GET {path} did not answer within {limit:?}")))
}

/// Waits until the start's probes pass: the startup probe, then the readiness
/// probe, each within its period × failure threshold. Tries come at once and then
/// ever less often, at most `START_RETRY_CAP` apart (and never more often than
/// needed: at most once a period once that much has passed).
pub(super) async fn until_ready(instance: &dyn Instance, probes: &Probes) -> Result<(), String> {
    for (name, probe) in [
        ("startup", &probes.startup_probe),
        ("readiness", &probes.readiness_probe),
    ] {
        let Some(probe) = probe else { continue };
        if probe.path().is_none() {
            continue;
        }
        let allowance = probe.period() * probe.failure_threshold();
        let began = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match try_once(instance, probe).await {
                Ok(()) => break,
                Err(why) if began.elapsed() >= allowance => {
                    return Err(format!(
                        "its {name} probe did not pass within {allowance:?}: {why}"
                    ));
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(START_RETRY_CAP).min(probe.period());
                }
            }
        }
    }
    Ok(())
}

/// What one try of a watched probe said.
enum Verdict {
    Passed,
    /// Failed, `failures` times in a row so far.
    Failed {
        failures: u32,
        why: String,
    },
}

/// Asks `probe` of `live` every period while it serves, telling `heed` each
/// verdict; `heed` answers whether to go on.
fn watch_probe(
    service: &Arc<ContainerTraffic>,
    live: &Arc<LiveInstance>,
    probe: Probe,
    mut heed: impl FnMut(
        &Arc<ContainerTraffic>,
        Arc<LiveInstance>,
        &Weak<LiveInstance>,
        Verdict,
    ) -> bool
    + Send
    + 'static,
) {
    let background = &service.background;
    let service = Arc::downgrade(service);
    let live = Arc::downgrade(live);
    background.spawn(async move {
        let mut failures = 0;
        loop {
            tokio::time::sleep(probe.period()).await;
            let (Some(traffic), Some(instance)) = (service.upgrade(), live.upgrade()) else {
                return;
            };
            if !traffic.is_serving(&instance) {
                return;
            }
            let verdict = match try_once(instance.instance.as_ref(), &probe).await {
                Ok(()) => {
                    failures = 0;
                    Verdict::Passed
                }
                Err(why) => {
                    failures += 1;
                    Verdict::Failed { failures, why }
                }
            };
            if !heed(&traffic, instance, &live, verdict) {
                return;
            }
        }
    });
}

/// Asks `live` its readiness probe every period while it serves: after the
/// failure threshold in a row it takes no new request (and the autoscaler counts
/// it out), until the probe passes again.
pub(super) fn watch_readiness(
    service: &Arc<ContainerTraffic>,
    live: &Arc<LiveInstance>,
    probe: Probe,
) {
    let threshold = probe.failure_threshold();
    watch_probe(
        service,
        live,
        probe,
        move |traffic, instance, _, verdict| {
            match verdict {
                Verdict::Passed => {
                    if instance.unready.swap(false, Ordering::AcqRel) {
                        tracing::info!(container = %traffic.id, instance = %instance.id, "readiness probe passes again: taking requests");
                        let mut pool = traffic.pool.lock();
                        traffic.dispatch(&mut pool);
                    }
                }
                Verdict::Failed { failures, why } => {
                    if failures >= threshold && !instance.unready.swap(true, Ordering::AcqRel) {
                        tracing::warn!(container = %traffic.id, instance = %instance.id, %why, "readiness probe failed: no new requests until it passes");
                    }
                }
            }
            true
        },
    );
}

/// Asks `live` its liveness probe every period while it serves; after the
/// failure threshold in a row, it is replaced as a crashed instance is (counted in
/// `restarts`, the reason in `statusReason`).
pub(super) fn watch_liveness(
    service: &Arc<ContainerTraffic>,
    live: &Arc<LiveInstance>,
    probe: Probe,
) {
    let threshold = probe.failure_threshold();
    watch_probe(
        service,
        live,
        probe,
        move |traffic, instance, live, verdict| match verdict {
            Verdict::Failed { failures, why } if failures >= threshold => {
                drop(instance);
                traffic.instance_exited(
                    live,
                    &format!("failed its liveness probe {failures} times: {why}"),
                );
                false
            }
            _ => true,
        },
    );
}

impl ContainerTraffic {
    /// Whether `live` is still among the instances that serve (not stopped).
    fn is_serving(&self, live: &Arc<LiveInstance>) -> bool {
        self.pool
            .lock()
            .lifecycle
            .ready()
            .any(|i| Arc::ptr_eq(i, live))
    }
}
