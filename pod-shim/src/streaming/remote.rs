//! Exec and attach sessions against Docker, whatever protocol carries them: the protocol side
//! hands over channels for stdin, stdout, stderr and terminal sizes, this side runs the
//! command (or attaches to the container) and reports how it ended. When the client goes away
//! first, an exec'd process is killed (Docker's API cannot stop an exec; its PID can be);
//! an attach simply detaches.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptions;
use bytes::Bytes;
use dockpod_proto::cri::{AttachRequest, ExecRequest};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::inbound::Inbound;
use super::sessions::Pending;
use crate::docker::Engine;
use crate::exec::{Attach, Exec, InputSink, OutputStream};

/// A terminal size as the Kubernetes clients send it on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The session's ends on the client's side.
pub struct Io {
    /// Ends at the client's EOF on stdin.
    pub stdin: Option<Inbound>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Becomes true when the client's connection is gone.
    pub closed: watch::Receiver<bool>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The command exited with this non-zero code.
    Exit(i64),
    Failed(String),
    /// The client went away first.
    ClientGone,
}

/// Runs an exec or attach session; a port-forward is no remote command.
pub async fn run(engine: &Engine, pending: &Pending, io: Io) -> Outcome {
    use dockpod_proto::failpoints::{armed, STREAM_SESSION_PANIC};
    if let Pending::Exec(req) = pending {
        if req.cmd == ["dockpod-failpoint", "panic"] && armed(STREAM_SESSION_PANIC) {
            panic!("failpoint {STREAM_SESSION_PANIC}");
        }
    }
    match pending {
        Pending::Exec(req) => exec(engine, req, io).await,
        Pending::Attach(req) => attach(engine, req, io).await,
        Pending::PortForward(_) => Outcome::Failed("a port-forward is no remote command".into()),
    }
}

/// Runs `req.cmd` in its container with the client's streams attached.
pub async fn exec(engine: &Engine, req: &ExecRequest, io: Io) -> Outcome {
    let attach = Attach {
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr,
        tty: req.tty,
    };
    let (exec, output, input) =
        match Exec::start(engine, &req.container_id, req.cmd.clone(), attach).await {
            Ok(started) => started,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
    let exec = std::sync::Arc::new(exec);
    let resize = {
        let exec = exec.clone();
        move |size: TermSize| {
            let exec = exec.clone();
            async move { exec.resize(size.height, size.width).await }
        }
    };
    match pump(output, input, io, resize).await {
        Pumped::ClientGone => {
            exec.kill().await;
            Outcome::ClientGone
        }
        Pumped::Failed(e) => {
            exec.kill().await;
            Outcome::Failed(e)
        }
        Pumped::Ended => match exec.exit_code().await {
            Ok(0) => Outcome::Success,
            Ok(code) => Outcome::Exit(code),
            Err(e) => Outcome::Failed(format!("reading the exec's exit code: {e}")),
        },
    }
}

/// Attaches the client's streams to the container's main process until it exits or the
/// client leaves.
pub async fn attach(engine: &Engine, req: &AttachRequest, io: Io) -> Outcome {
    let options = AttachContainerOptions {
        stdin: req.stdin,
        stdout: req.stdout,
        stderr: req.stderr && !req.tty,
        stream: true,
        logs: false,
        detach_keys: None,
    };
    let (output, input) = match engine.attach(&req.container_id, options).await {
        Ok(attached) => attached,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let resize = {
        let engine = engine.clone();
        let id = req.container_id.clone();
        move |size: TermSize| {
            let engine = engine.clone();
            let id = id.clone();
            async move {
                if let Err(e) = engine.resize_tty(&id, size.height, size.width).await {
                    tracing::debug!(error = %e, "resizing a container's terminal");
                }
            }
        }
    };
    match pump(output, input, io, resize).await {
        Pumped::Ended => Outcome::Success,
        Pumped::ClientGone => Outcome::ClientGone,
        Pumped::Failed(e) => Outcome::Failed(e),
    }
}

enum Pumped {
    /// Docker's output ended (the process exited).
    Ended,
    ClientGone,
    Failed(String),
}

/// Moves bytes between the client's channels and Docker's hijacked connection until Docker's
/// output ends or the client goes away.
async fn pump<F, Fut>(
    mut output: OutputStream,
    mut input: InputSink,
    io: Io,
    apply_size: F,
) -> Pumped
where
    F: Fn(TermSize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Io {
        mut stdin,
        stdout,
        stderr,
        resize: mut sizes,
        mut closed,
    } = io;
    let mut stdin_open = stdin.is_some();
    loop {
        // In this order: a terminal size the client sent before some input is applied before
        // that input reaches the process (the streams are separate, but the session hands
        // their frames over in the order they came), so `stty size` typed after a resize
        // sees the new size.
        tokio::select! {
            biased;
            () = until_closed(&mut closed) => return Pumped::ClientGone,
            size = recv_opt(&mut sizes) => match size {
                Some(size) => apply_size(size).await,
                None => sizes = None,
            },
            chunk = recv_inbound(&mut stdin), if stdin_open => match chunk {
                Some(bytes) => {
                    if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                        stdin_open = false;
                    }
                }
                None => {
                    // The client's EOF reaches the process as the end of its stdin.
                    stdin_open = false;
                    let _ = input.shutdown().await;
                }
            },
            item = output.next() => {
                let (sink, message) = match item {
                    None => return Pumped::Ended,
                    Some(Err(e)) => return Pumped::Failed(format!("reading the output: {e}")),
                    Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => (&stdout, message),
                    Some(Ok(LogOutput::StdErr { message })) => (&stderr, message),
                    Some(Ok(LogOutput::StdIn { .. })) => continue,
                };
                // A client that did not ask for a stream gets none of it.
                if let Some(sink) = sink {
                    if sink.send(message).await.is_err() {
                        return Pumped::ClientGone;
                    }
                }
            }
        }
    }
}

/// Returns once the client's connection is gone (never, if nobody can tell).
async fn until_closed(closed: &mut watch::Receiver<bool>) {
    if closed.wait_for(|c| *c).await.map(|_| ()).is_err() {
        std::future::pending::<()>().await;
    }
}

/// Receives from an optional channel; an absent channel never yields.
async fn recv_inbound(rx: &mut Option<Inbound>) -> Option<Bytes> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Bytes of an unfinished resize message held for its rest; a real one is about 30.
pub const RESIZE_PENDING: usize = 4096;

/// Decodes the resize stream: JSON objects, one after another, possibly cut anywhere.
#[derive(Default)]
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    /// Bytes held back waiting for the rest of a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<TermSize> {
        self.buf.extend_from_slice(bytes);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        {
            let mut stream =
                serde_json::Deserializer::from_slice(&self.buf).into_iter::<TermSize>();
            loop {
                match stream.next() {
                    Some(Ok(size)) => {
                        sizes.push(size);
                        consumed = stream.byte_offset();
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => {
                        // Not a size: drop what was read so far.
                        consumed = self.buf.len();
                        break;
                    }
                    None => {
                        consumed = stream.byte_offset();
                        break;
                    }
                }
            }
        }
        self.buf.drain(..consumed);
        // A client cannot make this grow without bound, nor keep a large message's room.
        if self.buf.len() > RESIZE_PENDING {
            self.buf.clear();
        }
        self.buf.shrink_to(RESIZE_PENDING);
        sizes
    }
}

