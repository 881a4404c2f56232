//! The web front served by axon-cp: the public site (`/`, `/privacy`, `/terms`,
//! `/data-deletion`), the console's door (`/app`, with browser sessions) and the embedded,
//! content-hashed assets (`/assets/{file}`). Pages are
//! rendered on the server (maud), carry a strict Content-Security-Policy (no inline script or
//! style, nothing from another origin) and take their words from message catalogs (`i18n`).

pub mod admin;
pub mod app;
pub mod assets;
pub mod bridge;
pub mod fleet;
pub mod host;
pub mod i18n;
pub mod manage;
pub mod orders;
pub mod portal;
pub mod session;
mod site;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::AppState;
use crate::api::Route;
use crate::error::{ApiError, ApiPath};
use i18n::Lang;

/// What the pages need from the environment (`AXON_WHATSAPP_PHONE`, `AXON_WHATSAPP_MESSAGE`).
#[derive(Debug, Clone, Default)]
pub struct ConsoleConfig {
    /// Digits only, country code first, as wa.me wants them.
    pub whatsapp_phone: Option<String>,
    /// The message the contact button starts a chat with.
    pub whatsapp_message: Option<String>,
}

/// The longest contact message accepted.
const MAX_MESSAGE: usize = 500;

impl ConsoleConfig {
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut config = Self::default();
        if let Some(phone) = get("AXON_WHATSAPP_PHONE").filter(|p| !p.trim().is_empty()) {
            let digits: String = phone
                .chars()
                .filter(|c| !matches!(c, ' ' | '+' | '-' | '(' | ')' | '.'))
                .collect();
            if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(
                    "AXON_WHATSAPP_PHONE must be a phone number with its country code, e.g. +34 600 111 222"
                        .into(),
                );
            }
            config.whatsapp_phone = Some(digits);
        }
        if let Some(message) = get("AXON_WHATSAPP_MESSAGE").filter(|m| !m.trim().is_empty()) {
            if message.chars().count() > MAX_MESSAGE || message.chars().any(char::is_control) {
                return Err(format!(
                    "AXON_WHATSAPP_MESSAGE must be one line of at most {MAX_MESSAGE} characters"
                ));
            }
            config.whatsapp_message = Some(message.trim().to_owned());
        }
        Ok(config)
    }
}

pub fn routes() -> Vec<Route> {
    use app::Manage;
    use host::Tab;
    vec![
        Route::new(Method::GET, "/", get(landing)),
        Route::new(Method::GET, "/privacy", get(privacy)),
        Route::new(Method::GET, "/terms", get(terms)),
        Route::new(Method::GET, "/data-deletion", get(data_deletion)),
        Route::new(Method::GET, "/assets/{file}", get(asset)),
        Route::new(Method::GET, "/app", get(app::app)),
        Route::new(Method::GET, "/app/fleet", get(app::fleet)),
        Route::new(Method::GET, "/app/orders", get(app::orders)),
        Route::new(
            Method::GET,
            "/app/hosts/{id}",
            app::host_page(Tab::Overview),
        ),
        Route::new(
            Method::GET,
            "/app/hosts/{id}/services",
            app::host_page(Tab::Services),
        ),
        Route::new(
            Method::GET,
            "/app/hosts/{id}/files",
            app::host_page(Tab::Files),
        ),
        Route::new(
            Method::GET,
            "/app/hosts/{id}/commands",
            app::host_page(Tab::Commands),
        ),
        Route::new(Method::GET, "/app/enroll", get(app::enroll)),
        Route::new(Method::GET, "/app/factory", app::manage(Manage::Factory)),
        Route::new(Method::GET, "/app/catalog", app::manage(Manage::Catalog)),
        Route::new(Method::GET, "/app/llm", app::manage(Manage::Llm)),
        Route::new(
            Method::GET,
            "/app/integrations",
            app::manage(Manage::Integrations),
        ),
        Route::new(Method::GET, "/app/access", app::manage(Manage::Access)),
        Route::new(Method::GET, "/app/audit", get(app::audit)),
        Route::new(
            Method::POST,
            "/app/csp-report",
            axum::routing::post(csp_report),
        ),
        Route::new(Method::GET, "/app/orders/{id}", get(app::order)),
        Route::new(
            Method::POST,
            "/app/orders/{id}/deploy/{channel}",
            axum::routing::post(app::deploy),
        ),
        Route::new(Method::GET, "/portal/{slug}", get(portal::portal)),
        Route::new(
            Method::POST,
            "/portal/{slug}/orders",
            axum::routing::post(portal::order),
        ),
        Route::new(Method::POST, "/app/login", axum::routing::post(app::login)),
        Route::new(
            Method::POST,
            "/app/logout",
            axum::routing::post(app::logout),
        ),
    ]
}

