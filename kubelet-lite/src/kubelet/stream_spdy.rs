//! Exec and attach over SPDY/3.1 with `v4.channel.k8s.io`, for client-go's SPDY executor
//! (`remotecommand.NewSPDYExecutor`, and kubectl with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`).
//!
//! The client opens one SPDY stream per channel, named by its `streamtype` header: `error`,
//! then `stdin`, `stdout`, `stderr` and `resize` as asked. The kubelet waits for all of them,
//! then starts the command: stdin's DATA goes to the command (its FIN closes stdin), output
//! goes out as DATA on stdout and stderr (FIN at the end), resize carries a JSON
//! `{"Width":…,"Height":…}` per line, and the final `Status` is written on the error stream.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::{self, Codec, Frame};
use super::stream::Session;

pub const PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the client has to open the streams it asked for.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);
const DRAIN: Duration = Duration::from_secs(2);

/// The streams the request's query asks for.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Expected {
    fn names(self) -> Vec<&'static str> {
        let mut names = vec!["error"];
        for (wanted, name) in [
            (self.stdin, "stdin"),
            (self.stdout, "stdout"),
            (self.stderr, "stderr"),
            (self.tty, "resize"),
        ] {
            if wanted {
                names.push(name);
            }
        }
        names
    }
}

/// Frames from the client, decoded as they arrive.
struct Frames<R> {
    reader: R,
    codec: Codec,
    buffer: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    async fn next(&mut self) -> Option<Frame> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.codec.decode(&self.buffer) {
                Ok(Some((frame, used))) => {
                    self.buffer.drain(..used);
                    return Some(frame);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!("exec over SPDY: {e}");
                    return None;
                }
            }
            match self.reader.read(&mut chunk).await {
                Ok(n @ 1..) => self.buffer.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

pub async fn serve<S>(
    mut stream: S,
    leftover: Vec<u8>,
    expected: Expected,
    session: impl FnOnce() -> Session,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: {PROTOCOL}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await?;
    let (reader, mut writer) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut frames = Frames {
        reader,
        codec: Codec::default(),
        buffer: leftover,
    };
    // Wait for every stream the client said it would open.
    let wanted = expected.names();
    let mut streams: HashMap<&'static str, u32> = HashMap::new();
    let opened = tokio::time::timeout(STREAMS_TIMEOUT, async {
        while streams.len() < wanted.len() {
            match frames.next().await? {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let reply = frames.codec.syn_reply(stream_id, false);
                    let _ = out_tx.send(reply).await;
                    let kind = headers
                        .iter()
                        .find(|(n, _)| n == "streamtype")
                        .map(|(_, v)| v.as_str())
                        .unwrap_or_default();
                    if let Some(name) = wanted.iter().find(|n| **n == kind) {
                        streams.insert(name, stream_id);
                    }
                }
                Frame::Ping { id } => {
                    let _ = out_tx.send(spdy::ping(id)).await;
                }
                _ => {}
            }
        }
        Some(())
    })
    .await;
    if !matches!(opened, Ok(Some(()))) {
        tracing::debug!(
            ?wanted,
            "exec over SPDY: the client did not open its streams"
        );
        drop(out_tx);
        let _ = writer_task.await;
        return Ok(());
    }
    let Session {
        stdin,
        stdout,
        stderr,
        resize,
        mut done,
    } = session();
    let copiers: Vec<_> = [("stdout", stdout), ("stderr", stderr)]
        .into_iter()
        .filter_map(|(name, reader)| Some((*streams.get(name)?, reader?)))
        .map(|(id, mut reader)| {
            let out = out_tx.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 32 * 1024];
                while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                    if out.send(spdy::data(id, false, &buffer[..n])).await.is_err() {
                        return;
                    }
                }
                let _ = out.send(spdy::data(id, true, b"")).await;
            })
        })
        .collect();
    let (stdin_tx, mut stdin_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let stdin_task = stdin.map(|mut writer| {
        tokio::spawn(async move {
            while let Some(bytes) = stdin_rx.recv().await {
                if writer.write_all(&bytes).await.is_err() || writer.flush().await.is_err() {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        })
    });
    let mut stdin_tx = Some(stdin_tx);
    let stdin_id = streams.get("stdin").copied();
    let resize_id = streams.get("resize").copied();
    let mut resize_buffer = Vec::new();
    let status = loop {
        tokio::select! {
            status = &mut done => break Some(status),
            frame = frames.next() => match frame {
                Some(Frame::Data { stream_id, fin, data }) if Some(stream_id) == stdin_id => {
                    if let Some(tx) = &stdin_tx {
                        if !data.is_empty() {
                            let _ = tx.send(data);
                        }
                    }
                    if fin {
                        stdin_tx = None;
                    }
                }
                Some(Frame::Data { stream_id, data, .. }) if Some(stream_id) == resize_id => {
                    resize_buffer.extend_from_slice(&data);
                    while let Some(end) = resize_buffer.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = resize_buffer.drain(..=end).collect();
                        let message = super::channels::frame(super::channels::RESIZE, &line);
                        if let (Some(resize), super::channels::Incoming::Resize { width, height }) = (
                            &resize,
                            super::channels::parse(super::channels::Protocol::V4, &message),
                        ) {
                            resize(width, height);
                        }
                    }
                }
                Some(Frame::RstStream { stream_id }) if Some(stream_id) == stdin_id => stdin_tx = None,
                Some(Frame::Ping { id }) => {
                    let _ = out_tx.send(spdy::ping(id)).await;
                }
                Some(Frame::GoAway) | None => break None,
                Some(_) => {}
            }
        }
    };
    drop(stdin_tx);
    if let Some(task) = stdin_task {
        task.abort();
    }
    drop(done);
    if let Some(status) = status {
        for copier in copiers {
            let abort = copier.abort_handle();
            if tokio::time::timeout(DRAIN, copier).await.is_err() {
                abort.abort();
            }
        }
        if let Some(error) = streams.get("error") {
            let _ = out_tx.send(spdy::data(*error, false, &status)).await;
            let _ = out_tx.send(spdy::data(*error, true, b"")).await;
        }
        // The client closes the connection once it has read the status.
        let _ = tokio::time::timeout(DRAIN, async { while frames.next().await.is_some() {} }).await;
    } else {
        copiers.iter().for_each(|copier| copier.abort());
    }
    drop(out_tx);
    let _ = tokio::time::timeout(DRAIN, writer_task).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streams_waited_for_follow_the_query() {
        let exec = Expected {
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        };
        assert_eq!(exec.names(), ["error", "stdout", "stderr"]);
        let interactive = Expected {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        assert_eq!(interactive.names(), ["error", "stdin", "stdout", "resize"]);
    }
}
