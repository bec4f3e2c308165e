//! The per-request store data of a wasm guest.

use super::meter::{MeteredLimits, WasmMeter};
use super::outbound::OutboundPolicy;
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
    hooks: OutboundHttp,
    pub(crate) limits: MeteredLimits,
}

impl GuestState {
    pub(crate) fn new(
        env: &[(String, String)],
        args: &[String],
        memory_limit: usize,
        meter: Arc<WasmMeter>,
        output: &GuestOutputs,
        outbound: Arc<OutboundPolicy>,
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
            hooks: OutboundHttp(outbound),
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

/// wasi:http hooks that send a guest's outgoing requests to the hosts its
/// container lists, and refuse every other (none are listed by default).
struct OutboundHttp(Arc<OutboundPolicy>);

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> super::outbound::SendFuture {
        super::outbound::send(self.0.clone(), request, options)
    }
}
