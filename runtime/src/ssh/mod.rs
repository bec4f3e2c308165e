//! The SSH server built into Ember: a login with credentials from
//! `GET .../instances/{id}/ssh` (user: the instance's id; password: the one-off
//! secret) opens that instance, and every session channel runs a shell or a command
//! inside it (its namespaces, cgroups, root, user and limits). Nothing listens on
//! the container or the host for this but this server.

mod host_key;
mod session;

use crate::runtime::Runtime;
use russh::server::Server as _;
use russh::{MethodKind, MethodSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Serves SSH on `listener` until the runtime's process ends. The host key is kept
/// in the data directory, so clients' known hosts stay true across restarts.
pub async fn serve_ssh(runtime: Runtime, listener: TcpListener) -> std::io::Result<()> {
    let key = host_key::load_or_create(&runtime.config().data_dir.join(host_key::FILE_NAME))?;
    let config = russh::server::Config {
        methods: MethodSet::from(&[MethodKind::Password][..]),
        keys: vec![key],
        // A refused password costs the client this long, whatever the reason.
        auth_rejection_time: Duration::from_millis(500),
        // The "none" probe every client starts with is refused at once.
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(Duration::from_secs(60 * 60)),
        ..Default::default()
    };
    let mut server = Server { runtime };
    server.run_on_socket(Arc::new(config), &listener).await
}

struct Server {
    runtime: Runtime,
}

impl russh::server::Server for Server {
    type Handler = session::Connection;

    fn new_client(&mut self, _peer: Option<std::net::SocketAddr>) -> session::Connection {
        session::Connection::new(self.runtime.clone())
    }

    fn handle_session_error(&mut self, error: session::SessionError) {
        tracing::debug!(error = %error, "an SSH connection ended with an error");
    }
}