/// The Kubernetes `Status` object a v4/v5 client reads from the error stream.
pub fn status_json(outcome: &Outcome) -> Vec<u8> {
    let status = match outcome {
        Outcome::Success | Outcome::ClientGone => serde_json::json!({
            "metadata": {},
            "status": "Success",
        }),
        Outcome::Exit(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(message) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    status.to_string().into_bytes()
}

/// What a v1–v3 client reads from the error stream: nothing on success, else a message.
pub fn status_text(outcome: &Outcome) -> Vec<u8> {
    match outcome {
        Outcome::Success | Outcome::ClientGone => Vec::new(),
        Outcome::Exit(code) => {
            format!("command terminated with non-zero exit code: exit status {code}").into_bytes()
        }
        Outcome::Failed(message) => message.clone().into_bytes(),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_cut_anywhere() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(b"{\"Width\":80,").is_empty());
        assert_eq!(
            d.push(b"\"Height\":24}\n{\"Width\":100,\"Height\":50}"),
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 50
                }
            ]
        );
        assert!(d.push(b"garbage").is_empty());
        assert_eq!(d.push(b"{\"Width\":1,\"Height\":2}").len(), 1);
    }

    #[test]
    fn exit_codes_in_the_kubernetes_status_format() {
        let json: serde_json::Value =
            serde_json::from_slice(&status_json(&Outcome::Exit(3))).expect("json");
        assert_eq!(json["status"], "Failure");
        assert_eq!(json["reason"], "NonZeroExitCode");
        assert_eq!(json["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(json["details"]["causes"][0]["message"], "3");
        let ok: serde_json::Value =
            serde_json::from_slice(&status_json(&Outcome::Success)).expect("json");
        assert_eq!(ok["status"], "Success");
        assert!(status_text(&Outcome::Success).is_empty());
    }
}
