//! Stored records and the repositories that hold them.

use std::collections::BTreeMap;

use axon_shared::{Capabilities, HostFacts};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Db, StoreError, Tree};

/// What a user may do; see docs/security.md for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Fleet operations and order processing.
    Operator,
    /// Read-only.
    Viewer,
    /// A tenant's client: only that tenant's data.
    Client,
}

impl Role {
    /// The name used in the API and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Viewer => "viewer",
            Self::Client => "client",
        }
    }
}

/// A person or automation account that logs in to the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    /// Stable id (ULID).
    pub id: String,
    /// Login name, unique, lower-cased.
    pub email: String,
    /// Display name.
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
    /// The tenant a client belongs to.
    pub tenant_id: Option<String>,
    /// A disabled user cannot log in or use existing tokens.
    pub disabled: bool,
    /// Set on users the demo seeder made, so removing the demo data finds exactly them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_tag: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A host in the fleet registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// Stable id (ULID), also in the host's certificate.
    pub id: String,
    /// Name given at enrollment (the kernel hostname is in `facts`).
    pub hostname: String,
    /// Operator-defined labels (from the enrollment token).
    pub labels: BTreeMap<String, String>,
    /// Facts from the latest hello.
    pub facts: Option<HostFacts>,
    /// Capabilities from the latest hello.
    pub capabilities: Capabilities,
    /// agentd version from the latest hello.
    pub agent_version: Option<String>,
    /// When the host enrolled.
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    /// When the control plane last heard from the host.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// Whether an authenticated link is up right now.
    pub online: bool,
    /// Address the latest link came from.
    pub remote_addr: Option<String>,
    /// Serial of the newest certificate issued to the host (hex).
    pub cert_serial: String,
    /// End of validity of that certificate.
    #[serde(with = "time::serde::rfc3339")]
    pub cert_not_after: OffsetDateTime,
    /// Set when an admin revoked the host; its certificates are refused from then on.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The tenant whose portal may show this host (read-only).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Model servers (Ollama, SDXL) the agent found last.
    #[serde(default)]
    pub model_servers: axon_shared::ModelServers,
    /// Addresses an admin set for reaching the host's model servers directly (instead of
    /// through the agent's link).
    #[serde(default, skip_serializing_if = "ModelUrls::is_empty")]
    pub model_urls: ModelUrls,
}

/// Direct addresses of a host's model servers, e.g. `http://10.0.0.7:11434`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelUrls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ollama: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sd: Option<String>,
}

impl ModelUrls {
    pub fn is_empty(&self) -> bool {
        self.ollama.is_none() && self.sd.is_none()
    }

    /// Why the addresses cannot be stored.
    pub fn check(&self) -> Result<(), String> {
        for url in self.ollama.iter().chain(self.sd.iter()) {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.len() <= 300
                && !url.contains('@')
                && !url.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(format!(
                    "model_urls: {url:?} must be an http:// or https:// base URL without credentials, up to 300 characters"
                ));
            }
        }
        Ok(())
    }
}

/// A GPU fault reported by a host, kept until someone acknowledges it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct GpuAlert {
    /// `<host id>-<agent audit sequence>`.
    pub id: String,
    pub host_id: String,
    pub event: axon_shared::GpuEvent,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schemars(with = "Option<Rfc3339>")]
    pub acked_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub acked_by: Option<String>,
}

/// A customer of the agency; clients belong to exactly one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    /// Stable id (ULID).
    pub id: String,
    /// Unique, URL-safe name used by the portal: `[a-z0-9-]{2,63}`.
    pub slug: String,
    pub name: String,
    /// Free-form settings: branding, welcome text, contact, chat ids.
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Limits on the tenant's use of the LLM gateway, all its keys and users together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_limits: Option<LlmLimits>,
    /// Set on tenants the demo seeder made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demo_tag: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A login session: one per successful login, shared by its rotating refresh tokens and named
/// in its access tokens (`sid`), so ending it cuts both at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub source_ip: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Session {
    /// The one rule for a session in use, for access tokens and refresh alike.
    pub fn is_live(&self) -> bool {
        self.expires_at > now()
    }
}

/// A key for automation (`Authorization: Bearer axk_...`), stored under the SHA-256 of its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The first characters of the key, shown so people can tell keys apart.
    pub prefix: String,
    /// What the key may do, at most what its role allows.
    pub role: Role,
    /// The tenant a client key is confined to.
    pub tenant_id: Option<String>,
    /// Scopes such as `hosts:read`; `*` allows every scope of the role.
    pub scopes: Vec<String>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// Limits on the key's use of the LLM gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm_limits: Option<LlmLimits>,
}

/// Limits on LLM gateway use, for an API key or a whole tenant. Absent fields do not limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Prompt and completion tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_minute: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_month: Option<u64>,
    /// US dollars per UTC day, from the price table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_day_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_month_usd: Option<f64>,
}

impl LlmLimits {
    /// Why the limits cannot be stored.
    pub fn check(&self) -> Result<(), String> {
        let costs = [self.cost_per_day_usd, self.cost_per_month_usd];
        if costs
            .into_iter()
            .flatten()
            .any(|c| !c.is_finite() || !(0.0..=1e9).contains(&c))
        {
            return Err("cost limits must be 0 to 1e9 US dollars".into());
        }
        Ok(())
    }
}

