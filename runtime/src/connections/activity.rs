//! What one connection is doing (owing a request head, idle, serving, waiting
//! for a request body), and when its timeouts fall due.

use super::ConnectionPolicy;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Why an open connection was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Its request head did not arrive within the header read timeout.
    HeaderTimeout,
    /// It waited for a next request longer than the idle timeout.
    Idle,
    /// Its request body went without a byte longer than the body stall timeout.
    BodyStall,
}

impl Cut {
    pub(super) const ALL: [Cut; 3] = [Cut::HeaderTimeout, Cut::Idle, Cut::BodyStall];

    pub(super) fn label(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header_timeout",
            Cut::Idle => "idle",
            Cut::BodyStall => "body_stall",
        }
    }
}

/// What one connection is doing, for its timeouts.
pub(super) struct Activity {
    state: Mutex<ActivityState>,
    changed: Notify,
}

struct ActivityState {
    /// Requests whose responses have not been sent in full.
    in_flight: u32,
    /// Request bodies not yet received in full.
    receiving: u32,
    /// The connection speaks HTTP/2 (its heads come as frames, between others).
    h2: bool,
    /// Bytes of a request head have arrived and no request has begun since.
    reading_head: bool,
    /// When the head began to arrive, or the connection went idle.
    since: Instant,
    /// When a byte last arrived.
    last_read: Instant,
}

impl Activity {
    pub(super) fn new() -> Self {
        let now = Instant::now();
        Self {
            // A new connection owes its first request head within the timeout.
            state: Mutex::new(ActivityState {
                in_flight: 0,
                receiving: 0,
                h2: false,
                reading_head: true,
                since: now,
                last_read: now,
            }),
            changed: Notify::new(),
        }
    }

    pub(super) fn read(&self, first: Option<&[u8]>) {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.last_read = now;
        if let Some(bytes) = first
            && bytes.starts_with(b"PRI * HTTP/2.0")
        {
            // Waiting for its first stream, as idle.
            state.h2 = true;
            state.reading_head = false;
            state.since = now;
            drop(state);
            self.changed.notify_one();
        } else if state.in_flight == 0 && !state.reading_head && !state.h2 {
            state.reading_head = true;
            state.since = now;
            drop(state);
            self.changed.notify_one();
        }
    }

    pub(super) fn request_began(&self, with_body: bool) {
        let mut state = self.state.lock();
        state.in_flight += 1;
        state.reading_head = false;
        if with_body {
            state.receiving += 1;
            state.last_read = Instant::now();
        }
        drop(state);
        self.changed.notify_one();
    }

    pub(super) fn body_received(&self) {
        let mut state = self.state.lock();
        state.receiving = state.receiving.saturating_sub(1);
    }

    pub(super) fn body_progressed(&self) {
        self.state.lock().last_read = Instant::now();
    }

    pub(super) fn request_ended(&self) {
        let mut state = self.state.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.reading_head = false;
            state.since = Instant::now();
        }
        drop(state);
        self.changed.notify_one();
    }

    /// The next deadline and the cut it brings; `None` while requests are served
    /// and no body is awaited.
    pub(super) fn deadline(&self, policy: &ConnectionPolicy) -> Option<(Instant, Cut)> {
        let state = self.state.lock();
        if state.in_flight > 0 {
            (state.receiving > 0)
                .then(|| (state.last_read + policy.body_stall_timeout, Cut::BodyStall))
        } else if state.reading_head {
            Some((state.since + policy.header_read_timeout, Cut::HeaderTimeout))
        } else {
            Some((state.since + policy.idle_timeout, Cut::Idle))
        }
    }

    /// Resolves with the cut once a deadline of `policy` passes.
    pub(super) async fn watch(&self, policy: &ConnectionPolicy) -> Cut {
        loop {
            match self.deadline(policy) {
                Some((at, cut)) if at <= Instant::now() => return cut,
                Some((at, _)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_what_the_connection_does() {
        let policy = ConnectionPolicy {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_stall_timeout: Duration::from_secs(30),
            ..ConnectionPolicy::with_total(10)
        };
        let activity = Activity::new();
        let began = Instant::now();
        // A new connection owes its head.
        assert_eq!(
            activity.deadline(&policy),
            Some((began + Duration::from_secs(10), Cut::HeaderTimeout))
        );
        // Serving a request without a body: no deadline.
        activity.read(Some(b"GET / HTTP/1.1\r\n"));
        activity.request_began(false);
        assert_eq!(activity.deadline(&policy), None);
        // Answered: idle until the next request's first byte.
        tokio::time::advance(Duration::from_secs(5)).await;
        activity.request_ended();
        let idle_at = Instant::now() + Duration::from_secs(60);
        assert_eq!(activity.deadline(&policy), Some((idle_at, Cut::Idle)));
        tokio::time::advance(Duration::from_secs(1)).await;
        activity.read(None);
        assert_eq!(
            activity.deadline(&policy),
            Some((Instant::now() + Duration::from_secs(10), Cut::HeaderTimeout))
        );
        // A request with a body is cut when the body stalls.
        activity.request_began(true);
        let stall_at = Instant::now() + Duration::from_secs(30);
        assert_eq!(activity.deadline(&policy), Some((stall_at, Cut::BodyStall)));
        activity.body_received();
        assert_eq!(activity.deadline(&policy), None);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1000), activity.watch(&policy))
                .await
                .ok(),
            None
        );
        activity.request_ended();
        assert_eq!(activity.watch(&policy).await, Cut::Idle);
    }

    #[test]
    fn an_http2_preface_makes_the_connection_idle_until_a_stream_opens() {
        let policy = ConnectionPolicy::with_total(10);
        let activity = Activity::new();
        activity.read(Some(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        assert!(matches!(activity.deadline(&policy), Some((_, Cut::Idle))));
        // Frames between streams do not make it owe a head.
        activity.read(None);
        assert!(matches!(activity.deadline(&policy), Some((_, Cut::Idle))));
    }
}
