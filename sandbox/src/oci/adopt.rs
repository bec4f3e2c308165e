//! Taking over the instances an earlier run of the runtime started and left
//! running (it was killed, or stopped to be upgraded): each keeps its processes,
//! mounts, cgroups, veth and address, and the new runtime watches it again (a
//! pidfd for its init), reads its output from its named pipes, and proxies to it.

use super::instance::{self, OciInstance, Resources};
use super::network::veth_name;
use super::record::InstanceRecord;
use super::rootfs::InstanceDir;
use super::{Shared, stdio};
use crate::{BoxError, Instance, LogSinkRef, LogStream, SandboxError};
use libcontainer::container::Container;
use nix::unistd::Pid;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// Takes over `sandbox_id` (see [`crate::Sandbox::adopt`]).
pub(crate) async fn adopt(
    shared: Arc<Shared>,
    sandbox_id: &str,
    instance: &str,
    logs: LogSinkRef,
    proxying: crate::Proxying,
) -> Result<Arc<dyn Instance>, SandboxError> {
    let fail = |what: &str, e: BoxError| {
        SandboxError::start_failed(format!("adopting instance {sandbox_id}: {what}"), e)
    };
    let record = shared
        .adoptable
        .lock()
        .remove(sandbox_id)
        .ok_or_else(|| fail("it is not one the earlier run left", "unknown".into()))?;
    let dir = shared.instances_dir().join(sandbox_id);
    let network = shared.network().await?;
    let mut resources = Resources {
        container: Container::load(shared.state_dir().join(sandbox_id)).ok(),
        attachment: None,
        dir: Some(InstanceDir::existing(dir.clone())),
        network: network.clone(),
    };
    let IpAddr::V4(address) = record.address.ip() else {
        resources.discard().await;
        return Err(fail("its address", "not IPv4".into()));
    };
    match network.adopt(address, &veth_name(sandbox_id)).await {
        Ok(attachment) => resources.attachment = Some(attachment),
        Err(e) => {
            resources.discard().await;
            return Err(fail("its address", e.into()));
        }
    }
    if resources.container.is_none()
        || !record.is_running_in(&super::spec::cgroups_path(sandbox_id))
    {
        resources.discard().await;
        return Err(fail("it", "no longer runs".into()));
    }
    let pid = Pid::from_raw(record.pid);
    let taken = (|| {
        let exit = instance::reap_on_exit(pid).map_err(|e| fail("watching its init", e.into()))?;
        let streams = stdio::reopen(&dir).map_err(|e| fail("opening its streams", e.into()))?;
        let name = Arc::new(OnceLock::from(instance.to_string()));
        for (pipe, stream) in [
            (streams.stdout, LogStream::Stdout),
            (streams.stderr, LogStream::Stderr),
        ] {
            instance::forward_output(
                pipe,
                name.clone(),
                sandbox_id.to_string(),
                stream,
                logs.clone(),
            )
            .map_err(|e| fail("reading its output", e.into()))?;
        }
        let stdin = tokio::net::unix::pipe::Sender::from_owned_fd(streams.stdin)
            .map_err(|e| fail("opening its input", e.into()))?;
        Ok((exit, stdin))
    })();
    let (exit, stdin) = match taken {
        Ok(taken) => taken,
        Err(e) => {
            resources.discard().await;
            return Err(e);
        }
    };
    tracing::info!(sandbox = sandbox_id, %instance, pid = record.pid, "adopted a running instance");
    Ok(Arc::new(OciInstance {
        sandbox_id: sandbox_id.to_string(),
        address: record.address,
        clients: thread_local::ThreadLocal::new(),
        exit,
        resources: tokio::sync::Mutex::new(Some(resources)),
        pid,
        grace: shared.config.stop_grace,
        request_timeout: proxying.request_timeout,
        http2: proxying.http2,
        stdin: tokio::sync::Mutex::new(stdin),
        writable_dir: dir.join("rw"),
    }))
}

/// Stops and removes every instance left running that was not adopted.
pub(crate) async fn discard_unadopted(shared: Arc<Shared>) {
    let left: Vec<(String, InstanceRecord)> = shared.adoptable.lock().drain().collect();
    if left.is_empty() {
        return;
    }
    let network = shared.network().await.ok();
    for (sandbox_id, record) in left {
        tracing::info!(sandbox = %sandbox_id, "stopping an instance left running that no container claims");
        let dir = shared.instances_dir().join(&sandbox_id);
        let container = Container::load(shared.state_dir().join(&sandbox_id)).ok();
        match &network {
            Some(network) => {
                let attachment = match record.address.ip() {
                    IpAddr::V4(address) => {
                        network.adopt(address, &veth_name(&sandbox_id)).await.ok()
                    }
                    IpAddr::V6(_) => None,
                };
                let resources = Resources {
                    container,
                    attachment,
                    dir: Some(InstanceDir::existing(dir)),
                    network: network.clone(),
                };
                // Its cgroups can only go once its processes have.
                match instance::reap_on_exit(Pid::from_raw(record.pid)) {
                    Ok(exit) if record.is_running() => resources.discard_after_exit(&exit).await,
                    _ => resources.discard().await,
                }
            }
            None => {
                if let Some(mut container) = container {
                    let _ = container.kill(nix::sys::signal::Signal::SIGKILL, true);
                    let _ = tokio::task::spawn_blocking(move || container.delete(true)).await;
                }
                let _ =
                    tokio::task::spawn_blocking(move || super::rootfs::remove_instance_dir(&dir))
                        .await;
            }
        }
    }
}
