//! Real etcd for the cluster tests (shared with `ember bench --cluster`).

pub use ember::workloads::etcd::EtcdCluster;

/// One etcd member, as most tests use.
pub struct Etcd {
    pub url: String,
    _cluster: EtcdCluster,
}

impl Etcd {
    /// Starts a one-member etcd and waits until it answers.
    pub fn start() -> Self {
        let cluster = EtcdCluster::start(1).unwrap();
        Self {
            url: cluster.urls(),
            _cluster: cluster,
        }
    }
}
