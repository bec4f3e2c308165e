//! The per-request store data of a wasm guest.

use super::meter::{MeteredLimits, WasmMeter};
use super::output::GuestOutput;
use std::sync::Arc;
use wasmtime::StoreLimitsBuilder;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

/// Where an instance's guests write: its stdout and stderr.
pub(crate) struct GuestOutputs {
    pub(crate) stdout: GuestOutput,
    pub(crate) stderr: GuestOutput,
}

/// What one request's store holds: WASI state, wasi:http state and limits.
pub(crate) struct GuestState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoOutboundHttp,
    pub(crate) limits: MeteredLimits,
}

impl GuestState {
    pub(crate) fn new(
        env: &[(String, String)],
        args: &[String],
        memory_limit: usize,
        meter: Arc<WasmMeter>,
        output: &GuestOutputs,
    ) -> Self {
        // No preopened directories and the default socket policy (every address
        // refused): guests get no filesystem and no network unless Ember grants them.
        let wasi = WasiCtx::builder()
            .envs(env)
            .args(args)
            .stdout(output.stdout.clone())
            .stderr(output.stderr.clone())
            .build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: NoOutboundHttp,
            limits: MeteredLimits::new(
                StoreLimitsBuilder::new()
                    .memory_size(memory_limit)
                    .trap_on_grow_failure(false)
                    .build(),
                meter,
            ),
        }
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// wasi:http hooks that refuse every outgoing request: guests have no outbound network
/// by default.
struct NoOutboundHttp;

impl WasiHttpHooks for NoOutboundHttp {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                    ),
                    HttpError,
                >,
            > + Send,
    > {
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}
