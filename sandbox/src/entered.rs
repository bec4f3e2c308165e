//! Commands run inside a running instance, for SSH sessions: what is asked for and
//! what comes back.

use std::os::fd::{AsRawFd, OwnedFd};
use tokio::io::{AsyncRead, AsyncWrite};

/// A command to run inside an instance.
#[derive(Debug, Clone, Default)]
pub struct EnterRequest {
    /// A shell command line; `None` starts an interactive shell.
    pub command: Option<String>,
    /// A pseudo-terminal of this size; `None` runs on pipes.
    pub terminal: Option<TerminalSize>,
    /// The client's `TERM`.
    pub term: Option<String>,
}

/// A terminal's size in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub columns: u16,
    /// Rows.
    pub rows: u16,
}

impl TerminalSize {
    pub(crate) fn window(self) -> nix::pty::Winsize {
        nix::pty::Winsize {
            ws_row: self.rows,
            ws_col: self.columns,
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// A command running inside an instance. Dropping it kills the command.
pub struct EnteredProcess {
    /// The process that joined the instance; it exits with the command's status.
    pub child: tokio::process::Child,
    /// The command's standard input (its terminal, when it has one).
    pub input: Box<dyn AsyncWrite + Send + Unpin>,
    /// Its standard output (with its errors, on a terminal).
    pub output: Box<dyn AsyncRead + Send + Unpin>,
    /// Its standard error, when it runs on pipes.
    pub errors: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Its terminal, when it has one.
    pub terminal: Option<Terminal>,
}

/// The controlling side of an entered command's terminal.
pub struct Terminal {
    controller: OwnedFd,
}

impl Terminal {
    pub(crate) fn new(controller: OwnedFd) -> Self {
        Self { controller }
    }

    /// Tells the command its window changed size.
    pub fn resize(&self, size: TerminalSize) -> std::io::Result<()> {
        let window = size.window();
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
        let rc = unsafe { libc::ioctl(self.controller.as_raw_fd(), libc::TIOCSWINSZ, &window) };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
