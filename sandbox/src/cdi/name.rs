//! A fully qualified CDI device name, `vendor.com/class=name`, checked by the CDI
//! specification's rules before anything looks it up.

use std::fmt;
use std::str::FromStr;

/// A device name as CDI qualifies it: the vendor and class of the spec that defines it
/// (together its "kind") and the device's name within that spec.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CdiDeviceName {
    kind: String,
    name: String,
}

/// Why a string is not a qualified CDI device name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a CDI device name of the form vendor.com/class=name: {why}")]
pub struct InvalidCdiDeviceName {
    given: String,
    why: &'static str,
}

impl CdiDeviceName {
    /// The spec kind, `vendor.com/class`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The device's name within its spec.
    pub fn device(&self) -> &str {
        &self.name
    }

    /// Joins a spec kind (already checked by the spec's parser) and a device name.
    pub(crate) fn from_parts(kind: &str, name: &str) -> Self {
        Self {
            kind: kind.to_string(),
            name: name.to_string(),
        }
    }
}

fn alphanumeric_ends(s: &str) -> bool {
    let ends = [s.chars().next(), s.chars().last()];
    ends.iter()
        .all(|c| c.is_some_and(|c| c.is_ascii_alphanumeric()))
}

/// The CDI rules: a vendor starts with a letter and holds letters, digits, `-`, `_`
/// and `.`; a class the same without `.`; a name starts and ends with a letter or
/// digit and may also hold `-`, `_`, `.` and `:`. Vendor and class end with a letter
/// or digit too.
fn check(kind: &str, name: &str) -> Result<(), &'static str> {
    let (vendor, class) = kind
        .split_once('/')
        .ok_or("the kind has no '/' between vendor and class")?;
    let starts_with_letter = |s: &str| s.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if !starts_with_letter(vendor) || !alphanumeric_ends(vendor) {
        return Err("the vendor must start with a letter and end with a letter or digit");
    }
    if !vendor
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err("the vendor may hold only letters, digits, '-', '_' and '.'");
    }
    if !starts_with_letter(class) || !alphanumeric_ends(class) {
        return Err("the class must start with a letter and end with a letter or digit");
    }
    if !class
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
    {
        return Err("the class may hold only letters, digits, '-' and '_'");
    }
    if !alphanumeric_ends(name) {
        return Err("the device name must start and end with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err("the device name may hold only letters, digits, '-', '_', '.' and ':'");
    }
    Ok(())
}

impl FromStr for CdiDeviceName {
    type Err = InvalidCdiDeviceName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |why| InvalidCdiDeviceName {
            given: s.to_string(),
            why,
        };
        let (kind, name) = s.split_once('=').ok_or(invalid("there is no '='"))?;
        check(kind, name).map_err(invalid)?;
        Ok(Self::from_parts(kind, name))
    }
}

impl fmt::Display for CdiDeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.kind, self.name)
    }
}

impl serde::Serialize for CdiDeviceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CdiDeviceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_parse_and_print_back() {
        for name in [
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",
            "nvidia.com/gpu=all",
            "test.ember.dev/fake=zero",
            "vendor/class_1=mig:1.0",
        ] {
            let parsed: CdiDeviceName = name.parse().unwrap();
            assert_eq!(parsed.to_string(), name);
        }
        let gpu: CdiDeviceName = "nvidia.com/gpu=0".parse().unwrap();
        assert_eq!((gpu.kind(), gpu.device()), ("nvidia.com/gpu", "0"));
    }

    #[test]
    fn malformed_names_say_what_is_wrong() {
        for (name, why) in [
            ("nvidia.com/gpu", "no '='"),
            ("gpu=0", "no '/'"),
            ("1vendor.com/gpu=0", "vendor must start with a letter"),
            ("nvidia.com/g.pu=0", "class may hold only"),
            ("nvidia.com/gpu=-0", "must start and end"),
            ("nvidia.com/gpu=a b", "may hold only"),
            ("nvidia.com/=0", "class must start"),
            ("nvidia.com/gpu=", "must start and end"),
        ] {
            let err = name.parse::<CdiDeviceName>().unwrap_err().to_string();
            assert!(err.contains(why), "{name}: {err}");
        }
    }
}
