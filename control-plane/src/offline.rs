//! Operations on a stopped server's data dir, for the command line: user management when the
//! API is not reachable (first setup, a locked-out admin). sled's file lock makes these fail
//! with a clear error while the server holds the store.

use std::path::Path;

use crate::identity::auth::{end_user_sessions, hash_password, new_id};
use crate::init::{generate_password, valid_email};
use crate::model::{Role, Store, User, now};
use crate::store::StoreError;

/// An offline operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("no user with email {0}")]
    NoSuchUser(String),
}

fn open(data_dir: &Path) -> Result<Store, OfflineError> {
    if !data_dir.join("pki").exists() {
        return Err(OfflineError::Invalid(format!(
            "{} is not initialised; run `axon-cp init` first",
            data_dir.display()
        )));
    }
    Ok(Store::open(&data_dir.join("db"))?)
}

/// The same length rules as the API's.
fn check_password(password: Option<&str>) -> Result<(), OfflineError> {
    use crate::api::auth::{MAX_PASSWORD_LEN, MIN_PASSWORD_LEN};
    match password {
        Some(p) if p.chars().count() < MIN_PASSWORD_LEN || p.len() > MAX_PASSWORD_LEN => {
            Err(OfflineError::Invalid(format!(
                "the password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
            )))
        }
        _ => Ok(()),
    }
}

/// Creates a user; returns it and the generated password when none was given. `legacy` makes
/// a client without a tenant: it sees only the orders made before tenants existed.
pub fn create_user(
    data_dir: &Path,
    email: &str,
    name: &str,
    role: Role,
    tenant_slug: Option<&str>,
    legacy: bool,
    password: Option<String>,
) -> Result<(User, Option<String>), OfflineError> {
    let store = open(data_dir)?;
    let email = email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(OfflineError::Invalid(format!("invalid email {email:?}")));
    }
    let tenant_id = match (role, tenant_slug) {
        (Role::Client, None) if legacy => None,
        (_, _) if legacy => {
            return Err(OfflineError::Invalid(
                "--legacy is for client users without a tenant".into(),
            ));
        }
        (Role::Client, Some(slug)) => Some(
            store
                .tenant_slugs
                .get(slug)?
                .ok_or_else(|| OfflineError::Invalid(format!("no tenant with slug {slug}")))?,
        ),
        (Role::Client, None) => {
            return Err(OfflineError::Invalid(
                "a client user needs --tenant (or --legacy for the orders made before tenants)"
                    .into(),
            ));
        }
        (_, Some(_)) => {
            return Err(OfflineError::Invalid(
                "only client users belong to a tenant".into(),
            ));
        }
        (_, None) => None,
    };
    check_password(password.as_deref())?;
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(OfflineError::Invalid(
            "name must be at most 200 printable characters".into(),
        ));
    }
    let generated = password.is_none().then(generate_password);
    let password = password.or(generated.clone()).unwrap_or_default();
    let stamp = now();
    let user = User {
        id: new_id(),
        email: email.clone(),
        name: name.to_owned(),
        password_hash: hash_password(&password)
            .map_err(|_| OfflineError::Invalid("hashing failed".into()))?,
        role,
        tenant_id,
        disabled: false,
        demo_tag: None,
        created_at: stamp,
        updated_at: stamp,
    };
    if !store.create_user(&user)? {
        return Err(OfflineError::Invalid(format!(
            "a user with email {email} exists"
        )));
    }
    store.db.flush_blocking()?;
    Ok((user, generated))
}

/// Every user.
pub fn list_users(data_dir: &Path) -> Result<Vec<User>, OfflineError> {
    Ok(open(data_dir)?.users.values()?)
}

/// Disables a user and ends their sessions.
pub fn disable_user(data_dir: &Path, email: &str) -> Result<User, OfflineError> {
    let store = open(data_dir)?;
    let user = store
        .user_by_email(email)?
        .ok_or_else(|| OfflineError::NoSuchUser(email.to_owned()))?;
    let other_admins = store
        .users
        .values()?
        .iter()
        .filter(|u| u.role == Role::Admin && !u.disabled && u.id != user.id)
        .count();
    if user.role == Role::Admin && !user.disabled && other_admins == 0 {
        return Err(OfflineError::Invalid(format!(
            "{email} is the last enabled admin"
        )));
    }
    let user = store
        .users
        .update(&user.id, |u| {
            u.disabled = true;
            u.updated_at = now();
        })?
        .ok_or_else(|| OfflineError::NoSuchUser(email.to_owned()))?;
    end_user_sessions(&store, &user.id)?;
    store.db.flush_blocking()?;
    Ok(user)
}

