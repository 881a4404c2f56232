//! The client portal (`/portal/{slug}`): in Spanish unless English is picked, with the tenant's
//! welcome and colour from its settings; its catalog with an order form; its orders in plain
//! words — where each stands, its steps with dates, and where it was published; its GPU boxes
//! when it has any. A client sees only its own tenant (another slug looks missing); admins may
//! look at any. Nothing internal shows: no ids, codes or staff fields (the page is built from
//! the client types).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;

use super::i18n::Lang;
use super::page;
use super::session::{self, Signed};
use crate::AppState;
use crate::agency::catalog::CatalogItem;
use crate::agency::orders::{ClientOrder, Estado, Filter};
use crate::error::{ApiError, ApiForm, ApiPath};
use crate::model::{Role, Tenant};

/// The order form's fields.
#[derive(Debug, Deserialize)]
pub struct OrderForm {
    #[serde(default)]
    product: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    brief: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
}

/// The portal `slug` if `signed` may use it: a client its own tenant's, an admin any.
fn tenant_for(state: &AppState, signed: &Signed, slug: &str) -> Result<Tenant, ApiError> {
    let missing = || ApiError::not_found("no such portal");
    let id = state.store.tenant_slugs.get(slug)?.ok_or_else(missing)?;
    let allowed = match signed.user.role {
        Role::Admin => true,
        Role::Client => signed.user.tenant_id.as_deref() == Some(id.as_str()),
        Role::Operator | Role::Viewer => false,
    };
    if !allowed {
        return Err(missing());
    }
    state.store.tenants.get(&id)?.ok_or_else(missing)
}

/// `#rrggbb` from the tenant's settings (`color` or `branding.color`), if valid.
fn brand_color(tenant: &Tenant) -> Option<String> {
    let value = tenant
        .settings
        .get("color")
        .or_else(|| tenant.settings.get("branding").and_then(|b| b.get("color")))?
        .as_str()?;
    let ok = value.len() == 7
        && value.starts_with('#')
        && value[1..].bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| value.to_owned())
}

/// A date as people write it in `lang`: "4 dic 2026", "Dec 4, 2026".
pub fn date(lang: Lang, at: OffsetDateTime) -> String {
    const ES: [&str; 12] = [
        "ene", "feb", "mar", "abr", "may", "jun", "jul", "ago", "sept", "oct", "nov", "dic",
    ];
    const EN: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = usize::from(u8::from(at.month())) - 1;
    match lang {
        Lang::Es => format!("{} {} {}", at.day(), ES[month], at.year()),
        Lang::En => format!("{} {}, {}", EN[month], at.day(), at.year()),
    }
}

/// A price as people write it in `lang`: "1.490,00 €", "€1,490.00".
pub fn price(lang: Lang, cents: u64, currency: &str) -> String {
    let whole = cents / 100;
    let frac = cents % 100;
    let digits = whole.to_string();
    let sep = match lang {
        Lang::Es => '.',
        Lang::En => ',',
    };
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(sep);
        }
        grouped.push(c);
    }
    let symbol = match currency.to_ascii_uppercase().as_str() {
        "EUR" => "€".to_owned(),
        "USD" => "$".to_owned(),
        other => other.to_owned(),
    };
    match lang {
        Lang::Es => format!("{grouped},{frac:02} {symbol}"),
        Lang::En => format!("{symbol}{grouped}.{frac:02}"),
    }
}

fn estado_words(lang: Lang, estado: Estado) -> &'static str {
    lang.t(match estado {
        Estado::Nuevo => "portal.estado.nuevo",
        Estado::EnProduccion => "portal.estado.en_produccion",
        Estado::EnQa => "portal.estado.en_qa",
        Estado::Listo => "portal.estado.listo",
        Estado::Entregado => "portal.estado.entregado",
        Estado::Cancelado => "portal.estado.cancelado",
    })
}

fn channel_words(lang: Lang, channel: &str) -> &'static str {
    lang.t(match channel {
        "whatsapp" => "portal.channel.whatsapp",
        "social" => "portal.channel.social",
        "telegram" => "portal.channel.telegram",
        _ => "portal.channel.other",
    })
}

fn deploy_words(lang: Lang, status: &str) -> &'static str {
    lang.t(match status {
        "success" => "portal.deploy.success",
        "failed" | "unknown" => "portal.deploy.trouble",
        _ => "portal.deploy.pending",
    })
}

struct View<'a> {
    lang: Lang,
    slug: &'a str,
    tenant: &'a Tenant,
    signed: &'a Signed,
    catalog: Vec<CatalogItem>,
    orders: Vec<ClientOrder>,
    hosts: Vec<(String, bool)>,
    notice: Option<&'a str>,
    error: Option<String>,
}

