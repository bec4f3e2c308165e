//! The ingress routing table: host name to container, kept in step with the store.

use parking_lot::RwLock;
use std::collections::HashMap;

/// Maps `<name>.<domain>` to what serves it (the runtime keeps each container's
/// service there); looked up on every ingress request.
pub struct RoutingTable<S> {
    hosts: RwLock<HashMap<String, S>>,
}

impl<S> Default for RoutingTable<S> {
    fn default() -> Self {
        Self {
            hosts: RwLock::default(),
        }
    }
}

impl<S: Clone> RoutingTable<S> {
    /// Routes `host` (lower case, no port) to `service`, replacing any earlier route.
    pub fn insert(&self, host: String, service: S) {
        self.hosts.write().insert(host, service);
    }

    /// Removes the route of `host`.
    pub fn remove(&self, host: &str) {
        self.hosts.write().remove(host);
    }

    /// Finds the service for a `Host` header value (port and case ignored).
    pub fn lookup(&self, host_header: &str) -> Option<S> {
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
