//! A lab's PKI: one CA, the API server's serving certificate, and client certificates.
//!
//! Kubernetes identifies a client-certificate user by the subject: CN is the user name,
//! each O a group (`system:masters` for the admin). Certificates are ECDSA P-256 (fast to
//! make, accepted by Go and rustls) and written as PEM; keys are written mode 0600.
//! A CA can be loaded back from its PEM files, so certificates can be issued later by
//! another process than the one that created the CA.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid subject alternative name {0:?}")]
    San(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

fn params(cn: &str, orgs: &[&str]) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    p.distinguished_name = dn;
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    p
}

/// A new self-signed CA.
pub fn generate_ca(common_name: &str) -> Result<CertPair, PkiError> {
    let key = KeyPair::generate()?;
    let mut p = params(common_name, &[]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn sign(ca: &CertPair, mut p: CertificateParams) -> Result<CertPair, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The API server's serving certificate. Each SAN that parses as an IP address becomes an
/// IP SAN, anything else a DNS name (`kubernetes.default.svc.cluster.local`, …).
pub fn server_cert(ca: &CertPair, common_name: &str, sans: &[&str]) -> Result<CertPair, PkiError> {
    let mut p = params(common_name, &[]);
    p.subject_alt_names = sans
        .iter()
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => s
                .to_string()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| PkiError::San(s.to_string())),
        })
        .collect::<Result<_, _>>()?;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(ca, p)
}

/// A key pair for signing service-account tokens (ECDSA P-256), as kubeadm's `sa.key` and
/// `sa.pub`: the private key as PKCS#8 PEM and the public key as PEM.
pub fn generate_signing_key() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// A client certificate for `user` in `groups` (CN=user, O=group…).
pub fn client_cert(ca: &CertPair, user: &str, groups: &[&str]) -> Result<CertPair, PkiError> {
    let mut p = params(user, groups);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(ca, p)
}

impl CertPair {
    /// Write `<cert>` and `<key>` (0600).
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), PkiError> {
        let err = |p: &Path| {
            let path = p.display().to_string();
            move |source| PkiError::Write { path, source }
        };
        std::fs::write(cert, &self.cert_pem).map_err(err(cert))?;
        write_private(key, &self.key_pem).map_err(err(key))
    }

    pub fn read(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| PkiError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        Ok(CertPair {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}

fn write_private(path: &Path, data: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn client_cert_names_user_and_groups() {
        let ca = generate_ca("knetsim-ca").expect("ca");
        let c = client_cert(&ca, "admin", &["system:masters"]).expect("client");
        let der = CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).expect("pem");
        let u = crate::tls::user_from_cert(&der).expect("user");
        assert_eq!(u.name, "admin");
        assert_eq!(u.groups, vec!["system:masters".to_string()]);
        server_cert(
            &ca,
            "kube-apiserver",
            &["127.0.0.1", "kubernetes.default.svc"],
        )
        .expect("server");
    }
}
