//! `/portForward/<namespace>/<pod>`: TCP connections to `127.0.0.1:<port>` inside the pod's
//! network namespace, for the API server's `pods/portforward`.
//!
//! Two wire protocols, as the real kubelet serves them:
//!
//! * **SPDY/3.1** (`X-Stream-Protocol-Version: portforward.k8s.io`), what kubectl speaks: the
//!   client opens, per local connection, an *error* stream and a *data* stream whose headers
//!   carry `streamtype`, `port` and `requestid`. Once both are there the kubelet dials the
//!   port and copies between it and the data stream; a failure is written on the error
//!   stream. kubectl 1.32 carries that SPDY session inside WebSocket binary messages
//!   (`SPDY/3.1+portforward.k8s.io`, the PortForwardWebsockets feature), and falls back to a
//!   plain SPDY upgrade where that is refused; both are served.
//! * **WebSocket** (`portforward.k8s.io`, `v4.channel.k8s.io`), what the Python client
//!   speaks: the ports come from the query (`ports=8080`), one connection each, on the
//!   channels described in `channels`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::channels;
use super::http::{respond, RequestHead};
use super::spdy::{self, Codec, Frame};
use super::stream::accept_websocket;
use crate::runtime::Runtime;

const PROTOCOL: &str = "portforward.k8s.io";
/// kubectl 1.32's first choice: the SPDY session carried in WebSocket binary messages.
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
const CHUNK: usize = 32 * 1024;

/// The pod's network namespace (a file such as `/run/netns/<name>`), from its newest sandbox.
fn pod_netns(runtime: &Runtime, namespace: &str, pod: &str) -> Option<String> {
    runtime
        .list_pod_sandboxes()
        .into_iter()
        .filter(|s| s.config.namespace == namespace && s.config.name == pod)
        .max_by_key(|s| s.created_at)
        .map(|sandbox| sandbox.netns)
}

pub async fn serve<S>(
    mut stream: S,
    leftover: Vec<u8>,
    head: &RequestHead,
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(netns) = pod_netns(runtime, namespace, pod) else {
        return respond(
            &mut stream,
            404,
            &format!("pod \"{namespace}/{pod}\" not found"),
        )
        .await;
    };
    let target = format!("{namespace}/{pod}");
    match head.upgrade().as_deref() {
        Some("spdy/3.1") => {
            let versions = head.header("x-stream-protocol-version").unwrap_or_default();
            if !versions.split(',').any(|v| v.trim() == PROTOCOL) {
                let message = format!("unable to negotiate a protocol from [{versions}]: this kubelet speaks {PROTOCOL}");
                return respond(&mut stream, 400, &message).await;
            }
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                 X-Stream-Protocol-Version: {PROTOCOL}\r\n\r\n"
            );
            stream.write_all(response.as_bytes()).await?;
            stream.flush().await?;
            tracing::info!(pod = %target, "port-forward over SPDY");
            serve_spdy(stream, leftover, netns, target).await
        }
        Some("websocket") => {
            let offered = head.header("sec-websocket-protocol").unwrap_or_default();
            if offered.split(',').any(|p| p.trim() == TUNNEL) {
                let ws = accept_websocket(stream, leftover, head, TUNNEL).await?;
                tracing::info!(pod = %target, "port-forward over SPDY tunnelled in WebSocket");
                let (ours, theirs) = tokio::io::duplex(CHUNK);
                let bridge = tokio::spawn(tunnel(ws, theirs));
                let served = serve_spdy(ours, Vec::new(), netns, target).await;
                let _ = bridge.await;
                return served;
            }
            let Some(protocol) = offered
                .split(',')
                .map(str::trim)
                .find(|p| *p == PROTOCOL || *p == "v4.channel.k8s.io")
                .map(String::from)
            else {
                let message = format!("none of the offered subprotocols [{offered}] is served: use SPDY/3.1, or WebSocket with {PROTOCOL} or v4.channel.k8s.io");
                return respond(&mut stream, 400, &message).await;
            };
            let ports: Result<Vec<u16>, _> = head
                .query_all("ports")
                .iter()
                .flat_map(|p| p.split(','))
                .map(|p| p.trim().parse::<u16>())
                .collect();
            let ports = match ports {
                Ok(ports) if !ports.is_empty() && ports.len() <= 64 => ports,
                _ => {
                    return respond(
                        &mut stream,
                        400,
                        "query parameter \"ports\" must name 1 to 64 ports",
                    )
                    .await
                }
            };
            let ws = accept_websocket(stream, leftover, head, &protocol).await?;
            tracing::info!(pod = %target, ?ports, "port-forward over WebSocket");
            serve_websocket(ws, ports, netns, target).await
        }
        _ => {
            respond(
                &mut stream,
                400,
                "port-forward needs an upgrade to SPDY/3.1 or WebSocket",
            )
            .await
        }
    }
}

