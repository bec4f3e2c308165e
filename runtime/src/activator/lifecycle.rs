//! Every instance of a container and the state it is in, in one table, and the
//! only ways an instance moves from one state to another.
//!
//! ```text
//!             begin_start          finish_start
//!   (new) ──────────────▶ Starting ─────────────▶ Ready ──┐ swap_sandbox
//!            start_again    │   │  (removed or             ▲  └─┘
//!   Stopped ─────────────▶──┘   │   not wanted)            │ adopt
//!      ▲                        ▼                          (new)
//!      │               forget_start: gone        take_* (leaving)
//!      │                                                   │
//!      │ finish_stop (to Stopped)                          ▼
//!      └──────────────────────────────────────────── Draining
//!   Stopped ── terminate_stopped ──▶ Terminated ◀── finish_stop (to Terminated)
//! ```
//!
//! What an instance counts for is read from its state and nowhere else: only a
//! Ready one takes requests, Starting and Ready ones are what the autoscaler
//! counts, and a Draining one counts for nothing though it still holds its room
//! on the node until its sandbox has stopped. A transition from a state that does
//! not allow it is refused with the state the instance is in.

use super::*;

/// Terminated instances kept per container, for lists; older ones are forgotten.
const TERMINATED_KEPT: usize = 50;

/// Who an instance is, for as long as it exists: the same across a stop and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) id: InstanceId,
    /// Its place among the container's instances, from 1: `unique_name` is
    /// `<name>-<ordinal>`.
    pub(crate) ordinal: u32,
    /// When it was first started.
    pub(crate) created: SystemTime,
}

/// Where an instance taken out of service ends once its sandbox has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    /// Stopped by hand: it keeps its id and can start again.
    ToStopped,
    /// Gone for good.
    ToTerminated,
}

impl Leaving {
    /// The state shown while it drains and stops.
    fn during(self) -> InstanceState {
        match self {
            Self::ToStopped => InstanceState::Stopping,
            Self::ToTerminated => InstanceState::Terminating,
        }
    }

    fn end(self) -> Phase {
        match self {
            Self::ToStopped => Phase::Stopped,
            Self::ToTerminated => Phase::Terminated,
        }
    }
}

/// The state an instance is in, with what that state holds.
pub(super) enum Phase {
    /// Waiting for room on the node or for its sandbox.
    Starting {
        /// Why it has not started yet (no room on the node, say).
        waiting_reason: Option<String>,
        /// Removed through the API while it started: it stops as soon as it is up.
        removed: bool,
    },
    /// Serving requests.
    Ready(Arc<LiveInstance>),
    /// Out of service: its last requests finish and its sandbox stops.
    Draining(Leaving),
    /// Stopped by hand; holds nothing on the node.
    Stopped,
    /// Gone for good; kept a while so lists show what became of it.
    Terminated,
}

/// One instance in the table.
pub(super) struct Member {
    pub(super) identity: Identity,
    pub(super) revision: u32,
    /// Started through the instances API: the autoscaler neither counts nor stops it.
    pub(super) pinned: bool,
    /// When it entered its state.
    pub(super) since: SystemTime,
    pub(super) phase: Phase,
}

impl Member {
    /// Its state as the API names it.
    pub(super) fn state(&self) -> InstanceState {
        match &self.phase {
            Phase::Starting { .. } => InstanceState::Starting,
            Phase::Ready(_) => InstanceState::Running,
            Phase::Draining(leaving) => leaving.during(),
            Phase::Stopped => InstanceState::Stopped,
            Phase::Terminated => InstanceState::Terminated,
        }
    }

    pub(super) fn live(&self) -> Option<&Arc<LiveInstance>> {
        match &self.phase {
            Phase::Ready(live) => Some(live),
            _ => None,
        }
    }

    pub(super) fn is_starting(&self) -> bool {
        matches!(self.phase, Phase::Starting { .. })
    }
}

/// A container's instances. Those starting or ready are kept apart from those that
/// left (draining, stopped, terminated) so that routing a request looks only at
/// the first; each part is in the order its members entered it.
#[derive(Default)]
pub(super) struct Lifecycle {
    present: Vec<Member>,
    departed: Vec<Member>,
}

