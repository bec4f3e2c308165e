//! Protocol upgrades (WebSocket, h2c by Upgrade, ...) through the proxy: the
//! request keeps its `Upgrade` header on its way to the instance, and when the
//! instance answers `101 Switching Protocols`, the client's connection and the
//! instance's are joined, bytes copied both ways until either side closes.

use hyper_util::rt::TokioIo;

/// Present in the extensions of a `101` response whose connections are joined:
/// resolves once the tunnel has closed, so that whoever counts the instance busy
/// (the ingress's lease) keeps counting it until then.
#[derive(Clone)]
pub struct TunnelOpen(tokio::sync::watch::Receiver<bool>);

impl TunnelOpen {
    /// Waits until the tunnel has closed.
    pub async fn closed(mut self) {
        let _ = self.0.wait_for(|open| !open).await;
    }
}

/// The protocol a request asks to switch to, when it asks (`Connection:
/// upgrade` and an `Upgrade` header).
pub(crate) fn requested(headers: &http::HeaderMap) -> Option<http::HeaderValue> {
    let asks = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(http::header::UPGRADE).cloned())
        .flatten()
}

/// Puts the upgrade headers back after the hop-by-hop ones were removed.
pub(crate) fn ask_again(headers: &mut http::HeaderMap, protocol: http::HeaderValue) {
    headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    headers.insert(http::header::UPGRADE, protocol);
}

/// Joins the client's connection (`client`, which upgrades once the `101` has
/// been sent to it) and the instance's (`instance`) in a task of its own; returns
/// the marker the response carries.
pub(crate) fn join(
    client: hyper::upgrade::OnUpgrade,
    instance: hyper::upgrade::OnUpgrade,
) -> TunnelOpen {
    let (open, watched) = tokio::sync::watch::channel(true);
    tokio::spawn(async move {
        if let (Ok(client), Ok(instance)) = tokio::join!(client, instance) {
            let mut client = TokioIo::new(client);
            let mut instance = TokioIo::new(instance);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut instance).await;
        }
        open.send_replace(false);
    });
    TunnelOpen(watched)
}
