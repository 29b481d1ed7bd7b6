//! The kubelet's HTTP client for the API server: hyper's HTTP/1.1 connections, kept open and
//! reused one exchange at a time. hyper-util's pooled client does the same, but built with the
//! workspace's `http2` feature (etcd-client's gRPC wants it) it also carries the HTTP/2 stack,
//! about 0.4 MB of code that every node's kubelet mapped and never ran: the kubelet speaks only
//! HTTP/1.1 (kube-rs's watches are long HTTP/1.1 responses).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::uri::{PathAndQuery, Uri};
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = kube::client::Body;

/// A `tower::Service` sending each request on an idle connection to its origin, or on a new
/// one made by `connector` (which also does TLS).
#[derive(Clone)]
pub struct Http1Client<C> {
    connector: C,
    idle: Arc<Mutex<Vec<IdleConnection>>>,
}

struct IdleConnection {
    origin: String,
    sender: SendRequest<Body>,
}

impl<C> Http1Client<C> {
    pub fn new(connector: C) -> Self {
        Http1Client {
            connector,
            idle: Arc::default(),
        }
    }
}

impl<C> tower::Service<Request<Body>> for Http1Client<C>
where
    C: tower::Service<Uri> + Clone + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Connections are made per request; the bound on requests in flight is a layer above.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self.clone();
        Box::pin(async move { client.send(request).await })
    }
}

impl<C> Http1Client<C>
where
    C: tower::Service<Uri> + Clone + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    C::Future: Send,
    C::Error: Into<BoxError>,
{
    async fn send(mut self, mut request: Request<Body>) -> Result<Response<Incoming>, BoxError> {
        let uri = request.uri().clone();
        let origin = match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => return Err(format!("the request's URI {uri} has no scheme and host").into()),
        };
        // As hyper-util's client sends it: the Host header from the URI, then only the path
        // and query on the request line.
        if !request.headers().contains_key(header::HOST) {
            let host = HeaderValue::from_str(uri.authority().map_or("", |a| a.as_str()))?;
            request.headers_mut().insert(header::HOST, host);
        }
        *request.uri_mut() = Uri::from(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        // An idle connection the server has just closed refuses the request without sending
        // it; then the request goes on the next idle connection, or on a new one.
        loop {
            let (mut sender, reused) = match self.take_idle(&origin) {
                Some(sender) => (sender, true),
                None => (self.connect(uri.clone()).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.keep_when_done(origin, sender);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(error.into_error().into()),
                },
            }
        }
    }

    fn take_idle(&self, origin: &str) -> Option<SendRequest<Body>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.retain(|connection| !connection.sender.is_closed());
        let position = idle.iter().position(|c| c.origin == origin)?;
        Some(idle.swap_remove(position).sender)
    }

    async fn connect(&mut self, uri: Uri) -> Result<SendRequest<Body>, BoxError> {
        use tower::ServiceExt as _;
        let io = self
            .connector
            .ready()
            .await
            .map_err(Into::into)?
            .call(uri)
            .await
            .map_err(Into::into)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection to the API server ended");
            }
        });
        Ok(sender)
    }

    /// An HTTP/1.1 connection carries one exchange at a time: it is idle again once the
    /// response's body has been read (a watch's, when the watch ends).
    fn keep_when_done(&self, origin: String, mut sender: SendRequest<Body>) {
        let idle = self.idle.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                idle.push(IdleConnection { origin, sender });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tower::ServiceExt as _;

    use super::*;

    /// A server answering `ok` to every request, recording each request head; with
    /// `close_after_each`, it closes every connection after its answer, without saying so
    /// (as a server closes an idle keep-alive connection).
    async fn server(close_after_each: bool) -> (u16, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head: Vec<u8> = buffer.drain(..end + 4).collect();
                        seen.lock().unwrap().push(String::from_utf8(head).unwrap());
                        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        stream.write_all(answer.as_bytes()).await.unwrap();
                        if close_after_each {
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted, heads)
    }

    async fn get(
        client: &Http1Client<hyper_util::client::legacy::connect::HttpConnector>,
        port: u16,
    ) -> String {
        let request = Request::get(format!("http://127.0.0.1:{port}/api/v1/pods?watch=1"))
            .body(Body::empty())
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_reuse_the_connection_with_origin_form_and_host() {
        let (port, accepted, heads) = server(false).await;
        let client = Http1Client::new(hyper_util::client::legacy::connect::HttpConnector::new());
        for _ in 0..3 {
            assert_eq!(get(&client, port).await, "ok");
            // The connection goes back to the idle list once its response is read.
            for _ in 0..100 {
                if !client.idle.lock().unwrap().is_empty() {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 3);
        for head in heads.iter() {
            assert!(
                head.starts_with("GET /api/v1/pods?watch=1 HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(
                head.to_ascii_lowercase()
                    .contains(&format!("host: 127.0.0.1:{port}\r\n")),
                "{head}"
            );
        }
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (port, accepted, _) = server(true).await;
        let client = Http1Client::new(hyper_util::client::legacy::connect::HttpConnector::new());
        for _ in 0..3 {
            assert_eq!(get(&client, port).await, "ok");
            // Until the client has seen the close: its idle connection is then skipped.
            for _ in 0..1000 {
                let all_closed = (client.idle.lock().unwrap().iter())
                    .all(|connection| connection.sender.is_closed());
                if all_closed {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }
}
