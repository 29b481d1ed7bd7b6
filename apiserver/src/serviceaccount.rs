//! Service-account tokens, as kube-apiserver issues and checks them.
//!
//! - `POST …/serviceaccounts/<name>/token` (a `TokenRequest`) signs a JWT (ES256) with the
//!   lab's service-account key: issuer, audiences, expiry, and the `kubernetes.io` claim that
//!   names the namespace, the service account and the object the token is bound to (a Pod or
//!   a Secret; a Pod's node too).
//! - `Authorization: Bearer <jwt>` is checked against the public keys: signature, issuer,
//!   audience, time window, and that the service account (and the bound pod) still exist with
//!   the same uid. So a deleted pod's token stops working, as in Kubernetes.
//! - Pods get `spec.serviceAccountName` (`default` unless set) and, unless automounting is
//!   off, the `kube-api-access-<suffix>` projected volume mounted at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in every container, as the ServiceAccount
//!   admission plugin adds it; the kubelet fills it in.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde_json::{json, Value};

use crate::error::{target, AppError, FieldError};
use crate::registry;
use crate::rest::{decode_body, get_existing, json_response, Target};
use crate::storage::meta_str;
use crate::tls::UserInfo;
use crate::AppState;

/// Where a mounted token lives in every container, as in Kubernetes.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// What the admission plugin asks the kubelet for: one hour and seven seconds, so a token
/// the kubelet refreshes at 80 % of its life is recognisable as a mounted one.
const MOUNTED_TOKEN_SECONDS: i64 = 3607;
/// A TokenRequest's default lifetime, and the shortest one allowed.
const DEFAULT_TOKEN_SECONDS: i64 = 3600;
const MIN_TOKEN_SECONDS: i64 = 600;
/// Clock skew tolerated on `nbf`/`exp`, as the Go validator allows.
const LEEWAY_SECONDS: i64 = 60;

/// The key files and names the API server is started with.
#[derive(Debug, Clone)]
pub struct TokenFiles {
    /// `--service-account-signing-key-file`: PKCS#8 PEM (ECDSA P-256).
    pub signing_key: PathBuf,
    /// `--service-account-key-file`: PEM public keys tokens are accepted from.
    pub public_keys: Vec<PathBuf>,
    /// `--service-account-issuer`.
    pub issuer: String,
    /// `--api-audiences`; empty means the issuer.
    pub audiences: Vec<String>,
}

/// The signing key, the accepted public keys, and the names checked in every token.
pub struct Tokens {
    signer: EcdsaKeyPair,
    signer_kid: String,
    verifiers: Vec<(String, Vec<u8>)>,
    issuer: String,
    audiences: Vec<String>,
    rng: SystemRandom,
}

/// Kubernetes' key id: the unpadded base64url SHA-256 of the public key's DER (SPKI).
fn key_id(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
}

/// DER `SubjectPublicKeyInfo` of an uncompressed P-256 point.
fn p256_spki(point: &[u8]) -> Vec<u8> {
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING point }
    let mut der = vec![
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    der.extend_from_slice(point);
    der
}

fn read_public_key(path: &Path) -> anyhow::Result<(String, Vec<u8>)> {
    let der = SubjectPublicKeyInfoDer::from_pem_file(path)
        .with_context(|| format!("reading the public key in {}", path.display()))?;
    use x509_parser::prelude::FromDer as _;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(der.as_ref())
        .map_err(|e| anyhow::anyhow!("{}: not a public key: {e}", path.display()))?;
    Ok((key_id(der.as_ref()), spki.subject_public_key.data.to_vec()))
}

