//! The instances of a container that do not run: those stopped by hand, which can
//! start again under the same id, and those recently terminated, which lists keep
//! showing for a while (as Tutum lists "current and recently terminated" ones).

use crate::model::{InstanceId, InstanceState, StoppedInstance};
use parking_lot::Mutex;
use std::time::SystemTime;

/// Terminated instances kept per container; older ones are forgotten.
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

/// An instance that is not running (or is on its way out).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) identity: Identity,
    pub(crate) revision: u32,
    pub(crate) pinned: bool,
    /// Stopping, Stopped, Terminating or Terminated.
    pub(crate) state: InstanceState,
    pub(crate) since: SystemTime,
}

/// One container's instances that do not run, in the order they left.
#[derive(Default)]
pub(crate) struct Roster {
    entries: Mutex<Vec<Entry>>,
}

impl Roster {
    /// Records the instance in `state`, replacing what was recorded of it.
    pub(crate) fn record(
        &self,
        identity: Identity,
        revision: u32,
        pinned: bool,
        state: InstanceState,
    ) {
        let mut entries = self.entries.lock();
        entries.retain(|e| e.identity.id != identity.id);
        entries.push(Entry {
            identity,
            revision,
            pinned,
            state,
            since: SystemTime::now(),
        });
        let terminated = entries
            .iter()
            .filter(|e| e.state == InstanceState::Terminated)
            .count();
        if terminated > TERMINATED_KEPT {
            let mut excess = terminated - TERMINATED_KEPT;
            entries.retain(|e| {
                let forget = excess > 0 && e.state == InstanceState::Terminated;
                excess -= usize::from(forget);
                !forget
            });
        }
    }

    /// Moves a recorded instance on to `state` (a stop ended, say); an instance no
    /// longer recorded is left alone.
    pub(crate) fn advance(&self, id: InstanceId, state: InstanceState) {
        if let Some(entry) = self.entries.lock().iter_mut().find(|e| e.identity.id == id) {
            entry.state = state;
            entry.since = SystemTime::now();
        }
    }

    /// Takes the instance out of the roster if it is in `state`; otherwise returns
    /// the state it is in, if it is recorded at all.
    pub(crate) fn take_if(
        &self,
        id: InstanceId,
        state: InstanceState,
    ) -> Result<Entry, Option<InstanceState>> {
        let mut entries = self.entries.lock();
        let position = entries
            .iter()
            .position(|e| e.identity.id == id)
            .ok_or(None)?;
        if entries[position].state != state {
            return Err(Some(entries[position].state));
        }
        Ok(entries.remove(position))
    }

    /// Records instances stopped before the runtime restarted.
    pub(crate) fn restore(&self, stopped: &[StoppedInstance]) {
        for s in stopped {
            let identity = Identity {
                id: s.id,
                ordinal: s.ordinal,
                created: s.created,
            };
            self.record(identity, s.revision, false, InstanceState::Stopped);
        }
    }

    /// Forgets every stopped instance for good: they show as Terminated.
    pub(crate) fn terminate_stopped(&self) {
        let now = SystemTime::now();
        for entry in self.entries.lock().iter_mut() {
            if entry.state == InstanceState::Stopped {
                entry.state = InstanceState::Terminated;
                entry.since = now;
            }
        }
    }

    /// Everything recorded, oldest first.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.lock().is_empty()
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.entries.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(ordinal: u32) -> Identity {
        Identity {
            id: InstanceId::generate(),
            ordinal,
            created: SystemTime::now(),
        }
    }

    #[test]
    fn a_stopped_instance_is_taken_back_only_once_it_has_stopped() {
        let roster = Roster::default();
        let one = identity(1);
        roster.record(one, 1, true, InstanceState::Stopping);
        assert_eq!(
            roster.take_if(one.id, InstanceState::Stopped).unwrap_err(),
            Some(InstanceState::Stopping)
        );
        roster.advance(one.id, InstanceState::Stopped);
        let entry = roster.take_if(one.id, InstanceState::Stopped).unwrap();
        assert_eq!(entry.identity, one);
        assert!(entry.pinned);
        assert_eq!(
            roster.take_if(one.id, InstanceState::Stopped).unwrap_err(),
            None
        );
    }

    #[test]
    fn only_the_latest_terminated_instances_are_kept() {
        let roster = Roster::default();
        let stopped = identity(1);
        roster.record(stopped, 1, false, InstanceState::Stopped);
        let all: Vec<_> = (2..TERMINATED_KEPT as u32 + 12).map(identity).collect();
        for one in &all {
            roster.record(*one, 1, false, InstanceState::Terminated);
        }
        let entries = roster.entries();
        assert_eq!(entries.len(), TERMINATED_KEPT + 1);
        assert_eq!(
            entries[0].identity, stopped,
            "a stopped one is never forgotten"
        );
        assert_eq!(entries.last().unwrap().identity, *all.last().unwrap());
        assert!(!entries.iter().any(|e| e.identity == all[0]));
    }
}