/// Carry a byte stream in WebSocket binary messages, as client-go's tunnelling connection
/// does: each message is the next chunk; a normal close is the end of the stream.
async fn tunnel<S>(ws: tokio_tungstenite::WebSocketStream<S>, bytes: tokio::io::DuplexStream)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let (mut from_session, mut to_session) = tokio::io::split(bytes);
    let inbound = async move {
        while let Some(Ok(message)) = incoming.next().await {
            match message {
                Message::Binary(data) if to_session.write_all(&data).await.is_ok() => {}
                Message::Binary(_) | Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let mut buffer = vec![0u8; CHUNK];
        while let Ok(n @ 1..) = from_session.read(&mut buffer).await {
            if sink
                .send(Message::Binary(buffer[..n].to_vec().into()))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = sink.send(super::stream::normal_close()).await;
        let _ = sink.close().await;
    };
    tokio::join!(inbound, outbound);
}

/// Connect to `127.0.0.1:port` inside the network namespace file `netns`: on a thread of its
/// own that enters the namespace, so the kubelet's own namespace never changes; the socket
/// stays in the pod's namespace wherever it is used.
async fn dial(netns: String, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let connected = tokio::task::spawn_blocking(move || {
        use std::os::fd::AsFd;
        let file = std::fs::File::open(&netns)?;
        std::thread::spawn(move || {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        })
        .join()
        .map_err(|_| std::io::Error::other("the dialing thread panicked"))?
    })
    .await
    .map_err(std::io::Error::other)??;
    connected.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(connected)
}

fn forward_error(port: u16, pod: &str, error: &std::io::Error) -> String {
    format!("error forwarding port {port} to pod {pod}: failed to connect to localhost:{port} inside the pod's network namespace: {error}")
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    data: Option<u32>,
    error: Option<u32>,
    port: u16,
}

async fn serve_spdy<S>(
    stream: S,
    mut buffer: Vec<u8>,
    netns: String,
    pod: String,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer_task = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if writer.write_all(&frame).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut codec = Codec::default();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut to_pod: HashMap<u32, mpsc::UnboundedSender<Vec<u8>>> = HashMap::new();
    let mut forwards = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    'session: loop {
        loop {
            let (frame, used) = match codec.decode(&buffer) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(pod, "port-forward: {e}");
                    break 'session;
                }
            };
            buffer.drain(..used);
            match frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let header = |name: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    let Ok(port) = header("port").parse::<u16>() else {
                        let _ = out_tx.send(spdy::rst_stream(stream_id, 1)).await;
                        continue;
                    };
                    let _ = out_tx.send(codec.syn_reply(stream_id, false)).await;
                    let pair = pairs.entry(header("requestid")).or_default();
                    pair.port = port;
                    match header("streamtype").as_str() {
                        "data" => pair.data = Some(stream_id),
                        "error" => pair.error = Some(stream_id),
                        _ => {}
                    }
                    if let (Some(data), Some(error)) = (pair.data, pair.error) {
                        pairs.remove(&header("requestid"));
                        let (tx, rx) = mpsc::unbounded_channel();
                        to_pod.insert(data, tx);
                        forwards.push(tokio::spawn(forward_spdy(
                            netns.clone(),
                            pod.clone(),
                            port,
                            (data, error),
                            rx,
                            out_tx.clone(),
                        )));
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    if let Some(tx) = to_pod.get(&stream_id) {
                        if !data.is_empty() {
                            let _ = tx.send(data);
                        }
                    }
                    if fin {
                        to_pod.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id } => {
                    to_pod.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let _ = out_tx.send(spdy::ping(id)).await;
                }
                Frame::GoAway => break 'session,
                Frame::Other => {}
            }
        }
        match reader.read(&mut chunk).await {
            Ok(n @ 1..) => buffer.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    for forward in forwards {
        forward.abort();
    }
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer_task).await;
    Ok(())
}