impl Tokens {
    pub fn load(files: &TokenFiles) -> anyhow::Result<Tokens> {
        let rng = SystemRandom::new();
        let key = PrivateKeyDer::from_pem_file(&files.signing_key).with_context(|| {
            format!(
                "reading the service-account signing key {}",
                files.signing_key.display()
            )
        })?;
        let PrivateKeyDer::Pkcs8(pkcs8) = key else {
            anyhow::bail!(
                "{}: the service-account signing key must be a PKCS#8 ECDSA P-256 key",
                files.signing_key.display()
            );
        };
        let signer = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: not an ECDSA P-256 key ({e})",
                files.signing_key.display()
            )
        })?;
        let own_point = signer.public_key().as_ref().to_vec();
        let signer_kid = key_id(&p256_spki(&own_point));
        let mut verifiers = vec![(signer_kid.clone(), own_point)];
        for path in &files.public_keys {
            let (kid, point) = read_public_key(path)?;
            if !verifiers.iter().any(|(k, _)| *k == kid) {
                verifiers.push((kid, point));
            }
        }
        let audiences = if files.audiences.is_empty() {
            vec![files.issuer.clone()]
        } else {
            files.audiences.clone()
        };
        Ok(Tokens {
            signer,
            signer_kid,
            verifiers,
            issuer: files.issuer.clone(),
            audiences,
            rng,
        })
    }

    /// A signed compact JWS of `claims`.
    fn sign(&self, claims: &Value) -> Result<String, AppError> {
        let header = json!({"alg": "ES256", "kid": self.signer_kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .signer
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| AppError::Internal("signing the token failed".into()))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The claims of a token this server accepts (signature, issuer, audience, time), or None.
    fn verify(&self, token: &str, now: i64) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "ES256" {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let signed = &token[..h.len() + 1 + c.len()];
        let kid = header.get("kid").and_then(Value::as_str);
        let verified = self
            .verifiers
            .iter()
            .filter(|(k, _)| kid.is_none_or(|kid| kid == k))
            .any(|(_, point)| {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed.as_bytes(), &sig)
                    .is_ok()
            });
        if !verified {
            return None;
        }
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()?;
        if claims.get("iss")?.as_str()? != self.issuer {
            return None;
        }
        let audiences: Vec<&str> = match claims.get("aud")? {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        if !audiences
            .iter()
            .any(|a| self.audiences.iter().any(|ours| ours == a))
        {
            return None;
        }
        let exp = claims.get("exp")?.as_i64()?;
        let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if now > exp + LEEWAY_SECONDS || now + LEEWAY_SECONDS < nbf {
            return None;
        }
        Some(claims)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The user a bearer token stands for, if it is a valid service-account token whose service
/// account (and bound pod) still exist.
pub async fn authenticate(state: &AppState, token: &str) -> Option<UserInfo> {
    let tokens = state.tokens.as_ref()?;
    let claims = tokens.verify(token, unix_now())?;
    let k8s = claims.get("kubernetes.io")?;
    let ns = k8s.get("namespace")?.as_str()?;
    let sa_name = k8s.pointer("/serviceaccount/name")?.as_str()?;
    let sa_uid = k8s.pointer("/serviceaccount/uid")?.as_str()?;
    let sa = lookup(state, "serviceaccounts", Some(ns), sa_name).await?;
    if meta_str(&sa, "uid") != sa_uid {
        return None;
    }
    if let Some(pod_ref) = k8s.get("pod") {
        let pod = lookup(state, "pods", Some(ns), pod_ref.get("name")?.as_str()?).await?;
        if meta_str(&pod, "uid") != pod_ref.get("uid")?.as_str()? {
            return None;
        }
        let deleted = meta_str(&pod, "deletionTimestamp");
        if !deleted.is_empty() && deleted < rfc3339(unix_now()).as_str() {
            return None;
        }
    }
    Some(UserInfo {
        name: format!("system:serviceaccount:{ns}:{sa_name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    })
}

async fn lookup(state: &AppState, plural: &str, ns: Option<&str>, name: &str) -> Option<Value> {
    let info = registry::find("", "v1", plural)?;
    match state.store.get_latest(info, ns, name).await {
        Ok(found) => found.map(|(obj, _)| obj),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a service-account token's objects");
            None
        }
    }
}

fn invalid(field: &str, message: String) -> AppError {
    AppError::Invalid(
        target("authentication.k8s.io", "TokenRequest", ""),
        vec![FieldError {
            field: field.into(),
            reason: "FieldValueInvalid",
            message,
        }],
    )
}

/// `POST namespaces/<ns>/serviceaccounts/<name>/token`: a TokenRequest, answered with the
/// signed token in its status (201), as `kubectl create token` expects.
pub async fn create_token(
    state: &AppState,
    t: &Target,
    name: &str,
    h: &HeaderMap,
    body: &[u8],
) -> Result<Response, AppError> {
    let tokens = state.tokens.as_ref().ok_or(AppError::NoRoute)?;
    let ns = t.namespace.as_deref().unwrap_or("default");
    let (sa, _) = get_existing(state, t, name).await?;
    let request = decode_body(h, body)?;
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let seconds = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_TOKEN_SECONDS);
    if seconds < MIN_TOKEN_SECONDS {
        return Err(invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
        ));
    }
    if seconds > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            format!(
                "Invalid value: {seconds}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let audiences: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => tokens.audiences.clone(),
    };
    let mut k8s = json!({
        "namespace": ns,
        "serviceaccount": {"name": name, "uid": meta_str(&sa, "uid")},
    });
    let bound = spec.get("boundObjectRef").filter(|b| b.is_object());
    if let Some(bound) = bound {
        bind_claims(state, ns, bound, &mut k8s).await?;
    }
    let now = unix_now();
    let claims = json!({
        "aud": audiences,
        "exp": now + seconds,
        "iat": now,
        "iss": tokens.issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
        "nbf": now,
        "sub": format!("system:serviceaccount:{ns}:{name}"),
    });
    let token = tokens.sign(&claims)?;
    let mut spec_out = json!({"audiences": audiences, "expirationSeconds": seconds});
    if let Some(bound) = bound {
        spec_out["boundObjectRef"] = bound.clone();
    }
    Ok(json_response(
        StatusCode::CREATED,
        json!({
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
            "spec": spec_out,
            "status": {"token": token, "expirationTimestamp": rfc3339(now + seconds)},
        }),
    ))
}

/// The `pod`/`secret` (and `node`) claims of a bound token, after checking the object exists
/// with the uid the request names.
async fn bind_claims(
    state: &AppState,
    ns: &str,
    bound: &Value,
    k8s: &mut Value,
) -> Result<(), AppError> {
    let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = bound.get("name").and_then(Value::as_str).unwrap_or("");
    let (plural, claim) = match kind {
        "Pod" => ("pods", "pod"),
        "Secret" => ("secrets", "secret"),
        other => {
            return Err(invalid(
                "spec.boundObjectRef.kind",
                format!("Unsupported value: {other:?}: supported values: \"Pod\", \"Secret\""),
            ))
        }
    };
    let object = lookup(state, plural, Some(ns), name)
        .await
        .ok_or_else(|| AppError::not_found("", plural, name))?;
    let uid = meta_str(&object, "uid");
    if let Some(wanted) = bound.get("uid").and_then(Value::as_str) {
        if !wanted.is_empty() && wanted != uid {
            return Err(AppError::Conflict(
                target("", plural, name),
                format!("the UID in the bound object reference ({wanted}) does not match the UID in record ({uid}); the object might have been deleted and then recreated"),
            ));
        }
    }
    k8s[claim] = json!({"name": name, "uid": uid});
    if let Some(node_name) = object.pointer("/spec/nodeName").and_then(Value::as_str) {
        if let Some(node) = lookup(state, "nodes", None, node_name).await {
            k8s["node"] = json!({"name": node_name, "uid": meta_str(&node, "uid")});
        }
    }
    Ok(())
}

/// The ServiceAccount admission step for a new Pod: its service account must exist, and
/// unless automounting is off every container gets the API access volume. Without a signing
/// key (the plugin is off) pods are left as they are.
pub async fn admit_pod(state: &AppState, ns: &str, pod: &mut Value) -> Result<(), AppError> {
    if state.tokens.is_none() || !pod.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    let pod_name = meta_str(pod, "name").to_string();
    let sa_name = match pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
    {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => match pod.pointer("/spec/serviceAccount").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => "default".to_string(),
        },
    };
    pod["spec"]["serviceAccountName"] = json!(sa_name);
    pod["spec"]["serviceAccount"] = json!(sa_name);
    // The `default` account is made by the controller-manager right after its namespace:
    // give it a moment, as kube-apiserver's admission retries it (10 times, 100–200 ms apart).
    let attempts = if sa_name == "default" { 10 } else { 1 };
    let mut found = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 100;
            tokio::time::sleep(std::time::Duration::from_millis(100 + jitter)).await;
        }
        found = lookup(state, "serviceaccounts", Some(ns), &sa_name).await;
        if found.is_some() {
            break;
        }
        if attempt == 0 {
            // No account, maybe no namespace: that is the error to give, and at once.
            crate::write::ensure_namespace(state, ns).await?;
        }
    }
    let sa = found
        .ok_or_else(|| {
            AppError::Forbidden(
                target("", "pods", &pod_name),
                format!("error looking up service account {ns}/{sa_name}: serviceaccount \"{sa_name}\" not found"),
            )
        })?;
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .or_else(|| sa.get("automountServiceAccountToken"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if automount {
        mount_api_access(pod);
    }
    Ok(())
}

/// Add the `kube-api-access-*` volume and its mount, unless a container already mounts
/// something at the token path.
fn mount_api_access(pod: &mut Value) {
    let already = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| pod["spec"].get(*k).and_then(Value::as_array))
        .flatten()
        .any(|c| {
            c.get("volumeMounts")
                .and_then(Value::as_array)
                .is_some_and(|m| {
                    m.iter().any(|m| {
                        m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH)
                    })
                })
        });
    if already {
        return;
    }
    let volume_name = format!("kube-api-access-{}", crate::objects::random_suffix());
    let volume = json!({
        "name": volume_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": MOUNTED_TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    let spec = &mut pod["spec"];
    match spec.get_mut("volumes").and_then(Value::as_array_mut) {
        Some(volumes) => volumes.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    for key in ["containers", "initContainers"] {
        if let Some(list) = spec.get_mut(key).and_then(Value::as_array_mut) {
            for c in list.iter_mut().filter(|c| c.is_object()) {
                match c.get_mut("volumeMounts").and_then(Value::as_array_mut) {
                    Some(m) => m.push(mount.clone()),
                    None => c["volumeMounts"] = json!([mount]),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(dir: &Path) -> Tokens {
        let (private, public) = crate::pki::generate_signing_key().expect("key");
        std::fs::write(dir.join("sa.key"), private).expect("write");
        std::fs::write(dir.join("sa.pub"), public).expect("write");
        Tokens::load(&TokenFiles {
            signing_key: dir.join("sa.key"),
            public_keys: vec![dir.join("sa.pub")],
            issuer: "https://kubernetes.default.svc.cluster.local".into(),
            audiences: Vec::new(),
        })
        .expect("load")
    }

    fn claims(now: i64) -> Value {
        json!({"iss": "https://kubernetes.default.svc.cluster.local",
               "aud": ["https://kubernetes.default.svc.cluster.local"],
               "exp": now + 600, "nbf": now, "iat": now})
    }

    #[test]
    fn a_signed_token_verifies_and_a_tampered_one_does_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = tokens(dir.path());
        // The public key file and the signing key name the same key: one verifier.
        assert_eq!(t.verifiers.len(), 1);
        let now = unix_now();
        let token = t.sign(&claims(now)).expect("sign");
        assert!(t.verify(&token, now).is_some());
        let mut forged = token.clone();
        forged.insert(token.find('.').expect("dot") + 2, 'x');
        assert!(t.verify(&forged, now).is_none());
        assert!(t.verify("not.a.token", now).is_none());
    }

    #[test]
    fn expired_and_foreign_audience_tokens_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = tokens(dir.path());
        let now = unix_now();
        let token = t.sign(&claims(now)).expect("sign");
        assert!(t.verify(&token, now + 600 + LEEWAY_SECONDS + 1).is_none());
        let mut other = claims(now);
        other["aud"] = json!(["vault"]);
        assert!(t.verify(&t.sign(&other).expect("sign"), now).is_none());
        let mut other = claims(now);
        other["iss"] = json!("https://elsewhere");
        assert!(t.verify(&t.sign(&other).expect("sign"), now).is_none());
    }

    #[test]
    fn admission_mounts_the_api_access_volume_once() {
        let mut pod =
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "volumeMounts": []}]}});
        mount_api_access(&mut pod);
        mount_api_access(&mut pod);
        assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        let name = pod["spec"]["volumes"][0]["name"].as_str().expect("name");
        assert!(name.starts_with("kube-api-access-"));
        for c in pod["spec"]["containers"].as_array().expect("containers") {
            assert_eq!(c["volumeMounts"][0]["mountPath"], TOKEN_MOUNT_PATH);
            assert_eq!(c["volumeMounts"].as_array().map(Vec::len), Some(1));
        }
    }
}