impl Lifecycle {
    /// (new) → Starting: a start of a new instance begins.
    pub(super) fn begin_start(&mut self, identity: Identity, revision: u32, pinned: bool) {
        debug_assert!(self.state_of(identity.id).is_none(), "ids are unique");
        self.present.push(Member {
            identity,
            revision,
            pinned,
            since: SystemTime::now(),
            phase: Phase::Starting {
                waiting_reason: None,
                removed: false,
            },
        });
    }

    /// Stopped → Starting: a stopped instance starts again under its identity, of
    /// `revision`, pinned or not.
    pub(super) fn start_again(
        &mut self,
        id: InstanceId,
        revision: u32,
        pinned: bool,
    ) -> Result<Identity, Refusal> {
        let member = self.take_departed(id, InstanceState::Stopped)?;
        self.begin_start(member.identity, revision, pinned);
        Ok(member.identity)
    }

    /// Notes why a starting instance waits (or that it no longer does).
    pub(super) fn note_waiting(&mut self, id: InstanceId, note: Option<String>) {
        if let Some(Member {
            phase: Phase::Starting { waiting_reason, .. },
            ..
        }) = self.present.iter_mut().find(|m| m.identity.id == id)
        {
            *waiting_reason = note;
        }
    }

    /// Marks every starting instance removed: each stops as soon as it is up.
    pub(super) fn remove_starts(&mut self) {
        for member in &mut self.present {
            if let Phase::Starting { removed, .. } = &mut member.phase {
                *removed = true;
            }
        }
    }

    /// Starting → (gone): the start failed or was abandoned before a sandbox
    /// existed; nothing is held, nothing is remembered.
    pub(super) fn forget_start(&mut self, id: InstanceId) {
        self.present
            .retain(|m| !(m.identity.id == id && m.is_starting()));
    }

    /// Starting → Ready with its sandbox `live`, if it is still `wanted` and was not
    /// removed while it started; otherwise Starting → Draining (to Terminated) and
    /// `live` comes back, to be stopped.
    pub(super) fn finish_start(
        &mut self,
        live: Arc<LiveInstance>,
        wanted: bool,
    ) -> Result<(), Arc<LiveInstance>> {
        let Some(position) = self
            .present
            .iter()
            .position(|m| m.identity.id == live.id && m.is_starting())
        else {
            return Err(live);
        };
        let mut member = self.present.remove(position);
        let Phase::Starting { removed, .. } = member.phase else {
            unreachable!("found starting");
        };
        member.since = SystemTime::now();
        if removed || !wanted {
            member.phase = Phase::Draining(Leaving::ToTerminated);
            self.departed.push(member);
            return Err(live);
        }
        member.phase = Phase::Ready(live);
        self.present.push(member);
        Ok(())
    }

    /// (new) → Ready: an instance an earlier run of the runtime left running.
    pub(super) fn adopt(&mut self, live: Arc<LiveInstance>) {
        self.present.push(Member {
            identity: live.identity(),
            revision: live.revision,
            pinned: live.pinned,
            since: live.started,
            phase: Phase::Ready(live),
        });
    }

    /// Ready → Ready on a new sandbox: `new` takes `old`'s place (same identity,
    /// same position). `new` comes back if `old` is no longer ready.
    pub(super) fn swap_sandbox(
        &mut self,
        old: &Arc<LiveInstance>,
        new: Arc<LiveInstance>,
    ) -> Result<(), Arc<LiveInstance>> {
        match self
            .present
            .iter_mut()
            .find(|m| m.live().is_some_and(|l| Arc::ptr_eq(l, old)))
        {
            Some(member) => {
                member.phase = Phase::Ready(new);
                Ok(())
            }
            None => Err(new),
        }
    }

    /// Ready → Draining for up to `limit` ready instances that match `which` and
    /// serve no request; their sandboxes come back, to be stopped.
    pub(super) fn take_idle(
        &mut self,
        which: impl Fn(&LiveInstance) -> bool,
        limit: usize,
        leaving: Leaving,
    ) -> Vec<Arc<LiveInstance>> {
        self.take_where(
            |live| which(live) && live.in_flight.load(Ordering::Acquire) == 0,
            limit,
            leaving,
        )
    }

    /// Ready → Draining for every ready instance, busy or not.
    pub(super) fn take_all_ready(&mut self, leaving: Leaving) -> Vec<Arc<LiveInstance>> {
        self.take_where(|_| true, usize::MAX, leaving)
    }

