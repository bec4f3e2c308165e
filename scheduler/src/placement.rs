//! Where an instance runs: nodes (the API documents' servers) with a capacity, and
//! placement of instances by the CPU, memory and GPUs they ask for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One GPU of a node. GPUs are not interchangeable units of a count: each is a
/// device given to one instance at a time, so placement hands out devices.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpu {
    /// Its model, as `desiredGPUs` names it.
    pub model: String,
    /// The device that gives it to an instance (a CDI device name).
    pub device: String,
}

/// What a node has, or what instances hold of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Thousandths of a CPU.
    pub millicpus: u64,
    /// Bytes of memory.
    pub memory_bytes: u64,
    /// GPUs, each one device.
    pub gpus: BTreeSet<Gpu>,
}

impl Resources {
    /// How many GPUs of each model.
    pub fn gpu_counts(&self) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for gpu in &self.gpus {
            *counts.entry(gpu.model.clone()).or_default() += 1;
        }
        counts
    }
}

/// What one instance asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Thousandths of a CPU.
    pub millicpus: u64,
    /// Bytes of memory.
    pub memory_bytes: u64,
    /// GPUs needed.
    pub gpus: u32,
    /// GPU models accepted; empty accepts any.
    pub gpu_models: Vec<String>,
}

/// Why a request does not fit a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Misfit {
    /// Not enough CPU.
    Cpu {
        /// Thousandths asked for.
        requested: u64,
        /// Thousandths available.
        available: u64,
    },
    /// Not enough memory.
    Memory {
        /// Bytes asked for.
        requested: u64,
        /// Bytes available.
        available: u64,
    },
    /// Not enough GPUs of the accepted models.
    Gpus {
        /// GPUs asked for.
        requested: u32,
        /// The models accepted; empty accepts any.
        models: Vec<String>,
        /// GPUs of accepted models available.
        available: u32,
    },
}

impl fmt::Display for Misfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Misfit::Cpu {
                requested,
                available,
            } => write!(
                f,
                "asks for {} CPU, {} available",
                cpus(*requested),
                cpus(*available)
            ),
            Misfit::Memory {
                requested,
                available,
            } => write!(
                f,
                "asks for {} of memory, {} available",
                mebibytes(*requested),
                mebibytes(*available)
            ),
            Misfit::Gpus {
                requested,
                models,
                available,
            } => {
                let noun = if *requested == 1 { "GPU" } else { "GPUs" };
                if models.is_empty() {
                    write!(f, "asks for {requested} {noun}, {available} available")
                } else {
                    write!(
                        f,
                        "asks for {requested} {noun} of model {}, {available} available",
                        models.join(" or ")
                    )
                }
            }
        }
    }
}

fn cpus(millis: u64) -> String {
    format!("{}", millis as f64 / 1000.0)
}

fn mebibytes(bytes: u64) -> String {
    format!("{}Mi", bytes.div_ceil(1 << 20))
}

/// A node: its capacity and what its instances hold of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node<Id> {
    /// Its id.
    pub id: Id,
    /// A name for people.
    pub name: String,
    /// Everything it has for instances.
    pub capacity: Resources,
    /// What placed instances hold.
    pub allocated: Resources,
}

/// What one placed instance holds, to give back exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation<Id> {
    /// The node it was placed on.
    pub node: Id,
    /// What it holds there.
    pub held: Resources,
}

impl<Id: Clone + Eq> Node<Id> {
    /// A node with nothing placed on it.
    pub fn new(id: Id, name: impl Into<String>, capacity: Resources) -> Self {
        Self {
            id,
            name: name.into(),
            capacity,
            allocated: Resources::default(),
        }
    }

    /// Whether `request` fits this node when it is empty.
    pub fn could_ever_fit(&self, request: &Request) -> Result<(), Misfit> {
        fits(&self.capacity, &Resources::default(), request)
    }

    /// Whether `request` fits what is free now.
    pub fn fits_now(&self, request: &Request) -> Result<(), Misfit> {
        fits(&self.capacity, &self.allocated, request)
    }

    /// Places `request`, taking free GPUs of the accepted models in (model, device)
    /// order.
    pub fn allocate(&mut self, request: &Request) -> Result<Allocation<Id>, Misfit> {
        self.fits_now(request)?;
        let gpus: BTreeSet<Gpu> = free_gpus(&self.capacity, &self.allocated, request)
            .take(request.gpus as usize)
            .cloned()
            .collect();
        let held = Resources {
            millicpus: request.millicpus,
            memory_bytes: request.memory_bytes,
            gpus,
        };
        self.allocated.millicpus += held.millicpus;
        self.allocated.memory_bytes += held.memory_bytes;
        self.allocated.gpus.extend(held.gpus.iter().cloned());
        Ok(Allocation {
            node: self.id.clone(),
            held,
        })
    }

