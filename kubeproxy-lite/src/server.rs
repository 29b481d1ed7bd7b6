//! kube-proxy's two local HTTP endpoints: `/healthz` on 127.0.0.1:10256 (200 once the first
//! sync is in the kernel; what the supervisor's readiness check asks) and `/metrics` on
//! 127.0.0.1:10249 (sync durations, in kube-proxy's metric names).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proxier::{SyncKind, SyncReport};

pub const HEALTHZ_PORT: u16 = 10256;
pub const METRICS_PORT: u16 = 10249;

/// What the servers report, updated by the sync loop.
#[derive(Debug, Default)]
pub struct Status {
    pub last_updated: Option<k8s_openapi::jiff::Timestamp>,
    pub full: Totals,
    pub partial: Totals,
    pub failures: u64,
    pub service_chains: usize,
    pub service_rules: usize,
}

#[derive(Debug, Default)]
pub struct Totals {
    pub count: u64,
    pub seconds: f64,
    pub last: Duration,
}

impl Status {
    pub fn record(&mut self, report: &SyncReport, chains: usize, rules: usize) {
        let totals = match report.kind {
            SyncKind::Full => &mut self.full,
            SyncKind::Partial => &mut self.partial,
        };
        totals.count += 1;
        totals.seconds += report.elapsed.as_secs_f64();
        totals.last = report.elapsed;
        self.last_updated = Some(k8s_openapi::jiff::Timestamp::now());
        self.service_chains = chains;
        self.service_rules = rules;
    }

    fn healthz(&self) -> (u16, String) {
        let now = k8s_openapi::jiff::Timestamp::now();
        match self.last_updated {
            Some(at) => (
                200,
                format!(r#"{{"lastUpdated":"{at}","currentTime":"{now}"}}"#),
            ),
            None => (
                503,
                format!(r#"{{"lastUpdated":"","currentTime":"{now}"}}"#),
            ),
        }
    }

    fn metrics(&self) -> String {
        let mut out = String::new();
        for (name, totals) in [
            (
                "kubeproxy_sync_full_proxy_rules_duration_seconds",
                &self.full,
            ),
            (
                "kubeproxy_sync_partial_proxy_rules_duration_seconds",
                &self.partial,
            ),
        ] {
            out += &format!(
                "# TYPE {name} summary\n{name}_sum {}\n{name}_count {}\n",
                totals.seconds, totals.count
            );
        }
        out += &format!(
            "# TYPE kubeproxy_sync_proxy_rules_last_full_duration_seconds gauge\nkubeproxy_sync_proxy_rules_last_full_duration_seconds {}\n",
            self.full.last.as_secs_f64()
        );
        out += &format!(
            "# TYPE kubeproxy_sync_proxy_rules_nftables_sync_failures_total counter\nkubeproxy_sync_proxy_rules_nftables_sync_failures_total {}\n",
            self.failures
        );
        out += &format!(
            "# TYPE kubeproxy_sync_proxy_rules_service_chains gauge\nkubeproxy_sync_proxy_rules_service_chains {}\n# TYPE kubeproxy_sync_proxy_rules_service_rules gauge\nkubeproxy_sync_proxy_rules_service_rules {}\n",
            self.service_chains, self.service_rules
        );
        if let Some(at) = self.last_updated {
            out += &format!(
                "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\nkubeproxy_sync_proxy_rules_last_timestamp_seconds {}\n",
                at.as_millisecond() as f64 / 1000.0
            );
        }
        out
    }
}

/// Serve `path` on `address` until the task is dropped; a busy port is logged, not fatal.
pub async fn serve(address: SocketAddr, status: Arc<Mutex<Status>>) {
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!("cannot listen on {address}: {e}; not serving it");
            return;
        }
    };
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let status = status.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).await.unwrap_or(0);
            let line = String::from_utf8_lossy(&request[..n]);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (code, content_type, body) = {
                let status = status.lock().unwrap_or_else(|p| p.into_inner());
                match path {
                    "/healthz" | "/livez" => {
                        let (code, body) = status.healthz();
                        (code, "application/json", body)
                    }
                    "/metrics" => (200, "text/plain; version=0.0.4", status.metrics()),
                    _ => (404, "text/plain", "404 page not found\n".to_string()),
                }
            };
            let reason = match code {
                200 => "OK",
                503 => "Service Unavailable",
                _ => "Not Found",
            };
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhealthy_until_the_first_sync() {
        let mut status = Status::default();
        assert_eq!(status.healthz().0, 503);
        let report = SyncReport {
            kind: SyncKind::Full,
            changed_services: 1,
            commands: 10,
            elapsed: Duration::from_millis(5),
            udp_serving: None,
        };
        status.record(&report, 3, 7);
        let (code, body) = status.healthz();
        assert_eq!(code, 200);
        assert!(body.contains("lastUpdated"), "{body}");
        assert!(status
            .metrics()
            .contains("kubeproxy_sync_full_proxy_rules_duration_seconds_count 1"));
    }
}
