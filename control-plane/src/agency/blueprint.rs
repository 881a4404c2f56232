//! Agent blueprints: the typed description of one agent (identity, channels, knowledge, tools,
//! conversation flows, escalation, KPIs) that the builder turns into artifacts, its JSON Schema,
//! and the checks a blueprint must pass. A blueprint names secrets, never holds their values.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const MAX_NAME: usize = 120;
const MAX_TEXT: usize = 4000;
const MAX_ITEMS: usize = 100;
const MAX_FLOWS: usize = 50;
const MAX_STEPS: usize = 100;
const MAX_SLUG: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlueprintError {
    /// A field breaks a rule; `path` names it as `conversation_flows[2].steps[0].tool`.
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("unknown product type {given:?}; expected one of {}", ProductType::ALL.map(|p| p.as_str()).join(", "))]
    UnknownProduct { given: String },
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> BlueprintError {
    BlueprintError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// What the agency sells; each has a base blueprint and a checklist of artifacts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProductType {
    WhatsappAutopilot,
    SocialAutopilot,
    TelegramBot,
    WebChatbot,
    CustomAgent,
}

impl ProductType {
    pub const ALL: [ProductType; 5] = [
        Self::WhatsappAutopilot,
        Self::SocialAutopilot,
        Self::TelegramBot,
        Self::WebChatbot,
        Self::CustomAgent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WhatsappAutopilot => "whatsapp_autopilot",
            Self::SocialAutopilot => "social_autopilot",
            Self::TelegramBot => "telegram_bot",
            Self::WebChatbot => "web_chatbot",
            Self::CustomAgent => "custom_agent",
        }
    }
}

impl fmt::Display for ProductType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProductType {
    type Err = BlueprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| BlueprintError::UnknownProduct { given: s.into() })
    }
}

/// One agent, as the agency designs it. Only `identity.name` is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentBlueprint {
    pub identity: Identity,
    /// What the agent is for, one outcome per item.
    #[serde(default)]
    pub goals: Vec<String>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub knowledge: Vec<KnowledgeSource>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    #[serde(default)]
    pub conversation_flows: Vec<ConversationFlow>,
    #[serde(default)]
    pub escalation: Vec<EscalationRule>,
    #[serde(default)]
    pub kpis: Vec<Kpi>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The name the agent uses with customers.
    pub name: String,
    /// e.g. `Recepcionista virtual`.
    #[serde(default)]
    pub role: String,
    /// Who the agent is and how it behaves, in a few sentences.
    #[serde(default)]
    pub persona: String,
    /// e.g. `cercano y profesional`.
    #[serde(default)]
    pub tone: String,
    /// BCP 47 language tag such as `es` or `es-MX`.
    #[serde(default = "default_language")]
    pub language: String,
    /// The first message of a conversation.
    #[serde(default)]
    pub greeting: String,
}