    /// Gives back what `allocation` held.
    pub fn release(&mut self, allocation: &Allocation<Id>) {
        debug_assert!(allocation.node == self.id, "released on the wrong node");
        let held = &allocation.held;
        self.allocated.millicpus = self.allocated.millicpus.saturating_sub(held.millicpus);
        self.allocated.memory_bytes = self
            .allocated
            .memory_bytes
            .saturating_sub(held.memory_bytes);
        for gpu in &held.gpus {
            self.allocated.gpus.remove(gpu);
        }
    }
}

fn accepts(request: &Request, model: &str) -> bool {
    request.gpu_models.is_empty() || request.gpu_models.iter().any(|m| m == model)
}

/// The GPUs of `capacity` not in `used` whose model `request` accepts.
fn free_gpus<'a>(
    capacity: &'a Resources,
    used: &'a Resources,
    request: &'a Request,
) -> impl Iterator<Item = &'a Gpu> {
    capacity
        .gpus
        .iter()
        .filter(move |gpu| accepts(request, &gpu.model) && !used.gpus.contains(*gpu))
}

fn fits(capacity: &Resources, used: &Resources, request: &Request) -> Result<(), Misfit> {
    let cpu = capacity.millicpus.saturating_sub(used.millicpus);
    if request.millicpus > cpu {
        return Err(Misfit::Cpu {
            requested: request.millicpus,
            available: cpu,
        });
    }
    let memory = capacity.memory_bytes.saturating_sub(used.memory_bytes);
    if request.memory_bytes > memory {
        return Err(Misfit::Memory {
            requested: request.memory_bytes,
            available: memory,
        });
    }
    if request.gpus > 0 {
        let free = free_gpus(capacity, used, request).count();
        if request.gpus as usize > free {
            return Err(Misfit::Gpus {
                requested: request.gpus,
                models: request.gpu_models.clone(),
                available: free as u32,
            });
        }
    }
    Ok(())
}

/// Why an instance could not be placed on any node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// Whether some node could take it once instances leave.
    pub could_fit_later: bool,
    /// Each node's reason, by node name.
    pub misfits: Vec<(String, Misfit)>,
}

impl fmt::Display for Unplaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.misfits.is_empty() {
            return write!(f, "there is no node to place it on");
        }
        for (i, (node, misfit)) in self.misfits.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "node {node}: {misfit}")?;
        }
        Ok(())
    }
}

/// Places `request` on the node with the most free memory among those it fits now
/// (spreading instances), and returns the allocation.
pub fn place<Id: Clone + Eq>(
    nodes: &mut [Node<Id>],
    request: &Request,
) -> Result<Allocation<Id>, Unplaced> {
    place_by(nodes, request, |_| 0)
}

/// Places one instance of a container on the node that holds the fewest of its
/// instances (`held`, by node), then has the most free memory, among those it
/// fits now: a container's instances spread over the nodes, so that losing one
/// node loses few of them.
pub fn place_spread<Id: Clone + Eq + std::hash::Hash>(
    nodes: &mut [Node<Id>],
    request: &Request,
    held: &std::collections::HashMap<Id, u32>,
) -> Result<Allocation<Id>, Unplaced> {
    place_by(nodes, request, |node| {
        held.get(&node.id).copied().unwrap_or(0)
    })
}

/// Places `request` on the node with the fewest `crowding`, then the most free
/// memory, among those it fits now.
fn place_by<Id: Clone + Eq>(
    nodes: &mut [Node<Id>],
    request: &Request,
    crowding: impl Fn(&Node<Id>) -> u32,
) -> Result<Allocation<Id>, Unplaced> {
    let free_memory = |n: &Node<Id>| {
        n.capacity
            .memory_bytes
            .saturating_sub(n.allocated.memory_bytes)
    };
    let best = nodes
        .iter_mut()
        .filter(|n| n.fits_now(request).is_ok())
        .max_by_key(|n| (std::cmp::Reverse(crowding(n)), free_memory(n)));
    if let Some(node) = best {
        return Ok(node.allocate(request).expect("checked to fit"));
    }
    Err(Unplaced {
        could_fit_later: nodes.iter().any(|n| n.could_ever_fit(request).is_ok()),
        misfits: nodes
            .iter()
            .filter_map(|n| n.fits_now(request).err().map(|m| (n.name.clone(), m)))
            .collect(),
    })
}

