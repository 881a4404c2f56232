//! `agentd enroll`: make a key pair here, send a CSR with the token, check the CA against the
//! token's fingerprint, store key, certificate and CA.

use std::time::Duration;

use axon_shared::{CertInfo, ENROLL_PATH, EnrollRequest, EnrollResponse, EnrollmentToken};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::state::{CA_FILE, CERT_FILE, Identity, KEY_FILE, StateDir, StateError};
use crate::tls::{pinned_client, sha256};

/// How long enrollment waits for the control plane.
const ENROLL_TIMEOUT: Duration = Duration::from_secs(30);

/// Enrollment failed; the state dir is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0} is already enrolled; remove it first to enroll again")]
    AlreadyEnrolled(std::path::PathBuf),
    #[error("invalid enrollment token: {0}")]
    Token(#[from] axon_shared::TokenError),
    #[error("invalid server URL {url:?}: use https://HOST:PORT (or http:// on loopback)")]
    ServerUrl { url: String },
    #[error("cannot make the key pair or CSR: {0}")]
    Key(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot reach the control plane at {url}: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("the control plane refused enrollment ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the control plane's answer is invalid: {0}")]
    BadAnswer(String),
    #[error("the CA the control plane sent does not match the token's fingerprint")]
    CaMismatch,
    #[error(transparent)]
    State(#[from] StateError),
}

/// What enrollment produced.
#[derive(Debug)]
pub struct Enrolled {
    pub host_id: String,
    pub agent_url: String,
    pub not_after: u64,
}

/// Enrolls this host with the control plane at `server` using `token`.
pub async fn enroll(
    server: &str,
    token: &str,
    state: &StateDir,
    hostname: &str,
) -> Result<Enrolled, EnrollError> {
    if state.is_enrolled() {
        return Err(EnrollError::AlreadyEnrolled(state.path().to_owned()));
    }
    let token = EnrollmentToken::parse(token)?;
    let server = server.trim_end_matches('/');
    let url =
        reqwest::Url::parse(server).map_err(|_| EnrollError::ServerUrl { url: server.into() })?;
    let plain_loopback = url.scheme() == "http"
        && matches!(
            url.host_str(),
            Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
        );
    if url.scheme() != "https" && !plain_loopback {
        return Err(EnrollError::ServerUrl { url: server.into() });
    }

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, hostname);
    let csr = params.serialize_request(&key)?;

    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(pinned_client(token.ca_fingerprint)?)
        .timeout(ENROLL_TIMEOUT)
        .build()
        .map_err(|source| EnrollError::Request {
            url: server.into(),
            source,
        })?;
    let endpoint = format!("{server}{ENROLL_PATH}");
    let request = EnrollRequest {
        token: token.encode(),
        csr_pem: csr.pem()?,
        hostname: hostname.to_owned(),
    };
    let response = client
        .post(&endpoint)
        .json(&request)
        .send()
        .await
        .map_err(|source| EnrollError::Request {
            url: endpoint.clone(),
            source,
        })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|source| EnrollError::Request {
            url: endpoint.clone(),
            source,
        })?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(EnrollError::Refused {
            status: status.as_u16(),
            message,
        });
    }
    let answer: EnrollResponse =
        serde_json::from_slice(&body).map_err(|e| EnrollError::BadAnswer(e.to_string()))?;

    // Over plain HTTP nothing was pinned yet, so the CA check here is what protects the host.
    let ca = CertificateDer::from_pem_slice(answer.ca_pem.as_bytes())
        .map_err(|_| EnrollError::BadAnswer("ca_pem is not a PEM certificate".into()))?;
    if sha256(&ca) != token.ca_fingerprint {
        return Err(EnrollError::CaMismatch);
    }
    let cert = CertificateDer::from_pem_slice(answer.cert_pem.as_bytes())
        .map_err(|_| EnrollError::BadAnswer("cert_pem is not a PEM certificate".into()))?;
    let info = CertInfo::from_der(&cert).map_err(|e| EnrollError::BadAnswer(e.to_string()))?;
    if info.spki != key.subject_public_key_info() {
        return Err(EnrollError::BadAnswer(
            "the certificate is not for this host's key".into(),
        ));
    }
    if info.host_id.as_deref() != Some(answer.host_id.as_str()) {
        return Err(EnrollError::BadAnswer(
            "the certificate names another host".into(),
        ));
    }
    if !answer.agent_url.starts_with("wss://") {
        return Err(EnrollError::BadAnswer(format!(
            "agent_url {:?} is not wss://",
            answer.agent_url
        )));
    }

    state.create()?;
    state.write(KEY_FILE, &key.serialize_pem(), 0o600)?;
    state.write(CERT_FILE, &answer.cert_pem, 0o644)?;
    state.write(CA_FILE, &answer.ca_pem, 0o644)?;
    state.save_identity(&Identity {
        host_id: answer.host_id.clone(),
        agent_url: answer.agent_url.clone(),
        server: server.to_owned(),
    })?;
    Ok(Enrolled {
        host_id: answer.host_id,
        agent_url: answer.agent_url,
        not_after: answer.not_after,
    })
}
