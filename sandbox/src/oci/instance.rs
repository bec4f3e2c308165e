//! A running OCI container: requests are proxied to its address; its init is reaped
//! here (through a pidfd), its output is read continuously, and stopping it sends
//! SIGTERM, waits the grace period, then SIGKILLs and removes every trace.

use super::connector::RetryingConnector;
use super::deadline_body::DeadlineBody;
use super::network::{Attachment, Network, veth_name};
use super::rootfs::InstanceDir;
use super::tunnel;
use crate::{
    BoxFuture, EnterRequest, EnteredProcess, HttpBody, Instance, LogSinkRef, LogStream,
    ResourceUsage, SandboxError,
};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use libcontainer::container::Container;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use thread_local::ThreadLocal;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// What must be undone when the instance goes.
pub(crate) struct Resources {
    pub(crate) container: Option<Container>,
    pub(crate) attachment: Option<Attachment>,
    pub(crate) dir: Option<InstanceDir>,
    pub(crate) network: Arc<Network>,
}

impl Resources {
    /// Kills the container's processes at once, then releases everything.
    pub(crate) async fn discard(mut self) {
        self.kill_everything().await;
        self.release().await;
    }

    /// SIGKILLs every process of the container: through libcontainer, or, when its
    /// state cannot be read (its directory removed, or half written by a crash),
    /// through the container's cgroup, which still names each of them.
    async fn kill_everything(&mut self) {
        let Some(container) = self.container.as_mut() else {
            return;
        };
        if container.kill(Signal::SIGKILL, true).is_err() {
            let cgroups_path = super::spec::cgroups_path(container.id());
            let _ = tokio::task::spawn_blocking(move || super::orphans::kill_cgroup(&cgroups_path))
                .await;
        }
    }

    /// Kills the container's processes at once and, once its init has been reaped
    /// (`exit` says so; 10 s at most), releases everything. Removing the cgroups of a
    /// container whose processes have not yet gone fails, and would leave them.
    pub(crate) async fn discard_after_exit(mut self, exit: &watch::Receiver<Option<String>>) {
        self.kill_everything().await;
        let mut exit = exit.clone();
        let _ = tokio::time::timeout(Duration::from_secs(10), exit.wait_for(Option::is_some)).await;
        self.release().await;
    }

    /// Kills what still runs and removes cgroups, state, veth, mounts and files.
    pub(crate) async fn release(mut self) {
        if let Some(mut container) = self.container.take() {
            let deleted = tokio::task::spawn_blocking(move || container.delete(true)).await;
            if let Ok(Err(e)) = deleted {
                tracing::warn!(error = %e, "deleting a container failed");
            }
        }
        if let Some(attachment) = self.attachment.take() {
            self.network.detach(attachment).await;
        }
        if let Some(dir) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || dir.remove()).await;
        }
    }
}

pub(crate) struct OciInstance {
    /// Its libcontainer id, which names its cgroups and state directory.
    pub(crate) sandbox_id: String,
    pub(crate) address: SocketAddr,
    /// A client, with its kept-alive connections, per thread that proxies here: a
    /// connection is driven by the executor of the thread that opened it, so each
    /// ingress thread keeps to connections of its own.
    pub(crate) clients: ThreadLocal<Client<RetryingConnector, HttpBody>>,
    pub(crate) exit: watch::Receiver<Option<String>>,
    pub(crate) resources: tokio::sync::Mutex<Option<Resources>>,
    pub(crate) pid: Pid,
    pub(crate) grace: Duration,
    pub(crate) request_timeout: Duration,
    /// Whether it speaks HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.
    pub(crate) http2: bool,
    /// The write end of the container's standard input, held open as long as the
    /// instance runs (as `docker run -i` does), for the console.
    pub(crate) stdin: tokio::sync::Mutex<tokio::net::unix::pipe::Sender>,
    /// The sized tmpfs under its root filesystem's writable layer.
    pub(crate) writable_dir: std::path::PathBuf,
}

/// Longest a console write waits for a container that does not read its input.
const INPUT_TIMEOUT: Duration = Duration::from_secs(5);

