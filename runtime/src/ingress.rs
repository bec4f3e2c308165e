//! The ingress: an HTTP server that routes by `Host` to containers, through the
//! activator, and streams bodies both ways.

use crate::activator::{ActivationError, Lease};
use crate::connections::{self, Admitted, WatchedBody};
use crate::metrics::RequestTimeout;
use crate::runtime::Runtime;
use bytes::Bytes;
use ember_sandbox::{HttpBody, SandboxError};
use http::{Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{Instrument, field::Empty};

/// Path answered by the ingress itself, on any host, for health checks.
pub const HEALTH_PATH: &str = "/.well-known/ember/health";

/// Serves the ingress on `listener` until the future is dropped; the ingress threads
/// end then, and their connections with them. Fails only when a thread cannot start.
///
/// Connections are dealt in turn to `ingress_threads` threads, each with a
/// single-threaded executor of its own: a connection's requests, and the wasm guests
/// that answer them, stay on one thread from the first byte to the last. On one
/// multi-threaded executor a request often woke a second worker and moved between
/// threads, wake-ups that a warm wasm request, tens of microseconds, feels.
pub async fn serve_ingress(runtime: Runtime, listener: TcpListener) -> std::io::Result<()> {
    let threads = (0..runtime.config().ingress_threads.max(1))
        .map(|index| IngressThread::spawn(index, runtime.clone()))
        .collect::<std::io::Result<Vec<_>>>()?;
    runtime
        .ingress_routing()
        .store(true, std::sync::atomic::Ordering::Release);
    let gate = runtime.ingress_gate().clone();
    let mut next = 0;
    loop {
        let (stream, admitted) = connections::accept(&listener, &gate).await;
        threads[next].hand_over(stream, admitted);
        next = (next + 1) % threads.len();
    }
}

/// A thread that serves the connections handed to it.
struct IngressThread {
    connections: mpsc::UnboundedSender<(std::net::TcpStream, Admitted)>,
}

impl IngressThread {
    fn spawn(index: usize, runtime: Runtime) -> std::io::Result<Self> {
        let executor = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (connections, handed_over) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(format!("ember-ingress-{index}"))
            .spawn(move || executor.block_on(serve_connections(runtime, handed_over)))?;
        Ok(Self { connections })
    }

    /// Moves `stream` from the accepting executor to this thread's.
    fn hand_over(&self, stream: TcpStream, admitted: Admitted) {
        let _ = stream.set_nodelay(true);
        match stream.into_std() {
            Ok(stream) => {
                if self.connections.send((stream, admitted)).is_err() {
                    tracing::warn!("an ingress thread has ended; connection dropped");
                }
            }
            Err(e) => tracing::warn!(error = %e, "ingress connection could not be handed over"),
        }
    }
}

/// Serves each connection handed over, on the calling thread, until the ingress stops.
async fn serve_connections(
    runtime: Runtime,
    mut handed_over: mpsc::UnboundedReceiver<(std::net::TcpStream, Admitted)>,
) {
    let builder = connections::http_builder();
    while let Some((stream, admitted)) = handed_over.recv().await {
        let stream = match TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "ingress connection could not be registered");
                continue;
            }
        };
        let runtime = runtime.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let runtime = runtime.clone();
                async move { Ok::<_, Infallible>(route(&runtime, req).await) }
            });
            connections::serve_connection(&builder, admitted, stream, service).await;
        });
    }
}

/// A request as the ingress receives it.
type IncomingRequest = Request<WatchedBody<Incoming>>;

async fn route(runtime: &Runtime, req: IncomingRequest) -> Response<HttpBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_string();
    let span = tracing::info_span!(
        "request",
        host = %host,
        method = %req.method(),
        path = %req.uri().path(),
        container = Empty,
        status = Empty,
    );
    let response = forward(runtime, &host, req).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    runtime.metrics().request_served(response.status());
    response
}

