//! Requests sent on to another node of the cluster: a request for a container
//! with no instance here, while another member has one warm, goes to that
//! member's ingress instead of cold-starting an instance here (a cluster must not
//! multiply cold starts). The member serves it locally: a relayed request is never
//! relayed again.

use crate::activator::ContainerTraffic;
use crate::runtime::Runtime;
use bytes::Bytes;
use ember_scheduler::placement::{self, Node};
use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set on a request one member sends another, naming the sender: a relayed
/// ingress request, or an API request for the receiver's own instances (it
/// answers for itself alone, and sends nothing on).
pub const RELAYED_BY: &str = "ember-relayed-by";
/// Longest the connection to a member may take before this node serves the
/// request itself (a member that just died has not left the list yet).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, ember_sandbox::BoxError>;

impl Runtime {
    /// The ingress of the member that should serve this request instead of this
    /// node, when this node has no free slot for it (the caller looked) and the
    /// request was not relayed already: with no instance here, a member that
    /// holds the container warm (the most instances first); otherwise, when this
    /// node has no room for another instance now, the member the scheduler
    /// places one on (the most free memory among those it fits: the instance
    /// starts there if the member has none free, this request held here until
    /// it answers). A node that has room starts the instance itself.
    pub(crate) fn member_to_serve<B>(
        &self,
        service: &ContainerTraffic,
        request: &Request<B>,
    ) -> Option<SocketAddr> {
        let membership = self.membership()?;
        if request.headers().contains_key(RELAYED_BY) {
            return None;
        }
        let own = &self.config().cluster.as_ref()?.node_name;
        // The other members as the scheduler sees them, each with its instances
        // of this container (read in place: a record holds every container a
        // member has warm).
        let mut others: Vec<(u32, Node<SocketAddr>)> = Vec::new();
        membership.visit_members(&mut |m| {
            if &m.name != own {
                let node = Node {
                    id: m.ingress,
                    name: m.name.clone(),
                    capacity: (&m.capacity).into(),
                    allocated: (&m.allocated).into(),
                };
                others.push((m.warm.get(&service.id).copied().unwrap_or(0), node));
            }
        });
        if service.instance_count() == 0 {
            let warm = others
                .iter()
                .filter(|(warm, _)| *warm > 0)
                .max_by_key(|(warm, _)| *warm)
                .map(|(_, node)| node.id);
            if warm.is_some() {
                return warm;
            }
        }
        let wanted = service.serving_request()?;
        // An instance of it already waiting here for room says no more fits,
        // whatever the instant's snapshot says.
        if service.waiting_note().is_none() && self.node().snapshot().fits_now(&wanted).is_ok() {
            return None;
        }
        let mut nodes: Vec<Node<SocketAddr>> = others.into_iter().map(|(_, node)| node).collect();
        placement::place(&mut nodes, &wanted)
            .ok()
            .map(|placed| placed.node)
    }
}

/// Kept-alive HTTP/1.1 connections to the other members' ingress, the idle ones
/// by member: a relayed request takes one instead of paying for a new
/// connection (a relay hop on a fresh loopback connection measured 274 µs at the
/// median against 110 µs served locally).
#[derive(Default)]
pub(crate) struct MemberConnections {
    idle: parking_lot::Mutex<HashMap<SocketAddr, Vec<IdleConnection>>>,
}

struct IdleConnection {
    sender: SendRequest<Body>,
    since: Instant,
}

/// Most idle connections kept to one member.
const IDLE_PER_MEMBER: usize = 32;
/// Longest a connection stays idle in the pool: well inside the members'
/// ingress idle timeout (60 s by default), so that the member does not close one
/// just as a request is written to it.
const IDLE_FOR: Duration = Duration::from_secs(20);

impl MemberConnections {
    /// An idle connection to `member` ready for a request, if one is kept.
    fn take(&self, member: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock();
        let kept = idle.get_mut(&member)?;
        while let Some(connection) = kept.pop() {
            if connection.sender.is_ready() && connection.since.elapsed() < IDLE_FOR {
                return Some(connection.sender);
            }
        }
        None
    }

    /// Keeps `sender` for the next request to `member` once the response now on
    /// it has been read to its end (the connection is ready again then).
    fn keep_after_response(self: &Arc<Self>, member: SocketAddr, mut sender: SendRequest<Body>) {
        let pool = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let mut idle = pool.idle.lock();
            let kept = idle.entry(member).or_default();
            kept.retain(|c| c.since.elapsed() < IDLE_FOR && !c.sender.is_closed());
            if kept.len() < IDLE_PER_MEMBER {
                kept.push(IdleConnection {
                    sender,
                    since: Instant::now(),
                });
            }
        });
    }

    /// A new connection to `member`.
    async fn connect(member: SocketAddr) -> Result<SendRequest<Body>, String> {
        let stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(member))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
            };
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}

/// Sends `request` to the ingress at `member`, on a kept-alive connection when
/// one is idle; the request back if the member could not be reached (nothing of
/// it was sent), to be served here.
pub(crate) async fn relay(
    connections: &Arc<MemberConnections>,
    member: SocketAddr,
    own_name: &str,
    mut request: Request<Body>,
) -> Result<Response<Body>, (Request<Body>, String)> {
    if let Ok(name) = HeaderValue::from_str(own_name) {
        request.headers_mut().insert(RELAYED_BY, name);
    }
    // HTTP/1.1 to the member whatever the client spoke; the path and Host stay.
    *request.version_mut() = http::Version::HTTP_11;
    if let Some(path) = request.uri().path_and_query().cloned() {
        *request.uri_mut() = path.as_str().parse().unwrap_or_default();
    }
    request.headers_mut().remove(header::CONNECTION);
    // A kept connection the member closed meanwhile gives the request back
    // unsent; it goes on the next kept one, or on a new connection. A new
    // connection that gives it back means the member does not take requests now:
    // it is served here.
    loop {
        let (mut sender, fresh) = match connections.take(member) {
            Some(sender) => (sender, false),
            None => match MemberConnections::connect(member).await {
                Ok(sender) => (sender, true),
                Err(why) => return Err((request, why)),
            },
        };
        match sender.try_send_request(request).await {
            Ok(response) => {
                connections.keep_after_response(member, sender);
                return Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()));
            }
            Err(mut failed) => match failed.take_message() {
                Some(unsent) if !fresh => request = unsent,
                Some(unsent) => return Err((unsent, failed.into_error().to_string())),
                None => {
                    return Ok(bad_gateway(&format!(
                        "the member serving this container failed: {}",
                        failed.into_error()
                    )));
                }
            },
        }
    }
}

fn bad_gateway(message: &str) -> Response<Body> {
    let body = serde_json::json!({ "code": "relay_failed", "message": message }).to_string();
    let mut response = Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
