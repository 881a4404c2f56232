//! Factory stats for staff: where orders are, how fast they move, what sells, how deploys go.
//! Computed from the orders on demand (thousands of orders take milliseconds).

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use super::catalog::CatalogItem;
use super::orders::{Estado, Order};

/// Weeks of throughput reported.
pub const WEEKS: usize = 12;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FactoryStats {
    pub total_orders: usize,
    /// `estado` → orders.
    pub by_estado: BTreeMap<String, usize>,
    pub by_tenant: Vec<TenantCount>,
    /// `product_type` → orders.
    pub by_product: BTreeMap<String, usize>,
    /// The last weeks, oldest first.
    pub throughput: Vec<WeekCount>,
    /// `estado` → time orders spent in it (finished stays, and the current one up to now).
    pub time_in_estado: BTreeMap<String, Duration>,
    pub catalog_usage: Vec<CatalogCount>,
    /// `channel` → `status` → deploys.
    pub deploys: BTreeMap<String, BTreeMap<String, usize>>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TenantCount {
    /// `None`: legacy orders.
    pub tenant_id: Option<String>,
    pub name: Option<String>,
    pub orders: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct WeekCount {
    /// ISO week, e.g. `2026-W49`.
    pub week: String,
    pub created: usize,
    /// Orders that reached `listo` that week.
    pub finished: usize,
    pub delivered: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Duration {
    /// Stays counted.
    pub stays: usize,
    pub mean_hours: f64,
    pub median_hours: f64,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CatalogCount {
    pub catalog_item_id: String,
    pub name: String,
    pub orders: usize,
}

fn iso_week(t: OffsetDateTime) -> String {
    let (year, week, _) = t.to_iso_week_date();
    format!("{year}-W{week:02}")
}

fn hours(from: OffsetDateTime, to: OffsetDateTime) -> f64 {
    ((to - from).as_seconds_f64() / 3600.0).max(0.0)
}

/// The stats of `orders` at `now`.
pub fn compute(
    orders: &[Order],
    catalog: &[CatalogItem],
    tenant_names: &HashMap<String, String>,
    now: OffsetDateTime,
) -> FactoryStats {
    let mut by_estado: BTreeMap<String, usize> = Estado::ALL
        .iter()
        .map(|e| (e.as_str().to_owned(), 0))
        .collect();
    let mut by_tenant: BTreeMap<Option<String>, usize> = BTreeMap::new();
    let mut by_product: BTreeMap<String, usize> = BTreeMap::new();
    let mut stays: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut per_item: BTreeMap<&str, usize> = BTreeMap::new();
    let mut deploys: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let weeks: Vec<String> = (0..WEEKS)
        .rev()
        .map(|back| iso_week(now - time::Duration::weeks(back as i64)))
        .collect();
    let mut throughput: Vec<WeekCount> = weeks
        .iter()
        .map(|w| WeekCount {
            week: w.clone(),
            created: 0,
            finished: 0,
            delivered: 0,
        })
        .collect();
    let mut bump = |t: OffsetDateTime, f: fn(&mut WeekCount)| {
        let w = iso_week(t);
        if let Some(c) = throughput.iter_mut().find(|c| c.week == w) {
            f(c);
        }
    };

    for o in orders {
        *by_estado.entry(o.estado.as_str().to_owned()).or_default() += 1;
        *by_tenant.entry(o.tenant_id.clone()).or_default() += 1;
        let product = o.product_type.as_str().to_owned();
        *by_product.entry(product).or_default() += 1;
        if let Some(item) = &o.catalog_item_id {
            *per_item.entry(item.as_str()).or_default() += 1;
        }
        bump(o.created_at, |c| c.created += 1);
        for (i, step) in o.state_history.iter().enumerate() {
            let until = o.state_history.get(i + 1).map_or(now, |next| next.at);
            // The last stay of a finished order does not run on forever.
            let terminal = matches!(step.to, Estado::Entregado | Estado::Cancelado);
            if !terminal {
                stays
                    .entry(step.to.as_str())
                    .or_default()
                    .push(hours(step.at, until));
            }
            if step.from != Some(step.to) {
                match step.to {
                    Estado::Listo => bump(step.at, |c| c.finished += 1),
                    Estado::Entregado => bump(step.at, |c| c.delivered += 1),
                    _ => {}
                }
            }
        }
        for d in &o.deploy_history {
            *deploys
                .entry(d.channel.clone())
                .or_default()
                .entry(d.status.clone())
                .or_default() += 1;
        }
    }

    let time_in_estado = stays
        .into_iter()
        .map(|(estado, mut list)| {
            list.sort_by(f64::total_cmp);
            let n = list.len();
            let mean = list.iter().sum::<f64>() / n as f64;
            let median = if n % 2 == 1 {
                list[n / 2]
            } else {
                (list[n / 2 - 1] + list[n / 2]) / 2.0
            };
            let round = |x: f64| (x * 100.0).round() / 100.0;
            (
                estado.to_owned(),
                Duration {
                    stays: n,
                    mean_hours: round(mean),
                    median_hours: round(median),
                },
            )
        })
        .collect();
    let mut catalog_usage: Vec<CatalogCount> = catalog
        .iter()
        .map(|c| CatalogCount {
            catalog_item_id: c.id.clone(),
            name: c.name.clone(),
            orders: per_item.get(c.id.as_str()).copied().unwrap_or(0),
        })
        .collect();
    catalog_usage.sort_by(|a, b| b.orders.cmp(&a.orders).then(a.name.cmp(&b.name)));
    let mut by_tenant: Vec<TenantCount> = by_tenant
        .into_iter()
        .map(|(tenant_id, orders)| TenantCount {
            name: tenant_id
                .as_ref()
                .and_then(|t| tenant_names.get(t).cloned()),
            tenant_id,
            orders,
        })
        .collect();
    by_tenant.sort_by(|a, b| b.orders.cmp(&a.orders).then(a.tenant_id.cmp(&b.tenant_id)));
    FactoryStats {
        total_orders: orders.len(),
        by_estado,
        by_tenant,
        by_product,
        throughput,
        time_in_estado,
        catalog_usage,
        deploys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agency::blueprint::{AgentBlueprint, ProductType};
    use crate::agency::book::new_order;
    use crate::agency::orders::{Action, StateChange};
    use time::macros::datetime;

    fn order(id: &str, tenant: Option<&str>, at: OffsetDateTime) -> Order {
        let mut o = new_order(
            id.into(),
            tenant.map(str::to_owned),
            "u",
            ProductType::TelegramBot,
            None,
            "t",
            "b",
            AgentBlueprint::base_for(ProductType::TelegramBot, "Bot"),
        );
        o.created_at = at;
        o.state_history[0].at = at;
        o
    }

    fn step(o: &mut Order, action: Action, to: Estado, at: OffsetDateTime) {
        let from = o.estado;
        o.estado = to;
        o.state_history.push(StateChange {
            action: Some(action),
            from: Some(from),
            to,
            by: "u".into(),
            at,
            reason: None,
        });
    }

    /// Figures worked out by hand for three orders.
    #[test]
    fn figures_match_a_hand_count() {
        let now = datetime!(2026-12-03 12:00 UTC);
        let mut a = order("a", Some("t1"), datetime!(2026-12-01 00:00 UTC));
        step(
            &mut a,
            Action::ApprovePlan,
            Estado::EnProduccion,
            datetime!(2026-12-01 10:00 UTC),
        );
        step(
            &mut a,
            Action::SubmitQa,
            Estado::EnQa,
            datetime!(2026-12-02 10:00 UTC),
        );
        step(
            &mut a,
            Action::QaPass,
            Estado::Listo,
            datetime!(2026-12-02 12:00 UTC),
        );
        let mut b = order("b", Some("t1"), datetime!(2026-11-20 00:00 UTC));
        step(
            &mut b,
            Action::ApprovePlan,
            Estado::EnProduccion,
            datetime!(2026-11-20 20:00 UTC),
        );
        step(
            &mut b,
            Action::Cancel,
            Estado::Cancelado,
            datetime!(2026-11-21 20:00 UTC),
        );
        let c = order("c", None, datetime!(2026-12-03 06:00 UTC));
        let names = HashMap::from([("t1".to_owned(), "Notaría 17".to_owned())]);
        let s = compute(&[a, b, c], &[], &names, now);
        assert_eq!(s.total_orders, 3);
        assert_eq!(s.by_estado["listo"], 1);
        assert_eq!(s.by_estado["cancelado"], 1);
        assert_eq!(s.by_estado["nuevo"], 1);
        assert_eq!(s.by_estado["en_qa"], 0);
        assert_eq!(s.by_tenant[0].orders, 2);
        assert_eq!(s.by_tenant[0].name.as_deref(), Some("Notaría 17"));
        assert_eq!(s.by_tenant[1].tenant_id, None);
        // nuevo: a 10 h, b 20 h, c 6 h (still there) → mean 12, median 10.
        let nuevo = &s.time_in_estado["nuevo"];
        assert_eq!(
            (nuevo.stays, nuevo.mean_hours, nuevo.median_hours),
            (3, 12.0, 10.0)
        );
        // en_produccion: a 24 h, b 24 h.
        assert_eq!(s.time_in_estado["en_produccion"].mean_hours, 24.0);
        // listo: a from 12:00 on the 2nd to now = 24 h.
        assert_eq!(s.time_in_estado["listo"].mean_hours, 24.0);
        assert!(!s.time_in_estado.contains_key("cancelado"));
        let this_week = s.throughput.last().expect("weeks");
        assert_eq!(this_week.week, "2026-W49");
        assert_eq!((this_week.created, this_week.finished), (2, 1));
        let last_week = &s.throughput[WEEKS - 3];
        assert_eq!(last_week.week, "2026-W47");
        assert_eq!(last_week.created, 1);
    }
}
