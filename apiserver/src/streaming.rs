//! `pods/exec`, `pods/attach` and `pods/portforward`: connection upgrades proxied to the
//! kubelet of the Pod's node, as kube-apiserver's upgrade-aware proxy does.
//!
//! The client's request (a WebSocket handshake, or a SPDY/3.1 upgrade) is sent on to
//! `https://<node InternalIP>:10250/{exec,attach}/<ns>/<pod>/<container>` or
//! `/portForward/<ns>/<pod>` with the API server's kubelet client certificate. The kubelet
//! picks the protocol; its answer goes back to the client as it is. On `101 Switching
//! Protocols` both connections are taken over and bytes are spliced both ways until either
//! side closes, so the API server never needs to understand the streams. Any other answer
//! (the kubelet refusing a protocol) goes back too, which is what lets kubectl fall back from
//! WebSocket to SPDY for port-forward.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::AppError;
use crate::logs::{KubeletClient, KUBELET_PORT};
use crate::registry;
use crate::rest::{get_existing, Target};
use crate::AppState;

const HEAD_LIMIT: usize = 16 * 1024;
/// Request headers that belong to this hop only, or to the API server's own login.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "proxy-authorization",
    "impersonate-user",
    "impersonate-group",
];

/// The container a request means: `?container=`, else the Pod's only container, else the
/// one kubectl's default-container annotation names.
pub fn choose_container(
    pod: &Value,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<String, AppError> {
    let containers: Vec<String> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    let annotated = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        .as_str()
        .filter(|c| containers.iter().any(|n| n == c));
    match query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.contains(c) => Ok(c.clone()),
        Some(c) => Err(AppError::BadRequest(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => annotated.map(String::from).ok_or_else(|| {
            AppError::BadRequest(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            ))
        }),
    }
}

/// The kubelet's address of the node `pod` is bound to.
async fn kubelet_address(state: &AppState, pod: &Value, name: &str) -> Result<IpAddr, AppError> {
    let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
        return Err(AppError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let nodes = registry::find("", "v1", "nodes")
        .ok_or_else(|| AppError::Internal("no nodes resource".into()))?;
    let (node_obj, _) = state
        .store
        .get(nodes, None, node)
        .await?
        .ok_or_else(|| AppError::not_found("", "nodes", node))?;
    crate::logs::internal_ip(&node_obj)
        .ok_or_else(|| AppError::Internal(format!("node {node} has no InternalIP address")))
}

/// Proxy one `exec`, `attach` or `portforward` upgrade.
pub async fn proxy(
    state: &AppState,
    t: &Target,
    mut parts: Parts,
    query: &HashMap<String, String>,
) -> Result<Response, AppError> {
    let name = t.name.clone().unwrap_or_default();
    let sub = t.sub.clone().unwrap_or_default();
    if !matches!(parts.method.as_str(), "GET" | "POST") {
        return Err(AppError::MethodNotAllowed);
    }
    if !parts.headers.contains_key(header::UPGRADE) {
        return Err(AppError::BadRequest("Upgrade request required".into()));
    }
    let (pod, _) = get_existing(state, t, &name).await?;
    if pod["status"]["phase"] == "Succeeded" || pod["status"]["phase"] == "Failed" {
        return Err(AppError::BadRequest(format!(
            "cannot {sub} into a container in a completed pod; current phase is {}",
            pod["status"]["phase"].as_str().unwrap_or_default()
        )));
    }
    let namespace = t.namespace.clone().unwrap_or_default();
    let raw_query = parts.uri.query().unwrap_or_default().to_string();
    let path = match sub.as_str() {
        "portforward" => format!("/portForward/{namespace}/{name}"),
        _ => {
            let container = choose_container(&pod, &name, query)?;
            format!("/{sub}/{namespace}/{name}/{container}")
        }
    };
    let path = if raw_query.is_empty() {
        path
    } else {
        format!("{path}?{raw_query}")
    };
    let address = kubelet_address(state, &pod, &name).await?;
    let Some(client) = &state.kubelet else {
        return Err(AppError::Internal(
            "this API server has no kubelet client credentials".into(),
        ));
    };
    let mut request = format!(
        "{} {path} HTTP/1.1\r\nHost: {address}:{KUBELET_PORT}\r\n",
        parts.method
    );
    for (name, value) in &parts.headers {
        if NOT_FORWARDED.contains(&name.as_str()) {
            continue;
        }
        if let Ok(value) = value.to_str() {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("\r\n");
    let (status, headers, rest, mut kubelet) = send(client, address, request.as_bytes())
        .await
        .map_err(|e| {
            AppError::Internal(format!(
                "error dialing the kubelet at {address}:{KUBELET_PORT}: {e}"
            ))
        })?;
    let mut response = Response::new(Body::empty());
    for (name, value) in &headers {
        if matches!(name.as_str(), "content-length" | "transfer-encoding") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status != 101 {
        // Refused (e.g. a protocol the kubelet does not speak): its answer, body and all.
        let mut body = rest;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let mut limited = (&mut kubelet).take(64 * 1024);
            let _ = limited.read_to_end(&mut body).await;
        })
        .await;
        *response.body_mut() = Body::from(body);
        return Ok(response);
    }
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(AppError::BadRequest(
            "the connection cannot be upgraded (HTTP/2?): use HTTP/1.1".into(),
        ));
    };
    tracing::info!(%namespace, pod = %name, %sub, %address, "streaming to the kubelet");
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("client upgrade failed: {e}");
                return;
            }
        };
        let mut client_io = hyper_util::rt::TokioIo::new(upgraded);
        if !rest.is_empty() && client_io.write_all(&rest).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client_io, &mut kubelet).await;
    });
    Ok(response)
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Send `request` to the kubelet: its status, headers (names lowercased), the bytes read past
/// the head, and the connection.
async fn send(
    client: &KubeletClient,
    address: IpAddr,
    request: &[u8],
) -> std::io::Result<(u16, Vec<(String, String)>, Vec<u8>, TlsStream)> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((address, KUBELET_PORT)),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out"))??;
    let _ = tcp.set_nodelay(true);
    let connector = tokio_rustls::TlsConnector::from(client.config.clone());
    let mut stream = connector
        .connect(ServerName::IpAddress(address.into()), tcp)
        .await?;
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buffer).await?;
        if n == 0 || head.len() > HEAD_LIMIT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the kubelet closed the connection without an answer",
            ));
        }
        head.extend_from_slice(&buffer[..n]);
    };
    let (status, headers) = parse_response_head(&head[..end]).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status line")
    })?;
    Ok((status, headers, head[end..].to_vec(), stream))
}

