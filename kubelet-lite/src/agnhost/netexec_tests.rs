//! Tests of `agnhost netexec`: handlers through `Router::oneshot`, the UDP protocol and
//! `/dial` against servers on 127.0.0.1 only, and one whole run ended by `/exit`.

use super::*;
use crate::agnhost::dial;
use axum::body::{to_bytes, Body};
use axum::extract::connect_info::MockConnectInfo;
use axum::extract::Request;
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use tokio::sync::mpsc;
use tower::ServiceExt;

const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

fn state(http_override: Option<&str>) -> (Arc<AppState>, mpsc::Receiver<ExitRequest>) {
    let (tx, rx) = mpsc::channel(4);
    let st = AppState {
        ready: AtomicBool::new(false),
        terminating: AtomicBool::new(false),
        http_override: http_override.map(|o| o.parse().expect("uri")),
        exit: tx,
    };
    (Arc::new(st), rx)
}

async fn call(st: &Arc<AppState>, uri: &str) -> (StatusCode, String) {
    let app = app(st.clone()).layer(MockConnectInfo(PEER));
    let req = Request::get(uri)
        .header("x-test", "yes")
        .body(Body::empty())
        .expect("request");
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let body = to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn simple_endpoints() {
    let (st, _rx) = state(None);
    let host = crate::agnhost::hostname();
    assert_eq!(call(&st, "/hostname").await, (StatusCode::OK, host.clone()));
    assert_eq!(call(&st, "/hostName").await, (StatusCode::OK, host.clone()));
    assert_eq!(call(&st, "//hostname").await, (StatusCode::OK, host));
    assert_eq!(
        call(&st, "/clientip").await,
        (StatusCode::OK, "127.0.0.1:40000".into())
    );
    assert_eq!(
        call(&st, "/echo?msg=hi%20there").await,
        (StatusCode::OK, "hi there".into())
    );
    assert_eq!(
        call(&st, "/echo?msg=x&code=503").await,
        (StatusCode::SERVICE_UNAVAILABLE, "x".into())
    );
    let (status, body) = call(&st, "/echo?msg=x&code=abc").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.starts_with("argument 'code' must be an integer"),
        "{body}"
    );
    for uri in ["/", "/no/such/path"] {
        let (status, body) = call(&st, uri).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("NOW: "), "{body}");
    }
    assert_eq!(call(&st, "/header?key=X-Test").await.1, "yes");
    assert_eq!(call(&st, "/header").await.1, r#"{"X-Test":["yes"]}"#);
    let (status, body) = call(&st, "/upload").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"error":"Unable to upload file."}"#)
    );
}

