//! The host user and group ids an OCI instance's ids map onto: each container gets
//! a range of its own, so that root in one container is an unprivileged host user
//! that owns nothing of the host's or of any other container's.

/// One range of [`IdRange::SIZE`] host ids, numbered from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct IdRange(u32);

impl IdRange {
    /// Ids in each range: container ids 0 to 65535, as in `/etc/subuid` ranges.
    pub const SIZE: u32 = 1 << 16;
    /// The host id range 0 maps container id 0 to: above the ids distributions
    /// give users and `/etc/subuid` ranges (which start at 100000).
    pub const FIRST_HOST_ID: u32 = 1 << 20;
    /// How many ranges there are. They end below 2^31 because the kernel's
    /// `ping_group_range` cannot name a group past it, so every range keeps ping.
    pub const COUNT: u32 = ((1 << 31) - Self::FIRST_HOST_ID) / Self::SIZE;

    /// Range number `index`, if there is one.
    pub fn new(index: u32) -> Option<Self> {
        (index < Self::COUNT).then_some(Self(index))
    }

    /// Its number.
    pub fn index(self) -> u32 {
        self.0
    }

    /// The host id container id 0 maps to.
    pub fn host_base(self) -> u32 {
        Self::FIRST_HOST_ID + self.0 * Self::SIZE
    }

    /// The host id `container_id` maps to, if it is inside the range.
    pub fn host_id(self, container_id: u32) -> Option<u32> {
        (container_id < Self::SIZE).then(|| self.host_base() + container_id)
    }
}

impl TryFrom<u32> for IdRange {
    type Error = String;

    fn try_from(index: u32) -> Result<Self, Self::Error> {
        Self::new(index).ok_or_else(|| format!("id range {index} is past the last one"))
    }
}

impl From<IdRange> for u32 {
    fn from(range: IdRange) -> u32 {
        range.0
    }
}

/// The mappings of a user namespace's map (`uid_map` or `gid_map` as the host
/// reads it: `inside outside count` lines), as `(inside, outside, count)`.
pub(crate) fn mappings(map: &str) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
    map.lines().filter_map(|line| {
        let mut fields = line.split_whitespace().map(|f| f.parse::<u32>().ok());
        Some((fields.next()??, fields.next()??, fields.next()??))
    })
}

/// The id inside a user namespace that host id `host` is, by the namespace's map.
pub(crate) fn id_inside(map: &str, host: u32) -> Option<u32> {
    mappings(map).find_map(|(inside, outside, count)| {
        (host >= outside && host - outside < count).then(|| inside + (host - outside))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_are_read_back_as_the_namespace_s() {
        let map = "         0    1048576      65536\n";
        assert_eq!(id_inside(map, 1_048_576), Some(0));
        assert_eq!(id_inside(map, 1_048_576 + 65534), Some(65534));
        assert_eq!(id_inside(map, 1_048_576 + 65536), None);
        assert_eq!(id_inside(map, 0), None);
    }

    #[test]
    fn ranges_do_not_overlap_and_end_below_2_pow_31() {
        let first = IdRange::new(0).unwrap();
        let second = IdRange::new(1).unwrap();
        assert_eq!(first.host_base(), 1 << 20);
        assert_eq!(first.host_id(65535).unwrap() + 1, second.host_base());
        assert_eq!(first.host_id(65536), None);
        let last = IdRange::new(IdRange::COUNT - 1).unwrap();
        assert!(u64::from(last.host_id(65535).unwrap()) < 1 << 31);
        assert_eq!(IdRange::new(IdRange::COUNT), None);
        assert_eq!(IdRange::COUNT, 32752);
    }

    #[test]
    fn a_range_is_stored_as_its_number() {
        let range = IdRange::new(7).unwrap();
        assert_eq!(serde_json::to_string(&range).unwrap(), "7");
        assert_eq!(serde_json::from_str::<IdRange>("7").unwrap(), range);
        assert!(serde_json::from_str::<IdRange>("4000000").is_err());
    }
}
