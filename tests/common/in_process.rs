//! For benchmarks that run the runtime in their own process: deploying and waiting
//! for a container's state through the `Runtime` API.

use ember_runtime::Runtime;
use ember_runtime::model::{Caller, ContainerId, ContainerPatch, ContainerStatus};
use std::time::Duration;

/// Creates a container and waits until it is deployed.
pub async fn deploy(runtime: &Runtime, caller: &Caller, patch: ContainerPatch) -> ContainerId {
    let id = runtime
        .create_container(caller, patch)
        .await
        .unwrap()
        .container
        .id;
    loop {
        let view = runtime.get_container(caller, id).await.unwrap();
        match view.container.status {
            ContainerStatus::Deployed => return id,
            ContainerStatus::Failed => panic!("{:?}", view.container.status_reason),
            ContainerStatus::Deploying => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Scales the container to zero, then waits until `prepared` sandboxes are ready for
/// it (as for a container that has been idle a while).
pub async fn scale_to_zero(runtime: &Runtime, caller: &Caller, id: ContainerId, prepared: u32) {
    runtime.stop_idle_instances(caller, id).await.unwrap();
    let ready = format!("ember_container_prepared_sandboxes{{container=\"{id}\"}} {prepared}");
    while !runtime
        .metrics_text(Some(caller))
        .lines()
        .any(|l| l == ready)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
