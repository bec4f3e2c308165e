//! A guest's stdout and stderr, cut into lines for the container's log sink, as an
//! OCI instance's output is.

use crate::{LogSinkRef, LogStream};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line kept whole; a longer one is cut into pieces this long.
const MAX_LINE: usize = 16 * 1024;

/// One of an instance's output streams.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    sink: LogSinkRef,
    instance: Arc<str>,
    stream: LogStream,
}

impl GuestOutput {
    pub(crate) fn new(sink: LogSinkRef, instance: Arc<str>, stream: LogStream) -> Self {
        Self {
            sink,
            instance,
            stream,
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            output: self.clone(),
            pending: Vec::new(),
        })
    }
}

/// Writes complete lines to the sink as they come; what is left of a last line
/// without its newline goes when the stream is dropped.
struct LineWriter {
    output: GuestOutput,
    pending: Vec<u8>,
}

impl LineWriter {
    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        self.output
            .sink
            .0
            .line(&self.output.instance, self.output.stream, text);
    }

    fn take(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if byte == b'\n' {
                let line = std::mem::take(&mut self.pending);
                self.emit(&line);
            } else {
                self.pending.push(byte);
                if self.pending.len() >= MAX_LINE {
                    let line = std::mem::take(&mut self.pending);
                    self.emit(&line);
                }
            }
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take(bytes);
        Poll::Ready(Ok(bytes.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogSink;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Lines(Mutex<Vec<(String, LogStream, String)>>);

    impl LogSink for Lines {
        fn line(&self, instance: &str, stream: LogStream, text: &str) {
            self.0.lock().push((instance.into(), stream, text.into()));
        }
    }

    #[test]
    fn writes_become_lines_and_a_last_partial_line_is_kept() {
        let lines = Arc::new(Lines::default());
        let output = GuestOutput::new(LogSinkRef(lines.clone()), "i-1".into(), LogStream::Stderr);
        let mut writer = LineWriter {
            output,
            pending: Vec::new(),
        };
        writer.take(b"one\r\ntw");
        writer.take(b"o\nthree");
        drop(writer);
        let got: Vec<_> = lines.0.lock().iter().map(|l| l.2.clone()).collect();
        assert_eq!(got, ["one", "two", "three"]);
        assert!(
            lines
                .0
                .lock()
                .iter()
                .all(|l| l.0 == "i-1" && l.1 == LogStream::Stderr)
        );
    }
}
