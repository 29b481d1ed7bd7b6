//! The kubelet's API client, from its kubeconfig: HTTPS with the client certificate, the
//! kubeconfig's headers and timeouts, a bound on the requests in flight.
//!
//! kube-rs's `ClientBuilder` builds the same stack, plus the credentials a kubelet does not
//! use (tokens, passwords, exec plugins, auth providers): its TLS set-up asks the exec-plugin
//! code for a certificate, and that code (JSONPath, regex engines, process handling) was a
//! tenth of the kubelet's executable, resident in every kubelet.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use base64::Engine as _;
use kube::client::ConfigExt as _;
use kube::config::AuthInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::ExposeSecret as _;

pub async fn connect(kubeconfig: &Path, requests_in_flight: usize) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .with_context(|| format!("loading {}", kubeconfig.display()))?;
    let https = https_connector(&config).with_context(|| {
        format!(
            "{}: the kubelet needs the API server's CA and a client certificate and key",
            kubeconfig.display()
        )
    })?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http = super::http1_client::Http1Client::new(connector);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(
            config
                .extra_headers_layer()
                .context("the kubeconfig's headers")?,
        )
        .layer(tower::limit::ConcurrencyLimitLayer::new(requests_in_flight))
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

fn https_connector(config: &kube::Config) -> anyhow::Result<HttpsConnector> {
    check_certificate_auth(&config.auth_info)?;
    if let Some(proxy) = &config.proxy_url {
        anyhow::bail!("the kubelet reaches the API server directly; remove proxy-url {proxy}");
    }
    if config.accept_invalid_certs {
        anyhow::bail!("the kubelet verifies the API server; remove insecure-skip-tls-verify");
    }
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots
            .add(CertificateDer::from(der.clone()))
            .context("the cluster's certificate-authority")?;
    }
    if roots.is_empty() {
        anyhow::bail!("no certificate-authority for the cluster");
    }
    let (chain, key) = client_identity(&config.auth_info)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("the client certificate and key")?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                name.clone()
                    .try_into()
                    .with_context(|| format!("tls-server-name {name}"))?,
            ))
        }
        None => builder,
    };
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    Ok(builder.enable_http1().wrap_connector(http))
}

/// The client certificate is the kubelet's only credential: a kubeconfig that authenticates
/// otherwise is refused, instead of being sent without its credentials.
fn check_certificate_auth(auth: &AuthInfo) -> anyhow::Result<()> {
    let other = [
        ("a token", auth.token.is_some() || auth.token_file.is_some()),
        ("a username", auth.username.is_some()),
        ("an exec plugin", auth.exec.is_some()),
        ("an auth-provider", auth.auth_provider.is_some()),
    ];
    if let Some((name, _)) = other.iter().find(|(_, used)| *used) {
        anyhow::bail!("the kubelet authenticates with its client certificate, not with {name}");
    }
    Ok(())
}

/// The certificate chain and key from `client-certificate[-data]` and `client-key[-data]`.
fn client_identity(
    auth: &AuthInfo,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certificate = pem_bytes(
        auth.client_certificate_data.as_deref(),
        auth.client_certificate.as_deref(),
    )
    .context("client-certificate")?;
    let key = pem_bytes(
        auth.client_key_data.as_ref().map(|key| key.expose_secret()),
        auth.client_key.as_deref(),
    )
    .context("client-key")?;
    let chain = CertificateDer::pem_slice_iter(&certificate)
        .collect::<Result<Vec<_>, _>>()
        .context("client-certificate")?;
    if chain.is_empty() {
        anyhow::bail!("client-certificate holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(&key).context("client-key")?;
    Ok((chain, key))
}

/// A kubeconfig's PEM, inline (`…-data`, base64) or from a file.
fn pem_bytes(data: Option<&str>, file: Option<&str>) -> anyhow::Result<Vec<u8>> {
    match (data, file) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("not base64"),
        (None, Some(file)) => std::fs::read(file).with_context(|| format!("reading {file}")),
        (None, None) => anyhow::bail!("missing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_certificate() -> AuthInfo {
        AuthInfo {
            client_certificate: Some("/var/lib/kubelet/pki/kubelet.crt".into()),
            client_key: Some("/var/lib/kubelet/pki/kubelet.key".into()),
            ..AuthInfo::default()
        }
    }

    #[test]
    fn a_client_certificate_is_the_only_credential_accepted() {
        assert!(check_certificate_auth(&with_certificate()).is_ok());
        let token = AuthInfo {
            token_file: Some("/run/token".into()),
            ..with_certificate()
        };
        let error = check_certificate_auth(&token).unwrap_err().to_string();
        assert!(error.contains("a token"), "{error}");
    }

    #[test]
    fn pem_comes_inline_in_base64_or_from_a_file() {
        let dir = std::env::temp_dir().join(format!("api-client-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cert.pem");
        std::fs::write(&file, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let from_file = pem_bytes(None, file.to_str()).unwrap();
        let inline = pem_bytes(Some("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="), None).unwrap();
        assert_eq!(from_file, inline);
        assert!(pem_bytes(None, None).is_err());
        assert!(pem_bytes(Some("not base64!"), None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_kubeconfig_without_a_key_is_refused() {
        let auth = AuthInfo {
            client_certificate_data: Some("LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==".into()),
            ..AuthInfo::default()
        };
        let error = format!("{:#}", client_identity(&auth).unwrap_err());
        assert!(error.contains("client-"), "{error}");
    }
}
