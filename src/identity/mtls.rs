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
//! of one certificate could pick different names. So is a name with
//! control characters.
//!
//! A connection outlives its handshake, so each request checks again
//! that the certificate chain is within its validity dates, and that it
//! was verified under the client CA the running policy trusts: a CA
//! removed by a reload stops vouching for open connections too.

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
    /// SHA-256 of `listen.tls.client_ca_file`: the CA whose verification
    /// this policy accepts.
    pub ca: [u8; 32],
}

impl MtlsSettings {
    /// What vouches for an `mtls` principal: the CA and where the subject
    /// is read. An open stream is re-admitted after a reload only if both
    /// are unchanged.
    pub fn binding(&self) -> [u8; 32] {
        let mut input = self.ca.to_vec();
        input.push(self.subject as u8);
        crate::config::sha256(&input)
    }
}

/// The names of a verified client certificate, read once per connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCertificate {
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub emails: Vec<String>,
    pub common_names: Vec<String>,
    /// The chain's validity: the latest `notBefore`, the earliest `notAfter`.
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    /// SHA-256 of the client CA bundle the handshake verified it against.
    pub verified_by: [u8; 32],
    /// What could not be read: such a certificate proves no subject, but
    /// its connection is served (it may use another credential).
    pub unreadable: Option<String>,
}

const COMMON_NAME: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.4.3");
const SUBJECT_ALT_NAME: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("2.5.29.17");

impl ClientCertificate {
    /// Reads a chain (DER, leaf first) the handshake verified against the
    /// CA bundle whose SHA-256 is `verified_by`. What cannot be read is
    /// noted, not fatal.
    pub fn read<C: AsRef<[u8]>>(chain: &[C], verified_by: [u8; 32]) -> Self {
        let mut out = Self { verified_by, ..Self::default() };
        if let Err(problem) = out.read_chain(chain) {
            out.unreadable = Some(problem);
        }
        out
    }

    fn read_chain<C: AsRef<[u8]>>(&mut self, chain: &[C]) -> Result<(), String> {
        let mut leaf = None;
        for der_bytes in chain {
            let cert = Certificate::from_der(der_bytes.as_ref())
                .map_err(|e| format!("unreadable certificate: {e}"))?;
            let validity = &cert.tbs_certificate.validity;
            let from = SystemTime::UNIX_EPOCH + validity.not_before.to_unix_duration();
            let until = SystemTime::UNIX_EPOCH + validity.not_after.to_unix_duration();
            self.not_before = Some(self.not_before.map_or(from, |t| t.max(from)));
            self.not_after = Some(self.not_after.map_or(until, |t| t.min(until)));
            leaf.get_or_insert(cert);
        }
        let cert = leaf.ok_or("no certificate")?;
        let tbs = &cert.tbs_certificate;
        let out = self;
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
        Ok(())
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
    if let Some(problem) = &cert.unreadable {
        return Err(AuthError::Invalid(format!("the client certificate cannot be read: {problem}")));
    }
    if cert.verified_by != settings.ca {
        return Err(AuthError::Invalid(
            "the client certificate was verified under a client CA this policy no longer trusts: reconnect"
                .into(),
        ));
    }
    let now = SystemTime::now();
    if cert.not_before.is_some_and(|t| now < t) || cert.not_after.is_none_or(|t| now > t) {
        return Err(AuthError::Invalid("the client certificate is outside its validity dates".into()));
    }
    let names = cert.names(settings.subject);
    let subject = match names {
        [one] if !one.is_empty() && !one.chars().any(char::is_control) => one.clone(),
        [] => {
            return Err(AuthError::Invalid(format!(
                "the client certificate has no {}",
                settings.subject.describe()
            )));
        }
        [_] => {
            return Err(AuthError::Invalid(format!(
                "the client certificate's {} is empty or holds control characters",
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
        key: Some(settings.binding()),
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
        let cert = ClientCertificate::read(&[&der], [7; 32]);
        let by = |subject| principal(&MtlsSettings { subject, ca: [7; 32] }, &cert);
        assert_eq!(by(SubjectSource::Uri).unwrap().subject, spiffe);
        assert_eq!(by(SubjectSource::Uri).unwrap().kind, CredentialKind::Mtls);
        assert_eq!(by(SubjectSource::Email).unwrap().subject, "agent@example.org");
        assert_eq!(by(SubjectSource::CommonName).unwrap().subject, "Agent One");
        let two = by(SubjectSource::Dns).unwrap_err();
        assert!(matches!(&two, AuthError::Invalid(m) if m.contains("has 2 of kind DNS")), "{two:?}");
        assert!(by(SubjectSource::Uri).unwrap().expires.is_some());

        let uri = MtlsSettings { subject: SubjectSource::Uri, ca: [7; 32] };
        let bare = ClientCertificate::read(&[certificate(Vec::new(), None)], [7; 32]);
        let none = principal(&uri, &bare).unwrap_err();
        assert!(matches!(&none, AuthError::Invalid(m) if m.contains("no URI subject")), "{none:?}");
        let garbage = ClientCertificate::read(&[b"not a certificate"], [7; 32]);
        assert!(
            matches!(principal(&uri, &garbage), Err(AuthError::Invalid(m)) if m.contains("cannot be read"))
        );
    }

    #[test]
    fn a_certificate_vouches_only_while_valid_and_under_the_trusted_ca() {
        let der = certificate(vec![rcgen::SanType::URI("spiffe://e/a".try_into().unwrap())], None);
        let settings = MtlsSettings { subject: SubjectSource::Uri, ca: [7; 32] };
        let fresh = ClientCertificate::read(&[&der], [7; 32]);
        assert!(principal(&settings, &fresh).is_ok());
        let other_ca = ClientCertificate::read(&[&der], [8; 32]);
        assert!(
            matches!(principal(&settings, &other_ca), Err(AuthError::Invalid(m)) if m.contains("no longer trusts"))
        );
        let expired = ClientCertificate {
            not_after: Some(SystemTime::now() - Duration::from_secs(1)),
            ..fresh.clone()
        };
        assert!(
            matches!(principal(&settings, &expired), Err(AuthError::Invalid(m)) if m.contains("validity"))
        );
        let early = ClientCertificate {
            not_before: Some(SystemTime::now() + Duration::from_secs(60)),
            ..fresh.clone()
        };
        assert!(principal(&settings, &early).is_err());
        let control = ClientCertificate { uris: vec!["spiffe://e/a\u{0}b".into()], ..fresh };
        assert!(principal(&settings, &control).is_err());
    }
}
