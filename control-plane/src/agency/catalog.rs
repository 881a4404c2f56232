//! The catalog of agent products clients order from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::blueprint::{AgentBlueprint, ProductType};
use crate::model::Rfc3339;

pub const MAX_NAME: usize = 120;
pub const MAX_DESCRIPTION: usize = 4000;
/// Tenants a product may be limited to.
pub const MAX_TENANTS: usize = 500;

/// One product.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CatalogItem {
    pub id: String,
    pub name: String,
    pub description: String,
    pub product_type: ProductType,
    /// The blueprint an order from this product starts with.
    pub base_blueprint: AgentBlueprint,
    /// Price in minor units (cents).
    pub price_cents: u64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// `None`: every tenant sees it; otherwise only the listed tenants (by id).
    #[serde(default)]
    pub tenants: Option<Vec<String>>,
    pub active: bool,
    #[serde(default)]
    pub demo_tag: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl CatalogItem {
    /// Whether a client of `tenant` (none: a legacy client) may see and order it.
    pub fn visible_to(&self, tenant: Option<&str>) -> bool {
        self.active
            && match (&self.tenants, tenant) {
                (None, _) => true,
                (Some(list), Some(t)) => list.iter().any(|x| x == t),
                (Some(_), None) => false,
            }
    }

    /// What is wrong with the editable fields.
    pub fn check(&self) -> Result<(), String> {
        let name = self.name.trim().chars().count();
        if name == 0 || name > MAX_NAME {
            return Err(format!("name must have 1 to {MAX_NAME} characters"));
        }
        if self.description.chars().count() > MAX_DESCRIPTION {
            return Err(format!(
                "description must be at most {MAX_DESCRIPTION} characters"
            ));
        }
        let currency_ok =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !currency_ok {
            return Err("currency must be an ISO 4217 code such as EUR".into());
        }
        if self.price_cents > 10_000_000_000 {
            return Err("price_cents is out of range".into());
        }
        if let Some(list) = &self.tenants
            && list.len() > MAX_TENANTS
        {
            return Err(format!("tenants may list at most {MAX_TENANTS} tenants"));
        }
        self.base_blueprint
            .check()
            .map_err(|e| format!("base_blueprint: {e}"))
    }
}

/// A product as a client sees it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ClientCatalogItem {
    pub id: String,
    pub name: String,
    pub description: String,
    pub product_type: ProductType,
    pub price_cents: u64,
    pub currency: String,
}

impl From<&CatalogItem> for ClientCatalogItem {
    fn from(c: &CatalogItem) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            description: c.description.clone(),
            product_type: c.product_type,
            price_cents: c.price_cents,
            currency: c.currency.clone(),
        }
    }
}
