//! Where image pulls may connect: the operator's `--allowed-registries`.
//!
//! A tenant names the image, so a tenant would otherwise aim the node's pulls at
//! anything the node reaches: its own API on loopback, a cloud metadata service
//! on 169.254.169.254, the private network behind it. Every connection of a pull
//! (redirects and token endpoints included) is checked against these rules on the
//! address it actually connects to, after resolution, so a name that resolves to
//! a refused address is refused too (no DNS rebinding around the rules).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The destinations pulls may connect to: any of the entries allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRegistries {
    entries: Vec<Entry>,
}

/// One rule of `--allowed-registries`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// Any public address (none of loopback, link-local, private and the other
    /// special ranges).
    Public,
    /// Loopback addresses (127.0.0.0/8, ::1) and `localhost`.
    Loopback,
    /// A host name, or every name under a domain (`*.example.com`), whatever it
    /// resolves to: the operator named it.
    Host { name: String, port: Option<u16> },
    /// An address, or a network in CIDR notation.
    Network {
        addr: IpAddr,
        prefix: u8,
        port: Option<u16>,
    },
}

/// Why a destination is refused, in words that name the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{destination} {why}, which --allowed-registries does not allow ({rules})")]
pub struct Refused {
    destination: String,
    why: String,
    rules: String,
}

/// A malformed `--allowed-registries` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}`: {reason}")]
pub struct InvalidRule {
    entry: String,
    reason: &'static str,
}

impl AllowedRegistries {
    /// The default: any public registry, and loopback ones when `with_loopback`
    /// (a runtime whose API answers on loopback only: its operator is on the
    /// machine, and so are their registries).
    pub fn default_for(with_loopback: bool) -> Self {
        let mut entries = vec![Entry::Public];
        if with_loopback {
            entries.push(Entry::Loopback);
        }
        Self { entries }
    }

    /// Every destination: for embedders and tests that pull from anywhere.
    pub fn any() -> Self {
        Self {
            entries: vec![
                Entry::Network {
                    addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    prefix: 0,
                    port: None,
                },
                Entry::Network {
                    addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    prefix: 0,
                    port: None,
                },
            ],
        }
    }

    /// Whether a pull may connect to `addr` for host `host` (a name or an
    /// address, as the reference or a redirect gave it) on `port`.
    pub fn check(&self, host: &str, port: u16, addr: IpAddr) -> Result<(), Refused> {
        let host = normalize_host(host);
        if self.entries.iter().any(|e| e.allows(&host, port, addr)) {
            return Ok(());
        }
        let destination = if host.parse::<IpAddr>().is_ok() {
            format!("{host}:{port}")
        } else {
            format!("{host}:{port} (resolving to {addr})")
        };
        Err(Refused {
            destination,
            why: format!("is {}", address_class(addr)),
            rules: self.to_string(),
        })
    }

    /// The check that needs no resolution, for a registry named in an image
    /// reference (`host[:port]`): an address, or `localhost`, that no rule
    /// allows is refused at once; a name is checked when the pull connects.
    pub fn check_registry(&self, registry: &str) -> Result<(), Refused> {
        let (host, port) = split_host_port(registry);
        let host = normalize_host(host);
        let addr = match host.parse::<IpAddr>() {
            Ok(addr) => addr,
            Err(_) if host == "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Err(_) => return Ok(()),
        };
        // Without a port: 443, or 80 for the plain-HTTP loopback registries.
        let port = port
            .flatten()
            .unwrap_or(if addr.is_loopback() { 80 } else { 443 });
        self.check(&host, port, addr)
    }
}

impl fmt::Display for AllowedRegistries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self.entries.iter().map(Entry::to_string).collect();
        write!(f, "{}", entries.join(","))
    }
}

impl FromStr for AllowedRegistries {
    type Err = InvalidRule;

