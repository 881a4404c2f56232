//! Orders: the record, its state machine, and the views clients get.
//!
//! The wire names (`estado`, `qa_status`, `product_type`, `agent_blueprint`,
//! `deliverable_metadata`, `deploy_history`, `demo_tag`) are the ones n8n workflows and clients
//! already use. Every change of `estado` goes through an [`Action`] checked against
//! [`TRANSITIONS`], the one table of who may do what from which state (docs/agency.md).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::blueprint::{AgentBlueprint, ProductType};
use super::plan::ProductionPlan;
use crate::model::{Rfc3339, Role};

/// Plan versions kept per order; older unapproved ones are dropped.
pub const MAX_PLAN_VERSIONS: usize = 20;
/// Internal notes kept per order.
pub const MAX_NOTES: usize = 200;
/// Deploy events kept per order.
pub const MAX_DEPLOY_EVENTS: usize = 200;
/// Bounds on free text.
pub const MAX_TITLE: usize = 200;
pub const MAX_BRIEF: usize = 20_000;
/// Size of `deliverable_metadata` as JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Where an order is in production.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Estado {
    Nuevo,
    EnProduccion,
    EnQa,
    Listo,
    Entregado,
    Cancelado,
}

impl Estado {
    pub const ALL: [Estado; 6] = [
        Self::Nuevo,
        Self::EnProduccion,
        Self::EnQa,
        Self::Listo,
        Self::Entregado,
        Self::Cancelado,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nuevo => "nuevo",
            Self::EnProduccion => "en_produccion",
            Self::EnQa => "en_qa",
            Self::Listo => "listo",
            Self::Entregado => "entregado",
            Self::Cancelado => "cancelado",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// The outcome of quality assurance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QaStatus {
    Pendiente,
    Ok,
    Rechazado,
}

/// A change of state someone asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Approve a plan version; the order goes into production.
    ApprovePlan,
    /// Production is done; QA starts.
    SubmitQa,
    /// QA accepts: the order is ready to deploy.
    QaPass,
    /// QA refuses (with a reason): back to production.
    QaReject,
    /// Handed over to the client.
    Deliver,
    Cancel,
    /// A cancelled order starts again.
    Reopen,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Self::ApprovePlan,
        Self::SubmitQa,
        Self::QaPass,
        Self::QaReject,
        Self::Deliver,
        Self::Cancel,
        Self::Reopen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApprovePlan => "approve_plan",
            Self::SubmitQa => "submit_qa",
            Self::QaPass => "qa_pass",
            Self::QaReject => "qa_reject",
            Self::Deliver => "deliver",
            Self::Cancel => "cancel",
            Self::Reopen => "reopen",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One row of the transition table: `roles` may take `action` from any of `from`, and the
/// order ends in `to`.
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    pub action: Action,
    pub from: &'static [Estado],
    pub to: Estado,
    pub roles: &'static [Role],
}

use Estado::{Cancelado, EnProduccion, EnQa, Entregado, Listo, Nuevo};
use Role::{Admin as A, Client as C, Operator as O};

/// Who may do what from which state. A role × action pair may appear in several rows (a
/// client may cancel only a new order; an admin, any unfinished one).
pub const TRANSITIONS: &[Transition] = &[
    Transition {
        action: Action::ApprovePlan,
        from: &[Nuevo, EnProduccion],
        to: EnProduccion,
        roles: &[A, O],
    },
    Transition {
        action: Action::SubmitQa,
        from: &[EnProduccion],
        to: EnQa,
        roles: &[A, O],
    },
    Transition {
        action: Action::QaPass,
        from: &[EnQa],
        to: Listo,
        roles: &[A, O],
    },
    Transition {
        action: Action::QaReject,
        from: &[EnQa],
        to: EnProduccion,
        roles: &[A, O],
    },
    Transition {
        action: Action::Deliver,
        from: &[Listo],
        to: Entregado,
        roles: &[A],
    },
    Transition {
        action: Action::Cancel,
        from: &[Nuevo, EnProduccion, EnQa, Listo],
        to: Cancelado,
        roles: &[A],
    },
    Transition {
        action: Action::Cancel,
        from: &[Nuevo],
        to: Cancelado,
        roles: &[C],
    },
    Transition {
        action: Action::Reopen,
        from: &[Cancelado],
        to: Nuevo,
        roles: &[A],
    },
];

