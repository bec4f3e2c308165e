//! What the ingress and the API allow a client connection: how many may be open
//! from one address and in all, and how long one may take over its request head,
//! sit idle, or stall its request body before it is cut. A client that opens
//! connections and never finishes them (slowloris) holds each for seconds and
//! holds few, so the node keeps answering everyone else.

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The limits and timeouts of one listener's connections.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionPolicy {
    /// Longest from the connection's start, or from the first byte of a next
    /// request, until the whole request head has arrived.
    pub header_read_timeout: Duration,
    /// Longest a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Longest a request body may go without a byte arriving.
    pub body_stall_timeout: Duration,
    /// Connections one client address may hold open.
    pub max_per_source: u32,
    /// Connections the listener holds open in all.
    pub max_total: u32,
}

impl ConnectionPolicy {
    /// The defaults `ember serve` documents, for a listener that may hold
    /// `max_total` connections.
    pub fn with_total(max_total: u32) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_stall_timeout: Duration::from_secs(30),
            max_per_source: 256,
            max_total,
        }
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address holds `max_per_source` connections already.
    PerSource,
    /// The listener holds `max_total` connections already.
    Total,
    /// The node sheds load (see `overload`).
    Overload,
}

impl Refusal {
    const ALL: [Refusal; 3] = [Refusal::PerSource, Refusal::Total, Refusal::Overload];

    fn label(self) -> &'static str {
        match self {
            Refusal::PerSource => "per_source",
            Refusal::Total => "total",
            Refusal::Overload => "overload",
        }
    }
}

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
    const ALL: [Cut; 3] = [Cut::HeaderTimeout, Cut::Idle, Cut::BodyStall];

    fn label(self) -> &'static str {
        match self {
            Cut::HeaderTimeout => "header_timeout",
            Cut::Idle => "idle",
            Cut::BodyStall => "body_stall",
        }
    }
}

/// One listener's open connections and what it refused and cut.
pub struct ConnectionGate {
    listener: &'static str,
    policy: ConnectionPolicy,
    open: Mutex<OpenConnections>,
    shedding: AtomicBool,
    accepted: AtomicU64,
    refused: [AtomicU64; 3],
    cut: [AtomicU64; 3],
}

#[derive(Default)]
struct OpenConnections {
    total: u32,
    by_source: HashMap<IpAddr, u32>,
}

/// A connection the gate let in; it counts as open until dropped.
pub struct Admitted {
    gate: Arc<ConnectionGate>,
    source: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock();
        open.total -= 1;
        if let Some(count) = open.by_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

impl ConnectionGate {
    /// The gate of `listener` ("ingress", "api"), named so in the metrics.
    pub fn new(listener: &'static str, policy: ConnectionPolicy) -> Arc<Self> {
        Arc::new(Self {
            listener,
            policy,
            open: Mutex::default(),
            shedding: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            cut: Default::default(),
        })
    }

    /// The limits and timeouts the gate applies.
    pub fn policy(&self) -> &ConnectionPolicy {
        &self.policy
    }

    /// Lets a connection from `source` in, or says why not (and counts it).
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refusal> {
        let refusal = {
            let mut open = self.open.lock();
            if self.shedding.load(Ordering::Relaxed) {
                Some(Refusal::Overload)
            } else if open.total >= self.policy.max_total {
                Some(Refusal::Total)
            } else if open.by_source.get(&source).copied().unwrap_or(0)
                >= self.policy.max_per_source
            {
                Some(Refusal::PerSource)
            } else {
                open.total += 1;
                *open.by_source.entry(source).or_default() += 1;
                None
            }
        };
        match refusal {
            Some(refusal) => {
                self.refused[refusal as usize].fetch_add(1, Ordering::Relaxed);
                Err(refusal)
            }
            None => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(Admitted {
                    gate: self.clone(),
                    source,
                })
            }
        }
    }

    /// Connections open now.
    pub fn open(&self) -> u32 {
        self.open.lock().total
    }

    /// Whether new connections are refused for overload.
    pub fn is_shedding(&self) -> bool {
        self.shedding.load(Ordering::Relaxed)
    }

