//! Who among the starts waiting for room on a full node tries first, so that one
//! tenant's burst never starves another tenant's cold start.
//!
//! Each time room is released a round begins: the waiters try in turn, in fair
//! order, each once. The fair order puts first the waiter whose tenant holds the
//! fewest instances, then the one whose tenant was last placed longest ago (or
//! never), then the one waiting longest: tenants holding as much take turns. A waiter whose request does not
//! fit passes its turn (it does not block the others), and the next one tries.
//! A burst from tenant A queues many waiters. When tenant B's single start
//! arrives, B holds fewer instances than A, so B's start is first in the next
//! round, however many of A's arrived before it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// A waiter's place in the queue, given when it joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Debug, Clone)]
struct Waiter<T> {
    ticket: Ticket,
    tenant: T,
    since: Duration,
    /// The round in which it last tried and did not fit.
    passed_in: Option<u64>,
}

/// The starts waiting for room, by tenant.
#[derive(Debug, Clone)]
pub struct FairQueue<T> {
    waiters: Vec<Waiter<T>>,
    /// When each tenant's last start was placed.
    last_placed: HashMap<T, Duration>,
    next_ticket: u64,
    round: u64,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            waiters: Vec::new(),
            last_placed: HashMap::new(),
            next_ticket: 0,
            round: 0,
        }
    }
}