/// A pending enrollment token, stored under the SHA-256 of its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollToken {
    /// Id shown to admins (the secret is never stored).
    pub id: String,
    /// User id of the admin who created it.
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Labels given to the host that enrolls with it.
    pub labels: BTreeMap<String, String>,
}

/// A refresh token, stored under the SHA-256 of its value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshToken {
    pub user_id: String,
    /// All tokens rotated from one login share a family; reuse revokes the family.
    pub family: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Set once the token has been exchanged.
    pub used: bool,
}

/// One JWT signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// Ed25519 private key, PKCS#8 DER, base64.
    pub pkcs8: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// What a console browser's session cookie stands for (stored under the cookie secret's
/// SHA-256).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BrowserSession {
    pub sid: String,
    pub user_id: String,
    /// Put in every form of this session; a post without it is refused.
    pub csrf: String,
}

/// All repositories of the control plane over one sled database.
pub struct Store {
    pub db: Db,
    pub users: Tree<User>,
    /// email → user id
    pub user_emails: Tree<String>,
    pub hosts: Tree<Host>,
    pub enroll_tokens: Tree<EnrollToken>,
    pub refresh_tokens: Tree<RefreshToken>,
    /// `<session id>/<refresh token digest>` → the digest: a session's refresh tokens.
    pub session_refresh: Tree<String>,
    pub signing_keys: Tree<SigningKey>,
    pub tenants: Tree<Tenant>,
    /// slug → tenant id
    pub tenant_slugs: Tree<String>,
    pub sessions: Tree<Session>,
    /// SHA-256 of the key text → key
    pub api_keys: Tree<ApiKey>,
    /// key id → SHA-256 of the key text
    pub api_key_ids: Tree<String>,
    /// host id → the highest audit sequence number stored from that host
    pub agent_audit_seq: Tree<u64>,
    /// `<host id>/<sequence, hex>` → GPU fault
    pub gpu_alerts: Tree<GpuAlert>,
    /// SHA-256 of a console cookie's secret → its browser session.
    pub browser_sessions: Tree<BrowserSession>,
}

impl Store {
    /// Opens every tree of the store under `dir`.
    pub fn open(dir: &std::path::Path) -> Result<Self, StoreError> {
        let db = Db::open(dir)?;
        Ok(Self {
            users: db.tree("users")?,
            user_emails: db.tree("user_emails")?,
            hosts: db.tree("hosts")?,
            enroll_tokens: db.tree("enroll_tokens")?,
            refresh_tokens: db.tree("refresh_tokens")?,
            session_refresh: db.tree("session_refresh")?,
            signing_keys: db.tree("signing_keys")?,
            tenants: db.tree("tenants")?,
            tenant_slugs: db.tree("tenant_slugs")?,
            sessions: db.tree("sessions")?,
            api_keys: db.tree("api_keys")?,
            api_key_ids: db.tree("api_key_ids")?,
            agent_audit_seq: db.tree(crate::identity::audit::AGENT_AUDIT_SEQ)?,
            gpu_alerts: db.tree("gpu_alerts")?,
            browser_sessions: db.tree("browser_sessions")?,
            db,
        })
    }

    /// Creates a user, refusing a duplicate email.
    pub fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        if !self.user_emails.insert_new(&user.email, &user.id)? {
            return Ok(false);
        }
        self.users.put(&user.id, user)?;
        Ok(true)
    }

    /// The user with this email (case-insensitive).
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        match self.user_emails.get(&email.trim().to_lowercase())? {
            Some(id) => self.users.get(&id),
            None => Ok(None),
        }
    }
}

/// The JSON Schema of an `OffsetDateTime` written with `time::serde::rfc3339`, for the API's
/// description (`#[schemars(with = "Rfc3339")]`): the time crate has no schema of its own.
pub struct Rfc3339;

impl JsonSchema for Rfc3339 {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rfc3339".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "date-time"})
    }
}

/// The current time, truncated to whole seconds (what RFC 3339 in the API shows).
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t)
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditRecord {
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub time: OffsetDateTime,
    /// e.g. `auth.login`, `user.create`, `access.forbidden`, `host.exec`.
    pub action: String,
    /// `ok`, `denied`, `throttled` or `error` (the link failed).
    pub outcome: String,
    /// User or API key id; empty for anonymous callers.
    pub actor: String,
    pub actor_role: Option<Role>,
    /// The actor's tenant (clients), not the target's.
    pub tenant_id: Option<String>,
    /// What the action was about (a user id, a slug, a route, an email).
    pub target: String,
    pub source_ip: Option<String>,
    pub reason: Option<String>,
    /// For records reported by an agent: the host, and the record's number in its own trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_seq: Option<u64>,
    /// For a record that stands for several like it (repeated refusals from one address):
    /// how many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// SHA-256 (hex) of the previous record; zeros for the first.
    pub prev_hash: String,
    /// SHA-256 (hex) of this record with `hash` empty.
    pub hash: String,
}