    /// New connections are refused while `shedding` holds.
    pub fn set_shedding(&self, shedding: bool) {
        self.shedding.store(shedding, Ordering::Relaxed);
    }

    fn count_cut(&self, cut: Cut) {
        self.cut[cut as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Accepts the next connection `gate` lets in. One past the gate's limits is
/// closed at once (and counted by the gate), rather than left in the backlog
/// holding the client and a descriptor; a failed accept (out of descriptors and
/// the like) backs off rather than spins.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    gate: &Arc<ConnectionGate>,
) -> (TcpStream, Admitted) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if let Ok(admitted) = gate.admit(peer.ip()) {
                    return (stream, admitted);
                }
            }
            Err(e) => {
                tracing::warn!(listener = gate.listener, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Appends the connection series of `gates` to a Prometheus text exposition.
pub fn render_metrics(out: &mut String, gates: &[&ConnectionGate]) {
    out.push_str("# HELP ember_connections_open Client connections open, by listener.\n");
    out.push_str("# TYPE ember_connections_open gauge\n");
    for gate in gates {
        let _ = writeln!(
            out,
            "ember_connections_open{{listener=\"{}\"}} {}",
            gate.listener,
            gate.open()
        );
    }
    out.push_str(
        "# HELP ember_connections_accepted_total Client connections let in, by listener.\n",
    );
    out.push_str("# TYPE ember_connections_accepted_total counter\n");
    for gate in gates {
        let _ = writeln!(
            out,
            "ember_connections_accepted_total{{listener=\"{}\"}} {}",
            gate.listener,
            gate.accepted.load(Ordering::Relaxed)
        );
    }
    out.push_str("# HELP ember_connections_refused_total New client connections refused, by listener and reason.\n");
    out.push_str("# TYPE ember_connections_refused_total counter\n");
    for gate in gates {
        for refusal in Refusal::ALL {
            let _ = writeln!(
                out,
                "ember_connections_refused_total{{listener=\"{}\",reason=\"{}\"}} {}",
                gate.listener,
                refusal.label(),
                gate.refused[refusal as usize].load(Ordering::Relaxed)
            );
        }
    }
    out.push_str(
        "# HELP ember_connections_cut_total Client connections closed by a timeout, by listener and reason.\n",
    );
    out.push_str("# TYPE ember_connections_cut_total counter\n");
    for gate in gates {
        for cut in Cut::ALL {
            let _ = writeln!(
                out,
                "ember_connections_cut_total{{listener=\"{}\",reason=\"{}\"}} {}",
                gate.listener,
                cut.label(),
                gate.cut[cut as usize].load(Ordering::Relaxed)
            );
        }
    }
}

/// Hyper's connection settings for a listener: heads (request line and headers)
/// of at most `MAX_HEAD_BYTES` and `MAX_HEADERS` headers (431 past either), and
/// HTTP/2 limits on streams, header lists and resets, so that rapid reset and
/// CONTINUATION floods cut the offending connection alone.
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    builder
}

/// Largest request head read (HTTP/1), and largest header list (HTTP/2).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers one HTTP/1 request may carry.
pub const MAX_HEADERS: usize = 100;
/// Most streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 256;
/// Streams a client may open and reset before the server accepted them (the rapid
/// reset attack) before its connection is closed.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams the server may reset for a client's protocol errors before it closes
/// the connection.
const H2_MAX_LOCAL_ERROR_RESETS: usize = 256;

/// Serves one connection the gate admitted, with `service`, until it ends or a
/// timeout of the gate's policy cuts it.
pub async fn serve_connection<S, B>(
    builder: &auto::Builder<TokioExecutor>,
    admitted: Admitted,
    stream: TcpStream,
    service: S,
) where
    S: hyper::service::Service<Request<WatchedBody<Incoming>>, Response = Response<B>>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(WatchedStream {
        inner: stream,
        activity: activity.clone(),
        first_read: true,
    });
    let service = Watched {
        inner: Arc::new(service),
        activity: activity.clone(),
    };
    let connection = builder.serve_connection_with_upgrades(io, service);
    let gate = admitted.gate.clone();
    tokio::select! {
        _ = connection => {}
        cut = activity.watch(&gate.policy) => gate.count_cut(cut),
    }
    drop(admitted);
}

/// What one connection is doing, for its timeouts.
struct Activity {
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
    fn new() -> Self {
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

    fn read(&self, first: Option<&[u8]>) {
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

    fn request_began(&self, with_body: bool) {
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

    fn body_received(&self) {
        let mut state = self.state.lock();
        state.receiving = state.receiving.saturating_sub(1);
    }

    fn body_progressed(&self) {
        self.state.lock().last_read = Instant::now();
    }

    fn request_ended(&self) {
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
    fn deadline(&self, policy: &ConnectionPolicy) -> Option<(Instant, Cut)> {
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
    async fn watch(&self, policy: &ConnectionPolicy) -> Cut {
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

/// The connection's socket, telling its activity when bytes arrive.
struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
    first_read: bool,
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && buf.filled().len() > before
        {
            let first = std::mem::take(&mut self.first_read);
            self.activity.read(first.then(|| &buf.filled()[before..]));
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A service whose requests the connection's activity follows: from the head
/// read to the response body sent.
struct Watched<S> {
    inner: Arc<S>,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Watched<S>
where
    S: hyper::service::Service<Request<WatchedBody<Incoming>>, Response = Response<B>>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<WatchedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let with_body = !request.body().is_end_stream();
        self.activity.request_began(with_body);
        let request = request.map(|body| WatchedBody {
            inner: body,
            activity: self.activity.clone(),
            role: Role::Request { ended: !with_body },
        });
        // Ends the request if its future is dropped before a response exists.
        let ended = RequestEnd(Some(self.activity.clone()));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| WatchedBody {
                inner: body,
                activity: ended.take(),
                role: Role::Response,
            }))
        })
    }
}

/// Ends its request in the activity when dropped, unless taken first.
struct RequestEnd(Option<Arc<Activity>>);

impl RequestEnd {
    fn take(mut self) -> Arc<Activity> {
        self.0.take().expect("taken once")
    }
}

impl Drop for RequestEnd {
    fn drop(&mut self) {
        if let Some(activity) = self.0.take() {
            activity.request_ended();
        }
    }
}

/// A request body (whose bytes count as progress and whose end is noted) or a
/// response body (whose drop, once sent, ends the request).
pub struct WatchedBody<B> {
    inner: B,
    activity: Arc<Activity>,
    role: Role,
}

enum Role {
    Request { ended: bool },
    Response,
}

impl<B: Body + Unpin> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Role::Request { ended } = self.role {
            match &polled {
                Poll::Ready(Some(Ok(_))) if !ended => {
                    self.activity.body_progressed();
                    if self.inner.is_end_stream() {
                        self.mark_received();
                    }
                }
                Poll::Ready(_) if !ended => self.mark_received(),
                _ => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> WatchedBody<B> {
    fn mark_received(&mut self) {
        if let Role::Request { ended } = &mut self.role
            && !*ended
        {
            *ended = true;
            self.activity.body_received();
        }
    }
}

impl<B> Drop for WatchedBody<B> {
    fn drop(&mut self) {
        match self.role {
            Role::Request { .. } => self.mark_received(),
            Role::Response => self.activity.request_ended(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(per_source: u32, total: u32) -> ConnectionPolicy {
        ConnectionPolicy {
            max_per_source: per_source,
            ..ConnectionPolicy::with_total(total)
        }
    }

    #[test]
    fn the_gate_holds_each_address_and_the_total_to_their_limits() {
        let gate = ConnectionGate::new("test", policy(2, 3));
        let (a, b) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refusal::PerSource));
        let _third = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some(Refusal::Total));
        drop(first);
        assert_eq!(gate.open(), 2);
        let _again = gate.admit(a).unwrap();
        gate.set_shedding(true);
        drop(_again);
        assert_eq!(gate.admit(b).err(), Some(Refusal::Overload));
        let mut text = String::new();
        render_metrics(&mut text, &[&gate]);
        assert!(
            text.contains(
                "ember_connections_refused_total{listener=\"test\",reason=\"per_source\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ember_connections_refused_total{listener=\"test\",reason=\"total\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ember_connections_open{listener=\"test\"} 2"),
            "{text}"
        );
    }

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
