//! Production plans: the structure staff and the LLM write (phases, tasks, integrations,
//! risks, estimate), its JSON Schema, and the checks an answer must pass before it becomes a
//! plan version. The model's answer is parsed into the typed plan (the schema is generated
//! from the same type, so both say the same thing) and then checked for bounds and sense.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Bounds on what a plan may hold.
const MAX_TEXT: usize = 2000;
const MAX_NAME: usize = 200;
const MAX_ITEMS: usize = 40;
const MAX_HOURS: f64 = 10_000.0;

/// A production plan for one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductionPlan {
    /// Two or three sentences: what will be built and how.
    pub summary: String,
    /// In the order they are worked through.
    pub phases: Vec<Phase>,
    /// External services the agent connects to.
    #[serde(default)]
    pub integrations: Vec<PlanIntegration>,
    #[serde(default)]
    pub risks: Vec<Risk>,
    pub estimate: Estimate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    #[serde(default)]
    pub goal: String,
    pub tasks: Vec<Task>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Task {
    pub title: String,
    /// Who does it: `prompt_engineer`, `developer`, `qa`, `account_manager`, ...
    #[serde(default)]
    pub owner: String,
    pub estimate_hours: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanIntegration {
    /// e.g. `WhatsApp Business (n8n)`, `Google Sheets`.
    pub name: String,
    pub purpose: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Risk {
    pub description: String,
    pub severity: Severity,
    #[serde(default)]
    pub mitigation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Estimate {
    /// Sum of the tasks' hours (a small difference is tolerated).
    pub total_hours: f64,
    /// Working days from approval to delivery.
    pub delivery_days: u32,
    /// Internal cost estimate; never shown to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub amount: f64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
}

/// The plan's JSON Schema, as served at `/api/schemas/production-plan.json`.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ProductionPlan)).unwrap_or_default()
}

fn text(path: &str, value: &str, max: usize, required: bool) -> Result<(), String> {
    if required && value.trim().is_empty() {
        return Err(format!("{path} must not be empty"));
    }
    if value.chars().count() > max {
        return Err(format!("{path} is longer than {max} characters"));
    }
    Ok(())
}

fn items<T>(path: &str, list: &[T], min: usize) -> Result<(), String> {
    if list.len() < min {
        return Err(format!("{path} needs at least {min} item(s)"));
    }
    if list.len() > MAX_ITEMS {
        return Err(format!("{path} has more than {MAX_ITEMS} items"));
    }
    Ok(())
}

fn hours(path: &str, h: f64) -> Result<(), String> {
    if !h.is_finite() || !(0.0..=MAX_HOURS).contains(&h) {
        return Err(format!("{path} must be between 0 and {MAX_HOURS} hours"));
    }
    Ok(())
}

impl ProductionPlan {
    /// What is wrong with the plan, as a sentence naming the field.
    pub fn check(&self) -> Result<(), String> {
        text("summary", &self.summary, MAX_TEXT, true)?;
        items("phases", &self.phases, 1)?;
        let mut sum = 0.0;
        for (i, phase) in self.phases.iter().enumerate() {
            text(&format!("phases[{i}].name"), &phase.name, MAX_NAME, true)?;
            text(&format!("phases[{i}].goal"), &phase.goal, MAX_TEXT, false)?;
            items(&format!("phases[{i}].tasks"), &phase.tasks, 1)?;
            for (j, task) in phase.tasks.iter().enumerate() {
                let at = format!("phases[{i}].tasks[{j}]");
                text(&format!("{at}.title"), &task.title, MAX_NAME, true)?;
                text(&format!("{at}.owner"), &task.owner, MAX_NAME, false)?;
                hours(&format!("{at}.estimate_hours"), task.estimate_hours)?;
                sum += task.estimate_hours;
            }
        }
        items("integrations", &self.integrations, 0)?;
        for (i, integration) in self.integrations.iter().enumerate() {
            text(
                &format!("integrations[{i}].name"),
                &integration.name,
                MAX_NAME,
                true,
            )?;
            text(
                &format!("integrations[{i}].purpose"),
                &integration.purpose,
                MAX_TEXT,
                false,
            )?;
        }
        items("risks", &self.risks, 0)?;
        for (i, risk) in self.risks.iter().enumerate() {
            text(
                &format!("risks[{i}].description"),
                &risk.description,
                MAX_TEXT,
                true,
            )?;
            text(
                &format!("risks[{i}].mitigation"),
                &risk.mitigation,
                MAX_TEXT,
                false,
            )?;
        }
        hours("estimate.total_hours", self.estimate.total_hours)?;
        // Models round; a total far from its tasks is a made-up number.
        if (self.estimate.total_hours - sum).abs() > (sum * 0.1).max(1.0) {
            return Err(format!(
                "estimate.total_hours is {} but the tasks add up to {sum}",
                self.estimate.total_hours
            ));
        }
        if self.estimate.delivery_days == 0 || self.estimate.delivery_days > 365 {
            return Err("estimate.delivery_days must be between 1 and 365".into());
        }
        if let Some(cost) = &self.estimate.cost {
            if !cost.amount.is_finite() || cost.amount < 0.0 {
                return Err("estimate.cost.amount must be a positive number".into());
            }
            let ok =
                cost.currency.len() == 3 && cost.currency.bytes().all(|b| b.is_ascii_uppercase());
            if !ok {
                return Err("estimate.cost.currency must be an ISO 4217 code such as EUR".into());
            }
        }
        Ok(())
    }

    /// Reads a model's answer: one JSON object, possibly inside a Markdown code fence.
    pub fn parse_answer(answer: &str) -> Result<Self, String> {
        let trimmed = answer.trim();
        let body = trimmed
            .strip_prefix("```json")
            .or_else(|| trimmed.strip_prefix("```"))
            .and_then(|rest| rest.trim_end().strip_suffix("```"))
            .unwrap_or(trimmed)
            .trim();
        let plan: Self = serde_json::from_str(body)
            .map_err(|e| format!("the answer is not a production plan matching the schema: {e}"))?;
        plan.check()?;
        Ok(plan)
    }

    /// The phases' names, for clients.
    pub fn phase_names(&self) -> Vec<String> {
        self.phases.iter().map(|p| p.name.clone()).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> serde_json::Value {
        serde_json::json!({
            "summary": "Asistente de WhatsApp que agenda citas y responde dudas frecuentes.",
            "phases": [
                {"name": "Descubrimiento", "goal": "Entender el negocio", "tasks": [
                    {"title": "Entrevista con el cliente", "owner": "account_manager", "estimate_hours": 2.0},
                    {"title": "Recopilar preguntas frecuentes", "owner": "prompt_engineer", "estimate_hours": 3.0}
                ]},
                {"name": "Construcción", "tasks": [
                    {"title": "Flujos en n8n", "owner": "developer", "estimate_hours": 10.0}
                ]}
            ],
            "integrations": [{"name": "WhatsApp Business (n8n)", "purpose": "canal"}],
            "risks": [{"description": "Cambios de la API de WhatsApp", "severity": "medium", "mitigation": "versionar flujos"}],
            "estimate": {"total_hours": 15.0, "delivery_days": 10, "cost": {"amount": 900.0, "currency": "EUR"}}
        })
    }

    #[test]
    fn a_good_plan_passes_and_fenced_answers_are_read() {
        let text = sample().to_string();
        assert!(ProductionPlan::parse_answer(&text).is_ok());
        let fenced = format!("```json\n{text}\n```");
        assert!(ProductionPlan::parse_answer(&fenced).is_ok());
    }

    #[test]
    fn bad_plans_are_refused_with_the_field_named() {
        let cases: &[(&str, serde_json::Value, &str)] = &[
            ("/phases", serde_json::json!([]), "phases needs at least 1"),
            (
                "/estimate/total_hours",
                serde_json::json!(99.0),
                "add up to 15",
            ),
            (
                "/estimate/delivery_days",
                serde_json::json!(0),
                "delivery_days",
            ),
            (
                "/phases/0/tasks/0/estimate_hours",
                serde_json::json!(-1.0),
                "phases[0].tasks[0].estimate_hours",
            ),
            (
                "/summary",
                serde_json::json!(" "),
                "summary must not be empty",
            ),
            (
                "/estimate/cost/currency",
                serde_json::json!("euro"),
                "ISO 4217",
            ),
            (
                "/risks/0/severity",
                serde_json::json!("extreme"),
                "matching the schema",
            ),
        ];
        for (pointer, value, expected) in cases {
            let mut plan = sample();
            *plan.pointer_mut(pointer).expect("pointer") = value.clone();
            let err = ProductionPlan::parse_answer(&plan.to_string()).expect_err(pointer);
            assert!(err.contains(expected), "{pointer}: {err}");
        }
        let mut extra = sample();
        extra["price"] = serde_json::json!(1);
        assert!(ProductionPlan::parse_answer(&extra.to_string()).is_err());
        assert!(ProductionPlan::parse_answer("Claro, aquí tienes el plan").is_err());
    }

    #[test]
    fn the_schema_names_every_part() {
        let schema = schema().to_string();
        for part in [
            "phases",
            "tasks",
            "integrations",
            "risks",
            "estimate",
            "total_hours",
        ] {
            assert!(schema.contains(part), "{part}");
        }
    }
}
