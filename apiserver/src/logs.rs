//! `GET pods/<name>/log`: `kubectl logs [-f]`, proxied to the kubelet of the Pod's node, as
//! kube-apiserver does: HTTPS to `<node InternalIP>:10250/containerLogs/<ns>/<pod>/<container>`
//! with the API server's kubelet client certificate, and the kubelet's answer streamed back.
//!
//! The request to the kubelet is plain HTTP/1.1 with `Connection: close`, so the body is
//! everything after the response head: no chunked decoding is needed, and `-f` is simply a
//! body that ends when the kubelet closes it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::AppError;
use crate::registry;
use crate::rest::{get_existing, Target};
use crate::AppState;

/// The kubelet's port, as the real one's.
pub const KUBELET_PORT: u16 = 10250;
const HEAD_LIMIT: usize = 16 * 1024;

/// The API server's credentials for kubelets (`--kubelet-client-certificate`,
/// `--kubelet-client-key`, `--kubelet-certificate-authority`).
#[derive(Debug, Clone)]
pub struct KubeletClientFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A ready TLS client for kubelets.
#[derive(Clone)]
pub struct KubeletClient {
    pub(crate) config: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    pub fn new(files: &KubeletClientFiles) -> anyhow::Result<KubeletClient> {
        let certs = crate::tls::read_certs(&files.cert)?;
        let key = crate::tls::read_key(&files.key)?;
        let roots = crate::tls::read_roots(&files.ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)?;
        Ok(KubeletClient {
            config: Arc::new(config),
        })
    }
}

pub async fn pod_log(
    state: &AppState,
    t: &Target,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, AppError> {
    let (pod, _) = get_existing(state, t, name).await?;
    let namespace = t.namespace.clone().unwrap_or_default();
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let container = match query.get("container") {
        Some(c) if containers.contains(c) => c.clone(),
        Some(c) => {
            return Err(AppError::BadRequest(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(AppError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )))
        }
    };
    let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(AppError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let nodes = registry::find("", "v1", "nodes")
        .ok_or_else(|| AppError::Internal("no nodes resource".into()))?;
    let node_target = Target {
        info: nodes,
        namespace: None,
        name: Some(node.to_string()),
        sub: None,
        dry_run: false,
        field_manager: String::new(),
        force: false,
        user: None,
        field_validation: Default::default(),
    };
    let (node_obj, _) = get_existing(state, &node_target, node).await?;
    let address = internal_ip(&node_obj)
        .ok_or_else(|| AppError::Internal(format!("node {node} has no InternalIP address")))?;
    let Some(client) = &state.kubelet else {
        return Err(AppError::Internal(
            "this API server has no kubelet client credentials".into(),
        ));
    };
    let mut path = format!("/containerLogs/{namespace}/{name}/{container}");
    let forwarded: Vec<String> = [
        "follow",
        "previous",
        "timestamps",
        "tailLines",
        "limitBytes",
        "sinceSeconds",
    ]
    .iter()
    .filter_map(|k| query.get(*k).map(|v| format!("{k}={}", url_escape(v))))
    .collect();
    if !forwarded.is_empty() {
        path = format!("{path}?{}", forwarded.join("&"));
    }
    let (status, head_rest, stream) = request(client, address, &path).await.map_err(|e| {
        AppError::Internal(format!("reaching the kubelet of {node} at {address}: {e}"))
    })?;
    if status != 200 {
        let mut text = head_rest;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let mut rest = stream;
            let _ = rest.read_to_end(&mut text).await;
        })
        .await;
        let message = String::from_utf8_lossy(&text).trim().to_string();
        return Err(if status == 404 {
            AppError::BadRequest(message)
        } else {
            AppError::Internal(format!("kubelet of {node}: {message}"))
        });
    }
    let body = futures_util::stream::unfold(
        (Some(head_rest), stream),
        |(first, mut stream)| async move {
            if let Some(first) = first.filter(|f| !f.is_empty()) {
                return Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(first)),
                    (None, stream),
                ));
            }
            let mut buffer = vec![0u8; 8192];
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok(axum::body::Bytes::from(buffer)), (None, stream)))
                }
            }
        },
    );
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

pub(crate) fn internal_ip(node: &Value) -> Option<IpAddr> {
    node["status"]["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()?
        .parse()
        .ok()
}

/// Query values are digits and words here; escape what could break the request line.
fn url_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// GET `path` from the kubelet at `address`: status code, body bytes read with the head, and
/// the stream for the rest.
async fn request(
    client: &KubeletClient,
    address: IpAddr,
    path: &str,
) -> std::io::Result<(u16, Vec<u8>, TlsStream)> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((address, KUBELET_PORT)),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))??;
    let connector = tokio_rustls::TlsConnector::from(client.config.clone());
    let mut stream = connector
        .connect(ServerName::IpAddress(address.into()), tcp)
        .await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}:{KUBELET_PORT}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the kubelet closed the connection",
            ));
        }
        head.extend_from_slice(&buffer[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > HEAD_LIMIT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "response head too large",
            ));
        }
    };
    let status = std::str::from_utf8(&head[..end])
        .ok()
        .and_then(|h| h.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line")
        })?;
    Ok((status, head[end..].to_vec(), stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_address_and_escaping() {
        let node = serde_json::json!({"status": {"addresses": [
            {"type": "Hostname", "address": "c0-w1"}, {"type": "InternalIP", "address": "172.20.0.11"}]}});
        assert_eq!(internal_ip(&node), Some("172.20.0.11".parse().unwrap()));
        assert_eq!(url_escape("10"), "10");
        assert_eq!(url_escape("a b&c"), "a%20b%26c");
    }
}
