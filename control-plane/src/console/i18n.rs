//! The web front's words, in message catalogs (Spanish first, English), never in templates.

/// A language of the web front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Es,
    En,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::Es, Lang::En];

    pub fn code(self) -> &'static str {
        match self {
            Self::Es => "es",
            Self::En => "en",
        }
    }

    /// `?lang=` first, then the browser's `Accept-Language` (the first of es / en it names),
    /// then Spanish.
    pub fn pick(query: Option<&str>, accept_language: Option<&str>) -> Self {
        let parse = |s: &str| {
            let primary = s.trim().split([';', '-', '_']).next().unwrap_or("");
            match primary.to_ascii_lowercase().as_str() {
                "es" => Some(Self::Es),
                "en" => Some(Self::En),
                _ => None,
            }
        };
        if let Some(lang) = query.and_then(parse) {
            return lang;
        }
        accept_language
            .into_iter()
            .flat_map(|h| h.split(','))
            .find_map(parse)
            .unwrap_or(Self::Es)
    }

    /// The message `key` in this language.
    pub fn t(self, key: &str) -> &'static str {
        match CATALOG.iter().find(|(k, _, _)| *k == key) {
            Some((_, es, en)) => match self {
                Self::Es => es,
                Self::En => en,
            },
            None => {
                debug_assert!(false, "no message {key}");
                ""
            }
        }
    }
}

/// key, Spanish, English.
/// The `js.` messages as a JSON object, for the console's script (written into the page in a
/// `<script type="application/json">`, so `</` is escaped). Built once per language.
pub fn script_words(lang: Lang) -> &'static str {
    static WORDS: std::sync::LazyLock<[String; 2]> =
        std::sync::LazyLock::new(|| Lang::ALL.map(words_of));
    &WORDS[usize::from(lang == Lang::En)]
}

fn words_of(lang: Lang) -> String {
    let words: serde_json::Map<String, serde_json::Value> = CATALOG
        .iter()
        .filter(|(k, _, _)| k.starts_with("js."))
        .map(|(k, es, en)| {
            let text = match lang {
                Lang::Es => es,
                Lang::En => en,
            };
            ((*k).to_owned(), serde_json::Value::from(*text))
        })
        .collect();
    serde_json::Value::Object(words)
        .to_string()
        .replace("</", "<\\/")
}