/// Sets a new password (generated when none is given), enables the user and ends their
/// sessions; returns the generated password.
pub fn reset_password(
    data_dir: &Path,
    email: &str,
    password: Option<String>,
) -> Result<Option<String>, OfflineError> {
    let store = open(data_dir)?;
    let user = store
        .user_by_email(email)?
        .ok_or_else(|| OfflineError::NoSuchUser(email.to_owned()))?;
    check_password(password.as_deref())?;
    let generated = password.is_none().then(generate_password);
    let password = password.or(generated.clone()).unwrap_or_default();
    let hash =
        hash_password(&password).map_err(|_| OfflineError::Invalid("hashing failed".into()))?;
    store.users.update(&user.id, |u| {
        u.password_hash = hash.clone();
        u.disabled = false;
        u.updated_at = now();
    })?;
    end_user_sessions(&store, &user.id)?;
    store.db.flush_blocking()?;
    Ok(generated)
}

/// Adds a new JWT signing key; the server signs with it from its next start, and keeps
/// accepting the previous key until tokens signed with it have expired.
pub fn rotate_signing_key(data_dir: &Path) -> Result<usize, OfflineError> {
    let store = open(data_dir)?;
    crate::identity::auth::JwtKeys::generate(&store)
        .map_err(|e| OfflineError::Invalid(e.to_string()))?;
    store.db.flush_blocking()?;
    Ok(store.signing_keys.len())
}

/// What `audit-verify` found.
#[derive(Debug)]
pub struct AuditCheck {
    /// Records in the index.
    pub indexed: usize,
    /// The file trail: records, files and the signed head it reaches.
    pub file: axon_trail::Verified,
}

/// Checks the control plane's audit trail: the index's hash chain and the files' chain up to
/// their signed head. Fails naming the first broken record or line.
pub fn verify_audit(data_dir: &Path) -> Result<AuditCheck, OfflineError> {
    let store = open(data_dir)?;
    let tree = store.db.tree("audit")?;
    if let Some(seq) = crate::identity::audit::verify_index(&tree)? {
        return Err(OfflineError::Invalid(format!(
            "audit index broken at record {seq}"
        )));
    }
    let file = axon_trail::verify::<crate::identity::audit::Record>(
        &crate::identity::audit::trail_config(data_dir),
    )
    .map_err(|e| OfflineError::Invalid(e.to_string()))?;
    Ok(AuditCheck {
        indexed: tree.len(),
        file,
    })
}

fn demo_book(store: &Store) -> Result<crate::agency::book::Book, OfflineError> {
    let outbox = std::sync::Arc::new(crate::agency::outbox::Outbox::open(&store.db)?);
    Ok(crate::agency::book::Book::open(&store.db, outbox, None)?)
}

fn demo_error(e: crate::agency::demo::DemoError) -> OfflineError {
    match e {
        crate::agency::demo::DemoError::Store(e) => OfflineError::Store(e),
        other => OfflineError::Invalid(other.to_string()),
    }
}

/// Loads the demo data (see `agency::demo`); the first admin stands as the staff who planned
/// and approved the demo orders.
pub fn seed_demo(data_dir: &Path) -> Result<crate::agency::demo::DemoReport, OfflineError> {
    let store = open(data_dir)?;
    let book = demo_book(&store)?;
    let staff = store
        .users
        .values()?
        .into_iter()
        .find(|u| u.role == Role::Admin)
        .map(|u| u.id)
        .unwrap_or_else(|| "axon-cp".into());
    crate::agency::demo::seed(&store, &book, &staff).map_err(demo_error)
}

/// Removes the demo data.
pub fn remove_demo(data_dir: &Path) -> Result<crate::agency::demo::DemoReport, OfflineError> {
    let store = open(data_dir)?;
    let book = demo_book(&store)?;
    crate::agency::demo::remove(&store, &book).map_err(demo_error)
}
