//! HTTPS with client-certificate authentication, as kube-apiserver does it.
//!
//! The TLS handshake accepts clients with or without a certificate (a certificate, when
//! sent, must chain to the lab CA); who the client is gets decided afterwards, per request,
//! by `require_user`, so an anonymous client receives a proper 401 `Status` rather than a
//! failed handshake. The user is the certificate's CN and its groups are the O values.
//!
//! Handshakes run in their own tasks and finished connections are handed to axum through
//! a channel, so one slow client cannot stall `accept`. The listener's address type is
//! `Peer`, so axum's `ConnectInfo<Peer>` carries the user into each request.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::AppError;

/// PEM files the server needs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Serving certificate (chain) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that signs client certificates.
    pub client_ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("invalid client CA {path}: {source}")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("invalid serving certificate or key: {0}")]
    Config(#[source] rustls::Error),
}

/// Who sent a request, as proven by its client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// One accepted connection: where from, and who (if a certificate was sent).
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub user: Option<UserInfo>,
}

/// TLS 1.3 session tickets sent on each new connection: what a rustls client keeps per
/// server (`ClientSessionMemoryCache`'s limit).
const TICKETS_PER_CONNECTION: usize = 8;

/// The rustls configuration: our certificate, optional client certificates from the CA.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let roots = read_roots(&files.client_ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(TlsError::Verifier)?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    // HTTP/1.1 only: watches stream fine over chunked encoding, and it keeps the build lean.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Session tickets, as kube-apiserver sends them (stateless: no server memory per
    // session). An HTTP/1.1 client opens a connection per request in flight, several at
    // once (kube-rs: 16 for 16 requests); with a ticket each, they resume the session
    // instead of repeating the certificate signatures and chain checks of a full handshake.
    // 8 is as many as rustls clients keep per server.
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Config)?;
    cfg.send_tls13_tickets = TICKETS_PER_CONNECTION;
    Ok(Arc::new(cfg))
}

/// The PEM certificates (a chain) in `path`.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    CertificateDer::pem_file_iter(path)
        .map_err(read_err)?
        .collect::<Result<_, _>>()
        .map_err(read_err)
}

