//! `/exec/<namespace>/<pod>/<container>` and `/attach/…`: the kubelet's streaming endpoints,
//! which the API server's `pods/exec` and `pods/attach` proxy to, spoken over WebSocket with
//! the channel protocols of `channels` (v5 for kubectl 1.32 and kube-rs, v4 for the Python
//! client), or over SPDY/3.1 for client-go's SPDY executor (`stream_spdy`).
//!
//! One session, as the kubelet runs it: answer the handshake, start the command (or attach
//! to the container's streams), send an empty message on the first output channel to say the
//! streams are ready, then pump: client stdin and resizes in, stdout and stderr out. When the
//! command ends and its output is drained, the error channel gets the final `Status`
//! (Success, or Failure with the exit code) and the connection is closed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::channels::{self, Incoming, Protocol};
use super::http::{respond, RequestHead};
use crate::runtime::{ExecRequest, Runtime};

/// How long output may still arrive after the command ended (a background job holding the
/// pipe open is not waited for forever).
const DRAIN: Duration = Duration::from_secs(2);

/// What a resize message does: columns, rows.
pub type Resize = Box<dyn Fn(u16, u16) + Send + Sync>;

/// One exec or attach, whatever serves it.
pub struct Session {
    pub stdin: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Set the terminal's size (with a tty).
    pub resize: Option<Resize>,
    /// Resolves to the error channel's final Status when the command has ended.
    pub done: Pin<Box<dyn Future<Output = Vec<u8>> + Send>>,
}

/// Answer a WebSocket handshake with `protocol`, and speak WebSocket from then on.
pub async fn accept_websocket<S>(
    mut stream: S,
    leftover: Vec<u8>,
    head: &RequestHead,
    protocol: &str,
) -> std::io::Result<WebSocketStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = head.header("sec-websocket-key").unwrap_or_default();
    let accept =
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    Ok(WebSocketStream::from_partially_read(stream, leftover, Role::Server, None).await)
}

/// The last message of a session: a close with status 1000, which clients read as the
/// normal end of every stream (a close without a status is an error to client-go).
pub fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// How a session is carried.
enum Transport {
    WebSocket(Protocol),
    /// SPDY/3.1 streams with `v4.channel.k8s.io` (client-go's SPDY executor).
    Spdy,
}

/// The transport to speak, or None once the answer that says why not has been sent.
async fn negotiate<S: AsyncWrite + Unpin>(
    stream: &mut S,
    head: &RequestHead,
) -> std::io::Result<Option<Transport>> {
    match head.upgrade().as_deref() {
        Some("websocket") => {}
        Some("spdy/3.1") => {
            let versions = head.header("x-stream-protocol-version").unwrap_or_default();
            if versions
                .split(',')
                .any(|v| v.trim() == super::stream_spdy::PROTOCOL)
            {
                return Ok(Some(Transport::Spdy));
            }
            let message = format!("unable to negotiate a protocol from [{versions}]: this kubelet speaks v4.channel.k8s.io over SPDY");
            respond(stream, 400, &message).await?;
            return Ok(None);
        }
        _ => {
            respond(
                stream,
                400,
                "exec and attach need an upgrade to WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) or SPDY/3.1",
            )
            .await?;
            return Ok(None);
        }
    }
    let offered = head.header("sec-websocket-protocol").unwrap_or_default();
    let Some(protocol) = Protocol::negotiate(&offered) else {
        respond(
            stream,
            400,
            &format!("none of the offered subprotocols [{offered}] is supported: use v5.channel.k8s.io or v4.channel.k8s.io"),
        )
        .await?;
        return Ok(None);
    };
    Ok(Some(Transport::WebSocket(protocol)))
}

/// Run `session` on the negotiated transport.
async fn run<S>(
    stream: S,
    leftover: Vec<u8>,
    head: &RequestHead,
    transport: Transport,
    session: impl FnOnce() -> Session,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match transport {
        Transport::WebSocket(protocol) => {
            let ws = accept_websocket(stream, leftover, head, protocol.name()).await?;
            pump(ws, protocol, session()).await
        }
        Transport::Spdy => {
            let expected = super::stream_spdy::Expected {
                stdin: head.flag("stdin"),
                stdout: head.flag("stdout"),
                stderr: head.flag("stderr") && !head.flag("tty"),
                tty: head.flag("tty"),
            };
            super::stream_spdy::serve(stream, leftover, expected, session).await
        }
    }
}

