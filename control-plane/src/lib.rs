//! axon-cp, the Axon control plane.
//!
//! One process serves two listeners: the REST API for admins, operators and clients (axum,
//! TLS with the server certificate from the internal CA, or plain HTTP on loopback for
//! development), and the agents' endpoint (TLS 1.3, client certificate required, one WebSocket
//! per agent). State lives in sled under the data dir; `init` creates it with the CA and the
//! first admin. See docs/ for the protocol and the security model.
//!
//! Limits: one process, one sled store (a second process on the same data dir is refused);
//! agent-link frames are capped (1 MiB by default) and API bodies at 1 MiB.

// Rooms, lowest first, each importing only lower ones: the base (store, model, error, live),
// identity, fleet, llm, agency, and api (the HTTP edge). The root (this file, config, server, init,
// offline) wires them together; rooms see it only through the shared `AppState` handle.
pub mod agency;
pub mod api;
pub mod backup;
pub mod console;
pub mod error;
pub mod fleet;
pub mod identity;
pub mod live;
pub mod llm;
pub mod model;
pub mod store;

pub mod config;
pub mod init;
pub mod offline;
mod server;
pub mod space;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::ServeConfig;
use fleet::pki::{self, Pki};
use fleet::{Hub, Revocations};
use fleet::{link, telemetry};
use identity::{audit, auth};
use model::Store;

/// Shared by every handler and by the agent sessions. One pointer: a request clones the state
/// once per layer and extractor, and a clone of many `Arc`s was a third of a simple request's
/// CPU (docs/benchmarks.md, API throughput).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
pub struct Shared {
    pub config: Arc<ServeConfig>,
    pub store: Arc<Store>,
    pub pki: Arc<Pki>,
    pub jwt: Arc<auth::JwtKeys>,
    pub hub: Arc<Hub>,
    pub revocations: Arc<Revocations>,
    pub limiter: Arc<api::RateLimiter>,
    /// Bounds concurrent argon2 runs.
    pub passwords: Arc<auth::PasswordWork>,
    /// Held across the check and the write of a change to a user's role or state, so two
    /// concurrent changes cannot both pass the last-admin check.
    pub user_changes: Arc<tokio::sync::Mutex<()>>,
    pub audit: Arc<audit::Audit>,
    pub live: live::Live,
    pub telemetry: Arc<telemetry::Telemetry>,
    /// Request counts and latencies of the API, for `/metrics`.
    pub http_metrics: Arc<api::metrics::HttpMetrics>,
    /// The OpenAI-compatible LLM gateway (`/v1/...`).
    pub llm: Arc<llm::Gateway>,
    /// Everything sent to other services (webhooks, the builder, deploy channels).
    pub outbox: Arc<agency::outbox::Outbox>,
    /// Orders, catalog, plans.
    pub agency: Arc<agency::Agency>,
    /// Free space on the data dir; changes stop before the disk is full.
    pub space: Arc<space::Space>,
}

