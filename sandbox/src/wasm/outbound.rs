//! Outbound HTTP for wasm guests (Spin's `allowed_outbound_hosts`): a guest may
//! send requests through wasi:http's outgoing handler to the hosts its container
//! lists, exactly (scheme, host and port), and to nothing else. A listed name under
//! the node's own domain is one of Ember's containers and goes to the node's
//! ingress; any other name is resolved, and an address that is not public
//! (loopback, private, link-local, ...) is refused, so that a listed name cannot be
//! pointed at the node or its network. A host not listed reaches the guest as
//! wasi:http's `HTTP-request-denied`, an address not public as
//! `destination-IP-prohibited`.

use crate::image::destinations::{address_class, is_public};
use http_body_util::BodyExt;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody};

/// One host a guest may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// `http` or `https`; `None`: either.
    scheme: Option<&'static str>,
    /// Lower-cased, without brackets.
    host: String,
    port: u16,
}

/// Why an allowed-host entry cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not `host:port`, `http://host[:port]` or `https://host[:port]`")]
pub struct InvalidAllowedHost(String);

impl FromStr for AllowedHost {
    type Err = InvalidAllowedHost;
    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidAllowedHost(entry.to_string());
        let (scheme, rest) = match entry.split_once("://") {
            Some(("http", rest)) => (Some("http"), rest),
            Some(("https", rest)) => (Some("https"), rest),
            Some(_) => return Err(invalid()),
            None => (None, entry),
        };
        let authority: http::uri::Authority = rest.parse().map_err(|_| invalid())?;
        if authority.as_str() != rest || rest.contains('@') {
            return Err(invalid());
        }
        let port = match (authority.port_u16(), scheme) {
            (Some(port), _) if port > 0 => port,
            (None, Some("http")) => 80,
            (None, Some("https")) => 443,
            _ => return Err(invalid()),
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() || host.contains('*') {
            return Err(invalid());
        }
        Ok(Self { scheme, host, port })
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.scheme {
            Some(scheme) => write!(f, "{scheme}://{host}:{}", self.port),
            None => write!(f, "{host}:{}", self.port),
        }
    }
}

/// Where one container's guests may send requests.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// The hosts its container lists (none by default: no outbound network).
    pub allowed: Vec<AllowedHost>,
    /// The node's ingress, for names under its domain.
    pub ingress: Option<LocalIngress>,
}

/// The node's own ingress: names under `domain` are its containers.
#[derive(Debug, Clone)]
pub struct LocalIngress {
    /// Containers are served at `<name>.<domain>`.
    pub domain: String,
    /// Where the ingress listens.
    pub addr: SocketAddr,
}

impl OutboundPolicy {
    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.allowed
            .iter()
            .any(|a| a.host == host && a.port == port && a.scheme.is_none_or(|s| s == scheme))
    }

    fn is_local(&self, host: &str) -> Option<SocketAddr> {
        let ingress = self.ingress.as_ref()?;
        let under = host
            .strip_suffix(ingress.domain.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'));
        under.then_some(ingress.addr)
    }
}

/// What a wasi:http `send_request` hook answers.
pub(crate) type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// Sends `request` if `policy` allows it; refuses it otherwise.
pub(crate) fn send(
    policy: Arc<OutboundPolicy>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> SendFuture {
    Box::new(async move {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
        let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if !policy.allows(&scheme, &host, port) {
            tracing::debug!(%host, port, "a guest's outbound request to a host its container does not list was refused");
            return Err(HttpError::HttpRequestDenied);
        }
        if scheme == "http" {
            let addr = match policy.is_local(&host) {
                Some(ingress) => ingress,
                None => public_address(&host, port).await?,
            };
            return send_plain(addr, request, options).await;
        }
        // HTTPS: the address is checked here, then connected to by name.
        if policy.is_local(&host).is_some() {
            return Err(HttpError::HttpRequestDenied);
        }
        public_address(&host, port).await?;
        let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
        Ok((
            response.map(BodyExt::boxed_unsync),
            Box::new(io) as Box<dyn Future<Output = _> + Send>,
        ))
    })
}

/// The first address `host` resolves to, which must be public.
async fn public_address(host: &str, port: u16) -> Result<SocketAddr, HttpError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| HttpError::DestinationNotFound)?
        .collect();
    let first = *addrs.first().ok_or(HttpError::DestinationNotFound)?;
    if let Some(private) = addrs.iter().find(|a| !is_public(a.ip())) {
        tracing::debug!(%host, address = %private.ip(), class = address_class(private.ip()), "a guest's outbound request to a non-public address was refused");
        return Err(HttpError::DestinationIpProhibited);
    }
    Ok(first)
}

