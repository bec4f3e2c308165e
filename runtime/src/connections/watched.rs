//! The socket, the service and the bodies of one connection, each telling the
//! connection's activity what happens: bytes arriving, a request beginning, a
//! request body ending, a response sent.

use super::activity::Activity;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The connection's socket, telling its activity when bytes arrive.
pub(super) struct WatchedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
    first_read: bool,
}

impl WatchedStream {
    pub(super) fn new(inner: TcpStream, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            first_read: true,
        }
    }
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
pub(super) struct Watched<S> {
    inner: Arc<S>,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self {
            inner: Arc::new(inner),
            activity,
        }
    }
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
