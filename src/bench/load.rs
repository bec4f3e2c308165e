//! The bench's own HTTP load: keep-alive HTTP/1.1 connections that time GETs from
//! send to last body byte, a closed loop over N connections for T seconds, and a
//! burst of N requests sent at once. Every case, Ember's and the peers', is driven
//! by this same code.

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where requests go: the address to connect to and the Host header to send.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Endpoint {
    /// An `http://host[:port]/path` URL, or one without a scheme (as containers'
    /// `urls` are). Hosts under `.localhost` resolve to loopback (RFC 6761)
    /// without asking DNS.
    pub async fn from_url(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        if rest.contains("://") {
            bail!("{url}: only http:// URLs can be benchmarked");
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().with_context(|| format!("{url}: port"))?),
            None => (authority, 80),
        };
        let addr = if host == "localhost" || host.ends_with(".localhost") {
            SocketAddr::from(([127, 0, 0, 1], port))
        } else {
            tokio::net::lookup_host((host, port))
                .await
                .with_context(|| format!("resolving {host}"))?
                .next()
                .with_context(|| format!("{host} has no address"))?
        };
        Ok(Self {
            addr,
            host: authority.to_string(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        })
    }

    /// The endpoint at `addr` itself (a peer listening on a port of its own).
    pub fn direct(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            path: "/".into(),
        }
    }
}

/// One keep-alive connection.
pub struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    endpoint: Endpoint,
}

impl Connection {
    pub async fn open(endpoint: &Endpoint) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(endpoint.addr)
            .await
            .with_context(|| format!("connecting to {}", endpoint.addr))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(connection);
        Ok(Self {
            sender,
            endpoint: endpoint.clone(),
        })
    }

    /// Waits until the connection can take another request; false when the server
    /// closes it instead (after a `Connection: close`, or nginx's
    /// `keepalive_requests`).
    pub async fn is_reusable(&mut self) -> bool {
        self.sender.ready().await.is_ok()
    }

    /// One GET, timed from send to the last body byte; anything but 200 is an error.
    pub async fn get(&mut self) -> anyhow::Result<Duration> {
        Ok(self.fetch().await?.0)
    }

    /// One GET's body.
    pub async fn get_body(&mut self) -> anyhow::Result<String> {
        let body = self.fetch().await?.1;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    async fn fetch(&mut self) -> anyhow::Result<(Duration, Bytes)> {
        let request = hyper::Request::get(self.endpoint.path.as_str())
            .header(hyper::header::HOST, self.endpoint.host.as_str())
            .body(Empty::new())
            .expect("a valid request");
        self.sender.ready().await.context("the connection closed")?;
        let began = Instant::now();
        let response = self
            .sender
            .send_request(request)
            .await
            .context("sending a request")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading a response")?
            .to_bytes();
        let took = began.elapsed();
        if status != hyper::StatusCode::OK {
            bail!(
                "{} answered {status}: {}",
                self.endpoint.host,
                String::from_utf8_lossy(&body).trim()
            );
        }
        Ok((took, body))
    }
}

/// A connection that is opened again whenever the server closed it.
struct Reconnecting {
    endpoint: Endpoint,
    connection: Option<Connection>,
}

impl Reconnecting {
    async fn get(&mut self) -> anyhow::Result<Duration> {
        let reused = match self.connection.take() {
            Some(mut connection) => connection.is_reusable().await.then_some(connection),
            None => None,
        };
        let mut connection = match reused {
            Some(connection) => connection,
            None => Connection::open(&self.endpoint).await?,
        };
        let took = connection.get().await?;
        self.connection = Some(connection);
        Ok(took)
    }
}

/// `count` requests one after another on one connection.
pub async fn sequential(endpoint: &Endpoint, count: usize) -> anyhow::Result<Vec<Duration>> {
    let mut connection = Reconnecting {
        endpoint: endpoint.clone(),
        connection: None,
    };
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        samples.push(connection.get().await?);
    }
    Ok(samples)
}

/// What a closed loop measured.
pub struct Load {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

/// `connections` clients, each sending its next request as soon as the last is
/// answered, for `duration`. Any failed request fails the run.
pub async fn closed_loop(
    endpoint: &Endpoint,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Load> {
    let began = Instant::now();
    let deadline = began + duration;
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let mut client = Reconnecting {
                endpoint: endpoint.clone(),
                connection: None,
            };
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    latencies.push(client.get().await?);
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.context("a load client panicked")??);
    }
    Ok(Load {
        latencies,
        elapsed: began.elapsed(),
    })
}

/// `count` requests sent at the same moment, each on a connection opened
/// beforehand; returns each one's latency and the time until all were answered.
pub async fn burst(endpoint: &Endpoint, count: usize) -> anyhow::Result<Load> {
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(Connection::open(endpoint).await?);
    }
    let start = Arc::new(tokio::sync::Barrier::new(count + 1));
    let requests: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let sent = Instant::now();
                let took = connection.get().await?;
                anyhow::Ok((sent, took))
            })
        })
        .collect();
    start.wait().await;
    let mut latencies = Vec::with_capacity(count);
    let (mut first_sent, mut last_answered) = (None::<Instant>, None::<Instant>);
    for request in requests {
        let (sent, took) = request.await.context("a burst request panicked")??;
        first_sent = Some(first_sent.map_or(sent, |f| f.min(sent)));
        last_answered = Some(last_answered.map_or(sent + took, |l| l.max(sent + took)));
        latencies.push(took);
    }
    ensure!(!latencies.is_empty(), "a burst needs at least one request");
    Ok(Load {
        latencies,
        elapsed: last_answered.unwrap() - first_sent.unwrap(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_become_endpoints() {
        let e = Endpoint::from_url("http://hello.ember.localhost:8000")
            .await
            .unwrap();
        assert_eq!(e.addr, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(
            (e.host.as_str(), e.path.as_str()),
            ("hello.ember.localhost:8000", "/")
        );
        let e = Endpoint::from_url("http://127.0.0.1:9/x").await.unwrap();
        assert_eq!((e.addr.port(), e.path.as_str()), (9, "/x"));
        let e = Endpoint::from_url("a.ember.localhost:7").await.unwrap();
        assert_eq!((e.addr.port(), e.host.as_str()), (7, "a.ember.localhost:7"));
        assert!(Endpoint::from_url("https://a.example").await.is_err());
    }
}
