//! Instance networking: a bridge the runtime owns, a veth pair per instance, an
//! address from the configured subnet, loopback up. Nothing is routed off the
//! machine: there is no NAT and no forwarding, only host ↔ instance traffic.
//!
//! Instances are kept apart: each one's port on the bridge is isolated (the bridge
//! passes no frame between two instances), the host forwards nothing that comes
//! from the bridge (so no route through it joins two instances either), and the
//! port guard ([`super::port_guard`]) drops whatever an instance sends from an
//! address or MAC that is not its own. An instance reaches its own loopback and
//! the host's side of its link, and only the host reaches it.

use super::port_guard::{Port, PortGuard};
use futures::TryStreamExt;
use parking_lot::Mutex;
use rtnetlink::packet_route::link::InfoBridgePort;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// An IPv4 subnet such as `10.88.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Subnet {
    /// The gateway: the bridge's own address, the subnet's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `address` is in the subnet.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(address) & mask == u32::from(self.network)
    }

    /// Number of addresses instances may take (neither network, gateway nor broadcast).
    fn hosts(&self) -> u32 {
        (1u32 << (32 - self.prefix)).saturating_sub(3)
    }
}

impl FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a subnet such as 10.88.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix `/{prefix}` must be between /8 and /30"))?;
        let mask = u32::MAX << (32 - prefix);
        if u32::from(addr) & !mask != 0 {
            return Err(format!("`{s}` has host bits set"));
        }
        Ok(Self {
            network: addr,
            prefix,
        })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Hands out instance addresses, lowest free first.
#[derive(Debug)]
pub(crate) struct AddressPool {
    subnet: Subnet,
    taken: Mutex<BTreeSet<u32>>,
}

impl AddressPool {
    pub(crate) fn new(subnet: Subnet) -> Self {
        Self {
            subnet,
            taken: Mutex::default(),
        }
    }

    pub(crate) fn take(&self) -> Option<Ipv4Addr> {
        let mut taken = self.taken.lock();
        let offset = (2..self.subnet.hosts() + 2).find(|o| !taken.contains(o))?;
        taken.insert(offset);
        Some(Ipv4Addr::from(u32::from(self.subnet.network) + offset))
    }

    /// Takes `address` for an instance that already has it; `false` when it is not
    /// in the subnet or is taken.
    pub(crate) fn reserve(&self, address: Ipv4Addr) -> bool {
        let offset = u32::from(address).wrapping_sub(u32::from(self.subnet.network));
        if !(2..self.subnet.hosts() + 2).contains(&offset) {
            return false;
        }
        self.taken.lock().insert(offset)
    }

    pub(crate) fn give_back(&self, address: Ipv4Addr) {
        let offset = u32::from(address).wrapping_sub(u32::from(self.subnet.network));
        self.taken.lock().remove(&offset);
    }
}

/// Why networking failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The subnet has no free address.
    #[error("subnet {0} has no free address")]
    Exhausted(Subnet),
    /// The port guard could not be set up or changed.
    #[error("guarding the bridge's ports: {0}")]
    Guard(String),
    /// Another interface of the host already has an address in the subnet: the
    /// host's traffic to the instances would go there.
    #[error(
        "subnet {subnet} is already on interface {interface} (another runtime's bridge, or one left behind): give this runtime another with --subnet, or remove it (ip link del {interface})"
    )]
    SubnetTaken {
        /// The subnet.
        subnet: Subnet,
        /// The interface that has it.
        interface: String,
    },
    /// A netlink request failed.
    #[error("{what}: {source}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// Entering the instance's network namespace failed.
    #[error("entering the network namespace of pid {pid}: {message}")]
    Namespace {
        /// The instance's init.
        pid: i32,
        /// Why.
        message: String,
    },
}

fn netlink(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

/// A creation that found its object already there (left by an earlier run, or made
/// by another runtime meanwhile) succeeded as far as the caller is concerned.
fn unless_already_there(
    result: Result<(), rtnetlink::Error>,
    what: String,
) -> Result<(), NetworkError> {
    match result {
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EEXIST => Ok(()),
        other => other.map_err(netlink(what)),
    }
}

/// The bridge and the addresses behind it.
pub(crate) struct Network {
    host: Handle,
    bridge_index: u32,
    guard: PortGuard,
    subnet: Subnet,
    addresses: AddressPool,
}

/// One instance's place on the network; give it back with [`Network::detach`].
#[derive(Debug)]
pub(crate) struct Attachment {
    pub(crate) address: Ipv4Addr,
    host_veth: String,
}

impl Attachment {
    fn port(&self) -> Port<'_> {
        Port {
            veth: &self.host_veth,
            mac: mac_for(self.address),
            address: self.address,
        }
    }
}

