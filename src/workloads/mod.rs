//! The workloads `ember bench` and the tests deploy: a hello wasi:http component,
//! and a busybox httpd OCI image built in memory and pushed to a loopback registry.

pub mod component;
pub mod etcd;
pub mod image_archive;
pub mod oci_image;
pub mod registry;

/// `examples/hello/hello.wat` as a wasi:http component (built by `cargo run
/// --example wat2component`; a test checks that it still matches its source). It
/// answers every request with `Hello from Ember!`.
pub const HELLO_COMPONENT: &[u8] = include_bytes!("../../examples/hello/hello.wasm");

/// The body [`HELLO_COMPONENT`] answers with.
pub const HELLO_BODY: &str = "Hello from Ember!\n";
