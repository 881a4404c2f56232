//! The order book: orders and catalog products in the store, every change written together
//! with the outbox deliveries it causes (one transaction), guarded by the version it read.

use std::sync::Arc;

use serde_json::{Value, json};

use super::blueprint::AgentBlueprint;
use super::catalog::CatalogItem;
use super::orders::{
    Action, DeployEvent, Estado, Filter, MAX_NOTES, Note, Order, QaStatus, Refusal, StateChange,
    transition,
};
use super::outbox::Outbox;
use crate::model::{Role, now};
use crate::store::{Db, StoreError, Tree, Writes};

/// Largest page of a list.
pub const MAX_PAGE: usize = 100;
/// Attempts at a write that keeps losing races before giving up.
const WRITE_ATTEMPTS: usize = 16;

/// An order-book operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    #[error("no order {0}")]
    NoOrder(String),
    #[error("no catalog product {0}")]
    NoProduct(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the order changed since version {expected} (it is at version {current}); reload it and try again"
    )]
    Stale { expected: u64, current: u64 },
    #[error("{role} may not {action}")]
    Forbidden { action: &'static str, role: String },
    #[error("cannot {action} an order in estado {from}; allowed from {allowed}")]
    Transition {
        action: &'static str,
        from: &'static str,
        allowed: String,
    },
    #[error("the order keeps changing under this write; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who is writing, for the record.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: String,
    pub role: Role,
}

/// Something to tell the outside world once the write has landed.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// To the webhook subscribers of `event`.
    Event { event: &'static str, payload: Value },
    /// The blueprint and approved plan to the builder's webhook.
    Builder { payload: Value },
    /// One deploy, through its channel's courier, at most once.
    Deploy {
        id: String,
        kind: &'static str,
        url: String,
        payload: Value,
        idempotency_key: String,
    },
}

/// A page of orders.
#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Order>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<String>,
}

/// The agency's records.
pub struct Book {
    pub orders: Tree<Order>,
    pub catalog: Tree<CatalogItem>,
    outbox: Arc<Outbox>,
    /// Where blueprints go when an order enters production.
    builder_url: Option<String>,
}

