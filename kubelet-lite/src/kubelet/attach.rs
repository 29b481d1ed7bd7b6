//! `/attach/<namespace>/<pod>/<container>`: the running container's own streams, through its
//! shim's attach socket (see `crate::shim`). Output from the moment of attaching comes on
//! stdout and stderr; stdin goes to the container if it was started with `stdin: true`. The
//! session ends with Success when the container ends (the shim closes the socket).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::channels;
use super::http::RequestHead;
use super::stream::Session;
use crate::runtime::Runtime;
use crate::shim::ATTACH_SOCKET;

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
            format!("container \"{container}\" in pod \"{namespace}/{pod}\" not found")
        })?;
    let socket = runtime.container_dir(&id).join(ATTACH_SOCKET);
    let connected = std::os::unix::net::UnixStream::connect(&socket)
        .and_then(|s| s.set_nonblocking(true).map(|_| s))
        .and_then(tokio::net::UnixStream::from_std)
        .map_err(|e| {
            format!("container \"{container}\" cannot be attached to (is it running?): {e}")
        })?;
    let (mut from_shim, to_shim) = connected.into_split();
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
            // A client that did not ask for a stream simply never reads it: drop, don't block.
            let sink = if header[0] == channels::STDERR {
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
    Ok(Session {
        stdin: head.flag("stdin").then(|| Box::new(to_shim) as _),
        stdout: head.flag("stdout").then(|| Box::new(stdout_out) as _),
        stderr: head.flag("stderr").then(|| Box::new(stderr_out) as _),
        terminal: None,
        done: Box::pin(async move {
            let _ = ended_rx.await;
            channels::success_status()
        }),
    })
}