/// Sends `request` over a new HTTP/1 connection to `addr`.
async fn send_plain(
    addr: SocketAddr,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let limit = |pick: fn(&RequestOptions) -> Option<Duration>| {
        options
            .as_ref()
            .and_then(pick)
            .unwrap_or(Duration::from_secs(600))
    };
    let stream = tokio::time::timeout(
        limit(|o| o.connect_timeout),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(|_| HttpError::ConnectionRefused)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(HttpError::from)?;
    // The request line carries the path only; the Host header names the host.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(request.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    // The connection is driven while the response head is awaited; what is left
    // of it (the body) is driven by wasi:http through the future returned.
    let mut connection = Some(Box::pin(connection));
    let mut send = std::pin::pin!(sender.send_request(request));
    let head = std::future::poll_fn(|cx| {
        if let Poll::Ready(answer) = send.as_mut().poll(cx) {
            return Poll::Ready(answer.map_err(HttpError::from));
        }
        if let Some(driving) = connection.as_mut()
            && let Poll::Ready(ended) = driving.as_mut().poll(cx)
        {
            connection = None;
            if let Err(e) = ended {
                return Poll::Ready(Err(HttpError::from(e)));
            }
            return send.as_mut().poll(cx).map_err(HttpError::from);
        }
        Poll::Pending
    });
    let response = tokio::time::timeout(limit(|o| o.first_byte_timeout), head)
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    let io = async move {
        match connection {
            Some(driving) => driving.await.map_err(HttpError::from),
            None => Ok(()),
        }
    };
    Ok((
        response.map(|body| body.map_err(HttpError::from).boxed_unsync()),
        Box::new(io) as Box<dyn Future<Output = _> + Send>,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_exact_hosts_and_ports_and_anything_looser_is_refused() {
        let parse = |s: &str| s.parse::<AllowedHost>();
        assert_eq!(
            parse("api.example.com:8080").unwrap().to_string(),
            "api.example.com:8080"
        );
        assert_eq!(
            parse("https://Example.COM").unwrap().to_string(),
            "https://example.com:443"
        );
        assert_eq!(
            parse("http://[::1]:81").unwrap().to_string(),
            "http://[::1]:81"
        );
        for bad in [
            "example.com",
            "*.example.com:80",
            "ftp://x:1",
            "http://u@x:1",
            "x:0",
            "http://x/path",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let policy = OutboundPolicy {
            allowed: vec![
                parse("https://a.test").unwrap(),
                parse("b.test:81").unwrap(),
            ],
            ingress: Some(LocalIngress {
                domain: "ember.localhost".into(),
                addr: "127.0.0.1:8000".parse().unwrap(),
            }),
        };
        assert!(policy.allows("https", "a.test", 443));
        assert!(!policy.allows("http", "a.test", 443));
        assert!(!policy.allows("https", "a.test", 444));
        assert!(policy.allows("http", "b.test", 81) && policy.allows("https", "b.test", 81));
        assert!(policy.is_local("hello.ember.localhost").is_some());
        assert!(policy.is_local("evil-ember.localhost").is_none());
    }
}
