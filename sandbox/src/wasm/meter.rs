//! What a wasm instance uses: the linear memory its live stores hold, and the time
//! its guests spent running. A component has no process or cgroup to ask, so the
//! instance counts for itself.

use crate::ResourceUsage;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::{ResourceLimiter, StoreLimits};

/// One instance's running totals, shared by the stores of its requests.
#[derive(Default)]
pub(crate) struct WasmMeter {
    busy_nanos: AtomicU64,
    memory_bytes: AtomicU64,
}

impl WasmMeter {
    pub(crate) fn usage(&self) -> ResourceUsage {
        ResourceUsage {
            cpu_time: Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
            memory_bytes: self.memory_bytes.load(Ordering::Relaxed),
            // A component has no network interface of its own.
            network: None,
            // Nor a filesystem.
            storage_bytes: None,
        }
    }
}

/// The store's limits, counting the memory each grant adds to the instance's meter;
/// what the store held is given back when it is dropped.
pub(crate) struct MeteredLimits {
    limits: StoreLimits,
    meter: Arc<WasmMeter>,
    held: u64,
}

impl MeteredLimits {
    pub(crate) fn new(limits: StoreLimits, meter: Arc<WasmMeter>) -> Self {
        Self {
            limits,
            meter,
            held: 0,
        }
    }
}

impl Drop for MeteredLimits {
    fn drop(&mut self) {
        self.meter
            .memory_bytes
            .fetch_sub(self.held, Ordering::Relaxed);
    }
}

impl ResourceLimiter for MeteredLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let granted = self.limits.memory_growing(current, desired, maximum)?;
        if granted {
            let added = desired.saturating_sub(current) as u64;
            self.held += added;
            self.meter.memory_bytes.fetch_add(added, Ordering::Relaxed);
        }
        Ok(granted)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// A guest future that adds the time spent in each poll (the guest running, with
/// the host calls it makes) to its instance's meter.
pub(crate) struct Timed<F> {
    inner: F,
    meter: Arc<WasmMeter>,
}

impl<F> Timed<F> {
    pub(crate) fn new(inner: F, meter: Arc<WasmMeter>) -> Self {
        Self { inner, meter }
    }
}

impl<F: Future + Unpin> Future for Timed<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let began = Instant::now();
        let result = Pin::new(&mut self.inner).poll(cx);
        let spent = began.elapsed().as_nanos() as u64;
        self.meter.busy_nanos.fetch_add(spent, Ordering::Relaxed);
        result
    }
}
