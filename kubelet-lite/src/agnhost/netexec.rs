//! `agnhost netexec`: the HTTP + UDP test server of Kubernetes' network e2e tests.
//!
//! The HTTP server (`--http-port`, default 8080) dispatches like Go's `ServeMux`: a fixed
//! set of paths, and everything else answers as `/` (`NOW: <time>`). Any method is
//! accepted. The UDP server (`--udp-port`, default 8081, `-1` disables it) answers the
//! commands `hostname`, `echo <msg>` and `clientip` (lower-cased and trimmed first, as
//! agnhost does). `/healthz` is 200 only once the UDP server is up, again like agnhost.
//!
//! `/exit` and `/shutdown` don't exit from inside the handler: they hand an [`ExitRequest`]
//! to the serving loop, which shuts the server down gracefully (so the reply still goes
//! out) and returns the code from [`crate::agnhost::main`]. SIGTERM exits 0 after
//! `--delay-shutdown` seconds, during which `/readyz` answers 503.
//!
//! Not supported: HTTPS (`--tls-cert-file` is refused), SCTP (`--sctp-port` is ignored
//! with a log line), `/upload` (answers agnhost's "Unable to upload file." error), and
//! form values in POST bodies (only the query string is read).

use super::flags::{Kind, Spec, Values};
use super::golang::{self, golog};
use axum::http::Uri;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

/// The long help of `agnhost netexec --help`.
pub const LONG: &str = "Starts a HTTP server on given port with the endpoints /, /clientip, \
/header, /dial, /echo, /exit, /healthz, /readyz, /hostname, /hostName, /redirect, /shell, \
/shutdown (and /upload, unsupported here), and a UDP server answering \"hostname\", \
\"echo <msg>\" and \"clientip\". The UDP server can be disabled by setting --udp-port to -1.";

/// The flags of `agnhost netexec`.
pub const FLAGS: &[Spec] = &[
    Spec { name: "http-port", kind: Kind::Int, default: "8080", usage: "HTTP Listen Port" },
    Spec { name: "udp-port", kind: Kind::Int, default: "8081", usage: "UDP Listen Port" },
    Spec { name: "sctp-port", kind: Kind::Int, default: "-1", usage: "SCTP Listen Port (ignored)" },
    Spec { name: "tls-cert-file", kind: Kind::Str, default: "", usage: "HTTPS certificate (unsupported)" },
    Spec { name: "tls-private-key-file", kind: Kind::Str, default: "", usage: "HTTPS key (unsupported)" },
    Spec { name: "http-override", kind: Kind::Str, default: "", usage: "Override the HTTP handler to always respond as if it were a GET with this path & params" },
    Spec { name: "udp-listen-addresses", kind: Kind::Str, default: "", usage: "A comma separated list of ip addresses the udp servers listen from" },
    Spec { name: "delay-shutdown", kind: Kind::Int, default: "0", usage: "Number of seconds to delay shutdown when receiving SIGTERM." },
];

/// `/exit` or `/shutdown` asking the serving loop to end the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRequest {
    pub code: i32,
    /// How long connections may take to close (Go duration, nanoseconds); 0 = at once.
    pub timeout_ns: i128,
}

/// What the handlers share.
pub struct AppState {
    /// The UDP server is listening (agnhost's `serverReady`).
    pub ready: AtomicBool,
    /// SIGTERM was received: `/readyz` answers 503.
    pub terminating: AtomicBool,
    /// `--http-override`: serve every request as a GET of this URI.
    pub http_override: Option<Uri>,
    pub exit: mpsc::Sender<ExitRequest>,
}

/// Entry point: `agnhost netexec [flags]`.
pub fn run(flags: &Values) -> i32 {
    if !flags.str("tls-cert-file").is_empty() {
        golog!("netexec: HTTPS (--tls-cert-file) is not supported by knetsim's built-in agnhost");
        return 1;
    }
    let Ok(http_port) = u16::try_from(flags.int("http-port")) else {
        golog!(
            "listen tcp: address {}: invalid port",
            flags.int("http-port")
        );
        return 1;
    };
    let udp_port = match flags.int("udp-port") {
        -1 => None,
        p => match u16::try_from(p) {
            Ok(p) => Some(p),
            Err(_) => {
                golog!("Error occurred: failed to resolve UDP address for port {p}");
                return 1;
            }
        },
    };
    if flags.int("sctp-port") != -1 {
        golog!("SCTP is not supported by knetsim's built-in agnhost: --sctp-port ignored");
    }
    let http_override = match flags.str("http-override") {
        "" => None,
        o => match o.parse::<Uri>() {
            Ok(u) => Some(u),
            Err(e) => {
                golog!("invalid --http-override {}: {e}", golang::quote(o));
                return 1;
            }
        },
    };
    let udp_addrs = match parse_addresses(flags.str("udp-listen-addresses")) {
        Ok(a) => a,
        Err(e) => {
            golog!("{e}");
            return 1;
        }
    };
    let delay = Duration::from_secs(u64::try_from(flags.int("delay-shutdown")).unwrap_or(0));
    super::block_on(serve(
        http_port,
        udp_port.map(|p| (udp_addrs, p)),
        http_override,
        delay,
    ))
}

