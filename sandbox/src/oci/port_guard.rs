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
    /// `verb` (`add` or `delete`) applied to the port's element of each set.
    fn elements(&self, verb: &str, table: &str) -> String {
        let mac = self
            .mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        format!(
            "{verb} element bridge {table} instances {{ \"{veth}\" . {mac} . {address} }}\n\
             {verb} element bridge {table} ports {{ \"{veth}\" }}\n",
            veth = self.veth,
            address = self.address,
        )
    }
}

impl PortGuard {
    /// Makes (or refreshes) the guard of `bridge`. The sets keep their elements,
    /// so that instances an earlier run left running stay reachable; the rules
    /// are written anew.
    pub(crate) async fn install(bridge: &str) -> Result<Self, NetworkError> {
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

    /// Lets `port` send from its own MAC and address.
    pub(crate) async fn admit(&self, port: &Port<'_>) -> Result<(), NetworkError> {
        nft(port.elements("add", &self.table)).await
    }

    /// Forgets `port` (its veth is going); a port already forgotten is fine.
    pub(crate) async fn forget(&self, port: &Port<'_>) {
        if let Err(e) = nft(port.elements("delete", &self.table)).await {
            tracing::debug!(veth = port.veth, error = %e, "forgetting a port's guard entry failed");
        }
    }
}

/// Runs an nftables script as one transaction.
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
            mac: [0x02, 0, 10, 88, 0, 5],
            address: Ipv4Addr::new(10, 88, 0, 5),
        };
        assert_eq!(
            port.elements("add", "ember_ember0"),
            "add element bridge ember_ember0 instances { \"ve0123\" . 02:00:0a:58:00:05 . 10.88.0.5 }\n\
             add element bridge ember_ember0 ports { \"ve0123\" }\n"
        );
    }
}