/// Removes the headers that concern one connection only (RFC 9110, 7.6.1), and those
/// the `Connection` header names.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ] {
        headers.remove(name);
    }
}

/// A client for one instance: kept-alive HTTP/1 connections to its address, or
/// one HTTP/2 connection (h2c, prior knowledge) for an instance that speaks it.
fn client(http2: bool) -> Client<RetryingConnector, HttpBody> {
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(RetryingConnector::new())
}

impl OciInstance {
    async fn proxy(
        &self,
        request: http::Request<HttpBody>,
    ) -> Result<http::Response<HttpBody>, SandboxError> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = format!("http://{}{path}", self.address)
            .parse()
            .map_err(|e| SandboxError::guest_failed("bad request path", e))?;
        let upgrade = tunnel::requested(&parts.headers);
        // gRPC asks for trailers with `TE: trailers`, the one TE HTTP/2 allows.
        let wants_trailers = parts
            .headers
            .get(http::header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
        strip_hop_by_hop(&mut parts.headers);
        // The instance's protocol, whichever the client spoke to the ingress.
        parts.version = if self.http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        if self.http2 {
            // HTTP/2 names the host in `:authority` (the instance's address here);
            // a `Host` header beside it that says otherwise is refused by servers
            // such as nginx. The client's host goes on as `X-Forwarded-Host`.
            if let Some(host) = parts.headers.remove(http::header::HOST) {
                parts.headers.insert("x-forwarded-host", host);
            }
        }
        if self.http2 && wants_trailers {
            parts
                .headers
                .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        }
        // An upgrade goes on to the instance; the client's side of it is joined to
        // the instance's once the instance agrees.
        let client_side = match upgrade {
            Some(protocol) => {
                tunnel::ask_again(&mut parts.headers, protocol);
                parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
            }
            None => None,
        };
        let request = http::Request::from_parts(parts, body);
        let client = self.clients.get_or(|| client(self.http2));
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        let response = tokio::time::timeout_at(deadline, client.request(request))
            .await
            .map_err(|_| SandboxError::Timeout(self.request_timeout))?
            .map_err(|e| SandboxError::guest_failed("the container did not answer", e))?;
        let mut response = response;
        if response.status() == http::StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_side) = client_side
        {
            let instance_side = hyper::upgrade::on(&mut response);
            let protocol = response.headers().get(http::header::UPGRADE).cloned();
            let (mut parts, _) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            if let Some(protocol) = protocol {
                tunnel::ask_again(&mut parts.headers, protocol);
            }
            parts
                .extensions
                .insert(tunnel::join(client_side, instance_side));
            let empty = http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync();
            return Ok(http::Response::from_parts(parts, empty));
        }
        let (mut parts, body) = response.into_parts();
        // The instance's `Connection: close` (busybox httpd sends it) is about its hop
        // only; passed on, it would close the client's kept-alive connection too.
        strip_hop_by_hop(&mut parts.headers);
        let body = DeadlineBody::new(
            body.map_err(Into::into),
            deadline,
            self.request_timeout,
            self.sandbox_id.clone(),
        );
        Ok(http::Response::from_parts(parts, body.boxed_unsync()))
    }

    async fn wait_exit(&self, within: Duration) -> bool {
        let mut exit = self.exit.clone();
        tokio::time::timeout(within, exit.wait_for(Option::is_some))
            .await
            .is_ok()
    }

    async fn shut_down(&self) {
        let Some(mut resources) = self.resources.lock().await.take() else {
            return;
        };
        if self.exit.borrow().is_none() {
            // SIGTERM to the init alone, as Docker and Kubernetes do; then everything.
            let _ = nix::sys::signal::kill(self.pid, Signal::SIGTERM);
            if !self.wait_exit(self.grace).await {
                if let Some(container) = resources.container.as_mut() {
                    let _ = container.kill(Signal::SIGKILL, true);
                }
                let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
                self.wait_exit(Duration::from_secs(10)).await;
            }
        }
        resources.release().await;
    }
}

