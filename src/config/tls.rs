//! Compiling `listen.tls` and `upstream.tls` into rustls configurations.
//! Their files are read here and added to the policy's inputs, so that a
//! rotated certificate or key (a cert-manager renewal swapping a Secret's
//! files) is a change that reloads, and `check` proves they load.

use super::model::{ClientCertificatesDoc, ListenTlsDoc, UpstreamTlsDoc};
use super::{ConfigError, invalid_at, read_input};
use crate::policy::{ListenerTls, UpstreamTls};
use crate::tls::{self, ClientCertificates};
use serde_saphyr::Spanned;
use std::path::{Path, PathBuf};

/// Files read so far, and the bytes the policy's fingerprint covers.
pub(super) struct Inputs<'a> {
    pub(super) referenced: &'a mut Vec<PathBuf>,
    pub(super) bytes: &'a mut Vec<u8>,
}

impl Inputs<'_> {
    fn read<T>(
        &mut self,
        path: &Path,
        at: &Spanned<T>,
        name: &str,
        what: &str,
    ) -> Result<String, ConfigError> {
        read_input(path, at, name, what, self.referenced, self.bytes).map(|(_, text)| text)
    }
}

pub(super) fn listener(
    path: &Path,
    doc: &Spanned<ListenTlsDoc>,
    inputs: &mut Inputs<'_>,
) -> Result<ListenerTls, ConfigError> {
    let tls = &doc.value;
    let chain = inputs.read(path, doc, &tls.cert_file, "listen.tls.cert_file")?;
    let key = inputs.read(path, doc, &tls.key_file, "listen.tls.key_file")?;
    let clients = match &tls.client_ca_file {
        Some(name) => Some(inputs.read(path, doc, name, "listen.tls.client_ca_file")?),
        None => None,
    };
    let mode = match (tls.client_certificates, &clients) {
        (Some(ClientCertificatesDoc::Optional), Some(_)) => ClientCertificates::Optional,
        (Some(ClientCertificatesDoc::Required) | None, Some(_)) | (None, None) => {
            ClientCertificates::Required
        }
        (Some(_), None) => {
            return Err(invalid_at(
                path,
                doc,
                "listen.tls.client_certificates needs client_ca_file: the CA client certificates are verified against",
            ));
        }
    };
    let config = tls::server_config(
        chain.as_bytes(),
        key.as_bytes(),
        clients.as_deref().map(|ca| (ca.as_bytes(), mode)),
    )
    .map_err(|m| invalid_at(path, doc, format_args!("listen.tls: {m}")))?;
    let client_ca = clients.map(|ca| super::sha256(ca.as_bytes()));
    Ok(ListenerTls { config, client_ca })
}

/// The TLS client configuration of an `https://` upstream (`doc` absent:
/// the system's trust store, no client certificate).
pub(super) fn upstream<T>(
    path: &Path,
    url: &Spanned<T>,
    doc: Option<&Spanned<UpstreamTlsDoc>>,
    inputs: &mut Inputs<'_>,
) -> Result<UpstreamTls, ConfigError> {
    let Some(doc) = doc else {
        let config = tls::client_config(None, None).map_err(|m| invalid_at(path, url, m))?;
        return Ok(UpstreamTls { config, fingerprint: crate::config::sha256_hex(b"system trust store") });
    };
    let start = inputs.bytes.len();
    let tls = &doc.value;
    let ca = match &tls.ca_file {
        Some(name) => Some(inputs.read(path, doc, name, "upstream.tls.ca_file")?),
        None => None,
    };
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some((
            inputs.read(path, doc, cert, "upstream.tls.cert_file")?,
            inputs.read(path, doc, key, "upstream.tls.key_file")?,
        )),
        (None, None) => None,
        _ => return Err(invalid_at(path, doc, "upstream.tls needs both cert_file and key_file, or neither")),
    };
    let config = tls::client_config(
        ca.as_deref().map(str::as_bytes),
        identity.as_ref().map(|(c, k)| (c.as_bytes(), k.as_bytes())),
    )
    .map_err(|m| invalid_at(path, doc, format_args!("upstream.tls: {m}")))?;
    let mut what = b"files".to_vec();
    what.push(u8::from(ca.is_some()));
    what.extend_from_slice(&inputs.bytes[start..]);
    Ok(UpstreamTls { config, fingerprint: crate::config::sha256_hex(&what) })
}
