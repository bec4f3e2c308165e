//! The ingress routing table: host name to container, kept in step with the store.

use crate::activator::Service;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

/// Maps `<name>.<domain>` to the container's service.
#[derive(Default)]
pub(crate) struct RoutingTable {
    hosts: RwLock<HashMap<String, Arc<Service>>>,
}

impl RoutingTable {
    pub(crate) fn insert(&self, host: String, service: Arc<Service>) {
        self.hosts.write().insert(host, service);
    }

    pub(crate) fn remove(&self, host: &str) {
        self.hosts.write().remove(host);
    }

    /// Finds the service for a `Host` header value (port and case ignored).
    pub(crate) fn lookup(&self, host_header: &str) -> Option<Arc<Service>> {
        let host = strip_port(host_header);
        let hosts = self.hosts.read();
        if let Some(service) = hosts.get(host) {
            return Some(service.clone());
        }
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return hosts.get(&host.to_ascii_lowercase()).cloned();
        }
        None
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_ignored() {
        assert_eq!(
            strip_port("hello.ember.localhost:8000"),
            "hello.ember.localhost"
        );
        assert_eq!(strip_port("hello.ember.localhost"), "hello.ember.localhost");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