/// Why an action was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The role may never take this action.
    Role,
    /// The role may, but not from this state.
    State { allowed_from: Vec<Estado> },
}

/// Where `action` by `role` takes an order in `from`.
pub fn transition(action: Action, role: Role, from: Estado) -> Result<Estado, Refusal> {
    let rows: Vec<&Transition> = TRANSITIONS
        .iter()
        .filter(|t| t.action == action && t.roles.contains(&role))
        .collect();
    if rows.is_empty() {
        return Err(Refusal::Role);
    }
    match rows.iter().find(|t| t.from.contains(&from)) {
        Some(t) => Ok(t.to),
        None => {
            let mut allowed_from: Vec<Estado> =
                rows.iter().flat_map(|t| t.from.iter().copied()).collect();
            allowed_from.sort();
            allowed_from.dedup();
            Err(Refusal::State { allowed_from })
        }
    }
}

/// One version of an order's production plan.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct PlanVersion {
    pub version: u32,
    pub plan: ProductionPlan,
    /// `llm` or `staff`.
    pub source: String,
    /// The model that wrote it (`provider/model`), for `llm` plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The versioned production plan.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct PlanHistory {
    pub versions: Vec<PlanVersion>,
    #[serde(default)]
    pub approved_version: Option<u32>,
    #[serde(default)]
    pub approved_by: Option<String>,
}

impl PlanHistory {
    pub fn approved(&self) -> Option<&PlanVersion> {
        let v = self.approved_version?;
        self.versions.iter().find(|p| p.version == v)
    }

    pub fn latest(&self) -> Option<&PlanVersion> {
        self.versions.last()
    }

    /// Adds a version; returns its number.
    pub fn push(
        &mut self,
        plan: ProductionPlan,
        source: &str,
        model: Option<String>,
        by: &str,
        at: OffsetDateTime,
    ) -> u32 {
        let version = self.versions.last().map_or(1, |p| p.version + 1);
        self.versions.push(PlanVersion {
            version,
            plan,
            source: source.to_owned(),
            model,
            created_by: by.to_owned(),
            created_at: at,
        });
        while self.versions.len() > MAX_PLAN_VERSIONS {
            let approved = self.approved_version;
            match self
                .versions
                .iter()
                .position(|p| Some(p.version) != approved)
            {
                Some(i) => {
                    self.versions.remove(i);
                }
                None => break,
            }
        }
        version
    }
}

/// An entry of the deploy history, appended by the deploy channels.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeployEvent {
    pub id: String,
    /// `whatsapp`, `social`, `telegram`.
    pub channel: String,
    /// `pending`, `success`, `failed`, `unknown`.
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The admin who asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// SHA-256 of what is sent; with the order and channel it makes the idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Why it failed, is being retried, or is unknown, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Channel-specific results (platforms, message ids, chat used, attempts); never secrets.
    #[serde(default)]
    pub details: Map<String, Value>,
}

/// A staff-only note.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Note {
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub at: OffsetDateTime,
    pub text: String,
}

