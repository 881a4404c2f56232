//! agentd, the Axon host agent.
//!
//! It dials out to the control plane over a mutual-TLS WebSocket (TLS 1.3, the CA received at
//! enrollment as the only root), introduces itself with a hello (host facts and detected
//! capabilities), answers requests, renews its certificate at two thirds of its life, and
//! reconnects with exponential backoff and full jitter. Hosts behind NAT need no inbound port;
//! the control plane's LLM gateway reaches their model servers through the same link
//! (`forward`), on allowlisted paths only.
//!
//! Limits: frames from the control plane are capped (1 MiB by default); every capability probe
//! is bounded by a timeout; the private key never leaves the state dir (mode 0600).

pub mod audit;
pub mod backoff;
pub mod caps;
pub mod clock;
pub mod config;
pub mod docker;
pub mod enroll;
pub mod exec;
pub mod facts;
pub mod forward;
pub mod jail;
pub mod journal;
pub mod link;
pub mod loglines;
pub mod names;
pub mod ops;
pub mod services;
pub mod state;
pub mod sys;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod watch;

use std::future::Future;

pub use config::AgentConfig;

/// The agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    State(#[from] state::StateError),
}

/// Runs the agent until `shutdown` resolves. Fails only if it cannot start (bad config, not
/// enrolled); link failures are retried forever.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    config.validate()?;
    let identity = state::StateDir::new(&config.state_dir).identity()?;
    let facts = facts::collect();
    let probes = caps::Probes {
        system_bus: config.system_bus.clone(),
        ollama: config.ollama_address.clone(),
        sdxl: config.sdxl_address.clone(),
        ..caps::Probes::default()
    };
    let capabilities = caps::detect(&probes).await;
    tracing::info!(host = %identity.host_id, ?capabilities, "agentd starting");
    let whitelist = config.whitelist()?;
    tracing::info!(commands = whitelist.len(), "command whitelist loaded");
    let jail = jail::Jail::open(&config.jails).map_err(config::ConfigError::Invalid)?;
    tracing::info!(roots = ?jail, "file jail opened");
    let auditor = std::sync::Arc::new(
        audit::Auditor::open(&config.state_dir, audit::DEFAULT_MAX_FILE_BYTES).map_err(|e| {
            config::ConfigError::Invalid(format!("cannot open the audit trail: {e}"))
        })?,
    );
    auditor
        .note(
            "agent.start",
            "ok",
            &identity.host_id,
            &axon_shared::Requester::default(),
            &format!("agentd {}", env!("CARGO_PKG_VERSION")),
        )
        .await;
    let watcher = watch::RootWatcher::start(
        &config
            .jails
            .iter()
            .map(|r| (r.name.clone(), r.path.clone()))
            .collect::<Vec<_>>(),
    );
    let journal = journal::Journal {
        journalctl: config.journalctl.clone(),
        directory: config.journal_dir.clone(),
    };
    let mount_roots = config
        .jails
        .iter()
        .map(|r| services::MountRoot {
            path: r.path.clone(),
            writable: r.mode == jail::Mode::ReadWrite,
        })
        .collect();
    let services = services::Services::new(
        config.allow.clone(),
        config.system_bus.clone(),
        journal,
        mount_roots,
    );
    let telemetry = telemetry::Telemetry::spawn(
        telemetry::TelemetryConfig {
            interval: config.metrics_interval,
            discovery_interval: config.capabilities_interval,
            top_processes: config.top_processes,
            ollama: config.ollama_address.clone(),
            sdxl: config.sdxl_address.clone(),
            path: probes.path.clone(),
        },
        auditor.clone(),
    );
    let telemetry = match telemetry {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "telemetry is off: the host cannot be read");
            None
        }
    };
    let mut ops = ops::Ops::with_telemetry(whitelist, jail, auditor, watcher, services, telemetry);
    let forwarder = forward::Forwarder::new(config.forwarding(), ops.models.subscribe())
        .map_err(config::ConfigError::Invalid)?;
    ops.forwarder = Some(forwarder);
    let ops = std::sync::Arc::new(ops);
    ops.services.spawn_followers();
    ops.capabilities.send_replace(capabilities);
    spawn_capability_watch(ops.clone(), probes, config.capabilities_interval);
    spawn_code_release();
    let hello = link::hello(facts, capabilities);
    link::run_until(&config, hello, ops, shutdown, || {
        // systemd Type=notify: ready once the first connection attempt starts.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    })
    .await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    Ok(())
}

/// Once the agent has started, connected and run each periodic task once, the code only
/// starting needed is handed back (see `sys::release_code_pages`), and the heap trimmed.
const CODE_RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(90);

fn spawn_code_release() {
    tokio::spawn(async {
        tokio::time::sleep(CODE_RELEASE_AFTER).await;
        sys::trim_heap();
        match tokio::task::spawn_blocking(sys::release_code_pages).await {
            Ok(Ok(bytes)) => tracing::debug!(bytes, "start-up code pages handed back"),
            Ok(Err(e)) => tracing::debug!(error = %e, "code pages not handed back"),
            Err(_) => {}
        }
    });
}

/// Detects capabilities again every `interval`; a change reaches the control plane at once.
fn spawn_capability_watch(
    ops: std::sync::Arc<ops::Ops>,
    probes: caps::Probes,
    interval: std::time::Duration,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let now = caps::detect(&probes).await;
            let changed = ops.capabilities.send_if_modified(|old| {
                let changed = *old != now;
                *old = now;
                changed
            });
            if changed {
                tracing::info!(capabilities = ?now, "capabilities changed");
            }
        }
    });
}
