//! The builder: turns an order's checked blueprint (and its approved plan) into the agent's
//! artifacts — a spec, n8n workflows, configuration, prompts, the secrets it needs — and packs
//! them into a tar archive. Output is a pure function of the input: no clock, no randomness, no
//! hash-map order, so the same order always yields the same bytes.

use std::collections::BTreeMap;

use aws_lc_rs::digest;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::blueprint::{
    AgentBlueprint, BlueprintError, ChannelKind, ConditionOp, ConversationFlow, EscalationAction,
    LLM_SECRET, ProductType, Step, Trigger,
};

/// The model llm steps ask for; the n8n operator can change it in the node.
const LLM_MODEL: &str = "gpt-4o-mini";

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("blueprint refused: {0}")]
    Blueprint(#[from] BlueprintError),
    #[error("encoding {path}: {source}")]
    Encode {
        path: String,
        source: serde_json::Error,
    },
    #[error("archive entry {path:?} does not fit a ustar header")]
    PathTooLong { path: String },
    #[error("archive entry {path:?} must be a relative path without . or .. parts")]
    BadPath { path: String },
    #[error("archive entry {path:?} is larger than 8 GiB")]
    TooLarge { path: String },
}

pub struct BuildInput<'a> {
    pub order_id: &'a str,
    pub title: &'a str,
    pub product_type: ProductType,
    pub blueprint: &'a AgentBlueprint,
    /// The approved production plan, rendered into `spec.md` when present.
    pub plan: Option<&'a Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Renders an order's artifacts from its blueprint and approved plan.
pub fn render_order(order: &super::orders::Order) -> Result<Vec<Artifact>, BuildError> {
    let plan = order
        .production_plan
        .approved()
        .and_then(|p| serde_json::to_value(&p.plan).ok());
    render(&BuildInput {
        order_id: &order.id,
        title: &order.title,
        product_type: order.product_type,
        blueprint: &order.agent_blueprint,
        plan: plan.as_ref(),
    })
}

