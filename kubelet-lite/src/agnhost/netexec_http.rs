//! netexec's HTTP endpoints, dispatched like Go's `ServeMux`: fixed paths, and anything
//! else answers as `/`. Handlers read only the query string (Go's `FormValue` would also
//! read a POST form body), log the line agnhost logs, and answer in agnhost's words.
//! `--http-override` replaces every request's URI with the override, as a GET.

use super::{hostname, AppState, ExitRequest};
use crate::agnhost::dial::{self, get};
use crate::agnhost::golang::{self, golog};
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
/// The HTTP server; tests call it with `oneshot`.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

fn text(status: StatusCode, body: String) -> Response {
    let ct = HeaderValue::from_static("text/plain; charset=utf-8");
    (status, [(CONTENT_TYPE, ct)], body).into_response()
}

fn ok(body: String) -> Response {
    text(StatusCode::OK, body)
}

async fn handle(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (uri, method) = match &st.http_override {
        Some(o) => (o.clone(), Method::GET),
        None => (req.uri().clone(), req.method().clone()),
    };
    let q: Vec<(String, String)> = Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
    let q = q.as_slice();
    let mut path = uri.path().to_string();
    while path.contains("//") {
        path = path.replace("//", "/");
    }
    match path.as_str() {
        "/clientip" => {
            golog!("GET /clientip");
            ok(peer.to_string())
        }
        "/header" => header(&req, get(q, "key")),
        "/dial" => {
            let (status, body) = dial::handle(q).await;
            text(status, body)
        }
        "/echo" => {
            let (msg, code) = (get(q, "msg"), get(q, "code"));
            golog!("GET /echo?msg={msg}&code={code}");
            match code {
                "" => ok(msg.to_string()),
                c => match c
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                {
                    Some(status) => text(status, msg.to_string()),
                    None => ok(format!(
                        "argument 'code' must be an integer or empty, got {}\n",
                        golang::quote(c)
                    )),
                },
            }
        }
        "/exit" => exit(&st, q).await,
        "/healthz" => {
            golog!("GET /healthz");
            match st.ready.load(Ordering::SeqCst) {
                true => StatusCode::OK.into_response(),
                false => StatusCode::PRECONDITION_FAILED.into_response(),
            }
        }
        "/readyz" => {
            golog!("GET /readyz");
            if st.terminating.load(Ordering::SeqCst) {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down".into())
            } else if st.ready.load(Ordering::SeqCst) {
                ok("ok".into())
            } else {
                StatusCode::PRECONDITION_FAILED.into_response()
            }
        }
        "/hostname" | "/hostName" => {
            golog!("GET {path}");
            ok(hostname())
        }
        "/redirect" => redirect(&method, get(q, "location"), get(q, "code")),
        "/shell" => shell(q).await,
        "/upload" => {
            golog!("GET /upload");
            golog!("Unable to upload file: not supported by knetsim's built-in agnhost");
            ok(r#"{"error":"Unable to upload file."}"#.to_string())
        }
        "/shutdown" => {
            golog!("GET /shutdown");
            let _ = st
                .exit
                .send(ExitRequest {
                    code: 0,
                    timeout_ns: 0,
                })
                .await;
            ok(String::new())
        }
        _ => {
            golog!("GET /");
            ok(format!("NOW: {}", golang::now_string()))
        }
    }
}

fn header(req: &Request, key: &str) -> Response {
    if !key.is_empty() {
        golog!("GET /header?key={key}");
        let v = req
            .headers()
            .get(key)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return ok(v.unwrap_or_default());
    }
    golog!("GET /header");
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in req.headers() {
        if k != "host" {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            all.entry(golang::canonical_header_key(k.as_str()))
                .or_default()
                .push(v);
        }
    }
    let borrowed: BTreeMap<&str, Vec<String>> =
        all.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    ok(golang::json_marshal(&borrowed))
}

async fn exit(st: &AppState, q: &[(String, String)]) -> Response {
    let (wait_s, timeout_s, code_s) = (get(q, "wait"), get(q, "timeout"), get(q, "code"));
    golog!("GET /exit?code={code_s}&timeout={timeout_s}&wait={wait_s}");
    let dur = |s: &str| {
        if s.is_empty() {
            Some(0)
        } else {
            golang::parse_duration(s)
        }
    };
    let Some(timeout) = dur(timeout_s) else {
        let q = golang::quote(timeout_s);
        return ok(format!(
            "argument 'timeout' must be a valid golang duration or empty, got {q}\n"
        ));
    };
    let Some(wait) = dur(wait_s) else {
        let q = golang::quote(wait_s);
        return ok(format!(
            "argument 'wait' must be a valid golang duration or empty, got {q}\n"
        ));
    };
    let code = match code_s {
        "" => 0,
        c => match c.parse::<i32>() {
            Ok(c) => c,
            Err(_) => {
                let q = golang::quote(c);
                return ok(format!(
                    "argument 'code' must be an integer [0-127] or empty, got {q}\n"
                ));
            }
        },
    };
    golog!(
        "Will begin shutdown in {}, allowing {} for connections to close, then will exit with {code}",
        golang::format_duration(wait),
        golang::format_duration(timeout)
    );
    tokio::time::sleep(Duration::from_nanos(u64::try_from(wait).unwrap_or(0))).await;
    let _ = st
        .exit
        .send(ExitRequest {
            code,
            timeout_ns: timeout,
        })
        .await;
    ok(String::new())
}

fn redirect(method: &Method, location: &str, code: &str) -> Response {
    golog!("{method} /redirect?msg={location}&code={code}");
    let status = match code {
        "" => StatusCode::FOUND,
        c => match c
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(s) => s,
            None => {
                let q = golang::quote(c);
                return ok(format!(
                    "argument 'code' must be an integer or empty, got {q}\n"
                ));
            }
        },
    };
    let Ok(loc) = HeaderValue::from_str(location) else {
        return text(StatusCode::BAD_REQUEST, "invalid location\n".into());
    };
    let body = match *method == Method::GET {
        true => format!(
            "<a href=\"{}\">{}</a>.\n\n",
            location
                .replace('&', "&amp;")
                .replace('"', "&#34;")
                .replace('<', "&lt;"),
            status.canonical_reason().unwrap_or("")
        ),
        false => String::new(),
    };
    let html = HeaderValue::from_static("text/html; charset=utf-8");
    (status, [(LOCATION, loc), (CONTENT_TYPE, html)], body).into_response()
}

