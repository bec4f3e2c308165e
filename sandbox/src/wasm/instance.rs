//! Prepared components and their running instances.

use super::guest::{GuestOutputs, GuestState};
use super::meter::{Timed, WasmMeter};
use super::output::GuestOutput;
use crate::{
    BoxError, BoxFuture, HttpBody, Instance, LogSinkRef, LogStream, PreparedWorkload,
    ResourceUsage, SandboxError, WorkloadSpec,
};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot::error::TryRecvError;
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// An artifact's compiled code, loaded (mapped from the compile cache) and
/// pre-instantiated: shared by every prepared workload of that artifact.
pub(crate) struct Loaded {
    pub(crate) pre: ProxyPre<GuestState>,
}

/// A component ready to start. Holds its artifact's loaded code, shared with the
/// other containers of that artifact, and no wasm memory: a container at zero
/// costs next to nothing, and a cold start only makes an instance of it.
pub(crate) struct PreparedComponent {
    loaded: Arc<Loaded>,
    spec: Arc<GuestSpec>,
}

/// The parts of the workload spec each request needs.
struct GuestSpec {
    env: Vec<(String, String)>,
    args: Vec<String>,
    memory_limit: usize,
    timeout: std::time::Duration,
    logs: LogSinkRef,
    outbound: Arc<super::OutboundPolicy>,
}

impl PreparedComponent {
    pub(crate) fn new(loaded: Arc<Loaded>, spec: WorkloadSpec) -> Self {
        let mut args = vec![spec.name.clone()];
        args.extend(spec.arguments.iter().flatten().cloned());
        Self {
            loaded,
            spec: Arc::new(GuestSpec {
                env: spec.env,
                args,
                memory_limit: usize::try_from(spec.memory_limit_bytes).unwrap_or(usize::MAX),
                timeout: spec.request_timeout,
                logs: spec.logs,
                outbound: Arc::new(spec.outbound),
            }),
        }
    }
}

impl PreparedWorkload for PreparedComponent {
    fn start<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn Instance>, SandboxError>> {
        Box::pin(async move {
            // The cold start: the code is loaded and its imports resolved already.
            let pre = self.loaded.pre.clone();
            let name: Arc<str> = instance.into();
            let output = |stream| GuestOutput::new(self.spec.logs.clone(), name.clone(), stream);
            Ok(Arc::new(WasmInstance {
                pre,
                spec: self.spec.clone(),
                meter: Arc::default(),
                output: GuestOutputs {
                    stdout: output(LogStream::Stdout),
                    stderr: output(LogStream::Stderr),
                },
            }) as Arc<dyn Instance>)
        })
    }
}

/// A started component: each request gets a fresh store from the pre-instance.
pub(crate) struct WasmInstance {
    pre: ProxyPre<GuestState>,
    spec: Arc<GuestSpec>,
    meter: Arc<WasmMeter>,
    output: GuestOutputs,
}

