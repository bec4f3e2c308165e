//! Moving an instance to a new sandbox under the same identity (a migration within
//! the node), without failing a request.

use super::*;

impl ContainerTraffic {
    /// Recreates the running instance `id` under the same identity, as a migration
    /// within this node: a new sandbox starts beside the old one and takes its place
    /// once it serves; the old one stops when its last request is done, so no
    /// request fails. Returns the work, to run as a job.
    pub(crate) fn replace_instance(
        self: &Arc<Self>,
        id: InstanceId,
    ) -> Result<impl Future<Output = Result<(), String>> + Send + 'static + use<>, Refusal> {
        let found = self.pool.lock().lifecycle.ready_one(id).cloned();
        let old = found.ok_or_else(|| self.refusal_for(id))?;
        let revision = self.serving_revision().ok_or(Refusal::NotServing)?;
        let service = self.clone();
        Ok(async move { service.run_replacement(old, revision).await })
    }

    pub(super) async fn run_replacement(
        self: &Arc<Self>,
        old: Arc<LiveInstance>,
        revision: Arc<ServingRevision>,
    ) -> Result<(), String> {
        let id = old.id;
        let placement = self
            .room_for(id, &revision)
            .await
            .ok_or("the container stopped serving before the new sandbox had room")?;
        let gpus = placement.gpu_devices();
        let instance = revision
            .prepared
            .start_with_devices(&id.to_string(), &gpus)
            .await
            .map_err(|e| format!("the new sandbox did not start: {e}"))?;
        let exit = instance.exit_signal();
        let new = Arc::new(LiveInstance::new(
            old.identity(),
            &revision,
            instance,
            old.pinned,
            placement,
            self.clock.now(),
        ));
        {
            let mut pool = self.pool.lock();
            if let Err(new) = pool.lifecycle.swap_sandbox(&old, new.clone()) {
                drop(pool);
                self.discard(new);
                return Err(format!(
                    "instance {id} stopped or ended while its new sandbox started"
                ));
            };
            self.watch_health(&new, exit, &revision);
            self.journal_started(&new);
            self.dispatch(&mut pool);
        }
        tracing::info!(container = %self.id, instance = %id, "instance moved to a new sandbox");
        // Requests under way on the old sandbox finish there; none new reach it.
        old.drained(self.request_limit()).await;
        let (stopped, done) = oneshot::channel();
        let retired = old.instance.clone();
        drop(old);
        let journal = self.journal.clone();
        self.background.spawn_stop(async move {
            retired.stop().await;
            if let Some(sandbox) = retired.sandbox_id() {
                journal.stopped(sandbox);
            }
            let _ = stopped.send(());
        });
        let _ = done.await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_replaced_instance_keeps_its_id_and_its_old_sandbox_finishes_its_requests() {
        let (service, starts) = container_traffic(Settings::default());
        let held = service.acquire(Duration::from_secs(5)).await.unwrap();
        let id = live(&service)[0].id;
        let work = tokio::spawn(service.replace_instance(id).unwrap());
        // The new sandbox takes the requests while the old one finishes its own.
        let next = loop {
            let lease = service.acquire(Duration::from_secs(5)).await.unwrap();
            if !Arc::ptr_eq(lease.instance(), held.instance()) {
                break lease;
            }
            drop(lease);
            if work.is_finished() {
                panic!("{:?}", work.await);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !work.is_finished(),
            "the old sandbox still serves a request"
        );
        drop(held);
        work.await.unwrap().unwrap();
        drop(next);
        let instances = live(&service);
        assert_eq!(instances.len(), 1);
        assert_eq!(instances[0].id, id);
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        assert!(matches!(
            service.replace_instance(InstanceId::generate()),
            Err(Refusal::NotFound)
        ));
    }
}