fn parse_response_head(head: &[u8]) -> Option<(u16, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    Some((status, headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;
    use serde_json::json;
    use tower::ServiceExt;

    use crate::tests::{call, setup};

    #[tokio::test]
    async fn exec_is_an_upgrade_of_a_scheduled_pod() {
        let app = setup().await;
        let pods = "/api/v1/namespaces/default/pods";
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        call(&app, Method::POST, pods, Some(pod)).await;
        let (s, b) = call(
            &app,
            Method::POST,
            &format!("{pods}/p/exec?command=true"),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert_eq!(b["message"], "Upgrade request required");
        let mut upgrade = axum::http::Request::builder()
            .method(Method::GET)
            .uri(format!("{pods}/p/exec?command=true"))
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .body(Body::empty())
            .unwrap();
        upgrade.extensions_mut().insert(crate::tls::UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into()],
        });
        let resp = app.clone().oneshot(upgrade).await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let status: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["message"], "pod p does not have a host assigned");

        // Discovery lists them as a real API server does.
        let (_, list) = call(&app, Method::GET, "/api/v1", None).await;
        let exec = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/exec")
            .cloned()
            .unwrap_or_default();
        assert_eq!(exec["kind"], "PodExecOptions");
        assert_eq!(exec["verbs"], json!(["create", "get"]));
        for name in ["pods/attach", "pods/portforward"] {
            assert!(list["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == name));
        }
    }

    #[test]
    fn the_container_is_named_or_implied() {
        let one = json!({"spec": {"containers": [{"name": "app"}]}});
        let none = HashMap::new();
        assert_eq!(choose_container(&one, "p", &none).unwrap(), "app");
        let two = json!({"metadata": {}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let err = choose_container(&two, "p", &none).unwrap_err().to_string();
        assert_eq!(
            err,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        let b = HashMap::from([("container".to_string(), "b".to_string())]);
        assert_eq!(choose_container(&two, "p", &b).unwrap(), "b");
        let c = HashMap::from([("container".to_string(), "c".to_string())]);
        assert_eq!(
            choose_container(&two, "p", &c).unwrap_err().to_string(),
            "container c is not valid for pod p"
        );
        let annotated = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/default-container": "b"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(choose_container(&annotated, "p", &none).unwrap(), "b");
    }

    #[test]
    fn kubelet_answers_parse() {
        let (status, headers) = parse_response_head(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
        )
        .unwrap();
        assert_eq!(status, 101);
        assert_eq!(
            headers[1],
            (
                "sec-websocket-protocol".to_string(),
                "v5.channel.k8s.io".to_string()
            )
        );
    }
}