impl Instance for OciInstance {
    fn handle(
        &self,
        request: http::Request<HttpBody>,
    ) -> BoxFuture<'_, Result<http::Response<HttpBody>, SandboxError>> {
        Box::pin(self.proxy(request))
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shut_down())
    }

    fn exit_signal(&self) -> Option<watch::Receiver<Option<String>>> {
        Some(self.exit.clone())
    }

    fn sandbox_id(&self) -> Option<&str> {
        Some(&self.sandbox_id)
    }

    fn address(&self) -> Option<SocketAddr> {
        Some(self.address)
    }

    fn usage(&self) -> ResourceUsage {
        ResourceUsage {
            network: super::usage::read_network(&veth_name(&self.sandbox_id)),
            storage_bytes: super::usage::read_filesystem_used(&self.writable_dir),
            ..super::usage::read(&super::spec::cgroups_path(&self.sandbox_id))
        }
    }

    fn processes(&self) -> std::io::Result<Vec<crate::processes::ProcessInfo>> {
        crate::processes::list(self.pid.as_raw())
    }

    fn write_input<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let mut stdin = self.stdin.lock().await;
            match tokio::time::timeout(INPUT_TIMEOUT, stdin.write_all(data)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SandboxError::guest_failed(
                    "the container's standard input is closed",
                    e,
                )),
                Err(_) => Err(SandboxError::Timeout(INPUT_TIMEOUT)),
            }
        })
    }

    fn enter(&self, request: &EnterRequest) -> Result<EnteredProcess, SandboxError> {
        if self.exit.borrow().is_some() {
            return Err(SandboxError::guest("the instance has ended"));
        }
        super::enter::enter(self.pid, request)
    }
}

/// Reaps `pid` (the container's init, a child of this process) when it exits, and
/// publishes why. A pidfd wakes the runtime; nothing else waits for this pid.
pub(crate) fn reap_on_exit(pid: Pid) -> std::io::Result<watch::Receiver<Option<String>>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the descriptor is owned by the AsyncFd and closed only when it drops.
    let pidfd = unsafe { AsyncFd::register(pidfd) }.map_err(std::io::Error::from)?;
    let (sender, receiver) = watch::channel(None);
    tokio::spawn(async move {
        let _ = pidfd.readable().await;
        let reason = loop {
            match waitpid(pid, None) {
                Ok(status) => break describe(status),
                Err(nix::errno::Errno::EINTR) => continue,
                // Not our child: an instance adopted from an earlier run, whose
                // parent the host's init became. It has ended, how is unknown.
                Err(nix::errno::Errno::ECHILD) => break "exited".to_string(),
                Err(e) => break format!("its process vanished ({e})"),
            }
        };
        sender.send_replace(Some(reason));
    });
    Ok(receiver)
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, signal, _) => format!("was killed by {signal}"),
        other => format!("ended ({other:?})"),
    }
}

/// Longest line kept whole; longer output is split so one endless line cannot grow
/// memory without bound.
const MAX_LINE: usize = 16 * 1024;

/// Reads one output pipe of an instance until it closes, a line at a time. Lines are
/// logged under the instance's name once it has one (a sandbox created ahead gets it
/// when it starts), under `sandbox_id` before.
pub(crate) fn forward_output(
    pipe: OwnedFd,
    name: Arc<OnceLock<String>>,
    sandbox_id: String,
    stream: LogStream,
    sink: LogSinkRef,
) -> std::io::Result<()> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe)?;
    tokio::spawn(async move {
        let instance = || name.get().map_or(sandbox_id.as_str(), String::as_str);
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 8192];
        loop {
            let read = match pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&chunk[..read]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                sink.0.line(
                    instance(),
                    stream,
                    String::from_utf8_lossy(&line[..end]).trim_end_matches('\r'),
                );
            }
            if pending.len() >= MAX_LINE {
                sink.0
                    .line(instance(), stream, &String::from_utf8_lossy(&pending));
                pending.clear();
            }
        }
        if !pending.is_empty() {
            sink.0
                .line(instance(), stream, &String::from_utf8_lossy(&pending));
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_do_not_cross_the_proxy() {
        let mut headers = http::HeaderMap::new();
        headers.insert("connection", "close, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("content-type", "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("content-type"));
    }
}
