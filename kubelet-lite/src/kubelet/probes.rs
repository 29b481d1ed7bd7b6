//! Startup, liveness and readiness probes, as the kubelet's prober workers run them: one task
//! per running container (a restarted container is a new one, with new tasks).
//!
//! * `httpGet` and `tcpSocket` go from the node (the kubelet's network namespace) to the
//!   Pod's IP, as on a real node; `exec` runs the command in the container's namespaces
//!   through the runtime's ExecSync.
//! * Timing: `initialDelaySeconds` after the container started, then every `periodSeconds`,
//!   each attempt limited to `timeoutSeconds`; a result flips after `successThreshold`
//!   successes or `failureThreshold` failures in a row.
//! * Until the startup probe succeeds, the other two do not run and the container is not
//!   `started`. Readiness gives `containerStatuses[].ready` and the Pod's `Ready` and
//!   `ContainersReady` conditions. A failed startup or liveness probe kills the container
//!   (`Killing`), and `restartPolicy` with its back-off decides what happens next.
//!   Every failed attempt is an `Unhealthy` Event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::events::{self, Recorder};
use super::watched::Watched;
use crate::runtime::{ContainerState, Runtime};

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Results {
    /// The startup probe has succeeded (or there is none).
    started: bool,
    ready: bool,
}

pub struct Prober {
    runtime: Runtime,
    recorder: Recorder,
    /// Wakes the pod sync when a result changes.
    changed: Arc<super::pod_cache::Triggers>,
    /// Container ID → results; an entry means its workers run.
    results: Mutex<HashMap<String, Results>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

impl Prober {
    pub fn new(
        runtime: Runtime,
        recorder: Recorder,
        changed: Arc<super::pod_cache::Triggers>,
    ) -> Arc<Prober> {
        Arc::new(Prober {
            runtime,
            recorder,
            changed,
            results: Mutex::default(),
        })
    }

    /// Start the workers of a running container, once.
    pub fn ensure(
        self: &Arc<Self>,
        pod: &Arc<Watched<Pod>>,
        spec: &Container,
        id: &str,
        started_at_ms: u64,
        pod_ip: Option<String>,
    ) {
        if spec.startup_probe.is_none()
            && spec.liveness_probe.is_none()
            && spec.readiness_probe.is_none()
        {
            return;
        }
        {
            let Ok(mut results) = self.results.lock() else {
                return;
            };
            if results.contains_key(id) {
                return;
            }
            results.insert(
                id.to_string(),
                Results {
                    started: spec.startup_probe.is_none(),
                    ready: false,
                },
            );
        }
        let worker = Worker {
            prober: self.clone(),
            pod: pod.clone(),
            spec: spec.clone(),
            id: id.to_string(),
            started_at_ms,
            host: pod_ip.unwrap_or_default(),
        };
        tokio::spawn(worker.run());
    }

    /// `started` of a running container: true unless a startup probe has not yet passed.
    pub fn started(&self, spec: &Container, id: &str) -> bool {
        spec.startup_probe.is_none() || self.get(id).is_some_and(|r| r.started)
    }

    /// `ready` of a running container: its readiness probe's result, true without one.
    pub fn ready(&self, spec: &Container, id: &str) -> bool {
        self.started(spec, id)
            && (spec.readiness_probe.is_none() || self.get(id).is_some_and(|r| r.ready))
    }

    fn get(&self, id: &str) -> Option<Results> {
        self.results.lock().ok()?.get(id).copied()
    }

    /// Change a container's results; if that changed them, its Pod is synced (its status
    /// posted). Every probe success used to resync every Pod of the node: a readiness probe
    /// every few seconds (the DNS pods') ran a worker per Pod, each on a blocking thread.
    fn update(&self, id: &str, pod_uid: &str, change: impl FnOnce(&mut Results)) {
        let changed = self
            .results
            .lock()
            .is_ok_and(|mut results| apply(&mut results, id, change));
        if changed {
            self.changed.pod_changed(pod_uid);
        }
    }