/// `GET /exec/<namespace>/<pod>/<container>?command=…&stdin=…&stdout=…&stderr=…&tty=…`
pub async fn serve_exec<S>(
    mut stream: S,
    leftover: Vec<u8>,
    head: &RequestHead,
    runtime: &Runtime,
    target: [&str; 3],
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let [namespace, pod, container] = target;
    // Checked first, so that whichever protocol the client tries, it learns this.
    let Some(id) = runtime.find_container(namespace, pod, container) else {
        let message = format!("container not found (\"{container}\" in pod \"{namespace}/{pod}\")");
        return respond(&mut stream, 404, &message).await;
    };
    let Some(transport) = negotiate(&mut stream, head).await? else {
        return Ok(());
    };
    let tty = head.flag("tty");
    let request = ExecRequest {
        argv: head.query_all("command"),
        stdin: head.flag("stdin"),
        stdout: head.flag("stdout"),
        stderr: head.flag("stderr") && !tty,
        tty,
    };
    tracing::info!(namespace, pod, container, argv = ?request.argv, tty = request.tty, "exec");
    let session = || match runtime.exec(&id, &request) {
        Ok(mut process) => {
            let argv = request.argv.clone();
            let done = Box::pin(async move {
                use std::os::unix::process::ExitStatusExt;
                match process.child.wait().await {
                    Ok(status) => {
                        let code = status
                            .code()
                            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                        if code == 0 {
                            channels::success_status()
                        } else {
                            channels::exit_code_status(&argv, code)
                        }
                    }
                    Err(e) => {
                        channels::internal_error_status(&format!("waiting for the command: {e}"))
                    }
                }
            });
            Session {
                stdin: process.stdin.take(),
                stdout: process.stdout.take(),
                stderr: process.stderr.take(),
                resize: process.terminal.take().map(|terminal| {
                    Box::new(move |columns, rows| {
                        let _ = terminal.resize(columns, rows);
                    }) as Resize
                }),
                done,
            }
        }
        Err(e) => {
            let status = channels::internal_error_status(&format!(
                "error executing command in container: {e}"
            ));
            Session {
                stdin: None,
                stdout: None,
                stderr: None,
                resize: None,
                done: Box::pin(async move { status }),
            }
        }
    };
    run(stream, leftover, head, transport, session).await
}

/// Negotiate, then run `session` over the WebSocket (attach builds its session elsewhere).
pub async fn serve_session<S>(
    mut stream: S,
    leftover: Vec<u8>,
    head: &RequestHead,
    session: impl FnOnce() -> Result<Session, String>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session = match session() {
        Ok(session) => session,
        Err(message) => return respond(&mut stream, 404, &message).await,
    };
    let Some(transport) = negotiate(&mut stream, head).await? else {
        return Ok(());
    };
    run(stream, leftover, head, transport, || session).await
}

