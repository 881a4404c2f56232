//! Reading the few facts both sides need from an X.509 certificate.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::HOST_URI_PREFIX;
use crate::id::hex_encode;

/// What the link cares about in a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// Host id from a `urn:axon:host:<id>` URI SAN, if any.
    pub host_id: Option<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The DER SubjectPublicKeyInfo, to compare keys.
    pub spki: Vec<u8>,
}

/// The certificate could not be read.
#[derive(Debug, thiserror::Error)]
#[error("certificate is not valid DER X.509")]
pub struct CertParseError;

impl CertInfo {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, CertParseError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| CertParseError)?;
        let serial_bytes = cert.raw_serial();
        let trimmed = match serial_bytes.iter().position(|&b| b != 0) {
            Some(i) => &serial_bytes[i..],
            None => &serial_bytes[serial_bytes.len().saturating_sub(1)..],
        };
        let host_id = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|name| match name {
                    GeneralName::URI(uri) => uri.strip_prefix(HOST_URI_PREFIX).map(str::to_owned),
                    _ => None,
                })
            });
        let validity = cert.validity();
        Ok(Self {
            serial: hex_encode(trimmed),
            host_id,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            spki: cert.public_key().raw.to_vec(),
        })
    }
}
