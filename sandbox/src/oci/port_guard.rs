//! What an instance may send into the bridge: frames from its own MAC with its
//! own address, IPv4 and ARP, nothing else. A hostile tenant that forges a source
//! address, a MAC or an ARP reply has its frames dropped at its port, before they
//! reach the host or anything behind the bridge.
//!
//! The bridge keeps instances apart by itself (every instance's port is isolated,
//! so ports exchange no frame, and the host does not forward between them); this
//! guard adds source validation, which a bridge does not do. It is an nftables
//! table of the bridge family, one per bridge, made once per node: a set holds
//! each port's (veth, MAC, address), so an instance's start adds one element
//! rather than rules. It needs the `nft` command (Debian's `nftables`).

use super::network::NetworkError;
use super::nft_elements::{self, Change, FAMILY_BRIDGE, Key};
use std::net::Ipv4Addr;
use std::process::Stdio;
use tokio::io::AsyncWriteExt;

/// The nftables table guarding one bridge's ports.
pub(crate) struct PortGuard {
    table: String,
}

/// One instance's port: its veth on the host, its MAC and its address.
pub(crate) struct Port<'a> {
    pub(crate) veth: &'a str,
    pub(crate) mac: [u8; 6],
    pub(crate) address: Ipv4Addr,
}

impl Port<'_> {
    /// The port's element of each set: (veth, MAC, address) and (veth).
    fn elements(&self) -> [(&'static str, Key); 2] {
        [
            (
                "instances",
                Key::default()
                    .ifname(self.veth)
                    .bytes(&self.mac)
                    .bytes(&self.address.octets()),
            ),
            ("ports", Key::default().ifname(self.veth)),
        ]
    }
}

impl PortGuard {
    /// Makes (or refreshes) the guard of `bridge`. The sets keep their elements,
    /// so that instances an earlier run left running stay reachable; the rules
    /// are written anew.
    pub(crate) async fn install(bridge: &str) -> Result<Self, NetworkError> {
        prune_orphans().await;
        let table = format!("ember_{}", bridge.replace('-', "_"));
        nft(format!(
            "add table bridge {table}\n\
             add set bridge {table} instances {{ type ifname . ether_addr . ipv4_addr; }}\n\
             add set bridge {table} ports {{ type ifname; }}\n\
             add chain bridge {table} guard {{ type filter hook prerouting priority -300; policy accept; }}\n\
             flush chain bridge {table} guard\n\
             add rule bridge {table} guard iifname != @ports accept\n\
             add rule bridge {table} guard ether type ip iifname . ether saddr . ip saddr @instances accept\n\
             add rule bridge {table} guard ether type arp iifname . ether saddr . arp saddr ip @instances iifname . arp saddr ether . arp saddr ip @instances accept\n\
             add rule bridge {table} guard drop\n"
        ))
        .await?;
        Ok(Self { table })
    }

    /// Lets `port` send from its own MAC and address (over netlink: no `nft`
    /// process on a cold start's path).
    pub(crate) fn admit(&self, port: &Port<'_>) -> Result<(), NetworkError> {
        nft_elements::apply(FAMILY_BRIDGE, &self.table, Change::Add, &port.elements())
            .map_err(|e| NetworkError::Guard(format!("admitting port {}: {e}", port.veth)))
    }

    /// Forgets `port` (its veth is going); a port already forgotten is fine.
    pub(crate) fn forget(&self, port: &Port<'_>) {
        if let Err(e) =
            nft_elements::apply(FAMILY_BRIDGE, &self.table, Change::Delete, &port.elements())
        {
            tracing::debug!(veth = port.veth, error = %e, "forgetting a port's guard entry failed");
        }
    }
}

/// Runs an nftables script as one transaction.
/// Removes the guards of bridges that no longer exist (removed by hand, or by a
/// test): each holds a hook on the bridge family's prerouting, and the kernel
/// takes about a thousand hooks there, past which no new guard can be made.
async fn prune_orphans() {
    let Ok(listed) = tokio::process::Command::new("nft")
        .args(["list", "tables", "bridge"])
        .output()
        .await
    else {
        return;
    };
    let listed = String::from_utf8_lossy(&listed.stdout);
    let orphans: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.strip_prefix("table bridge "))
        .filter(|table| {
            table.strip_prefix("ember_").is_some_and(|name| {
                // The table's name turned `-` into `_`: either may be the bridge's.
                [name.to_string(), name.replace('_', "-")]
                    .iter()
                    .all(|bridge| !std::path::Path::new("/sys/class/net").join(bridge).exists())
            })
        })
        .collect();
    if orphans.is_empty() {
        return;
    }
    let script: String = orphans
        .iter()
        .map(|table| format!("delete table bridge {table}\n"))
        .collect();
    match nft(script).await {
        Ok(()) => tracing::info!(
            count = orphans.len(),
            "removed the guards of bridges that are gone"
        ),
        Err(e) => tracing::warn!(error = %e, "removing the guards of bridges that are gone failed"),
    }
}

async fn nft(script: String) -> Result<(), NetworkError> {
    let guard_error = |message: String| NetworkError::Guard(message);
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            guard_error(if e.kind() == std::io::ErrorKind::NotFound {
                "the nft command is missing (install Debian's nftables): it keeps instances from forging addresses".into()
            } else {
                format!("running nft: {e}")
            })
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    stdin
        .write_all(script.as_bytes())
        .await
        .map_err(|e| guard_error(format!("writing to nft: {e}")))?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| guard_error(format!("waiting for nft: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(guard_error(format!(
            "nft refused the guard's rules: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_one_element_of_each_set() {
        let port = Port {
            veth: "ve0123",
            mac: [0x02, 0x42, 10, 88, 0, 5],
            address: Ipv4Addr::new(10, 88, 0, 5),
        };
        let [(instances, key), (ports, port_key)] = port.elements();
        assert_eq!((instances, ports), ("instances", "ports"));
        assert_eq!(
            key,
            Key::default()
                .ifname("ve0123")
                .bytes(&port.mac)
                .bytes(&[10, 88, 0, 5])
        );
        assert_eq!(port_key, Key::default().ifname("ve0123"));
    }

    /// The elements written over netlink are the ones `nft` reads back.
    #[tokio::test]
    async fn elements_written_over_netlink_are_what_nft_lists() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (CI runs as root)"
        );
        let bridge = format!("embg{}", std::process::id() % 100_000);
        let guard = PortGuard::install(&bridge).await.unwrap();
        let port = Port {
            veth: "vetest0",
            mac: [0x02, 0x42, 10, 250, 0, 9],
            address: Ipv4Addr::new(10, 250, 0, 9),
        };
        guard.admit(&port).unwrap();
        guard.admit(&port).unwrap();
        let listed = std::process::Command::new("nft")
            .args(["list", "table", "bridge", &guard.table])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
        guard.forget(&port);
        let after = std::process::Command::new("nft")
            .args(["list", "table", "bridge", &guard.table])
            .output()
            .unwrap();
        let after = String::from_utf8_lossy(&after.stdout).into_owned();
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "bridge", &guard.table])
            .status();
        assert!(
            listed.contains("\"vetest0\" . 02:42:0a:fa:00:09 . 10.250.0.9"),
            "{listed}"
        );
        assert!(!after.contains("vetest0"), "{after}");
    }
}
