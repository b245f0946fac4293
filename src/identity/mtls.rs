//! Client certificates as credentials. The TLS handshake verified the
//! chain (against `listen.tls.client_ca_file`, validity dates included);
//! here the leaf certificate's names are read once per connection, and,
//! where the policy configures `identity.mtls`, one of them becomes the
//! subject of a principal of kind `mtls`.
//!
//! The subject comes from one configured place: a SAN URI (a SPIFFE ID
//! such as `spiffe://example.org/ns/team/sa/agent`), DNS name or email,
//! or the subject's common name. A certificate with none, or with more
//! than one of that kind, is refused rather than guessed at: two readers
//! of one certificate could pick different names.

use super::{AuthError, CredentialKind, Principal};
use std::time::{Duration, SystemTime};
use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::der::asn1::{Ia5StringRef, PrintableStringRef, Utf8StringRef};
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

/// Where a certificate's subject is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectSource {
    Uri,
    Dns,
    Email,
    CommonName,
}

impl SubjectSource {
    fn describe(self) -> &'static str {
        match self {
            Self::Uri => "URI subject alternative name",
            Self::Dns => "DNS subject alternative name",
            Self::Email => "email subject alternative name",
            Self::CommonName => "subject common name",
        }
    }
}

/// The compiled `identity.mtls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsSettings {
    pub subject: SubjectSource,
}

/// The names of a verified client certificate, read once per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub emails: Vec<String>,
    pub common_names: Vec<String>,
    pub not_after: Option<SystemTime>,
    /// SHA-256 of the certificate's DER: which certificate it was.
    pub sha256: [u8; 32],
}

const COMMON_NAME: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");
const SUBJECT_ALT_NAME: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.29.17");

impl ClientCertificate {
    /// Reads the names of a leaf certificate (DER) the handshake verified.
    pub fn read(der_bytes: &[u8]) -> Result<Self, String> {
        let cert = Certificate::from_der(der_bytes).map_err(|e| format!("unreadable certificate: {e}"))?;
        let tbs = &cert.tbs_certificate;
        let mut out = Self {
            not_after: Some(SystemTime::UNIX_EPOCH + tbs.validity.not_after.to_unix_duration()),
            ..Self::default()
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der_bytes);
        out.sha256.copy_from_slice(digest.as_ref());
        for extension in tbs.extensions.iter().flatten() {
            if extension.extn_id != SUBJECT_ALT_NAME {
                continue;
            }
            let names = SubjectAltName::from_der(extension.extn_value.as_bytes())
                .map_err(|e| format!("unreadable subject alternative names: {e}"))?;
            for name in names.0 {
                match name {
                    GeneralName::UniformResourceIdentifier(uri) => out.uris.push(uri.to_string()),
                    GeneralName::DnsName(dns) => out.dns.push(dns.to_string()),
                    GeneralName::Rfc822Name(email) => out.emails.push(email.to_string()),
                    _ => {}
                }
            }
        }
        for rdn in tbs.subject.0.iter() {
            for attribute in rdn.0.iter().filter(|a| a.oid == COMMON_NAME) {
                let value = &attribute.value;
                let text = Utf8StringRef::try_from(value)
                    .map(|s| s.as_str().to_owned())
                    .or_else(|_| PrintableStringRef::try_from(value).map(|s| s.as_str().to_owned()))
                    .or_else(|_| Ia5StringRef::try_from(value).map(|s| s.as_str().to_owned()))
                    .map_err(|_| "the subject common name is not text".to_owned())?;
                out.common_names.push(text);
            }
        }
        Ok(out)
    }

    fn names(&self, source: SubjectSource) -> &[String] {
        match source {
            SubjectSource::Uri => &self.uris,
            SubjectSource::Dns => &self.dns,
            SubjectSource::Email => &self.emails,
            SubjectSource::CommonName => &self.common_names,
        }
    }
}

/// The principal a verified client certificate proves: its one name of
/// the configured kind, valid until the certificate expires.
pub fn principal(settings: &MtlsSettings, cert: &ClientCertificate) -> Result<Principal, AuthError> {
    let names = cert.names(settings.subject);
    let subject = match names {
        [one] if !one.is_empty() => one.clone(),
        [] | [_] => {
            return Err(AuthError::Invalid(format!(
                "the client certificate has no {}",
                settings.subject.describe()
            )));
        }
        more => {
            return Err(AuthError::Invalid(format!(
                "the client certificate has {} of kind {}; its subject must be one",
                more.len(),
                settings.subject.describe()
            )));
        }
    };
    Ok(Principal {
        kind: CredentialKind::Mtls,
        issuer: None,
        subject,
        groups: Vec::new(),
        scopes: Vec::new(),
        // A credential that ends: GET streams close when it expires.
        expires: cert.not_after.map(|t| t.min(SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40))),
        key: Some(cert.sha256),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: Vec<rcgen::SanType>, cn: Option<&str>) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = names;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_each_kind_of_name_and_insists_on_one() {
        let spiffe = "spiffe://example.org/ns/a/sa/agent";
        let der = certificate(
            vec![
                rcgen::SanType::URI(spiffe.try_into().unwrap()),
                rcgen::SanType::DnsName("agent.example.org".try_into().unwrap()),
                rcgen::SanType::DnsName("other.example.org".try_into().unwrap()),
                rcgen::SanType::Rfc822Name("agent@example.org".try_into().unwrap()),
            ],
            Some("Agent One"),
        );
        let cert = ClientCertificate::read(&der).unwrap();
        let by = |subject| principal(&MtlsSettings { subject }, &cert);
        assert_eq!(by(SubjectSource::Uri).unwrap().subject, spiffe);
        assert_eq!(by(SubjectSource::Uri).unwrap().kind, CredentialKind::Mtls);
        assert_eq!(by(SubjectSource::Email).unwrap().subject, "agent@example.org");
        assert_eq!(by(SubjectSource::CommonName).unwrap().subject, "Agent One");
        let two = by(SubjectSource::Dns).unwrap_err();
        assert!(matches!(&two, AuthError::Invalid(m) if m.contains("has 2 of kind DNS")), "{two:?}");
        assert!(by(SubjectSource::Uri).unwrap().expires.is_some());

        let bare = ClientCertificate::read(&certificate(Vec::new(), None)).unwrap();
        let none = principal(&MtlsSettings { subject: SubjectSource::Uri }, &bare).unwrap_err();
        assert!(matches!(&none, AuthError::Invalid(m) if m.contains("no URI subject")), "{none:?}");
        assert!(ClientCertificate::read(b"not a certificate").is_err());
    }
}
