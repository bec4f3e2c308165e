//! Builds a wasi:http component from a WAT core module.
//!
//! ```sh
//! cargo run --example wat2component -- examples/hello/hello.wat hello.wasm
//! ```

use ember::workloads::component;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(input), Some(output)) = (args.next(), args.next()) else {
        eprintln!("usage: wat2component <module.wat> <component.wasm>");
        std::process::exit(2);
    };
    let wat = std::fs::read_to_string(&input).unwrap_or_else(|e| panic!("reading {input}: {e}"));
    let bytes = component::component_from_wat(&wat).unwrap_or_else(|e| panic!("{input}: {e:#}"));
    std::fs::write(&output, &bytes).unwrap_or_else(|e| panic!("writing {output}: {e}"));
    println!(
        "wrote {output} ({} bytes, world {})",
        bytes.len(),
        component::PROXY_WORLD
    );
}
