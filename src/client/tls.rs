//! Pinned TLS for direct transfers. The owner's agent keeps one
//! self-signed certificate per device (in the config folder, readable by
//! the user only, the same across restarts) and advertises its SHA-256
//! through the server; a member accepts exactly that certificate on the
//! agent's listener and nothing else. Trust comes from the server, not
//! from a CA or a host name, so LAN and overlay addresses work as they are.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use uuid::Uuid;

use super::ClientError;
use crate::protocol::transfers::CertSha256;

/// The one crypto provider both ends use (ring: no C toolchain beyond cc),
/// AES-128-GCM first: a strong suite with 10 AES rounds a block where
/// AES-256 takes 14, and the bulk of a direct transfer is encryption.
fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// The lowercase hex SHA-256 of a DER certificate.
pub fn cert_sha256(der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// The agent's certificate and key for its direct listener.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Identity").field("cert_sha256", &self.cert_sha256()).finish_non_exhaustive()
    }
}

impl Identity {
    /// Where the identity of `device` is kept: beside the config holding
    /// the device's entry.
    pub fn path(config_dir: &Path, device: Uuid) -> PathBuf {
        config_dir.join(format!("direct-{device}.pem"))
    }

    /// The device's identity, made (and saved, mode 0600) on first use.
    pub fn load_or_create(config_dir: &Path, device: Uuid) -> Result<Self, ClientError> {
        let path = Self::path(config_dir, device);
        match std::fs::read(&path) {
            Ok(pem) => Self::from_pem(&pem).map_err(|why| {
                ClientError::Other(format!(
                    "{} is not a certificate and key ({why}): remove it and a new one is made",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let made = rcgen::generate_simple_self_signed(vec!["ferry-direct".to_owned()])
                    .map_err(|e| ClientError::Other(format!("cannot make a certificate: {e}")))?;
                let pem = format!("{}{}", made.cert.pem(), made.key_pair.serialize_pem());
                std::fs::create_dir_all(config_dir).map_err(|e| ClientError::io(config_dir, e))?;
                let tmp = path.with_extension("pem.tmp");
                super::config::write_private(&tmp, pem.as_bytes()).map_err(|e| ClientError::io(&tmp, e))?;
                std::fs::rename(&tmp, &path).map_err(|e| ClientError::io(&path, e))?;
                Self::from_pem(pem.as_bytes()).map_err(ClientError::Other)
            }
            Err(e) => Err(ClientError::io(&path, e)),
        }
    }

    fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let cert = CertificateDer::from_pem_slice(pem).map_err(|e| format!("certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("key: {e}"))?;
        Ok(Self { cert, key })
    }

    /// What members pin: the certificate's SHA-256, lowercase hex.
    pub fn cert_sha256(&self) -> String {
        cert_sha256(&self.cert)
    }

    /// The listener's TLS configuration.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, rustls::Error> {
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
    }
}

/// A client configuration that accepts the one certificate whose SHA-256
/// is `pinned`.
pub fn pinned_client_config(pinned: &CertSha256) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Pinned { sha256: pinned.as_str().to_owned(), provider: provider.clone() };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts the end-entity certificate with the pinned SHA-256, whatever
/// the name or issuer; the handshake signature is still checked, so the
/// peer must hold the certificate's key.
#[derive(Debug)]
struct Pinned {
    sha256: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = cert_sha256(end_entity);
        // Both are public; no need for a constant-time comparison.
        if presented == self.sha256 {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(NotPinned { presented })))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a certificate was refused, as the member reads it (rustls shows
/// it with `Debug`, so both say the same).
struct NotPinned {
    presented: String,
}

impl std::fmt::Display for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the certificate presented (sha256 {}) is not the one the server pinned", self.presented)
    }
}

impl std::fmt::Debug for NotPinned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for NotPinned {}

#[cfg(test)]
mod tests {
    use super::{pinned_client_config, Identity};
    use crate::protocol::transfers::CertSha256;

    #[test]
    fn an_identity_is_made_once_kept_private_and_reused() {
        let dir = std::env::temp_dir().join(format!("ferry-tls-{}", uuid::Uuid::now_v7()));
        let device = uuid::Uuid::now_v7();
        let first = Identity::load_or_create(&dir, device).unwrap();
        let again = Identity::load_or_create(&dir, device).unwrap();
        assert_eq!(first.cert_sha256(), again.cert_sha256());
        assert!(CertSha256::parse(&first.cert_sha256()).is_some_and(|c| c.as_str() == first.cert_sha256()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(Identity::path(&dir, device)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = Identity::load_or_create(&dir, uuid::Uuid::now_v7()).unwrap();
        assert_ne!(first.cert_sha256(), other.cert_sha256());
        assert!(first.server_config().is_ok());
        assert!(pinned_client_config(&CertSha256::parse(&first.cert_sha256()).unwrap()).is_ok());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn both_ends_agree_on_aes_128_gcm() {
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("ferry-tls-{}", uuid::Uuid::now_v7()));
        let identity = Identity::load_or_create(&dir, uuid::Uuid::now_v7()).unwrap();
        let pinned = CertSha256::parse(&identity.cert_sha256()).unwrap();
        let name = rustls::pki_types::ServerName::try_from("ferry-direct").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(pinned_client_config(&pinned).unwrap()), name).unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(identity.server_config().unwrap())).unwrap();
        // The handshake in memory: each side's records handed to the other.
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        let suite = |c: Option<rustls::SupportedCipherSuite>| c.map(|s| s.suite());
        assert_eq!(suite(client.negotiated_cipher_suite()), Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert_eq!(suite(server.negotiated_cipher_suite()), suite(client.negotiated_cipher_suite()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