    /// A comma-separated list of `public`, `loopback`, host names (`*.` for a
    /// domain's), addresses and CIDR networks, each with an optional `:port`
    /// (IPv6 in brackets with one).
    fn from_str(s: &str) -> Result<Self, InvalidRule> {
        let entries = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(Entry::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if entries.is_empty() {
            return Err(InvalidRule {
                entry: s.to_string(),
                reason: "names no destination",
            });
        }
        Ok(Self { entries })
    }
}

impl Entry {
    fn parse(entry: &str) -> Result<Self, InvalidRule> {
        let invalid = |reason| InvalidRule {
            entry: entry.to_string(),
            reason,
        };
        match entry.to_ascii_lowercase().as_str() {
            "public" => return Ok(Entry::Public),
            "loopback" => return Ok(Entry::Loopback),
            _ => {}
        }
        // A CIDR network: `10.0.0.0/8`, `fd00::/8` (no port).
        if let Some((addr, prefix)) = entry.split_once('/') {
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| invalid("a network must be an address/prefix"))?;
            let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
            let bits = if addr.is_ipv4() { 32 } else { 128 };
            if prefix > bits {
                return Err(invalid("prefix longer than the address"));
            }
            return Ok(Entry::Network {
                addr,
                prefix,
                port: None,
            });
        }
        if let Ok(addr) = entry.parse::<IpAddr>() {
            return Ok(Entry::network_of(addr, None));
        }
        let (host, port) = split_host_port(entry);
        let port = match port {
            Some(Some(port)) => Some(port),
            Some(None) => return Err(invalid("bad port")),
            None => None,
        };
        let host = normalize_host(host);
        if let Ok(addr) = host.parse::<IpAddr>() {
            return Ok(Entry::network_of(addr, port));
        }
        let name = host.strip_prefix("*.").unwrap_or(&host);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(invalid("not a host name, address or network"));
        }
        Ok(Entry::Host { name: host, port })
    }

    fn network_of(addr: IpAddr, port: Option<u16>) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Entry::Network { addr, prefix, port }
    }

    fn allows(&self, host: &str, port: u16, addr: IpAddr) -> bool {
        let port_matches = |wanted: &Option<u16>| wanted.is_none_or(|p| p == port);
        match self {
            Entry::Public => is_public(addr),
            Entry::Loopback => canonical(addr).is_loopback(),
            Entry::Host { name, port: wanted } => {
                let matches = match name.strip_prefix("*.") {
                    Some(domain) => host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                    None => host == name,
                };
                matches && port_matches(wanted)
            }
            Entry::Network {
                addr: net,
                prefix,
                port: wanted,
            } => in_network(canonical(addr), *net, *prefix) && port_matches(wanted),
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = |p: &Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
        match self {
            Entry::Public => write!(f, "public"),
            Entry::Loopback => write!(f, "loopback"),
            Entry::Host { name, port: p } => write!(f, "{name}{}", port(p)),
            Entry::Network {
                addr,
                prefix,
                port: p,
            } => {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                match (addr, *prefix == full, p) {
                    (IpAddr::V6(_), true, Some(_)) => write!(f, "[{addr}]{}", port(p)),
                    (_, true, _) => write!(f, "{addr}{}", port(p)),
                    (_, false, _) => write!(f, "{addr}/{prefix}"),
                }
            }
        }
    }
}

/// `host[:port]` or `[v6][:port]`; the port `Some(None)` when present but bad.
fn split_host_port(s: &str) -> (&str, Option<Option<u16>>) {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        let port = after.strip_prefix(':').map(|p| p.parse().ok());
        return (host, port);
    }
    match s.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => (s, None),
        Some((host, port)) => (host, Some(port.parse().ok())),
        None => (s, None),
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn in_network(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, canonical(net)) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => prefix == 0 && net.is_unspecified(),
    }
}

/// The special ranges a public registry is never in, with their names.
const SPECIAL_V4: [(Ipv4Addr, u8, &str); 14] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "an unspecified address"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "a private address"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "a shared (carrier-grade NAT) address",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "a loopback address"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "a link-local address"),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "a private address"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "a protocol-assignment address",
    ),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "a documentation address"),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "a private address"),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "a benchmarking address"),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "a documentation address",
    ),
    (Ipv4Addr::new(203, 0, 113, 0), 24, "a documentation address"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "a multicast address"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "a reserved address"),
];

const SPECIAL_V6: [(Ipv6Addr, u8, &str); 7] = [
    (Ipv6Addr::UNSPECIFIED, 128, "an unspecified address"),
    (Ipv6Addr::LOCALHOST, 128, "a loopback address"),
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        "a NAT64 address",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "a documentation address",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "a private (unique local) address",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "a link-local address",
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "a multicast address",
    ),
];

