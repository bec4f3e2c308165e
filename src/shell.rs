//! `ember exec` and `ember ssh`: a command or a shell inside one instance, over
//! Ember's own SSH server with one-off credentials from the instances API
//! (`GET .../instances/{id}/ssh`, document 004).

use crate::cli::{ClientArgs, ExecArgs, SshArgs};
use crate::client::ApiClient;
use crate::commands::{find, text};
use anyhow::{Context, bail};
use russh::ChannelMsg;
use std::io::Write;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

pub async fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let session = login(&args.client, &args.container, args.instance.as_deref()).await?;
    let mut channel = session
        .channel_open_session()
        .await
        .context("opening an SSH channel")?;
    let command = args
        .command
        .iter()
        .map(|word| quoted(word))
        .collect::<Vec<_>>()
        .join(" ");
    channel
        .exec(true, command)
        .await
        .context("running the command")?;
    let status = relay_output(&mut channel).await?;
    exit_with(status)
}

pub async fn ssh(args: SshArgs) -> anyhow::Result<()> {
    let session = login(&args.client, &args.container, args.instance.as_deref()).await?;
    let mut channel = session
        .channel_open_session()
        .await
        .context("opening an SSH channel")?;
    let stdin = std::io::stdin();
    let terminal = std::io::IsTerminal::is_terminal(&stdin);
    // The local terminal in raw mode for the session (keys go through as typed),
    // given back as it was when the session ends.
    let _raw = if terminal {
        let (columns, rows) = terminal_size();
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".into());
        channel
            .request_pty(true, &term, columns, rows, 0, 0, &[])
            .await
            .context("asking for a terminal")?;
        Some(RawMode::enter()?)
    } else {
        None
    };
    channel
        .request_shell(true)
        .await
        .context("starting the shell")?;
    let writer = channel.make_writer();
    let input = tokio::spawn(async move {
        let mut writer = writer;
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 4096];
        while let Ok(read) = stdin.read(&mut buffer).await {
            if read == 0 {
                break;
            }
            if tokio::io::AsyncWriteExt::write_all(&mut writer, &buffer[..read])
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut writer).await;
    });
    let status = relay_output(&mut channel).await;
    input.abort();
    drop(_raw);
    exit_with(status?)
}

/// Logs in to the instance of `container` named by `instance` (or its first
/// running one) with new credentials from the API.
async fn login(
    client_args: &ClientArgs,
    container: &str,
    instance: Option<&str>,
) -> anyhow::Result<russh::client::Handle<ApiIssuedServer>> {
    let client = ApiClient::new(client_args)?;
    let container = find(&client, container).await?;
    let id = text(&container["id"]);
    let listed = client
        .get(&format!("/v1/containers/{id}/instances?page[size]=100"))
        .await?;
    let instances = listed["data"].as_array().cloned().unwrap_or_default();
    let chosen = instances
        .iter()
        .find(|i| match instance {
            Some(wanted) => text(&i["id"]).starts_with(wanted),
            None => i["state"]["current"] == "running",
        })
        .with_context(|| match instance {
            Some(wanted) => format!("{} has no instance {wanted}", text(&container["name"])),
            None => format!("{} has no running instance", text(&container["name"])),
        })?;
    let instance = text(&chosen["id"]);
    let credentials = client
        .get(&format!("/v1/containers/{id}/instances/{instance}/ssh"))
        .await?;
    let credentials = &credentials["data"];
    let address = text(&credentials["address"]);
    let config = Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, address.as_str(), ApiIssuedServer)
        .await
        .with_context(|| format!("connecting to Ember's SSH server at {address}"))?;
    let outcome = session
        .authenticate_password(text(&credentials["user"]), text(&credentials["secret"]))
        .await
        .context("logging in")?;
    if !outcome.success() {
        bail!("Ember's SSH server refused the credentials it just gave");
    }
    Ok(session)
}

/// The server whose address the API gave with the credentials: its host key is
/// not checked against a list (the credentials are one-off, made for this call
/// over the authenticated API).
pub struct ApiIssuedServer;

impl russh::client::Handler for ApiIssuedServer {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::ssh_key::PublicKey,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Copies the channel's output to stdout and stderr until it closes; the
/// command's exit status.
async fn relay_output(
    channel: &mut russh::Channel<russh::client::Msg>,
) -> anyhow::Result<Option<u32>> {
    let mut status = None;
    while let Some(message) = channel.wait().await {
        match message {
            ChannelMsg::Data { data } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                out.flush()?;
            }
            ChannelMsg::ExtendedData { data, .. } => {
                let mut err = std::io::stderr().lock();
                err.write_all(&data)?;
                err.flush()?;
            }
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            _ => {}
        }
    }
    Ok(status)
}

/// Ends this process with the remote command's status (1 when it gave none).
fn exit_with(status: Option<u32>) -> anyhow::Result<()> {
    match status {
        Some(0) => Ok(()),
        Some(code) => std::process::exit(i32::try_from(code).unwrap_or(1)),
        None => bail!("the command ended without an exit status"),
    }
}

/// `word` quoted for a POSIX shell when it needs to be.
fn quoted(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The local terminal's size, columns and rows (80x24 when unknown).
fn terminal_size() -> (u32, u32) {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize it is given.
    let read = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut size) };
    if read == 0 && size.ws_col > 0 {
        (u32::from(size.ws_col), u32::from(size.ws_row))
    } else {
        (80, 24)
    }
}

/// The terminal in raw mode until dropped.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("reading the terminal's mode")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("setting the terminal raw")?;
        Ok(Self(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_a_shell_would_split_or_expand_them() {
        assert_eq!(quoted("ls"), "ls");
        assert_eq!(quoted("/tmp/a.txt"), "/tmp/a.txt");
        assert_eq!(quoted("two words"), "'two words'");
        assert_eq!(quoted("$HOME"), "'$HOME'");
        assert_eq!(quoted("it's"), r"'it'\''s'");
        assert_eq!(quoted(""), "''");
    }
}