/// Renders every artifact of the agent, sorted by path.
pub fn render(input: &BuildInput) -> Result<Vec<Artifact>, BuildError> {
    let bp = input.blueprint;
    bp.check()?;
    let system = system_prompt(bp);
    let mut out = vec![
        text_file("spec.md", spec(input)),
        json_file("config.json", &config(input))?,
        text_file(".env.example", env_example(bp)),
        text_file("prompts/system.md", system.clone()),
        json_file("integrations.json", &integrations(bp))?,
    ];
    for flow in &bp.conversation_flows {
        let workflow = workflow(input, flow, &system);
        out.push(json_file(&format!("flows/{}.json", flow.id), &workflow)?);
        if let Some(prompt) = flow_prompt(flow) {
            out.push(text_file(&format!("prompts/{}.md", flow.id), prompt));
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn text_file(path: &str, text: String) -> Artifact {
    Artifact {
        path: path.into(),
        bytes: text.into_bytes(),
    }
}

fn json_file(path: &str, value: &impl Serialize) -> Result<Artifact, BuildError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| BuildError::Encode {
        path: path.into(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(Artifact {
        path: path.into(),
        bytes,
    })
}

fn line(out: &mut String, text: impl AsRef<str>) {
    out.push_str(text.as_ref());
    out.push('\n');
}

fn or_none(text: &str) -> &str {
    if text.is_empty() { "—" } else { text }
}

fn trigger_words(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Message => "any message".into(),
        Trigger::Keyword { keywords } => format!("a message containing {}", keywords.join(", ")),
        Trigger::Intent { intent } => format!("the intent `{intent}`"),
        Trigger::Schedule { cron } => format!("the schedule `{cron}`"),
        Trigger::Webhook { path } => format!("a call to the webhook `{path}`"),
    }
}

fn step_words(step: &Step) -> String {
    match step {
        Step::Say { text } => format!("say: {text}"),
        Step::Ask { text, save_as } => match save_as {
            Some(key) => format!("ask (saved as `{key}`): {text}"),
            None => format!("ask: {text}"),
        },
        Step::Llm { prompt } => format!("llm: {prompt}"),
        Step::Tool { tool, .. } => format!("tool: `{tool}`"),
        Step::Handoff { text } => format!("handoff to a person {text}").trim_end().into(),
        Step::Condition { field, op, value } => match op {
            ConditionOp::Exists => format!("continue if `{field}` is set"),
            ConditionOp::Equals => format!("continue if `{field}` equals \"{value}\""),
            ConditionOp::Contains => format!("continue if `{field}` contains \"{value}\""),
        },
    }
}

fn spec(input: &BuildInput) -> String {
    let bp = input.blueprint;
    let id = &bp.identity;
    let mut s = String::new();
    line(&mut s, format!("# {}\n", input.title));
    line(&mut s, format!("- Order: `{}`", input.order_id));
    line(&mut s, format!("- Product: {}", input.product_type));
    line(&mut s, format!("- Agent: {}\n", id.name));

    line(&mut s, "## Identity\n");
    line(&mut s, format!("- Name: {}", id.name));
    line(&mut s, format!("- Role: {}", or_none(&id.role)));
    line(&mut s, format!("- Tone: {}", or_none(&id.tone)));
    line(&mut s, format!("- Language: {}", id.language));
    line(&mut s, format!("- Greeting: {}", or_none(&id.greeting)));
    line(&mut s, format!("- Persona: {}\n", or_none(&id.persona)));

    let section = |s: &mut String, title: &str, items: Vec<String>| {
        line(s, format!("## {title}\n"));
        if items.is_empty() {
            line(s, "None.");
        }
        for item in items {
            line(s, format!("- {item}"));
        }
        line(s, "");
    };
    section(&mut s, "Goals", bp.goals.clone());
    let channels = bp.channels.iter().map(|c| match &c.handle {
        Some(handle) => format!("{} ({handle})", c.kind.as_str()),
        None => c.kind.as_str().into(),
    });
    section(&mut s, "Channels", channels.collect());
    let knowledge = bp.knowledge.iter().map(|k| {
        let kind = serde_json::to_value(k.kind).unwrap_or_default();
        let refresh = k
            .refresh
            .map(|r| serde_json::to_value(r).unwrap_or_default());
        let mut item = format!(
            "**{}** ({}): {}",
            k.name,
            kind.as_str().unwrap_or(""),
            or_none(&k.location)
        );
        if let Some(every) = refresh.as_ref().and_then(Value::as_str) {
            item.push_str(&format!(", refreshed {every}"));
        }
        item
    });
    section(&mut s, "Knowledge", knowledge.collect());
    let tools = bp.tools.iter().map(|t| {
        let mut item = format!(
            "**{}** ({}): {}",
            t.name,
            t.kind.as_str(),
            or_none(&t.description)
        );
        if let Some(endpoint) = &t.endpoint {
            item.push_str(&format!(" — {endpoint}"));
        }
        item
    });
    section(&mut s, "Tools", tools.collect());

    line(&mut s, "## Conversation flows\n");
    if bp.conversation_flows.is_empty() {
        line(&mut s, "None.\n");
    }
    for flow in &bp.conversation_flows {
        line(
            &mut s,
            format!("### {} (`flows/{}.json`)\n", flow.name, flow.id),
        );
        let on = flow.channel.map_or("a webhook", ChannelKind::as_str);
        line(
            &mut s,
            format!("Starts on {}, via {on}.\n", trigger_words(&flow.trigger)),
        );
        for (i, step) in flow.steps.iter().enumerate() {
            line(&mut s, format!("{}. {}", i + 1, step_words(step)));
        }
        line(&mut s, "");
    }

    let escalation = bp.escalation.iter().map(|rule| {
        let action = match rule.action {
            EscalationAction::HandoffHuman => "hand over to a person",
            EscalationAction::Notify => "notify a person",
            EscalationAction::EndConversation => "end the conversation",
        };
        match &rule.contact {
            Some(c) => format!(
                "{}: {action} via {} ({})",
                rule.condition,
                c.channel.as_str(),
                c.address
            ),
            None => format!("{}: {action}", rule.condition),
        }
    });
    section(&mut s, "Escalation", escalation.collect());
    let kpis = bp.kpis.iter().map(|k| {
        format!("{}: {} {}", k.name, k.target, k.unit)
            .trim_end()
            .to_owned()
    });
    section(&mut s, "KPIs", kpis.collect());
    let secrets = bp.secret_uses().into_iter().map(|(name, users)| {
        format!(
            "`{name}`: {}",
            users.into_iter().collect::<Vec<_>>().join(", ")
        )
    });
    section(
        &mut s,
        "Secrets (names only; values live where the agent runs)",
        secrets.collect(),
    );

    if let Some(plan) = input.plan {
        plan_section(&mut s, plan);
    }
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}

/// The plan's summary and phases; estimates and costs stay out, as the spec goes to clients.
fn plan_section(s: &mut String, plan: &Value) {
    let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    line(s, "## Production plan\n");
    let summary = str_of(plan, "summary");
    if !summary.is_empty() {
        line(s, format!("{summary}\n"));
    }
    let phases = plan
        .get("phases")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, phase) in phases.iter().enumerate() {
        line(s, format!("### {}. {}\n", i + 1, str_of(phase, "name")));
        let goal = str_of(phase, "goal");
        if !goal.is_empty() {
            line(s, format!("{goal}\n"));
        }
        for task in phase
            .get("tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let owner = str_of(task, "owner");
            match owner.is_empty() {
                true => line(s, format!("- {}", str_of(task, "title"))),
                false => line(s, format!("- {} ({owner})", str_of(task, "title"))),
            }
        }
        line(s, "");
    }
}

fn config(input: &BuildInput) -> Value {
    let bp = input.blueprint;
    let knowledge: Vec<Value> = bp
        .knowledge
        .iter()
        .map(|k| json!({"kind": k.kind, "name": k.name, "location": k.location, "refresh": k.refresh}))
        .collect();
    let tools: Vec<Value> = bp
        .tools
        .iter()
        .map(|t| json!({"name": t.name, "kind": t.kind, "description": t.description, "endpoint": t.endpoint}))
        .collect();
    let flows: Vec<Value> = bp
        .conversation_flows
        .iter()
        .map(|f| {
            let prompt = flow_prompt(f).map(|_| format!("prompts/{}.md", f.id));
            json!({"id": f.id, "name": f.name, "trigger": f.trigger, "channel": f.channel,
                   "steps": f.steps.len(), "workflow": format!("flows/{}.json", f.id), "prompt": prompt})
        })
        .collect();
    json!({
        "order_id": input.order_id,
        "title": input.title,
        "product_type": input.product_type,
        "identity": bp.identity,
        "goals": bp.goals,
        "channels": bp.channels,
        "knowledge": knowledge,
        "tools": tools,
        "flows": flows,
        "escalation": bp.escalation,
        "kpis": bp.kpis,
    })
}

fn env_example(bp: &AgentBlueprint) -> String {
    let mut s = String::new();
    line(
        &mut s,
        "# Secrets the agent needs. Fill in the values where it runs; never commit them.",
    );
    for (name, users) in bp.secret_uses() {
        line(&mut s, "");
        let users: Vec<String> = users.into_iter().collect();
        line(&mut s, format!("# needed by: {}", users.join(", ")));
        line(&mut s, format!("{name}="));
    }
    s
}

fn integrations(bp: &AgentBlueprint) -> Value {
    let mut list: Vec<Value> = bp
        .channels
        .iter()
        .filter(|c| !c.kind.secrets().is_empty())
        .map(|c| json!({"name": c.kind, "kind": c.kind, "source": "channel", "secrets": c.kind.secrets()}))
        .collect();
    for k in bp.knowledge.iter().filter(|k| !k.secrets.is_empty()) {
        list.push(
            json!({"name": k.name, "kind": k.kind, "source": "knowledge", "secrets": k.secrets}),
        );
    }
    for t in &bp.tools {
        list.push(
            json!({"name": t.name, "kind": t.kind, "source": "tool", "description": t.description,
                         "endpoint": t.endpoint, "secrets": t.secrets}),
        );
    }
    let llm = bp
        .conversation_flows
        .iter()
        .flat_map(|f| &f.steps)
        .any(|s| matches!(s, Step::Llm { .. }));
    if llm {
        list.push(
            json!({"name": "llm", "kind": "openai", "source": "llm_steps", "model": LLM_MODEL,
                         "secrets": [LLM_SECRET]}),
        );
    }
    json!({ "integrations": list })
}

fn system_prompt(bp: &AgentBlueprint) -> String {
    let id = &bp.identity;
    let mut s = String::new();
    let role = if id.role.is_empty() {
        String::new()
    } else {
        format!(", {}", id.role)
    };
    line(&mut s, format!("# {}{role}\n", id.name));
    if !id.persona.is_empty() {
        line(&mut s, format!("{}\n", id.persona));
    }
    line(&mut s, format!("- Language: {}", id.language));
    if !id.tone.is_empty() {
        line(&mut s, format!("- Tone: {}", id.tone));
    }
    if !id.greeting.is_empty() {
        line(&mut s, format!("- Greeting: {}", id.greeting));
    }
    let list = |s: &mut String, title: &str, items: Vec<String>| {
        if !items.is_empty() {
            line(s, format!("\n## {title}\n"));
            for item in items {
                line(s, format!("- {item}"));
            }
        }
    };
    list(&mut s, "Goals", bp.goals.clone());
    let knowledge = bp.knowledge.iter().map(|k| match k.location.is_empty() {
        true => k.name.clone(),
        false => format!("{}: {}", k.name, k.location),
    });
    list(&mut s, "Knowledge", knowledge.collect());
    let escalation = bp.escalation.iter().map(|r| {
        let action = match r.action {
            EscalationAction::HandoffHuman => {
                "say that a person will take over, and stop answering"
            }
            EscalationAction::Notify => "let the team know and carry on",
            EscalationAction::EndConversation => "close the conversation politely",
        };
        format!("When {}: {action}.", r.condition)
    });
    list(&mut s, "Escalation", escalation.collect());
    s
}

/// The instructions of a flow's llm steps, if it has any.
fn flow_prompt(flow: &ConversationFlow) -> Option<String> {
    let prompts: Vec<&str> = flow
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Llm { prompt } => Some(prompt.as_str()),
            _ => None,
        })
        .collect();
    if prompts.is_empty() {
        return None;
    }
    let mut s = format!("# {}\n", flow.name);
    for (i, prompt) in prompts.iter().enumerate() {
        s.push_str(&format!("\n## Step {}\n\n{prompt}\n", i + 1));
    }
    Some(s)
}

