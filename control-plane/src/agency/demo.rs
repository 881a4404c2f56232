//! Demo data: three client organisations with a client user each, a small catalog, and
//! orders across the states — among them one ready order per deploy channel — so the console,
//! the portal and the deploys can be tried at once.
//!
//! Every record made here carries a stable `demo_tag`. Seeding looks records up by their tag,
//! so a second run changes nothing; it never touches a record without a tag, and removal
//! deletes exactly the tagged records (a demo tenant that has gained real orders is kept).

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::blueprint::{AgentBlueprint, ProductType};
use super::book::{Book, new_order};
use super::catalog::CatalogItem;
use super::orders::{Action, Estado, Order, QaStatus, StateChange};
use super::plan::ProductionPlan;
use crate::identity::auth::{end_user_sessions, generate_password, hash_password, new_id};
use crate::model::{Role, Store, Tenant, User, now};
use crate::store::StoreError;

/// Every demo tag starts with this.
pub const PREFIX: &str = "demo:";

/// Seeding or removing failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a password could not be hashed")]
    Hash,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct DemoReport {
    pub created: Vec<String>,
    /// Already there from an earlier run.
    pub unchanged: Vec<String>,
    /// Left alone: a record without a demo tag holds the name, or a demo tenant has records
    /// the seeder did not make.
    pub skipped: Vec<String>,
    pub removed: Vec<String>,
    /// Sign-in details of client users made by this run (shown once).
    pub credentials: Vec<DemoLogin>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DemoLogin {
    pub tenant: String,
    pub portal: String,
    pub email: String,
    pub password: String,
}

struct DemoTenant {
    slug: &'static str,
    name: &'static str,
    welcome: &'static str,
    color: &'static str,
    client_name: &'static str,
    orders: [DemoOrder; 3],
}

struct DemoOrder {
    product: ProductType,
    title: &'static str,
    brief: &'static str,
    estado: Estado,
    metadata: fn() -> Value,
}

fn no_metadata() -> Value {
    json!({})
}

fn tenants() -> [DemoTenant; 3] {
    [
        DemoTenant {
            slug: "algorithmics-academy",
            name: "Algorithmics Academy",
            welcome: "¡Hola, equipo de Algorithmics! Aquí seguís vuestros agentes.",
            color: "#4f46e5",
            client_name: "Laura Méndez",
            orders: [
                DemoOrder {
                    product: ProductType::SocialAutopilot,
                    title: "Autopiloto de Instagram y LinkedIn para la campaña de matrícula",
                    brief: "Queremos publicar tres veces por semana contenidos sobre nuestros cursos de programación para niños de 7 a 17 años, con el tono cercano de la academia, y responder a los comentarios más habituales sobre precios y horarios.",
                    estado: Estado::Listo,
                    metadata: || {
                        json!({
                            "platforms": ["instagram", "linkedin", "facebook"],
                            "text": "¡Abrimos matrícula! Programación y robótica para niños de 7 a 17 años. Primera clase gratis 🚀",
                            "media_urls": ["https://cdn.algorithmics.example/matricula-2027.jpg"]
                        })
                    },
                },
                DemoOrder {
                    product: ProductType::WebChatbot,
                    title: "Asistente web para familias",
                    brief: "Un chat en la web que explique los cursos por edades, reserve la clase de prueba y pase a una persona cuando la familia lo pida.",
                    estado: Estado::EnProduccion,
                    metadata: no_metadata,
                },
                DemoOrder {
                    product: ProductType::CustomAgent,
                    title: "Agente de seguimiento de alumnos",
                    brief: "Un agente interno que resuma cada semana el progreso de los alumnos a partir de las hojas de los profesores.",
                    estado: Estado::Nuevo,
                    metadata: no_metadata,
                },
            ],
        },
        DemoTenant {
            slug: "notaria-17",
            name: "Notaría 17",
            welcome: "Bienvenidos a su portal, Notaría 17. Consulte aquí el estado de sus asistentes.",
            color: "#0f766e",
            client_name: "Javier Ortega",
            orders: [
                DemoOrder {
                    product: ProductType::TelegramBot,
                    title: "Bot de Telegram para citas y documentación",
                    brief: "Un bot que informe de la documentación necesaria para cada trámite (compraventas, herencias, poderes), dé cita y recuerde la cita el día anterior.",
                    estado: Estado::Listo,
                    metadata: || {
                        json!({
                            "telegram_chat_id": "-1001234567890",
                            "text": "Ya puede pedir cita y consultar la documentación de su trámite en nuestro asistente de Telegram."
                        })
                    },
                },
                DemoOrder {
                    product: ProductType::WhatsappAutopilot,
                    title: "Avisos por WhatsApp del estado de las escrituras",
                    brief: "Avisar a los clientes por WhatsApp cuando su escritura esté lista para firmar o para recoger.",
                    estado: Estado::EnQa,
                    metadata: no_metadata,
                },
                DemoOrder {
                    product: ProductType::WebChatbot,
                    title: "Preguntas frecuentes en la web",
                    brief: "Responder en la web a las preguntas frecuentes sobre aranceles y plazos.",
                    estado: Estado::Entregado,
                    metadata: no_metadata,
                },
            ],
        },
        DemoTenant {
            slug: "beesmart-delivery",
            name: "BeeSmart Delivery",
            welcome: "¡Hola, BeeSmart! Todo lo que vuestros agentes hacen por vuestros repartos.",
            color: "#ca8a04",
            client_name: "Marta Ruiz",
            orders: [
                DemoOrder {
                    product: ProductType::WhatsappAutopilot,
                    title: "Autopiloto de WhatsApp para pedidos y seguimiento",
                    brief: "Los clientes piden y preguntan por su pedido por WhatsApp; el agente toma el pedido, da el estado del reparto y avisa de retrasos.",
                    estado: Estado::Listo,
                    metadata: || {
                        json!({
                            "whatsapp_number": "+34600000000",
                            "text": "¡Hola! Soy Abeja, el asistente de BeeSmart. ¿Quieres hacer un pedido o saber dónde está el tuyo?"
                        })
                    },
                },
                DemoOrder {
                    product: ProductType::TelegramBot,
                    title: "Bot interno de incidencias para repartidores",
                    brief: "Los repartidores informan incidencias (dirección errónea, cliente ausente) y el bot las registra y avisa al coordinador.",
                    estado: Estado::Nuevo,
                    metadata: no_metadata,
                },
                DemoOrder {
                    product: ProductType::SocialAutopilot,
                    title: "Publicaciones de ofertas de temporada",
                    brief: "Publicar ofertas semanales en Instagram y Facebook.",
                    estado: Estado::Cancelado,
                    metadata: no_metadata,
                },
            ],
        },
    ]
}

/// The catalog products: (tag suffix, name, description, product, price in cents).
const PRODUCTS: [(&str, &str, &str, ProductType, u64); 4] = [
    (
        "whatsapp",
        "Autopiloto de WhatsApp",
        "Un agente que atiende a tus clientes por WhatsApp las 24 horas: responde dudas, toma pedidos y pasa a una persona cuando hace falta.",
        ProductType::WhatsappAutopilot,
        149_000,
    ),
    (
        "social",
        "Autopiloto de redes sociales",
        "Publica por ti en Instagram, Facebook y LinkedIn con el tono de tu marca, y responde a los comentarios habituales.",
        ProductType::SocialAutopilot,
        99_000,
    ),
    (
        "telegram",
        "Bot de Telegram",
        "Un bot que informa, da citas y envía recordatorios a tus clientes por Telegram.",
        ProductType::TelegramBot,
        79_000,
    ),
    (
        "web",
        "Chatbot para tu web",
        "Un asistente en tu página que responde preguntas frecuentes y convierte visitas en clientes.",
        ProductType::WebChatbot,
        59_000,
    ),
];

fn sample_plan(product: ProductType) -> Option<ProductionPlan> {
    let channel = match product {
        ProductType::WhatsappAutopilot => "WhatsApp Business (n8n)",
        ProductType::SocialAutopilot => "Ayrshare",
        ProductType::TelegramBot => "Telegram Bot API",
        ProductType::WebChatbot => "Widget web",
        ProductType::CustomAgent => "Hojas de cálculo",
    };
    serde_json::from_value(json!({
        "summary": "Diseño de la conversación, construcción de los flujos, pruebas con casos reales y puesta en marcha.",
        "phases": [
            {"name": "Descubrimiento", "goal": "Conocer el negocio y sus preguntas", "tasks": [
                {"title": "Reunión con el cliente", "owner": "account_manager", "estimate_hours": 2.0},
                {"title": "Recopilar preguntas frecuentes", "owner": "prompt_engineer", "estimate_hours": 4.0}
            ]},
            {"name": "Construcción", "goal": "Flujos y prompts", "tasks": [
                {"title": "Prompts y personalidad", "owner": "prompt_engineer", "estimate_hours": 6.0},
                {"title": "Flujos de n8n", "owner": "developer", "estimate_hours": 10.0}
            ]},
            {"name": "Pruebas", "tasks": [
                {"title": "Pruebas con 30 conversaciones reales", "owner": "qa", "estimate_hours": 6.0}
            ]}
        ],
        "integrations": [{"name": channel, "purpose": "Canal con los clientes"}],
        "risks": [{"description": "Preguntas fuera del ámbito del negocio", "severity": "medium", "mitigation": "Escalado a una persona"}],
        "estimate": {"total_hours": 28.0, "delivery_days": 10, "cost": {"amount": 1400.0, "currency": "EUR"}}
    }))
    .ok()
}

/// The path of states from `nuevo` to `target`, with the action taking each step.
fn path_to(target: Estado) -> Vec<(Action, Estado)> {
    use Estado::*;
    let forward = [
        (Action::ApprovePlan, EnProduccion),
        (Action::SubmitQa, EnQa),
        (Action::QaPass, Listo),
        (Action::Deliver, Entregado),
    ];
    match target {
        Nuevo => vec![],
        Cancelado => vec![(Action::Cancel, Cancelado)],
        _ => {
            let end = forward.iter().position(|(_, e)| *e == target).unwrap_or(0);
            forward[..=end].to_vec()
        }
    }
}

fn demo_order(
    tag: String,
    tenant_id: &str,
    client_id: &str,
    staff: &str,
    item: Option<&CatalogItem>,
    d: &DemoOrder,
    start: OffsetDateTime,
) -> Order {
    let blueprint = item.map_or_else(
        || AgentBlueprint::base_for(d.product, d.title),
        |c| c.base_blueprint.clone(),
    );
    let mut o = new_order(
        new_id(),
        Some(tenant_id.to_owned()),
        client_id,
        d.product,
        item.map(|c| c.id.clone()),
        d.title,
        d.brief,
        blueprint,
    );
    o.demo_tag = Some(tag);
    o.created_at = start;
    o.state_history[0].at = start;
    if let Value::Object(m) = (d.metadata)() {
        o.deliverable_metadata = m;
    }
    let steps = path_to(d.estado);
    if steps.iter().any(|(a, _)| *a == Action::ApprovePlan)
        && let Some(plan) = sample_plan(d.product)
    {
        o.production_plan
            .push(plan, "staff", None, staff, start + time::Duration::hours(2));
        o.production_plan.approved_version = Some(1);
        o.production_plan.approved_by = Some(staff.to_owned());
    }
    let mut at = start;
    for (i, (action, to)) in steps.into_iter().enumerate() {
        at += time::Duration::hours(20 + 7 * i as i64);
        o.state_history.push(StateChange {
            action: Some(action),
            from: Some(o.estado),
            to,
            by: staff.to_owned(),
            at,
            reason: None,
        });
        o.estado = to;
        o.qa_status = match action {
            Action::QaPass => QaStatus::Ok,
            Action::SubmitQa => QaStatus::Pendiente,
            _ => o.qa_status,
        };
    }
    o.updated_at = at;
    o
}

fn find_tenant(store: &Store, tag: &str) -> Result<Option<Tenant>, StoreError> {
    Ok(store
        .tenants
        .values()?
        .into_iter()
        .find(|t| t.demo_tag.as_deref() == Some(tag)))
}

/// Creates whatever demo records are missing. `staff` names who the demo history says
/// planned and approved the orders.
pub fn seed(store: &Store, book: &Book, staff: &str) -> Result<DemoReport, DemoError> {
    let mut report = DemoReport::default();
    let stamp = now();

    // The catalog.
    let existing: HashMap<String, CatalogItem> = book
        .catalog
        .values()?
        .into_iter()
        .filter_map(|c| c.demo_tag.clone().map(|t| (t, c)))
        .collect();
    let mut products: HashMap<ProductType, CatalogItem> = HashMap::new();
    for (suffix, name, description, product, price) in PRODUCTS {
        let tag = format!("{PREFIX}catalog:{suffix}");
        if let Some(item) = existing.get(&tag) {
            report.unchanged.push(tag);
            products.insert(product, item.clone());
            continue;
        }
        let item = CatalogItem {
            id: new_id(),
            name: name.into(),
            description: description.into(),
            product_type: product,
            base_blueprint: AgentBlueprint::base_for(product, name),
            price_cents: price,
            currency: "EUR".into(),
            tenants: None,
            active: true,
            demo_tag: Some(tag.clone()),
            created_at: stamp,
            updated_at: stamp,
        };
        book.catalog.put(&item.id, &item)?;
        products.insert(product, item);
        report.created.push(tag);
    }

    let demo_orders: HashMap<String, Order> = book
        .orders
        .values()?
        .into_iter()
        .filter_map(|o| o.demo_tag.clone().map(|t| (t, o)))
        .collect();
    for (n, t) in tenants().iter().enumerate() {
        let tag = format!("{PREFIX}tenant:{}", t.slug);
        let tenant = match find_tenant(store, &tag)? {
            Some(tenant) => {
                report.unchanged.push(tag.clone());
                tenant
            }
            None => {
                let mut settings = Map::new();
                settings.insert("welcome".into(), json!(t.welcome));
                settings.insert(
                    "branding".into(),
                    json!({"display_name": t.name, "primary_color": t.color}),
                );
                settings.insert("language".into(), json!("es"));
                let tenant = Tenant {
                    id: new_id(),
                    slug: t.slug.into(),
                    name: t.name.into(),
                    settings,
                    llm_limits: None,
                    demo_tag: Some(tag.clone()),
                    created_at: stamp,
                    updated_at: stamp,
                };
                if !store.tenant_slugs.insert_new(&tenant.slug, &tenant.id)? {
                    report.skipped.push(format!(
                        "{tag}: the slug {} belongs to another tenant",
                        t.slug
                    ));
                    continue;
                }
                store.tenants.put(&tenant.id, &tenant)?;
                report.created.push(tag.clone());
                tenant
            }
        };

        // Its client user.
        let user_tag = format!("{PREFIX}user:{}", t.slug);
        let email = format!("cliente@{}.demo", t.slug);
        let client_id = match store
            .users
            .values()?
            .into_iter()
            .find(|u| u.demo_tag.as_deref() == Some(&user_tag))
        {
            Some(u) => {
                report.unchanged.push(user_tag);
                u.id
            }
            None => {
                let password = generate_password();
                let user = User {
                    id: new_id(),
                    email: email.clone(),
                    name: t.client_name.into(),
                    password_hash: hash_password(&password).map_err(|_| DemoError::Hash)?,
                    role: Role::Client,
                    tenant_id: Some(tenant.id.clone()),
                    disabled: false,
                    demo_tag: Some(user_tag.clone()),
                    created_at: stamp,
                    updated_at: stamp,
                };
                if !store.user_emails.insert_new(&email, &user.id)? {
                    report.skipped.push(format!(
                        "{user_tag}: the email {email} belongs to another user"
                    ));
                    String::new()
                } else {
                    store.users.put(&user.id, &user)?;
                    report.created.push(user_tag);
                    report.credentials.push(DemoLogin {
                        tenant: t.name.into(),
                        portal: format!("/portal/{}", t.slug),
                        email,
                        password,
                    });
                    user.id
                }
            }
        };

        // Its orders, spread over the last weeks.
        for (i, d) in t.orders.iter().enumerate() {
            let tag = format!("{PREFIX}order:{}:{}", t.slug, i + 1);
            if demo_orders.contains_key(&tag) {
                report.unchanged.push(tag);
                continue;
            }
            let start = stamp - time::Duration::days(30 - 9 * i as i64 - 2 * n as i64);
            let by = if client_id.is_empty() {
                staff
            } else {
                &client_id
            };
            let order = demo_order(
                tag.clone(),
                &tenant.id,
                by,
                staff,
                products.get(&d.product),
                d,
                start,
            );
            book.orders.insert_new(&order.id, &order)?;
            report.created.push(tag);
        }
    }
    store.db.flush_blocking()?;
    Ok(report)
}

/// Removes every record with a demo tag.
pub fn remove(store: &Store, book: &Book) -> Result<DemoReport, DemoError> {
    let mut report = DemoReport::default();
    for o in book.orders.values()? {
        if let Some(tag) = o.demo_tag.as_deref().filter(|t| t.starts_with(PREFIX)) {
            book.orders.take(&o.id)?;
            report.removed.push(tag.to_owned());
        }
    }
    for c in book.catalog.values()? {
        if let Some(tag) = c.demo_tag.as_deref().filter(|t| t.starts_with(PREFIX)) {
            book.catalog.take(&c.id)?;
            report.removed.push(tag.to_owned());
        }
    }
    let remaining = book.orders.values()?;
    let users = store.users.values()?;
    let keys = store.api_keys.values()?;
    for t in store.tenants.values()? {
        let Some(tag) = t.demo_tag.as_deref().filter(|t| t.starts_with(PREFIX)) else {
            continue;
        };
        let real_orders = remaining
            .iter()
            .filter(|o| o.tenant_id.as_deref() == Some(t.id.as_str()))
            .count();
        let real_users = users
            .iter()
            .filter(|u| u.tenant_id.as_deref() == Some(t.id.as_str()) && u.demo_tag.is_none())
            .count();
        let keys = keys
            .iter()
            .filter(|k| k.tenant_id.as_deref() == Some(t.id.as_str()))
            .count();
        if real_orders + real_users + keys > 0 {
            report.skipped.push(format!(
                "{tag}: kept, it has {real_orders} order(s), {real_users} user(s) and {keys} API key(s) the seeder did not make"
            ));
            continue;
        }
        for u in users
            .iter()
            .filter(|u| u.tenant_id.as_deref() == Some(t.id.as_str()))
        {
            if let Some(utag) = &u.demo_tag {
                end_user_sessions(store, &u.id)?;
                store.users.take(&u.id)?;
                store.user_emails.take(&u.email)?;
                report.removed.push(utag.clone());
            }
        }
        store.tenant_slugs.take(&t.slug)?;
        store.tenants.take(&t.id)?;
        report.removed.push(tag.to_owned());
    }
    store.db.flush_blocking()?;
    Ok(report)
}
