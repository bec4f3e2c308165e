//! Turns WAT core modules into wasi:http components (Ember's own encoder, with
//! the WIT it embeds).

/// Encodes a core module written in WAT as a component of the wasi:http proxy world.
pub fn component_from_wat(wat: &str) -> Vec<u8> {
    ember::workloads::component::component_from_wat(wat).expect("a valid component")
}