/// One change of state, for the timeline and the time-per-state figures.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct StateChange {
    /// `None` for the order's creation.
    pub action: Option<Action>,
    pub from: Option<Estado>,
    pub to: Estado,
    pub by: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An order, as stored and as staff see it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Order {
    pub id: String,
    /// `None`: a legacy order, seen only by staff and clients without a tenant.
    pub tenant_id: Option<String>,
    pub created_by: String,
    pub product_type: ProductType,
    /// The catalog product it was ordered from.
    #[serde(default)]
    pub catalog_item_id: Option<String>,
    pub title: String,
    pub brief: String,
    pub estado: Estado,
    pub qa_status: QaStatus,
    pub agent_blueprint: AgentBlueprint,
    pub production_plan: PlanHistory,
    /// e.g. `telegram_chat_id`, `media_urls`, `platforms`, `text`.
    #[serde(default)]
    pub deliverable_metadata: Map<String, Value>,
    #[serde(default)]
    pub deploy_history: Vec<DeployEvent>,
    #[serde(default)]
    pub demo_tag: Option<String>,
    #[serde(default)]
    pub internal_notes: Vec<Note>,
    #[serde(default)]
    pub state_history: Vec<StateChange>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Bumped by every write; `If-Match` names it.
    pub version: u64,
}

impl Order {
    /// Checks the free-form parts an editor may set.
    pub fn check_content(
        title: &str,
        brief: &str,
        metadata: &Map<String, Value>,
    ) -> Result<(), String> {
        let title_len = title.trim().chars().count();
        if title_len == 0 || title_len > MAX_TITLE {
            return Err(format!("title must have 1 to {MAX_TITLE} characters"));
        }
        if brief.chars().count() > MAX_BRIEF {
            return Err(format!("brief must be at most {MAX_BRIEF} characters"));
        }
        if title.chars().any(|c| c.is_control()) {
            return Err("title must not contain control characters".into());
        }
        let size = serde_json::to_vec(metadata).map_or(usize::MAX, |v| v.len());
        if size > MAX_METADATA_BYTES {
            return Err(format!(
                "deliverable_metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"
            ));
        }
        Ok(())
    }

    /// Whether a text search matches (title, brief, id; case-insensitive).
    pub fn matches_text(&self, needle_lower: &str) -> bool {
        self.id.to_lowercase().contains(needle_lower)
            || self.title.to_lowercase().contains(needle_lower)
            || self.brief.to_lowercase().contains(needle_lower)
    }
}

/// An order as its client sees it: no internal notes, plan estimates, prompts, blueprint or
/// webhook data — a separate type, so a new internal field cannot leak by accident.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ClientOrder {
    pub id: String,
    pub product_type: ProductType,
    pub catalog_item_id: Option<String>,
    pub title: String,
    pub brief: String,
    pub estado: Estado,
    pub qa_status: QaStatus,
    /// The approved plan's phases, by name.
    pub phases: Vec<String>,
    pub timeline: Vec<ClientStep>,
    pub deployments: Vec<ClientDeployment>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A step of the client's timeline.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ClientStep {
    pub estado: Estado,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub at: OffsetDateTime,
}

/// What was deployed where, for the client.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ClientDeployment {
    pub channel: String,
    pub status: String,
    /// The social networks it was published on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "Rfc3339")]
    pub at: OffsetDateTime,
}