/// A UUID-shaped id (version 8, RFC 9562) from a hash of its parts: stable across builds.
fn stable_id(parts: &[&str]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    let hash = ctx.finish();
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash.as_ref()[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A literal for an n8n parameter: values starting with `=` are expressions there.
fn literal(text: &str) -> String {
    match text.starts_with('=') {
        true => format!("={{{{ {} }}}}", Value::String(text.into())),
        false => text.into(),
    }
}

/// An n8n workflow under construction: nodes in a chain, ids derived from the order and flow.
struct Workflow<'a> {
    seed: [&'a str; 2],
    nodes: Vec<Value>,
    connections: BTreeMap<String, Value>,
}

impl Workflow<'_> {
    fn id(&self, what: &str) -> String {
        stable_id(&[
            self.seed[0],
            self.seed[1],
            &self.nodes.len().to_string(),
            what,
        ])
    }

    /// Appends a node, connected from the previous one's first output.
    fn push(&mut self, name: &str, kind: &str, version: f64, parameters: Value) -> &mut Value {
        if let Some(prev) = self.nodes.last().and_then(|n| n["name"].as_str()) {
            let next = json!({"main": [[{"node": name, "type": "main", "index": 0}]]});
            self.connections.insert(prev.to_owned(), next);
        }
        let x = 240 * self.nodes.len() as i64;
        let node = json!({"id": self.id("node"), "name": name, "type": kind, "typeVersion": version,
                          "position": [x, 300], "parameters": parameters});
        self.nodes.push(node);
        self.nodes.last_mut().expect("just pushed")
    }

    fn condition(&self, left: String, op: ConditionOp, right: &str) -> Value {
        let operator = match op {
            ConditionOp::Equals => json!({"type": "string", "operation": "equals"}),
            ConditionOp::Contains => json!({"type": "string", "operation": "contains"}),
            ConditionOp::Exists => {
                json!({"type": "string", "operation": "exists", "singleValue": true})
            }
        };
        json!({"id": self.id(right), "leftValue": left, "rightValue": right, "operator": operator})
    }

    fn filter(&self, conditions: Vec<Value>) -> Value {
        json!({"conditions": {"options": {"caseSensitive": false, "leftValue": "", "typeValidation": "loose", "version": 2},
                              "conditions": conditions, "combinator": "or"},
               "options": {"ignoreCase": true}})
    }

    fn set(&self, fields: &[(&str, Value)]) -> Value {
        let assignments: Vec<Value> = fields
            .iter()
            .map(|(name, value)| {
                let kind = if value.is_boolean() {
                    "boolean"
                } else {
                    "string"
                };
                json!({"id": self.id(name), "name": name, "value": value, "type": kind})
            })
            .collect();
        json!({"mode": "manual", "assignments": {"assignments": assignments}, "options": {}})
    }
}

/// Where a flow's incoming text sits in its trigger's output.
fn incoming_text(flow: &ConversationFlow) -> Option<&'static str> {
    match (&flow.trigger, flow.channel) {
        (Trigger::Schedule { .. }, _) => None,
        (Trigger::Webhook { .. }, _) => Some("$('Trigger').item.json.body.text"),
        (_, Some(ChannelKind::Telegram)) => Some("$('Trigger').item.json.message.text"),
        (_, Some(ChannelKind::Whatsapp)) => Some("$('Trigger').item.json.messages[0].text.body"),
        _ => Some("$('Trigger').item.json.body.text"),
    }
}

