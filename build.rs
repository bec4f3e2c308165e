//! Embeds the WIT of the wasi:http proxy world (the `wit/` folder of the
//! wasmtime-wasi-http crate this workspace builds against) in the `ember`
//! binary, so that `ember deploy NAME app.wat` can turn WAT into a component on
//! a machine without Cargo's registry. The crate's sources are in the registry
//! at build time, since the crate is compiled; its version comes from
//! Cargo.lock.

use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=Cargo.lock");
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
    let wit = std::fs::read_dir(&sources)
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
        });
    let mut files = Vec::new();
    collect(&wit, &wit, &mut files);
    files.sort();
    let mut generated = String::from(
        "/// The wasi:http proxy world's WIT files: (path under `wit/`, contents).\npub const WASI_HTTP_WIT: &[(&str, &str)] = &[\n",
    );
    for (relative, absolute) in &files {
        generated.push_str(&format!(
            "    ({relative:?}, include_str!({:?})),\n",
            absolute.display().to_string()
        ));
    }
    generated.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("wasi_http_wit.rs"), generated).expect("writing the WIT list");
}

/// Every `.wit` file under `dir`, with its path relative to `base`.
fn collect(base: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir)
        .expect("reading the WIT folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            collect(base, &path, files);
        } else if path.extension().is_some_and(|e| e == "wit") {
            let relative = path
                .strip_prefix(base)
                .expect("under the base")
                .to_string_lossy()
                .into_owned();
            files.push((relative, path));
        }
    }
}