#[tokio::test]
async fn health_follows_the_udp_server_and_sigterm() {
    let (st, _rx) = state(None);
    assert_eq!(
        call(&st, "/healthz").await.0,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        call(&st, "/readyz").await.0,
        StatusCode::PRECONDITION_FAILED
    );
    st.ready.store(true, Ordering::SeqCst);
    assert_eq!(call(&st, "/healthz").await, (StatusCode::OK, String::new()));
    assert_eq!(call(&st, "/readyz").await, (StatusCode::OK, "ok".into()));
    st.terminating.store(true, Ordering::SeqCst);
    assert_eq!(call(&st, "/healthz").await.0, StatusCode::OK);
    assert_eq!(
        call(&st, "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn exit_and_shutdown_hand_the_code_to_the_loop() {
    let (st, mut rx) = state(None);
    assert_eq!(call(&st, "/exit?code=3&timeout=2s").await.0, StatusCode::OK);
    assert_eq!(
        rx.recv().await,
        Some(ExitRequest {
            code: 3,
            timeout_ns: 2_000_000_000
        })
    );
    assert_eq!(call(&st, "/shutdown").await.0, StatusCode::OK);
    assert_eq!(
        rx.recv().await,
        Some(ExitRequest {
            code: 0,
            timeout_ns: 0
        })
    );
    let (_, body) = call(&st, "/exit?code=x").await;
    assert!(body.contains("must be an integer [0-127]"), "{body}");
    let (_, body) = call(&st, "/exit?timeout=soon").await;
    assert!(body.contains("valid golang duration"), "{body}");
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn shell_returns_agnhost_json() {
    let (st, _rx) = state(None);
    let (status, body) = call(&st, "/shell?shellCommand=echo%20%27a%3Cb%27").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"output":"a\u003cb\n"}"#)
    );
    let (_, body) = call(&st, "/shell?cmd=echo%20oops%201%3E%262%3B%20exit%203").await;
    assert_eq!(body, r#"{"error":"exit status 3","output":"oops\n"}"#);
}

#[tokio::test]
async fn redirect_and_override() {
    let (st, _rx) = state(None);
    let app = app(st).layer(MockConnectInfo(PEER));
    let req = Request::get("/redirect?location=/echo%3Fmsg%3Dfoo&code=307").body(Body::empty());
    let resp = app
        .oneshot(req.expect("request"))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        resp.headers().get(LOCATION).map(|v| v.as_bytes()),
        Some(&b"/echo?msg=foo"[..])
    );

    let (st, _rx) = state(Some("/echo?msg=overridden"));
    assert_eq!(call(&st, "/hostname").await.1, "overridden");
}

#[test]
fn udp_protocol() {
    assert_eq!(
        udp_reply(" HOSTNAME\n", PEER),
        Some(crate::agnhost::hostname())
    );
    assert_eq!(
        udp_reply("echo Hello World", PEER),
        Some("hello world".into())
    );
    assert_eq!(udp_reply("clientip", PEER), Some("127.0.0.1:40000".into()));
    assert_eq!(udp_reply("what", PEER), None);
    assert_eq!(udp_reply("", PEER), None);
}

#[test]
fn listen_addresses() {
    assert_eq!(
        parse_addresses(""),
        Ok(vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)])
    );
    let two = parse_addresses("127.0.0.2,127.0.0.1,127.0.0.2").expect("valid");
    assert_eq!(two.len(), 2);
    assert!(parse_addresses("1.2.3.4,nope").is_err());
}

/// `/dial` from one in-process netexec to servers on loopback, over HTTP and UDP.
#[tokio::test]
async fn dial_over_loopback() {
    let (target, _rx) = state(None);
    let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let udp = UdpSocket::bind(lo).await.expect("bind udp");
    let udp_port = udp.local_addr().expect("addr").port();
    tokio::spawn(udp_server(udp, target.clone()));
    let listener = TcpListener::bind(lo).await.expect("bind tcp");
    let http_port = listener.local_addr().expect("addr").port();
    let svc = app(target).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, svc).await });

    let (st, _rx) = state(None);
    let host = crate::agnhost::hostname();
    let uri =
        format!("/dial?request=hostname&protocol=http&host=127.0.0.1&port={http_port}&tries=2");
    let want = format!(r#"{{"responses":["{host}","{host}"]}}"#);
    assert_eq!(call(&st, &uri).await, (StatusCode::OK, want));
    let uri = format!("/dial?request=echo%20hi&protocol=udp&host=127.0.0.1&port={udp_port}");
    assert_eq!(call(&st, &uri).await.1, r#"{"responses":["hi"]}"#);
    let uri = format!("/dial?request=echo?msg=x&host=localhost&port={http_port}");
    assert_eq!(call(&st, &uri).await.1, r#"{"responses":["x"]}"#);

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let uri = format!("/dial?request=hostname&host=127.0.0.1&port={closed}&tries=1");
    let (status, body) = call(&st, &uri).await;
    assert_eq!(status, StatusCode::OK);
    let parsed: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(parsed.get("responses").is_none(), "{body}");
    assert_eq!(parsed["errors"].as_array().map(Vec::len), Some(1), "{body}");
}

/// A whole `agnhost netexec` run, ended by `/exit?code=7` (the request goes to loopback).
#[test]
fn main_returns_the_exit_code() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let args = vec![
        "netexec".to_string(),
        format!("--http-port={port}"),
        "--udp-port=-1".into(),
    ];
    let runner = std::thread::spawn(move || crate::agnhost::main(&args));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    rt.block_on(async {
        for _ in 0..100 {
            if dial::dial_http("exit?code=7", addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("netexec never answered on {addr}");
    });
    assert_eq!(runner.join().expect("thread"), 7);
}
