//! TLS on both sides of the proxy, on the one crypto provider in the tree
//! (aws-lc-rs, named explicitly so that no second provider could make the
//! choice ambiguous).
//!
//! - The listener: a certificate chain and key from PEM files (PKCS#8,
//!   SEC1 or PKCS#1 keys), TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`,
//!   and optionally client certificates verified against a CA bundle.
//! - The upstream: the system's trust store or a CA bundle, the upstream's
//!   name from its URL (SNI and verification), an optional client
//!   certificate, ALPN offering `h2` and `http/1.1` (set by the connector).
//!
//! The files are read when the policy compiles, so `check` validates them
//! and a rotated file (a cert-manager renewal) is a policy reload: new
//! connections get the new configuration, open ones keep theirs.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::{Arc, OnceLock};

/// ALPN identifiers offered and accepted, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())).clone()
}

/// Whether a listener asks for client certificates, and insists on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCertificates {
    /// A connection without a valid client certificate is refused.
    Required,
    /// A client may present one (and is then verified) or none.
    Optional,
}

/// Every certificate in a PEM bundle, in order; at least one.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The private key of a PEM file: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
pub fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "holds no PEM private key (PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)".into()
        }
        other => format!("not a PEM private key: {other}"),
    })
}

fn root_store(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem)? {
        roots.add(cert).map_err(|e| format!("a CA certificate cannot be used: {e}"))?;
    }
    Ok(roots)
}

/// The system's trust store, read once per process.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "while loading the system trust store");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("no trusted certificates found in the system trust store");
            }
            Arc::new(roots)
        })
        .clone()
}

/// The listener's configuration: `chain` (leaf first) and its `key`, and
/// when `clients` is given, the CA bundle client certificates must chain to.
pub fn server_config(
    chain: &[u8],
    key: &[u8],
    clients: Option<(&[u8], ClientCertificates)>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = certificates(chain).map_err(|e| format!("cert_file {e}"))?;
    let key = private_key(key).map_err(|e| format!("key_file {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some((ca, mode)) => {
            let roots = root_store(ca).map_err(|e| format!("client_ca_file {e}"))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = match mode {
                ClientCertificates::Required => verifier,
                ClientCertificates::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier.build().map_err(|e| format!("client_ca_file cannot verify clients: {e}"))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    if clients.is_some() {
        // A resumed session would bring back a client certificate without
        // verifying it again, past its expiry or its CA's removal.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
    Ok(Arc::new(config))
}

/// The upstream client's configuration: `ca` (else the system's trust
/// store), and a client certificate chain and key when the upstream asks.
/// (ALPN is left to the connector, which offers `h2` and `http/1.1`.)
pub fn client_config(
    ca: Option<&[u8]>,
    identity: Option<(&[u8], &[u8])>,
) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca {
        Some(pem) => Arc::new(root_store(pem).map_err(|e| format!("ca_file {e}"))?),
        None => system_roots(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            let chain = certificates(chain).map_err(|e| format!("cert_file {e}"))?;
            let key = private_key(key).map_err(|e| format!("key_file {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client certificate and key do not make a TLS identity: {e}"))?
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_files_that_are_not_what_they_are_named() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (chain, key) = (cert.cert.pem(), cert.signing_key.serialize_pem());
        assert!(server_config(chain.as_bytes(), key.as_bytes(), None).is_ok());
        let swapped = server_config(key.as_bytes(), chain.as_bytes(), None).unwrap_err();
        assert!(swapped.starts_with("cert_file holds no PEM certificate"), "{swapped}");
        let empty = server_config(chain.as_bytes(), b"", None).unwrap_err();
        assert!(empty.starts_with("key_file holds no PEM private key"), "{empty}");
        let other = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let mismatched = server_config(chain.as_bytes(), other.as_bytes(), None).unwrap_err();
        assert!(mismatched.contains("do not make a TLS identity"), "{mismatched}");
        let no_ca =
            server_config(chain.as_bytes(), key.as_bytes(), Some((b"", ClientCertificates::Required)))
                .unwrap_err();
        assert!(no_ca.starts_with("client_ca_file holds no PEM certificate"), "{no_ca}");
    }
}
