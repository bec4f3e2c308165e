//! Starting the servers a bench runs (its own `ember serve`, `wasmtime serve`,
//! nginx, the loopback registry) so that they do not outlive it.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Spawns `command` so that the kernel sends it SIGTERM when this bench dies, even
/// killed outright (SIGKILL runs none of the bench's own clean-up); each of these
/// servers shuts down cleanly on SIGTERM.
///
/// The signal follows the thread that spawned the child, not the process: call
/// this only from the main thread, as `bench::run` does (everything it runs outside
/// `tokio::spawn` is polled by `block_on` on the main thread).
pub fn spawn_tied_to_bench(command: &mut Command) -> std::io::Result<Child> {
    // SAFETY: the closure runs in the forked child before exec and makes a single
    // system call (prctl), which is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    command.spawn()
}
