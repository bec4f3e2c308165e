//! How many connections a listener has open, from each address and in all, and
//! letting a new one in or not; with what it refused and cut, for /metrics.

use super::{ConnectionPolicy, Cut};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address holds `max_per_source` connections already.
    PerSource,
    /// The listener holds `max_total` connections already.
    Total,
    /// The node sheds load (see `overload`).
    Overload,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::PerSource, Refusal::Total, Refusal::Overload];

    fn label(self) -> &'static str {
        match self {
            Refusal::PerSource => "per_source",
            Refusal::Total => "total",
            Refusal::Overload => "overload",
        }
    }
}

/// One listener's open connections and what it refused and cut.
pub struct ConnectionGate {
    listener: &'static str,
    policy: ConnectionPolicy,
    open: Mutex<OpenConnections>,
    shedding: AtomicBool,
    accepted: AtomicU64,
    refused: [AtomicU64; 3],
    cut: [AtomicU64; 3],
}

#[derive(Default)]
struct OpenConnections {
    total: u32,
    by_source: HashMap<IpAddr, u32>,
}

/// A connection the gate let in; it counts as open until dropped.
pub struct Admitted {
    gate: Arc<ConnectionGate>,
    source: IpAddr,
}

impl Admitted {
    pub(super) fn gate(&self) -> &Arc<ConnectionGate> {
        &self.gate
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock();
        open.total -= 1;
        if let Some(count) = open.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

impl ConnectionGate {
    /// The gate of `listener` ("ingress", "api"), named so in the metrics.
    pub fn new(listener: &'static str, policy: ConnectionPolicy) -> Arc<Self> {
        Arc::new(Self {
            listener,
            policy,
            open: Mutex::default(),
            shedding: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            cut: Default::default(),
        })
    }

    /// The limits and timeouts the gate applies.
    pub fn policy(&self) -> &ConnectionPolicy {
        &self.policy
    }

    /// Lets a connection from `source` in, or says why not (and counts it).
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refusal> {
        let refusal = {
            let mut open = self.open.lock();
            if self.shedding.load(Ordering::Relaxed) {
                Some(Refusal::Overload)
            } else if open.total >= self.policy.max_total {
                Some(Refusal::Total)
            } else if open.by_source.get(&source).copied().unwrap_or(0)
                >= self.policy.max_per_source
            {
                Some(Refusal::PerSource)
            } else {
                open.total += 1;
                *open.by_source.entry(source).or_default() += 1;
                None
            }
        };
        match refusal {
            Some(refusal) => {
                self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
                Err(refusal)
            }
            None => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(Admitted {
                    gate: self.clone(),
                    source,
                })
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.lock().total
    }

    /// Whether new connections are refused for overload.
    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// New connections are refused while `shedding` holds.
    pub fn set_shedding(&self, shedding: bool) {
        self.shedding.store(shedding, Ordering::Relaxed);
    }

    /// The listener's name, as the metrics give it.
    pub(super) fn listener(&self) -> &'static str {
        self.listener
    }

    pub(super) fn count_cut(&self, cut: Cut) {
        self.cut[cut as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Appends the connection series of `gates` to a Prometheus text exposition.
pub fn render_metrics(out: &mut String, gates: &[&ConnectionGate]) {
    out.push_str("# HELP ember_connections_open Client connections open, by listener.\n");
    out.push_str("# TYPE ember_connections_open gauge\n");
    for gate in gates {
        let _ = writeln!(
            out,
            "ember_connections_open{{listener=\"{}\"}} {}",
            gate.listener,
            gate.open()
        );
    }
    out.push_str(
        "# HELP ember_connections_accepted_total Client connections let in, by listener.\n",
    );
    out.push_str("# TYPE ember_connections_accepted_total counter\n");
    for gate in gates {
        let _ = writeln!(
            out,
            "ember_connections_accepted_total{{listener=\"{}\"}} {}",
            gate.listener,
            gate.accepted.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP ember_connections_refused_total New client connections refused, by listener and reason.\n");
    out.push_str("# TYPE ember_connections_refused_total counter\n");
    for gate in gates {
        for refusal in Refusal::ALL {
            let _ = writeln!(
                out,
                "ember_connections_refused_total{{listener=\"{}\",reason=\"{}\"}} {}",
                gate.listener,
                refusal.label(),
                gate.refused[refusal as usize].load(Ordering::Relaxed)
            );
        }
    }
    out.push_str(
        "# HELP ember_connections_cut_total Client connections closed by a timeout, by listener and reason.\n",
    );
    out.push_str("# TYPE ember_connections_cut_total counter\n");
    for gate in gates {
        for cut in Cut::ALL {
            let _ = writeln!(
                out,
                "ember_connections_cut_total{{listener=\"{}\",reason=\"{}\"}} {}",
                gate.listener,
                cut.label(),
                gate.cut[cut as usize].load(Ordering::Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(per_source: u32, total: u32) -> ConnectionPolicy {
        ConnectionPolicy {
            max_per_source: per_source,
            ..ConnectionPolicy::with_total(total)
        }
    }

    #[test]
    fn the_gate_holds_each_address_and_the_total_to_their_limits() {
        let gate = ConnectionGate::new("test", policy(2, 3));
        let (a, b) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refusal::PerSource));
        let _third = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some(Refusal::Total));
        drop(first);
        assert_eq!(gate.open(), 2);
        let _again = gate.admit(a).unwrap();
        gate.set_shedding(true);
        drop(_again);
        assert_eq!(gate.admit(b).err(), Some(Refusal::Overload));
        let mut text = String::new();
        render_metrics(&mut text, &[&gate]);
        assert!(
            text.contains(
                "ember_connections_refused_total{listener=\"test\",reason=\"per_source\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ember_connections_refused_total{listener=\"test\",reason=\"total\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ember_connections_open{listener=\"test\"} 2"),
            "{text}"
        );
    }
}