/// What kind of address `addr` is, in words.
pub(crate) fn address_class(addr: IpAddr) -> &'static str {
    let addr = canonical(addr);
    let special = match addr {
        IpAddr::V4(_) => SPECIAL_V4
            .iter()
            .find(|(net, prefix, _)| in_network(addr, IpAddr::V4(*net), *prefix))
            .map(|(_, _, name)| *name),
        IpAddr::V6(_) => SPECIAL_V6
            .iter()
            .find(|(net, prefix, _)| in_network(addr, IpAddr::V6(*net), *prefix))
            .map(|(_, _, name)| *name),
    };
    special.unwrap_or("a public address")
}

pub(crate) fn is_public(addr: IpAddr) -> bool {
    address_class(addr) == "a public address"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_allows_public_addresses_and_loopback_only_when_asked() {
        let strict = AllowedRegistries::default_for(false);
        assert!(
            strict
                .check("registry-1.docker.io", 443, ip("52.1.2.3"))
                .is_ok()
        );
        for refused in [
            "127.0.0.1",
            "169.254.169.254",
            "10.1.2.3",
            "192.168.1.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "0.0.0.0",
        ] {
            let err = strict.check("evil.example", 80, ip(refused)).unwrap_err();
            assert!(err.to_string().contains("--allowed-registries"), "{err}");
        }
        let local = AllowedRegistries::default_for(true);
        assert!(local.check("127.0.0.1", 5000, ip("127.0.0.1")).is_ok());
        assert!(local.check("x", 80, ip("169.254.169.254")).is_err());
    }

    #[test]
    fn refusals_name_the_address_class_and_the_rules() {
        let rules = AllowedRegistries::default_for(false);
        let err = rules
            .check_registry("169.254.169.254")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "169.254.169.254:443 is a link-local address, which --allowed-registries does not allow (public)"
        );
        let err = rules
            .check("registry.test", 443, ip("10.0.0.5"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resolving to 10.0.0.5") && err.contains("a private address"),
            "{err}"
        );
    }

    #[test]
    fn named_hosts_domains_addresses_networks_and_ports_are_allowed_as_listed() {
        let rules: AllowedRegistries =
            "public, registry.internal, *.corp.example, 127.0.0.1:5000, 10.0.0.0/8, [::1]:6000"
                .parse()
                .unwrap();
        assert!(
            rules
                .check("registry.internal", 443, ip("192.168.0.9"))
                .is_ok()
        );
        assert!(rules.check("a.corp.example", 443, ip("172.16.0.1")).is_ok());
        assert!(rules.check("corp.example", 443, ip("172.16.0.1")).is_err());
        assert!(rules.check("xcorp.example", 443, ip("172.16.0.1")).is_err());
        assert!(rules.check("127.0.0.1", 5000, ip("127.0.0.1")).is_ok());
        assert!(rules.check("127.0.0.1", 5001, ip("127.0.0.1")).is_err());
        assert!(rules.check("anything", 80, ip("10.9.8.7")).is_ok());
        assert!(rules.check("::1", 6000, ip("::1")).is_ok());
        assert!(rules.check("::1", 6001, ip("::1")).is_err());
        assert_eq!(
            rules.to_string(),
            "public,registry.internal,*.corp.example,127.0.0.1:5000,10.0.0.0/8,[::1]:6000"
        );
        assert!(rules.check_registry("127.0.0.1:5000").is_ok());
        assert!(rules.check_registry("localhost:5001").is_err());
        assert!(rules.check_registry("ghcr.io").is_ok());
    }

    #[test]
    fn malformed_rules_are_refused() {
        for bad in [
            "",
            ",",
            "10.0.0.0/33",
            "a..b",
            "host:port",
            "bad_name",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<AllowedRegistries>().is_err(), "{bad}");
        }
    }

    #[test]
    fn any_allows_everything() {
        let any = AllowedRegistries::any();
        assert!(any.check("x", 1, ip("127.0.0.1")).is_ok());
        assert!(any.check("x", 1, ip("::1")).is_ok());
    }
}
