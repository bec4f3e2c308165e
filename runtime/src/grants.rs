//! Short-lived grants to reach one instance: tokens for its console and telemetry
//! WebSockets, and credentials for its SSH server. Their secrets are made and
//! hashed as API tokens are; only the hashes are kept, in memory: a restart of the
//! runtime expires every grant, which errs on the side of refusing.

use crate::auth::{SecretHash, generate_secret, hash};
use crate::model::{ContainerId, InstanceId, UserId};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;

/// How long a stream token may wait to be used.
pub const STREAM_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// What a stream token opens; a token opens that stream alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamPurpose {
    /// The instance's output, and its standard input.
    Console,
    /// The instance's resource figures, about once a second.
    Telemetry,
}

/// The instance a grant opens, and who asked for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantTarget {
    /// The instance's container.
    pub container: ContainerId,
    /// The instance.
    pub instance: InstanceId,
    /// Who was granted it.
    pub user: UserId,
}

/// A stream token, shown once.
#[derive(Debug, Clone)]
pub struct StreamGrant {
    /// The secret to append as `?token=`.
    pub token: String,
    /// When it stops opening the stream.
    pub expires: SystemTime,
}

/// SSH credentials for one instance, shown once.
#[derive(Debug, Clone)]
pub struct SshCredentials {
    /// The login name: the instance's id.
    pub user: String,
    /// The one-off password.
    pub secret: String,
    /// When it stops being accepted.
    pub valid_until: SystemTime,
}

struct StreamEntry {
    purpose: StreamPurpose,
    target: GrantTarget,
    expires: SystemTime,
}

struct SshEntry {
    hash: SecretHash,
    target: GrantTarget,
    valid_until: SystemTime,
}

/// Every grant in force.
#[derive(Default)]
pub(crate) struct Grants {
    streams: Mutex<HashMap<SecretHash, StreamEntry>>,
    ssh: Mutex<HashMap<InstanceId, Vec<SshEntry>>>,
}

impl Grants {
    /// A token that opens `purpose`'s stream of `target` once, until `now` plus
    /// [`STREAM_TOKEN_LIFETIME`].
    pub(crate) fn grant_stream(
        &self,
        purpose: StreamPurpose,
        target: GrantTarget,
        now: SystemTime,
    ) -> StreamGrant {
        let token = generate_secret();
        let expires = now + STREAM_TOKEN_LIFETIME;
        let mut streams = self.streams.lock();
        streams.retain(|_, entry| entry.expires > now);
        streams.insert(
            hash(&token),
            StreamEntry {
                purpose,
                target,
                expires,
            },
        );
        StreamGrant { token, expires }
    }

    /// Uses up `token`: what it opens, if it is a live token for `purpose`. A token
    /// for another purpose stays unused.
    pub(crate) fn redeem_stream(
        &self,
        token: &str,
        purpose: StreamPurpose,
        now: SystemTime,
    ) -> Option<GrantTarget> {
        let mut streams = self.streams.lock();
        let key = hash(token);
        let entry = streams.get(&key)?;
        if entry.purpose != purpose {
            return None;
        }
        let entry = streams.remove(&key)?;
        (entry.expires > now).then_some(entry.target)
    }

    /// New SSH credentials for `target`, valid for `lifetime`.
    pub(crate) fn grant_ssh(
        &self,
        target: GrantTarget,
        lifetime: Duration,
        now: SystemTime,
    ) -> SshCredentials {
        let secret = generate_secret();
        let valid_until = now + lifetime;
        let mut ssh = self.ssh.lock();
        let entries = ssh.entry(target.instance).or_default();
        entries.retain(|entry| entry.valid_until > now);
        entries.push(SshEntry {
            hash: hash(&secret),
            target,
            valid_until,
        });
        SshCredentials {
            user: target.instance.to_string(),
            secret,
            valid_until,
        }
    }

    /// What `user` and `secret` open, if they are live credentials. Every secret of
    /// the instance is compared in constant time.
    pub(crate) fn check_ssh(
        &self,
        user: &str,
        secret: &str,
        now: SystemTime,
    ) -> Option<GrantTarget> {
        let instance: InstanceId = user.parse().ok()?;
        let offered = hash(secret);
        let ssh = self.ssh.lock();
        ssh.get(&instance)?
            .iter()
            .filter(|entry| entry.valid_until > now)
            .find(|entry| bool::from(entry.hash.ct_eq(&offered)))
            .map(|entry| entry.target)
    }

    /// Expires every SSH credential of `instance`; returns how many were still valid.
    pub(crate) fn expire_ssh(&self, instance: InstanceId, now: SystemTime) -> usize {
        self.ssh.lock().remove(&instance).map_or(0, |entries| {
            entries
                .iter()
                .filter(|entry| entry.valid_until > now)
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> GrantTarget {
        GrantTarget {
            container: ContainerId::generate(),
            instance: InstanceId::generate(),
            user: UserId::generate(),
        }
    }

    #[test]
    fn a_stream_token_opens_its_own_stream_once_and_only_while_fresh() {
        let grants = Grants::default();
        let (t0, target) = (SystemTime::UNIX_EPOCH + Duration::from_secs(1000), target());
        let console = grants.grant_stream(StreamPurpose::Console, target, t0);
        assert_eq!(console.expires, t0 + STREAM_TOKEN_LIFETIME);
        // The wrong purpose neither opens nor uses it up.
        assert_eq!(
            grants.redeem_stream(&console.token, StreamPurpose::Telemetry, t0),
            None
        );
        assert_eq!(
            grants.redeem_stream(&console.token, StreamPurpose::Console, t0),
            Some(target)
        );
        assert_eq!(
            grants.redeem_stream(&console.token, StreamPurpose::Console, t0),
            None
        );
        let late = grants.grant_stream(StreamPurpose::Telemetry, target, t0);
        let after = t0 + STREAM_TOKEN_LIFETIME + Duration::from_secs(1);
        assert_eq!(
            grants.redeem_stream(&late.token, StreamPurpose::Telemetry, after),
            None
        );
        assert_eq!(
            grants.redeem_stream("made-up", StreamPurpose::Console, t0),
            None
        );
    }

    #[test]
    fn ssh_credentials_open_their_instance_until_they_expire_or_are_expired() {
        let grants = Grants::default();
        let (t0, target) = (SystemTime::UNIX_EPOCH + Duration::from_secs(1000), target());
        let hour = Duration::from_secs(3600);
        let first = grants.grant_ssh(target, hour, t0);
        let second = grants.grant_ssh(target, hour, t0);
        assert_eq!(first.user, target.instance.to_string());
        assert_ne!(first.secret, second.secret);
        assert_eq!(
            grants.check_ssh(&first.user, &first.secret, t0),
            Some(target)
        );
        assert_eq!(
            grants.check_ssh(&first.user, &second.secret, t0),
            Some(target)
        );
        assert_eq!(grants.check_ssh(&first.user, "wrong", t0), None);
        let other = InstanceId::generate().to_string();
        assert_eq!(grants.check_ssh(&other, &first.secret, t0), None);
        assert_eq!(grants.check_ssh("not-an-id", &first.secret, t0), None);
        assert_eq!(
            grants.check_ssh(&first.user, &first.secret, t0 + hour),
            None,
            "expired at valid_until"
        );
        assert_eq!(grants.expire_ssh(target.instance, t0), 2);
        assert_eq!(grants.check_ssh(&first.user, &second.secret, t0), None);
        assert_eq!(grants.expire_ssh(target.instance, t0), 0);
    }
}