impl WasmInstance {
    async fn serve(
        &self,
        request: http::Request<HttpBody>,
    ) -> Result<http::Response<HttpBody>, SandboxError> {
        let spec = &self.spec;
        let mut store = Store::new(
            self.pre.engine(),
            GuestState::new(
                &spec.env,
                &spec.args,
                spec.memory_limit,
                self.meter.clone(),
                &self.output,
                spec.outbound.clone(),
            ),
        );
        store.limiter(|state| &mut state.limits);
        // At every epoch tick the guest yields, so that a guest that computes for long
        // holds up no other request served by the same thread; past its deadline it
        // is stopped. tokio's own yield puts the guest behind the thread's pending I/O
        // as well as its other tasks, so that new requests are read meanwhile.
        let deadline = std::time::Instant::now() + spec.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if std::time::Instant::now() < deadline {
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            } else {
                Err(Trap::Interrupt.into())
            }
        });

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let guest_error = |e: wasmtime::Error| SandboxError::guest(format!("{e:#}"));
        // A request body that fails to arrive means the client went away.
        let request =
            request.map(|body| body.map_err(|_| wasmtime_wasi_http::Error::ConnectionTerminated));
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(guest_error)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(sender)
            .map_err(guest_error)?;
        let pre = self.pre.clone();
        let mut guest: GuestFuture = Timed::new(
            Box::pin(async move {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            }),
            self.meter.clone(),
        );

        // Drive the guest here until it hands over the response head (or ends). The
        // guest runs before the receiver is polled: a receiver that had registered this
        // task's waker would be woken by the guest's own `set`, and tokio reschedules a
        // task woken during its own poll by waking another worker.
        let mut receiver = receiver;
        let mut finished = None;
        let head = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            std::future::poll_fn(|cx| {
                if finished.is_none()
                    && let Poll::Ready(result) = Pin::new(&mut guest).poll(cx)
                {
                    finished = Some(result);
                }
                match receiver.try_recv() {
                    Ok(sent) => return Poll::Ready(Some(sent)),
                    Err(TryRecvError::Closed) => return Poll::Ready(None),
                    Err(TryRecvError::Empty) if finished.is_some() => return Poll::Ready(None),
                    Err(TryRecvError::Empty) => {}
                }
                Pin::new(&mut receiver).poll(cx).map(Result::ok)
            }),
        )
        .await;
        // A guest that waits (on a clock, a stream) is not at an epoch check:
        // past its deadline it is dropped here, wherever it waits.
        let Ok(head) = head else {
            return Err(SandboxError::Timeout(spec.timeout));
        };

        // Why the guest ended without a response.
        let failure = |result: wasmtime::Result<()>| match result {
            Ok(()) => SandboxError::guest("the guest never set a response"),
            Err(e) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                SandboxError::Timeout(spec.timeout)
            }
            Err(e) => SandboxError::guest(format!("{e:#}")),
        };
        let sent = match head {
            Some(sent) => sent,
            // The guest dropped the outparam unset: its own result says why.
            None => {
                let result = match finished.take() {
                    Some(result) => result,
                    None => guest.await,
                };
                return Err(failure(result));
            }
        };
        let guest = finished.is_none().then_some(guest);
        match sent {
            Ok(response) => Ok(response.map(|body| GuestDrivenBody { guest, body }.boxed_unsync())),
            Err(code) => Err(SandboxError::guest(format!(
                "the guest answered with an error: {code:?}"
            ))),
        }
    }
}

/// The guest's run, timed for the instance's CPU figure.
type GuestFuture = Timed<Pin<Box<dyn Future<Output = wasmtime::Result<()>> + Send>>>;

/// The response body of a wasm guest. Polling it also drives the guest, which
/// writes the body as it runs: no task is spawned per request, and the guest is
/// dropped (its store freed) when the client goes away.
struct GuestDrivenBody {
    guest: Option<GuestFuture>,
    body: HyperOutgoingBody,
}

impl Body for GuestDrivenBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(guest) = &mut this.guest
            && let Poll::Ready(result) = Pin::new(&mut *guest).poll(cx)
        {
            this.guest = None;
            if let Err(e) = result {
                // The head went out already; cutting the body is all that is left.
                return Poll::Ready(Some(Err(format!("the guest failed: {e:#}").into())));
            }
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame
            && let Some(guest) = this.guest.take()
        {
            // The body is complete but the guest still runs: let it finish on its own.
            tokio::spawn(guest);
        }
        frame.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.guest.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Instance for WasmInstance {
    fn handle(
        &self,
        request: http::Request<HttpBody>,
    ) -> BoxFuture<'_, Result<http::Response<HttpBody>, SandboxError>> {
        Box::pin(self.serve(request))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        // Nothing to stop: each request's store is freed when it ends, and the code
        // mapping goes when the last reference to this instance does.
        Box::pin(async {})
    }

    fn exit_signal(&self) -> Option<tokio::sync::watch::Receiver<Option<String>>> {
        // A component has no process of its own to exit.
        None
    }

    fn usage(&self) -> ResourceUsage {
        self.meter.usage()
    }
}
