//! Instance starts: room on the node, then the sandbox; and instances adopted from an earlier run.

use super::*;
use crate::node::Waiting;

/// The outcome of one instance start, for those who wait on it.
pub(crate) type StartOutcome = watch::Receiver<Option<Result<(), Arc<str>>>>;

impl ContainerTraffic {
    /// Starts one instance of `revision` in its own task (so a client that gives up does
    /// not cancel a start others wait for): first room on the node, then the sandbox.
    pub(super) fn start_instance(
        self: &Arc<Self>,
        pool: &mut Pool,
        revision: Arc<ServingRevision>,
        pinned: bool,
        cold: bool,
    ) -> StartOutcome {
        let identity = Identity {
            id: InstanceId::generate(),
            ordinal: self.next_ordinal.fetch_add(1, Ordering::Relaxed),
            created: SystemTime::now(),
        };
        pool.lifecycle
            .begin_start(identity, revision.number, pinned);
        self.spawn_start(identity, revision, pinned, cold)
    }

    /// Runs the start of `identity`, already starting in the lifecycle table.
    pub(super) fn spawn_start(
        self: &Arc<Self>,
        identity: Identity,
        revision: Arc<ServingRevision>,
        pinned: bool,
        cold: bool,
    ) -> StartOutcome {
        let (done_tx, done) = watch::channel(None);
        let service = self.clone();
        self.background.spawn(async move {
            let outcome = service.run_start(identity, &revision, pinned, cold).await;
            done_tx.send_replace(Some(outcome));
        });
        done
    }

    pub(super) async fn run_start(
        self: &Arc<Self>,
        identity: Identity,
        revision: &Arc<ServingRevision>,
        pinned: bool,
        cold: bool,
    ) -> Result<(), Arc<str>> {
        let id = identity.id;
        // After an instance ended on its own, the next start waits out the backoff.
        let wait = self.restarts.lock().wait_at(self.clock.now());
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
        let Some(placement) = self.room_for(id, revision).await else {
            self.pool.lock().lifecycle.forget_start(id);
            return Err("the instance was no longer wanted".into());
        };
        let began = Instant::now();
        let instance_name = id.to_string();
        let gpus = placement.gpu_devices();
        let result = match revision
            .prepared
            .start_with_devices(&instance_name, &gpus)
            .await
        {
            // Up, but it takes requests only once its probes pass.
            Ok(instance) => match probes::until_ready(instance.as_ref(), &revision.probes).await {
                Ok(()) => Ok(instance),
                Err(why) => {
                    instance.stop().await;
                    Err(ember_sandbox::SandboxError::start(why))
                }
            },
            Err(e) => Err(e),
        };
        let took = began.elapsed();
        let mut pool = self.pool.lock();
        match result {
            Ok(instance) => {
                if cold {
                    self.metrics.cold_start(revision.kind, took);
                }
                tracing::info!(container = %self.id, instance = %id, revision = revision.number, took_us = took.as_micros() as u64, pinned, "instance started");
                let exit = instance.exit_signal();
                let live = Arc::new(LiveInstance::new(
                    identity,
                    revision,
                    instance,
                    pinned,
                    placement,
                    self.clock.now(),
                ));
                // Deleted (or shutting down, or its instances removed) while it
                // started: it stops at once.
                let wanted = !self.is_unavailable();
                if let Err(live) = pool.lifecycle.finish_start(live.clone(), wanted) {
                    drop(pool);
                    self.stop_all(vec![live]);
                    return Err("the instance was removed while it started".into());
                }
                self.watch_health(&live, exit, revision);
                self.journal_started(&live);
                self.dispatch(&mut pool);
                Ok(())
            }
            Err(e) => {
                pool.lifecycle.forget_start(id);
                drop(placement);
                if self.is_retired(revision) {
                    // Abandoned: the container was deleted, the runtime is stopping or
                    // another revision took over. Not a failure to back off from.
                    return Err(Arc::from(e.to_string()));
                }
                tracing::warn!(container = %self.id, error = %e, "instance failed to start");
                self.record_failed_start(&format!("an instance failed to start: {e}"));
                let reason: Arc<str> = Arc::from(e.to_string());
                // Waiting requests learn why, unless another instance may yet serve them.
                let number = revision.number;
                let hope = pool.lifecycle.count_present(|r, _| r == number) > 0;
                if !hope {
                    for waiter in pool.queue.drain(..) {
                        let _ = waiter.send(Err(ActivationError::StartFailed(reason.clone())));
                    }
                }
                Err(reason)
            }
        }
    }

    /// Room on the node for instance `id` of `revision`, once there is some (its
    /// state says why it waits); `None` if the revision retires first.
    pub(super) async fn room_for(
        &self,
        id: InstanceId,
        revision: &ServingRevision,
    ) -> Option<Placement> {
        self.node
            .place(
                self.id,
                self.listing().owner,
                &revision.request,
                revision.ephemeral_storage_bytes,
                |note| self.note_waiting(id, note),
                || self.is_retired(revision),
            )
            .await
    }