/// Copy between the WebSocket and the session until the command ends or the client leaves.
async fn pump<S>(
    ws: WebSocketStream<S>,
    protocol: Protocol,
    session: Session,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Session {
        stdin,
        stdout,
        stderr,
        resize,
        mut done,
    } = session;
    let (mut sink, mut incoming) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(32);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(Message::Binary(message.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(super::stream::normal_close()).await;
        let _ = sink.close().await;
    });
    // An empty message on the first output channel: the streams are ready.
    let first = if stdout.is_some() {
        channels::STDOUT
    } else if stderr.is_some() {
        channels::STDERR
    } else {
        channels::ERROR
    };
    let _ = out_tx.send(channels::frame(first, b"")).await;
    let copiers: Vec<_> = [(channels::STDOUT, stdout), (channels::STDERR, stderr)]
        .into_iter()
        .filter_map(|(channel, reader)| Some((channel, reader?)))
        .map(|(channel, mut reader)| {
            let out = out_tx.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 32 * 1024];
                // A pty reports EIO once the command is gone: that is its end of file.
                while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                    if out
                        .send(channels::frame(channel, &buffer[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    let (stdin_tx, stdin_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let stdin_task = stdin.map(|writer| tokio::spawn(feed_stdin(writer, stdin_rx)));
    let mut stdin_tx = Some(stdin_tx);
    let status = loop {
        tokio::select! {
            status = &mut done => break Some(status),
            message = incoming.next() => {
                let data = match message {
                    Some(Ok(Message::Binary(data))) => data.to_vec(),
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(_)) => continue,
                    // The client left: the command is stopped (dropped) with the session.
                    Some(Err(_)) | None => break None,
                };
                match channels::parse(protocol, &data) {
                    Incoming::Stdin(bytes) => {
                        if let Some(tx) = &stdin_tx {
                            let _ = tx.send(bytes.to_vec());
                        }
                    }
                    Incoming::Resize { width, height } => {
                        if let Some(resize) = &resize {
                            resize(width, height);
                        }
                    }
                    Incoming::Closed(channels::STDIN) => stdin_tx = None,
                    Incoming::Closed(_) | Incoming::Ignored => {}
                }
            }
        }
    };
    drop(stdin_tx);
    if let Some(task) = stdin_task {
        task.abort();
    }
    // Stops the command if it still runs (the client left).
    drop(done);
    match status {
        Some(status) => {
            for copier in copiers {
                let abort = copier.abort_handle();
                if tokio::time::timeout(DRAIN, copier).await.is_err() {
                    abort.abort();
                }
            }
            let _ = out_tx.send(channels::frame(channels::ERROR, &status)).await;
        }
        None => copiers.iter().for_each(|copier| copier.abort()),
    }
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// Write what the client sends to the command's stdin; close it when the client does.
async fn feed_stdin(
    mut writer: Box<dyn AsyncWrite + Send + Unpin>,
    mut input: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(bytes) = input.recv().await {
        if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v5 session end to end over an in-memory WebSocket: the ready message, output,
    /// stdin up to the client's close signal, the final Status, and a normal close.
    #[tokio::test]
    async fn a_v5_session_carries_streams_then_status_then_close() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let (stdin_ours, mut stdin_theirs) = tokio::io::duplex(1024);
        let (stdin_done_tx, stdin_done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut got = Vec::new();
            let _ = stdin_theirs.read_to_end(&mut got).await;
            let _ = stdin_done_tx.send(got);
        });
        let session = Session {
            stdin: Some(Box::new(stdin_ours)),
            stdout: Some(Box::new(&b"hello\n"[..])),
            stderr: Some(Box::new(&b"oops\n"[..])),
            resize: None,
            // The "command" ends once its stdin is closed, with the input as its exit code.
            done: Box::pin(async move {
                let got = stdin_done_rx.await.unwrap_or_default();
                channels::exit_code_status(&["cat".to_string()], got.len() as i32)
            }),
        };
        let served = tokio::spawn(pump(server, Protocol::V5, session));
        client
            .send(Message::Binary(
                channels::frame(channels::STDIN, b"abc").into(),
            ))
            .await
            .unwrap();
        client
            .send(Message::Binary(
                vec![channels::CLOSE, channels::STDIN].into(),
            ))
            .await
            .unwrap();
        let mut received: Vec<Vec<u8>> = Vec::new();
        let mut closed_normally = false;
        while let Some(Ok(message)) = client.next().await {
            match message {
                Message::Binary(data) => received.push(data.to_vec()),
                Message::Close(frame) => {
                    closed_normally = frame.is_some_and(|f| u16::from(f.code) == 1000);
                    break;
                }
                _ => {}
            }
        }
        served.await.unwrap().unwrap();
        assert_eq!(received[0], vec![channels::STDOUT], "the ready message");
        assert!(received.contains(&channels::frame(channels::STDOUT, b"hello\n")));
        assert!(received.contains(&channels::frame(channels::STDERR, b"oops\n")));
        let last = received.last().unwrap();
        assert_eq!(last[0], channels::ERROR, "the Status comes last");
        let status: serde_json::Value = serde_json::from_slice(&last[1..]).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "3");
        assert!(closed_normally);
    }
}
