//! One SSH connection: password login against the runtime's credentials, then
//! session channels, each running a shell or a command inside the instance.

use crate::grants::GrantTarget;
use crate::runtime::Runtime;
use ember_sandbox::{EnterRequest, EnteredProcess, Terminal, TerminalSize};
use russh::server::{Auth, Handle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet, Pty};
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What ends a connection with an error: only the protocol's own failures.
pub(crate) type SessionError = russh::Error;

/// SSH's code for standard error data.
const STDERR: u32 = 1;

/// Input chunks a channel may queue for a command that is slow to read them.
const INPUT_QUEUE: usize = 64;

/// One connection; it opens the instance its login named.
pub(crate) struct Connection {
    runtime: Runtime,
    target: Option<GrantTarget>,
    channels: HashMap<ChannelId, ChannelState>,
}

/// A session channel: what it asked for, then the command it runs.
#[derive(Default)]
struct ChannelState {
    terminal_size: Option<TerminalSize>,
    term: Option<String>,
    running: Option<Running>,
}

/// A command running for a channel. Dropping it stops the command.
struct Running {
    input: Option<mpsc::Sender<Vec<u8>>>,
    terminal: Option<Terminal>,
    pump: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Connection {
    pub(crate) fn new(runtime: Runtime) -> Self {
        Self {
            runtime,
            target: None,
            channels: HashMap::new(),
        }
    }

    /// Starts the channel's shell (`command` `None`) or command.
    fn start(
        &mut self,
        channel: ChannelId,
        command: Option<String>,
        session: &mut Session,
    ) -> Result<(), SessionError> {
        let (Some(target), Some(state)) = (self.target, self.channels.get_mut(&channel)) else {
            return session.channel_failure(channel);
        };
        if state.running.is_some() {
            // One shell or command per channel (RFC 4254, 6.5).
            return session.channel_failure(channel);
        }
        let request = EnterRequest {
            command,
            terminal: state.terminal_size,
            term: state.term.clone(),
        };
        let handle = session.handle();
        match self.runtime.enter_instance(&target, &request) {
            Ok(process) => {
                session.channel_success(channel)?;
                state.running = Some(run(process, channel, handle));
            }
            Err(e) => {
                session.channel_success(channel)?;
                session.extended_data(channel, STDERR, format!("ember: {e}\r\n").into_bytes())?;
                session.exit_status_request(channel, 126)?;
                session.eof(channel)?;
                session.close(channel)?;
            }
        }
        Ok(())
    }
}

/// Pumps the command's output to the channel, and the channel's input to the
/// command; when the command ends, reports its status and closes the channel.
fn run(process: EnteredProcess, channel: ChannelId, handle: Handle) -> Running {
    let EnteredProcess {
        mut child,
        mut input,
        output,
        errors,
        terminal,
    } = process;
    let (input_tx, mut input_rx) = mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
    let pump = tokio::spawn(async move {
        let writer = async move {
            while let Some(chunk) = input_rx.recv().await {
                if input.write_all(&chunk).await.is_err() {
                    break;
                }
                let _ = input.flush().await;
            }
            // Dropping `input` closes the command's standard input.
        };
        let stdout = forward(output, None, channel, &handle);
        let stderr = async {
            if let Some(errors) = errors {
                forward(errors, Some(STDERR), channel, &handle).await;
            }
        };
        let outputs = async { tokio::join!(stdout, stderr) };
        tokio::pin!(outputs, writer);
        tokio::select! {
            _ = &mut outputs => {}
            () = &mut writer => { (&mut outputs).await; }
        }
        let status = match child.wait().await {
            Ok(status) => status.code().unwrap_or(255) as u32,
            Err(_) => 255,
        };
        let _ = handle.exit_status_request(channel, status).await;
        let _ = handle.eof(channel).await;
        let _ = handle.close(channel).await;
    });
    Running {
        input: Some(input_tx),
        terminal,
        pump,
    }
}

/// Copies `from` to the channel until it ends (a terminal's end reads as an error).
async fn forward(
    mut from: Box<dyn AsyncRead + Send + Unpin>,
    extended: Option<u32>,
    channel: ChannelId,
    handle: &Handle,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = buffer[..read].to_vec();
        let sent = match extended {
            None => handle.data(channel, chunk).await,
            Some(code) => handle.extended_data(channel, code, chunk).await,
        };
        if sent.is_err() {
            return;
        }
    }
}

fn terminal_size(columns: u32, rows: u32) -> TerminalSize {
    let clamp = |n: u32, default: u16| match u16::try_from(n) {
        Ok(0) | Err(_) => default,
        Ok(n) => n,
    };
    TerminalSize {
        columns: clamp(columns, 80),
        rows: clamp(rows, 24),
    }
}

impl russh::server::Handler for Connection {
    type Error = SessionError;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        match self.runtime.check_ssh(user, password) {
            Some(target) => {
                self.target = Some(target);
                Ok(Auth::Accept)
            }
            // Password stays on offer, so that a client may try again.
            None => Ok(Auth::Reject {
                proceed_with_methods: Some(MethodSet::from(&[MethodKind::Password][..])),
                partial_success: false,
            }),
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if self.target.is_none() {
            return Ok(false);
        }
        // The channel's messages reach the handler's methods; the channel object
        // itself is not kept (unread, it would stall the connection).
        self.channels.insert(channel.id(), ChannelState::default());
        Ok(true)
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.channels.get_mut(&channel) {
            Some(state) if state.running.is_none() => {
                state.terminal_size = Some(terminal_size(col_width, row_height));
                state.term = Some(term.to_string());
                session.channel_success(channel)
            }
            _ => session.channel_failure(channel),
        }
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, None, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start(channel, Some(command), session)
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let input = self
            .channels
            .get(&channel)
            .and_then(|state| state.running.as_ref())
            .and_then(|running| running.input.clone());
        if let Some(input) = input {
            let _ = input.send(data.to_vec()).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(running) = self
            .channels
            .get_mut(&channel)
            .and_then(|state| state.running.as_mut())
        {
            running.input = None;
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let resized = self
            .channels
            .get(&channel)
            .and_then(|state| state.running.as_ref())
            .and_then(|running| running.terminal.as_ref())
            .map(|terminal| terminal.resize(terminal_size(col_width, row_height)));
        match resized {
            Some(Ok(())) => session.channel_success(channel),
            _ => session.channel_failure(channel),
        }
    }
}