/// `--udp-listen-addresses`: sorted, deduplicated IPs; empty means every address.
fn parse_addresses(list: &str) -> Result<Vec<IpAddr>, String> {
    if list.is_empty() {
        return Ok(vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
    }
    let mut out: Vec<IpAddr> = list
        .split(',')
        .map(|a| {
            a.trim()
                .parse()
                .map_err(|_| format!("parseAddress: invalid address {a}"))
        })
        .collect::<Result<_, _>>()?;
    out.sort_by_key(|a| a.to_string());
    out.dedup();
    Ok(out)
}

async fn serve(
    http_port: u16,
    udp: Option<(Vec<IpAddr>, u16)>,
    http_override: Option<Uri>,
    delay: Duration,
) -> i32 {
    let (exit_tx, mut exit_rx) = mpsc::channel(1);
    let state = Arc::new(AppState {
        ready: AtomicBool::new(false),
        terminating: AtomicBool::new(false),
        http_override,
        exit: exit_tx,
    });
    for (ip, port) in udp
        .iter()
        .flat_map(|(ips, p)| ips.iter().map(move |ip| (*ip, *p)))
    {
        match UdpSocket::bind((ip, port)).await {
            Ok(sock) => drop(tokio::spawn(udp_server(sock, state.clone()))),
            Err(e) => {
                golog!("Error occurred: failed to create listener for UDP address {ip}:{port}:{e}");
                return 1;
            }
        }
    }
    golog!("Started HTTP server on port {http_port}");
    let listener = match TcpListener::bind((Ipv4Addr::UNSPECIFIED, http_port)).await {
        Ok(l) => l,
        Err(e) => {
            golog!("listen tcp :{http_port}: bind: {e}");
            return 1;
        }
    };
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let svc = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, svc)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    tokio::select! {
        Some(req) = exit_rx.recv() => {
            let _ = stop_tx.send(());
            // Go exits at once for timeout 0; a short grace lets the reply go out.
            let limit = Duration::from_nanos(u64::try_from(req.timeout_ns).unwrap_or(0))
                .max(Duration::from_millis(500));
            let outcome = match tokio::time::timeout(limit, &mut server).await {
                Ok(_) => "<nil>",
                Err(_) => "context deadline exceeded",
            };
            golog!("Graceful shutdown completed with: {outcome}");
            req.code
        }
        _ = super::wait_for_signal(false) => {
            state.terminating.store(true, Ordering::SeqCst);
            if !delay.is_zero() {
                golog!("Sleeping {} seconds before terminating...", delay.as_secs());
                tokio::time::sleep(delay).await;
            }
            0
        }
        result = &mut server => {
            match result {
                Ok(Err(e)) => golog!("{e}"),
                Err(e) => golog!("{e}"),
                Ok(Ok(())) => {}
            }
            1
        }
    }
}

/// The UDP command server; marks the state ready once listening.
pub async fn udp_server(sock: UdpSocket, state: Arc<AppState>) {
    if let Ok(addr) = sock.local_addr() {
        let shown = if addr.ip().is_unspecified() {
            String::new()
        } else {
            addr.ip().to_string()
        };
        golog!("Started UDP server on port {shown} {}", addr.port());
    }
    state.ready.store(true, Ordering::SeqCst);
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // Go's server would exit here; an ICMP error on a shared socket isn't fatal.
                golog!("Error occurred: failed accepting UDP connections:{e}");
                continue;
            }
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if let Some(reply) = udp_reply(&text, peer) {
            if let Err(e) = sock.send_to(reply.as_bytes(), peer).await {
                golog!("Error occurred: failed to write to UDP client {peer}:{e}");
            }
        }
    }
}

/// agnhost's UDP protocol: the reply to one datagram, if any.
pub fn udp_reply(datagram: &str, peer: SocketAddr) -> Option<String> {
    let text = datagram.trim().to_lowercase();
    if text == "hostname" {
        golog!("Sending udp hostName response");
        Some(hostname())
    } else if let Some(msg) = text.strip_prefix("echo ") {
        golog!("Echoing {msg} to UDP client {peer}\n");
        Some(msg.to_string())
    } else if text == "clientip" {
        golog!("Sending clientip back to UDP client {peer}\n");
        Some(peer.to_string())
    } else {
        if !text.is_empty() {
            golog!("Unknown UDP command received from {peer}: {text}\n");
        }
        None
    }
}

fn hostname() -> String {
    let h = super::hostname();
    golog!("hostname: {h}");
    h
}

#[path = "netexec_http.rs"]
mod http;
pub use http::app;

#[cfg(test)]
#[path = "netexec_tests.rs"]
mod tests;