async fn shell(q: &[(String, String)]) -> Response {
    let cmd = match get(q, "shellCommand") {
        "" => get(q, "cmd"),
        c => c,
    }
    .to_string();
    golog!("GET /shell?cmd={cmd}");
    let (out, err) = tokio::task::spawn_blocking(move || run_shell(&cmd))
        .await
        .unwrap_or_else(|e| (String::new(), Some(e.to_string())));
    let mut output = BTreeMap::new();
    if !out.is_empty() {
        output.insert("output", out);
    }
    if let Some(e) = err {
        output.insert("error", e);
    }
    let shown: Vec<String> = output.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    golog!("Output: map[{}]", shown.join(" "));
    ok(golang::json_marshal(&output))
}

/// `exec.Command("/bin/sh", "-c", cmd).CombinedOutput()`: (stdout+stderr, Go's error text).
fn run_shell(cmd: &str) -> (String, Option<String>) {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let started = nix::unistd::pipe()
        .map_err(std::io::Error::from)
        .and_then(|(r, w)| {
            let w2 = w.try_clone()?;
            let child = Command::new("/bin/sh")
                .arg("-c")
                .arg(cmd)
                .stdin(Stdio::null())
                .stdout(Stdio::from(w))
                .stderr(Stdio::from(w2))
                .spawn()?;
            Ok((r, child))
        });
    let (r, mut child) = match started {
        Ok(s) => s,
        Err(e) => return (String::new(), Some(format!("fork/exec /bin/sh: {e}"))),
    };
    let mut out = Vec::new();
    let _ = std::fs::File::from(r).read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let err = match child.wait() {
        Ok(s) if s.success() => None,
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => Some(format!("exit status {c}")),
            (_, Some(9)) => Some("signal: killed".into()),
            (_, Some(15)) => Some("signal: terminated".into()),
            (_, sig) => Some(format!("signal: {}", sig.unwrap_or(0))),
        },
        Err(e) => Some(e.to_string()),
    };
    (out, err)
}