impl<T: Copy + Eq + Hash> FairQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// A start of `tenant` begins waiting at `now`.
    pub fn join(&mut self, tenant: T, now: Duration) -> Ticket {
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.waiters.push(Waiter {
            ticket,
            tenant,
            since: now,
            passed_in: None,
        });
        ticket
    }

    /// The waiter was placed at `now`: it leaves, and its tenant's turn is noted.
    pub fn placed(&mut self, ticket: Ticket, now: Duration) {
        if let Some(waiter) = self.waiters.iter().find(|w| w.ticket == ticket) {
            self.last_placed.insert(waiter.tenant, now);
        }
        self.leave(ticket);
    }

    /// The waiter gave up (or was placed; leaving twice does nothing).
    pub fn leave(&mut self, ticket: Ticket) {
        self.waiters.retain(|w| w.ticket != ticket);
    }

    /// Room was released: a new round, in which every waiter may try again.
    pub fn released(&mut self) {
        self.round += 1;
    }

    /// The waiter tried in this round and its request did not fit.
    pub fn passed(&mut self, ticket: Ticket) {
        let round = self.round;
        if let Some(waiter) = self.waiters.iter_mut().find(|w| w.ticket == ticket) {
            waiter.passed_in = Some(round);
        }
    }

    /// Whether it is `ticket`'s turn to try, given the instances each tenant holds
    /// now (a tenant not in `held` holds none).
    pub fn may_try(&self, ticket: Ticket, held: &HashMap<T, u32>) -> bool {
        self.next(held) == Some(ticket)
    }

    /// The waiter whose turn it is: the first in fair order that has not passed
    /// in this round.
    pub fn next(&self, held: &HashMap<T, u32>) -> Option<Ticket> {
        self.waiters
            .iter()
            .filter(|w| w.passed_in != Some(self.round))
            .min_by_key(|w| {
                (
                    held.get(&w.tenant).copied().unwrap_or(0),
                    self.last_placed.get(&w.tenant).copied(),
                    w.since,
                    w.ticket,
                )
            })
            .map(|w| w.ticket)
    }

    /// How many starts wait.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A node with `slots` instance slots, on simulated time: starts arrive and
    /// instances end when a test says, and waiters take their turns as the queue
    /// says; `placed` records which tenant was placed when.
    struct Simulation {
        queue: FairQueue<char>,
        free: u32,
        held: HashMap<char, u32>,
        waiting: Vec<(Ticket, char, u32)>,
        placed: Vec<(char, Duration)>,
    }

    impl Simulation {
        fn new(slots: u32) -> Self {
            Self {
                queue: FairQueue::new(),
                free: slots,
                held: HashMap::new(),
                waiting: Vec::new(),
                placed: Vec::new(),
            }
        }

        /// A start of `tenant` needing `size` slots arrives at `now`.
        fn arrive(&mut self, tenant: char, size: u32, now: Duration) {
            let ticket = self.queue.join(tenant, now);
            self.waiting.push((ticket, tenant, size));
            self.turns(now);
        }

        /// `tenant` ends one instance of `size` slots at `now`.
        fn end(&mut self, tenant: char, size: u32, now: Duration) {
            *self.held.get_mut(&tenant).unwrap() -= 1;
            self.free += size;
            self.queue.released();
            self.turns(now);
        }

        /// Waiters try in turn until one whose turn it is does not fit and none is left.
        fn turns(&mut self, now: Duration) {
            while let Some(ticket) = self.queue.next(&self.held) {
                let at = self.waiting.iter().position(|w| w.0 == ticket).unwrap();
                let (_, tenant, size) = self.waiting[at];
                if size <= self.free {
                    self.free -= size;
                    *self.held.entry(tenant).or_default() += 1;
                    self.queue.placed(ticket, now);
                    self.waiting.remove(at);
                    self.placed.push((tenant, now));
                } else {
                    self.queue.passed(ticket);
                }
            }
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_single_start_of_another_tenant_goes_before_a_burst_queued_earlier() {
        let mut node = Simulation::new(4);
        // Tenant A bursts 50 starts at once: 4 fit, 46 wait.
        for _ in 0..50 {
            node.arrive('a', 1, secs(0));
        }
        assert_eq!(node.placed.len(), 4);
        // Tenant B's one cold start arrives a second later, behind all of them.
        node.arrive('b', 1, secs(1));
        assert!(node.placed.iter().all(|(t, _)| *t == 'a'));
        // The first room released goes to B, not to A's 46 earlier waiters.
        node.end('a', 1, secs(2));
        assert_eq!(node.placed.last(), Some(&('b', secs(2))));
        // Then A's waiters take the rest, oldest first.
        node.end('a', 1, secs(3));
        assert_eq!(node.placed.last(), Some(&('a', secs(3))));
    }

    #[test]
    fn a_request_that_does_not_fit_passes_its_turn_without_blocking_the_others() {
        let mut node = Simulation::new(2);
        node.arrive('a', 1, secs(0));
        node.arrive('a', 1, secs(0));
        // B needs two slots; C needs one, and arrives later.
        node.arrive('b', 2, secs(1));
        node.arrive('c', 1, secs(2));
        node.end('a', 1, secs(3));
        // B (holding none, waiting longest) tries first, does not fit, and passes:
        // C takes the slot in the same round.
        assert_eq!(node.placed.last(), Some(&('c', secs(3))));
        node.end('a', 1, secs(4));
        node.end('c', 1, secs(5));
        assert_eq!(node.placed.last(), Some(&('b', secs(5))));
    }

    proptest! {
        /// However tenant A bursts, a start of a tenant holding nothing is placed
        /// at the first release after it arrives (every start needs one slot).
        #[test]
        fn a_tenant_holding_nothing_waits_for_one_release_at_most(
            slots in 1u32..8,
            burst in 1usize..200,
            arrives_after in 0usize..20,
        ) {
            let mut node = Simulation::new(slots);
            for _ in 0..burst {
                node.arrive('a', 1, secs(0));
            }
            let mut now = 1;
            // A's instances end one by one for a while before B arrives.
            for _ in 0..arrives_after {
                if node.held.get(&'a').copied().unwrap_or(0) > 0 {
                    node.end('a', 1, secs(now));
                }
                now += 1;
            }
            let before = node.placed.len();
            node.arrive('b', 1, secs(now));
            if node.placed.len() == before {
                now += 1;
                node.end('a', 1, secs(now));
            }
            prop_assert!(node.placed.iter().any(|(t, at)| *t == 'b' && *at <= secs(now)));
        }
    }
}
