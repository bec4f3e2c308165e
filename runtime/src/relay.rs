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
use std::net::SocketAddr;
use std::time::Duration;

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
    /// node, when this node has no instance of `service` and the request was not
    /// relayed already: a member that holds the container warm (the most
    /// instances first), or, when none does and this node has no room for an
    /// instance now, the member the scheduler places one on (the most free memory
    /// among those it fits: the cold start happens there, this request held
    /// here until it answers).
    pub(crate) fn member_to_serve<B>(
        &self,
        service: &ContainerTraffic,
        request: &Request<B>,
    ) -> Option<SocketAddr> {
        let membership = self.membership()?;
        if request.headers().contains_key(RELAYED_BY) || service.instance_count() > 0 {
            return None;
        }
        let own = &self.config().cluster.as_ref()?.node_name;
        let others: Vec<_> = membership
            .members()
            .into_iter()
            .filter(|m| &m.name != own)
            .collect();
        let warm = others
            .iter()
            .filter_map(|m| Some((*m.warm.get(&service.id)?, m.ingress)))
            .filter(|(warm, _)| *warm > 0)
            .max_by_key(|(warm, _)| *warm)
            .map(|(_, ingress)| ingress);
        if warm.is_some() {
            return warm;
        }
        let wanted = service.serving_request()?;
        if self.node().snapshot().fits_now(&wanted).is_ok() {
            return None;
        }
        let mut nodes: Vec<Node<SocketAddr>> = others
            .iter()
            .map(|m| Node {
                id: m.ingress,
                name: m.name.clone(),
                capacity: (&m.capacity).into(),
                allocated: (&m.allocated).into(),
            })
            .collect();
        placement::place(&mut nodes, &wanted)
            .ok()
            .map(|placed| placed.node)
    }
}

/// Sends `request` to the ingress at `member`; the request back if the member
/// could not be reached (nothing of it was sent), to be served here.
pub(crate) async fn relay(
    member: SocketAddr,
    own_name: &str,
    mut request: Request<Body>,
) -> Result<Response<Body>, (Request<Body>, String)> {
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(member)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err((request, e.to_string())),
            Err(_) => return Err((request, format!("no connection within {CONNECT_TIMEOUT:?}"))),
        };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return Err((request, e.to_string())),
        };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    if let Ok(name) = HeaderValue::from_str(own_name) {
        request.headers_mut().insert(RELAYED_BY, name);
    }
    // HTTP/1.1 to the member whatever the client spoke; the path and Host stay.
    *request.version_mut() = http::Version::HTTP_11;
    if let Some(path) = request.uri().path_and_query().cloned() {
        *request.uri_mut() = path.as_str().parse().unwrap_or_default();
    }
    request.headers_mut().remove(header::CONNECTION);
    match sender.send_request(request).await {
        Ok(response) => Ok(response.map(|body| body.map_err(Into::into).boxed_unsync())),
        Err(e) => Ok(bad_gateway(&format!(
            "the member serving this container failed: {e}"
        ))),
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
