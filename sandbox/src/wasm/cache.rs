//! On-disk cache of compiled components, so no restart or cold start compiles again.

use crate::digest::Digest;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;

/// Compiled code for one engine configuration, under `<root>/<engine key>/<digest>.cwasm`.
#[derive(Debug, Clone)]
pub(crate) struct CompiledCache {
    dir: PathBuf,
}

impl CompiledCache {
    pub(crate) fn open(root: &Path, engine: &Engine) -> std::io::Result<Self> {
        let dir = root.join(engine_key(engine));
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub(crate) fn path(&self, artifact: &Digest) -> PathBuf {
        self.dir.join(format!("{}.cwasm", artifact.hex()))
    }
}

/// Identifies compiled code that this wasmtime build and configuration can load
/// (wasmtime's compatibility hash covers its version and compiler settings). A
/// different build gets its own directory; a file that still fails to load is
/// recompiled by the caller.
fn engine_key(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("engine-{:016x}", hasher.finish())
}
