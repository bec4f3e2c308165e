//! The wasm sandbox: wasi:http components on wasmtime.
//!
//! One [`WasmSandbox`] owns the wasmtime engine (pooling allocator with
//! copy-on-write memory images, epoch interruption) and the on-disk cache of
//! compiled code. Preparing a workload compiles it once, ever: the compiled code is
//! kept on disk keyed by the artifact digest and the engine's compatibility key.
//! Preparing also loads that code and pre-instantiates it, once per artifact for
//! every container of it; starting an instance takes the pre-instance, and each
//! request then gets a fresh store, as `wasmtime serve` does.

mod cache;
mod engine;
mod guest;
mod instance;
mod meter;
mod outbound;
mod output;

pub use engine::{WasmConfig, WasmSandbox};
pub use outbound::{AllowedHost, InvalidAllowedHost, LocalIngress, OutboundPolicy};