impl Book {
    pub fn open(
        db: &Db,
        outbox: Arc<Outbox>,
        builder_url: Option<String>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            orders: db.tree("orders")?,
            catalog: db.tree("catalog")?,
            outbox,
            builder_url,
        })
    }

    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    pub fn get(&self, id: &str) -> Result<Order, BookError> {
        self.orders
            .get(id)?
            .ok_or_else(|| BookError::NoOrder(id.to_owned()))
    }

    /// Newest first, below `cursor`, at most `limit` (capped at [`MAX_PAGE`]), keeping what
    /// `filter` and `visible` keep.
    pub fn list(
        &self,
        filter: &Filter,
        visible: impl Fn(&Order) -> bool,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, BookError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let items = self
            .orders
            .scan_rev(cursor, limit, |o| visible(o) && filter.keeps(o))?;
        let next_cursor = (items.len() == limit).then(|| items[limit - 1].id.clone());
        Ok(Page { items, next_cursor })
    }

    fn stage(
        &self,
        writes: &mut Writes,
        order: &Order,
        out: &[Outgoing],
    ) -> Result<(), StoreError> {
        for o in out {
            match o {
                Outgoing::Event { event, payload } => {
                    self.outbox.stage_event(
                        writes,
                        event,
                        order.tenant_id.as_deref(),
                        payload.clone(),
                    )?;
                }
                Outgoing::Deploy {
                    id,
                    kind,
                    url,
                    payload,
                    idempotency_key,
                } => {
                    self.outbox.stage_at_most_once(
                        writes,
                        id,
                        kind,
                        url,
                        "order.deploy",
                        order.tenant_id.as_deref(),
                        payload.clone(),
                        idempotency_key,
                    )?;
                }
                Outgoing::Builder { payload } => {
                    if let Some(url) = &self.builder_url {
                        self.outbox.stage_direct(
                            writes,
                            "builder",
                            url,
                            "order.in_production",
                            order.tenant_id.as_deref(),
                            payload.clone(),
                        )?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Stores a new order and its `order.created` event.
    pub fn create(&self, order: &Order) -> Result<(), BookError> {
        let mut writes = Writes::new();
        writes.insert_new(&self.orders, &order.id, order)?;
        let out = [Outgoing::Event {
            event: "order.created",
            payload: json!({ "order": summary(order) }),
        }];
        self.stage(&mut writes, order, &out)?;
        if !writes.apply()? {
            return Err(BookError::Invalid(format!("order {} exists", order.id)));
        }
        Ok(())
    }

    /// Applies `change` to the order, checked against `expected` (the caller's `If-Match`),
    /// bumps its version and writes it with the deliveries `change` asks for.
    pub fn change(
        &self,
        id: &str,
        expected: Option<u64>,
        change: impl FnMut(&mut Order) -> Result<Vec<Outgoing>, BookError>,
    ) -> Result<Order, BookError> {
        self.change_as(id, expected, change)
    }

    /// [`Book::change`] for a caller with its own error type.
    pub fn change_as<E: From<BookError> + From<StoreError>>(
        &self,
        id: &str,
        expected: Option<u64>,
        mut change: impl FnMut(&mut Order) -> Result<Vec<Outgoing>, E>,
    ) -> Result<Order, E> {
        for _ in 0..WRITE_ATTEMPTS {
            let seen = self
                .orders
                .get_snapshot(id)?
                .ok_or_else(|| BookError::NoOrder(id.to_owned()))?;
            if let Some(expected) = expected
                && expected != seen.value.version
            {
                return Err(BookError::Stale {
                    expected,
                    current: seen.value.version,
                }
                .into());
            }
            let mut order = seen.value.clone();
            let out = change(&mut order)?;
            order.version = seen.value.version + 1;
            order.updated_at = now();
            let mut writes = Writes::new();
            writes.replace(&self.orders, id, &seen, &order)?;
            self.stage(&mut writes, &order, &out)?;
            if writes.apply()? {
                return Ok(order);
            }
            if let Some(expected) = expected {
                let current = self.get(id)?.version;
                return Err(BookError::Stale { expected, current }.into());
            }
        }
        Err(BookError::Busy.into())
    }

    /// Takes `action` on the order as `actor`. `approve` names the plan version for
    /// `approve_plan`; `reason` is required for `qa_reject`.
    pub fn act(
        &self,
        id: &str,
        expected: Option<u64>,
        actor: &Actor,
        action: Action,
        reason: Option<&str>,
        approve: Option<u32>,
    ) -> Result<Order, BookError> {
        if action == Action::QaReject && reason.is_none_or(|r| r.trim().is_empty()) {
            return Err(BookError::Invalid(
                "qa_reject needs a reason saying what to fix".into(),
            ));
        }
        self.change(id, expected, |order| {
            let from = order.estado;
            let to = transition(action, actor.role, from).map_err(|refusal| match refusal {
                Refusal::Role => BookError::Forbidden {
                    action: action.as_str(),
                    role: format!("{:?}", actor.role).to_lowercase(),
                },
                Refusal::State { allowed_from } => BookError::Transition {
                    action: action.as_str(),
                    from: from.as_str(),
                    allowed: allowed_from
                        .iter()
                        .map(|e| e.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            })?;
            match action {
                Action::ApprovePlan => {
                    let version = approve
                        .or_else(|| order.production_plan.latest().map(|p| p.version))
                        .ok_or_else(|| {
                            BookError::Invalid(
                                "the order has no plan yet: generate or write one first".into(),
                            )
                        })?;
                    if !order
                        .production_plan
                        .versions
                        .iter()
                        .any(|p| p.version == version)
                    {
                        return Err(BookError::Invalid(format!("no plan version {version}")));
                    }
                    order
                        .agent_blueprint
                        .check()
                        .map_err(|e| BookError::Invalid(format!("agent_blueprint: {e}")))?;
                    order.production_plan.approved_version = Some(version);
                    order.production_plan.approved_by = Some(actor.id.clone());
                }
                Action::SubmitQa => order.qa_status = QaStatus::Pendiente,
                Action::QaPass => order.qa_status = QaStatus::Ok,
                Action::QaReject => order.qa_status = QaStatus::Rechazado,
                Action::Reopen => order.qa_status = QaStatus::Pendiente,
                Action::Deliver | Action::Cancel => {}
            }
            order.estado = to;
            let at = now();
            order.state_history.push(StateChange {
                action: Some(action),
                from: Some(from),
                to,
                by: actor.id.clone(),
                at,
                reason: reason.map(|r| r.chars().take(2000).collect()),
            });
            let mut out = Vec::new();
            if from != to {
                out.push(Outgoing::Event {
                    event: "order.state_changed",
                    payload: json!({
                        "order": summary(order),
                        "action": action,
                        "from": from,
                        "to": to,
                        "by": actor.id,
                        "reason": reason,
                    }),
                });
            }
            if to == Estado::EnProduccion && from != to {
                out.push(Outgoing::Builder {
                    payload: json!({
                        "order": summary(order),
                        "agent_blueprint": order.agent_blueprint,
                        "production_plan": order.production_plan.approved(),
                    }),
                });
            }
            Ok(out)
        })
    }

    /// Adds a staff note.
    pub fn note(&self, id: &str, actor: &Actor, text: &str) -> Result<Order, BookError> {
        let text = text.trim();
        if text.is_empty() || text.chars().count() > 4000 {
            return Err(BookError::Invalid(
                "a note needs 1 to 4000 characters".into(),
            ));
        }
        self.change(id, None, |order| {
            order.internal_notes.push(Note {
                by: actor.id.clone(),
                at: now(),
                text: text.to_owned(),
            });
            if order.internal_notes.len() > MAX_NOTES {
                order.internal_notes.remove(0);
            }
            Ok(Vec::new())
        })
    }

    /// Appends or updates a deploy event (the deploy channels' entry point).
    pub fn record_deploy(&self, id: &str, event: DeployEvent) -> Result<Order, BookError> {
        self.change(id, None, |order| {
            match order.deploy_history.iter_mut().find(|e| e.id == event.id) {
                Some(e) => *e = event.clone(),
                None => order.deploy_history.push(event.clone()),
            }
            if order.deploy_history.len() > super::orders::MAX_DEPLOY_EVENTS {
                order.deploy_history.remove(0);
            }
            Ok(Vec::new())
        })
    }

    pub fn product(&self, id: &str) -> Result<CatalogItem, BookError> {
        self.catalog
            .get(id)?
            .ok_or_else(|| BookError::NoProduct(id.to_owned()))
    }
}

/// What webhooks say about an order: enough for a workflow to act, nothing internal.
pub fn summary(o: &Order) -> Value {
    json!({
        "id": o.id,
        "tenant_id": o.tenant_id,
        "product_type": o.product_type,
        "catalog_item_id": o.catalog_item_id,
        "title": o.title,
        "estado": o.estado,
        "qa_status": o.qa_status,
        "deliverable_metadata": o.deliverable_metadata,
        "demo_tag": o.demo_tag,
        "version": o.version,
    })
}

/// A fresh order in `nuevo`.
#[allow(clippy::too_many_arguments)]
pub fn new_order(
    id: String,
    tenant_id: Option<String>,
    created_by: &str,
    product_type: super::blueprint::ProductType,
    catalog_item_id: Option<String>,
    title: &str,
    brief: &str,
    blueprint: AgentBlueprint,
) -> Order {
    let at = now();
    Order {
        id,
        tenant_id,
        created_by: created_by.to_owned(),
        product_type,
        catalog_item_id,
        title: title.trim().to_owned(),
        brief: brief.trim().to_owned(),
        estado: Estado::Nuevo,
        qa_status: QaStatus::Pendiente,
        agent_blueprint: blueprint,
        production_plan: Default::default(),
        deliverable_metadata: Default::default(),
        deploy_history: Vec::new(),
        demo_tag: None,
        internal_notes: Vec::new(),
        state_history: vec![StateChange {
            action: None,
            from: None,
            to: Estado::Nuevo,
            by: created_by.to_owned(),
            at,
            reason: None,
        }],
        created_at: at,
        updated_at: at,
        version: 1,
    }
}
