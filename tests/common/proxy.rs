//! A TCP proxy on loopback that passes bytes on slowly and can be cut: the way to
//! stop a real registry in the middle of a pull, and to bring it back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `upstream` at about `bytes_per_second` each way.
pub struct SlowProxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    bytes_per_second: usize,
    /// Set to true to cut every connection and stop accepting.
    cut: Arc<watch::Sender<bool>>,
}

impl SlowProxy {
    pub async fn start(upstream: SocketAddr, bytes_per_second: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Self {
            addr,
            upstream,
            bytes_per_second,
            cut: Arc::new(watch::channel(false).0),
        };
        proxy.serve(listener);
        proxy
    }

    /// Cuts every connection and refuses new ones, as a registry that stopped.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Listens again on the same address, as a registry that came back.
    pub async fn resume(&self) {
        self.cut.send_replace(false);
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, rate, cut) = (self.upstream, self.bytes_per_second, self.cut.clone());
        tokio::spawn(async move {
            let mut stopped = cut.subscribe();
            loop {
                tokio::select! {
                    _ = stopped.wait_for(|cut| *cut) => return,
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { return };
                        let cut = cut.subscribe();
                        tokio::spawn(async move {
                            let Ok(server) = TcpStream::connect(upstream).await else { return };
                            let (client_read, client_write) = client.into_split();
                            let (server_read, server_write) = server.into_split();
                            tokio::select! {
                                _ = pump(client_read, server_write, rate) => {}
                                _ = pump(server_read, client_write, rate) => {}
                                _ = async { let mut cut = cut; let _ = cut.wait_for(|c| *c).await; } => {}
                            }
                        });
                    }
                }
            }
        });
    }
}

async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    bytes_per_second: usize,
) {
    let chunk = (bytes_per_second / 20).max(1);
    let mut buffer = vec![0; chunk];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
