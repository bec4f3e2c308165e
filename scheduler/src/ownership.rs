//! Which node owns a container in a cluster: rendezvous (highest random weight)
//! hashing of the container's key over the live nodes' names (docs/CLUSTER.md,
//! "Who decides").
//!
//! Every node computes the same owner from the same membership, with no
//! coordination, and when a node joins or leaves only the containers it gains or
//! held change owner. The hash is spelled out here (FNV-1a, then a 64-bit
//! finalizer) rather than taken from the standard library, whose hasher may
//! change between Rust releases: nodes built by different toolchains must agree.

/// The node among `nodes` that owns `key` (a container id's bytes); `None` when
/// there is no node.
pub fn owner<'a, N: AsRef<[u8]>>(key: &[u8], nodes: &'a [N]) -> Option<&'a N> {
    let key_hash = fnv1a(key);
    nodes
        .iter()
        .map(|node| ((weight(key_hash, node.as_ref()), node.as_ref()), node))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, node)| node)
}

/// How many of the `count` instances a container keeps running (its
/// `minInstances`) node `node` keeps: the nodes ranked by their weight for `key`,
/// the count dealt one per node in rank order, round after round. The shares of
/// the live nodes always add up to `count`, spread as evenly as they can be, and
/// when a node leaves only the shares it held move. A node not among `nodes` (not
/// yet a member) keeps none.
pub fn share<N: AsRef<[u8]>>(key: &[u8], nodes: &[N], node: &[u8], count: u32) -> u32 {
    let key_hash = fnv1a(key);
    let own = (weight(key_hash, node), node);
    if !nodes.iter().any(|n| n.as_ref() == node) {
        return 0;
    }
    let rank = nodes
        .iter()
        .filter(|n| (weight(key_hash, n.as_ref()), n.as_ref()) > own)
        .count();
    let n = nodes.len() as u32;
    count / n + u32::from((rank as u32) < count % n)
}

/// The weight of `node` for the key whose hash is `key_hash`.
fn weight(key_hash: u64, node: &[u8]) -> u64 {
    mix(key_hash ^ fnv1a(node).rotate_left(29))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// SplitMix64's finalizer: spreads every input bit over the output.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("container-{i:05}")).collect()
    }

    #[test]
    fn the_owner_is_fixed_by_the_inputs_alone() {
        // Pinned: nodes built by other toolchains must compute the same.
        // (The value was computed apart, by a Python rendering of the same hash.)
        let members = nodes(3);
        assert_eq!(
            owner(b"0f8e0c2a-3a7b-4c1e-9d2f-5b6a7c8d9e0f", &members).map(String::as_str),
            Some("node-2"),
        );
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(owner::<String>(b"x", &[]), None);
    }

    #[test]
    fn ten_thousand_containers_spread_evenly_over_ten_nodes() {
        let members = nodes(10);
        let mut owned: HashMap<&str, usize> = HashMap::new();
        for key in keys(10_000) {
            *owned
                .entry(owner(key.as_bytes(), &members).unwrap().as_str())
                .or_default() += 1;
        }
        assert_eq!(owned.len(), 10);
        for (node, count) in owned {
            assert!((800..=1200).contains(&count), "{node} owns {count}");
        }
    }

    #[test]
    fn shares_add_up_to_the_count_and_the_owner_holds_the_first() {
        for count in 0..12u32 {
            for n in 1..6 {
                let members = nodes(n);
                let key = b"0f8e0c2a-3a7b-4c1e-9d2f-5b6a7c8d9e0f";
                let shares: Vec<u32> = members
                    .iter()
                    .map(|m| share(key, &members, m.as_bytes(), count))
                    .collect();
                assert_eq!(shares.iter().sum::<u32>(), count, "{count} over {n}");
                let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
                assert!(hi - lo <= 1, "{shares:?}");
                if count > 0 {
                    let first = owner(key, &members).unwrap();
                    assert_eq!(
                        share(key, &members, first.as_bytes(), count),
                        count.div_ceil(n as u32)
                    );
                }
            }
        }
        assert_eq!(share(b"k", &nodes(3), b"stranger", 5), 0);
    }

    proptest! {
        #[test]
        fn two_kept_instances_stay_on_two_nodes_when_a_third_leaves(count in 3usize..10, leaving in 0usize..10) {
            // minInstances 2 over several nodes: one each on the top two; a node
            // that held none leaving moves nothing.
            let members = nodes(count);
            let key = b"container";
            let holding: Vec<&String> = members.iter().filter(|m| share(key, &members, m.as_bytes(), 2) == 1).collect();
            prop_assert_eq!(holding.len(), 2);
            let gone = &members[leaving % count];
            let rest: Vec<String> = members.iter().filter(|n| *n != gone).cloned().collect();
            for m in &rest {
                let before = share(key, &members, m.as_bytes(), 2);
                let after = share(key, &rest, m.as_bytes(), 2);
                if !holding.contains(&gone) {
                    prop_assert_eq!(before, after);
                }
            }
            prop_assert_eq!(rest.iter().map(|m| share(key, &rest, m.as_bytes(), 2)).sum::<u32>(), 2);
        }

        #[test]
        fn a_node_leaving_moves_only_what_it_owned(count in 2usize..20, leaving in 0usize..20) {
            let members = nodes(count);
            let gone = &members[leaving % count];
            let rest: Vec<String> = members.iter().filter(|n| *n != gone).cloned().collect();
            for key in keys(500) {
                let before = owner(key.as_bytes(), &members).unwrap();
                let after = owner(key.as_bytes(), &rest).unwrap();
                if before != gone {
                    prop_assert_eq!(before, after);
                }
            }
        }

        #[test]
        fn a_node_joining_takes_only_what_it_now_owns(count in 1usize..20) {
            let members = nodes(count);
            let mut grown = members.clone();
            grown.push("newcomer".into());
            for key in keys(500) {
                let before = owner(key.as_bytes(), &members).unwrap();
                let after = owner(key.as_bytes(), &grown).unwrap();
                prop_assert!(after == before || after == "newcomer");
            }
        }
    }
}