impl Network {
    /// Creates the bridge (or adopts the one left by an earlier run) with the subnet's
    /// gateway address, and brings it up.
    pub(crate) async fn new(bridge: &str, subnet: Subnet) -> Result<Self, NetworkError> {
        let (connection, host, _) =
            rtnetlink::new_connection().map_err(|e| NetworkError::Namespace {
                pid: std::process::id() as i32,
                message: format!("opening a netlink socket: {e}"),
            })?;
        tokio::spawn(connection);
        let index = match link_index(&host, bridge).await? {
            Some(index) => index,
            None => {
                let created = host
                    .link()
                    .add(LinkBridge::new(bridge).build())
                    .execute()
                    .await;
                unless_already_there(created, format!("creating bridge {bridge}"))?;
                link_index(&host, bridge)
                    .await?
                    .ok_or_else(|| NetworkError::Namespace {
                        pid: 0,
                        message: format!("bridge {bridge} vanished after it was created"),
                    })?
            }
        };
        if let Some(interface) = other_interface_on(&host, subnet, index).await? {
            return Err(NetworkError::SubnetTaken { subnet, interface });
        }
        let added = host
            .address()
            .add(index, IpAddr::V4(subnet.gateway()), subnet.prefix())
            .execute()
            .await;
        unless_already_there(added, format!("addressing bridge {bridge}"))?;
        // A MAC of its own, set (not assigned): a bridge whose MAC the kernel
        // assigned takes the lowest of its ports' MACs, so it changed as instances
        // came and went, and an instance's frames to the gateway went to the old MAC,
        // which an isolated port cannot reach, until its neighbour entry expired
        // (a response's end lost that way held a client for ever). Derived from the
        // gateway, it is the same for every run on this subnet, which instances an
        // earlier run left running already know.
        host.link()
            .set(
                LinkUnspec::new_with_index(index)
                    .address(mac_for(subnet.gateway()).to_vec())
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("bringing bridge {bridge} up")))?;
        // What comes in from the bridge is never routed on, not even back into it:
        // otherwise an instance could reach another through the host.
        let forwarding = format!("/proc/sys/net/ipv4/conf/{bridge}/forwarding");
        std::fs::write(&forwarding, "0")
            .map_err(|e| NetworkError::Guard(format!("writing {forwarding}: {e}")))?;
        let guard = PortGuard::install(bridge).await?;
        Ok(Self {
            host,
            bridge_index: index,
            guard,
            subnet,
            addresses: AddressPool::new(subnet),
        })
    }

    /// Gives the (created, not yet started) container whose init is `pid` an `eth0` on
    /// the bridge with an address of its own, and brings its loopback up.
    pub(crate) async fn attach(
        &self,
        pid: i32,
        host_veth: &str,
    ) -> Result<Attachment, NetworkError> {
        let address = self
            .addresses
            .take()
            .ok_or(NetworkError::Exhausted(self.subnet))?;
        let attachment = Attachment {
            address,
            host_veth: host_veth.to_string(),
        };
        match self.wire(pid, &attachment).await {
            Ok(()) => Ok(attachment),
            Err(e) => {
                self.detach(attachment).await;
                Err(e)
            }
        }
    }

    async fn wire(&self, pid: i32, attachment: &Attachment) -> Result<(), NetworkError> {
        // The peer is born inside the instance's namespace, already named eth0, with
        // a MAC derived from its address: an address handed out again comes with the
        // same MAC, so the host's neighbour entry for it stays true. With random
        // MACs, a reused address stayed mapped to the old instance's MAC until the
        // entry expired, and connections to the new instance went nowhere for tens
        // of seconds.
        let peer: LinkMessage = LinkMessageBuilder::<LinkUnspec>::new()
            .name("eth0".to_string())
            .address(mac_for(attachment.address).to_vec())
            .setns_by_pid(pid as u32)
            .build();
        let veth = LinkVeth::new(&attachment.host_veth, "unused")
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .controller(self.bridge_index)
            .up()
            .build();
        self.host
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(netlink(format!("creating veth {}", attachment.host_veth)))?;
        let host_index = link_index(&self.host, &attachment.host_veth)
            .await?
            .ok_or_else(|| NetworkError::Namespace {
                pid,
                message: format!(
                    "veth {} vanished after it was created",
                    attachment.host_veth
                ),
            })?;
        self.host
            .link()
            .set_port(
                LinkBridgePort::new(host_index)
                    .append_info_data(InfoBridgePort::Isolated(true))
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("isolating port {}", attachment.host_veth)))?;
        self.guard.admit(&attachment.port())?;

        let inside = handle_in_netns_of(pid)?;
        for name in ["lo", "eth0"] {
            let index =
                link_index(&inside, name)
                    .await?
                    .ok_or_else(|| NetworkError::Namespace {
                        pid,
                        message: format!("no {name} inside"),
                    })?;
            if name == "eth0" {
                inside
                    .address()
                    .add(index, IpAddr::V4(attachment.address), self.subnet.prefix())
                    .execute()
                    .await
                    .map_err(netlink("addressing eth0"))?;
            }
            inside
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(netlink(format!("bringing {name} up")))?;
        }
        allow_unprivileged_ping(pid)?;
        inside
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(self.subnet.gateway())
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink("adding the default route"))?;
        Ok(())
    }

    /// The place on the network of an instance an earlier run attached (its veth
    /// and address are in place): its address is taken again.
    pub(crate) async fn adopt(
        &self,
        address: Ipv4Addr,
        host_veth: &str,
    ) -> Result<Attachment, NetworkError> {
        if !self.addresses.reserve(address) {
            return Err(NetworkError::Namespace {
                pid: 0,
                message: format!("address {address} is outside {} or taken", self.subnet),
            });
        }
        let attachment = Attachment {
            address,
            host_veth: host_veth.to_string(),
        };
        // The guard's sets outlive a runtime, but not a reboot of its rules' table.
        if let Err(e) = self.guard.admit(&attachment.port()) {
            self.addresses.give_back(address);
            return Err(e);
        }
        Ok(attachment)
    }

    /// Removes the host end of the veth (the namespace's end goes with it) and frees
    /// the address. Safe to call when the veth is already gone.
    pub(crate) async fn detach(&self, attachment: Attachment) {
        self.guard.forget(&attachment.port());
        if let Ok(Some(index)) = link_index(&self.host, &attachment.host_veth).await {
            let _ = self.host.link().del(index).execute().await;
        }
        self.addresses.give_back(attachment.address);
    }
}

