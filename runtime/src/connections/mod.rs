//! What the ingress and the API allow a client connection: how many may be open
//! from one address and in all, and how long one may take over its request head,
//! sit idle, or stall its request body before it is cut. A client that opens
//! connections and never finishes them (slowloris) holds each for seconds and
//! holds few, so the node keeps answering everyone else.
//!
//! - `gate`: how many connections are open, and letting a new one in or not;
//! - `activity`: what one connection is doing, and when its timeouts fall due;
//! - `watched`: the socket, service and bodies that tell the activity.

mod activity;
mod gate;
mod watched;

pub use activity::Cut;
pub use gate::{Admitted, ConnectionGate, Refusal, render_metrics};
pub use watched::WatchedBody;

use activity::Activity;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use watched::{Watched, WatchedStream};

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
                tracing::warn!(listener = gate.listener(), error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
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
    let io = TokioIo::new(WatchedStream::new(stream, activity.clone()));
    let service = Watched::new(service, activity.clone());
    let connection = builder.serve_connection_with_upgrades(io, service);
    let gate = admitted.gate().clone();
    tokio::select! {
        _ = connection => {}
        cut = activity.watch(gate.policy()) => gate.count_cut(cut),
    }
    drop(admitted);
}