/// One conversation flow as an n8n workflow: trigger, optional filter, one node per step and,
/// on Telegram and WhatsApp, a last node that sends the flow's answer (its last text).
fn workflow(input: &BuildInput, flow: &ConversationFlow, system: &str) -> Value {
    let mut w = Workflow {
        seed: [input.order_id, &flow.id],
        nodes: Vec::new(),
        connections: BTreeMap::new(),
    };
    let text = incoming_text(flow);
    let webhook = |path: &str| {
        json!({"httpMethod": "POST", "path": path, "responseMode": "lastNode",
               "responseData": "firstEntryJson", "options": {}})
    };
    let default_path = format!("{}/{}", slug(input.order_id), flow.id);
    let reply_channel = match (&flow.trigger, flow.channel) {
        (Trigger::Schedule { .. } | Trigger::Webhook { .. }, _) => None,
        (_, channel) => {
            channel.filter(|c| matches!(c, ChannelKind::Telegram | ChannelKind::Whatsapp))
        }
    };
    match (&flow.trigger, reply_channel) {
        (Trigger::Schedule { cron }, _) => {
            let rule =
                json!({"rule": {"interval": [{"field": "cronExpression", "expression": cron}]}});
            w.push("Trigger", "n8n-nodes-base.scheduleTrigger", 1.2, rule);
        }
        (Trigger::Webhook { path }, _) => {
            let id = w.id("webhook");
            w.push("Trigger", "n8n-nodes-base.webhook", 2.0, webhook(path))["webhookId"] =
                json!(id);
        }
        (_, Some(ChannelKind::Telegram)) => {
            let params = json!({"updates": ["message"], "additionalFields": {}});
            w.push("Trigger", "n8n-nodes-base.telegramTrigger", 1.2, params);
        }
        (_, Some(_)) => {
            let params = json!({"updates": ["messages"]});
            w.push("Trigger", "n8n-nodes-base.whatsAppTrigger", 1.0, params);
        }
        (_, None) => {
            let id = w.id("webhook");
            let node = w.push(
                "Trigger",
                "n8n-nodes-base.webhook",
                2.0,
                webhook(&default_path),
            );
            node["webhookId"] = json!(id);
        }
    }
    let left = |field: &str| format!("={{{{ {field} }}}}");
    match &flow.trigger {
        Trigger::Keyword { keywords } => {
            let from = left(text.unwrap_or("$json.text"));
            let conditions = keywords
                .iter()
                .map(|k| w.condition(from.clone(), ConditionOp::Contains, k))
                .collect();
            let params = w.filter(conditions);
            w.push("Filter", "n8n-nodes-base.if", 2.2, params);
        }
        Trigger::Intent { intent } => {
            let condition = w.condition(
                left("$('Trigger').item.json.intent"),
                ConditionOp::Equals,
                intent,
            );
            let params = w.filter(vec![condition]);
            w.push("Filter", "n8n-nodes-base.if", 2.2, params);
        }
        _ => {}
    }

    for (i, step) in flow.steps.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::Say { text } => {
                let params = w.set(&[("reply", json!(literal(text)))]);
                w.push(&format!("{n}. Say"), "n8n-nodes-base.set", 3.4, params);
            }
            Step::Ask { text, save_as } => {
                let mut fields = vec![("reply", json!(literal(text)))];
                if let Some(key) = save_as {
                    fields.push(("awaiting", json!(key)));
                }
                let params = w.set(&fields);
                w.push(&format!("{n}. Ask"), "n8n-nodes-base.set", 3.4, params);
            }
            Step::Llm { prompt } => {
                let messages = match text {
                    Some(from) => {
                        json!([{"role": "system", "content": format!("{system}\n## Instruction\n\n{prompt}")},
                                         {"content": left(from)}])
                    }
                    None => {
                        json!([{"role": "system", "content": system}, {"content": literal(prompt)}])
                    }
                };
                let params = json!({"modelId": {"__rl": true, "mode": "list", "value": LLM_MODEL},
                                    "messages": {"values": messages}, "options": {}});
                let node = w.push(
                    &format!("{n}. LLM"),
                    "@n8n/n8n-nodes-langchain.openAi",
                    1.8,
                    params,
                );
                node["notes"] = json!(format!("Credentials: {LLM_SECRET}"));
            }
            Step::Tool { tool, input: body } => {
                let Some(decl) = input.blueprint.tools.iter().find(|t| &t.name == tool) else {
                    continue; // check() guarantees it is declared
                };
                let body = body
                    .as_deref()
                    .map_or("={{ JSON.stringify($json) }}".into(), literal);
                let params = json!({"method": "POST", "url": decl.endpoint.as_deref().unwrap_or(""),
                                    "sendBody": true, "specifyBody": "json", "jsonBody": body, "options": {}});
                let node = w.push(
                    &format!("{n}. Tool {tool}"),
                    "n8n-nodes-base.httpRequest",
                    4.2,
                    params,
                );
                let creds = match decl.secrets.is_empty() {
                    true => "none".to_owned(),
                    false => decl.secrets.join(", "),
                };
                node["notes"] = json!(format!(
                    "Tool {tool} ({}). Credentials: {creds}",
                    decl.kind.as_str()
                ));
                node["notesInFlow"] = json!(true);
            }
            Step::Handoff { text } => {
                let params = w.set(&[("reply", json!(literal(text))), ("handoff", json!(true))]);
                w.push(&format!("{n}. Handoff"), "n8n-nodes-base.set", 3.4, params);
            }
            Step::Condition { field, op, value } => {
                let condition = w.condition(left(&format!("$json.{field}")), *op, value);
                let params = w.filter(vec![condition]);
                w.push(&format!("{n}. Condition"), "n8n-nodes-base.if", 2.2, params);
            }
        }
    }

    let answer = "={{ $json.reply ?? $json.message?.content ?? '' }}";
    match reply_channel {
        Some(ChannelKind::Telegram) => {
            let params = json!({"chatId": "={{ $('Trigger').item.json.message.chat.id }}",
                                "text": answer, "additionalFields": {}});
            w.push("Reply", "n8n-nodes-base.telegram", 1.2, params);
        }
        Some(_) => {
            let params = json!({"operation": "send", "phoneNumberId": "={{ $env.WHATSAPP_PHONE_NUMBER_ID }}",
                                "recipientPhoneNumber": "={{ $('Trigger').item.json.messages[0].from }}",
                                "textBody": answer, "additionalFields": {}});
            w.push("Reply", "n8n-nodes-base.whatsApp", 1.0, params);
        }
        None => {}
    }
    json!({
        "name": format!("{} — {}", input.title, flow.name),
        "nodes": w.nodes,
        "connections": w.connections,
        "settings": {"executionOrder": "v1"},
        "active": false,
        "pinData": {},
    })
}

