//! The wasmtime engine, its linker and the prepare step.

use super::cache::CompiledCache;
use super::guest::GuestState;
use super::instance::{Loaded, PreparedComponent};
use crate::Digest;
use crate::blob_store::{BlobStore, write_atomically};
use crate::{BoxFuture, PreparedWorkload, Sandbox, SandboxError, WorkloadKind, WorkloadSpec};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// How often the epoch advances: a running guest yields at each tick, and its
/// deadline is checked then.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Artifacts kept loaded after their last container is gone.
const RECENTLY_LOADED: usize = 32;

/// Unused pool slots that keep the memory image of the module last in them: each
/// holds the image's mapping and a descriptor of its compiled code (wasmtime's
/// default, 100, let a long-running runtime collect a hundred of them).
const UNUSED_WARM_SLOTS: u32 = 16;

/// Bytes of each linear memory and table reset in place rather than decommitted.
const KEEP_RESIDENT_BYTES: usize = 64 << 10;
/// Decommits gathered before the kernel is asked to drop them.
const DECOMMIT_BATCH: usize = 8;

/// Settings of the wasm sandbox.
#[derive(Debug, Clone)]
pub struct WasmConfig {
    /// Where compiled code is cached.
    pub cache_dir: PathBuf,
    /// Component instances that may exist at once (one per request in flight).
    pub max_concurrent_instances: u32,
    /// Largest linear memory any guest may grow to; a container's `ram` lowers it.
    pub max_memory_bytes: usize,
}

/// The wasm sandbox: one engine and linker shared by every wasm workload.
pub struct WasmSandbox {
    engine: Engine,
    linker: Arc<Linker<GuestState>>,
    blobs: BlobStore,
    cache: CompiledCache,
    /// The loaded code of each artifact some prepared workload holds: containers of
    /// one image share it (one mapping of the compiled code, one descriptor), and
    /// a cold start only instantiates it.
    loaded: Mutex<HashMap<Digest, Weak<Loaded>>>,
    /// The artifacts loaded last, kept loaded while no container holds them: a
    /// container deleted and created again (or a deployment churn of one image)
    /// loads nothing again, and the pool's slots keep one memory image per
    /// artifact rather than one per load.
    recent: Mutex<std::collections::VecDeque<Arc<Loaded>>>,
    /// One compile of an artifact at a time: concurrent deployments of one image
    /// wait for the first to compile, then find its code on disk.
    compiling: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl WasmSandbox {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: &WasmConfig, blobs: BlobStore) -> Result<Self, SandboxError> {
        let engine = build_engine(config).map_err(|e| SandboxError::prepare(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // All of WASI 0.2 beside wasi:http, so that components made by
        // componentize-py or componentize-js (which import cli, filesystem, ...) link.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .map_err(|e| SandboxError::prepare(format!("linking WASI: {e:#}")))?;
        let cache = CompiledCache::open(&config.cache_dir, &engine)
            .map_err(|e| SandboxError::prepare_failed("opening the compile cache", e))?;
        spawn_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            blobs,
            cache,
            loaded: Mutex::default(),
            recent: Mutex::default(),
            compiling: Mutex::default(),
        })
    }

    /// Compiles the artifact unless its compiled code is cached, and returns the path of the
    /// compiled code.
    async fn ensure_compiled(&self, spec: &WorkloadSpec) -> Result<PathBuf, SandboxError> {
        let path = self.cache.path(&spec.artifact);
        if path.is_file() {
            return Ok(path);
        }
        let lock = self
            .compiling
            .lock()
            .entry(spec.artifact.clone())
            .or_default()
            .clone();
        let _compiling = lock.lock().await;
        let compiled = self.compile(spec, &path).await;
        let mut compiling = self.compiling.lock();
        // The last one through forgets the lock.
        if Arc::strong_count(&lock) == 2 {
            compiling.remove(&spec.artifact);
        }
        compiled.map(|()| path)
    }