/// Raises the soft open-file limit to the hard one: every agent link is a descriptor, and the
/// usual soft default (1,024) would cap the fleet near a thousand hosts. Returns the limit now
/// in force (0 if it cannot be read).
#[allow(unsafe_code)] // getrlimit / setrlimit on a struct of ours
pub fn raise_open_files() -> u64 {
    // SAFETY: both calls only read and write the struct passed.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

/// Starting or running the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("the data dir is not initialised ({0}); run `axon-cp init` first")]
    NotInitialised(pki::PkiError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Keys(#[from] auth::KeyError),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot read a listener's address: {0}")]
    Listener(std::io::Error),
    #[error("the LLM gateway cannot start: {0}")]
    Llm(#[from] llm::gateway::GatewayError),
    #[error("the outbox cannot start: {0}")]
    Outbox(String),
}

/// The two bound listeners.
pub struct Listeners {
    pub api: TcpListener,
    pub agent: TcpListener,
}

/// Opens the data dir and builds the shared state.
pub fn open_state(config: ServeConfig) -> Result<AppState, ServeError> {
    let pki = Pki::load(&config.data_dir).map_err(ServeError::NotInitialised)?;
    let store = Store::open(&config.data_dir.join("db"))?;
    let jwt = auth::JwtKeys::load(&store, config.access_ttl)?;
    let revocations = Arc::new(Revocations::default());
    for mut host in store.hosts.values()? {
        if host.revoked_at.is_some() {
            revocations.revoke_host(&host.id);
        }
        // Nobody is connected to a process that just started.
        if host.online {
            host.online = false;
            store.hosts.put(&host.id.clone(), &host)?;
        }
    }
    let live = live::Live::default();
    let audit = Arc::new(audit::Audit::open(
        &store.db,
        &config.data_dir,
        live.clone(),
    )?);
    let telemetry = Arc::new(telemetry::Telemetry::open(
        &store,
        config.metrics_retention,
    )?);
    let store = Arc::new(store);
    let hub = Arc::new(Hub::default());
    let fleet = Arc::new(llm::fleet::LiveFleet::new(
        store.clone(),
        hub.clone(),
        telemetry.clone(),
        revocations.clone(),
        config.llm.fleet_timeouts.first_byte(),
        llm::gateway::HOST_HEADROOM,
    ));
    let llm = Arc::new(llm::Gateway::open(&config.llm, &store.db, fleet)?);
    let outbox = Arc::new(agency::outbox::Outbox::open(&store.db)?);
    outbox.set_direct_secret("builder", config.agency.builder_webhook_secret.clone());
    let agency = Arc::new(agency::Agency::open(
        &store.db,
        &config.agency,
        outbox.clone(),
        llm.clone(),
        store.tenants.clone(),
    )?);
    let space = Arc::new(space::Space::new(
        &config.data_dir,
        config.min_free_bytes,
        vec![
            config.data_dir.join("db").join("db"),
            config.data_dir.join(audit::AUDIT_FILE),
        ],
    ));
    space.tick();
    Ok(AppState(Arc::new(Shared {
        space,
        llm,
        outbox,
        agency,
        audit,
        live,
        telemetry,
        http_metrics: Arc::default(),
        config: Arc::new(config),
        store,
        pki: Arc::new(pki),
        jwt: Arc::new(jwt),
        hub,
        revocations,
        limiter: Arc::new(api::RateLimiter::default()),
        passwords: Arc::new(auth::PasswordWork::default()),
        user_changes: Arc::default(),
    })))
}

/// Serves both listeners until `shutdown` resolves, then closes agent links and flushes.
/// `ready` is called once both listeners are serving.
pub async fn run(
    mut config: ServeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    ready: impl FnOnce(),
) -> Result<(), ServeError> {
    let api_addr = listeners.api.local_addr().map_err(ServeError::Listener)?;
    let agent_addr = listeners.agent.local_addr().map_err(ServeError::Listener)?;
    config.validate(api_addr)?;
    config.agent_port = agent_addr.port();
    if config.agency.deploy.public_url.is_none() {
        let scheme = if config.insecure_http {
            "http"
        } else {
            "https"
        };
        config.agency.deploy.public_url = Some(format!("{scheme}://{api_addr}"));
    }
    let state = open_state(config)?;
    let agent_tls = link::agent_tls(&state.pki, state.revocations.clone())?;
    let api_tls = if state.config.insecure_http {
        None
    } else {
        Some(state.pki.api_tls()?)
    };
    let outbox_client = agency::outbox::http_client().map_err(ServeError::Outbox)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let agents = tokio::spawn(link::serve(
        listeners.agent,
        agent_tls,
        state.clone(),
        stop_rx.clone(),
    ));
    let api = tokio::spawn(server::serve_api(
        listeners.api,
        api_tls,
        api::router(state.clone()),
        stop_rx.clone(),
    ));
    // The first pass runs before serving, so nothing expired is honoured after a restart.
    prune_metrics(&state);
    clean_expired(&state).await;
    let backups = match backup::serve_socket(state.config.data_dir.clone(), state.store.db.clone())
    {
        Ok(socket) => Some(socket),
        Err(e) => {
            tracing::error!(error = %e, "the admin socket for backups could not be opened; `axon-cp backup` needs a stopped server");
            None
        }
    };
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let space = tokio::spawn(state.space.clone().watch());
    let outbox = state
        .outbox
        .clone()
        .spawn_worker(outbox_client, stop_rx.clone());
    tracing::info!(api = %api_addr, agents = %agent_addr, tls = !state.config.insecure_http, "axon-cp serving");
    ready();
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = agents.await;
    let _ = api.await;
    let _ = outbox.await;
    housekeeping.abort();
    space.abort();
    state.audit.flush_refusals(true);
    state.audit.settled().await;
    state.llm.usage.shutdown().await;
    // Give sessions a moment to send their close frames.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    if let Some(socket) = backups {
        let _ = tokio::task::spawn_blocking(move || socket.close()).await;
    }
    state.store.db.flush().await?;
    Ok(())
}

/// Periodic work, in one task: every 10 s the counts of unauthenticated refusals whose window
/// has ended are recorded; every ten minutes (and once before serving) metrics history past
/// its retention is dropped and expired sessions, refresh and enrollment tokens are removed.
async fn housekeeping(state: AppState) {
    const TICK: std::time::Duration = std::time::Duration::from_secs(10);
    const SLOW_EVERY: u32 = 60;
    let mut tick = tokio::time::interval(TICK);
    let mut ticks = 0u32;
    // The first tick is immediate; the start already had its slow pass.
    tick.tick().await;
    loop {
        tick.tick().await;
        ticks = ticks.wrapping_add(1);
        state.audit.flush_refusals(false);
        if ticks.is_multiple_of(SLOW_EVERY) {
            prune_metrics(&state);
            clean_expired(&state).await;
        }
    }
}

async fn clean_expired(state: &AppState) {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || auth::clean_expired(&store)).await {
        Ok(Ok(cleaned)) if cleaned != auth::Cleaned::default() => {
            tracing::info!(?cleaned, "expired sessions and tokens removed");
            if let Err(e) = state.store.db.flush().await {
                tracing::error!(error = %e, "flush after cleanup failed");
            }
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cleanup of expired sessions failed"),
        Err(e) => tracing::error!(error = %e, "cleanup task failed"),
    }
}

fn prune_metrics(state: &AppState) {
    let hosts: Vec<String> = state
        .store
        .hosts
        .values()
        .map(|hosts| hosts.into_iter().map(|h| h.id).collect())
        .unwrap_or_default();
    match state.telemetry.prune(&hosts, telemetry::unix_ms()) {
        Ok(0) => {}
        Ok(n) => tracing::info!(minutes = n, "metrics history pruned"),
        Err(e) => tracing::error!(error = %e, "metrics history prune failed"),
    }
}