/// The name of an interface other than the one at `own` with an IPv4 address in
/// `subnet`, if there is one.
async fn other_interface_on(
    handle: &Handle,
    subnet: Subnet,
    own: u32,
) -> Result<Option<String>, NetworkError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let mut addresses = handle.address().get().execute();
    while let Some(address) = addresses
        .try_next()
        .await
        .map_err(netlink("listing the host's addresses"))?
    {
        if address.header.index == own {
            continue;
        }
        let inside = address.attributes.iter().any(|a| {
            matches!(a, AddressAttribute::Address(IpAddr::V4(v4)) | AddressAttribute::Local(IpAddr::V4(v4)) if subnet.contains(*v4))
        });
        if inside {
            let mut links = handle
                .link()
                .get()
                .match_index(address.header.index)
                .execute();
            let name = match links.try_next().await {
                Ok(Some(link)) => link.attributes.iter().find_map(|a| match a {
                    rtnetlink::packet_route::link::LinkAttribute::IfName(name) => {
                        Some(name.clone())
                    }
                    _ => None,
                }),
                _ => None,
            };
            return Ok(Some(
                name.unwrap_or_else(|| format!("#{}", address.header.index)),
            ));
        }
    }
    Ok(None)
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(netlink(format!("looking up {name}"))(e)),
    }
}

/// A netlink handle bound to the network namespace of `pid`. A socket belongs to the
/// namespace its creator was in, so a short-lived thread enters the namespace, opens
/// the socket and ends; the runtime's own threads never change namespace.
fn handle_in_netns_of(pid: i32) -> Result<Handle, NetworkError> {
    let fail = |message: String| NetworkError::Namespace { pid, message };
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| fail(format!("opening it: {e}")))?;
    let runtime = tokio::runtime::Handle::current();
    let opened = std::thread::spawn(move || {
        let _entered = runtime.enter();
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        rtnetlink::new_connection().map_err(|e| format!("opening a netlink socket: {e}"))
    })
    .join()
    .map_err(|_| fail("the namespace thread panicked".into()))?;
    let (connection, handle, _) = opened.map_err(fail)?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Lets every group inside the instance open unprivileged ICMP echo sockets, so
