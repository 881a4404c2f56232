//! The internal certificate authority: creates the CA and the server certificate at `init`,
//! signs agent certificates from their CSRs, and builds the TLS configurations.
//!
//! Files under `<data-dir>/pki/`: `ca.pem`, `ca.key` (0600), `server.pem` (leaf + CA),
//! `server.key` (0600). Keys are ECDSA P-256.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axon_shared::{CertInfo, HOST_URI_PREFIX};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

/// A PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate signing request is invalid: {0}")]
    Csr(rcgen::Error),
    #[error("invalid subject alternative name {name:?}")]
    San { name: String },
}

/// A certificate issued to an agent.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    pub info: CertInfo,
}

/// The loaded CA and server identity.
pub struct Pki {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field(
                "ca_fingerprint",
                &axon_shared::hex_encode(&self.fingerprint),
            )
            .finish_non_exhaustive()
    }
}

fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    axon_shared::sha256(der)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7F; // positive
    bytes[0] |= 0x01; // no leading zero byte, so the hex form is stable
    SerialNumber::from_slice(&bytes)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(contents.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

fn read_file(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_owned(),
        source,
    })
}

fn san(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid_dns = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
        });
    if !valid_dns {
        return Err(PkiError::San {
            name: name.to_owned(),
        });
    }
    name.to_owned()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| PkiError::San {
            name: name.to_owned(),
        })
}

/// Life of the API's server certificate: within the 398 days browsers accept.
pub const SERVER_CERT_DAYS: i64 = 397;
/// The server certificate is re-issued (same key and names) at start once it has less left.
pub const SERVER_RENEW_DAYS: i64 = 30;

impl Pki {
    /// Creates the CA and the server certificate under `<data_dir>/pki`. Fails if files exist.
    pub fn create(data_dir: &Path, sans: &[String], ca_name: &str) -> Result<Self, PkiError> {
        let dir = pki_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Write {
            path: dir.clone(),
            source,
        })?;
        let now = OffsetDateTime::now_utc();

        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(DnType::OrganizationName, "Axon");
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = now - Duration::hours(1);
        ca.not_after = now + Duration::days(3650);
        ca.serial_number = Some(random_serial());
        let ca_cert = ca.self_signed(&ca_key)?;

        let server_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let server = server_params(sans, now)?;
        let issuer = Issuer::from_params(&ca, &ca_key);
        let server_cert = server.signed_by(&server_key, &issuer)?;

        write_file(&dir.join("ca.key"), &ca_key.serialize_pem(), 0o600)?;
        write_file(&dir.join("ca.pem"), &ca_cert.pem(), 0o644)?;
        write_file(&dir.join("server.key"), &server_key.serialize_pem(), 0o600)?;
        write_file(
            &dir.join("server.pem"),
            &format!("{}{}", server_cert.pem(), ca_cert.pem()),
            0o644,
        )?;
        Self::load(data_dir)
    }

    /// Loads the CA and server identity from `<data_dir>/pki`.
    pub fn load(data_dir: &Path) -> Result<Self, PkiError> {
        let dir = pki_dir(data_dir);
        let ca_path = dir.join("ca.pem");
        let ca_pem = read_file(&ca_path)?;
        let ca_der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| PkiError::Pem {
                path: ca_path.clone(),
                what: "certificate",
            })?;
        let ca_key_path = dir.join("ca.key");
        let ca_key = KeyPair::from_pem(&read_file(&ca_key_path)?).map_err(|_| PkiError::Pem {
            path: ca_key_path,
            what: "private key",
        })?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key)?;

        let chain_path = dir.join("server.pem");
        let server_chain = CertificateDer::pem_slice_iter(read_file(&chain_path)?.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or(PkiError::Pem {
                path: chain_path,
                what: "certificate chain",
            })?;
        let key_path = dir.join("server.key");
        let key_pem = read_file(&key_path)?;
        let server_key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| PkiError::Pem {
                path: key_path.clone(),
                what: "private key",
            })?;
        let mut server_chain = server_chain;
        if let Some(renewed) =
            renew_server_if_due(&dir, &server_chain[0], &key_pem, &issuer, &ca_pem)?
        {
            server_chain = renewed;
        }
        Ok(Self {
            fingerprint: fingerprint(&ca_der),
            ca_der,
            ca_pem,
            issuer,
            server_chain,
            server_key,
        })
    }

    /// SHA-256 of the CA certificate, as carried in enrollment tokens.
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// Reads a CSR and checks its signature (the requester holds the key).
    pub fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams, PkiError> {
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::Csr)
    }

    /// The DER SubjectPublicKeyInfo a CSR asks to certify.
    pub fn csr_spki(csr: &CertificateSigningRequestParams) -> Vec<u8> {
        use rcgen::PublicKeyData;
        csr.public_key.subject_public_key_info()
    }

    /// Signs a client certificate for `host_id` over the public key of `csr`.
    ///
    /// Only the key is taken from the CSR; subject, names, usages and validity are ours, so an
    /// agent cannot ask for a CA bit, a server name or another host's id.
    pub fn sign_agent(
        &self,
        csr: &CertificateSigningRequestParams,
        host_id: &str,
        lifetime: std::time::Duration,
    ) -> Result<Issued, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host_id);
        let uri = format!("{HOST_URI_PREFIX}{host_id}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into()?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let lifetime: Duration = Duration::try_from(lifetime).unwrap_or(Duration::days(30));
        // Slack for hosts whose clock runs a little behind ours: five minutes, or a tenth of a
        // short lifetime, so the agent's renewal point stays well after issue.
        let slack: Duration = (lifetime / 10i32).min(Duration::minutes(5));
        params.not_before = now - slack;
        params.not_after = now + lifetime;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        let info = CertInfo::from_der(cert.der()).map_err(|_| PkiError::Pem {
            path: PathBuf::from("<issued>"),
            what: "certificate",
        })?;
        Ok(Issued {
            pem: cert.pem(),
            info,
        })
    }

    /// The server's certificate chain (leaf, then CA).
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        self.server_chain.clone()
    }

    /// The server's private key.
    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        self.server_key.clone_key()
    }

    /// TLS for the API listener: server auth only, HTTP/1.1, the server's cipher order.
    pub fn api_tls(&self) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(self.server_chain(), self.server_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

/// The server certificate's fields, for `names`, valid `SERVER_CERT_DAYS` from `now`.
fn server_params(names: &[String], now: OffsetDateTime) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "axon-cp");
    params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(SERVER_CERT_DAYS);
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// The DNS names and addresses of a server certificate.
fn server_names(der: &[u8]) -> Option<Vec<String>> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let sans = cert.subject_alternative_name().ok()??;
    Some(
        sans.value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b)
                        .ok()
                        .map(|a| IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*b)
                        .ok()
                        .map(|a| IpAddr::from(a).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
    )
}