    /// Forget containers that no longer exist.
    pub fn retain(&self, alive: &std::collections::HashSet<String>) {
        if let Ok(mut results) = self.results.lock() {
            results.retain(|id, _| alive.contains(id));
        }
    }
}

/// Change the results of container `id` (if its workers run); whether they changed.
fn apply(
    results: &mut HashMap<String, Results>,
    id: &str,
    change: impl FnOnce(&mut Results),
) -> bool {
    results.get_mut(id).is_some_and(|r| {
        let before = *r;
        change(r);
        *r != before
    })
}

struct Worker {
    prober: Arc<Prober>,
    pod: Arc<Watched<Pod>>,
    spec: Container,
    id: String,
    started_at_ms: u64,
    host: String,
}

impl Worker {
    fn update(&self, change: impl FnOnce(&mut Results)) {
        let uid = self.pod.metadata.uid.as_deref().unwrap_or_default();
        self.prober.update(&self.id, uid, change);
    }

    async fn run(self) {
        if let Some(probe) = self.spec.startup_probe.clone() {
            if !self.until_threshold(Kind::Startup, &probe).await {
                return;
            }
            self.update(|r| r.started = true);
        }
        let liveness = async {
            if let Some(probe) = self.spec.liveness_probe.clone() {
                self.until_threshold(Kind::Liveness, &probe).await;
            }
        };
        let readiness = async {
            if let Some(probe) = self.spec.readiness_probe.clone() {
                self.readiness(&probe).await;
            }
        };
        tokio::join!(liveness, readiness);
    }

    /// Probe until it succeeds (startup: true) or fails `failureThreshold` times in a row
    /// (the container is killed: false). Liveness never "succeeds for good": it probes on.
    async fn until_threshold(&self, kind: Kind, probe: &Probe) -> bool {
        let mut failures = 0;
        let mut successes = 0;
        self.initial_delay(probe).await;
        loop {
            if !self.running() {
                return false;
            }
            match self.attempt(probe).await {
                Ok(()) => {
                    failures = 0;
                    successes += 1;
                    if kind == Kind::Startup && successes >= threshold(probe.success_threshold, 1) {
                        return true;
                    }
                }
                Err(message) => {
                    successes = 0;
                    failures += 1;
                    self.unhealthy(kind, &message);
                    if failures >= threshold(probe.failure_threshold, 3) {
                        self.kill(kind, probe).await;
                        return false;
                    }
                }
            }
            tokio::time::sleep(period(probe)).await;
        }
    }

    async fn readiness(&self, probe: &Probe) {
        let (mut failures, mut successes) = (0, 0);
        self.initial_delay(probe).await;
        while self.running() {
            match self.attempt(probe).await {
                Ok(()) => {
                    failures = 0;
                    successes += 1;
                    if successes >= threshold(probe.success_threshold, 1) {
                        self.update(|r| r.ready = true);
                    }
                }
                Err(message) => {
                    successes = 0;
                    failures += 1;
                    self.unhealthy(Kind::Readiness, &message);
                    if failures >= threshold(probe.failure_threshold, 3) {
                        self.update(|r| r.ready = false);
                    }
                }
            }
            tokio::time::sleep(period(probe)).await;
        }
    }

    async fn initial_delay(&self, probe: &Probe) {
        let delay_ms = probe.initial_delay_seconds.unwrap_or(0).max(0) as u64 * 1000;
        let due = self.started_at_ms + delay_ms;
        let now = crate::now_ms();
        if due > now {
            tokio::time::sleep(Duration::from_millis(due - now)).await;
        }
    }

    fn running(&self) -> bool {
        let alive = tokio::task::block_in_place(|| self.prober.runtime.container_status(&self.id))
            .is_ok_and(|s| s.state == ContainerState::Running);
        alive
            && self
                .prober
                .results
                .lock()
                .is_ok_and(|r| r.contains_key(&self.id))
    }

    fn unhealthy(&self, kind: Kind, message: &str) {
        self.prober.recorder.pod_event(
            &self.pod,
            events::container_path(&self.spec.name),
            events::WARNING,
            "Unhealthy",
            format!("{} probe failed: {message}", kind.name()),
        );
    }

    async fn kill(&self, kind: Kind, probe: &Probe) {
        let name = &self.spec.name;
        self.prober.recorder.pod_event(
            &self.pod,
            events::container_path(name),
            events::NORMAL,
            "Killing",
            format!(
                "Container {name} failed {} probe, will be restarted",
                kind.name().to_lowercase()
            ),
        );
        let grace = probe
            .termination_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .clamp(0, 300) as u64;
        let (runtime, id) = (self.prober.runtime.clone(), self.id.clone());
        let stopped = tokio::task::spawn_blocking(move || {
            runtime.stop_container(&id, Duration::from_secs(grace))
        })
        .await;
        if let Ok(Err(e)) = stopped {
            tracing::warn!(container = %self.id, "stopping after a failed probe: {e}");
        }
        self.prober.changed.resync_all();
    }