async fn forward(runtime: &Runtime, host: &str, req: IncomingRequest) -> Response<HttpBody> {
    if req.uri().path() == HEALTH_PATH {
        return text(StatusCode::OK, "ok\n");
    }
    let Some(service) = runtime.containers().route(host) else {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_host",
            &format!("no container is served at host `{host}`"),
        );
    };
    tracing::Span::current().record("container", tracing::field::display(service.id));
    let mut req = req.map(|body| body.map_err(Into::into).boxed_unsync());
    // In a cluster, a request with no free slot here may be better served by
    // another member (one warm, or one with room when this node has none).
    let free_here = if runtime.is_cluster_member() {
        service.lease_now()
    } else {
        None
    };
    if free_here.is_none()
        && let Some(member) = runtime.member_to_serve(&service, &req)
    {
        let own = runtime
            .config()
            .cluster
            .as_ref()
            .map_or("", |c| c.node_name.as_str());
        match crate::relay::relay(runtime.relay_connections(), member, own, req).await {
            Ok(response) => return response,
            Err((unsent, why)) => {
                tracing::info!(%member, %why, "the member chosen to serve did not answer; serving here");
                req = unsent;
            }
        }
    }
    let timeout = runtime.config().queue_timeout.min(service.request_limit());
    // While the node sheds load, a request is served only by a slot free now.
    let acquired = if let Some(lease) = free_here {
        Ok(lease)
    } else if runtime.ingress_gate().is_shedding() {
        service.lease_now().ok_or_else(|| {
            ActivationError::Overloaded("requests that would wait are refused".into())
        })
    } else {
        service.acquire(timeout).await
    };
    let lease = match acquired {
        Ok(lease) => lease,
        Err(e) => return not_activated(&e),
    };
    let limits = service.response_timeouts();
    let handled = lease.instance().handle(req);
    let handled = match limits.start {
        Some(limit) => match tokio::time::timeout(limit, handled).await {
            Ok(handled) => handled,
            Err(_) => {
                runtime.metrics().request_cut(RequestTimeout::ResponseStart);
                return error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "response_start_timeout",
                    &format!(
                        "the response did not start within {limit:?} (responseStartTimeoutSeconds)"
                    ),
                );
            }
        },
        None => handled.await,
    };
    match handled {
        Ok(mut response) => {
            if let Some(tunnel) = response
                .extensions_mut()
                .remove::<ember_sandbox::oci::TunnelOpen>()
            {
                // An upgraded connection (a WebSocket): the instance counts as busy
                // for as long as it stays open.
                tokio::spawn(async move {
                    let _lease = lease;
                    tunnel.closed().await;
                });
                return response;
            }
            let silence = limits.stream_idle.map(|limit| SilenceLimit {
                limit,
                deadline: Box::pin(tokio::time::sleep(limit)),
                metrics: runtime.metrics().clone(),
            });
            response.map(|body| {
                LeasedBody {
                    body,
                    _lease: lease,
                    silence,
                }
                .boxed_unsync()
            })
        }
        Err(SandboxError::Timeout(limit)) => {
            runtime.metrics().request_cut(RequestTimeout::Request);
            // Which instance kept the request, for whoever reads the log after a 504.
            tracing::warn!(
                container = %service.id,
                sandbox = lease.instance().sandbox_id().unwrap_or("wasm"),
                address = ?lease.instance().address(),
                "an instance did not answer within the request timeout"
            );
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                &format!("the request ran longer than {limit:?} and was stopped"),
            )
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, "workload_error", &e.to_string()),
    }
}

/// 503 for a request no instance took. Those that may succeed soon (a full queue, a
/// wait past the deadline, a failed start) say when to try again.
fn not_activated(e: &ActivationError) -> Response<HttpBody> {
    let (code, retry_after) = match e {
        ActivationError::QueueFull(_) => ("queue_full", Some(RETRY_AFTER_SECONDS)),
        ActivationError::Timeout(..) => ("no_capacity", Some(RETRY_AFTER_SECONDS)),
        ActivationError::StartFailed(_) => ("start_failed", Some(RETRY_AFTER_SECONDS)),
        ActivationError::QuotaExceeded(_) => ("quota_exceeded", Some(RETRY_AFTER_SECONDS)),
        ActivationError::Overloaded(_) => ("overloaded", Some(RETRY_AFTER_SECONDS)),
        ActivationError::Unavailable(_) => ("unavailable", None),
    };
    let mut response = error(StatusCode::SERVICE_UNAVAILABLE, code, &e.to_string());
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    }
    response
}

/// What a 503 tells the client to wait before trying again.
const RETRY_AFTER_SECONDS: u32 = 1;

/// A response body that keeps the instance counted as busy until it has been sent,
/// and cuts it when it stays silent past its container's limit.
struct LeasedBody {
    body: HttpBody,
    _lease: Lease,
    silence: Option<SilenceLimit>,
}

/// How long a started response may send nothing (`streamIdleTimeoutSeconds`),
/// and when that runs out now.
struct SilenceLimit {
    limit: std::time::Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = ember_sandbox::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(silence) = &mut this.silence {
                    let next = tokio::time::Instant::now() + silence.limit;
                    silence.deadline.as_mut().reset(next);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let Some(silence) = &mut this.silence else {
                    return Poll::Pending;
                };
                if silence.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                silence.metrics.request_cut(RequestTimeout::StreamIdle);
                let limit = silence.limit;
                this.silence = None;
                // An error ends the response short: the client sees its
                // connection close before the body's end.
                Poll::Ready(Some(Err(format!(
                    "the response sent nothing for {limit:?} (streamIdleTimeoutSeconds)"
                )
                .into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<HttpBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<HttpBody> {
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}