/// The PEM private key in `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The CA certificates in `path`, as trust roots.
pub fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs(path)? {
        roots.add(ca).map_err(|source| TlsError::ClientCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// CN and O values of a DER certificate.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(UserInfo { name, groups })
}

/// A TCP listener that yields finished TLS connections.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (sock, addr) = tokio::select! {
                    r = tcp.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                // As Go (and so kube-apiserver) sets it on every TCP connection: without it
                // a response's last small segment waits for the client's delayed ACK (40 ms)
                // whenever the segments before it are still unacknowledged.
                if let Err(e) = sock.set_nodelay(true) {
                    tracing::debug!(%addr, error = %e, "cannot set TCP_NODELAY");
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(sock),
                    );
                    match hs.await {
                        Ok(Ok(stream)) => {
                            let user = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(|c| user_from_cert(c));
                            let _ = tx.send((stream, Peer { addr, user })).await;
                        }
                        // A client that fails the handshake is its own problem.
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            user: None,
        })
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// Reject requests without a verified user (401), except health checks. Users are proven by a
/// client certificate or by a service-account bearer token.
pub async fn require_user(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if matches!(path, "/healthz" | "/livez" | "/readyz") {
        return next.run(req).await;
    }
    let from_tls = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .and_then(|c| c.0.user.clone());
    // In-process tests insert a UserInfo directly.
    let mut user = from_tls.or_else(|| req.extensions().get::<UserInfo>().cloned());
    if user.is_none() {
        let bearer = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if let Some(token) = bearer {
            user = crate::serviceaccount::authenticate(&state, token).await;
        }
    }
    match user {
        Some(u) => {
            req.extensions_mut().insert(u);
            next.run(req).await
        }
        None => AppError::Unauthorized.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use rustls::pki_types::ServerName;
    use rustls::HandshakeKind;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A lab CA in `dir`, and a listener serving a certificate it signed.
    async fn listener(dir: &Path) -> (pki::CertPair, TlsListener) {
        let ca = pki::generate_ca("knetsim-ca").expect("ca");
        ca.write(&dir.join("ca.crt"), &dir.join("ca.key"))
            .expect("write ca");
        let serving = pki::server_cert(&ca, "kube-apiserver", &["127.0.0.1"]).expect("server");
        serving
            .write(&dir.join("s.crt"), &dir.join("s.key"))
            .expect("write serving cert");
        let config = server_config(&TlsFiles {
            cert: dir.join("s.crt"),
            key: dir.join("s.key"),
            client_ca: dir.join("ca.crt"),
        })
        .expect("server config");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        (ca, TlsListener::new(tcp, config).expect("listener"))
    }

    /// A client with the admin's certificate, trusting the CA in `dir`; like kube-rs's, one
    /// configuration (and session cache) for all its connections.
    fn admin_client(dir: &Path, ca: &pki::CertPair) -> Arc<rustls::ClientConfig> {
        let admin = pki::client_cert(ca, "admin", &["system:masters"]).expect("client cert");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocols")
            .with_root_certificates(read_roots(&dir.join("ca.crt")).expect("roots"))
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(admin.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("client chain"),
                PrivateKeyDer::from_pem_slice(admin.key_pem.as_bytes()).expect("client key"),
            )
            .expect("client config");
        Arc::new(config)
    }

    /// One connection: the server's end, who it says the client is, and the client's end;
    /// with `read_tickets`, after the client has read a byte from the server (and so the
    /// session tickets sent before it).
    async fn connect(
        listener: &mut TlsListener,
        client: &Arc<rustls::ClientConfig>,
        read_tickets: bool,
    ) -> (
        TlsStream<TcpStream>,
        Peer,
        tokio_rustls::client::TlsStream<TcpStream>,
    ) {
        let addr = listener.local_addr().expect("address").addr;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let handshake = tokio_rustls::TlsConnector::from(client.clone()).connect(name, tcp);
        let (server_side, client_side) = tokio::join!(listener.accept(), handshake);
        let ((mut server, peer), mut client) = (server_side, client_side.expect("handshake"));
        if read_tickets {
            server.write_all(b"x").await.expect("server writes");
            server.flush().await.expect("server flushes");
            let mut byte = [0u8; 1];
            client.read_exact(&mut byte).await.expect("client reads");
        }
        (server, peer, client)
    }

    #[tokio::test]
    async fn accepted_connections_send_at_once_and_name_their_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, mut listener) = listener(dir.path()).await;
        let client = admin_client(dir.path(), &ca);

        let (stream, peer, _client) = connect(&mut listener, &client, false).await;

        // Nagle's algorithm would hold a response's last segment for the client's ACK.
        assert!(stream.get_ref().0.nodelay().expect("nodelay"));
        let user = peer.user.expect("a verified user");
        assert_eq!(user.name, "admin");
        assert_eq!(user.groups, vec!["system:masters".to_string()]);
    }

    #[tokio::test]
    async fn later_connections_of_a_client_resume_its_session_and_keep_its_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca, mut listener) = listener(dir.path()).await;
        let client = admin_client(dir.path(), &ca);

        let (_, _, first) = connect(&mut listener, &client, true).await;
        assert_eq!(
            first.get_ref().1.handshake_kind(),
            Some(HandshakeKind::Full)
        );
        // Each on a ticket of the first connection (their own stay unread), as the
        // connections a client opens at once after its first one.
        let mut open = Vec::new();
        for _ in 0..TICKETS_PER_CONNECTION {
            let (server, peer, later) = connect(&mut listener, &client, false).await;
            assert_eq!(
                later.get_ref().1.handshake_kind(),
                Some(HandshakeKind::Resumed)
            );
            assert_eq!(peer.user.expect("a verified user").name, "admin");
            // Open at once, as a client's connections for its requests in flight.
            open.push((server, later));
        }
    }
}
