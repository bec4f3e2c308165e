//! WAT core modules turned into wasi:http components, with the WIT of the
//! wasmtime-wasi-http crate Ember builds against (embedded in the binary by
//! build.rs, so nothing is copied by hand and nothing needs Cargo's registry at
//! run time). `ember deploy NAME app.wat` and the test fixtures use it.

use anyhow::Context;
use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

include!(concat!(env!("OUT_DIR"), "/wasi_http_wit.rs"));

/// The world every Ember wasm component targets.
pub const PROXY_WORLD: &str = "wasi:http/proxy@0.2.12";

/// Encodes a core module written in WAT as a component of the wasi:http proxy
/// world. The module must export `cabi_realloc` and the handler
/// (`wasi:http/incoming-handler@0.2.12#handle`).
pub fn component_from_wat(wat: &str) -> anyhow::Result<Vec<u8>> {
    let mut module = wat::parse_str(wat).context("reading the WAT")?;
    // wit-parser reads a package with its dependencies from a folder.
    let folder = tempfile::tempdir().context("a folder for the WIT")?;
    for (path, contents) in WASI_HTTP_WIT {
        let file = folder.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).context("writing the WIT")?;
        }
        std::fs::write(&file, contents).context("writing the WIT")?;
    }
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(folder.path())
        .context("parsing the wasi:http WIT")?;
    let world = resolve
        .select_world(&[package], Some(PROXY_WORLD))
        .context("the wasi:http proxy world")?;
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .context("embedding the component's metadata")?;
    ComponentEncoder::default()
        .module(&module)
        .context("the module does not fit the proxy world")?
        .validate(true)
        .encode()
        .context("encoding the component (does the module export cabi_realloc and the wasi:http handler?)")
}
