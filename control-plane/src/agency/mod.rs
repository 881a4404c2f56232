//! The agency's business: orders and their state machine, production plans made through the
//! LLM gateway, agent blueprints and the builder's artifacts, the catalog, factory stats, demo
//! data, and the durable outbox that carries signed webhooks to n8n and other receivers.
//! See docs/agency.md.

pub mod blueprint;
pub mod book;
pub mod builder;
pub mod catalog;
pub mod demo;
pub mod deploy;
pub mod orders;
pub mod outbox;
pub mod plan;
pub mod planner;
pub mod stats;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use book::Book;
use outbox::Outbox;
use planner::{Planner, PlannerConfig};

use crate::store::{Db, StoreError};

/// The agency's settings (environment: `AXON_PLAN_MODEL`, `AXON_PLAN_TIMEOUT`,
/// `AXON_PLAN_ATTEMPTS`, `AXON_BUILDER_WEBHOOK_URL`, `AXON_BUILDER_WEBHOOK_SECRET`, and the
/// deploy channels' settings in [`deploy::config`]).
#[derive(Clone, Default)]
pub struct AgencyConfig {
    /// The deploy channels.
    pub deploy: deploy::config::DeployConfig,
    pub planner: PlannerConfig,
    /// Where an order's blueprint and approved plan go when it enters production.
    pub builder_webhook_url: Option<String>,
    /// Signs the builder's deliveries as webhooks are signed.
    pub builder_webhook_secret: Option<String>,
}

impl std::fmt::Debug for AgencyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgencyConfig")
            .field("planner", &self.planner)
            .field("deploy", &self.deploy)
            .field("builder_webhook_url", &self.builder_webhook_url)
            .field(
                "builder_webhook_secret",
                &self.builder_webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl AgencyConfig {
    /// Reads the settings from the environment through `get`.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut config = Self::default();
        if let Some(alias) = get("AXON_PLAN_MODEL").filter(|s| !s.trim().is_empty()) {
            config.planner.alias = alias.trim().to_owned();
        }
        if let Some(t) = get("AXON_PLAN_TIMEOUT") {
            config.planner.timeout = axon_shared::parse_duration(&t)
                .map_err(|e| format!("AXON_PLAN_TIMEOUT: {e}"))?
                .max(Duration::from_secs(1));
        }
        if let Some(n) = get("AXON_PLAN_ATTEMPTS") {
            config.planner.attempts = n
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or("AXON_PLAN_ATTEMPTS must be a number from 1 to 10")?;
        }
        if let Some(url) = get("AXON_BUILDER_WEBHOOK_URL").filter(|s| !s.trim().is_empty()) {
            webhooks::check_url(url.trim())
                .map_err(|e| format!("AXON_BUILDER_WEBHOOK_URL: {e}"))?;
            config.builder_webhook_url = Some(url.trim().to_owned());
        }
        config.builder_webhook_secret =
            get("AXON_BUILDER_WEBHOOK_SECRET").filter(|s| !s.is_empty());
        config.deploy = deploy::config::DeployConfig::from_env(get)?;
        Ok(config)
    }
}

/// The agency's state, shared by the handlers.
pub struct Agency {
    pub book: Book,
    pub planner: Planner,
    pub deployer: deploy::Deployer,
}

impl Agency {
    pub fn open(
        db: &Db,
        config: &AgencyConfig,
        outbox: Arc<Outbox>,
        gateway: Arc<crate::llm::Gateway>,
        tenants: crate::store::Tree<crate::model::Tenant>,
    ) -> Result<Self, StoreError> {
        let book = Book::open(db, outbox.clone(), config.builder_webhook_url.clone())?;
        let deployer = deploy::Deployer::open(
            db,
            config.deploy.clone(),
            book.orders.clone(),
            tenants,
            &outbox,
        )?;
        Ok(Self {
            book,
            planner: Planner::new(gateway, config.planner.clone()),
            deployer,
        })
    }
}
