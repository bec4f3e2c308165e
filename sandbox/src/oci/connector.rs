//! Connections from the proxy to an instance, tried again quickly when the instance
//! drops the handshake.
//!
//! A new instance gets a burst's requests all at once, so the proxy opens many
//! connections to it together. A server whose listen backlog is small (busybox
//! httpd's is 9) overflows its accept queue, and the kernel drops the SYNs that
//! find it full; the client would resend only after the initial retransmission
//! timeout of a whole second. Instead, an attempt that has not connected within a
//! few tens of milliseconds is abandoned and a fresh one sent.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;

/// How long the first attempt waits for the handshake; each next one waits twice as
/// long, up to [`LONGEST_ATTEMPT`].
const FIRST_ATTEMPT: Duration = Duration::from_millis(50);
/// The longest one attempt waits: well under the kernel's 1 s first SYN
/// retransmission, which doubles with each try.
const LONGEST_ATTEMPT: Duration = Duration::from_millis(400);
/// How long attempts go on before the connection is given up.
const CONNECT_BUDGET: Duration = Duration::from_secs(10);

/// An HTTP connector that abandons slow handshakes and tries again.
#[derive(Clone)]
pub(crate) struct RetryingConnector {
    inner: HttpConnector,
}

impl RetryingConnector {
    pub(crate) fn new() -> Self {
        let mut inner = HttpConnector::new();
        inner.set_nodelay(true);
        Self { inner }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for RetryingConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let began = tokio::time::Instant::now();
            let mut limit = FIRST_ATTEMPT;
            loop {
                if let Ok(connected) = tokio::time::timeout(limit, inner.call(uri.clone())).await {
                    return connected.map_err(Into::into);
                }
                if began.elapsed() >= CONNECT_BUDGET {
                    return Err(format!(
                        "the instance did not complete a TCP handshake within {CONNECT_BUDGET:?}"
                    )
                    .into());
                }
                limit = (limit * 2).min(LONGEST_ATTEMPT);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    #[tokio::test]
    async fn connects_and_reports_a_refusal_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connector = RetryingConnector::new();
        let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
        assert!(connector.call(uri).await.is_ok());

        // A socket bound but not listening refuses connections, and keeps its port
        // from being taken by anything else (or by this very connection's own
        // source port) while the test runs.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed_addr = closed.local_addr().unwrap();
        let uri: http::Uri = format!("http://{closed_addr}/").parse().unwrap();
        let refused = connector.call(uri).await.err().unwrap();
        // A refusal is an answer, passed on as it is: no retry waits it out.
        assert!(!refused.to_string().contains("TCP handshake"), "{refused}");
    }
}
