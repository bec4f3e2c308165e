//! What one tenant (a user) may hold on a node at once: containers, instances,
//! and the CPU and memory its instances ask for. Set on the user by an ADMIN
//! token; a user with none set gets the defaults `ember serve` was given.

use super::Quantity;
use std::fmt;

/// A tenant's limits; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    /// Containers it may have.
    #[serde(default)]
    pub containers: Option<u32>,
    /// Instances it may have starting or running at once.
    #[serde(default)]
    pub instances: Option<u32>,
    /// CPUs its starting and running instances may ask for in all.
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory its starting and running instances may ask for in all.
    #[serde(default)]
    pub ram: Option<Quantity>,
    /// Requests to the management API per minute (its tokens together).
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Disk its starting and running OCI instances may write in all (each
    /// instance counts its container's `ephemeralStorage`).
    #[serde(default)]
    pub ephemeral_storage: Option<Quantity>,
}

impl Quota {
    /// Checks the values: CPUs positive and finite.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(cpu) = self.cpu
            && !(cpu.is_finite() && cpu > 0.0)
        {
            return Err((
                "cpu",
                format!("{cpu} is not a number of CPUs greater than 0"),
            ));
        }
        if self.requests_per_minute == Some(0) {
            return Err(("requestsPerMinute", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// What a tenant holds now, against its quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaUse {
    /// Containers it has.
    pub containers: u32,
    /// Instances starting or running.
    pub instances: u32,
    /// Millicpus they ask for.
    pub millicpus: u64,
    /// Bytes of memory they ask for.
    pub memory_bytes: u64,
    /// Bytes of ephemeral storage they may write.
    pub ephemeral_storage_bytes: u64,
}

/// Which limit a request would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Containers.
    Containers,
    /// Instances.
    Instances,
    /// CPUs.
    Cpu,
    /// Memory.
    Ram,
    /// Ephemeral storage.
    EphemeralStorage,
}

impl QuotaKind {
    /// The quota's field name in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Containers => "containers",
            Self::Instances => "instances",
            Self::Cpu => "cpu",
            Self::Ram => "ram",
            Self::EphemeralStorage => "ephemeralStorage",
        }
    }
}

impl fmt::Display for QuotaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Quota {
    /// The first limit that one more of `adding` (on top of `used`) would pass,
    /// with a sentence saying by how much.
    pub fn refuses(&self, used: QuotaUse, adding: QuotaUse) -> Option<(QuotaKind, String)> {
        if let Some(limit) = self.containers
            && adding.containers > 0
            && used.containers + adding.containers > limit
        {
            return Some((
                QuotaKind::Containers,
                format!(
                    "{} containers in use of a quota of {limit}",
                    used.containers
                ),
            ));
        }
        if let Some(limit) = self.instances
            && adding.instances > 0
            && used.instances + adding.instances > limit
        {
            return Some((
                QuotaKind::Instances,
                format!("{} instances in use of a quota of {limit}", used.instances),
            ));
        }
        if let Some(limit) = self.cpu
            && adding.millicpus > 0
            && (used.millicpus + adding.millicpus) as f64 > limit * 1000.0
        {
            return Some((
                QuotaKind::Cpu,
                format!(
                    "{} CPUs in use of a quota of {limit}, and this asks for {} more",
                    used.millicpus as f64 / 1000.0,
                    adding.millicpus as f64 / 1000.0
                ),
            ));
        }
        if let Some(limit) = &self.ram
            && adding.memory_bytes > 0
            && used.memory_bytes + adding.memory_bytes > limit.bytes()
        {
            return Some((
                QuotaKind::Ram,
                format!(
                    "{} MiB of memory in use of a quota of {limit}, and this asks for {} MiB more",
                    used.memory_bytes >> 20,
                    adding.memory_bytes >> 20
                ),
            ));
        }
        if let Some(limit) = &self.ephemeral_storage
            && adding.ephemeral_storage_bytes > 0
            && used.ephemeral_storage_bytes + adding.ephemeral_storage_bytes > limit.bytes()
        {
            return Some((
                QuotaKind::EphemeralStorage,
                format!(
                    "{} MiB of ephemeral storage in use of a quota of {limit}, and this asks for {} MiB more",
                    used.ephemeral_storage_bytes >> 20,
                    adding.ephemeral_storage_bytes >> 20
                ),
            ));
        }
        None
    }
}

