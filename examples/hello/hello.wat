;; A wasi:http component by hand: answers every request with 200 and a greeting.
;;
;; The core module below imports the canonical-ABI forms of the few wasi:http and
;; wasi:io functions it calls; `cargo run --example wat2component` turns it into a
;; component exporting wasi:http/incoming-handler@0.2.12.
(module
  (import "wasi:http/types@0.2.12" "[constructor]fields" (func $fields_new (result i32)))
  (import "wasi:http/types@0.2.12" "[constructor]outgoing-response" (func $response_new (param i32) (result i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-response.body" (func $response_body (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[method]outgoing-body.write" (func $body_write (param i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]response-outparam.set" (func $outparam_set (param i32 i32 i32 i32 i64 i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[static]outgoing-body.finish" (func $body_finish (param i32 i32 i32 i32)))
  (import "wasi:http/types@0.2.12" "[resource-drop]incoming-request" (func $drop_request (param i32)))
  (import "wasi:io/streams@0.2.12" "[method]output-stream.blocking-write-and-flush" (func $write (param i32 i32 i32 i32)))
  (import "wasi:io/streams@0.2.12" "[resource-drop]output-stream" (func $drop_stream (param i32)))

  (memory (export "memory") 1)
  ;; Offsets 0..16 are the return area for results passed through memory.
  (data (i32.const 1024) "Hello from Ember!\n")
  (global $heap (mut i32) (i32.const 4096))

  ;; A bump allocator: enough for a component that lives for one request.
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and
        (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
        (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
    (local.get $ptr))

  (func (export "wasi:http/incoming-handler@0.2.12#handle") (param $request i32) (param $outparam i32)
    (local $response i32) (local $body i32) (local $stream i32)
    (call $drop_request (local.get $request))
    (local.set $response (call $response_new (call $fields_new)))
    ;; result<outgoing-body>: tag at 0, handle at 4
    (call $response_body (local.get $response) (i32.const 0))
    (local.set $body (i32.load (i32.const 4)))
    (call $body_write (local.get $body) (i32.const 0))
    (local.set $stream (i32.load (i32.const 4)))
    ;; Send the head first, then stream the body.
    (call $outparam_set (local.get $outparam)
      (i32.const 0) (local.get $response) (i32.const 0) (i64.const 0)
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0))
    (call $write (local.get $stream) (i32.const 1024) (i32.const 18) (i32.const 0))
    (call $drop_stream (local.get $stream))
    (call $body_finish (local.get $body) (i32.const 0) (i32.const 0) (i32.const 0))))
