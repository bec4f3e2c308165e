//! A response body cut at its request's deadline: `--request-timeout` bounds a
//! whole request, its response's body included. An instance that sends its head
//! and then stalls (or whose end of the connection never arrives) would otherwise
//! hold the client, and the instance's slot, for ever.

use crate::{BoxError, SandboxError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// `inner`, ended with an error once `deadline` passes before it ends.
pub(crate) struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    /// Says which instance kept the body, when it is cut.
    instance: String,
}

impl<B> DeadlineBody<B> {
    pub(crate) fn new(inner: B, deadline: Instant, limit: Duration, instance: String) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            limit,
            instance,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            tracing::warn!(sandbox = %self.instance, "an instance's response outlasted the request timeout and was cut");
            return Poll::Ready(Some(Err(SandboxError::Timeout(self.limit).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Sends one frame, then nothing, never ending.
    struct Stalling(bool);

    impl Body for Stalling {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            if std::mem::replace(&mut self.0, true) {
                Poll::Pending
            } else {
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"head")))))
            }
        }
    }

    #[tokio::test]
    async fn a_body_that_stalls_past_the_deadline_is_cut_and_one_that_ends_is_not() {
        let limit = Duration::from_millis(50);
        let mut body = DeadlineBody::new(
            Stalling(false),
            Instant::now() + limit,
            limit,
            "ember-test".into(),
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "head");
        let cut = body.frame().await.unwrap().unwrap_err();
        assert!(cut.to_string().contains("50ms"), "{cut}");

        let whole =
            http_body_util::Full::new(Bytes::from_static(b"all")).map_err(|never| match never {});
        let body = DeadlineBody::new(whole, Instant::now() + limit, limit, "ember-test".into());
        assert_eq!(body.collect().await.unwrap().to_bytes(), "all");
    }
}
