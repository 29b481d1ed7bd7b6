//! The little HTTP/1.1 the kubelet's server needs: one request head per connection (every
//! endpoint either streams a body until it closes or upgrades the connection), its query with
//! repeated keys (`command=sh&command=-c`), and plain error answers.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const HEAD_LIMIT: usize = 16 * 1024;

/// A request line and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn parse(head: &[u8]) -> Option<RequestHead> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next()?.split_whitespace();
        let method = request_line.next()?.to_string();
        let target = request_line.next()?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let headers = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| {
                let (name, value) = l.split_once(':')?;
                Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
            })
            .collect();
        Some(RequestHead {
            method,
            path: percent_decode(path),
            query,
            headers,
        })
    }

    /// Every value of header `name`, comma-separated lists joined.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    pub fn query_all(&self, key: &str) -> Vec<String> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn query_first(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean query parameter, read as Go's `strconv.ParseBool` reads it (kubectl sends
    /// `true`, the Python client `True`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(
            self.query_first(key),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    /// What the client wants to upgrade to (`websocket`, `SPDY/3.1`), lowercased.
    pub fn upgrade(&self) -> Option<String> {
        self.header("upgrade").map(|u| u.to_ascii_lowercase())
    }
}

/// `%XX` and `+` (a space in a query) decoded; invalid escapes are kept as they are.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read one request head; also the bytes read past it. None if the client left first.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Option<(RequestHead, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buffer).await?;
        if n == 0 || head.len() > HEAD_LIMIT {
            return Ok(None);
        }
        head.extend_from_slice(&buffer[..n]);
    };
    let rest = head.split_off(end);
    Ok(RequestHead::parse(&head).map(|h| (h, rest)))
}

/// A plain-text answer, and the connection closed.
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: u16,
    message: &str,
) -> std::io::Result<()> {
    let reason = match code {
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}",
        message.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_keep_repeated_query_keys() {
        let head = RequestHead::parse(
            b"GET /exec/default/web/app?command=sh&command=-c&command=exit+3&tty=1&stdout=true HTTP/1.1\r\n\
              Upgrade: websocket\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\nsec-websocket-protocol: v4.channel.k8s.io\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/exec/default/web/app");
        assert_eq!(head.query_all("command"), ["sh", "-c", "exit 3"]);
        assert!(head.flag("tty") && head.flag("stdout") && !head.flag("stdin"));
        let python =
            RequestHead::parse(b"GET /exec/a/b/c?stdout=True&stdin=False HTTP/1.1\r\n\r\n")
                .unwrap();
        assert!(python.flag("stdout") && !python.flag("stdin"));
        assert_eq!(head.upgrade().as_deref(), Some("websocket"));
        assert_eq!(
            head.header("Sec-WebSocket-Protocol").as_deref(),
            Some("v5.channel.k8s.io, v4.channel.k8s.io")
        );
    }

    #[test]
    fn escapes_decode() {
        assert_eq!(percent_decode("echo%20hi%3B+ok"), "echo hi; ok");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
