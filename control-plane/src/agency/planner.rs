//! Production plans written by a model through the LLM gateway: the order and its blueprint
//! go in with the plan's JSON Schema; an answer that does not pass the schema and the plan's
//! checks is sent back with the error for another try, and after the last try the error is
//! reported. Calls are metered like any other gateway call, to the order's tenant.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::orders::Order;
use super::plan::{self, ProductionPlan};
use crate::llm::gateway::{self, Gateway, Job, Metered};
use crate::llm::wire::ChatRequest;

/// Largest answer body read from the gateway.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Generating a plan failed.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the model gateway answered {status}: {message}")]
    Upstream { status: u16, message: String },
    #[error("the model's plan was invalid after {attempts} attempts: {last_error}")]
    Invalid { attempts: usize, last_error: String },
    #[error("no plan within {0:?}")]
    Timeout(Duration),
}

/// Settings for plan generation.
#[derive(Debug, Clone)]
pub struct PlannerConfig {
    /// The gateway model or alias asked (`smart` by default).
    pub alias: String,
    /// Tries, the first included.
    pub attempts: usize,
    /// For the whole generation, tries included.
    pub timeout: Duration,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            alias: "smart".into(),
            attempts: 3,
            timeout: Duration::from_secs(180),
        }
    }
}

pub struct Planner {
    gateway: Arc<Gateway>,
    pub config: PlannerConfig,
}

/// A generated plan and the model that wrote it.
pub struct Generated {
    pub plan: ProductionPlan,
    pub model: Option<String>,
    pub attempts: usize,
}

impl Planner {
    pub fn new(gateway: Arc<Gateway>, config: PlannerConfig) -> Self {
        Self { gateway, config }
    }

    pub async fn generate(&self, order: &Order, who: Metered) -> Result<Generated, PlanError> {
        let limit = self.config.timeout;
        tokio::time::timeout(limit, self.tries(order, who))
            .await
            .map_err(|_| PlanError::Timeout(limit))?
    }

    async fn tries(&self, order: &Order, who: Metered) -> Result<Generated, PlanError> {
        let mut messages = vec![
            json!({"role": "system", "content": system_prompt()}),
            json!({"role": "user", "content": order_prompt(order)}),
        ];
        let attempts = self.config.attempts.max(1);
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            let (answer, model) = self.ask(&messages, who.clone()).await?;
            match ProductionPlan::parse_answer(&answer) {
                Ok(plan) => {
                    return Ok(Generated {
                        plan,
                        model,
                        attempts: attempt,
                    });
                }
                Err(e) => {
                    tracing::info!(order = %order.id, attempt, error = %e, "the model's plan was refused");
                    last_error = e.clone();
                    messages.push(json!({"role": "assistant", "content": truncate(&answer, 8000)}));
                    messages.push(json!({
                        "role": "user",
                        "content": format!(
                            "That answer is invalid: {e}. Answer again with only the corrected JSON object, matching the schema."
                        ),
                    }));
                }
            }
        }
        Err(PlanError::Invalid {
            attempts,
            last_error,
        })
    }

    async fn ask(
        &self,
        messages: &[Value],
        who: Metered,
    ) -> Result<(String, Option<String>), PlanError> {
        let body = json!({
            "model": self.config.alias,
            "messages": messages,
            "temperature": 0.2,
            "response_format": {"type": "json_object"},
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let request = ChatRequest::parse(&bytes).map_err(|e| PlanError::Upstream {
            status: e.status.as_u16(),
            message: e.message,
        })?;
        let response = gateway::serve(
            self.gateway.clone(),
            who,
            &self.config.alias,
            Job::Chat(&request),
            Instant::now(),
        )
        .await;
        let status = response.status();
        let model = response
            .headers()
            .get("x-axon-model")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| PlanError::Upstream {
                status: 502,
                message: format!("the answer could not be read: {e}"),
            })?;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no message")
                .to_owned();
            return Err(PlanError::Upstream {
                status: status.as_u16(),
                message,
            });
        }
        let content = value
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok((content, model))
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn system_prompt() -> String {
    format!(
        "You are the production lead of an agency that builds AI agents (WhatsApp and Telegram \
         bots, social media autopilots, web chatbots). Write the production plan for the order \
         you are given: phases in order, each with concrete tasks, an owner role and hours; the \
         external integrations; the risks with their severity and mitigation; and the estimate \
         (total hours equal to the sum of the tasks, delivery days, optional cost). Write in the \
         language of the brief. Answer with one JSON object only, no prose, matching this JSON \
         Schema:\n{}",
        plan::schema()
    )
}

fn order_prompt(order: &Order) -> String {
    let blueprint = serde_json::to_string(&order.agent_blueprint).unwrap_or_default();
    format!(
        "Order {}\nProduct type: {}\nTitle: {}\nBrief:\n{}\n\nAgent blueprint (JSON):\n{}",
        order.id,
        order.product_type.as_str(),
        order.title,
        truncate(&order.brief, 8000),
        truncate(&blueprint, 16_000),
    )
}
