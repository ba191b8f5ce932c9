//! TLS for the database clients, with libpq's `sslmode` semantics (rustls, ring provider): the
//! PostgreSQL client (`pgwire/`) and the MySQL client (`mysql/wire.rs`, whose `--ssl-mode` takes
//! the same values) both negotiate through here.
//!
//! | sslmode | TLS | certificate check |
//! |---|---|---|
//! | `disable` | never | — |
//! | `allow`, `prefer` | when the server offers it, else plain | none (like libpq) |
//! | `require` | required | none, unless the root certificate file exists: then as `verify-ca` (like libpq) |
//! | `verify-ca` | required | chain to `sslrootcert` |
//! | `verify-full` | required | chain to `sslrootcert`, and the host name (or IP address) |
//!
//! `sslrootcert`: a PEM file (`sslrootcert=` in the connection string or `PGSSLROOTCERT`; default
//! `~/.postgresql/root.crt`), or `system` for the bundled Mozilla roots. Unix sockets never use
//! TLS, as with libpq. Client certificates are not supported. What a client sends before the
//! handshake (PostgreSQL's `SSLRequest`, MySQL's SSL request packet) is the client's.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::error::{Kind, Result, WalrsError};

/// What the connection requires of TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// No TLS.
    Off,
    /// TLS if the server offers it; no certificate check.
    Opportunistic,
    /// TLS or fail; `Verify` says how the certificate is checked.
    Required(Verify),
}

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Not at all (encryption only).
    None,
    /// Chain to the root certificates.
    Ca,
    /// Chain and host name.
    Full,
}

fn cfg_err(msg: impl Into<String>) -> WalrsError {
    WalrsError::new(Kind::Config, msg)
}

/// The default root certificate file, `~/.postgresql/root.crt`.
pub fn default_root_cert(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("HOME").map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
}

/// What `sslmode` asks for. `root_exists`: whether the root certificate file is there (`require`
/// then verifies the chain, as libpq does).
pub fn need(sslmode: &str, root_exists: bool) -> Need {
    match sslmode {
        "disable" => Need::Off,
        "allow" | "prefer" => Need::Opportunistic,
        "require" if root_exists => Need::Required(Verify::Ca),
        "require" => Need::Required(Verify::None),
        "verify-ca" => Need::Required(Verify::Ca),
        _ => Need::Required(Verify::Full),
    }
}

/// What `sslmode` asks for, given the configured root certificates (`require` verifies the
/// chain when they exist: a readable file, or `system`).
pub fn need_for(sslmode: &str, root_cert: Option<&str>) -> Need {
    let root_exists = root_cert.is_some_and(|r| r == "system" || std::path::Path::new(r).exists());
    need(sslmode, root_exists)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(root_cert: Option<&str>) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some("system") => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| cfg_err(format!("sslrootcert {path}: {e}")))?
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| cfg_err(format!("sslrootcert {path}: {e}")))?;
            let (added, _ignored) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(cfg_err(format!("sslrootcert {path}: no usable certificate")));
            }
        }
        None => {
            return Err(cfg_err(
                "certificate verification needs root certificates: set sslrootcert=FILE (or PGSSLROOTCERT), put them in ~/.postgresql/root.crt, or use sslrootcert=system",
            ));
        }
    }
    Ok(store)
}

/// The client configuration for `verify` with the root certificate file `root_cert`.
pub fn client_config(verify: Verify, root_cert: Option<&str>) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| WalrsError::new(Kind::Internal, format!("TLS setup: {e}")))?;
    let config = match verify {
        Verify::Full => builder.with_root_certificates(roots(root_cert)?).with_no_client_auth(),
        Verify::Ca => {
            let inner = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(root_cert)?),
                provider(),
            )
            .build()
            .map_err(|e| cfg_err(format!("TLS root certificates: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
                .with_no_client_auth()
        }
        Verify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCheck { provider: provider() }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Why a TLS handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The server's certificate failed verification.
    Certificate(String),
    /// Anything else (I/O, protocol).
    Other(String),
}

/// Runs the TLS handshake over `tcp` to completion, so that a certificate problem is reported as
/// one before any protocol message is sent.
pub fn handshake(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    tcp: std::net::TcpStream,
) -> std::result::Result<
    rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    HandshakeError,
> {
    let conn = rustls::ClientConnection::new(config, name)
        .map_err(|e| HandshakeError::Other(e.to_string()))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).map_err(|e| {
            let cert = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            if cert {
                HandshakeError::Certificate(e.to_string())
            } else {
                HandshakeError::Other(e.to_string())
            }
        })?;
    }
    Ok(s)
}

/// The server name for SNI and the `verify-full` check: an IP address or a DNS name.
pub fn server_name(host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|e| cfg_err(format!("host {host:?} is not a valid TLS server name: {e}")))
}

/// `verify-ca`: the chain must lead to a root; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `prefer`/`require` without roots: encryption without authentication of the server, as libpq
/// does. The handshake signatures are still checked.
#[derive(Debug)]
struct NoCheck {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_needs() {
        assert_eq!(need("disable", true), Need::Off);
        assert_eq!(need("prefer", true), Need::Opportunistic);
        assert_eq!(need("allow", false), Need::Opportunistic);
        assert_eq!(need("require", false), Need::Required(Verify::None));
        assert_eq!(need("require", true), Need::Required(Verify::Ca));
        assert_eq!(need("verify-ca", false), Need::Required(Verify::Ca));
        assert_eq!(need("verify-full", false), Need::Required(Verify::Full));
        assert!(client_config(Verify::Full, None).is_err());
        assert!(client_config(Verify::None, None).is_ok());
        assert!(client_config(Verify::Full, Some("system")).is_ok());
        assert!(server_name("127.0.0.1").is_ok() && server_name("db.example").is_ok());
    }
}
