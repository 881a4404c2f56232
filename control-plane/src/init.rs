//! `axon-cp init`: creates the data dir, the internal CA, the server certificate, the JWT
//! signing key and the first admin.

use std::path::{Path, PathBuf};

use crate::fleet::pki::{Pki, PkiError};
use crate::identity::auth::{JwtKeys, KeyError, hash_password, new_id};
use crate::model::{Role, Store, User, now};
use crate::store::StoreError;

/// What `init` needs.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub data_dir: PathBuf,
    pub admin_email: String,
    /// The admin's password; generated when `None`.
    pub admin_password: Option<String>,
    /// Names and addresses the server certificate is valid for.
    pub sans: Vec<String>,
}

/// What `init` created, for the operator to read once.
#[derive(Debug)]
pub struct InitReport {
    pub data_dir: PathBuf,
    pub ca_fingerprint: String,
    pub admin_email: String,
    /// Set when the password was generated: shown once, never stored in clear.
    pub generated_password: Option<String>,
    pub sans: Vec<String>,
}

/// `init` failed; nothing usable was left behind unless it says otherwise.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} is already initialised (it holds pki/); refusing to overwrite it")]
    AlreadyInitialised(PathBuf),
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid admin email {0:?}")]
    BadEmail(String),
    #[error("the admin password must be at least 12 characters")]
    WeakPassword,
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("hashing the admin password failed")]
    Hash,
}

/// The default server-certificate names: localhost, loopback addresses and the hostname.
pub fn default_sans() -> Vec<String> {
    let mut sans = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = sysinfo_hostname().filter(|h| !sans.contains(h)) {
        sans.push(host);
    }
    sans
}

fn sysinfo_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub use crate::identity::auth::generate_password;

/// Runs `init`.
pub fn init(opts: InitOptions) -> Result<InitReport, InitError> {
    let email = opts.admin_email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(InitError::BadEmail(opts.admin_email));
    }
    if opts
        .admin_password
        .as_ref()
        .is_some_and(|p| p.chars().count() < 12)
    {
        return Err(InitError::WeakPassword);
    }
    if opts.data_dir.join("pki").exists() {
        return Err(InitError::AlreadyInitialised(opts.data_dir));
    }
    std::fs::create_dir_all(&opts.data_dir).map_err(|source| InitError::CreateDir {
        path: opts.data_dir.clone(),
        source,
    })?;
    restrict_dir(&opts.data_dir);
    let pki = Pki::create(
        &opts.data_dir,
        &opts.sans,
        &format!("Axon CA {}", sysinfo_hostname().unwrap_or_default()),
    )?;
    let store = Store::open(&opts.data_dir.join("db"))?;
    JwtKeys::generate(&store)?;
    let generated = opts.admin_password.is_none().then(generate_password);
    let password = opts
        .admin_password
        .or(generated.clone())
        .unwrap_or_default();
    let hash = hash_password(&password).map_err(|_| InitError::Hash)?;
    let stamp = now();
    store.create_user(&User {
        id: new_id(),
        email: email.clone(),
        name: "Administrator".into(),
        password_hash: hash,
        role: Role::Admin,
        tenant_id: None,
        disabled: false,
        demo_tag: None,
        created_at: stamp,
        updated_at: stamp,
    })?;
    store.db.flush_blocking()?;
    Ok(InitReport {
        data_dir: opts.data_dir,
        ca_fingerprint: axon_shared::hex_encode(&pki.ca_fingerprint()),
        admin_email: email,
        generated_password: generated,
        sans: opts.sans,
    })
}

/// Whether `email` looks like `local@domain` with no spaces or control characters.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_creates_everything_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let opts = InitOptions {
            data_dir: data.clone(),
            admin_email: "Admin@Example.com".into(),
            admin_password: None,
            sans: default_sans(),
        };
        let report = init(opts.clone()).expect("init");
        assert_eq!(report.admin_email, "admin@example.com");
        let password = report.generated_password.expect("generated password");
        assert_eq!(password.len(), 24);
        assert_eq!(report.ca_fingerprint.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("pki/ca.key"))
            .expect("ca.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(init(opts), Err(InitError::AlreadyInitialised(_))));

        let store = Store::open(&data.join("db")).expect("store");
        let admin = store
            .user_by_email("admin@example.com")
            .expect("read")
            .expect("admin");
        assert_eq!(admin.role, Role::Admin);
        assert!(crate::identity::auth::verify_password(
            &admin.password_hash,
            &password
        ));
        assert!(!crate::identity::auth::verify_password(
            &admin.password_hash,
            "wrong"
        ));
    }

    #[test]
    fn init_refuses_bad_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = InitOptions {
            data_dir: dir.path().join("d"),
            admin_email: "a@b".into(),
            admin_password: Some("short".into()),
            sans: vec!["localhost".into()],
        };
        assert!(matches!(init(base.clone()), Err(InitError::WeakPassword)));
        let bad_email = InitOptions {
            admin_email: "no at sign".into(),
            admin_password: None,
            ..base.clone()
        };
        assert!(matches!(init(bad_email), Err(InitError::BadEmail(_))));
        let bad_san = InitOptions {
            sans: vec!["bad name!".into()],
            admin_password: None,
            ..base
        };
        assert!(matches!(
            init(bad_san),
            Err(InitError::Pki(PkiError::San { .. }))
        ));
    }
}
