//! The pulls' way out: a forward proxy on loopback through which the registry
//! client makes every connection (the registry's, its redirects', its token
//! endpoints'), so that each is checked against `--allowed-registries` on the
//! address it resolved to and connects to, and never another. oci-client offers
//! no hook into its connections; a proxy is the one door it always takes.
//!
//! HTTPS goes through `CONNECT` (TLS stays end to end); plain HTTP (loopback
//! registries) as absolute-form requests, passed on.

use super::destinations::{AllowedRegistries, Refused};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Longest a connection to a registry may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxy, and why it last refused or failed each client's connection.
pub(super) struct Egress {
    rules: AllowedRegistries,
    /// The last refusal or failure seen by each client, for the pull's status
    /// reason. Each client has a listener of its own, which names it.
    failures: Mutex<HashMap<String, EgressFailure>>,
    /// The listeners' tasks, ended with the egress.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Egress {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// What happened to a connection the proxy did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EgressFailure {
    /// The rules refused the destination.
    Refused(Refused),
    /// The destination could not be resolved or connected to.
    Unreachable(String),
}

impl Egress {
    pub(super) fn new(rules: AllowedRegistries) -> Arc<Self> {
        Arc::new(Self {
            rules,
            failures: Mutex::default(),
            tasks: Mutex::default(),
        })
    }

    /// Opens a proxy listener (an ephemeral loopback port, on the current
    /// runtime) for the client `client`; returns its URL.
    pub(super) fn open(self: &Arc<Self>, client: &str) -> std::io::Result<String> {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let listener = TcpListener::from_std(listener)?;
        let task = tokio::spawn(serve(listener, Arc::downgrade(self), client.to_string()));
        self.tasks.lock().push(task);
        Ok(format!("http://{address}"))
    }

    /// The last failure recorded for `client`, taken.
    pub(super) fn take_failure(&self, client: &str) -> Option<EgressFailure> {
        self.failures.lock().remove(client)
    }

    fn record(&self, client: &str, failure: EgressFailure) {
        tracing::info!(?failure, client, "a pull's connection was not made");
        self.failures.lock().insert(client.to_string(), failure);
    }

    /// Resolves `host:port` and returns the first address the rules allow
    /// connected, or why none.
    async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, EgressFailure> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| {
                EgressFailure::Unreachable(format!("{host}:{port} does not resolve: {e}"))
            })?
            .collect();
        let mut refused = None;
        for address in addresses {
            match self.rules.check(bare, port, address.ip()) {
                Ok(()) => {
                    return match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
                        .await
                    {
                        Ok(Ok(stream)) => Ok(stream),
                        Ok(Err(e)) => Err(EgressFailure::Unreachable(format!(
                            "{host}:{port} is unreachable: {e}"
                        ))),
                        Err(_) => Err(EgressFailure::Unreachable(format!(
                            "{host}:{port} did not answer within {CONNECT_TIMEOUT:?}"
                        ))),
                    };
                }
                Err(e) => refused = refused.or(Some(e)),
            }
        }
        Err(refused.map_or_else(
            || EgressFailure::Unreachable(format!("{host}:{port} resolves to no address")),
            EgressFailure::Refused,
        ))
    }
}

async fn serve(listener: TcpListener, egress: std::sync::Weak<Egress>, client: String) {
    let client: Arc<str> = client.into();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Some(strong) = egress.upgrade() else {
            return;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let (egress, client) = (strong.clone(), client.clone());
                async move { Ok::<_, Infallible>(handle(&egress, &client, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn answer(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

async fn handle(
    egress: &Egress,
    client: &str,
    mut request: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(authority) = request.uri().authority().cloned() else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let default_port =
        if request.uri().scheme_str() == Some("https") || request.method() == Method::CONNECT {
            443
        } else {
            80
        };
    let port = authority.port_u16().unwrap_or(default_port);
    let stream = match egress.connect(authority.host(), port).await {
        Ok(stream) => stream,
        Err(failure) => {
            let status = match failure {
                EgressFailure::Refused(_) => StatusCode::FORBIDDEN,
                EgressFailure::Unreachable(_) => StatusCode::BAD_GATEWAY,
            };
            egress.record(client, failure);
            return answer(status);
        }
    };
    if request.method() == Method::CONNECT {
        tokio::spawn(async move {
            if let Ok(upgraded) = hyper::upgrade::on(request).await {
                let mut stream = stream;
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut stream).await;
            }
        });
        return answer(StatusCode::OK);
    }
    // An absolute-form request: passed on in origin form, without the proxy's headers.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = match path.parse() {
        Ok(uri) => uri,
        Err(_) => return answer(StatusCode::BAD_REQUEST),
    };
    request
        .headers_mut()
        .remove(http::header::PROXY_AUTHORIZATION);
    request.headers_mut().remove("proxy-connection");
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return answer(StatusCode::BAD_GATEWAY);
    };
    tokio::spawn(connection);
    match sender.send_request(request).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(e) => {
            egress.record(
                client,
                EgressFailure::Unreachable(format!("{authority} did not answer: {e}")),
            );
            answer(StatusCode::BAD_GATEWAY)
        }
    }
}