/// Whether `request` could ever be placed: on an empty node of the ones there are.
pub fn could_ever_place<Id: Clone + Eq>(
    nodes: &[Node<Id>],
    request: &Request,
) -> Result<(), Unplaced> {
    if nodes.iter().any(|n| n.could_ever_fit(request).is_ok()) {
        return Ok(());
    }
    Err(Unplaced {
        could_fit_later: false,
        misfits: nodes
            .iter()
            .filter_map(|n| n.could_ever_fit(request).err().map(|m| (n.name.clone(), m)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn node(id: u32, millicpus: u64, memory_gib: u64) -> Node<u32> {
        Node::new(
            id,
            format!("node-{id}"),
            Resources {
                millicpus,
                memory_bytes: memory_gib * GI,
                gpus: [
                    gpu("a100", "gpu=0"),
                    gpu("a100", "gpu=1"),
                    gpu("h100", "gpu=2"),
                ]
                .into(),
            },
        )
    }

    fn gpu(model: &str, device: &str) -> Gpu {
        Gpu {
            model: model.into(),
            device: device.into(),
        }
    }

    fn request(millicpus: u64, memory_gib: u64) -> Request {
        Request {
            millicpus,
            memory_bytes: memory_gib * GI,
            ..Default::default()
        }
    }

    #[test]
    fn instances_fill_a_node_and_release_gives_room_back() {
        let mut nodes = [node(1, 2000, 4)];
        let a = place(&mut nodes, &request(1000, 1)).unwrap();
        let _b = place(&mut nodes, &request(1000, 1)).unwrap();
        let full = place(&mut nodes, &request(500, 1)).unwrap_err();
        assert!(full.could_fit_later);
        assert_eq!(
            full.to_string(),
            "node node-1: asks for 0.5 CPU, 0 available"
        );
        nodes[0].release(&a);
        assert!(place(&mut nodes, &request(500, 1)).is_ok());
    }

    #[test]
    fn a_request_larger_than_any_node_can_never_fit() {
        let nodes = [node(1, 2000, 4), node(2, 4000, 2)];
        let err = could_ever_place(&nodes, &request(1000, 8)).unwrap_err();
        assert!(!err.could_fit_later);
        assert_eq!(
            err.to_string(),
            "node node-1: asks for 8192Mi of memory, 4096Mi available; \
             node node-2: asks for 8192Mi of memory, 2048Mi available"
        );
        assert!(could_ever_place(&nodes, &request(3000, 1)).is_ok());
    }

    #[test]
    fn a_container_s_instances_spread_over_the_nodes_before_filling_the_emptiest() {
        // Node 2 has the most room, but holds one of the container's instances.
        let mut nodes = [node(1, 8000, 4), node(2, 8000, 16), node(3, 8000, 4)];
        let mut held = std::collections::HashMap::new();
        let mut placed = Vec::new();
        for _ in 0..3 {
            let at = place_spread(&mut nodes, &request(100, 1), &held)
                .unwrap()
                .node;
            *held.entry(at).or_insert(0) += 1;
            placed.push(at);
        }
        placed.sort();
        assert_eq!(placed, [1, 2, 3]);
        // Once each holds one, the emptiest takes the next.
        assert_eq!(
            place_spread(&mut nodes, &request(100, 1), &held)
                .unwrap()
                .node,
            2
        );
    }

    #[test]
    fn instances_spread_to_the_node_with_most_free_memory() {
        let mut nodes = [node(1, 8000, 4), node(2, 8000, 6)];
        assert_eq!(place(&mut nodes, &request(100, 3)).unwrap().node, 2);
        assert_eq!(place(&mut nodes, &request(100, 3)).unwrap().node, 1);
    }

    #[test]
    fn gpus_come_from_accepted_models_only_and_each_is_held_once() {
        let mut nodes = [node(1, 8000, 8)];
        let h100 = Request {
            gpus: 1,
            gpu_models: vec!["h100".into()],
            ..request(100, 1)
        };
        let taken = place(&mut nodes, &h100).unwrap();
        assert_eq!(taken.held.gpus, [gpu("h100", "gpu=2")].into());
        let err = place(&mut nodes, &h100).unwrap_err();
        assert!(err.could_fit_later);
        assert_eq!(
            err.to_string(),
            "node node-1: asks for 1 GPU of model h100, 0 available"
        );
        let any_two = Request {
            gpus: 2,
            ..request(100, 1)
        };
        let both_a100 = place(&mut nodes, &any_two).unwrap();
        assert_eq!(
            both_a100.held.gpus,
            [gpu("a100", "gpu=0"), gpu("a100", "gpu=1")].into()
        );
        assert_eq!(
            nodes[0].allocated.gpu_counts(),
            BTreeMap::from([("a100".into(), 2), ("h100".into(), 1)])
        );
        nodes[0].release(&taken);
        let again = place(&mut nodes, &h100).unwrap();
        assert_eq!(
            again.held.gpus, taken.held.gpus,
            "the same device, free again"
        );
        nodes[0].release(&both_a100);
        assert_eq!(nodes[0].allocated.gpus.len(), 1);
    }

    #[test]
    fn more_gpus_of_a_model_than_a_node_has_can_never_fit() {
        let nodes = [node(1, 8000, 8)];
        let three_a100 = Request {
            gpus: 3,
            gpu_models: vec!["a100".into(), "t4".into()],
            ..request(100, 1)
        };
        let err = could_ever_place(&nodes, &three_a100).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node node-1: asks for 3 GPUs of model a100 or t4, 2 available"
        );
        let any_three = Request {
            gpu_models: vec![],
            ..three_a100
        };
        assert!(could_ever_place(&nodes, &any_three).is_ok());
    }
}