    /// Compiles the artifact into `path`, unless a compile before did meanwhile.
    async fn compile(
        &self,
        spec: &WorkloadSpec,
        path: &std::path::Path,
    ) -> Result<(), SandboxError> {
        if path.is_file() {
            return Ok(());
        }
        let wasm = self.blobs.read(&spec.artifact)?;
        let engine = self.engine.clone();
        let target = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let compiled = engine
                .precompile_component(&wasm)
                .map_err(|e| SandboxError::InvalidWorkload(format!("{e:#}")))?;
            write_atomically(&target, &compiled)
                .map_err(|e| SandboxError::prepare_failed("writing compiled code", e))
        })
        .await
        .map_err(|e| SandboxError::prepare_failed("", e))??;
        tracing::info!(artifact = %spec.artifact, "compiled wasm component");
        Ok(())
    }

    /// The artifact's code, loaded and pre-instantiated: shared with whoever holds
    /// it already, else loaded now on a blocking thread (compiled first if it has
    /// not been; a file this engine cannot load is recompiled once).
    async fn load(&self, spec: &WorkloadSpec) -> Result<Arc<Loaded>, SandboxError> {
        if let Some(loaded) = self
            .loaded
            .lock()
            .get(&spec.artifact)
            .and_then(Weak::upgrade)
        {
            return Ok(loaded);
        }
        let path = self.ensure_compiled(spec).await?;
        let pre = match self.link(&path).await {
            Ok(pre) => pre,
            Err(first @ SandboxError::InvalidWorkload(_)) => return Err(first),
            Err(first) => {
                tracing::warn!(path = %path.display(), error = %first, "cached code did not load; recompiling");
                let _ = std::fs::remove_file(&path);
                let path = self.ensure_compiled(spec).await?;
                self.link(&path).await?
            }
        };
        let loaded = Arc::new(Loaded { pre });
        let mut recent = self.recent.lock();
        if recent.len() == RECENTLY_LOADED {
            recent.pop_front();
        }
        recent.push_back(loaded.clone());
        let mut cache = self.loaded.lock();
        cache.retain(|_, held| held.strong_count() > 0);
        cache.insert(spec.artifact.clone(), Arc::downgrade(&loaded));
        Ok(loaded)
    }

    /// Loads compiled code and checks that it serves HTTP.
    async fn link(&self, path: &std::path::Path) -> Result<ProxyPre<GuestState>, SandboxError> {
        let (engine, linker, path) = (self.engine.clone(), self.linker.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || {
            let component = load_compiled(&engine, &path)?;
            pre_instantiate(&linker, &component)
        })
        .await
        .map_err(|e| SandboxError::prepare_failed("", e))?
    }
}

/// Loads compiled code from the cache.
pub(crate) fn load_compiled(
    engine: &Engine,
    path: &std::path::Path,
) -> Result<Component, SandboxError> {
    // SAFETY: the file was written by `precompile_component` of an engine with the same
    // compatibility hash, into a directory only this runtime writes.
    unsafe { Component::deserialize_file(engine, path) }
        .map_err(|e| SandboxError::prepare(format!("loading compiled code: {e:#}")))
}

/// Checks that the component links and exports `wasi:http/incoming-handler`.
pub(crate) fn pre_instantiate(
    linker: &Linker<GuestState>,
    component: &Component,
) -> Result<ProxyPre<GuestState>, SandboxError> {
    let pre = linker.instantiate_pre(component).map_err(|e| {
        SandboxError::InvalidWorkload(format!(
            "the component's imports cannot be satisfied: {e:#}"
        ))
    })?;
    ProxyPre::new(pre).map_err(|e| {
        SandboxError::InvalidWorkload(format!(
            "the component does not export wasi:http/incoming-handler: {e:#}"
        ))
    })
}

impl Sandbox for WasmSandbox {
    fn kind(&self) -> WorkloadKind {
        WorkloadKind::Wasm
    }

    fn prepare(
        &self,
        spec: WorkloadSpec,
    ) -> BoxFuture<'_, Result<Arc<dyn PreparedWorkload>, SandboxError>> {
        Box::pin(async move {
            if !spec.devices.is_empty() {
                return Err(SandboxError::InvalidWorkload(
                    "a wasm component cannot be given devices: GPUs and CDI devices are for OCI containers".into(),
                ));
            }
            // Fail at deploy time, not at the first request, if it cannot serve HTTP.
            let loaded = self.load(&spec).await?;
            let prepared = PreparedComponent::new(loaded, spec);
            Ok(Arc::new(prepared) as Arc<dyn PreparedWorkload>)
        })
    }
}

fn build_engine(config: &WasmConfig) -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let instances = config.max_concurrent_instances.max(1);
    pool.total_component_instances(instances)
        // Components built by componentize-py hold several core instances, memories
        // and tables each.
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .max_memory_size(config.max_memory_bytes)
        // Resetting a small memory or table with memset is far cheaper than madvise,
        // whose TLB shootdowns cost every core an interrupt per request; larger guests
        // still give the rest of their memory back to the kernel.
        .max_unused_warm_slots(UNUSED_WARM_SLOTS)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .decommit_batch_size(DECOMMIT_BATCH);
    let mut wasm = Config::new();
    wasm.epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("ember-wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}
