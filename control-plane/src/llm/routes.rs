//! Aliases (`fast`, `smart`, `local`, `auto`, ...) mapping to ordered, weighted route lists,
//! and the price table: stored in sled, seeded from the providers file, managed by admins
//! through `/api/llm/routes` and `/api/llm/prices`, and read from memory on every request.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::store::{Db, StoreError, Tree};

/// How an alias orders its targets for one request. The order is also the fallback order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In the order given; the next one only when the one before fails.
    #[default]
    Priority,
    /// The first picked at random by weight, the rest in order.
    Weighted,
    /// Fewest requests in flight first.
    LeastOutstanding,
    /// Lowest recent latency (moving average) first.
    Latency,
    /// The cheapest target able to serve the request (context size, tools, images) first.
    Cheapest,
}

/// One route of an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `provider/model`, e.g. `openai/gpt-4o-mini` or `ollama/llama3.2`.
    pub model: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A name clients use instead of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// `[a-z0-9._-]`, 1-64 characters, without `/`.
    pub name: String,
    #[serde(default)]
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Alias {
    /// Why the alias cannot be stored.
    pub fn check(&self) -> Result<(), String> {
        if !valid_alias(&self.name) {
            return Err("alias names are 1-64 of [a-z0-9._-] (no '/')".into());
        }
        if self.targets.is_empty() || self.targets.len() > 32 {
            return Err("an alias needs 1 to 32 targets".into());
        }
        for t in &self.targets {
            let Some((provider, model)) = t.model.split_once('/') else {
                return Err(format!("target {:?} must be provider/model", t.model));
            };
            if provider.is_empty() || model.is_empty() || t.model.len() > 200 {
                return Err(format!("target {:?} must be provider/model", t.model));
            }
            if t.weight == 0 || t.weight > 1000 {
                return Err(format!("target {:?}: weight must be 1 to 1000", t.model));
            }
        }
        if self.description.len() > 500 {
            return Err("description: at most 500 bytes".into());
        }
        Ok(())
    }
}

pub fn valid_alias(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// What a model costs and can do. `model` may end in `/*` for every model of a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub model: String,
    /// US dollars per million prompt tokens.
    pub input_per_mtok: f64,
    /// US dollars per million completion tokens.
    pub output_per_mtok: f64,
    /// US dollars per million cached prompt tokens (default: the prompt price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
    /// Context window in tokens, for `cheapest` routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<u64>,
    /// Whether the model takes tools (unknown: assumed yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<bool>,
    /// Whether the model takes images (unknown: assumed yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vision: Option<bool>,
}

impl Price {
    pub fn check(&self) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && (0.0..=10_000.0).contains(&v);
        if !self.model.contains('/') || self.model.len() > 200 {
            return Err(format!(
                "price model {:?} must be provider/model or provider/*",
                self.model
            ));
        }
        if !ok(self.input_per_mtok)
            || !ok(self.output_per_mtok)
            || !self.cached_input_per_mtok.is_none_or(ok)
        {
            return Err(format!(
                "{}: prices must be 0 to 10000 per million tokens",
                self.model
            ));
        }
        Ok(())
    }

    /// Cost in US dollars of these token counts.
    pub fn cost(&self, usage: &super::wire::Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let fresh = usage.prompt_tokens - cached;
        (fresh as f64 * self.input_per_mtok
            + cached as f64 * self.cached_input_per_mtok.unwrap_or(self.input_per_mtok)
            + usage.completion_tokens as f64 * self.output_per_mtok)
            / 1e6
    }
}

/// The aliases and prices, in memory and in the store.
pub struct RouteTable {
    aliases_tree: Tree<Alias>,
    prices_tree: Tree<Price>,
    aliases: RwLock<Arc<BTreeMap<String, Alias>>>,
    prices: RwLock<Arc<BTreeMap<String, Price>>>,
}

impl RouteTable {
    /// Opens the trees and adds the seeds that are not stored yet (a seed never overwrites
    /// what an admin changed).
    pub fn open(
        db: &Db,
        seed_aliases: &[Alias],
        seed_prices: &[Price],
    ) -> Result<Self, StoreError> {
        let aliases_tree: Tree<Alias> = db.tree("llm_aliases")?;
        let prices_tree: Tree<Price> = db.tree("llm_prices")?;
        for a in seed_aliases {
            aliases_tree.insert_new(&a.name, a)?;
        }
        for p in seed_prices {
            if p.check().is_ok() {
                prices_tree.insert_new(&p.model, p)?;
            }
        }
        let table = Self {
            aliases: RwLock::new(Arc::new(aliases_tree.entries()?.into_iter().collect())),
            prices: RwLock::new(Arc::new(prices_tree.entries()?.into_iter().collect())),
            aliases_tree,
            prices_tree,
        };
        Ok(table)
    }

