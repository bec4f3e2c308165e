//! The output of a container's instances on the other members: each member keeps
//! the lines of the instances it runs, and a node asked for a container's logs
//! reads theirs through their APIs (`GET /v1/containers/{id}/logs`, the same
//! event stream a client reads, marked so that the member answers for itself).

use super::Peers;
use crate::logs::LogEntry;
use crate::model::ContainerId;
use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Longest a member may take to answer a bounded read of its lines.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes of one member's lines for a bounded read.
const READ_BYTES: usize = 64 << 20;
/// Longest a member may take to start a followed stream.
const FOLLOW_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Peers {
    /// The lines of container `id` the other members hold from `since` to
    /// `until`; a member that does not answer is left out (and logged).
    pub(crate) async fn logs_of(
        &self,
        id: ContainerId,
        since: SystemTime,
        until: SystemTime,
    ) -> Vec<LogEntry> {
        let path = format!(
            "/v1/containers/{id}/logs?period_start={}&period_end={}",
            epoch_seconds(since),
            // The API's range is whole seconds, inclusive.
            epoch_seconds(until)
        );
        let reads = self.others().into_iter().map(|member| {
            let path = path.clone();
            async move {
                match self.get(member.api, &path, READ_BYTES, READ_TIMEOUT).await {
                    Ok(body) => {
                        let mut events = EventLines::default();
                        events.feed(&body);
                        events.entries()
                    }
                    Err(why) => {
                        tracing::info!(member = %member.name, %why, "a member did not give its lines");
                        Vec::new()
                    }
                }
            }
        });
        let mut lines: Vec<LogEntry> = futures::future::join_all(reads)
            .await
            .into_iter()
            .flatten()
            .filter(|e| e.time >= floor_second(since) && e.time <= until)
            .collect();
        lines.sort_by_key(|e| e.time);
        lines
    }

    /// Sends the lines of container `id` the other members hold since `since`,
    /// then each new one, into `sink`, until `sink` has no receivers left (the
    /// client went) or a member's stream ends (the container was deleted).
    pub(crate) fn follow_logs_of(
        self: &Arc<Self>,
        id: ContainerId,
        since: SystemTime,
        sink: broadcast::Sender<LogEntry>,
    ) {
        let path = format!(
            "/v1/containers/{id}/logs?period_start={}",
            epoch_seconds(since)
        );
        for member in self.others() {
            let (peers, path, sink) = (self.clone(), path.clone(), sink.clone());
            tokio::spawn(async move {
                let opened = tokio::time::timeout(
                    FOLLOW_CONNECT_TIMEOUT,
                    peers.open(http::Method::GET, member.api, &path),
                )
                .await;
                let mut body = match opened {
                    Ok(Ok(body)) => body,
                    Ok(Err(why)) => {
                        tracing::info!(member = %member.name, %why, "a member's lines could not be followed");
                        return;
                    }
                    Err(_) => return,
                };
                let mut events = EventLines::default();
                // Every frame, keep-alive comments included (one each 15 s), is a
                // chance to see that the client has gone.
                while let Some(Ok(frame)) = body.frame().await {
                    if sink.receiver_count() == 0 {
                        return;
                    }
                    if let Ok(data) = frame.into_data() {
                        events.feed(&data);
                        for entry in events.entries() {
                            let _ = sink.send(entry);
                        }
                    }
                }
            });
        }
    }
}

/// Whole seconds since the epoch, as the logs API takes them.
fn epoch_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `time` cut to its second (the members' timestamps have no finer part).
fn floor_second(time: SystemTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(epoch_seconds(time))
}

/// Server-sent events as they arrive, split into whole events, each `data:`
/// line one log line as JSON.
#[derive(Default)]
struct EventLines {
    pending: BytesMut,
    parsed: Vec<LogEntry>,
}

impl EventLines {
    fn feed(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.windows(2).position(|w| w == b"\n\n") {
            let event = self.pending.split_to(end);
            self.pending.advance(2);
            let Ok(text) = std::str::from_utf8(&event) else {
                continue;
            };
            for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
                if let Some(entry) = parse_entry(data) {
                    self.parsed.push(entry);
                }
            }
        }
    }

    fn entries(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.parsed)
    }
}

/// One line as the logs API writes it: `{"timestamp", "instance", "stream",
/// "line"}`.
fn parse_entry(data: &str) -> Option<LogEntry> {
    #[derive(serde::Deserialize)]
    struct Event {
        timestamp: String,
        instance: String,
        stream: ember_sandbox::LogStream,
        line: String,
    }
    let event: Event = serde_json::from_str(data).ok()?;
    Some(LogEntry {
        time: humantime::parse_rfc3339(&event.timestamp).ok()?,
        instance: event.instance,
        stream: event.stream,
        line: event.line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_come_out_whole_and_comments_are_skipped() {
        let mut events = EventLines::default();
        let stream = concat!(
            "data: {\"timestamp\":\"2026-12-07T10:00:00Z\",\"instance\":\"a\",\"stream\":\"stdout\",\"line\":\"one\"}\n\n",
            ": keep-alive\n\n",
            "data: {\"timestamp\":\"2026-12-07T10:00:01Z\",\"instance\":\"b\",\"stream\":\"stderr\",\"line\":\"two\"}\n\n",
        )
        .as_bytes();
        let (first, rest) = stream.split_at(40);
        events.feed(first);
        assert!(events.entries().is_empty());
        events.feed(rest);
        let entries = events.entries();
        assert_eq!(
            entries
                .iter()
                .map(|e| (e.instance.as_str(), e.stream, e.line.as_str()))
                .collect::<Vec<_>>(),
            [
                ("a", ember_sandbox::LogStream::Stdout, "one"),
                ("b", ember_sandbox::LogStream::Stderr, "two")
            ]
        );
        assert_eq!(
            entries[1].time,
            UNIX_EPOCH + Duration::from_secs(1_796_637_601)
        );
    }

    #[test]
    fn a_malformed_event_is_skipped() {
        let mut events = EventLines::default();
        events.feed(b"data: {not json}\n\ndata: {\"timestamp\":\"soon\",\"instance\":\"a\",\"stream\":\"stdout\",\"line\":\"x\"}\n\n");
        assert!(events.entries().is_empty());
    }
}
