//! Prepared components and their running instances.

use super::engine::{EPOCH_TICK, load_compiled, pre_instantiate};
use super::guest::GuestState;
use crate::{BoxFuture, HttpBody, Instance, PreparedWorkload, SandboxError, WorkloadSpec};
use http_body_util::BodyExt;
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

/// A compiled component on disk, ready to start. Holds no wasm memory, so a
/// container at zero costs next to nothing.
pub(crate) struct PreparedComponent {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
    compiled: PathBuf,
    spec: Arc<GuestSpec>,
}

/// The parts of the workload spec each request needs.
struct GuestSpec {
    env: Vec<(String, String)>,
    args: Vec<String>,
    memory_limit: usize,
    deadline_ticks: u64,
    timeout: std::time::Duration,
}

impl PreparedComponent {
    pub(crate) fn new(
        engine: Engine,
        linker: Arc<Linker<GuestState>>,
        compiled: PathBuf,
        spec: WorkloadSpec,
    ) -> Self {
        let mut args = vec![spec.name.clone()];
        args.extend(spec.args.iter().cloned());
        let deadline_ticks =
            (spec.request_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        Self {
            engine,
            linker,
            compiled,
            spec: Arc::new(GuestSpec {
                env: spec.env,
                args,
                memory_limit: usize::try_from(spec.memory_limit_bytes).unwrap_or(usize::MAX),
                deadline_ticks,
                timeout: spec.request_timeout,
            }),
        }
    }
}

impl PreparedWorkload for PreparedComponent {
    fn start(&self) -> BoxFuture<'_, Result<Arc<dyn Instance>, SandboxError>> {
        Box::pin(async move {
            // The cold start: map the cached compiled code and resolve imports once.
            let component = load_compiled(&self.engine, &self.compiled)
                .map_err(|e| SandboxError::Start(e.to_string()))?;
            let pre = pre_instantiate(&self.linker, &component)?;
            Ok(Arc::new(WasmInstance {
                pre,
                spec: self.spec.clone(),
            }) as Arc<dyn Instance>)
        })
    }
}

/// A started component: each request gets a fresh store from the pre-instance.
pub(crate) struct WasmInstance {
    pre: ProxyPre<GuestState>,
    spec: Arc<GuestSpec>,
}

impl WasmInstance {
    async fn serve(
        &self,
        request: http::Request<HttpBody>,
    ) -> Result<http::Response<HttpBody>, SandboxError> {
        let spec = &self.spec;
        let mut store = Store::new(
            self.pre.engine(),
            GuestState::new(&spec.env, &spec.args, spec.memory_limit),
        );
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(spec.deadline_ticks);
        store.epoch_deadline_trap();

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let guest_error = |e: wasmtime::Error| SandboxError::Guest(format!("{e:#}"));
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
        // The guest runs in its own task so it can keep streaming the body after the
        // response head has gone out.
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });

        match receiver.await {
            Ok(Ok(response)) => Ok(response.map(|body| body.map_err(Into::into).boxed_unsync())),
            Ok(Err(code)) => Err(SandboxError::Guest(format!(
                "the guest answered with an error: {code:?}"
            ))),
            Err(_) => Err(match task.await {
                Ok(Ok(())) => SandboxError::Guest("the guest never set a response".to_string()),
                Ok(Err(e)) if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) => {
                    SandboxError::Timeout(spec.timeout)
                }
                Ok(Err(e)) => guest_error(e),
                Err(join) => SandboxError::Guest(join.to_string()),
            }),
        }
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
}
