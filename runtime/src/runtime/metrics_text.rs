//! What `/metrics` shows: node-wide series, and each container's for those who
//! may see them.

use super::*;

impl Runtime {
    /// Prometheus text for `/metrics`.
    ///
    /// `reader` decides whose series it holds: every container's for an admin or a
    /// token with the `metrics` scope, none (node-wide series only) otherwise, so
    /// that one tenant never reads another's container ids and traffic.
    pub fn metrics_text(&self, reader: Option<&Caller>) -> String {
        let every_container = reader.is_some_and(|caller| {
            caller.role == crate::model::Role::Admin || caller.scopes.contains(Scope::Metrics)
        });
        let services = self.inner.containers.all();
        let instances: usize = services.iter().map(|s| s.instance_count()).sum();
        let mut text = self.inner.metrics.render(&[
            (
                "ember_containers",
                "Containers deployed.",
                services.len() as u64,
            ),
            ("ember_instances", "Instances running.", instances as u64),
            (
                "ember_overloaded",
                "1 while the ingress sheds load (descriptors or memory past their threshold).",
                u64::from(self.inner.ingress_gate.is_shedding()),
            ),
        ]);
        if every_container {
            let per_container: Vec<_> = services.iter().map(|s| series_of(s)).collect();
            crate::metrics::render_per_container(&mut text, &per_container);
        }
        Metrics::render_store_writes(&mut text, self.inner.store.write_counts());
        crate::connections::render_metrics(
            &mut text,
            &[&self.inner.ingress_gate, &self.inner.api_gate],
        );
        text
    }

    /// Prometheus text of one container's series, for a caller who may see it.
    pub async fn container_metrics_text(
        &self,
        caller: &Caller,
        id: ContainerId,
    ) -> Result<String, RuntimeError> {
        self.accessible(caller, id).await?;
        let mut text = String::new();
        if let Some(traffic) = self.inner.containers.get(id) {
            crate::metrics::render_per_container(&mut text, &[series_of(&traffic)]);
        }
        Ok(text)
    }
}

/// One container's series, as `/metrics` shows them.
fn series_of(traffic: &ContainerTraffic) -> ContainerSeries {
    ContainerSeries {
        id: traffic.id,
        traffic: traffic.traffic(),
        decisions: traffic.decisions().collect(),
    }
}