/// One forwarded connection: the pod's port and the client's data stream, copied both ways.
async fn forward_spdy(
    netns: String,
    pod: String,
    port: u16,
    (data, error): (u32, u32),
    mut from_client: mpsc::UnboundedReceiver<Vec<u8>>,
    out: mpsc::Sender<Vec<u8>>,
) {
    let tcp = match dial(netns, port).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let message = forward_error(port, &pod, &e);
            let _ = out.send(spdy::data(error, false, message.as_bytes())).await;
            let _ = out.send(spdy::data(error, true, b"")).await;
            let _ = out.send(spdy::data(data, true, b"")).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let upstream = async move {
        while let Some(bytes) = from_client.recv().await {
            if to_pod.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let downstream = async {
        let mut buffer = vec![0u8; CHUNK];
        while let Ok(n @ 1..) = from_pod.read(&mut buffer).await {
            if out
                .send(spdy::data(data, false, &buffer[..n]))
                .await
                .is_err()
            {
                return;
            }
        }
        // The pod closed its side: end the data stream, and the error stream with nothing.
        let _ = out.send(spdy::data(data, true, b"")).await;
        let _ = out.send(spdy::data(error, true, b"")).await;
    };
    tokio::join!(upstream, downstream);
}

async fn serve_websocket<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    ports: Vec<u16>,
    netns: String,
    pod: String,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(Message::Binary(message.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(super::stream::normal_close()).await;
        let _ = sink.close().await;
    });
    let mut to_pod = Vec::new();
    let mut downstreams = Vec::new();
    for (index, port) in ports.iter().copied().enumerate() {
        let (data, error) = channels::port_channels(index);
        let _ = out_tx.send(channels::port_header(data, port)).await;
        let _ = out_tx.send(channels::port_header(error, port)).await;
        match dial(netns.clone(), port).await {
            Ok(tcp) => {
                let (mut reader, writer) = tcp.into_split();
                to_pod.push(Some(writer));
                let out = out_tx.clone();
                downstreams.push(tokio::spawn(async move {
                    let mut buffer = vec![0u8; CHUNK];
                    while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                        if out.send(channels::frame(data, &buffer[..n])).await.is_err() {
                            return;
                        }
                    }
                }));
            }
            Err(e) => {
                to_pod.push(None);
                let message = forward_error(port, &pod, &e);
                let _ = out_tx
                    .send(channels::frame(error, message.as_bytes()))
                    .await;
            }
        }
    }
    let all_done = futures_util::future::join_all(downstreams);
    tokio::pin!(all_done);
    loop {
        tokio::select! {
            _ = &mut all_done => break,
            message = incoming.next() => {
                let bytes = match message {
                    Some(Ok(Message::Binary(data))) => data.to_vec(),
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                let Some((&channel, data)) = bytes.split_first() else { continue };
                let index = usize::from(channel / 2);
                if channel % 2 == 0 && !data.is_empty() {
                    if let Some(Some(writer)) = to_pod.get_mut(index) {
                        if writer.write_all(data).await.is_err() {
                            to_pod[index] = None;
                        }
                    }
                }
            }
        }
    }
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    Ok(())
}