/// The `<head>` every page shares: charset, viewport, title, icon and the one stylesheet.
/// `private` pages (console, portal) ask search engines to stay away.
pub fn head(title: &str, description: Option<&str>, private: bool) -> maud::Markup {
    maud::html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(d) = description {
                meta name="description" content=(d);
            }
            @if private {
                meta name="robots" content="noindex";
            }
            title { (title) }
            link rel="icon" href=(assets::url("axon.svg")) type="image/svg+xml";
            link rel="stylesheet" href=(assets::url("axon.css"));
        }
    }
}

/// `303 See Other` to a path of this site (after a form post, or to a client's portal).
pub fn see_other(location: &str) -> Response {
    let mut response = (StatusCode::SEE_OTHER, "").into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The policy every page is served with: scripts, styles, images and connections from this
/// origin only, no inline code, no framing, forms posting only here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; \
     report-uri /app/csp-report";

/// Largest violation report read.
const MAX_CSP_REPORT: usize = 16 * 1024;

/// `POST /app/csp-report`: a browser reports that the policy blocked something. Counted with
/// every route in `axon_http_requests_total` and logged (one line, the directive and what was blocked), so
/// a page that breaks its own policy is seen. Reports are unauthenticated by nature: nothing
/// in them is trusted or stored.
async fn csp_report(body: axum::body::Bytes) -> StatusCode {
    if body.len() > MAX_CSP_REPORT {
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    let report: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let inner = &report["csp-report"];
    let field = |name: &str| {
        inner[name]
            .as_str()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect::<String>()
    };
    tracing::warn!(
        directive = %field("violated-directive"),
        blocked = %field("blocked-uri"),
        page = %field("document-uri"),
        "the content security policy blocked something on a page"
    );
    StatusCode::NO_CONTENT
}

/// `?lang=es|en` on every page.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct PageQuery {
    /// `es` (the default) or `en`; otherwise the browser's `Accept-Language`.
    #[serde(default)]
    pub lang: Option<String>,
}

fn lang(query: &PageQuery, headers: &HeaderMap) -> Lang {
    pick(query.lang.as_deref(), headers)
}

/// The page's language: `?lang=`, then the browser's `Accept-Language`.
fn pick(query: Option<&str>, headers: &HeaderMap) -> Lang {
    Lang::pick(
        query,
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved characters).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn page(markup: maud::Markup) -> Response {
    let mut response = (StatusCode::OK, markup.into_string()).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), interest-cohort=()"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    response
}

async fn landing(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    page(site::landing(lang(&query, &headers), &state.config.console))
}

async fn privacy(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    page(site::privacy(lang(&query, &headers), &state.config.console))
}

async fn terms(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    page(site::terms(lang(&query, &headers), &state.config.console))
}

async fn data_deletion(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    page(site::data_deletion(
        lang(&query, &headers),
        &state.config.console,
    ))
}

async fn asset(ApiPath(file): ApiPath<String>) -> Result<Response, ApiError> {
    let asset =
        assets::by_hashed_name(&file).ok_or_else(|| ApiError::not_found("no such asset"))?;
    let mut response = (StatusCode::OK, asset.bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // The name changes with the content, so the file never changes under it.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contact_settings_are_checked() {
        let read = |phone: &str, message: &str| {
            let (phone, message) = (phone.to_owned(), message.to_owned());
            ConsoleConfig::from_env(&move |name| match name {
                "AXON_WHATSAPP_PHONE" => Some(phone.clone()),
                "AXON_WHATSAPP_MESSAGE" => Some(message.clone()),
                _ => None,
            })
        };
        let ok = read("+34 600-111-222", "Hola").expect("valid");
        assert_eq!(ok.whatsapp_phone.as_deref(), Some("34600111222"));
        assert!(read("call me", "").is_err());
        assert!(read("123", "").is_err());
        assert!(read("+34600111222", "two\nlines").is_err());
        assert!(read("+34600111222", &"x".repeat(501)).is_err());
        let none = read("", "").expect("unset");
        assert!(none.whatsapp_phone.is_none() && none.whatsapp_message.is_none());
    }
}
