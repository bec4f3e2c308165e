//! Moving a container's traffic by hand: all of it to one revision already
//! deployed (a rollback: no new revision, no rebuild, and requests under way
//! finish where they are), or back to the latest revision.

use super::*;

/// Where a container's traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficTarget {
    /// The latest revision, and each later one once it has deployed.
    Latest,
    /// This revision alone, whatever revisions come after it.
    Revision(u32),
}

impl Runtime {
    /// Sends all of the container's traffic to `target`. The revision must have
    /// deployed once (its image resolved); it is made ready before any request
    /// moves, and instances of the revision that served before finish their
    /// requests first.
    pub async fn set_traffic(
        &self,
        caller: &Caller,
        id: ContainerId,
        target: TrafficTarget,
    ) -> Result<ContainerView, RuntimeError> {
        let stored = self.accessible(caller, id).await?;
        let number = match target {
            TrafficTarget::Latest => stored.latest_revision,
            TrafficTarget::Revision(number) => number,
        };
        let field = "traffic[0].revisionNumber";
        let revision = self
            .inner
            .store
            .revision(id, number)
            .await?
            .ok_or_else(|| {
                RuntimeError::invalid(field, format!("the container has no revision {number}"))
            })?;
        let Some(kind) = revision.kind.filter(|_| revision.artifact.is_some()) else {
            return Err(RuntimeError::Conflict {
                code: "revision_not_deployed",
                message: format!(
                    "revision {number} has not deployed (it is deploying, or its deployment failed); traffic stays where it is"
                ),
            });
        };
        // Ready before a request moves: compiled and pre-instantiated, or its
        // sandboxes prepared.
        let prepared = self.inner.deployer.prepare(&revision).await?;
        let pinned = match target {
            TrafficTarget::Latest => None,
            TrafficTarget::Revision(number) => Some(number),
        };
        let container = self
            .edit_container(Some(caller), id, |container, service| {
                container.traffic_revision = pinned;
                container.traffic_changes += 1;
                container.serving_revision = Some(number);
                // The served revision's own settings (scaling, timeouts), not the
                // latest spec's.
                let mut as_served = container.clone();
                as_served.spec = revision.spec.clone();
                service.set_policy(self.policy(&as_served, kind));
                service.serve(ServingRevision::of(
                    &revision,
                    kind,
                    prepared,
                    container.traffic_changes,
                ));
                Ok(container.clone())
            })
            .await?;
        tracing::info!(container = %id, revision = number, pinned = pinned.is_some(), "traffic moved");
        Ok(self.view(container))
    }
}
