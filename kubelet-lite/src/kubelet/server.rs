//! The kubelet's HTTPS server on `<node IP>:10250`, what the API server proxies `kubectl logs`,
//! `exec`, `attach` and `port-forward` to: `GET /containerLogs/<namespace>/<pod>/<container>`
//! with `follow`, `previous`, `timestamps` and `tailLines`; `/exec/…` and `/attach/…` (see
//! `stream`); `/portForward/<namespace>/<pod>` (see `portforward`). Only clients with a certificate from the lab's CA get in (the
//! API server's kubelet client certificate).
//!
//! The CRI log file (`<time> <stream> <F|P> <text>`) is turned back into the text the
//! container wrote, as the kubelet's log reader does: `P` (partial) lines join the next one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;

use super::http::{read_head, respond};
use super::{portforward, stream};

use crate::runtime::{ContainerState, Runtime};

pub const PORT: u16 = 10250;
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The serving certificate, its key, and the CA that client certificates must come from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

pub async fn serve(
    address: std::net::Ipv4Addr,
    files: TlsFiles,
    runtime: Runtime,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(&files)?);
    let listener = tokio::net::TcpListener::bind((address, PORT))
        .await
        .with_context(|| format!("listening on {address}:{PORT}"))?;
    tracing::info!("serving logs, exec, attach and port-forward on {address}:{PORT}");
    let runtime = Arc::new(runtime);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (acceptor, runtime) = (acceptor.clone(), runtime.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
            match handshake {
                Ok(Ok(stream)) => {
                    if let Err(e) = handle(stream, &runtime).await {
                        tracing::debug!(%peer, "request ended: {e}");
                    }
                }
                _ => tracing::debug!(%peer, "TLS handshake failed"),
            }
        });
    }
}

fn tls_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading {}", files.cert.display()))?
        .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading {}", files.key.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.client_ca)
        .with_context(|| format!("reading {}", files.client_ca.display()))?
    {
        roots.add(ca?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

async fn handle<S>(mut stream: S, runtime: &Runtime) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Some((head, leftover)) = read_head(&mut stream).await? else {
        return Ok(());
    };
    let segments: Vec<&str> = head.path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["containerLogs", namespace, pod, container] => {
            let query: HashMap<&str, &str> = head
                .query
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            container_logs(stream, runtime, [namespace, pod, container], &query).await
        }
        ["exec", namespace, pod, container] => {
            stream::serve_exec(stream, leftover, &head, runtime, [namespace, pod, container])
                .await
        }
        ["attach", namespace, pod, container] => {
            let (namespace, pod, container) = (*namespace, *pod, *container);
            stream::serve_session(stream, leftover, &head, || {
                super::attach::session(runtime, namespace, pod, container, &head)
            })
            .await
        }
        ["portForward", namespace, pod] => {
            portforward::serve(stream, leftover, &head, runtime, namespace, pod).await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "not found: the kubelet serves /containerLogs, /exec, /attach (…/<namespace>/<pod>/<container>) and /portForward/<namespace>/<pod>",
            )
            .await
        }
    }
}

async fn container_logs<S>(
    mut stream: S,
    runtime: &Runtime,
    [namespace, pod, container]: [&str; 3],
    query: &HashMap<&str, &str>,
) -> std::io::Result<()>
where
    S: tokio::io::AsyncWrite + Unpin,
{
    let previous = query.get("previous") == Some(&"true");
    let Some((log, id)) = find_log(runtime, namespace, pod, container, previous) else {
        let which = if previous {
            "previous terminated container"
        } else {
            "container"
        };
        return respond(
            &mut stream,
            404,
            &format!("{which} \"{container}\" in pod \"{pod}\" not found"),
        )
        .await;
    };
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        .await?;
    let timestamps = query.get("timestamps") == Some(&"true");
    let tail: Option<usize> = query.get("tailLines").and_then(|n| n.parse().ok());
    let follow = query.get("follow") == Some(&"true") && !previous;
    let mut offset = 0usize;
    let mut first = true;
    loop {
        let bytes = std::fs::read(&log).unwrap_or_default();
        if bytes.len() > offset {
            // Only whole lines; a line still being written waits for the next round.
            let end = bytes[offset..]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(offset, |p| offset + p + 1);
            let mut lines: Vec<&[u8]> = bytes[offset..end]
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            if first {
                if let Some(n) = tail {
                    lines = lines.split_off(lines.len().saturating_sub(n));
                }
            }
            let mut out = Vec::new();
            for line in lines {
                out.extend(decode_cri_line(line, timestamps));
            }
            stream.write_all(&out).await?;
            stream.flush().await?;
            offset = end;
        }
        first = false;
        let running = runtime
            .container_status(&id)
            .is_ok_and(|status| status.state == ContainerState::Running);
        if !follow || !running {
            break;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
    stream.shutdown().await
}

/// The log file and container ID of `container` in the newest sandbox of `namespace/pod`;
/// with `previous`, of the attempt before the current one.
fn find_log(
    runtime: &Runtime,
    namespace: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Option<(PathBuf, String)> {
    let sandbox = runtime
        .list_pod_sandboxes()
        .into_iter()
        .filter(|s| s.config.namespace == namespace && s.config.name == pod)
        .max_by_key(|s| s.created_at)?;
    let attempts: Vec<_> = runtime
        .list_containers()
        .into_iter()
        .filter(|c| c.container.sandbox_id == sandbox.id && c.container.config.name == container)
        .collect();
    let chosen = if previous {
        attempts.iter().rev().nth(1)?
    } else {
        attempts.last()?
    };
    Some((
        chosen.container.config.log_path.clone(),
        chosen.container.id.clone(),
    ))
}

/// One CRI log line back to what the container wrote (`P` lines get no newline).
pub fn decode_cri_line(line: &[u8], timestamps: bool) -> Vec<u8> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let (Some(time), Some(_stream), Some(tag)) = (fields.next(), fields.next(), fields.next())
    else {
        return [line, b"\n"].concat();
    };
    let text = fields.next().unwrap_or_default();
    let mut out = Vec::new();
    if timestamps {
        out.extend_from_slice(time);
        out.push(b' ');
    }
    out.extend_from_slice(text);
    if tag != b"P" {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_decode_to_what_was_written() {
        assert_eq!(
            decode_cri_line(b"2026-11-23T20:07:22.1Z stdout F hello world", false),
            b"hello world\n"
        );
        assert_eq!(
            decode_cri_line(b"2026-11-23T20:07:22.1Z stderr P part", false),
            b"part"
        );
        assert_eq!(
            decode_cri_line(b"2026-11-23T20:07:22.1Z stdout F x", true),
            b"2026-11-23T20:07:22.1Z x\n"
        );
        assert_eq!(decode_cri_line(b"garbage", false), b"garbage\n");
    }
}
