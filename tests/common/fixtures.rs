//! Fixture components, written in WAT and encoded with [`super::component`].

use super::component::component_from_wat;

/// The hello example of examples/hello, with its greeting replaced by `message`.
pub fn hello(message: &str) -> Vec<u8> {
    let wat = include_str!("../../examples/hello/hello.wat")
        .replace("\"Hello from Ember!\\n\"", &format!("{message:?}"))
        .replace(
            "(i32.const 18) (i32.const 0))",
            &format!("(i32.const {}) (i32.const 0))", message.len()),
        );
    assert!(
        wat.contains(&format!("{message:?}")),
        "the hello example changed shape"
    );
    component_from_wat(&wat)
}

/// A guest that never returns from its handler.
pub fn spin_forever() -> Vec<u8> {
    component_from_wat(
        r#"(module
          (memory (export "memory") 1)
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024))
          (func (export "wasi:http/incoming-handler@0.2.12#handle") (param i32 i32)
            (loop $forever (br $forever))))"#,
    )
}

/// Answers `grown` if `memory.grow` by `pages` 64 KiB pages succeeds, `refused` if
/// the store's limits refuse it.
pub fn memory_grower(pages: u32) -> Vec<u8> {
    let hello = include_str!("../../examples/hello/hello.wat");
    let wat = hello
        .replace(
            "(data (i32.const 1024) \"Hello from Ember!\\n\")",
            "(data (i32.const 1024) \"grown\\n\") (data (i32.const 1040) \"refused\\n\")",
        )
        .replace(
            "(call $write (local.get $stream) (i32.const 1024) (i32.const 18) (i32.const 0))",
            &format!(
                "(if (i32.eq (memory.grow (i32.const {pages})) (i32.const -1))
                   (then (call $write (local.get $stream) (i32.const 1040) (i32.const 8) (i32.const 0)))
                   (else (call $write (local.get $stream) (i32.const 1024) (i32.const 6) (i32.const 0))))"
            ),
        );
    assert!(
        wat.contains("memory.grow"),
        "the hello example changed shape"
    );
    component_from_wat(&wat)
}

/// The hello example's memory, with the imports a guest needs to sleep on a
/// wasi:clocks pollable before it.
const CLOCK_IMPORTS: &str = r#"(import "wasi:clocks/monotonic-clock@0.2.12" "subscribe-duration" (func $subscribe (param i64) (result i32)))
  (import "wasi:io/poll@0.2.12" "[method]pollable.block" (func $block (param i32)))
  (import "wasi:io/poll@0.2.12" "[resource-drop]pollable" (func $drop_pollable (param i32)))
  (memory (export "memory") 1)"#;

/// The hello example, answering `slept` after sleeping `millis` in the guest (on a
/// wasi:clocks pollable, so the guest waits without burning a CPU).
pub fn sleeper(millis: u64) -> Vec<u8> {
    let hello = include_str!("../../examples/hello/hello.wat");
    let wat = hello
        .replace("(memory (export \"memory\") 1)", CLOCK_IMPORTS)
        .replace(
            "(call $drop_request (local.get $request))",
            &format!(
                "(call $drop_request (local.get $request))
    (local.set $response (call $subscribe (i64.const {})))
    (call $block (local.get $response))
    (call $drop_pollable (local.get $response))",
                millis * 1_000_000
            ),
        )
        .replace("\"Hello from Ember!\\n\"", "\"slept\\n\"")
        .replace(
            "(i32.const 18) (i32.const 0))",
            "(i32.const 6) (i32.const 0))",
        );
    assert!(
        wat.contains("$subscribe (i64"),
        "the hello example changed shape"
    );
    component_from_wat(&wat)
}

/// [`hello`] that also writes `line` (and a newline) to its standard output on
/// each request.
pub fn hello_logging(message: &str, line: &str) -> Vec<u8> {
    let logged = format!("{line}\n");
    let wat = include_str!("../../examples/hello/hello.wat")
        .replace("\"Hello from Ember!\\n\"", &format!("{message:?}"))
        .replace(
            "(i32.const 18) (i32.const 0))",
            &format!("(i32.const {}) (i32.const 0))", message.len()),
        )
        .replace(
            "(func $drop_stream (param i32)))",
            "(func $drop_stream (param i32)))\n  (import \"wasi:cli/stdout@0.2.12\" \"get-stdout\" (func $get_stdout (result i32)))",
        )
        .replace(
            "(global $heap",
            &format!("(data (i32.const 2048) {logged:?})\n  (global $heap"),
        )
        .replace(
            "(local $stream i32)",
            "(local $stream i32) (local $out i32)",
        )
        .replace(
            "(call $drop_request (local.get $request))",
            &format!(
                "(call $drop_request (local.get $request))
    (local.set $out (call $get_stdout))
    (call $write (local.get $out) (i32.const 2048) (i32.const {}) (i32.const 0))
    (call $drop_stream (local.get $out))",
                logged.len()
            ),
        );
    assert!(
        wat.contains("$get_stdout"),
        "the hello example changed shape"
    );
    component_from_wat(&wat)
}

/// The hello example that sends its status and headers at once, then waits
/// `millis` before its body.
pub fn slow_body(millis: u64) -> Vec<u8> {
    let write = "(call $write (local.get $stream) (i32.const 1024) (i32.const 18) (i32.const 0))";
    let wat = include_str!("../../examples/hello/hello.wat")
        .replace("(memory (export \"memory\") 1)", CLOCK_IMPORTS)
        .replace(
            "(local $stream i32)",
            "(local $stream i32) (local $pollable i32)",
        )
        .replace(
            write,
            &format!(
                "(local.set $pollable (call $subscribe (i64.const {})))
    (call $block (local.get $pollable))
    (call $drop_pollable (local.get $pollable))
    {write}",
                millis * 1_000_000
            ),
        );
    assert!(
        wat.contains("$pollable (call"),
        "the hello example changed shape"
    );
    component_from_wat(&wat)
}

/// The hello example, answering every request with status `code` (and its greeting).
pub fn answering_status(code: u16) -> Vec<u8> {
    let source = include_str!("../../examples/hello/hello.wat");
    let wat = source
        .replace(
            "(import \"wasi:http/types@0.2.12\" \"[method]outgoing-response.body\"",
            "(import \"wasi:http/types@0.2.12\" \"[method]outgoing-response.set-status-code\" (func $set_status (param i32 i32) (result i32)))\n  (import \"wasi:http/types@0.2.12\" \"[method]outgoing-response.body\"",
        )
        .replace(
            "(local.set $response (call $response_new (call $fields_new)))",
            &format!(
                "(local.set $response (call $response_new (call $fields_new)))\n    (drop (call $set_status (local.get $response) (i32.const {code})))"
            ),
        );
    assert!(
        wat.contains("$set_status (local.get"),
        "the hello example changed shape"
    );
    component_from_wat(&wat)
}
