//! Turns WAT core modules into wasi:http components, with the WIT that ships in the
//! wasmtime-wasi-http crate (found through `cargo metadata`, so nothing is copied).

use std::path::{Path, PathBuf};
use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

/// The world every Ember wasm component targets.
pub const PROXY_WORLD: &str = "wasi:http/proxy@0.2.12";

/// The `wit/` folder of the wasmtime-wasi-http crate this workspace builds against:
/// its version comes from Cargo.lock, its sources from Cargo's registry cache (they
/// are there, since the crate is compiled).
pub fn wasi_http_wit_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("reading Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"wasmtime-wasi-http\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .expect("wasmtime-wasi-http in Cargo.lock");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let sources = cargo_home.join("registry").join("src");
    std::fs::read_dir(&sources)
        .unwrap_or_else(|e| panic!("reading {}: {e}", sources.display()))
        .filter_map(Result::ok)
        .map(|index| {
            index
                .path()
                .join(format!("wasmtime-wasi-http-{version}"))
                .join("wit")
        })
        .find(|wit| wit.is_dir())
        .unwrap_or_else(|| {
            panic!(
                "no wasmtime-wasi-http-{version}/wit under {}",
                sources.display()
            )
        })
}

/// Encodes a core module written in WAT as a component of the wasi:http proxy world.
pub fn component_from_wat(wat: &str) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_dir(wasi_http_wit_dir())
        .expect("parsing the WASI WIT");
    let world = resolve
        .select_world(&[package], Some(PROXY_WORLD))
        .expect("the proxy world");
    let mut module = wat::parse_str(wat).expect("valid WAT");
    embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .expect("embedding component metadata");
    ComponentEncoder::default()
        .module(&module)
        .expect("a module the encoder takes")
        .validate(true)
        .encode()
        .expect("encoding the component")
}
