//! Linux capabilities of OCI instances: the default set, which is Podman's (no
//! NET_RAW, MKNOD, AUDIT_WRITE or SYS_CHROOT: on a host shared by tenants, raw
//! sockets forge packets and ARP replies, and device nodes have no use), and what
//! a container adds to or drops from it.

use oci_spec::runtime::Capability;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

/// The capabilities an instance has unless its container changes them.
pub const DEFAULT_CAPABILITIES: [Capability; 10] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
];

/// A capability by name: `NET_ADMIN`, as Kubernetes and Docker write it (a
/// `CAP_` prefix and any case are taken too); shown without the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CapabilityName(Capability);

impl CapabilityName {
    /// The capability itself.
    pub fn capability(self) -> Capability {
        self.0
    }
}

impl From<Capability> for CapabilityName {
    fn from(capability: Capability) -> Self {
        Self(capability)
    }
}

impl FromStr for CapabilityName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        Capability::from_str(name)
            .map(Self)
            .map_err(|_| format!("`{s}` is not a Linux capability"))
    }
}

impl fmt::Display for CapabilityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // strum writes the variant in SCREAMING_SNAKE_CASE: `NET_ADMIN`.
        write!(f, "{}", self.0)
    }
}

impl serde::Serialize for CapabilityName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CapabilityName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// What a container changes in the default set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilityChanges {
    /// Added to the default set (within what the operator allows).
    #[serde(default)]
    pub add: Vec<CapabilityName>,
    /// Taken from the default set.
    #[serde(default)]
    pub drop: Vec<CapabilityName>,
}

impl CapabilityChanges {
    /// Nothing changed: the default set.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.drop.is_empty()
    }

    /// The set an instance gets: the default, with `add` and without `drop`.
    pub fn effective(&self) -> HashSet<Capability> {
        let mut set: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
        set.extend(self.add.iter().map(|c| c.0));
        for dropped in &self.drop {
            set.remove(&dropped.0);
        }
        set
    }

    /// A capability both added and dropped, which is a contradiction.
    pub fn contradiction(&self) -> Option<CapabilityName> {
        self.add.iter().copied().find(|c| self.drop.contains(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_or_without_the_prefix_in_any_case_and_show_without_it() {
        for written in ["NET_ADMIN", "CAP_NET_ADMIN", "net_admin", "cap_net_admin"] {
            let name: CapabilityName = written.parse().unwrap();
            assert_eq!(name.capability(), Capability::NetAdmin);
            assert_eq!(name.to_string(), "NET_ADMIN");
        }
        let error = "NET_WIZARD".parse::<CapabilityName>().unwrap_err();
        assert!(error.contains("NET_WIZARD"), "{error}");
        assert!("".parse::<CapabilityName>().is_err());
    }

    #[test]
    fn the_default_set_is_podmans_without_raw_sockets_devices_audit_or_chroot() {
        let set = CapabilityChanges::default().effective();
        assert_eq!(set.len(), 10);
        for absent in [
            Capability::NetRaw,
            Capability::Mknod,
            Capability::AuditWrite,
            Capability::SysChroot,
            Capability::SysAdmin,
        ] {
            assert!(!set.contains(&absent), "{absent}");
        }
    }

    #[test]
    fn additions_and_drops_change_the_default_set() {
        let changes: CapabilityChanges =
            serde_json::from_str(r#"{"add": ["NET_RAW"], "drop": ["CAP_CHOWN", "kill"]}"#).unwrap();
        let set = changes.effective();
        assert!(set.contains(&Capability::NetRaw));
        assert!(!set.contains(&Capability::Chown) && !set.contains(&Capability::Kill));
        assert_eq!(set.len(), 9);
        assert_eq!(
            serde_json::to_value(&changes).unwrap(),
            serde_json::json!({"add": ["NET_RAW"], "drop": ["CHOWN", "KILL"]})
        );
        assert_eq!(changes.contradiction(), None);
        let both: CapabilityChanges =
            serde_json::from_str(r#"{"add": ["NET_RAW"], "drop": ["NET_RAW"]}"#).unwrap();
        assert_eq!(
            both.contradiction().map(|c| c.to_string()).as_deref(),
            Some("NET_RAW")
        );
    }
}