/// Re-issues the server certificate (same key, names and usages, a new serial and validity)
/// when less than `SERVER_RENEW_DAYS` are left; returns the new chain.
fn renew_server_if_due(
    dir: &Path,
    leaf: &CertificateDer<'static>,
    key_pem: &str,
    issuer: &Issuer<'static, KeyPair>,
    ca_pem: &str,
) -> Result<Option<Vec<CertificateDer<'static>>>, PkiError> {
    let chain_path = dir.join("server.pem");
    let bad = |what: &'static str| PkiError::Pem {
        path: chain_path.clone(),
        what,
    };
    let info = CertInfo::from_der(leaf).map_err(|_| bad("certificate"))?;
    let now = OffsetDateTime::now_utc();
    if info.not_after - now.unix_timestamp() > SERVER_RENEW_DAYS * 86_400 {
        return Ok(None);
    }
    let names = server_names(leaf).ok_or_else(|| bad("certificate"))?;
    let params = server_params(&names, now)?;
    let key = KeyPair::from_pem(key_pem).map_err(|_| bad("private key"))?;
    let cert = params.signed_by(&key, issuer)?;
    // Replaced whole: a crash leaves the old certificate or the new one.
    let tmp = dir.join("server.pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    let pem = format!("{}{ca_pem}", cert.pem());
    write_file(&tmp, &pem, 0o644)?;
    std::fs::rename(&tmp, &chain_path).map_err(|source| PkiError::Write {
        path: chain_path.clone(),
        source,
    })?;
    tracing::info!(path = %chain_path.display(), days = SERVER_CERT_DAYS, "API server certificate renewed");
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad("certificate chain"))?;
    Ok(Some(chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server certificate near its end is re-issued at load with its names, for the
    /// usual 397 days; the API prefers its own cipher order.
    #[test]
    fn a_server_certificate_near_its_end_is_renewed_at_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let pki = Pki::create(dir.path(), &sans, "test CA").expect("create");
        let leaf = CertInfo::from_der(&pki.server_chain()[0]).expect("leaf");
        let days = (leaf.not_after - OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((396..=397).contains(&days), "{days}");
        assert!(pki.api_tls().expect("tls").ignore_client_order);

        // Replace the leaf with one that ends in ten days.
        let pki_dir = pki_dir(dir.path());
        let key_pem = std::fs::read_to_string(pki_dir.join("server.key")).expect("key");
        let key = KeyPair::from_pem(&key_pem).expect("key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans.iter().map(|n| san(n).expect("san")).collect();
        params.not_after = OffsetDateTime::now_utc() + Duration::days(10);
        let short = params.signed_by(&key, &pki.issuer).expect("short");
        std::fs::write(
            pki_dir.join("server.pem"),
            format!("{}{}", short.pem(), pki.ca_pem()),
        )
        .expect("write");

        let renewed = Pki::load(dir.path()).expect("load");
        let leaf = CertInfo::from_der(&renewed.server_chain()[0]).expect("leaf");
        let days = (leaf.not_after - OffsetDateTime::now_utc().unix_timestamp()) / 86_400;
        assert!((396..=397).contains(&days), "{days}");
        assert_eq!(server_names(&renewed.server_chain()[0]), Some(sans));
        // On disk too, so the next start does not renew again.
        let again = Pki::load(dir.path()).expect("load");
        assert_eq!(again.server_chain()[0], renewed.server_chain()[0]);
    }
}
