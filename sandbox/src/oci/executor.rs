//! What runs inside a container's init process last: the seccomp profile, then `execve`.

use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;
use seccompiler::BpfProgram;
use std::sync::Arc;

/// Applies Ember's seccomp profile as the very last step before executing the workload
/// (libcontainer's own seccomp support would need the C libseccomp).
#[derive(Clone)]
pub(crate) struct EmberExecutor {
    pub(crate) seccomp: Arc<BpfProgram>,
}

impl Executor for EmberExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        seccompiler::apply_filter(&self.seccomp)
            .map_err(|e| ExecutorError::Other(format!("applying the seccomp profile: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}