const CATALOG: &[(&str, &str, &str)] = &[
    (
        "site.title",
        "Axon — agentes de IA para tu negocio",
        "Axon — AI agents for your business",
    ),
    ("site.skip", "Saltar al contenido", "Skip to content"),
    ("site.lang", "Idioma", "Language"),
    (
        "site.hero.title",
        "Agentes de IA que atienden, venden y publican por ti",
        "AI agents that answer, sell and post for you",
    ),
    (
        "site.hero.lead",
        "Diseñamos, construimos y operamos agentes para WhatsApp, redes sociales, Telegram y tu web, en nuestra propia infraestructura. Tú ves cada pedido, cada entrega y cada resultado en tu portal.",
        "We design, build and run agents for WhatsApp, social networks, Telegram and your website, on our own infrastructure. You follow every order, delivery and result in your portal.",
    ),
    (
        "site.hero.whatsapp",
        "Escríbenos por WhatsApp",
        "Message us on WhatsApp",
    ),
    ("site.features.title", "Lo que hacemos", "What we do"),
    (
        "site.f1.title",
        "Autopiloto de WhatsApp",
        "WhatsApp autopilot",
    ),
    (
        "site.f1.text",
        "Responde a tus clientes a cualquier hora, toma pedidos y pasa a una persona cuando hace falta.",
        "Answers your customers at any hour, takes orders and hands over to a person when needed.",
    ),
    (
        "site.f2.title",
        "Redes sociales en marcha",
        "Social media on autopilot",
    ),
    (
        "site.f2.text",
        "Publica en Instagram, LinkedIn, Facebook y más con el tono de tu marca, en el momento justo.",
        "Posts to Instagram, LinkedIn, Facebook and more in your brand's voice, at the right time.",
    ),
    ("site.f3.title", "Bots de Telegram", "Telegram bots"),
    (
        "site.f3.text",
        "Citas, avisos y consultas frecuentes resueltas en el canal que ya usan tus clientes.",
        "Appointments, reminders and common questions handled in the channel your customers already use.",
    ),
    (
        "site.f4.title",
        "Asistente para tu web",
        "Website assistant",
    ),
    (
        "site.f4.text",
        "Un chat que conoce tus productos, reserva y deriva con criterio.",
        "A chat that knows your products, books and escalates sensibly.",
    ),
    (
        "site.f5.title",
        "Infraestructura propia",
        "Our own infrastructure",
    ),
    (
        "site.f5.text",
        "Modelos en nuestras GPU y en los mejores proveedores, con tus datos bajo control y costes a la vista.",
        "Models on our GPUs and the best providers, with your data under control and costs in plain view.",
    ),
    (
        "site.f6.title",
        "Tu portal de cliente",
        "Your client portal",
    ),
    (
        "site.f6.text",
        "Pide nuevos agentes, sigue su producción y mira dónde se ha publicado cada uno.",
        "Order new agents, follow their production and see where each one went live.",
    ),
    (
        "site.footer.rights",
        "Axon. Agentes de IA para negocios.",
        "Axon. AI agents for businesses.",
    ),
    ("site.footer.privacy", "Privacidad", "Privacy"),
    ("site.footer.terms", "Condiciones", "Terms"),
    (
        "site.footer.deletion",
        "Eliminación de datos",
        "Data deletion",
    ),
    ("site.footer.home", "Inicio", "Home"),
    ("app.logout", "Cerrar sesión", "Sign out"),
    ("app.role.admin", "administración", "admin"),
    ("app.role.operator", "operación", "operator"),
    ("app.role.viewer", "consulta", "viewer"),
    ("app.role.client", "cliente", "client"),
    ("app.login.title", "Entrar en Axon", "Sign in to Axon"),
    ("app.login.email", "Correo electrónico", "Email"),
    ("app.login.password", "Contraseña", "Password"),
    ("app.login.submit", "Entrar", "Sign in"),
    (
        "app.login.failed",
        "El correo o la contraseña no son correctos.",
        "The email or password is not right.",
    ),
    (
        "app.login.throttled",
        "Demasiados intentos. Espera un momento y vuelve a probar.",
        "Too many attempts. Wait a moment and try again.",
    ),
    ("app.dash.title", "Consola", "Console"),
    ("app.dash.hello", "Has entrado como", "You are signed in as"),
    ("app.dash.hosts", "Servidores en línea", "Hosts online"),
    ("app.dash.orders", "Pedidos en curso", "Orders in progress"),
    ("app.dash.ready", "Listos para desplegar", "Ready to deploy"),
    (
        "app.dash.next",
        "Las páginas de flota, agencia y portal están en camino; mientras tanto, la API atiende cada tarea:",
        "The fleet, agency and portal pages are on their way; until then the API serves every task:",
    ),
    ("app.nav", "Secciones", "Sections"),
    ("app.nav.overview", "Resumen", "Overview"),
    ("app.nav.fleet", "Flota", "Fleet"),
    ("fleet.title", "Flota", "Fleet"),
    (
        "fleet.caption",
        "Servidores de la flota con su estado y su carga",
        "The fleet's hosts with their state and load",
    ),
    ("fleet.host", "Servidor", "Host"),
    ("fleet.filter.name", "Nombre contiene", "Name contains"),
    (
        "fleet.none_match",
        "Ningún servidor coincide con el filtro.",
        "No host matches the filter.",
    ),
    ("fleet.pages", "Páginas", "Pages"),
    ("fleet.page", "Página", "Page"),
    ("fleet.prev", "Anterior", "Previous"),
    ("fleet.next", "Siguiente", "Next"),
    ("fleet.state", "Estado", "State"),
    ("fleet.memory", "Memoria", "Memory"),
    ("fleet.alerts", "alertas de GPU abiertas", "open GPU alerts"),
    ("fleet.online", "en línea", "online"),
    ("fleet.up", "En línea", "Online"),
    ("fleet.down", "Desconectado", "Offline"),
    ("fleet.none", "sin datos", "no data"),
    (
        "fleet.empty",
        "Aún no hay servidores. Crea un token de alta y ejecuta agentd enroll en el servidor.",
        "No hosts yet. Create an enrollment token and run agentd enroll on the host.",
    ),
    ("site.hero.signin", "Entrar", "Sign in"),
    ("portal.title", "Portal de cliente", "Client portal"),
    ("portal.hello", "Hola,", "Hello,"),
    ("portal.orders", "Tus pedidos", "Your orders"),
    (
        "portal.orders.empty",
        "Aún no tienes pedidos. Elige un agente del catálogo y cuéntanos qué necesitas: te avisaremos en cada paso.",
        "You have no orders yet. Pick an agent from the catalog and tell us what you need: we will keep you posted at every step.",
    ),
    ("portal.steps", "Pasos del pedido", "The order's steps"),
    ("portal.catalog", "Catálogo", "Catalog"),
    (
        "portal.catalog.empty",
        "Ahora mismo no hay agentes disponibles para tu cuenta. Escríbenos y te preparamos una propuesta.",
        "No agents are available for your account right now. Write to us and we will prepare a proposal.",
    ),
    ("portal.hosts", "Tus servidores", "Your servers"),
    ("portal.order.title", "Nombre del pedido", "Order name"),
    (
        "portal.order.brief",
        "Cuéntanos qué necesitas",
        "Tell us what you need",
    ),
    (
        "portal.order.submit",
        "Pedir este agente",
        "Order this agent",
    ),
    (
        "portal.order.done",
        "¡Pedido recibido! Lo verás aquí mientras avanza.",
        "Order received! You will see it here as it moves along.",
    ),
    (
        "portal.order.failed",
        "No hemos podido registrar el pedido. Revisa el nombre (hasta 200 caracteres) y vuelve a intentarlo.",
        "We could not take the order. Check its name (up to 200 characters) and try again.",
    ),
    (
        "portal.missing",
        "Esta página no existe",
        "This page does not exist",
    ),
    (
        "portal.missing.back",
        "Volver a tu cuenta",
        "Back to your account",
    ),
    ("portal.estado.nuevo", "Recibido", "Received"),
    (
        "portal.estado.en_produccion",
        "En preparación",
        "Being built",
    ),
    ("portal.estado.en_qa", "En revisión", "Under review"),
    (
        "portal.estado.listo",
        "Listo para publicar",
        "Ready to go live",
    ),
    ("portal.estado.entregado", "Entregado", "Delivered"),
    ("portal.estado.cancelado", "Cancelado", "Cancelled"),
    ("portal.channel.whatsapp", "WhatsApp", "WhatsApp"),
    ("portal.channel.social", "Redes sociales", "Social networks"),
    ("portal.channel.telegram", "Telegram", "Telegram"),
    ("portal.channel.other", "Otro canal", "Another channel"),
    ("portal.deploy.success", "publicado", "live"),
    ("portal.deploy.pending", "publicándose", "going live"),
    (
        "portal.deploy.trouble",
        "lo estamos revisando",
        "we are looking into it",
    ),
    ("app.nav.orders", "Pedidos", "Orders"),
    ("app.nav.enroll", "Alta de servidores", "Enrollment"),
    ("app.nav.factory", "Fábrica", "Factory"),
    ("app.nav.catalog", "Catálogo", "Catalog"),
    ("app.nav.integrations", "Integraciones", "Integrations"),
    ("app.nav.access", "Acceso", "Access"),
    (
        "manage.shown_once",
        "Se muestra solo ahora: guárdalo en un lugar seguro.",
        "Shown only now: keep it somewhere safe.",
    ),
    ("manage.remove", "Eliminar", "Remove"),
    (
        "manage.confirm",
        "¿Seguro? No se puede deshacer.",
        "Are you sure? This cannot be undone.",
    ),
    ("factory.title", "Fábrica de agentes", "Agent factory"),
    (
        "factory.seed",
        "Cargar datos de demostración",
        "Load demo data",
    ),
    (
        "factory.seeded",
        "Datos de demostración listos",
        "Demo data ready",
    ),
    (
        "factory.credentials",
        "Accesos de los clientes de demostración.",
        "Sign-in details of the demo clients.",
    ),
    ("factory.total", "Pedidos", "Orders"),
    ("factory.deploys", "Despliegues", "Deploys"),
    (
        "factory.empty",
        "Aún no hay pedidos. Carga los datos de demostración o espera al primer pedido de un cliente.",
        "No orders yet. Load the demo data or wait for a client's first order.",
    ),
    ("factory.by_estado", "Pedidos por estado", "Orders by state"),
    (
        "factory.by_product",
        "Pedidos por producto",
        "Orders by product",
    ),
    (
        "factory.by_tenant",
        "Pedidos por cliente",
        "Orders by client",
    ),
    ("factory.no_tenant", "sin cliente", "no client"),
    (
        "factory.throughput",
        "Pedidos por semana: creados, terminados, entregados",
        "Orders per week: created, finished, delivered",
    ),
    ("factory.created", "creados", "created"),
    ("factory.finished", "terminados", "finished"),
    ("factory.delivered", "entregados", "delivered"),
    (
        "factory.time",
        "Tiempo en cada estado",
        "Time in each state",
    ),
    ("factory.stays", "Estancias", "Stays"),
    ("factory.mean", "Media", "Mean"),
    ("factory.median", "Mediana", "Median"),
    ("catalog.title", "Catálogo", "Catalog"),
    (
        "catalog.empty",
        "El catálogo está vacío: crea el primer producto abajo.",
        "The catalog is empty: create the first product below.",
    ),
    ("catalog.name", "Nombre", "Name"),
    ("catalog.price_cents", "Precio (céntimos)", "Price (cents)"),
    ("catalog.price", "Precio", "Price"),
    (
        "catalog.price.hint",
        "En la moneda indicada, por ejemplo 490 o 49,90.",
        "In the currency given, for example 490 or 49.90.",
    ),
    ("catalog.currency", "Moneda", "Currency"),
    ("catalog.active", "Activo", "Active"),
    (
        "catalog.tenants",
        "Clientes que lo ven",
        "Clients who see it",
    ),
    ("catalog.new", "Nuevo producto", "New product"),
    ("catalog.description", "Descripción", "Description"),
    ("catalog.create", "Crear producto", "Create product"),
    ("catalog.created", "Producto creado", "Product created"),
    ("llm.title", "Pasarela LLM", "LLM gateway"),
    (
        "llm.usage",
        "Uso de los últimos 30 días",
        "Usage over the last 30 days",
    ),
    ("llm.usage.tenant", "Coste por cliente", "Cost per client"),
    (
        "llm.usage.model",
        "Peticiones por modelo",
        "Requests per model",
    ),
    (
        "llm.usage.none",
        "Aún no hay uso registrado.",
        "No usage recorded yet.",
    ),
    ("llm.tenant", "Cliente", "Tenant"),
    ("llm.model", "Modelo", "Model"),
    ("llm.requests", "Peticiones", "Requests"),
    ("llm.failed", "Fallidas", "Failed"),
    ("llm.prompt", "Tokens de entrada", "Prompt tokens"),
    ("llm.completion", "Tokens de salida", "Completion tokens"),
    ("llm.cost", "Coste", "Cost"),
    (
        "llm.upstreams",
        "Estado de los proveedores",
        "Upstream health",
    ),
    (
        "llm.upstreams.none",
        "Ningún proveedor ha recibido llamadas todavía.",
        "No upstream has been called yet.",
    ),
    ("llm.upstream", "Proveedor", "Upstream"),
    ("llm.circuit", "Circuito", "Circuit"),
    ("llm.in_flight", "En curso", "In flight"),
    ("llm.latency", "Latencia media", "Mean latency"),
    ("llm.last_error", "Último error", "Last error"),
    ("llm.routes", "Rutas y alias", "Routes and aliases"),
    (
        "llm.routes.none",
        "No hay alias definidos.",
        "No aliases defined.",
    ),
    ("llm.alias", "Alias", "Alias"),
    ("llm.strategy", "Estrategia", "Strategy"),
    ("llm.targets", "Destinos", "Targets"),
    ("integrations.title", "Integraciones", "Integrations"),
    (
        "integrations.channels",
        "Canales de despliegue",
        "Deploy channels",
    ),
    ("integrations.channel", "Canal", "Channel"),
    ("integrations.detail", "Detalle", "Detail"),
    ("integrations.last_success", "Último éxito", "Last success"),
    ("integrations.last_failure", "Último fallo", "Last failure"),
    ("webhooks.title", "Webhooks", "Webhooks"),
    (
        "webhooks.none",
        "No hay suscripciones.",
        "No subscriptions.",
    ),
    ("webhooks.events", "Eventos", "Events"),
    (
        "webhooks.events.hint",
        "Separados por comas, por ejemplo order.state_changed, deploy.finished.",
        "Comma-separated, for example order.state_changed, deploy.finished.",
    ),
    ("webhooks.delivered", "Entregados", "Delivered"),
    ("webhooks.disabled", "Desactivado por", "Disabled because"),
    ("webhooks.ping", "Probar", "Ping"),
    ("webhooks.pinged", "Prueba enviada", "Ping sent"),
    ("webhooks.new", "Nueva suscripción", "New subscription"),
    ("webhooks.create", "Suscribir", "Subscribe"),
    (
        "webhooks.created",
        "Suscripción creada",
        "Subscription created",
    ),
    ("webhooks.secret", "Secreto de firma.", "Signing secret."),
    (
        "webhooks.deliveries",
        "Entregas recientes",
        "Recent deliveries",
    ),
    (
        "webhooks.deliveries.none",
        "Aún no hay entregas.",
        "No deliveries yet.",
    ),
    ("webhooks.event", "Evento", "Event"),
    ("webhooks.attempts", "Intentos", "Attempts"),
    ("webhooks.delivered_at", "Entregado", "Delivered"),
    ("webhooks.retry", "Reintentar", "Retry"),
    ("access.title", "Acceso", "Access"),
    ("access.users", "Usuarios", "Users"),
    ("access.name", "Nombre", "Name"),
    ("access.role", "Rol", "Role"),
    ("access.disabled", "Desactivado", "Disabled"),
    ("access.disable", "Desactivar", "Disable"),
    ("access.enable", "Activar", "Enable"),
    ("access.new_user", "Nuevo usuario", "New user"),
    (
        "access.password.hint",
        "Al menos 12 caracteres.",
        "At least 12 characters.",
    ),
    (
        "access.tenant_id",
        "Id del cliente (solo rol client)",
        "Tenant id (client role only)",
    ),
    (
        "access.tenant.hint",
        "Cópialo de la tabla de clientes.",
        "Copy it from the tenants table.",
    ),
    ("access.create_user", "Crear usuario", "Create user"),
    ("access.user_created", "Usuario creado", "User created"),
    ("access.tenants", "Clientes (tenants)", "Tenants"),
    (
        "access.tenants.none",
        "Aún no hay clientes.",
        "No tenants yet.",
    ),
    ("access.created", "Creado", "Created"),
    ("access.new_tenant", "Nuevo cliente", "New tenant"),
    (
        "access.slug.hint",
        "Minúsculas, cifras y guiones; da nombre al portal.",
        "Lower-case letters, digits and dashes; it names the portal.",
    ),
    ("access.create_tenant", "Crear cliente", "Create tenant"),
    ("access.tenant_created", "Cliente creado", "Tenant created"),
    ("access.keys", "Claves de API", "API keys"),
    ("access.keys.none", "No hay claves de API.", "No API keys."),
    ("access.prefix", "Prefijo", "Prefix"),
    ("access.scopes", "Permisos", "Scopes"),
    (
        "access.scopes.hint",
        "Separados por comas, por ejemplo hosts:read, llm:invoke.",
        "Comma-separated, for example hosts:read, llm:invoke.",
    ),
    ("access.last_used", "Último uso", "Last used"),
    ("access.expires", "Caduca", "Expires"),
    ("access.revoked", "Revocada", "Revoked"),
    ("access.revoke", "Revocar", "Revoke"),
    ("access.new_key", "Nueva clave", "New key"),
    ("access.days", "Días de validez", "Days valid"),
    ("access.create_key", "Crear clave", "Create key"),
    ("access.key_created", "Clave creada", "Key created"),
    ("access.the_key", "La clave.", "The key."),
    ("js.yes", "sí", "yes"),
    ("js.detail.pid", "Proceso principal", "Main process"),
    ("js.detail.memory", "Memoria", "Memory"),
    ("js.detail.cpu", "Tiempo de CPU", "CPU time"),
    ("js.detail.since", "Activo desde", "Active since"),
    ("js.detail.result", "Último resultado", "Last result"),
    ("js.detail.file", "Instalación", "Install state"),
    ("js.detail.image", "Imagen", "Image"),
    ("js.detail.status", "Estado de Docker", "Docker status"),
    ("catalog.activate", "Activar", "Activate"),
    ("catalog.deactivate", "Desactivar", "Deactivate"),
    ("js.no", "no", "no"),
    ("orders.actions", "Acciones", "Actions"),
    ("orders.actions.done", "Pedido actualizado", "Order updated"),
    (
        "orders.actions.reason",
        "Motivo del rechazo",
        "Reason for rejecting",
    ),
    (
        "orders.action.approve_plan",
        "Aprobar el plan",
        "Approve the plan",
    ),
    ("orders.action.submit_qa", "Enviar a QA", "Send to QA"),
    ("orders.action.qa_pass", "Aprobar QA", "Pass QA"),
    ("orders.action.qa_reject", "Rechazar en QA", "Reject in QA"),
    (
        "orders.action.deliver",
        "Marcar entregado",
        "Mark delivered",
    ),
    (
        "orders.action.cancel",
        "Cancelar el pedido",
        "Cancel the order",
    ),
    ("orders.action.reopen", "Reabrir", "Reopen"),
    ("orders.plan.generate", "Generar un plan", "Generate a plan"),
    ("orders.plan.generated", "Plan generado", "Plan generated"),
    (
        "orders.plan.versions",
        "Versiones del plan",
        "Plan versions",
    ),
    ("orders.plan.approved", "aprobada", "approved"),
    ("orders.plan.days", "días", "days"),
    (
        "orders.blueprint",
        "Blueprint del agente",
        "Agent blueprint",
    ),
    (
        "orders.blueprint.show",
        "Ver el blueprint (JSON)",
        "Show the blueprint (JSON)",
    ),
    ("app.nav.audit", "Auditoría", "Audit"),
    ("host.tabs", "Secciones del servidor", "Host sections"),
    ("host.tab.overview", "Resumen", "Overview"),
    ("host.tab.services", "Servicios", "Services"),
    ("host.tab.files", "Archivos", "Files"),
    ("host.tab.commands", "Comandos", "Commands"),
    ("host.charts", "Gráficas", "Charts"),
    ("host.range", "Periodo", "Range"),
    ("host.range.live", "En vivo (15 min)", "Live (15 min)"),
    ("host.range.1h", "1 hora", "1 hour"),
    ("host.range.24h", "24 horas", "24 hours"),
    ("host.range.7d", "7 días", "7 days"),
    ("host.chart.top", "Máximo de la escala:", "Scale top:"),
    ("host.chart.net", "Red", "Network"),
    ("host.chart.rx", "entrada", "in"),
    ("host.chart.tx", "salida", "out"),
    ("host.chart.disk", "Disco", "Disk"),
    ("host.chart.read", "lectura", "read"),
    ("host.chart.write", "escritura", "write"),
    ("host.chart.util", "uso", "utilisation"),
    ("host.chart.vram", "memoria", "memory"),
    ("host.chart.temp", "temperatura", "temperature"),
    ("host.chart.power", "potencia", "power"),
    ("host.alerts", "Alertas de GPU abiertas", "Open GPU alerts"),
    ("host.facts", "Datos del servidor", "Facts"),
    ("host.os", "Sistema", "System"),
    ("host.kernel", "Núcleo", "Kernel"),
    ("host.agent", "Versión de agentd", "agentd version"),
    ("host.address", "Conectado desde", "Connected from"),
    (
        "host.cert",
        "Certificado válido hasta",
        "Certificate valid until",
    ),
    ("host.capabilities", "Capacidades", "Capabilities"),
    ("host.absent", "no", "absent"),
    ("host.models", "Servidores de modelos", "Model servers"),
    (
        "host.models.none",
        "Ninguno detectado en este servidor.",
        "None found on this host.",
    ),
    ("host.models.loaded", "cargado", "loaded"),
    ("host.services.kind", "Tipo", "Kind"),
    ("host.services.name", "Nombre", "Name"),
    ("host.services.description", "Descripción", "Description"),
    ("host.services.actions", "Acciones", "Actions"),
    ("host.logs", "Registro", "Logs"),
    (
        "host.logs.pick",
        "Elige un servicio para ver su registro.",
        "Pick a service to see its logs.",
    ),
    ("host.files.where", "Ubicación", "Location"),
    (
        "host.files.upload",
        "Subir un archivo aquí",
        "Upload a file here",
    ),
    ("host.files.name", "Nombre", "Name"),
    ("host.files.size", "Tamaño", "Size"),
    ("host.files.modified", "Modificado", "Modified"),
    ("host.files.mode", "Permisos", "Mode"),
    (
        "host.files.changed",
        "Este archivo ha cambiado en el servidor desde que lo abriste.",
        "This file changed on the host since you opened it.",
    ),
    ("host.files.content", "Contenido", "Content"),
    (
        "host.files.reload",
        "Cargar su versión",
        "Load their version",
    ),
    (
        "host.files.overwrite",
        "Sobrescribir con la mía",
        "Overwrite with mine",
    ),
    ("host.files.save", "Guardar", "Save"),
    ("host.files.close", "Cerrar", "Close"),
    (
        "host.commands.view_only",
        "Tu rol puede ver los comandos, pero no ejecutarlos.",
        "Your role can see the commands but not run them.",
    ),
    ("host.commands.pick", "Comando", "Command"),
    ("host.commands.run", "Ejecutar", "Run"),
    (
        "host.commands.output",
        "Salida del comando",
        "Command output",
    ),
    ("enroll.title", "Dar de alta un servidor", "Enroll a host"),
    (
        "enroll.intro",
        "Crea un token de un solo uso y ejecuta la orden que aparece en el servidor nuevo: agentd obtiene su certificado y se conecta solo.",
        "Create a single-use token and run the command shown on the new host: agentd gets its certificate and connects by itself.",
    ),
    (
        "enroll.ttl",
        "Validez del token (horas)",
        "Token lifetime (hours)",
    ),
    (
        "enroll.ttl.hint",
        "Entre 1 y 168 horas.",
        "Between 1 and 168 hours.",
    ),
    (
        "enroll.label",
        "Etiqueta de función (opcional)",
        "Role label (optional)",
    ),
    (
        "enroll.label.hint",
        "Se guarda como role=… en el servidor, por ejemplo gpu u ollama.",
        "Kept as role=… on the host, for example gpu or ollama.",
    ),
    ("enroll.create", "Crear token", "Create token"),
    (
        "enroll.run",
        "Ejecuta esto en el servidor",
        "Run this on the host",
    ),
    (
        "enroll.run.hint",
        "El token solo se muestra ahora y sirve una vez. Va en el entorno, no como opción, para que no aparezca en la lista de procesos.",
        "The token is shown only now and works once. It goes in the environment, not a flag, so it does not show in the process list.",
    ),
    ("enroll.copy", "Copiar la orden", "Copy the command"),
    ("audit.title", "Auditoría", "Audit trail"),
    ("audit.action", "Acción", "Action"),
    (
        "audit.action.hint",
        "Una acción, o un prefijo terminado en punto (auth.).",
        "An action, or a prefix ending in a dot (auth.).",
    ),
    ("audit.outcome", "Resultado", "Outcome"),
    ("audit.any", "cualquiera", "any"),
    ("audit.actor", "Quién", "Actor"),
    ("audit.host", "Servidor", "Host"),
    ("audit.filter", "Filtrar", "Filter"),
    (
        "audit.none",
        "Ningún registro coincide con el filtro.",
        "No record matches the filter.",
    ),
    ("audit.time", "Hora", "Time"),
    ("audit.target", "Sobre qué", "Target"),
    ("audit.older", "Registros anteriores", "Older records"),
    (
        "js.lost",
        "Se perdió la conexión con Axon. Reconectando…",
        "Lost the connection to Axon. Reconnecting…",
    ),
    (
        "js.offline",
        "Sin conexión con Axon; inténtalo de nuevo.",
        "No connection to Axon; try again.",
    ),
    ("js.signed_out", "Tu sesión terminó.", "Your session ended."),
    ("js.working", "Trabajando…", "Working…"),
    ("js.loading", "Cargando…", "Loading…"),
    (
        "js.no_samples",
        "Aún no hay muestras en este periodo.",
        "No samples in this range yet.",
    ),
    ("js.online", "En línea", "Online"),
    ("js.offline_host", "Desconectado", "Offline"),
    ("js.gpu_alert", "Alerta de GPU:", "GPU alert:"),
    ("js.done", "Hecho", "Done"),
    ("js.follow", "Seguir el registro", "Follow logs"),
    ("js.stop_following", "Dejar de seguir", "Stop following"),
    ("js.logs", "Registro", "Logs"),
    ("js.logs_of", "Registro de", "Logs of"),
    (
        "js.no_services",
        "No hay servicios de este tipo.",
        "No services of this kind.",
    ),
    ("js.action.start", "Iniciar", "Start"),
    ("js.action.stop", "Detener", "Stop"),
    ("js.action.restart", "Reiniciar", "Restart"),
    ("js.roots", "Raíces", "Roots"),
    ("js.download", "Descargar", "Download"),
    (
        "js.truncated",
        "Se muestran solo las primeras entradas.",
        "Only the first entries are shown.",
    ),
    (
        "js.empty_dir",
        "Esta carpeta está vacía.",
        "This folder is empty.",
    ),
    (
        "js.read_only",
        "Tu rol solo puede ver la lista.",
        "Your role can only see the list.",
    ),
    (
        "js.binary",
        "Este archivo no es texto; descárgalo para verlo.",
        "This file is not text; download it to see it.",
    ),
    ("js.saved", "Guardado", "Saved"),
    (
        "js.conflict",
        "Alguien cambió este archivo después de que lo abrieras. Carga su versión o sobrescríbela con la tuya.",
        "Someone changed this file after you opened it. Load their version or overwrite it with yours.",
    ),
    ("js.uploading", "Subiendo", "Uploading"),
    ("js.uploaded", "Subido", "Uploaded"),
    ("js.pattern", "Formato:", "Format:"),
    (
        "js.unit_hint",
        "Un nombre de unidad de systemd, como nginx.service.",
        "A systemd unit name, such as nginx.service.",
    ),
    (
        "js.unavailable",
        "no está instalado en este servidor",
        "not installed on this host",
    ),
    ("js.running", "Ejecutando…", "Running…"),
    ("js.exit", "Código de salida", "Exit code"),
    (
        "js.timed_out",
        "superó su tiempo límite",
        "ran past its time limit",
    ),
    (
        "js.no_commands",
        "Este servidor no permite ningún comando.",
        "This host allows no commands.",
    ),
    ("js.token_ready", "Token creado.", "Token created."),
    ("js.copied", "Copiado", "Copied"),
    (
        "js.copy_by_hand",
        "Seleccionado: cópialo con Ctrl+C.",
        "Selected: copy it with Ctrl+C.",
    ),
    ("orders.title", "Pedidos", "Orders"),
    ("orders.filter.estado", "Estado", "State"),
    ("orders.filter.any", "Todos", "All"),
    ("orders.filter.text", "Buscar", "Search"),
    ("orders.filter.apply", "Filtrar", "Filter"),
    (
        "orders.empty",
        "Ningún pedido coincide con estos filtros.",
        "No order matches these filters.",
    ),
    ("orders.col.title", "Pedido", "Order"),
    ("orders.col.product", "Producto", "Product"),
    ("orders.col.updated", "Actualizado", "Updated"),
    ("orders.qa.pendiente", "pendiente", "pending"),
    ("orders.qa.ok", "aprobado", "passed"),
    ("orders.qa.rechazado", "rechazado", "rejected"),
    ("orders.deploy", "Desplegar", "Deploy"),
    ("orders.deploy.to", "Desplegar en", "Deploy to"),
    (
        "orders.deploy.accepted",
        "Despliegue registrado: su resultado aparece en el historial.",
        "Deploy recorded: its outcome shows in the history.",
    ),
    (
        "orders.history",
        "Historial de despliegues",
        "Deploy history",
    ),
    (
        "orders.history.empty",
        "Este pedido aún no se ha desplegado.",
        "This order has not been deployed yet.",
    ),
    ("orders.history.open", "ver", "open"),
    (
        "orders.plan",
        "Plan de producción aprobado",
        "Approved production plan",
    ),
    (
        "orders.plan.none",
        "Aún no hay un plan aprobado.",
        "No plan has been approved yet.",
    ),
    ("orders.artifacts", "Artefactos", "Artifacts"),
    ("orders.timeline", "Estados", "States"),
    (
        "legal.updated",
        "Última actualización: diciembre de 2026.",
        "Last updated: December 2026.",
    ),
    ("privacy.title", "Política de privacidad", "Privacy policy"),
    (
        "privacy.p1",
        "Tratamos los datos que nos das al contratar y usar nuestros agentes (nombre, contacto, contenido de los pedidos) solo para prestarte el servicio, facturarlo y mejorarlo.",
        "We process the data you give us when you hire and use our agents (name, contact details, order content) only to provide, bill and improve the service.",
    ),
    ("privacy.h2", "Qué datos y para qué", "What data, and why"),
    (
        "privacy.p2",
        "Las conversaciones que tus agentes mantienen con tus clientes se procesan en nuestra infraestructura o en la de proveedores de modelos con contrato de tratamiento; no las usamos para entrenar modelos.",
        "The conversations your agents hold with your customers are processed on our infrastructure or that of model providers under a processing agreement; we do not use them to train models.",
    ),
    ("privacy.h3", "Tus derechos", "Your rights"),
    (
        "privacy.p3",
        "Puedes pedir acceso, rectificación, portabilidad o eliminación de tus datos en cualquier momento escribiéndonos.",
        "You may ask for access, correction, portability or deletion of your data at any time by writing to us.",
    ),
    (
        "terms.title",
        "Condiciones del servicio",
        "Terms of service",
    ),
    (
        "terms.p1",
        "Al encargar un agente aceptas que lo diseñemos según tu briefing, lo revisemos contigo y lo publiquemos en los canales acordados.",
        "By ordering an agent you agree that we design it from your brief, review it with you and publish it to the agreed channels.",
    ),
    ("terms.h2", "Uso aceptable", "Acceptable use"),
    (
        "terms.p2",
        "Los agentes no pueden usarse para spam, suplantación ni contenido ilegal; las plataformas de mensajería y redes sociales aplican además sus propias normas.",
        "Agents may not be used for spam, impersonation or unlawful content; messaging and social platforms also apply their own rules.",
    ),
    ("terms.h3", "Servicio y soporte", "Service and support"),
    (
        "terms.p3",
        "Mantenemos los agentes en funcionamiento y te avisamos de cualquier incidencia que afecte a tus canales.",
        "We keep agents running and tell you about any incident that affects your channels.",
    ),
    ("deletion.title", "Eliminación de datos", "Data deletion"),
    (
        "deletion.p1",
        "Puedes pedir que borremos tus datos y los de tus agentes. Escríbenos desde el contacto de tu cuenta indicando tu empresa; confirmaremos la eliminación en un plazo máximo de 30 días.",
        "You can ask us to delete your data and your agents' data. Write to us from your account's contact naming your company; we will confirm the deletion within 30 days.",
    ),
    ("deletion.h2", "Qué se elimina", "What is deleted"),
    (
        "deletion.p2",
        "Tus usuarios, pedidos, configuraciones de agentes y los registros de conversaciones que guardemos. Conservamos solo lo que la ley obliga a guardar (por ejemplo, facturas).",
        "Your users, orders, agent configurations and any conversation records we keep. We keep only what the law requires us to (invoices, for example).",
    ),
    (
        "deletion.whatsapp",
        "Pedir la eliminación por WhatsApp",
        "Ask for deletion on WhatsApp",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_comes_from_the_query_then_the_browser() {
        assert_eq!(Lang::pick(None, None), Lang::Es);
        assert_eq!(Lang::pick(Some("en"), Some("es-ES")), Lang::En);
        assert_eq!(
            Lang::pick(Some("fr"), Some("de-DE,en-GB;q=0.8,es;q=0.5")),
            Lang::En
        );
        assert_eq!(Lang::pick(None, Some("es-MX,es;q=0.9")), Lang::Es);
        assert_eq!(Lang::pick(None, Some("de")), Lang::Es);
    }

    #[test]
    fn every_message_exists_in_both_languages_once() {
        let mut keys = std::collections::HashSet::new();
        for (key, es, en) in CATALOG {
            assert!(keys.insert(*key), "{key} twice");
            assert!(!es.is_empty() && !en.is_empty(), "{key}");
        }
    }
}