/// Keeps `[A-Za-z0-9-_]`, so an order id is safe inside a webhook path.
fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// One deterministic ustar archive of the artifacts under `root/`: sorted, mode 0644, owner
/// 0/0 `axon`, mtime 0. Paths longer than 100 bytes are split into the ustar prefix.
pub fn archive(artifacts: &[Artifact], root: &str) -> Result<Vec<u8>, BuildError> {
    let mut sorted: Vec<&Artifact> = artifacts.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for artifact in sorted {
        let path = format!("{root}/{}", artifact.path);
        let parts_ok = path
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..");
        if !parts_ok || path.contains('\0') {
            return Err(BuildError::BadPath { path });
        }
        let size = artifact.bytes.len() as u64;
        if size >= 8u64.pow(11) {
            return Err(BuildError::TooLarge { path });
        }
        let (prefix, name) =
            ustar_split(&path).ok_or(BuildError::PathTooLong { path: path.clone() })?;
        let mut h = [0u8; 512];
        let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, name.as_bytes());
        put(100, b"0000644\0");
        put(108, b"0000000\0");
        put(116, b"0000000\0");
        put(124, format!("{size:011o}\0").as_bytes());
        put(136, b"00000000000\0");
        put(148, b"        ");
        put(156, b"0");
        put(257, b"ustar\0");
        put(263, b"00");
        put(265, b"axon");
        put(297, b"axon");
        put(329, b"0000000\0");
        put(337, b"0000000\0");
        put(345, prefix.as_bytes());
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&artifact.bytes);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// `(prefix, name)` with name ≤ 100 bytes and prefix ≤ 155, split at a `/`.
fn ustar_split(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    path.match_indices('/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(prefix, name)| name.len() <= 100 && prefix.len() <= 155)
}

/// One line of a product's checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ChecklistItem {
    pub name: String,
    pub present: bool,
    pub detail: Option<String>,
}

