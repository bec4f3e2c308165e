//! Clients of the ingress that try to hold the node: a connection whose request
//! head never ends is closed after `--header-read-timeout`, and well-behaved
//! clients are answered meanwhile.

mod common;

use common::{Ember, fixtures, temp_dir};
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection that sends a request line and one header, then nothing.
async fn slowloris(ember: &Ember) -> TcpStream {
    let mut stream = TcpStream::connect(ember.ingress).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: hello.ember.localhost\r\nX-Slow: 1\r\n")
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_cut_while_others_are_answered() {
    let dir = temp_dir();
    let ember = Ember::start(dir.path(), &["--header-read-timeout", "1"]);
    ember
        .deploy_wasm("hello", &fixtures::hello("hi\n"), json!({}))
        .await;
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(slowloris(&ember).await);
    }
    // Answered while the slow connections are open.
    let (status, body) = ember.invoke("hello").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hi\n"));
    // Each slow connection is closed by the ingress (the read ends), well before
    // the deadline here, which only keeps a broken build from hanging.
    for mut stream in held {
        let mut rest = Vec::new();
        // An orderly close or a reset: either way the read ends.
        let _ended = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut rest))
            .await
            .expect("a connection whose head never ended was kept open");
        let answer = String::from_utf8_lossy(&rest);
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    let (status, _) = ember.invoke("hello").await;
    assert_eq!(status, StatusCode::OK);
}