    /// Ready → Draining for instance `id`; refused in any other state.
    pub(super) fn take_ready(
        &mut self,
        id: InstanceId,
        leaving: Leaving,
    ) -> Result<Arc<LiveInstance>, Refusal> {
        let mut taken = self.take_where(|live| live.id == id, 1, leaving);
        taken.pop().ok_or_else(|| self.refusal(id))
    }

    /// Ready → Draining (to Terminated) for this very sandbox, which ended on its
    /// own; `None` if it was already taken out of service.
    pub(super) fn take_ended(&mut self, ended: &Weak<LiveInstance>) -> Option<Arc<LiveInstance>> {
        let ptr = ended.as_ptr();
        self.take_where(|live| std::ptr::eq(live, ptr), 1, Leaving::ToTerminated)
            .pop()
    }

    fn take_where(
        &mut self,
        which: impl Fn(&LiveInstance) -> bool,
        limit: usize,
        leaving: Leaving,
    ) -> Vec<Arc<LiveInstance>> {
        let mut taken = Vec::new();
        let now = SystemTime::now();
        let mut index = 0;
        while index < self.present.len() && taken.len() < limit {
            match self.present[index].live() {
                Some(live) if which(live) => {
                    let mut member = self.present.remove(index);
                    let Phase::Ready(live) = member.phase else {
                        unreachable!("found ready");
                    };
                    member.phase = Phase::Draining(leaving);
                    member.since = now;
                    self.departed.push(member);
                    taken.push(live);
                }
                _ => index += 1,
            }
        }
        taken
    }

    /// Draining → Stopped or Terminated, as it was leaving for: its sandbox has
    /// stopped. Anything else about `id` is left alone.
    pub(super) fn finish_stop(&mut self, id: InstanceId) {
        if let Some(member) = self.departed.iter_mut().find(|m| m.identity.id == id)
            && let Phase::Draining(leaving) = member.phase
        {
            member.phase = leaving.end();
            member.since = SystemTime::now();
            if leaving == Leaving::ToTerminated {
                self.forget_old_terminated();
            }
        }
    }

    /// (new) → Stopped: an instance stopped by hand before the runtime restarted.
    pub(super) fn restore_stopped(&mut self, identity: Identity, revision: u32) {
        self.departed.retain(|m| m.identity.id != identity.id);
        self.departed.push(Member {
            identity,
            revision,
            pinned: false,
            since: SystemTime::now(),
            phase: Phase::Stopped,
        });
    }

    /// Stopped → Terminated for instance `id`; refused in any other state.
    pub(super) fn terminate_stopped(&mut self, id: InstanceId) -> Result<(), Refusal> {
        let mut member = self.take_departed(id, InstanceState::Stopped)?;
        member.phase = Phase::Terminated;
        member.since = SystemTime::now();
        self.departed.push(member);
        self.forget_old_terminated();
        Ok(())
    }

    /// Stopped → Terminated for every stopped instance, in place.
    pub(super) fn terminate_all_stopped(&mut self) {
        let now = SystemTime::now();
        for member in &mut self.departed {
            if matches!(member.phase, Phase::Stopped) {
                member.phase = Phase::Terminated;
                member.since = now;
            }
        }
    }

    fn take_departed(&mut self, id: InstanceId, state: InstanceState) -> Result<Member, Refusal> {
        match self.departed.iter().position(|m| m.identity.id == id) {
            Some(position) if self.departed[position].state() == state => {
                Ok(self.departed.remove(position))
            }
            _ => Err(self.refusal(id)),
        }
    }

    /// Forgets the oldest terminated instances beyond those kept.
    fn forget_old_terminated(&mut self) {
        let terminated = |m: &Member| matches!(m.phase, Phase::Terminated);
        let count = self.departed.iter().filter(|m| terminated(m)).count();
        let mut excess = count.saturating_sub(TERMINATED_KEPT);
        self.departed.retain(|m| {
            let forget = excess > 0 && terminated(m);
            excess -= usize::from(forget);
            !forget
        });
    }

    /// Why an action meant for another state cannot be done to `id`.
    pub(super) fn refusal(&self, id: InstanceId) -> Refusal {
        self.state_of(id)
            .map_or(Refusal::NotFound, Refusal::InState)
    }

    pub(super) fn state_of(&self, id: InstanceId) -> Option<InstanceState> {
        self.present
            .iter()
            .chain(&self.departed)
            .find(|m| m.identity.id == id)
            .map(Member::state)
    }

    /// The instances that take requests.
    pub(super) fn ready(&self) -> impl Iterator<Item = &Arc<LiveInstance>> {
        self.present.iter().filter_map(Member::live)
    }

