//! The log store: what containers' instances write, kept per container in memory,
//! oldest lines dropped first once a container's lines pass the retention size, and
//! handed to followers as they come.

use crate::model::ContainerId;
use ember_sandbox::{LogSink, LogStream};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::broadcast;

/// Lines a follower may fall behind by before it misses some.
const FOLLOWER_BACKLOG: usize = 1024;

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the runtime read it.
    pub time: SystemTime,
    /// The instance that wrote it.
    pub instance: String,
    /// Which stream.
    pub stream: LogStream,
    /// The line, without its newline.
    pub line: String,
}

impl LogEntry {
    /// What the line counts against the retention size.
    fn size(&self) -> usize {
        self.line.len() + self.instance.len() + 32
    }
}

#[derive(Default)]
struct ContainerLog {
    entries: VecDeque<LogEntry>,
    bytes: usize,
    /// Made when the first follower comes; dropped with the container's log, which
    /// ends every follow.
    followers: Option<broadcast::Sender<LogEntry>>,
}

/// Every container's recent output.
pub struct LogStore {
    retention_bytes: usize,
    logs: Mutex<HashMap<ContainerId, ContainerLog>>,
}

impl LogStore {
    /// A store keeping about `retention_bytes` per container.
    pub fn new(retention_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            retention_bytes,
            logs: Mutex::default(),
        })
    }

    /// Appends a line, dropping the oldest ones past the retention size.
    pub fn append(&self, container: ContainerId, entry: LogEntry) {
        let mut logs = self.logs.lock();
        let log = logs.entry(container).or_default();
        if let Some(followers) = &log.followers
            && followers.receiver_count() > 0
        {
            let _ = followers.send(entry.clone());
        }
        log.bytes += entry.size();
        log.entries.push_back(entry);
        while log.bytes > self.retention_bytes {
            match log.entries.pop_front() {
                Some(old) => log.bytes -= old.size(),
                None => break,
            }
        }
    }

    /// The container's lines written between `since` and `until`, oldest first.
    pub fn read(
        &self,
        container: ContainerId,
        since: SystemTime,
        until: SystemTime,
    ) -> Vec<LogEntry> {
        self.logs
            .lock()
            .get(&container)
            .map_or_else(Vec::new, |log| {
                log.entries
                    .iter()
                    .filter(|e| e.time >= since && e.time <= until)
                    .cloned()
                    .collect()
            })
    }

    /// A new channel of `FOLLOWER_BACKLOG` lines, for a follower of several
    /// nodes' lines.
    pub(crate) fn follower_channel() -> (broadcast::Sender<LogEntry>, broadcast::Receiver<LogEntry>)
    {
        broadcast::channel(FOLLOWER_BACKLOG)
    }

    /// The container's lines written since `since`, oldest first, and a receiver of
    /// every line written after them: taken under one lock, so no line is missed or
    /// repeated between the two.
    pub fn follow(
        &self,
        container: ContainerId,
        since: SystemTime,
    ) -> (Vec<LogEntry>, broadcast::Receiver<LogEntry>) {
        let mut logs = self.logs.lock();
        let log = logs.entry(container).or_default();
        let recent = log
            .entries
            .iter()
            .filter(|e| e.time >= since)
            .cloned()
            .collect();
        let followers = log
            .followers
            .get_or_insert_with(|| broadcast::channel(FOLLOWER_BACKLOG).0);
        (recent, followers.subscribe())
    }

    /// Forgets a deleted container's output.
    pub fn remove(&self, container: ContainerId) {
        self.logs.lock().remove(&container);
    }

    /// The sink a container's instances write to.
    pub fn sink(self: &Arc<Self>, container: ContainerId) -> ContainerLogSink {
        ContainerLogSink {
            store: self.clone(),
            container,
        }
    }
}

/// Writes into the store under one container.
pub struct ContainerLogSink {
    store: Arc<LogStore>,
    container: ContainerId,
}

impl LogSink for ContainerLogSink {
    fn line(&self, instance: &str, stream: LogStream, text: &str) {
        self.store.append(
            self.container,
            LogEntry {
                time: SystemTime::now(),
                instance: instance.to_string(),
                stream,
                line: text.to_string(),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(line: &str) -> LogEntry {
        LogEntry {
            time: SystemTime::now(),
            instance: "i".into(),
            stream: LogStream::Stdout,
            line: line.into(),
        }
    }

    #[test]
    fn old_lines_go_once_the_retention_size_is_passed() {
        let store = LogStore::new(200);
        let id = ContainerId::generate();
        for n in 0..20 {
            store.append(id, entry(&format!("line {n:02} {}", "x".repeat(20))));
        }
        let kept = store.read(id, SystemTime::UNIX_EPOCH, SystemTime::now());
        assert!(kept.len() < 20 && !kept.is_empty());
        assert!(kept.last().unwrap().line.starts_with("line 19"));
        let total: usize = kept.iter().map(LogEntry::size).sum();
        assert!(total <= 200);
    }

    #[test]
    fn reads_filter_by_time_and_container() {
        let store = LogStore::new(1 << 20);
        let (a, b) = (ContainerId::generate(), ContainerId::generate());
        store.sink(a).line("i1", LogStream::Stderr, "hello");
        assert_eq!(store.read(b, SystemTime::UNIX_EPOCH, SystemTime::now()), []);
        let later = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(store.read(a, later, later), []);
        let lines = store.read(a, SystemTime::UNIX_EPOCH, later);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].stream, LogStream::Stderr);
        store.remove(a);
        assert_eq!(store.read(a, SystemTime::UNIX_EPOCH, later), []);
    }

    #[test]
    fn followers_get_the_recent_lines_then_each_new_one_until_the_container_goes() {
        let store = LogStore::new(1 << 20);
        let (a, b) = (ContainerId::generate(), ContainerId::generate());
        store.append(a, entry("before"));
        let (recent, mut follower) = store.follow(a, SystemTime::UNIX_EPOCH);
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].line, "before");
        store.append(b, entry("elsewhere"));
        store.append(a, entry("after"));
        assert_eq!(follower.try_recv().unwrap().line, "after");
        assert!(matches!(
            follower.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        store.remove(a);
        assert!(matches!(
            follower.try_recv(),
            Err(broadcast::error::TryRecvError::Closed)
        ));
    }
}
