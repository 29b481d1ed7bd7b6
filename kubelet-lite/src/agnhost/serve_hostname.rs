//! `agnhost serve-hostname`: answer every request with the hostname (the pod's name), the
//! backend of many Service tests (`kubectl exec … curl svc:9376`).
//!
//! Modes, as in agnhost: HTTP (default, any path, `--close` adds `Connection: close`), or
//! raw `--tcp` (write the hostname, close) and/or `--udp` (reply with the hostname to any
//! datagram) with `--http=false`; HTTP cannot be combined with the raw modes.
//! On SIGTERM it logs, then keeps serving for 60 s "awaiting pod deletion" before exiting
//! 0, exactly like agnhost (the kubelet's grace period usually ends it first).

use super::flags::{Kind, Spec, Values};
use super::golang::golog;
use axum::extract::ConnectInfo;
use axum::http::header::{HeaderValue, CONNECTION};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};

/// The flags of `agnhost serve-hostname`.
pub const FLAGS: &[Spec] = &[
    Spec {
        name: "tcp",
        kind: Kind::Bool,
        default: "false",
        usage: "Serve raw over TCP.",
    },
    Spec {
        name: "udp",
        kind: Kind::Bool,
        default: "false",
        usage: "Serve raw over UDP.",
    },
    Spec {
        name: "http",
        kind: Kind::Bool,
        default: "true",
        usage: "Serve HTTP.",
    },
    Spec {
        name: "close",
        kind: Kind::Bool,
        default: "false",
        usage: "Close connection per each HTTP request.",
    },
    Spec {
        name: "port",
        kind: Kind::Int,
        default: "9376",
        usage: "Port number.",
    },
];

/// Entry point: `agnhost serve-hostname [flags]`.
pub fn run(flags: &Values) -> i32 {
    let (tcp, udp, http, close) = (
        flags.bool("tcp"),
        flags.bool("udp"),
        flags.bool("http"),
        flags.bool("close"),
    );
    if http && (tcp || udp) {
        golog!("Can't server TCP/UDP mode and HTTP mode at the same time");
        return 1;
    }
    let Ok(port) = u16::try_from(flags.int("port")) else {
        golog!(
            "Error from net.Listen(): invalid port {}",
            flags.int("port")
        );
        return 1;
    };
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    super::block_on(async move {
        let hostname = super::hostname();
        if tcp {
            match TcpListener::bind(addr).await {
                Ok(l) => drop(tokio::spawn(serve_tcp(l, hostname.clone()))),
                Err(e) => {
                    golog!("Error from net.Listen(): listen tcp :{port}: {e}");
                    return 1;
                }
            }
        }
        if udp {
            match UdpSocket::bind(addr).await {
                Ok(s) => drop(tokio::spawn(serve_udp(s, hostname.clone()))),
                Err(e) => {
                    golog!("Error from ListenUDP(): listen udp :{port}: {e}");
                    return 1;
                }
            }
        }
        if http {
            let listener = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    golog!("listen tcp :{port}: {e}");
                    return 1;
                }
            };
            let svc = app(hostname, close).into_make_service_with_connect_info::<SocketAddr>();
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, svc).await {
                    golog!("{e}");
                    std::process::exit(1);
                }
            });
        }
        golog!("Serving on port {port}.\n");
        let signal = super::wait_for_signal(false).await;
        golog!("Shutting down after receiving signal: {signal}.\n");
        golog!("Awaiting pod deletion.\n");
        tokio::time::sleep(Duration::from_secs(60)).await;
        0
    })
}

/// The HTTP mode: every path and method answers with the hostname.
pub fn app(hostname: String, close: bool) -> Router {
    Router::new().fallback(move |ConnectInfo(peer): ConnectInfo<SocketAddr>| {
        let hostname = hostname.clone();
        async move {
            golog!("HTTP request from {peer}");
            let mut resp: Response = hostname.into_response();
            if close {
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    })
}

async fn serve_tcp(listener: TcpListener, hostname: String) {
    loop {
        match listener.accept().await {
            Ok((mut conn, peer)) => {
                golog!("TCP request from {peer}");
                let _ = conn.write_all(hostname.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
            Err(e) => golog!("Error from Accept(): {e}"),
        }
    }
}

async fn serve_udp(sock: UdpSocket, hostname: String) {
    let mut buf = [0u8; 16];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((_, peer)) => {
                golog!("UDP request from {peer}");
                let _ = sock.send_to(hostname.as_bytes(), peer).await;
            }
            Err(e) => golog!("Error from ReadFrom(): {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::extract::connect_info::MockConnectInfo;
    use axum::http::Request;
    use tower::ServiceExt;

    #[tokio::test]
    async fn http_answers_hostname_on_any_path() {
        let peer = SocketAddr::from(([127, 0, 0, 1], 5555));
        for (close, path) in [(false, "/"), (true, "/anything?x=1")] {
            let app = app("pod-a".into(), close).layer(MockConnectInfo(peer));
            let req = Request::get(path).body(Body::empty()).expect("request");
            let resp = app.oneshot(req).await.expect("infallible");
            assert_eq!(resp.headers().contains_key(CONNECTION), close);
            let body = to_bytes(resp.into_body(), 1024).await.expect("body");
            assert_eq!(&body[..], b"pod-a");
        }
    }

    #[tokio::test]
    async fn raw_tcp_and_udp_on_loopback() {
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        let listener = TcpListener::bind(lo).await.expect("bind tcp");
        let tcp_addr = listener.local_addr().expect("addr");
        tokio::spawn(serve_tcp(listener, "pod-b".into()));
        let mut conn = tokio::net::TcpStream::connect(tcp_addr)
            .await
            .expect("connect");
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut got)
            .await
            .expect("read");
        assert_eq!(got, b"pod-b");

        let server = UdpSocket::bind(lo).await.expect("bind udp");
        let udp_addr = server.local_addr().expect("addr");
        tokio::spawn(serve_udp(server, "pod-b".into()));
        let client = UdpSocket::bind(lo).await.expect("bind client");
        client.send_to(b"anything", udp_addr).await.expect("send");
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("reply in time")
            .expect("recv");
        assert_eq!(&buf[..n], b"pod-b");
    }

    #[test]
    fn http_with_raw_mode_is_refused() {
        let args: Vec<String> = ["serve-hostname", "--tcp"].map(String::from).to_vec();
        assert_eq!(super::super::main(&args), 1);
    }
}
