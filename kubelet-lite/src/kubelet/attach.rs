//! `/attach/<namespace>/<pod>/<container>`: the running container's own streams, through its
//! shim's attach socket (see `crate::shim::attach`). Output from the moment of attaching comes
//! on stdout and stderr (one stream with a tty); stdin and resizes go to the container if it
//! was started with `stdin: true` or `tty: true`. The session ends with Success when the
//! container ends (the shim closes the socket).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channels;
use super::http::RequestHead;
use super::stream::{Resize, Session};
use crate::runtime::Runtime;
use crate::shim::attach as shim;

pub fn session(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    head: &RequestHead,
) -> Result<Session, String> {
    let id = runtime
        .find_container(namespace, pod, container)
        .ok_or_else(|| {
            format!("container not found (\"{container}\" in pod \"{namespace}/{pod}\")")
        })?;
    let socket = runtime.container_dir(&id).join(shim::ATTACH_SOCKET);
    let connected = std::os::unix::net::UnixStream::connect(&socket)
        .and_then(|s| s.set_nonblocking(true).map(|_| s))
        .and_then(tokio::net::UnixStream::from_std)
        .map_err(|e| {
            format!("container \"{container}\" cannot be attached to (is it running?): {e}")
        })?;
    let (mut from_shim, mut to_shim) = connected.into_split();
    let (mut stdout_in, stdout_out) = tokio::io::duplex(64 * 1024);
    let (mut stderr_in, stderr_out) = tokio::io::duplex(64 * 1024);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut header = [0u8; 5];
        while from_shim.read_exact(&mut header).await.is_ok() {
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let mut data = vec![0u8; length];
            if from_shim.read_exact(&mut data).await.is_err() {
                break;
            }
            // A client that did not ask for a stream never reads it: drop, don't block.
            let sink = if header[0] == shim::STDERR {
                &mut stderr_in
            } else {
                &mut stdout_in
            };
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(100), sink.write_all(&data))
                    .await;
        }
        drop((stdout_in, stderr_in));
        let _ = ended_tx.send(());
    });
    // Input goes to the shim as frames: stdin, its end, and resizes, in order.
    let (frames_tx, mut frames_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Some(frame) = frames_rx.recv().await {
            if to_shim.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let stdin = head.flag("stdin").then(|| {
        let (client_side, mut ours) = tokio::io::duplex(64 * 1024);
        let frames = frames_tx.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 32 * 1024];
            while let Ok(n @ 1..) = ours.read(&mut buffer).await {
                if frames.send(shim::frame(shim::STDIN, &buffer[..n])).is_err() {
                    return;
                }
            }
            let _ = frames.send(shim::frame(shim::CLOSE, &[shim::STDIN]));
        });
        Box::new(client_side) as _
    });
    let resize: Option<Resize> = head.flag("tty").then(|| {
        Box::new(move |columns, rows| {
            let _ = frames_tx.send(shim::frame(shim::RESIZE, &shim::size(columns, rows)));
        }) as Resize
    });
    Ok(Session {
        stdin,
        stdout: head.flag("stdout").then(|| Box::new(stdout_out) as _),
        stderr: head.flag("stderr").then(|| Box::new(stderr_out) as _),
        resize,
        done: Box::pin(async move {
            let _ = ended_rx.await;
            channels::success_status()
        }),
    })
}
