//! Byte quantities written the Kubernetes way ("512Mi", "2Gi", "1G", "1000").

use std::fmt;
use std::str::FromStr;

/// A quantity of bytes, keeping the text the user wrote.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Quantity {
    text: String,
    bytes: u64,
}

/// Why a quantity was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a quantity of bytes: use a positive whole number with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T (e.g. \"512Mi\")"
)]
pub struct InvalidQuantity(pub String);

const SUFFIXES: [(&str, u64); 8] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

impl Quantity {
    /// The number of bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl FromStr for Quantity {
    type Err = InvalidQuantity;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidQuantity(s.chars().take(40).collect());
        let (digits, multiplier) = SUFFIXES
            .iter()
            .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|d| (d, *m)))
            .unwrap_or((s, 1));
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let bytes = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier))
            .filter(|&b| b > 0)
            .ok_or_else(invalid)?;
        Ok(Self {
            text: s.to_string(),
            bytes,
        })
    }
}

impl TryFrom<String> for Quantity {
    type Error = InvalidQuantity;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Quantity> for String {
    fn from(q: Quantity) -> String {
        q.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.text, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_binary_and_decimal_suffixes() {
        assert_eq!("512Mi".parse::<Quantity>().unwrap().bytes(), 512 << 20);
        assert_eq!("2Gi".parse::<Quantity>().unwrap().bytes(), 2 << 30);
        assert_eq!("1G".parse::<Quantity>().unwrap().bytes(), 1_000_000_000);
        assert_eq!("4096".parse::<Quantity>().unwrap().bytes(), 4096);
        assert_eq!("2Gi".parse::<Quantity>().unwrap().to_string(), "2Gi");
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "lots",
            "",
            "Mi",
            "-1Gi",
            "1.5Gi",
            "0",
            "0Mi",
            "1 Gi",
            "99999999999Ti",
        ] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad}");
        }
    }
}