    /// One attempt, within `timeoutSeconds`.
    async fn attempt(&self, probe: &Probe) -> Result<(), String> {
        let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
        if let Some(exec) = &probe.exec {
            let argv = exec.command.clone().unwrap_or_default();
            let (runtime, id) = (self.prober.runtime.clone(), self.id.clone());
            let output =
                tokio::task::spawn_blocking(move || runtime.exec_sync(&id, &argv, timeout))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
            if output.status.success() {
                return Ok(());
            }
            let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
            text += &String::from_utf8_lossy(&output.stderr);
            return Err(match output.status.code() {
                Some(code) if text.trim().is_empty() => format!("command exited with {code}"),
                _ => text.trim_end().to_string(),
            });
        }
        if let Some(http) = &probe.http_get {
            let port = self.port(&http.port)?;
            let host = http.host.clone().unwrap_or_else(|| self.host.clone());
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            let scheme = http.scheme.as_deref().unwrap_or("HTTP");
            let tls = match scheme {
                "HTTP" => false,
                "HTTPS" => true,
                _ => return Err(format!("unknown scheme {scheme}")),
            };
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            let url = format!("{}://{host}:{port}{path}", scheme.to_lowercase());
            let get = http_get(&host, port, &path, &headers, tls);
            return match tokio::time::timeout(timeout, get).await {
                Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
                Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
                Ok(Err(e)) => Err(format!(
                    "Get \"{url}\": dial tcp {host}:{port}: connect: {}",
                    go_error(&e)
                )),
                Err(_) => Err(format!(
                    "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
                )),
            };
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = self.port(&tcp.port)?;
            let host = tcp.host.clone().unwrap_or_else(|| self.host.clone());
            let connect = tokio::net::TcpStream::connect((host.as_str(), port));
            return match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: connect: {}", go_error(&e))),
                Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
            };
        }
        Err("the probe has no handler knetsim supports (exec, httpGet, tcpSocket)".into())
    }

    /// A probe's port: a number, or the name of one of the container's ports.
    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
            IntOrString::String(name) => {
                if let Ok(n) = name.parse::<u16>() {
                    return Ok(n);
                }
                self.spec
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())
                    .ok_or_else(|| format!("port {name:?} is not a port of the container"))
            }
        }
    }
}

/// An I/O error as Go's net package words it (`connection refused`).
fn go_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        _ => e.to_string(),
    }
}

/// A TLS client that accepts any server certificate: probes check liveness, not identity
/// (`InsecureSkipVerify` in the kubelet's prober).
fn insecure_tls() -> std::io::Result<std::sync::Arc<rustls::ClientConfig>> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

#[derive(Debug)]
struct AnyServer(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn threshold(value: Option<i32>, default: i32) -> i32 {
    value.unwrap_or(default).max(1)
}

fn period(probe: &Probe) -> Duration {
    Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64)
}

/// `GET path` as the kubelet's prober sends it (over TLS without verifying the server, as
/// the kubelet does for `HTTPS`); the response's status code.
async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    tls: bool,
) -> std::io::Result<u16> {
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    if tls {
        let connector = tokio_rustls::TlsConnector::from(insecure_tls()?);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(std::io::Error::other)?;
        let stream = connector.connect(name, tcp).await?;
        return exchange(stream, host, port, path, headers).await;
    }
    exchange(tcp, host, port, path, headers).await
}

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<u16> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("user-agent"))
    {
        request += "User-Agent: kube-probe/1.32\r\n";
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
    {
        request += "Accept: */*\r\n";
    }
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    request += "Connection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a change of a watched container's results counts: a readiness probe that keeps
    /// passing wakes nothing.
    #[test]
    fn a_result_counts_as_changed_only_when_it_changes() {
        let mut results = HashMap::from([("c1".to_string(), Results::default())]);
        assert!(apply(&mut results, "c1", |r| r.ready = true));
        assert!(!apply(&mut results, "c1", |r| r.ready = true));
        assert!(results["c1"].ready);
        assert!(apply(&mut results, "c1", |r| r.ready = false));
        assert!(apply(&mut results, "c1", |r| r.started = true));
        assert!(!apply(&mut results, "c1", |r| r.started = true));
        // A container whose workers stopped (no entry) has nothing to change.
        assert!(!apply(&mut results, "gone", |r| r.ready = true));
        assert!(!results.contains_key("gone"));
    }
}
