//! What a token may do beyond its role: the scopes of the numbered containers and
//! container services faces and the capabilities of the instances API. A token holds a set of each; new tokens get all of
//! them unless the request names fewer.

use std::fmt;
use std::str::FromStr;

/// A user name, as tokens are minted for: 1 to 64 ASCII letters, digits, '.', '_',
/// '-' or '@', starting with a letter or digit (an e-mail address is a valid name).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

/// Why a user name was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a valid user name: use 1 to 64 ASCII letters, digits, '.', '_', '-' or '@', starting with a letter or digit"
)]
pub struct InvalidUserName(pub String);

impl UserName {
    /// The longest name allowed.
    pub const MAX_LEN: usize = 64;

    /// The user the runtime creates for its bootstrap admin token.
    pub fn admin() -> Self {
        Self("admin".into())
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserName {
    type Err = InvalidUserName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = (1..=Self::MAX_LEN).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if valid {
            Ok(Self(s.to_string()))
        } else {
            Err(InvalidUserName(s.chars().take(80).collect()))
        }
    }
}

impl TryFrom<String> for UserName {
    type Error = InvalidUserName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<UserName> for String {
    fn from(n: UserName) -> String {
        n.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserName({})", self.0)
    }
}

/// A member of a [`GrantSet`]: a small, closed set of named permissions.
pub trait Grant: Copy + Eq + fmt::Debug + 'static {
    /// Every member, in the order lists show them.
    const ALL: &'static [Self];
    /// The name the API uses.
    fn name(self) -> &'static str;
}

/// A scope: those of the numbered containers and container services faces, and
/// Ember's own `metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read projects (containers and their instances).
    ProjectsRead,
    /// Change projects.
    ProjectsWrite,
    /// Scrape `/metrics` with every container's series (a Prometheus token).
    Metrics,
}

impl Grant for Scope {
    const ALL: &'static [Self] = &[Self::ProjectsRead, Self::ProjectsWrite, Self::Metrics];
    fn name(self) -> &'static str {
        match self {
            Self::ProjectsRead => "projects_read",
            Self::ProjectsWrite => "projects_write",
            Self::Metrics => "metrics",
        }
    }
}

/// A capability of the instances API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// See containers and their instances.
    ContainersView,
    /// Start and stop instances, change containers.
    ContainersUpdate,
    /// SSH into instances.
    ContainersSsh,
    /// Attach to instances' consoles.
    ContainersConsole,
    /// Migrate instances between servers.
    ContainersInstanceMigrate,
}

impl Grant for Capability {
    const ALL: &'static [Self] = &[
        Self::ContainersView,
        Self::ContainersUpdate,
        Self::ContainersSsh,
        Self::ContainersConsole,
        Self::ContainersInstanceMigrate,
    ];
    fn name(self) -> &'static str {
        match self {
            Self::ContainersView => "containers-view",
            Self::ContainersUpdate => "containers-update",
            Self::ContainersSsh => "containers-ssh",
            Self::ContainersConsole => "containers-console",
            Self::ContainersInstanceMigrate => "containers-instance-migrate",
        }
    }
}

/// A set of grants, one bit per member of `G::ALL`; serialized as a list of names.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantSet<G> {
    bits: u32,
    _members: std::marker::PhantomData<G>,
}

/// Why a grant name was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("`{name}` is not one of {known}")]
pub struct UnknownGrant {
    /// The name given.
    pub name: String,
    /// The names accepted, for the message.
    pub known: String,
}

impl<G: Grant> GrantSet<G> {
    /// Every member.
    pub fn all() -> Self {
        G::ALL.iter().copied().collect()
    }

    /// No member.
    pub fn none() -> Self {
        Self::from_bits(0)
    }

    fn from_bits(bits: u32) -> Self {
        Self {
            bits,
            _members: std::marker::PhantomData,
        }
    }

    fn bit(grant: G) -> u32 {
        let index = G::ALL
            .iter()
            .position(|&g| g == grant)
            .expect("ALL lists every member");
        1 << index
    }

    /// Whether `grant` is in the set.
    pub fn contains(&self, grant: G) -> bool {
        self.bits & Self::bit(grant) != 0
    }

    /// The members, in `G::ALL`'s order.
    pub fn iter(&self) -> impl Iterator<Item = G> + '_ {
        G::ALL.iter().copied().filter(|&g| self.contains(g))
    }

    /// Parses names into a set; duplicates are harmless.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownGrant> {
        names
            .into_iter()
            .map(|name| {
                G::ALL
                    .iter()
                    .copied()
                    .find(|g| g.name() == name)
                    .ok_or_else(|| UnknownGrant {
                        name: name.chars().take(80).collect(),
                        known: G::ALL
                            .iter()
                            .map(|g| format!("`{}`", g.name()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            })
            .collect()
    }
}

impl<G: Grant> FromIterator<G> for GrantSet<G> {
    fn from_iter<I: IntoIterator<Item = G>>(iter: I) -> Self {
        Self::from_bits(iter.into_iter().fold(0, |bits, g| bits | Self::bit(g)))
    }
}

impl<G: Grant> fmt::Debug for GrantSet<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(G::name)).finish()
    }
}

impl<G: Grant> serde::Serialize for GrantSet<G> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(G::name))
    }
}

impl<'de, G: Grant> serde::Deserialize<'de> for GrantSet<G> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let names = Vec::<String>::deserialize(deserializer)?;
        Self::parse(names.iter().map(String::as_str)).map_err(serde::de::Error::custom)
    }
}

/// The scopes a token holds.
pub type Scopes = GrantSet<Scope>;

/// The scopes a token gets unless it names others: the faces' two. `metrics`
/// (every container's series) is only for tokens minted with it.
pub fn default_scopes() -> Scopes {
    [Scope::ProjectsRead, Scope::ProjectsWrite]
        .into_iter()
        .collect()
}
/// The capabilities a token holds.
pub type Capabilities = GrantSet<Capability>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_parse_and_print_their_names() {
        let set =
            Capabilities::parse(["containers-ssh", "containers-view", "containers-ssh"]).unwrap();
        assert!(set.contains(Capability::ContainersView));
        assert!(!set.contains(Capability::ContainersUpdate));
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            r#"["containers-view","containers-ssh"]"#
        );
        let back: Capabilities =
            serde_json::from_str(r#"["containers-ssh","containers-view"]"#).unwrap();
        assert_eq!(back, set);
        let e = Scopes::parse(["projects_admin"]).unwrap_err();
        assert_eq!(e.name, "projects_admin");
        assert!(e.known.contains("`projects_read`"), "{e}");
        assert_eq!(Scopes::all().iter().count(), 3);
        assert_eq!(Capabilities::none().iter().count(), 0);
    }

    #[test]
    fn user_names_are_checked() {
        for ok in ["alice", "a", "bob.smith", "ops_team-2", "alice@example.com"] {
            assert!(ok.parse::<UserName>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".alice",
            "-x",
            "al ice",
            "alice/..",
            "é",
            &"a".repeat(65),
        ] {
            assert!(bad.parse::<UserName>().is_err(), "{bad}");
        }
    }
}
