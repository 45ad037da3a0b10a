//! Certificates: the identity that serves WebTransport (and WSS when configured), and its
//! SHA-256 for browsers' `serverCertificateHashes`.
//!
//! With a PEM cert + key configured, that pair serves both transports. With none, a fresh
//! self-signed ECDSA P-256 certificate valid for 14 days is made at start; browsers accept a
//! self-signed WebTransport certificate by hash only under exactly those conditions.

use std::path::Path;

use wtransport::Identity;

use crate::config::Config;

/// Browsers refuse `serverCertificateHashes` for certificates valid longer than two weeks.
pub const DEV_CERT_VALIDITY_DAYS: u32 = 14;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("loading TLS cert/key: {0}")]
    Load(String),
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    #[error("the TLS certificate chain is empty")]
    Empty,
}

/// The certificate in use and what `/cert-hash` publishes about it.
pub struct Certs {
    pub identity: Identity,
    pub sha256: [u8; 32],
    pub self_signed: bool,
}

impl Certs {
    pub async fn from_config(cfg: &Config) -> Result<Self, CertError> {
        match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => {
                let identity = Identity::load_pemfiles(cert, key)
                    .await
                    .map_err(|e| CertError::Load(e.to_string()))?;
                Self::new(identity, false)
            }
            _ => Self::new(dev_identity()?, true),
        }
    }

    fn new(identity: Identity, self_signed: bool) -> Result<Self, CertError> {
        let leaf = identity.certificate_chain().as_slice().first().ok_or(CertError::Empty)?;
        let sha256 = *leaf.hash().as_ref();
        Ok(Self { identity, sha256, self_signed })
    }

    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A self-signed ECDSA P-256 identity for localhost, valid from now for 14 days.
pub fn dev_identity() -> Result<Identity, CertError> {
    Identity::self_signed_builder()
        .subject_alt_names(["localhost", "127.0.0.1", "::1"])
        .from_now_utc()
        .validity_days(DEV_CERT_VALIDITY_DAYS)
        .build()
        .map_err(|e| CertError::Generate(e.to_string()))
}

/// Writes a dev identity as `cert.pem` and `key.pem` into `dir`; returns its SHA-256 (hex).
pub async fn write_dev_cert(dir: &Path) -> Result<String, CertError> {
    let certs = Certs::new(dev_identity()?, true)?;
    tokio::fs::create_dir_all(dir).await.map_err(|e| CertError::Load(e.to_string()))?;
    let io = |e: std::io::Error| CertError::Load(e.to_string());
    certs.identity.certificate_chain().store_pemfile(dir.join("cert.pem")).await.map_err(io)?;
    certs.identity.private_key().store_secret_pemfile(dir.join("key.pem")).await.map_err(io)?;
    Ok(certs.sha256_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_cert_is_p256_and_hashable() {
        let certs = Certs::new(dev_identity().unwrap(), true).unwrap();
        assert_eq!(certs.sha256_hex().len(), 64);
        let der = certs.identity.certificate_chain().as_slice()[0].der().to_vec();
        // id-ecPublicKey (1.2.840.10045.2.1) and prime256v1 (1.2.840.10045.3.1.7) OIDs.
        let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
        assert!(has(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]));
        assert!(has(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]));
    }
}