    /// Records why instance `id` waits. A start its tenant's quota holds back,
    /// with no instance ready to serve, fails the waiting requests at once (503
    /// with Retry-After) instead of leaving them to time out; so do the requests
    /// that come while it waits.
    pub(super) fn note_waiting(&self, id: InstanceId, note: Option<Waiting>) {
        let reason = note.as_ref().map(Waiting::reason);
        if let Some(reason) = &reason {
            tracing::info!(container = %self.id, instance = %id, note = reason.as_str(), "instance waits for room");
        }
        let mut pool = self.pool.lock();
        pool.lifecycle.note_waiting(id, reason);
        pool.held_by_quota = match note {
            Some(Waiting::TenantQuota(why)) => Some(Arc::from(why)),
            Some(Waiting::Turn) => pool.held_by_quota.take(),
            _ => None,
        };
        if let Some(why) = pool.held_by_quota.clone()
            && pool.lifecycle.ready().next().is_none()
        {
            for waiter in pool.queue.drain(..) {
                let _ = waiter.send(Err(ActivationError::QuotaExceeded(why.clone())));
            }
        }
    }

    /// Why an instance has not started, while one waits for room on the node.
    pub(crate) fn waiting_note(&self) -> Option<String> {
        self.pool
            .lock()
            .lifecycle
            .starting()
            .find_map(|s| match &s.phase {
                Phase::Starting { waiting_reason, .. } => waiting_reason.clone(),
                _ => None,
            })
    }

    /// Takes an instance an earlier run of the runtime left running into the pool,
    /// once it has room on the node: it serves requests of the revision it runs,
    /// which must be the one serving. `false` when that revision no longer serves.
    pub(crate) async fn adopt(
        self: &Arc<Self>,
        recorded: &RunningInstance,
        instance: Arc<dyn Instance>,
    ) -> bool {
        let Some(revision) = self
            .serving_revision()
            .filter(|r| r.number == recorded.revision)
        else {
            return false;
        };
        let identity = Identity {
            id: recorded.instance,
            ordinal: recorded.ordinal,
            created: recorded.created,
        };
        let Some(placement) = self.room_for(identity.id, &revision).await else {
            return false;
        };
        self.next_ordinal
            .fetch_max(recorded.ordinal + 1, Ordering::Relaxed);
        let exit = instance.exit_signal();
        let live = Arc::new(LiveInstance::new(
            identity,
            &revision,
            instance,
            recorded.pinned,
            placement,
            self.clock.now(),
        ));
        self.watch_health(&live, exit, &revision);
        let mut pool = self.pool.lock();
        pool.lifecycle.adopt(live);
        self.dispatch(&mut pool);
        true
    }

    /// Watches a live instance for its end on its own (`exit`) and, when its
    /// revision has one, its liveness probe: either has it replaced; and its
    /// readiness probe, which takes it out of rotation while it fails.
    pub(super) fn watch_health(
        self: &Arc<Self>,
        live: &Arc<LiveInstance>,
        exit: Option<watch::Receiver<Option<String>>>,
        revision: &ServingRevision,
    ) {
        if let Some(exit) = exit {
            watch_exit(self, live, exit);
        }
        if let Some(probe) = &revision.probes.liveness_probe {
            probes::watch_liveness(self, live, probe.clone());
        }
        if let Some(probe) = revision
            .probes
            .readiness_probe
            .as_ref()
            .filter(|p| p.path().is_some())
        {
            probes::watch_readiness(self, live, probe.clone());
        }
    }

    /// Records a started OCI instance, for a later runtime to adopt.
    pub(super) fn journal_started(&self, live: &LiveInstance) {
        if let Some(sandbox) = live.instance.sandbox_id() {
            self.journal.started(
                sandbox,
                RunningInstance {
                    container: self.id,
                    revision: live.revision,
                    instance: live.id,
                    ordinal: live.ordinal,
                    created: live.created,
                    pinned: live.pinned,
                },
            );
        }
    }
}

/// Tells `service` when `live` ends; stops watching once the service is gone.
fn watch_exit(
    service: &Arc<ContainerTraffic>,
    live: &Arc<LiveInstance>,
    mut exit: watch::Receiver<Option<String>>,
) {
    let background = &service.background;
    let service = Arc::downgrade(service);
    let live = Arc::downgrade(live);
    background.spawn(async move {
        let reason = exit
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        if let (Some(service), Some(reason)) = (service.upgrade(), reason) {
            service.instance_exited(&live, &reason);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn starts_wait_for_room_on_the_node() {
        // Room for two one-CPU instances.
        let (service, starts) = container_traffic(Settings {
            concurrency: 1,
            node_millicpus: 2000,
            ..Settings::default()
        });
        let tasks = acquire_many(&service, 3);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
        let waiting = service.waiting_note().expect("a start waits for room");
        assert!(waiting.contains("asks for 1 CPU, 0 available"), "{waiting}");
        let mut done = Vec::new();
        for task in tasks {
            if task.is_finished() {
                done.push(task.await.unwrap().unwrap());
            }
        }
        assert_eq!(done.len(), 2);
        // Taking an instance away makes room for the third.
        let id = service
            .instances()
            .iter()
            .find(|i| i.state == InstanceState::Running)
            .unwrap()
            .id;
        drop(done);
        service.remove_instance(id).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        assert!(service.waiting_note().is_none());
    }
}