fn render(v: &View) -> Markup {
    let lang = v.lang;
    let welcome = v
        .tenant
        .settings
        .get("welcome")
        .and_then(|w| w.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{} {}", lang.t("portal.hello"), v.tenant.name));
    let color = brand_color(v.tenant);
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (super::head(&format!("{} — {}", v.tenant.name, lang.t("portal.title")), None, true))
            body {
                a.skip href="#main" { (lang.t("site.skip")) }
                header.top {
                    div.wrap {
                        span.brand {
                            @if let Some(c) = &color {
                                svg width="16" height="16" viewBox="0 0 16 16" aria-hidden="true" focusable="false" {
                                    rect width="16" height="16" rx="4" fill=(c) {}
                                }
                            }
                            (v.tenant.name)
                        }
                        nav.langs aria-label=(lang.t("site.lang")) {
                            @for other in Lang::ALL {
                                a href={ "/portal/" (v.slug) "?lang=" (other.code()) } hreflang=(other.code())
                                    lang=(other.code()) aria-current=[(other == lang).then_some("true")] {
                                    (match other { Lang::Es => "Español", Lang::En => "English" })
                                }
                            }
                        }
                        form.inline method="post" action="/app/logout" {
                            input type="hidden" name="csrf" value=(v.signed.browser.csrf);
                            button.button.quiet type="submit" { (lang.t("app.logout")) }
                        }
                    }
                }
                main.page #main {
                    div.wrap {
                        h1 { (welcome) }
                        @if let Some(n) = v.notice {
                            p.notice role="status" { (n) }
                        }
                        @if let Some(e) = &v.error {
                            p.error role="alert" #order-error { (e) }
                        }
                        section aria-labelledby="orders-title" {
                            h2 #orders-title { (lang.t("portal.orders")) }
                            @if v.orders.is_empty() {
                                p.empty { (lang.t("portal.orders.empty")) }
                            } @else {
                                ul.cards.orders {
                                    @for o in &v.orders {
                                        li.card {
                                            h3 { (o.title) }
                                            p { span.badge.ok { (estado_words(lang, o.estado)) } }
                                            ol.timeline aria-label=(lang.t("portal.steps")) {
                                                @for step in &o.timeline {
                                                    li { (estado_words(lang, step.estado)) " · " (date(lang, step.at)) }
                                                }
                                            }
                                            @for d in &o.deployments {
                                                p.deployed {
                                                    (channel_words(lang, &d.channel)) ": " (deploy_words(lang, &d.status))
                                                    @if !d.platforms.is_empty() {
                                                        " (" (d.platforms.join(", ")) ")"
                                                    }
                                                    " · " (date(lang, d.at))
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        section aria-labelledby="catalog-title" {
                            h2 #catalog-title { (lang.t("portal.catalog")) }
                            @if v.catalog.is_empty() {
                                p.empty { (lang.t("portal.catalog.empty")) }
                            } @else {
                                ul.cards {
                                    @for (i, item) in v.catalog.iter().enumerate() {
                                        li.card {
                                            h3 { (item.name) }
                                            p { (item.description) }
                                            p.figure.small { (price(lang, item.price_cents, &item.currency)) }
                                            form.stack method="post" action={ "/portal/" (v.slug) "/orders" } {
                                                input type="hidden" name="csrf" value=(v.signed.browser.csrf);
                                                input type="hidden" name="lang" value=(lang.code());
                                                input type="hidden" name="product" value=(item.id);
                                                label for={ "title-" (i) } { (lang.t("portal.order.title")) }
                                                input id={ "title-" (i) } name="title" value=(item.name) required maxlength="200";
                                                label for={ "brief-" (i) } { (lang.t("portal.order.brief")) }
                                                textarea id={ "brief-" (i) } name="brief" rows="3" maxlength="20000" {}
                                                button.button.primary type="submit" { (lang.t("portal.order.submit")) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        @if !v.hosts.is_empty() {
                            section aria-labelledby="hosts-title" {
                                h2 #hosts-title { (lang.t("portal.hosts")) }
                                ul.plain {
                                    @for (name, online) in &v.hosts {
                                        li {
                                            (name) " · "
                                            @if *online {
                                                span.badge.ok { (lang.t("fleet.up")) }
                                            } @else {
                                                span.badge.off { (lang.t("fleet.down")) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn view_page(
    state: &AppState,
    lang: Lang,
    slug: &str,
    signed: &Signed,
    notice: Option<&str>,
    error: Option<String>,
) -> Result<Markup, ApiError> {
    let tenant = tenant_for(state, signed, slug)?;
    let book = &state.agency.book;
    let catalog: Vec<CatalogItem> = book
        .catalog
        .values()?
        .into_iter()
        .filter(|c| c.visible_to(Some(&tenant.id)))
        .collect();
    let orders = book
        .list(
            &Filter::default(),
            |o| o.tenant_id.as_deref() == Some(tenant.id.as_str()),
            None,
            50,
        )?
        .items
        .iter()
        .map(ClientOrder::from)
        .collect();
    let hosts = state
        .store
        .hosts
        .values()?
        .into_iter()
        .filter(|h| h.tenant_id.as_deref() == Some(tenant.id.as_str()) && h.revoked_at.is_none())
        .map(|h| {
            let online = state.hub.is_online(&h.id);
            (h.hostname, online)
        })
        .collect();
    Ok(render(&View {
        lang,
        slug,
        tenant: &tenant,
        signed,
        catalog,
        orders,
        hosts,
        notice,
        error,
    }))
}

/// A page a person reads when the portal is not theirs or does not exist.
fn missing(lang: Lang) -> Response {
    let mut response = page(html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (super::head(lang.t("portal.missing"), None, true))
            body {
                main.page #main {
                    div.wrap {
                        h1 { (lang.t("portal.missing")) }
                        p { a href={ "/app?lang=" (lang.code()) } { (lang.t("portal.missing.back")) } }
                    }
                }
            }
        }
    });
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// `GET /portal/{slug}`.
pub async fn portal(
    State(state): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    Query(query): Query<PortalQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The portal speaks Spanish unless English is asked for by name.
    let lang = Lang::pick(query.lang.as_deref(), None);
    let Some(signed) = session::signed_in(&state, &headers)? else {
        return Ok(super::app::login_form(
            lang,
            query.lang.is_some(),
            &headers,
            None,
            "",
            StatusCode::OK,
        ));
    };
    match view_page(
        &state,
        lang,
        &slug,
        &signed,
        ordered_notice(lang, &query),
        None,
    ) {
        Ok(markup) => Ok(page(markup)),
        Err(e) if e.status == StatusCode::NOT_FOUND => Ok(missing(lang)),
        Err(e) => Err(e),
    }
}

/// `POST /portal/{slug}/orders`: a new order from the catalog with its brief.
pub async fn order(
    State(state): State<AppState>,
    ApiPath(slug): ApiPath<String>,
    headers: HeaderMap,
    ApiForm(form): ApiForm<OrderForm>,
) -> Result<Response, ApiError> {
    let lang = Lang::pick(form.lang.as_deref(), None);
    let signed = session::form_post(&state, &headers, &form.csrf)?;
    let tenant = match tenant_for(&state, &signed, &slug) {
        Ok(t) => t,
        Err(_) => return Ok(missing(lang)),
    };
    let caller = signed.caller();
    let request = crate::api::orders::ClientNewOrder {
        catalog_item_id: form.product,
        title: form.title,
        brief: form.brief,
    };
    match crate::api::orders::create_for_client(&state, &caller, Some(&tenant.id), request).await {
        Ok(_) => Ok(super::see_other(&format!(
            "/portal/{slug}?lang={}&ordered=1#orders-title",
            lang.code()
        ))),
        Err(e) if e.status.is_client_error() => {
            // Said in the portal's words, not the API's.
            let mut response = page(view_page(
                &state,
                lang,
                &slug,
                &signed,
                None,
                Some(lang.t("portal.order.failed").to_owned()),
            )?);
            *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            Ok(response)
        }
        Err(e) => Err(e),
    }
}

/// Where a signed-in client's `/app` leads: its portal.
pub fn home_of(state: &AppState, signed: &Signed) -> Result<Option<String>, ApiError> {
    if signed.user.role != Role::Client {
        return Ok(None);
    }
    let Some(tenant) = &signed.user.tenant_id else {
        return Ok(None);
    };
    Ok(state.store.tenants.get(tenant)?.map(|t| t.slug))
}

/// The notice after an order was placed.
pub fn ordered_notice(lang: Lang, query: &PortalQuery) -> Option<&'static str> {
    query.ordered.is_some().then(|| lang.t("portal.order.done"))
}

/// `?lang=` and the flag set after ordering.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct PortalQuery {
    /// `es` (the default) or `en`.
    #[serde(default)]
    pub lang: Option<String>,
    /// Set (to anything) by the redirect after an order was placed.
    #[serde(default)]
    pub ordered: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_prices_read_as_people_write_them() {
        let at = OffsetDateTime::from_unix_timestamp(1_796_378_400).expect("time");
        assert_eq!(date(Lang::Es, at), "4 dic 2026");
        assert_eq!(date(Lang::En, at), "Dec 4, 2026");
        assert_eq!(price(Lang::Es, 149_000, "EUR"), "1.490,00 €");
        assert_eq!(price(Lang::En, 149_000, "eur"), "€1,490.00");
        assert_eq!(price(Lang::Es, 99, "USD"), "0,99 $");
        assert_eq!(price(Lang::En, 123_456_789, "GBP"), "GBP1,234,567.89");
    }
}
