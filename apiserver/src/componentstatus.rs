//! `componentstatuses` (`kubectl get cs`): the health of the control plane's parts, probed
//! when asked and stored nowhere, as kube-apiserver's deprecated v1 ComponentStatus is.
//!
//! - `etcd-0`: a read of the cluster's etcd through the server's own store;
//! - `controller-manager` and `scheduler`: the controller-manager's `/healthz` on its
//!   loopback port of the control-plane node, where this server runs too. knetsim's
//!   scheduler runs inside the controller-manager, so both answer with its health.

use std::io::{Read, Write};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::rest::{as_list_item, json_response};
use crate::{registry, table, AppState};

/// kube-apiserver's warning on every use of the API.
const DEPRECATED: &str = "299 - \"v1 ComponentStatus is deprecated in v1.19+\"";
/// The controller-manager's `/healthz` port (kube-controller-manager's secure port number).
const CONTROLLER_MANAGER_PORT: u16 = 10257;
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const COMPONENTS: [&str; 3] = ["scheduler", "controller-manager", "etcd-0"];

fn info() -> &'static registry::ResourceInfo {
    &registry::READ_ONLY[0]
}

/// A ComponentStatus with its one `Healthy` condition.
fn status(name: &str, probe: Result<String, String>) -> Value {
    let condition = match probe {
        Ok(message) => json!({"type": "Healthy", "status": "True", "message": message}),
        Err(error) => json!({"type": "Healthy", "status": "False", "error": error}),
    };
    json!({"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": name}, "conditions": [condition]})
}

async fn probe(state: &AppState, name: &str) -> Result<String, String> {
    if name == "etcd-0" {
        let namespaces = registry::find("", "v1", "namespaces").ok_or("no namespaces resource")?;
        return match state.store.get_latest(namespaces, None, "default").await {
            Ok(_) => Ok("ok".into()),
            Err(e) => Err(format!("etcd: {e:?}")),
        };
    }
    tokio::task::spawn_blocking(healthz)
        .await
        .map_err(|e| format!("probing the controller-manager: {e}"))?
}

/// `GET /healthz` over plain HTTP/1.0, the body being the message.
fn healthz() -> Result<String, String> {
    let url = format!("http://127.0.0.1:{CONTROLLER_MANAGER_PORT}/healthz");
    let failed = |e: std::io::Error| format!("Get \"{url}\": {e}");
    let addr = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, CONTROLLER_MANAGER_PORT));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).map_err(failed)?;
    stream
        .set_read_timeout(Some(PROBE_TIMEOUT))
        .map_err(failed)?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(failed)?;
    let mut response = String::new();
    stream
        .take(64 * 1024)
        .read_to_string(&mut response)
        .map_err(failed)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    match head.split_whitespace().nth(1) {
        Some("200") => Ok(body.trim().to_string()),
        code => Err(format!(
            "{url}: status {}: {}",
            code.unwrap_or("?"),
            body.trim()
        )),
    }
}

fn respond(h: &HeaderMap, obj: Value, objects: Vec<Value>) -> Response {
    let body = if table::wants_table(h) {
        table::to_table(info(), &objects, "", None, None)
    } else {
        obj
    };
    let mut response = json_response(StatusCode::OK, body);
    response
        .headers_mut()
        .insert("warning", HeaderValue::from_static(DEPRECATED));
    response
}

/// `GET /api/v1/componentstatuses`.
pub async fn list(State(state): State<AppState>, h: HeaderMap) -> Response {
    let mut items = Vec::new();
    for name in COMPONENTS {
        items.push(status(name, probe(&state, name).await));
    }
    let bare: Vec<Value> = items.iter().cloned().map(as_list_item).collect();
    let listed =
        json!({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": bare});
    respond(&h, listed, items)
}

/// `GET /api/v1/componentstatuses/<name>`.
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    h: HeaderMap,
) -> Result<Response, AppError> {
    if !COMPONENTS.contains(&name.as_str()) {
        return Err(AppError::NotFound(crate::error::target(
            "",
            "componentstatuses",
            &name,
        )));
    }
    let obj = status(&name, probe(&state, &name).await);
    Ok(respond(&h, obj.clone(), vec![obj]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_probe_is_an_unhealthy_condition_with_its_error() {
        let ok = status("etcd-0", Ok("ok".into()));
        assert_eq!(
            ok["conditions"],
            json!([{"type": "Healthy", "status": "True", "message": "ok"}])
        );
        let down = status("scheduler", Err("connection refused".into()));
        assert_eq!(down["conditions"][0]["status"], "False");
        assert_eq!(down["conditions"][0]["error"], "connection refused");
        let cells = crate::printers::row("", "componentstatuses", down);
        assert_eq!(
            cells,
            [
                json!("scheduler"),
                json!("Unhealthy"),
                json!(""),
                json!("connection refused")
            ]
        );
    }
}