fn default_language() -> String {
    "es".into()
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Whatsapp,
    Telegram,
    Instagram,
    Facebook,
    Linkedin,
    #[serde(alias = "twitter")]
    X,
    Tiktok,
    WebWidget,
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Telegram => "telegram",
            Self::Instagram => "instagram",
            Self::Facebook => "facebook",
            Self::Linkedin => "linkedin",
            Self::X => "x",
            Self::Tiktok => "tiktok",
            Self::WebWidget => "web_widget",
            Self::Email => "email",
        }
    }

    /// The secrets a channel needs to run. Social networks are reached through Ayrshare.
    pub fn secrets(self) -> &'static [&'static str] {
        match self {
            Self::Whatsapp => &[
                "WHATSAPP_ACCESS_TOKEN",
                "WHATSAPP_APP_SECRET",
                "WHATSAPP_PHONE_NUMBER_ID",
                "WHATSAPP_VERIFY_TOKEN",
            ],
            Self::Telegram => &["TELEGRAM_BOT_TOKEN"],
            Self::Instagram | Self::Facebook | Self::Linkedin | Self::X | Self::Tiktok => {
                &["AYRSHARE_API_KEY"]
            }
            Self::WebWidget => &[],
            Self::Email => &["SMTP_PASSWORD", "SMTP_USER"],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    pub kind: ChannelKind,
    /// Public handle: `@notaria17_bot`, a phone number, an address, a page name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KnowledgeKind {
    Url,
    Document,
    Faq,
    Database,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Refresh {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeSource {
    pub kind: KnowledgeKind,
    pub name: String,
    /// URL, file name or table; never with a password in it.
    #[serde(default)]
    pub location: String,
    /// How often it is read again; none means once, at build time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
    /// Names of the secrets needed to read it (e.g. `KB_DATABASE_URL`).
    #[serde(default)]
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    HttpApi,
    GoogleSheets,
    Calendar,
    Crm,
    Payment,
    Email,
    Ayrshare,
    N8n,
    Openai,
    Search,
}

impl ToolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpApi => "http_api",
            Self::GoogleSheets => "google_sheets",
            Self::Calendar => "calendar",
            Self::Crm => "crm",
            Self::Payment => "payment",
            Self::Email => "email",
            Self::Ayrshare => "ayrshare",
            Self::N8n => "n8n",
            Self::Openai => "openai",
            Self::Search => "search",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Slug that flow steps use to call it: `[a-z0-9-_]{1,64}`.
    pub name: String,
    pub kind: ToolKind,
    #[serde(default)]
    pub description: String,
    /// Base URL of the service, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Names of the environment variables holding its credentials: `[A-Z][A-Z0-9_]{0,63}`.
    #[serde(default)]
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConversationFlow {
    /// Slug, unique in the blueprint: `[a-z0-9-_]{1,64}`; names the flow's files.
    pub id: String,
    pub name: String,
    pub trigger: Trigger,
    /// The channel it listens on; none means an HTTP webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<ChannelKind>,
    pub steps: Vec<Step>,
}

/// What starts a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Any incoming message on the channel.
    Message,
    /// A message containing one of these words (case-insensitive).
    Keyword { keywords: Vec<String> },
    /// A message an upstream classifier tagged with this intent (`$json.intent`).
    Intent { intent: String },
    /// A cron expression (five fields), e.g. `0 9 * * 1`.
    Schedule { cron: String },
    /// An HTTP call to this webhook path.
    Webhook { path: String },
}

/// One step of a flow; steps run in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Say {
        text: String,
    },
    /// Asks a question; the answer is kept under `save_as`.
    Ask {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        save_as: Option<String>,
    },
    /// Answers with the model, following this instruction.
    Llm {
        prompt: String,
    },
    /// Calls a declared tool.
    Tool {
        tool: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// Hands the conversation to a person.
    Handoff {
        #[serde(default)]
        text: String,
    },
    /// Goes on only when the field passes the test; otherwise the flow stops.
    Condition {
        field: String,
        op: ConditionOp,
        #[serde(default)]
        value: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditionOp {
    Equals,
    Contains,
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscalationAction {
    /// A person takes over the conversation.
    HandoffHuman,
    /// A person is told; the agent carries on.
    Notify,
    /// The agent closes the conversation politely.
    EndConversation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EscalationRule {
    /// When it applies, in words: `el cliente pide hablar con una persona`.
    pub condition: String,
    pub action: EscalationAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
}

/// Where a person is reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    pub channel: ChannelKind,
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Kpi {
    pub name: String,
    pub target: f64,
    /// e.g. `%`, `s`, `citas/semana`.
    #[serde(default)]
    pub unit: String,
}

/// The blueprint's JSON Schema, as served at `/api/schemas/agent-blueprint.json`.
pub fn schema() -> serde_json::Value {
    schemars::schema_for!(AgentBlueprint).to_value()
}

/// `[a-z0-9-_]{1,64}`: flow ids and tool names end up in file and node names.
pub fn is_slug(s: &str) -> bool {
    (1..=MAX_SLUG).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `[A-Z][A-Z0-9_]{0,63}`: an environment variable name.
pub fn is_secret_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=64).contains(&b.len())
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

/// Finds `NAME=value` in free text: a pasted credential that would end up in every artifact.
pub fn secret_assignment(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_uppercase()
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_uppercase() || b[j].is_ascii_digit() || b[j] == b'_') {
            j += 1;
        }
        let value_follows =
            b.get(j) == Some(&b'=') && b.get(j + 1).is_some_and(|c| !c.is_ascii_whitespace());
        if j - i >= 3 && value_follows {
            return Some(&s[i..j]);
        }
        i = j.max(i + 1);
    }
    None
}

/// `scheme://user:password@host`: a credential inside a URL.
fn url_password(s: &str) -> bool {
    s.match_indices("://").any(|(at, _)| {
        let rest = &s[at + 3..];
        let authority = rest.split(['/', ' ', '?', '#']).next().unwrap_or("");
        authority
            .rsplit_once('@')
            .is_some_and(|(user, _)| user.contains(':'))
    })
}

fn text(path: &str, value: &str, max: usize, required: bool) -> Result<(), BlueprintError> {
    if required && value.trim().is_empty() {
        return Err(invalid(path, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(path, format!("is longer than {max} characters")));
    }
    // Names and handles become single lines in Markdown lists, comments and node notes.
    if max <= MAX_NAME && value.chars().any(char::is_control) {
        return Err(invalid(path, "must be a single line"));
    }
    if let Some(name) = secret_assignment(value) {
        return Err(invalid(
            path,
            format!(
                "looks like a secret value ({name}=…); list the secret's name under `secrets` instead"
            ),
        ));
    }
    if url_password(value) {
        return Err(invalid(
            path,
            "holds a password inside a URL; name a secret instead",
        ));
    }
    Ok(())
}

fn items<T>(path: &str, list: &[T], max: usize) -> Result<(), BlueprintError> {
    if list.len() > max {
        return Err(invalid(path, format!("has more than {max} items")));
    }
    Ok(())
}

fn secret_names(path: &str, names: &[String]) -> Result<(), BlueprintError> {
    items(path, names, MAX_ITEMS)?;
    for (i, name) in names.iter().enumerate() {
        if !is_secret_name(name) {
            return Err(invalid(
                format!("{path}[{i}]"),
                format!(
                    "{name:?} is not a secret name like OPENAI_API_KEY ([A-Z][A-Z0-9_]{{0,63}})"
                ),
            ));
        }
    }
    Ok(())
}

impl AgentBlueprint {
    /// What is wrong with the blueprint, as a sentence naming the field.
    pub fn check(&self) -> Result<(), BlueprintError> {
        let id = &self.identity;
        text("identity.name", &id.name, MAX_NAME, true)?;
        text("identity.role", &id.role, MAX_NAME, false)?;
        text("identity.persona", &id.persona, MAX_TEXT, false)?;
        text("identity.tone", &id.tone, MAX_NAME, false)?;
        text("identity.greeting", &id.greeting, MAX_TEXT, false)?;
        let lang_ok = (2..=16).contains(&id.language.len())
            && id
                .language
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !lang_ok {
            return Err(invalid(
                "identity.language",
                "must be a language tag such as es or es-MX",
            ));
        }

        items("goals", &self.goals, MAX_ITEMS)?;
        for (i, goal) in self.goals.iter().enumerate() {
            text(&format!("goals[{i}]"), goal, MAX_TEXT, true)?;
        }

        items("channels", &self.channels, MAX_ITEMS)?;
        let mut kinds = BTreeSet::new();
        for (i, channel) in self.channels.iter().enumerate() {
            if !kinds.insert(channel.kind) {
                return Err(invalid(
                    format!("channels[{i}].kind"),
                    format!("{} is listed twice", channel.kind.as_str()),
                ));
            }
            let handle = channel.handle.as_deref().unwrap_or("");
            text(&format!("channels[{i}].handle"), handle, MAX_NAME, false)?;
        }

        items("knowledge", &self.knowledge, MAX_ITEMS)?;
        for (i, source) in self.knowledge.iter().enumerate() {
            text(
                &format!("knowledge[{i}].name"),
                &source.name,
                MAX_NAME,
                true,
            )?;
            text(
                &format!("knowledge[{i}].location"),
                &source.location,
                MAX_TEXT,
                false,
            )?;
            secret_names(&format!("knowledge[{i}].secrets"), &source.secrets)?;
        }

        items("tools", &self.tools, MAX_ITEMS)?;
        let mut tools = BTreeSet::new();
        for (i, tool) in self.tools.iter().enumerate() {
            if !is_slug(&tool.name) {
                return Err(invalid(
                    format!("tools[{i}].name"),
                    format!("{:?} must match [a-z0-9-_]{{1,64}}", tool.name),
                ));
            }
            if !tools.insert(tool.name.as_str()) {
                return Err(invalid(
                    format!("tools[{i}].name"),
                    format!("{:?} is declared twice", tool.name),
                ));
            }
            text(
                &format!("tools[{i}].description"),
                &tool.description,
                MAX_TEXT,
                false,
            )?;
            let endpoint = tool.endpoint.as_deref().unwrap_or("");
            text(&format!("tools[{i}].endpoint"), endpoint, MAX_TEXT, false)?;
            secret_names(&format!("tools[{i}].secrets"), &tool.secrets)?;
        }

        items("conversation_flows", &self.conversation_flows, MAX_FLOWS)?;
        let mut flow_ids = BTreeSet::new();
        for (i, flow) in self.conversation_flows.iter().enumerate() {
            let at = format!("conversation_flows[{i}]");
            if !is_slug(&flow.id) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!("{:?} must match [a-z0-9-_]{{1,64}}", flow.id),
                ));
            }
            if !flow_ids.insert(flow.id.as_str()) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!("{:?} is used by another flow", flow.id),
                ));
            }
            text(&format!("{at}.name"), &flow.name, MAX_NAME, true)?;
            if let Some(kind) = flow.channel.filter(|k| !kinds.contains(k)) {
                return Err(invalid(
                    format!("{at}.channel"),
                    format!("{} is not among the blueprint's channels", kind.as_str()),
                ));
            }
            self.check_trigger(&format!("{at}.trigger"), &flow.trigger)?;
            if flow.steps.is_empty() {
                return Err(invalid(format!("{at}.steps"), "needs at least one step"));
            }
            items(&format!("{at}.steps"), &flow.steps, MAX_STEPS)?;
            for (j, step) in flow.steps.iter().enumerate() {
                let at = format!("{at}.steps[{j}]");
                match step {
                    Step::Say { text: t } => text(&format!("{at}.text"), t, MAX_TEXT, true)?,
                    Step::Ask { text: t, save_as } => {
                        text(&format!("{at}.text"), t, MAX_TEXT, true)?;
                        if let Some(key) = save_as.as_deref().filter(|k| !is_slug(k)) {
                            return Err(invalid(
                                format!("{at}.save_as"),
                                format!("{key:?} must match [a-z0-9-_]{{1,64}}"),
                            ));
                        }
                    }
                    Step::Llm { prompt } => text(&format!("{at}.prompt"), prompt, MAX_TEXT, true)?,
                    Step::Tool { tool, input } => {
                        if !tools.contains(tool.as_str()) {
                            return Err(invalid(
                                format!("{at}.tool"),
                                format!("no tool named {tool:?}"),
                            ));
                        }
                        let input = input.as_deref().unwrap_or("");
                        text(&format!("{at}.input"), input, MAX_TEXT, false)?;
                    }
                    Step::Handoff { text: t } => text(&format!("{at}.text"), t, MAX_TEXT, false)?,
                    Step::Condition { field, value, .. } => {
                        text(&format!("{at}.field"), field, MAX_NAME, true)?;
                        // It becomes `$json.<field>` in an n8n expression.
                        let path_ok = field.split('.').all(|p| {
                            !p.is_empty()
                                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        });
                        if !path_ok {
                            return Err(invalid(
                                format!("{at}.field"),
                                format!(
                                    "{field:?} must be a field path such as intent or customer.email"
                                ),
                            ));
                        }
                        text(&format!("{at}.value"), value, MAX_TEXT, false)?;
                    }
                }
            }
        }

        items("escalation", &self.escalation, MAX_ITEMS)?;
        for (i, rule) in self.escalation.iter().enumerate() {
            text(
                &format!("escalation[{i}].condition"),
                &rule.condition,
                MAX_TEXT,
                true,
            )?;
            if let Some(contact) = &rule.contact {
                let path = format!("escalation[{i}].contact.address");
                text(&path, &contact.address, MAX_NAME, true)?;
            }
        }

        items("kpis", &self.kpis, MAX_ITEMS)?;
        for (i, kpi) in self.kpis.iter().enumerate() {
            text(&format!("kpis[{i}].name"), &kpi.name, MAX_NAME, true)?;
            text(&format!("kpis[{i}].unit"), &kpi.unit, MAX_NAME, false)?;
            if !kpi.target.is_finite() {
                return Err(invalid(
                    format!("kpis[{i}].target"),
                    "must be a finite number",
                ));
            }
        }
        Ok(())
    }

    fn check_trigger(&self, at: &str, trigger: &Trigger) -> Result<(), BlueprintError> {
        match trigger {
            Trigger::Message => Ok(()),
            Trigger::Keyword { keywords } => {
                if keywords.is_empty() {
                    return Err(invalid(
                        format!("{at}.keywords"),
                        "needs at least one keyword",
                    ));
                }
                items(&format!("{at}.keywords"), keywords, MAX_ITEMS)?;
                for (k, word) in keywords.iter().enumerate() {
                    text(&format!("{at}.keywords[{k}]"), word, MAX_NAME, true)?;
                }
                Ok(())
            }
            Trigger::Intent { intent } => text(&format!("{at}.intent"), intent, MAX_NAME, true),
            Trigger::Schedule { cron } => {
                text(&format!("{at}.cron"), cron, MAX_NAME, true)?;
                if cron.split_whitespace().count() != 5 {
                    return Err(invalid(
                        format!("{at}.cron"),
                        format!("{cron:?} is not a five-field cron expression"),
                    ));
                }
                Ok(())
            }
            Trigger::Webhook { path } => {
                let ok = path.split('/').all(is_slug);
                if !ok {
                    return Err(invalid(
                        format!("{at}.path"),
                        format!("{path:?} must be slugs separated by /"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Each secret the agent needs, with what needs it (`channel telegram`, `tool crm`, ...).
    pub fn secret_uses(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut add = |name: &str, user: String| {
            uses.entry(name.to_owned()).or_default().insert(user);
        };
        for channel in &self.channels {
            for name in channel.kind.secrets() {
                add(name, format!("channel {}", channel.kind.as_str()));
            }
        }
        for source in &self.knowledge {
            for name in &source.secrets {
                add(name, format!("knowledge {}", source.name));
            }
        }
        for tool in &self.tools {
            for name in &tool.secrets {
                add(name, format!("tool {}", tool.name));
            }
        }
        for flow in &self.conversation_flows {
            if flow.steps.iter().any(|s| matches!(s, Step::Llm { .. })) {
                add(LLM_SECRET, format!("flow {} (llm steps)", flow.id));
            }
        }
        uses
    }

    /// Every secret the agent needs, by name.
    pub fn required_secrets(&self) -> BTreeSet<String> {
        self.secret_uses().into_keys().collect()
    }

    /// A starting blueprint for an order that has none yet.
    pub fn base_for(product: ProductType, name: &str) -> AgentBlueprint {
        let flow = |id: &str, name: &str, trigger, channel, steps| ConversationFlow {
            id: id.into(),
            name: name.into(),
            trigger,
            channel,
            steps,
        };
        let say = |t: &str| Step::Say { text: t.into() };
        let llm = |p: &str| Step::Llm { prompt: p.into() };
        let answer = llm(
            "Responde a la consulta del cliente con la información disponible. Si no la sabes, dilo y ofrece pasar la conversación a una persona.",
        );
        let greeting = format!("¡Hola! Soy {name}. ¿En qué puedo ayudarte?");
        let handoff = |channel| EscalationRule {
            condition: "El cliente pide hablar con una persona o la consulta no se puede resolver"
                .into(),
            action: EscalationAction::HandoffHuman,
            contact: Some(Contact {
                channel,
                address: "equipo de atención".into(),
            }),
        };
        let kpi = |n: &str, target, unit: &str| Kpi {
            name: n.into(),
            target,
            unit: unit.into(),
        };
        let chat = |kind| Channel { kind, handle: None };

        let (role, channels, tools, flows, escalation, kpis) = match product {
            ProductType::WhatsappAutopilot => (
                "Asistente de atención por WhatsApp",
                vec![chat(ChannelKind::Whatsapp)],
                vec![],
                vec![flow(
                    "atencion",
                    "Atención de mensajes",
                    Trigger::Message,
                    Some(ChannelKind::Whatsapp),
                    vec![answer],
                )],
                vec![handoff(ChannelKind::Whatsapp)],
                vec![
                    kpi("Consultas resueltas sin intervención", 70.0, "%"),
                    kpi("Tiempo de primera respuesta", 30.0, "s"),
                ],
            ),
            ProductType::SocialAutopilot => (
                "Gestor de redes sociales",
                vec![
                    chat(ChannelKind::Instagram),
                    chat(ChannelKind::Facebook),
                    chat(ChannelKind::Linkedin),
                ],
                vec![Tool {
                    name: "ayrshare".into(),
                    kind: ToolKind::Ayrshare,
                    description: "Publica en las redes conectadas".into(),
                    endpoint: Some("https://api.ayrshare.com/api".into()),
                    secrets: vec!["AYRSHARE_API_KEY".into()],
                }],
                vec![flow(
                    "publicacion-semanal",
                    "Publicación semanal",
                    Trigger::Schedule {
                        cron: "0 9 * * 1".into(),
                    },
                    None,
                    vec![
                        llm(
                            "Escribe una publicación breve para esta semana, con el tono de la marca y una llamada a la acción.",
                        ),
                        Step::Tool {
                            tool: "ayrshare".into(),
                            input: None,
                        },
                    ],
                )],
                vec![],
                vec![
                    kpi("Publicaciones por semana", 3.0, "posts"),
                    kpi("Tasa de interacción", 3.0, "%"),
                ],
            ),
            ProductType::TelegramBot => (
                "Asistente en Telegram",
                vec![chat(ChannelKind::Telegram)],
                vec![],
                vec![
                    flow(
                        "inicio",
                        "Bienvenida",
                        Trigger::Keyword {
                            keywords: vec!["/start".into()],
                        },
                        Some(ChannelKind::Telegram),
                        vec![say(&greeting)],
                    ),
                    flow(
                        "consulta",
                        "Consultas",
                        Trigger::Message,
                        Some(ChannelKind::Telegram),
                        vec![answer],
                    ),
                ],
                vec![handoff(ChannelKind::Telegram)],
                vec![kpi("Consultas resueltas sin intervención", 70.0, "%")],
            ),
            ProductType::WebChatbot => (
                "Asistente de la web",
                vec![chat(ChannelKind::WebWidget)],
                vec![],
                vec![flow(
                    "chat",
                    "Chat de la web",
                    Trigger::Message,
                    Some(ChannelKind::WebWidget),
                    vec![answer],
                )],
                vec![handoff(ChannelKind::Email)],
                vec![kpi("Conversaciones que acaban en contacto", 10.0, "%")],
            ),
            ProductType::CustomAgent => (
                "Agente a medida",
                vec![],
                vec![],
                vec![flow(
                    "entrada",
                    "Entrada",
                    Trigger::Webhook {
                        path: "entrada".into(),
                    },
                    None,
                    vec![answer],
                )],
                vec![],
                vec![],
            ),
        };
        AgentBlueprint {
            identity: Identity {
                name: name.into(),
                role: role.into(),
                persona: format!(
                    "{name} atiende a los clientes con claridad y amabilidad, sin inventar datos."
                ),
                tone: "cercano y profesional".into(),
                language: default_language(),
                greeting,
            },
            goals: vec!["Resolver las consultas habituales de los clientes".into()],
            channels,
            knowledge: vec![],
            tools,
            conversation_flows: flows,
            escalation,
            kpis,
        }
    }
}

/// The key llm steps use: an OpenAI-compatible API (the Axon gateway's key works with its URL).
pub const LLM_SECRET: &str = "OPENAI_API_KEY";

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> AgentBlueprint {
        serde_json::from_str(r#"{"identity":{"name":"Ana"}}"#).expect("minimal blueprint")
    }

    fn refusal(mut edit: impl FnMut(&mut AgentBlueprint)) -> String {
        let mut bp = AgentBlueprint::base_for(ProductType::SocialAutopilot, "Ana");
        edit(&mut bp);
        bp.check().expect_err("must be refused").to_string()
    }

    #[test]
    fn minimal_blueprint_and_every_base_pass() {
        let bp = minimal();
        assert_eq!(bp.identity.language, "es");
        bp.check().expect("minimal");
        for p in ProductType::ALL {
            let checked = AgentBlueprint::base_for(p, "Ana").check();
            assert_eq!(checked, Ok(()), "{p}");
            assert_eq!(p.as_str().parse::<ProductType>(), Ok(p));
            assert_eq!(serde_json::to_value(p).expect("json"), p.as_str());
        }
        let err = "robot"
            .parse::<ProductType>()
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("telegram_bot, web_chatbot"), "{err}");
    }

    #[test]
    fn check_refusals_name_the_field() {
        let err = refusal(|bp| {
            bp.conversation_flows[0].steps[1] = Step::Tool {
                tool: "crm".into(),
                input: None,
            }
        });
        assert_eq!(
            err,
            r#"conversation_flows[0].steps[1].tool: no tool named "crm""#
        );
        let err = refusal(|bp| {
            let again = bp.conversation_flows[0].clone();
            bp.conversation_flows.push(again);
        });
        assert!(err.starts_with("conversation_flows[1].id: "), "{err}");
        let err = refusal(|bp| bp.tools[0].secrets.push("api-key".into()));
        assert!(err.starts_with("tools[0].secrets[1]: "), "{err}");
        let err = refusal(|bp| bp.identity.name = "x".repeat(121));
        assert_eq!(err, "identity.name: is longer than 120 characters");
        let err = refusal(|bp| bp.conversation_flows[0].id = "Semana 1".into());
        assert!(err.starts_with("conversation_flows[0].id: "), "{err}");
        let err = refusal(|bp| bp.tools[0].description = "clave AYRSHARE_API_KEY=abc123".into());
        assert!(
            err.starts_with("tools[0].description: looks like a secret"),
            "{err}"
        );
        let err =
            refusal(|bp| bp.tools[0].endpoint = Some("https://u:p4ss@api.example.com".into()));
        assert!(err.starts_with("tools[0].endpoint: "), "{err}");
        let err = refusal(|bp| bp.conversation_flows[0].channel = Some(ChannelKind::Telegram));
        assert!(err.starts_with("conversation_flows[0].channel: "), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let extra = r#"{"identity":{"name":"Ana","nickname":"A"}}"#;
        let err = serde_json::from_str::<AgentBlueprint>(extra).expect_err("unknown field");
        assert!(err.to_string().contains("nickname"), "{err}");
        let step = r#"{"identity":{"name":"Ana"},"conversation_flows":[{"id":"a","name":"A",
            "trigger":{"kind":"message"},"steps":[{"kind":"say","text":"hola","tool":"x"}]}]}"#;
        assert!(serde_json::from_str::<AgentBlueprint>(step).is_err());
    }

    #[test]
    fn required_secrets_come_from_channels_tools_and_llm_steps() {
        let bp = AgentBlueprint::base_for(ProductType::TelegramBot, "Ana");
        let want = ["OPENAI_API_KEY", "TELEGRAM_BOT_TOKEN"].map(String::from);
        assert_eq!(bp.required_secrets(), BTreeSet::from(want));
        let social = AgentBlueprint::base_for(ProductType::SocialAutopilot, "Ana");
        assert!(social.required_secrets().contains("AYRSHARE_API_KEY"));
    }

    #[test]
    fn secret_shapes() {
        assert!(is_secret_name("WHATSAPP_ACCESS_TOKEN"));
        assert!(!is_secret_name("_X") && !is_secret_name("lower") && !is_secret_name(""));
        assert_eq!(secret_assignment("usa API_KEY=sk-1 aquí"), Some("API_KEY"));
        assert_eq!(secret_assignment("API_KEY= vacío; x=1; aA_KEY=2"), None);
        assert!(url_password("postgres://admin:hunter2@db/kb"));
        assert!(!url_password("https://example.com/a@b"));
    }

    #[test]
    fn schema_describes_the_blueprint() {
        let schema = schema();
        assert_eq!(schema["title"], "AgentBlueprint");
        assert_eq!(schema["required"], serde_json::json!(["identity"]));
    }
}