/// A tenant's requests to the API, as a token bucket: `per_minute` may come at
/// once, and they come back at `per_minute` a minute. Pure: told the time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestBucket {
    tokens: f64,
    at: std::time::Duration,
}

impl RequestBucket {
    /// A full bucket at clock time `now`.
    pub fn full(per_minute: u32, now: std::time::Duration) -> Self {
        Self {
            tokens: f64::from(per_minute),
            at: now,
        }
    }

    /// Takes one request at `now`, or says how long until one may come.
    pub fn take(
        &mut self,
        per_minute: u32,
        now: std::time::Duration,
    ) -> Result<(), std::time::Duration> {
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(per_minute));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64(
                (1.0 - self.tokens) / rate,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_instance(millicpus: u64, memory_bytes: u64) -> QuotaUse {
        QuotaUse {
            instances: 1,
            millicpus,
            memory_bytes,
            ..QuotaUse::default()
        }
    }

    #[test]
    fn a_bucket_lets_a_minute_s_worth_through_at_once_then_one_at_its_rate() {
        let second = std::time::Duration::from_secs(1);
        let mut bucket = RequestBucket::full(60, std::time::Duration::ZERO);
        for _ in 0..60 {
            bucket.take(60, std::time::Duration::ZERO).unwrap();
        }
        let wait = bucket.take(60, std::time::Duration::ZERO).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9, "{wait:?}");
        bucket.take(60, second).unwrap();
        assert!(bucket.take(60, second).is_err());
        // A long pause fills it no further than full.
        for _ in 0..60 {
            bucket.take(60, 3600 * second).unwrap();
        }
        assert!(bucket.take(60, 3600 * second).is_err());
    }

    #[test]
    fn no_quota_refuses_nothing() {
        let used = QuotaUse {
            containers: 1_000,
            instances: 1_000,
            millicpus: 1 << 40,
            memory_bytes: 1 << 60,
            ephemeral_storage_bytes: 1 << 60,
        };
        assert_eq!(
            Quota::default().refuses(used, one_instance(1000, 1 << 30)),
            None
        );
    }

    #[test]
    fn each_limit_refuses_what_would_pass_it_and_says_the_use() {
        let quota: Quota =
            serde_json::from_str(r#"{"containers": 2, "instances": 3, "cpu": 2.5, "ram": "1Gi", "ephemeralStorage": "2Gi"}"#)
                .unwrap();
        let used = QuotaUse {
            containers: 2,
            instances: 2,
            millicpus: 2000,
            memory_bytes: 512 << 20,
            ephemeral_storage_bytes: 1 << 30,
        };
        let (kind, why) = quota
            .refuses(
                used,
                QuotaUse {
                    containers: 1,
                    ..QuotaUse::default()
                },
            )
            .unwrap();
        assert_eq!(
            (kind, why.as_str()),
            (QuotaKind::Containers, "2 containers in use of a quota of 2")
        );
        assert_eq!(quota.refuses(used, one_instance(500, 256 << 20)), None);
        assert_eq!(
            quota.refuses(used, one_instance(1000, 1)).unwrap().0,
            QuotaKind::Cpu
        );
        assert_eq!(
            quota.refuses(used, one_instance(100, 600 << 20)).unwrap().0,
            QuotaKind::Ram
        );
        let disk = QuotaUse {
            ephemeral_storage_bytes: 1536 << 20,
            ..one_instance(1, 1)
        };
        let (kind, why) = quota.refuses(used, disk).unwrap();
        assert_eq!(kind, QuotaKind::EphemeralStorage);
        assert_eq!(
            why,
            "1024 MiB of ephemeral storage in use of a quota of 2Gi, and this asks for 1536 MiB more"
        );
        let three = QuotaUse {
            instances: 3,
            ..used
        };
        assert_eq!(
            quota.refuses(three, one_instance(1, 1)).unwrap().0,
            QuotaKind::Instances
        );
        assert!(serde_json::from_str::<Quota>(r#"{"pods": 1}"#).is_err());
        assert!(
            Quota {
                cpu: Some(0.0),
                ..Quota::default()
            }
            .validate()
            .is_err()
        );
    }
}