    /// The ready instance `id`.
    pub(super) fn ready_one(&self, id: InstanceId) -> Option<&Arc<LiveInstance>> {
        self.ready().find(|live| live.id == id)
    }

    /// The instances being started.
    pub(super) fn starting(&self) -> impl Iterator<Item = &Member> {
        self.present.iter().filter(|m| m.is_starting())
    }

    /// Starting and ready instances that match `which` (revision, pinned): what
    /// the autoscaler and the pinned count see.
    pub(super) fn count_present(&self, which: impl Fn(u32, bool) -> bool) -> usize {
        self.present
            .iter()
            .filter(|m| which(m.revision, m.pinned))
            .count()
    }

    /// No instance starts or serves.
    pub(super) fn has_none_present(&self) -> bool {
        self.present.is_empty()
    }

    /// The table holds no instance at all, not even a terminated one.
    pub(super) fn is_empty(&self) -> bool {
        self.present.is_empty() && self.departed.is_empty()
    }

    /// Every instance, for lists: ready ones, then starting ones, then those that
    /// left, each in the order they got there.
    pub(super) fn in_list_order(&self) -> impl Iterator<Item = &Member> {
        self.ready_members()
            .chain(self.starting())
            .chain(&self.departed)
    }

    fn ready_members(&self) -> impl Iterator<Item = &Member> {
        self.present.iter().filter(|m| m.live().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    fn identity(ordinal: u32) -> Identity {
        Identity {
            id: InstanceId::generate(),
            ordinal,
            created: SystemTime::now(),
        }
    }

    fn states(table: &Lifecycle) -> Vec<InstanceState> {
        table.in_list_order().map(Member::state).collect()
    }

    /// A ready sandbox for `identity`.
    fn sandbox(identity: Identity) -> Arc<LiveInstance> {
        Arc::new(live_instance(identity, false))
    }

    #[test]
    fn an_instance_walks_from_start_to_stopped_to_terminated() {
        let mut table = Lifecycle::default();
        let one = identity(1);
        table.begin_start(one, 1, true);
        assert_eq!(states(&table), [InstanceState::Starting]);
        assert_eq!(table.ready().count(), 0);
        assert_eq!(table.count_present(|_, pinned| pinned), 1);

        table.note_waiting(one.id, Some("no room".into()));
        let live = sandbox(one);
        table.finish_start(live.clone(), true).unwrap();
        assert_eq!(states(&table), [InstanceState::Running]);
        assert!(Arc::ptr_eq(table.ready_one(one.id).unwrap(), &live));

        let taken = table.take_ready(one.id, Leaving::ToStopped).unwrap();
        assert!(Arc::ptr_eq(&taken, &live));
        assert_eq!(states(&table), [InstanceState::Stopping]);
        assert_eq!(table.ready().count(), 0, "a draining one takes no requests");
        assert_eq!(table.count_present(|_, _| true), 0, "nor does it count");

        table.finish_stop(one.id);
        assert_eq!(states(&table), [InstanceState::Stopped]);
        assert_eq!(table.start_again(one.id, 2, false).unwrap(), one);
        assert_eq!(states(&table), [InstanceState::Starting]);
        table.finish_start(sandbox(one), true).unwrap();
        table.take_ready(one.id, Leaving::ToStopped).unwrap();
        table.finish_stop(one.id);
        table.terminate_stopped(one.id).unwrap();
        assert_eq!(states(&table), [InstanceState::Terminated]);
        assert!(!table.is_empty(), "a terminated one is remembered");
    }

    #[test]
    fn forbidden_transitions_are_refused_with_the_state_the_instance_is_in() {
        let mut table = Lifecycle::default();
        let one = identity(1);
        assert_eq!(
            table.take_ready(one.id, Leaving::ToTerminated).unwrap_err(),
            Refusal::NotFound
        );
        table.begin_start(one, 1, false);
        let starting = Refusal::InState(InstanceState::Starting);
        assert_eq!(
            table.take_ready(one.id, Leaving::ToStopped).unwrap_err(),
            starting
        );
        assert_eq!(table.start_again(one.id, 1, false).unwrap_err(), starting);
        assert_eq!(table.terminate_stopped(one.id).unwrap_err(), starting);

        table.finish_start(sandbox(one), true).unwrap();
        let running = Refusal::InState(InstanceState::Running);
        assert_eq!(table.start_again(one.id, 1, false).unwrap_err(), running);
        assert_eq!(table.terminate_stopped(one.id).unwrap_err(), running);
        assert!(
            table.finish_start(sandbox(one), true).is_err(),
            "not starting"
        );

        table.take_ready(one.id, Leaving::ToTerminated).unwrap();
        let terminating = Refusal::InState(InstanceState::Terminating);
        assert_eq!(
            table.take_ready(one.id, Leaving::ToStopped).unwrap_err(),
            terminating
        );
        assert_eq!(
            table.start_again(one.id, 1, false).unwrap_err(),
            terminating
        );
        table.finish_stop(one.id);
        let terminated = Refusal::InState(InstanceState::Terminated);
        assert_eq!(table.start_again(one.id, 1, false).unwrap_err(), terminated);
        assert_eq!(table.terminate_stopped(one.id).unwrap_err(), terminated);
        table.finish_stop(one.id);
        assert_eq!(states(&table), [InstanceState::Terminated], "it stays");
    }

    #[test]
    fn a_start_removed_or_no_longer_wanted_drains_instead_of_serving() {
        let mut table = Lifecycle::default();
        let (one, two, three) = (identity(1), identity(2), identity(3));
        table.begin_start(one, 1, false);
        table.begin_start(two, 1, false);
        table.remove_starts();
        table.begin_start(three, 1, false);
        assert!(table.finish_start(sandbox(one), true).is_err());
        assert!(table.finish_start(sandbox(three), false).is_err());
        table.forget_start(two.id);
        assert_eq!(
            states(&table),
            [InstanceState::Terminating, InstanceState::Terminating]
        );
        assert_eq!(
            table.state_of(two.id),
            None,
            "a failed start leaves nothing"
        );
    }

    #[test]
    fn idle_ready_instances_drain_busy_ones_stay_and_an_ended_one_drains_by_identity() {
        let mut table = Lifecycle::default();
        let lives: Vec<_> = (1..=3).map(|n| sandbox(identity(n))).collect();
        for live in &lives {
            table.adopt(live.clone());
        }
        lives[0].in_flight.store(1, Ordering::Relaxed);
        let idle = table.take_idle(|_| true, 1, Leaving::ToTerminated);
        assert!(Arc::ptr_eq(&idle[0], &lives[1]), "the first idle one");
        // A new sandbox for the third: the old one's end is not the instance's.
        let replacement = sandbox(lives[2].identity());
        table.swap_sandbox(&lives[2], replacement.clone()).unwrap();
        assert!(table.take_ended(&Arc::downgrade(&lives[2])).is_none());
        assert!(table.take_ended(&Arc::downgrade(&replacement)).is_some());
        let busy = table.take_all_ready(Leaving::ToTerminated);
        assert!(Arc::ptr_eq(&busy[0], &lives[0]));
        assert_eq!(table.ready().count(), 0);
    }

    #[test]
    fn lists_show_ready_then_starting_then_those_that_left_in_the_order_they_left() {
        let mut table = Lifecycle::default();
        let (one, two, three, four) = (identity(1), identity(2), identity(3), identity(4));
        table.restore_stopped(four, 1);
        table.begin_start(one, 1, false);
        table.begin_start(two, 1, false);
        table.finish_start(sandbox(two), true).unwrap();
        table.adopt(sandbox(three));
        table.take_ready(three.id, Leaving::ToTerminated).unwrap();
        let order: Vec<_> = table.in_list_order().map(|m| m.identity).collect();
        assert_eq!(order, [two, one, four, three]);
    }

    #[test]
    fn only_the_latest_terminated_instances_are_kept_and_stopped_ones_never_go() {
        let mut table = Lifecycle::default();
        let stopped = identity(0);
        table.restore_stopped(stopped, 1);
        let all: Vec<_> = (1..TERMINATED_KEPT as u32 + 12).map(identity).collect();
        for one in &all {
            table.adopt(sandbox(*one));
            table.take_ready(one.id, Leaving::ToTerminated).unwrap();
            table.finish_stop(one.id);
        }
        let kept: Vec<_> = table.in_list_order().map(|m| m.identity).collect();
        assert_eq!(kept.len(), TERMINATED_KEPT + 1);
        assert_eq!(kept[0], stopped);
        assert_eq!(kept.last(), all.last());
        assert!(!kept.contains(&all[0]));
    }
}
