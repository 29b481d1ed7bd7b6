//! netexec's `/dial`: from this pod, send `request` to `host:port` over HTTP or UDP `tries`
//! times and report what came back. Kubernetes' networking e2e tests drive pod-to-pod and
//! pod-to-Service checks through it, and parse the JSON, so the shape follows agnhost
//! exactly: `{"errors":[…],"responses":[…]}` with Go's key order, `responses` present only
//! when the *last* try got a non-empty answer, always status 200 once the parameters are
//! valid, and `400` with Go's `http.Error` text otherwise.
//!
//! The HTTP dial is a tiny HTTP/1.1 client (`GET http://host:port/<request>`, 5 s timeout,
//! `Content-Length`, chunked or read-to-close bodies); a body is a response whatever its
//! status, as in Go. The UDP dial sends `request` as one datagram and waits 5 s for one.

use super::golang;
use axum::http::StatusCode;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The first value of `key` in a parsed query string, or "" (Go's `Query().Get`).
pub fn get<'a>(query: &'a [(String, String)], key: &str) -> &'a str {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// Handle `/dial?…`; returns the status and body agnhost would send.
pub async fn handle(query: &[(String, String)]) -> (StatusCode, String) {
    let (host, port, request, protocol, tries) = (
        get(query, "host"),
        get(query, "port"),
        get(query, "request"),
        get(query, "protocol"),
        get(query, "tries"),
    );
    golang::golog!(
        "GET /dial?host={host}&protocol={protocol}&port={port}&request={request}&tries={tries}"
    );
    let bad = |msg: String| (StatusCode::BAD_REQUEST, format!("{msg}\n"));
    let tries: i64 = if tries.is_empty() {
        1
    } else {
        match tries.parse() {
            Ok(n) => n,
            Err(_) => {
                return bad(format!(
                    "tries parameter is invalid. strconv.Atoi: parsing {}: invalid syntax",
                    golang::quote(tries)
                ))
            }
        }
    };
    if request.is_empty() {
        return bad("request parameter not specified. <nil>".to_string());
    }
    let udp = match protocol.to_ascii_lowercase().as_str() {
        "" | "http" => false,
        "udp" => true,
        "sctp" => return bad("unsupported protocol. sctp (knetsim's agnhost has no SCTP)".into()),
        _ => return bad(format!("unsupported protocol. {protocol}")),
    };
    let addr = match resolve(host, port).await {
        Ok(a) => a,
        Err(e) => return bad(format!("host and/or port param are invalid. {e}")),
    };
    let mut responses = Vec::new();
    let mut errors = Vec::new();
    let mut last = String::new();
    for _ in 0..tries {
        let result = if udp {
            dial_udp(request, addr).await
        } else {
            dial_http(request, addr).await
        };
        match result {
            Ok(r) => {
                last = r.clone();
                responses.push(r);
            }
            Err(e) => {
                last.clear();
                errors.push(e);
            }
        }
    }
    (StatusCode::OK, format_output(&last, responses, errors))
}

/// agnhost's JSON: `responses` only if the last try's answer was non-empty.
fn format_output(last: &str, responses: Vec<String>, errors: Vec<String>) -> String {
    let mut out = BTreeMap::new();
    if !last.is_empty() {
        out.insert("responses", responses);
    }
    if !errors.is_empty() {
        out.insert("errors", errors);
    }
    golang::json_marshal(&out)
}

/// `net.ResolveTCPAddr`: an IP literal, or a name looked up (IPv4 preferred); an empty
/// host is the local system.
async fn resolve(host: &str, port: &str) -> Result<SocketAddr, String> {
    let join = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let port: u16 = match port {
        "" => 0,
        p => p
            .parse()
            .map_err(|_| format!("address {join}: unknown port"))?,
    };
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("lookup {host}: no such host"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("lookup {host}: no such host"))
}

/// A socket error as Go words it (`connection refused`, lower case, no errno).
fn go_err(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let desc = nix::errno::Errno::from_raw(n).desc();
            let mut c = desc.chars();
            c.next()
                .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
                .unwrap_or_default()
        }
        None => e.to_string(),
    }
}

/// GET `http://addr/<request>` and return the body (any status), as agnhost's `dialHTTP`.
pub async fn dial_http(request: &str, addr: SocketAddr) -> Result<String, String> {
    let url = format!("http://{addr}/{request}");
    match tokio::time::timeout(TIMEOUT, http_get(request, addr)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(format!("Get {}: {e}", golang::quote(&url))),
        Err(_) => Err(format!(
            "Get {}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
            golang::quote(&url)
        )),
    }
}