/// The networks a social deploy reached (`details.platforms[].status == "success"`).
fn published_platforms(d: &DeployEvent) -> Vec<String> {
    d.details
        .get("platforms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("status").and_then(Value::as_str) == Some("success"))
        .filter_map(|p| p.get("platform").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

impl From<&Order> for ClientOrder {
    fn from(o: &Order) -> Self {
        Self {
            id: o.id.clone(),
            product_type: o.product_type,
            catalog_item_id: o.catalog_item_id.clone(),
            title: o.title.clone(),
            brief: o.brief.clone(),
            estado: o.estado,
            qa_status: o.qa_status,
            phases: o
                .production_plan
                .approved()
                .map(|p| p.plan.phase_names())
                .unwrap_or_default(),
            timeline: o
                .state_history
                .iter()
                .map(|s| ClientStep {
                    estado: s.to,
                    at: s.at,
                })
                .collect(),
            deployments: o
                .deploy_history
                .iter()
                .map(|d| ClientDeployment {
                    channel: d.channel.clone(),
                    status: d.status.clone(),
                    platforms: published_platforms(d),
                    at: d.updated_at,
                })
                .collect(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// A list query.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub estado: Option<Estado>,
    /// `Some(None)`: legacy orders only.
    pub tenant: Option<Option<String>>,
    pub product_type: Option<ProductType>,
    /// Lowercased.
    pub text: Option<String>,
    pub demo_tag: Option<String>,
}

impl Filter {
    pub fn keeps(&self, o: &Order) -> bool {
        self.estado.is_none_or(|e| o.estado == e)
            && self.tenant.as_ref().is_none_or(|t| o.tenant_id == *t)
            && self.product_type.is_none_or(|p| o.product_type == p)
            && self.text.as_deref().is_none_or(|t| o.matches_text(t))
            && self
                .demo_tag
                .as_ref()
                .is_none_or(|t| o.demo_tag.as_ref() == Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules as the documentation states them, written out independently of
    /// `TRANSITIONS`: (action, role, from) → to, for every allowed case. Everything not listed
    /// is refused.
    fn allowed() -> Vec<(Action, Role, Estado, Estado)> {
        use Action::*;
        let mut out = Vec::new();
        for role in [Role::Admin, Role::Operator] {
            out.push((ApprovePlan, role, Nuevo, EnProduccion));
            out.push((ApprovePlan, role, EnProduccion, EnProduccion));
            out.push((SubmitQa, role, EnProduccion, EnQa));
            out.push((QaPass, role, EnQa, Listo));
            out.push((QaReject, role, EnQa, EnProduccion));
        }
        out.push((Deliver, Role::Admin, Listo, Entregado));
        for from in [Nuevo, EnProduccion, EnQa, Listo] {
            out.push((Cancel, Role::Admin, from, Cancelado));
        }
        out.push((Cancel, Role::Client, Nuevo, Cancelado));
        out.push((Reopen, Role::Admin, Cancelado, Nuevo));
        out
    }

    /// Every action from every state by every role: allowed exactly where the list says, and
    /// a refusal says whether the role or the state was wrong.
    #[test]
    fn the_transition_table_walked_completely() {
        let expected = allowed();
        let roles = [Role::Admin, Role::Operator, Role::Viewer, Role::Client];
        let mut checked = 0;
        for action in Action::ALL {
            for role in roles {
                let role_may = expected
                    .iter()
                    .any(|(a, r, _, _)| *a == action && *r == role);
                for from in Estado::ALL {
                    let want = expected
                        .iter()
                        .find(|(a, r, f, _)| *a == action && *r == role && *f == from)
                        .map(|(_, _, _, to)| *to);
                    let got = transition(action, role, from);
                    match (want, got) {
                        (Some(to), Ok(got)) => assert_eq!(to, got, "{action:?} {role:?} {from:?}"),
                        (None, Err(Refusal::Role)) => {
                            assert!(!role_may, "{action:?} {role:?} {from:?}: role refused")
                        }
                        (None, Err(Refusal::State { allowed_from })) => {
                            assert!(role_may, "{action:?} {role:?} {from:?}");
                            assert!(!allowed_from.contains(&from));
                        }
                        (want, got) => {
                            panic!("{action:?} {role:?} {from:?}: want {want:?}, got {got:?}")
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 7 * 4 * 6);
        // Terminal: nothing leaves `entregado`.
        for action in Action::ALL {
            for role in roles {
                assert!(transition(action, role, Entregado).is_err());
            }
        }
    }

    #[test]
    fn wire_names_stay_as_they_are() {
        let names: Vec<String> = Estado::ALL
            .iter()
            .map(|e| {
                serde_json::to_value(e)
                    .expect("json")
                    .as_str()
                    .expect("str")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "nuevo",
                "en_produccion",
                "en_qa",
                "listo",
                "entregado",
                "cancelado"
            ]
        );
        for e in Estado::ALL {
            assert_eq!(Estado::parse(e.as_str()), Some(e));
        }
        for a in Action::ALL {
            assert_eq!(
                serde_json::to_value(a).expect("json").as_str(),
                Some(a.as_str())
            );
        }
        assert_eq!(
            serde_json::to_value(QaStatus::Rechazado).expect("json"),
            "rechazado"
        );
    }
}