    pub fn aliases(&self) -> Arc<BTreeMap<String, Alias>> {
        self.aliases
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn alias(&self, name: &str) -> Option<Alias> {
        self.aliases().get(name).cloned()
    }

    /// Stores an alias (new or replaced); effective for the next request.
    pub fn put_alias(&self, alias: Alias) -> Result<bool, StoreError> {
        let mut guard = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        self.aliases_tree.put(&alias.name, &alias)?;
        let mut next = (**guard).clone();
        let created = next.insert(alias.name.clone(), alias).is_none();
        *guard = Arc::new(next);
        Ok(created)
    }

    pub fn remove_alias(&self, name: &str) -> Result<bool, StoreError> {
        let mut guard = self.aliases.write().unwrap_or_else(|p| p.into_inner());
        let removed = self.aliases_tree.take(name)?.is_some();
        let mut next = (**guard).clone();
        next.remove(name);
        *guard = Arc::new(next);
        Ok(removed)
    }

    pub fn prices(&self) -> Arc<BTreeMap<String, Price>> {
        self.prices
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the whole price table.
    pub fn set_prices(&self, prices: Vec<Price>) -> Result<(), StoreError> {
        let mut guard = self.prices.write().unwrap_or_else(|p| p.into_inner());
        for old in guard.keys() {
            if !prices.iter().any(|p| &p.model == old) {
                self.prices_tree.take(old)?;
            }
        }
        for p in &prices {
            self.prices_tree.put(&p.model, p)?;
        }
        *guard = Arc::new(prices.into_iter().map(|p| (p.model.clone(), p)).collect());
        Ok(())
    }

    /// The price of `provider/model`: its own row, else its provider's `provider/*` row.
    pub fn price(&self, model: &str) -> Option<Price> {
        let prices = self.prices();
        if let Some(p) = prices.get(model) {
            return Some(p.clone());
        }
        let provider = model.split_once('/')?.0;
        prices.get(&format!("{provider}/*")).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::wire::Usage;
    use super::*;

    fn alias(name: &str, targets: &[&str]) -> Alias {
        Alias {
            name: name.into(),
            strategy: Strategy::Priority,
            targets: targets
                .iter()
                .map(|t| Target {
                    model: (*t).into(),
                    weight: 1,
                })
                .collect(),
            description: String::new(),
        }
    }

    #[test]
    fn aliases_are_checked() {
        assert!(alias("fast", &["openai/gpt-4o-mini"]).check().is_ok());
        assert!(alias("a/b", &["openai/x"]).check().is_err());
        assert!(alias("Fast", &["openai/x"]).check().is_err());
        assert!(alias("fast", &[]).check().is_err());
        assert!(alias("fast", &["gpt-4o"]).check().is_err());
        assert!(alias("fast", &["/x"]).check().is_err());
    }

    #[test]
    fn seeds_do_not_overwrite_and_changes_persist() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(dir.path()).expect("db");
        let seed = [alias("fast", &["openai/a"])];
        let table = RouteTable::open(&db, &seed, &[]).expect("open");
        table
            .put_alias(alias("fast", &["deepseek/deepseek-chat"]))
            .expect("put");
        drop(table);
        let table = RouteTable::open(&db, &seed, &[]).expect("reopen");
        assert_eq!(
            table.alias("fast").expect("alias").targets[0].model,
            "deepseek/deepseek-chat"
        );
        assert!(table.remove_alias("fast").expect("remove"));
        assert!(table.alias("fast").is_none());
    }

    #[test]
    fn prices_fall_back_to_the_provider_and_count_cache_hits() {
        let dir = tempfile::tempdir().expect("dir");
        let db = Db::open(dir.path()).expect("db");
        let table = RouteTable::open(&db, &[], &[]).expect("open");
        table
            .set_prices(vec![
                Price {
                    model: "openai/gpt-4o-mini".into(),
                    input_per_mtok: 0.15,
                    output_per_mtok: 0.6,
                    cached_input_per_mtok: Some(0.075),
                    context_tokens: Some(128_000),
                    tools: None,
                    vision: None,
                },
                Price {
                    model: "ollama/*".into(),
                    input_per_mtok: 0.0,
                    output_per_mtok: 0.0,
                    cached_input_per_mtok: None,
                    context_tokens: None,
                    tools: None,
                    vision: None,
                },
            ])
            .expect("set");
        let p = table.price("openai/gpt-4o-mini").expect("price");
        let cost = p.cost(&Usage::new(1_000_000, 1_000_000, 500_000));
        assert!((cost - (0.075 + 0.0375 + 0.6)).abs() < 1e-9, "{cost}");
        assert_eq!(
            table
                .price("ollama/llama3.2")
                .expect("wildcard")
                .input_per_mtok,
            0.0
        );
        assert!(table.price("gemini/x").is_none());
    }
}