async fn http_get(request: &str, addr: SocketAddr) -> Result<String, String> {
    let mut conn = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {}", go_err(&e)))?;
    let path: String = request
        .chars()
        .map(|c| match c {
            ' ' => "%20".to_string(),
            c if c.is_control() => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect();
    let head = format!(
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write tcp {addr}: {}", go_err(&e)))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .await
        .map_err(|e| format!("read tcp {addr}: {}", go_err(&e)))?;
    parse_response(&raw)
}

/// Split an HTTP/1.1 response read to EOF and return its decoded body.
fn parse_response(raw: &[u8]) -> Result<String, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "EOF".to_string())?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let body = &raw[end + 4..];
    if !head.starts_with("HTTP/") {
        return Err("malformed HTTP response".into());
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(body).ok_or_else(|| "malformed chunked encoding".to_string())?
    } else if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.get(..len)
            .ok_or_else(|| "unexpected EOF".to_string())?
            .to_vec()
    } else {
        body.to_vec()
    };
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_line = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_hex = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Send `request` as one datagram and wait for one reply, as agnhost's `dialUDP`.
pub async fn dial_udp(request: &str, addr: SocketAddr) -> Result<String, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("udp dial failed. err:dial udp {addr}: {}", go_err(&e)))?;
    sock.connect(addr)
        .await
        .map_err(|e| format!("udp dial failed. err:dial udp {addr}: {}", go_err(&e)))?;
    let pair = match sock.local_addr() {
        Ok(l) => format!("{l}->{addr}"),
        Err(_) => format!("->{addr}"),
    };
    sock.send(request.as_bytes()).await.map_err(|e| {
        format!(
            "udp connection write failed. err:write udp {pair}: write: {}",
            go_err(&e)
        )
    })?;
    let mut buf = vec![0u8; 2048];
    let read = match tokio::time::timeout(TIMEOUT, sock.recv(&mut buf)).await {
        Err(_) => Err(format!("read udp {pair}: i/o timeout")),
        Ok(Err(e)) => Err(format!("read udp {pair}: read: {}", go_err(&e))),
        Ok(Ok(0)) => Err("<nil>".to_string()),
        Ok(Ok(n)) => Ok(n),
    };
    match read {
        Ok(n) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(e) => Err(format!("reading from udp connection failed. err:'{e}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_shape_follows_agnhost() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            format_output("pod-a", s(&["pod-a", "pod-b"]), vec![]),
            r#"{"responses":["pod-a","pod-b"]}"#
        );
        assert_eq!(
            format_output("", s(&["pod-a"]), s(&["boom"])),
            r#"{"errors":["boom"]}"#
        );
        assert_eq!(format_output("", vec![], vec![]), "{}");
    }

    #[test]
    fn responses_are_decoded() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npod-aXX";
        assert_eq!(parse_response(plain), Ok("pod-a".into()));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
                        3\r\npod\r\n2;x=y\r\n-a\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Ok("pod-a".into()));
        let to_eof = b"HTTP/1.0 200 OK\r\n\r\nhello";
        assert_eq!(parse_response(to_eof), Ok("hello".into()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[tokio::test]
    async fn bad_parameters_are_400() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let (code, body) = handle(&q(&[("host", "127.0.0.1"), ("port", "1")])).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(body, "request parameter not specified. <nil>\n");
        let (code, body) = handle(&q(&[("request", "x"), ("tries", "two")])).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(body.starts_with("tries parameter is invalid."), "{body}");
        let (code, _) = handle(&q(&[("request", "x"), ("protocol", "quic")])).await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let (code, body) = handle(&q(&[
            ("request", "x"),
            ("host", "127.0.0.1"),
            ("port", "p"),
        ]))
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(
            body.starts_with("host and/or port param are invalid."),
            "{body}"
        );
    }

    #[tokio::test]
    async fn refused_ports_become_errors() {
        // A port just released on loopback: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let err = dial_http("hostname", addr).await.expect_err("refused");
        assert!(err.contains("connect: connection refused"), "{err}");
        let err = dial_udp("hostname", addr).await.expect_err("refused");
        assert!(
            err.starts_with("reading from udp connection failed."),
            "{err}"
        );
    }
}