/// Every product expects `spec.md`, `config.json`, `.env.example`, `prompts/system.md`,
/// `integrations.json` and at least one `flows/*.json`. On top of that, a flow started by the
/// product's own channel: a `whatsAppTrigger` for whatsapp_autopilot, a `telegramTrigger` for
/// telegram_bot, a `webhook` (the widget's endpoint) for web_chatbot, and a `scheduleTrigger`
/// (the posting calendar) for social_autopilot; custom_agent expects nothing more.
pub fn expected_artifacts(product: ProductType) -> Vec<&'static str> {
    expectations(product)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

/// `None`: the file itself; `Some("")`: any flow; `Some(type)`: a flow with that node type.
fn expectations(product: ProductType) -> Vec<(&'static str, Option<&'static str>)> {
    let mut list = vec![
        ("spec.md", None),
        ("config.json", None),
        (".env.example", None),
        ("prompts/system.md", None),
        ("integrations.json", None),
        ("flows/*.json", Some("")),
    ];
    list.push(match product {
        ProductType::WhatsappAutopilot => (
            "flows/*.json with a WhatsApp trigger",
            Some("n8n-nodes-base.whatsAppTrigger"),
        ),
        ProductType::TelegramBot => (
            "flows/*.json with a Telegram trigger",
            Some("n8n-nodes-base.telegramTrigger"),
        ),
        ProductType::WebChatbot => (
            "flows/*.json with a webhook trigger",
            Some("n8n-nodes-base.webhook"),
        ),
        ProductType::SocialAutopilot => (
            "flows/*.json with a schedule trigger",
            Some("n8n-nodes-base.scheduleTrigger"),
        ),
        ProductType::CustomAgent => return list,
    });
    list
}

