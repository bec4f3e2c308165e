//! `ember gpu`: the NVIDIA CDI spec generator, and the linker-cache hook its specs
//! name.

use crate::cli::GpuCommand;
use anyhow::Context;
use ember_runtime::model::GpuModel;
use ember_sandbox::cdi::ldcache;
use ember_sandbox::cdi::nvidia::{self, SystemNvidiaHost};
use std::io::Read;
use std::path::Path;

pub fn run(command: GpuCommand) -> anyhow::Result<()> {
    match command {
        GpuCommand::CdiGenerate { output } => {
            if output.as_os_str() == "-" {
                let spec = generate()?;
                println!("{}", spec.to_json());
            } else {
                generate_into(&output)?;
            }
            Ok(())
        }
        GpuCommand::UpdateLdcache { folders } => {
            let mut state = Vec::new();
            std::io::stdin()
                .read_to_end(&mut state)
                .context("reading the container's state from stdin")?;
            // A container whose image has no glibc (and so no use for the cache)
            // must still start: say what failed, and succeed.
            if let Err(e) = ldcache::update_ldcache(&state, &folders) {
                eprintln!(
                    "ember gpu update-ldcache: {e}; the driver libraries are mounted but not cached"
                );
            }
            Ok(())
        }
    }
}

fn generate() -> anyhow::Result<nvidia::GeneratedSpec> {
    let ember = std::env::current_exe().context("finding this program for the hook")?;
    let spec = nvidia::generate(&SystemNvidiaHost, &GpuModel::code_for_product, &ember)?;
    for warning in &spec.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(spec)
}

/// Generates the spec and writes it to `output`, saying what it holds.
pub fn generate_into(output: &Path) -> anyhow::Result<()> {
    let spec = generate()?;
    spec.write(output).map_err(anyhow::Error::msg)?;
    eprintln!(
        "wrote {}: {}",
        output.display(),
        spec.device_names().join(", ")
    );
    Ok(())
}