/// that `ping` works without NET_RAW (the sysctl belongs to the network
/// namespace; libcontainer cannot set it, since the instance's /proc/sys is
/// read-only by then). /proc/sys/net is the namespace of whoever opens it.
fn allow_unprivileged_ping(pid: i32) -> Result<(), NetworkError> {
    let fail = |message: String| NetworkError::Namespace { pid, message };
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| fail(format!("opening it: {e}")))?;
    let gid_map = std::fs::read_to_string(format!("/proc/{pid}/gid_map"))
        .map_err(|e| fail(format!("reading its gid_map: {e}")))?;
    let range = ping_groups(&gid_map);
    std::thread::spawn(move || {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", range)
            .map_err(|e| format!("allowing unprivileged ping: {e}"))
    })
    .join()
    .map_err(|_| fail("the namespace thread panicked".into()))?
    .map_err(fail)
}

/// The host groups `ping_group_range` lets ping: those of the instance's user
/// namespace, as its `gid_map` reads from the host (so that the instance reads its
/// own `0 65535` back), or every group the sysctl can name without one.
fn ping_groups(gid_map: &str) -> String {
    const HIGHEST: u64 = (1 << 31) - 1;
    match crate::id_range::mappings(gid_map).next() {
        Some((_, outside, count)) if count > 0 && u64::from(outside) <= HIGHEST => {
            let last = u64::from(outside) + u64::from(count) - 1;
            format!("{outside} {}", last.min(HIGHEST))
        }
        _ => format!("0 {HIGHEST}"),
    }
}

/// A locally administered unicast MAC (`02:42:` and the four address bytes, as
/// Docker does) for an instance's address.
fn mac_for(address: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = address.octets();
    [0x02, 0x42, a, b, c, d]
}

/// The host end of a sandbox's veth pair. Interface names are at most 15 bytes:
/// `ve` and 13 hex digits of the sandbox id.
pub(crate) fn veth_name(sandbox_id: &str) -> String {
    let hex: String = sandbox_id
        .trim_start_matches("ember-")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(13)
        .collect();
    format!("ve{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subnet_contains_its_addresses_and_no_others() {
        let subnet: Subnet = "10.88.4.0/22".parse().unwrap();
        for inside in ["10.88.4.0", "10.88.5.17", "10.88.7.255"] {
            assert!(subnet.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in ["10.88.3.255", "10.88.8.0", "192.168.4.1"] {
            assert!(!subnet.contains(outside.parse().unwrap()), "{outside}");
        }
    }

    #[test]
    fn ping_is_allowed_to_the_instance_s_own_groups() {
        assert_eq!(ping_groups("0 1048576 65536\n"), "1048576 1114111");
        assert_eq!(
            ping_groups("         0          0 4294967295\n"),
            "0 2147483647"
        );
        assert_eq!(ping_groups(""), "0 2147483647");
    }

    #[test]
    fn subnets_parse_and_refuse_nonsense() {
        let subnet: Subnet = "10.88.0.0/16".parse().unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(subnet.to_string(), "10.88.0.0/16");
        assert!("10.88.0.1/16".parse::<Subnet>().is_err(), "host bits");
        assert!("10.88.0.0".parse::<Subnet>().is_err());
        assert!("10.88.0.0/31".parse::<Subnet>().is_err());
        assert!("ten/8".parse::<Subnet>().is_err());
    }

    #[test]
    fn addresses_are_handed_out_once_and_reused_after_release() {
        let pool = AddressPool::new("10.1.2.0/30".parse().unwrap());
        // A /30 has one address for instances: .2 (.1 is the gateway, .3 broadcast).
        let first = pool.take().unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 1, 2, 2));
        assert_eq!(pool.take(), None);
        pool.give_back(first);
        assert_eq!(pool.take(), Some(first));
    }

    #[test]
    fn an_address_always_gets_the_same_local_unicast_mac() {
        let mac = mac_for(Ipv4Addr::new(10, 88, 0, 7));
        assert_eq!(mac, [0x02, 0x42, 10, 88, 0, 7]);
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_ne!(mac, mac_for(Ipv4Addr::new(10, 88, 0, 8)));
    }
}