/// Which of the product's expected artifacts are among these.
pub fn checklist(product: ProductType, artifacts: &[Artifact]) -> Vec<ChecklistItem> {
    let flows: Vec<(&str, Value)> = artifacts
        .iter()
        .filter(|a| a.path.starts_with("flows/") && a.path.ends_with(".json"))
        .map(|a| {
            (
                a.path.as_str(),
                serde_json::from_slice(&a.bytes).unwrap_or(Value::Null),
            )
        })
        .collect();
    let has_node = |flow: &Value, kind: &str| {
        let nodes = flow["nodes"].as_array().into_iter().flatten();
        nodes.into_iter().any(|n| n["type"] == kind)
    };
    expectations(product)
        .into_iter()
        .map(|(name, rule)| {
            let (present, detail) = match rule {
                None => match artifacts.iter().find(|a| a.path == name) {
                    Some(a) => (true, Some(format!("{} bytes", a.bytes.len()))),
                    None => (false, None),
                },
                Some(kind) => {
                    let found: Vec<&str> = flows
                        .iter()
                        .filter(|(_, flow)| kind.is_empty() || has_node(flow, kind))
                        .map(|(path, _)| *path)
                        .collect();
                    match found.is_empty() {
                        true if kind.is_empty() => (false, Some("no flow".into())),
                        true => (false, Some(format!("no flow has a {kind} node"))),
                        false => (true, Some(found.join(", "))),
                    }
                }
            };
            ChecklistItem {
                name: name.into(),
                present,
                detail,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use super::*;
    use crate::agency::blueprint::secret_assignment;

    const CASES: [(&str, &str, &str, ProductType); 2] = [
        (
            "notaria-17",
            "ord-notaria-17",
            "Notaría 17 — asistente de Telegram",
            ProductType::TelegramBot,
        ),
        (
            "clinica-sonrisa",
            "ord-clinica-sonrisa",
            "Clínica Sonrisa — autopiloto de WhatsApp",
            ProductType::WhatsappAutopilot,
        ),
    ];

    fn fixtures(case: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/builder")
            .join(case)
    }

    fn read_json(path: &Path) -> Option<Value> {
        let bytes = std::fs::read(path).ok()?;
        Some(serde_json::from_slice(&bytes).expect("fixture is JSON"))
    }

    fn case(name: &str) -> (AgentBlueprint, Option<Value>) {
        let dir = fixtures(name);
        let bp = read_json(&dir.join("blueprint.json")).expect("blueprint fixture");
        (
            serde_json::from_value(bp).expect("blueprint"),
            read_json(&dir.join("plan.json")),
        )
    }

    fn build(bp: &AgentBlueprint, plan: Option<&Value>, product: ProductType) -> Vec<Artifact> {
        let input = BuildInput {
            order_id: "ord-1",
            title: "Agente",
            product_type: product,
            blueprint: bp,
            plan,
        };
        render(&input).expect("render")
    }

    fn all_builds() -> Vec<(ProductType, AgentBlueprint, Vec<Artifact>)> {
        let mut builds: Vec<_> = ProductType::ALL
            .into_iter()
            .map(|p| {
                let bp = AgentBlueprint::base_for(p, "Ana");
                let artifacts = build(&bp, None, p);
                (p, bp, artifacts)
            })
            .collect();
        for (name, _, _, product) in CASES {
            let (bp, plan) = case(name);
            let artifacts = build(&bp, plan.as_ref(), product);
            builds.push((product, bp, artifacts));
        }
        builds
    }

    #[test]
    fn golden_fixtures() {
        let update = std::env::var_os("AXON_UPDATE_GOLDEN").is_some();
        for (name, order_id, title, product) in CASES {
            let (bp, plan) = case(name);
            let input = BuildInput {
                order_id,
                title,
                product_type: product,
                blueprint: &bp,
                plan: plan.as_ref(),
            };
            let artifacts = render(&input).expect("render");
            let expected = fixtures(name).join("expected");
            if update {
                let _ = std::fs::remove_dir_all(&expected);
                for a in &artifacts {
                    let path = expected.join(&a.path);
                    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                    std::fs::write(&path, &a.bytes).expect("write golden");
                }
            }
            let mut on_disk = BTreeSet::new();
            let mut dirs = vec![expected.clone()];
            while let Some(dir) = dirs.pop() {
                for entry in
                    std::fs::read_dir(&dir).expect("golden dir (AXON_UPDATE_GOLDEN=1 writes it)")
                {
                    let path = entry.expect("entry").path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else {
                        let rel = path
                            .strip_prefix(&expected)
                            .expect("under")
                            .to_string_lossy()
                            .into_owned();
                        on_disk.insert(rel);
                    }
                }
            }
            let rendered: BTreeSet<String> = artifacts.iter().map(|a| a.path.clone()).collect();
            assert_eq!(
                rendered, on_disk,
                "{name}: files differ from the golden set"
            );
            for a in &artifacts {
                let want = std::fs::read(expected.join(&a.path)).expect("golden file");
                assert!(
                    a.bytes == want,
                    "{name}/{} differs from its golden file",
                    a.path
                );
            }
        }
    }

    #[test]
    fn same_input_same_bytes_and_a_change_shows() {
        let (bp, plan) = case("notaria-17");
        let once = build(&bp, plan.as_ref(), ProductType::TelegramBot);
        assert_eq!(once, build(&bp, plan.as_ref(), ProductType::TelegramBot));
        let tar = archive(&once, "notaria-17").expect("archive");
        assert_eq!(tar, archive(&once, "notaria-17").expect("archive"));
        let mut changed = bp.clone();
        changed.identity.greeting.push('!');
        let other = build(&changed, plan.as_ref(), ProductType::TelegramBot);
        assert_ne!(once, other);
        assert_ne!(tar, archive(&other, "notaria-17").expect("archive"));
        let paths: Vec<&str> = once.iter().map(|a| a.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn flows_are_well_formed_n8n_workflows() {
        for (product, _, artifacts) in all_builds() {
            for a in artifacts.iter().filter(|a| a.path.starts_with("flows/")) {
                let flow: Value = serde_json::from_slice(&a.bytes).expect("flow JSON");
                let nodes = flow["nodes"].as_array().expect("nodes");
                let names: BTreeSet<&str> = nodes
                    .iter()
                    .map(|n| n["name"].as_str().expect("name"))
                    .collect();
                assert_eq!(
                    names.len(),
                    nodes.len(),
                    "{product}/{}: node names repeat",
                    a.path
                );
                let ids: BTreeSet<&str> = nodes
                    .iter()
                    .map(|n| n["id"].as_str().expect("id"))
                    .collect();
                assert_eq!(
                    ids.len(),
                    nodes.len(),
                    "{product}/{}: node ids repeat",
                    a.path
                );
                for node in nodes {
                    for key in ["type", "typeVersion", "position", "parameters"] {
                        assert!(!node[key].is_null(), "{}: node without {key}", a.path);
                    }
                }
                let connections = flow["connections"].as_object().expect("connections");
                assert_eq!(connections.len(), nodes.len() - 1, "{}: a chain", a.path);
                for (from, outputs) in connections {
                    assert!(
                        names.contains(from.as_str()),
                        "{}: {from} is no node",
                        a.path
                    );
                    for to in outputs["main"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|o| o.as_array().into_iter().flatten())
                    {
                        let to = to["node"].as_str().expect("node");
                        assert!(names.contains(to), "{}: {to} is no node", a.path);
                    }
                }
                assert_eq!(flow["active"], false);
                assert_eq!(flow["settings"]["executionOrder"], "v1");
            }
        }
    }

    #[test]
    fn env_example_lists_exactly_the_secret_names() {
        for (product, bp, artifacts) in all_builds() {
            let env = artifacts
                .iter()
                .find(|a| a.path == ".env.example")
                .expect(".env.example");
            let env = std::str::from_utf8(&env.bytes).expect("utf-8");
            let names: BTreeSet<String> = env
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(|l| l.strip_suffix('=').expect("NAME= with no value").to_owned())
                .collect();
            assert_eq!(names, bp.required_secrets(), "{product}");
        }
    }

    #[test]
    fn secret_looking_values_never_become_assignments() {
        let (mut bp, _) = case("notaria-17");
        bp.channels[0].handle = Some("sk_live_51Hx9aQ2eZvKYlo2C0123456789".into());
        bp.tools[0].description = "clave sk-proj-AbC123xyz en la consola".into();
        bp.knowledge[0].location = "https://example.com/faq?token=abc123".into();
        for a in build(&bp, None, ProductType::TelegramBot) {
            let text = String::from_utf8(a.bytes).expect("utf-8");
            assert_eq!(secret_assignment(&text), None, "{}", a.path);
            if a.path == ".env.example" {
                assert!(!text.contains("sk_live") && !text.contains("sk-proj"));
            }
        }
        bp.tools[0].description = "TOKEN_CRM=sk-proj-AbC123xyz".into();
        assert!(matches!(
            render(&BuildInput {
                order_id: "o",
                title: "t",
                product_type: ProductType::TelegramBot,
                blueprint: &bp,
                plan: None
            }),
            Err(BuildError::Blueprint(_))
        ));
    }

    #[test]
    fn checklists_of_the_base_blueprints_are_complete() {
        for (product, _, artifacts) in all_builds() {
            let list = checklist(product, &artifacts);
            assert_eq!(list.len(), expected_artifacts(product).len());
            for item in &list {
                assert!(
                    item.present,
                    "{product}: {} missing ({:?})",
                    item.name, item.detail
                );
            }
        }
        let web = build(
            &AgentBlueprint::base_for(ProductType::WebChatbot, "Ana"),
            None,
            ProductType::WebChatbot,
        );
        let list = checklist(ProductType::TelegramBot, &web);
        let last = list.last().expect("item");
        assert!(!last.present);
        assert_eq!(
            last.detail.as_deref(),
            Some("no flow has a n8n-nodes-base.telegramTrigger node")
        );
        assert!(
            checklist(ProductType::CustomAgent, &[])
                .iter()
                .all(|i| !i.present)
        );
    }

    #[test]
    fn tar_is_read_by_gnu_tar_and_python() {
        let (bp, plan) = case("notaria-17");
        let mut artifacts = build(&bp, plan.as_ref(), ProductType::TelegramBot);
        let deep = format!("{}/{}.md", "d".repeat(60), "n".repeat(60));
        artifacts.push(Artifact {
            path: deep.clone(),
            bytes: b"deep\n".to_vec(),
        });
        let tar = archive(&artifacts, "ord-notaria-17").expect("archive");
        assert_eq!(tar.len() % 512, 0);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("agent.tar");
        std::fs::write(&file, &tar).expect("write");

        let listing = Command::new("tar")
            .arg("-tf")
            .arg(&file)
            .output()
            .expect("tar runs");
        assert!(
            listing.status.success(),
            "{}",
            String::from_utf8_lossy(&listing.stderr)
        );
        let mut want: Vec<String> = artifacts
            .iter()
            .map(|a| format!("ord-notaria-17/{}", a.path))
            .collect();
        want.sort();
        let got: Vec<String> = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(got, want);
        let verbose = Command::new("tar")
            .arg("-tvf")
            .arg(&file)
            .output()
            .expect("tar runs");
        let verbose = String::from_utf8_lossy(&verbose.stdout);
        assert!(
            verbose
                .lines()
                .all(|l| l.starts_with("-rw-r--r-- axon/axon")),
            "{verbose}"
        );

        let script = "import sys, tarfile\nwith tarfile.open(sys.argv[1]) as t:\n    for m in t.getmembers():\n        print(m.name, m.size, m.mtime, oct(m.mode), len(t.extractfile(m).read()))";
        let python = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&file)
            .output();
        if let Some(out) = python.ok().filter(|o| o.status.success()) {
            let text = String::from_utf8_lossy(&out.stdout);
            let spec = artifacts
                .iter()
                .find(|a| a.path == "spec.md")
                .expect("spec");
            let n = spec.bytes.len();
            assert!(
                text.contains(&format!("ord-notaria-17/spec.md {n} 0 0o644 {n}")),
                "{text}"
            );
            assert!(
                text.contains(&format!("ord-notaria-17/{deep} 5 0 0o644 5")),
                "{text}"
            );
        }

        let long = Artifact {
            path: "x".repeat(101),
            bytes: vec![],
        };
        assert!(matches!(
            archive(&[long], "r"),
            Err(BuildError::PathTooLong { .. })
        ));
        let up = Artifact {
            path: "../etc/passwd".into(),
            bytes: vec![],
        };
        assert!(matches!(
            archive(&[up], "r"),
            Err(BuildError::BadPath { .. })
        ));
    }

    #[test]
    fn stable_ids_look_like_uuids() {
        let id = stable_id(&["ord-1", "inicio", "0"]);
        assert_eq!(id, stable_id(&["ord-1", "inicio", "0"]));
        assert_ne!(id, stable_id(&["ord-1", "inicio", "1"]));
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "8");
        assert_eq!(literal("=1+1"), "={{ \"=1+1\" }}");
    }
}
