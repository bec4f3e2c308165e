//! Starting a command inside a running instance (for SSH sessions): a joiner
//! process (see `joiner`) with the init's environment, on a pseudo-terminal when
//! one is asked for, or on pipes.

use super::joiner::JOIN_ARG;
use crate::SandboxError;
use crate::entered::{EnterRequest, EnteredProcess, Terminal, TerminalSize};
use nix::unistd::Pid;
use std::process::Stdio;

/// Starts `request`'s command (or a shell) inside the instance whose init is `pid`.
pub(crate) fn enter(pid: Pid, request: &EnterRequest) -> Result<EnteredProcess, SandboxError> {
    let fail = |what: &str, e: std::io::Error| {
        SandboxError::guest_failed(format!("entering the instance: {what}"), e)
    };
    let environ = std::fs::read(format!("/proc/{pid}/environ"))
        .map_err(|e| fail("reading its environment", e))?;
    let mut command = tokio::process::Command::new(super::RUNNING_EXECUTABLE);
    command.arg(JOIN_ARG).arg(pid.as_raw().to_string());
    match &request.command {
        Some(line) => command.args(["/bin/sh", "-c", line]),
        None => command.arg("/bin/sh"),
    };
    command.env_clear();
    for entry in environ.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        if let Some((key, value)) = entry.split_once('=') {
            command.env(key, value);
        }
    }
    command.env("HOME", "/");
    if let Some(term) = &request.term {
        command.env("TERM", term);
    }
    command.kill_on_drop(true);
    match request.terminal {
        Some(size) => on_terminal(command, size).map_err(|e| fail("opening a terminal", e)),
        None => on_pipes(command).map_err(|e| fail("starting the joiner", e)),
    }
}

fn on_pipes(mut command: tokio::process::Command) -> std::io::Result<EnteredProcess> {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let (Some(input), Some(output), Some(errors)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("the joiner's pipes are missing"));
    };
    Ok(EnteredProcess {
        child,
        input: Box::new(input),
        output: Box::new(output),
        errors: Some(Box::new(errors)),
        terminal: None,
    })
}

fn on_terminal(
    mut command: tokio::process::Command,
    size: TerminalSize,
) -> std::io::Result<EnteredProcess> {
    let pty = nix::pty::openpty(Some(&size.window()), None).map_err(std::io::Error::from)?;
    let (controller, terminal) = (pty.master, pty.slave);
    command
        .stdin(Stdio::from(terminal.try_clone()?))
        .stdout(Stdio::from(terminal.try_clone()?))
        .stderr(Stdio::from(terminal));
    // SAFETY: setsid and ioctl are async-signal-safe; the terminal descriptor is
    // open in the child (it is its standard input).
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // Apart, so that a read waiting for output does not hold up a write.
    let reader = tokio::fs::File::from_std(std::fs::File::from(controller.try_clone()?));
    let writer = tokio::fs::File::from_std(std::fs::File::from(controller.try_clone()?));
    Ok(EnteredProcess {
        child,
        input: Box::new(writer),
        output: Box::new(reader),
        errors: None,
        terminal: Some(Terminal::new(controller)),
    })
}
