//! The staff console's door: `/app` shows the sign-in form until the browser is signed in,
//! then a first overview; `POST /app/login` and `POST /app/logout` start and end the browser
//! session (see `session.rs`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::assets::url;
use super::i18n::Lang;
use super::session::{self, Signed};
use super::{PageQuery, lang, page};
use crate::AppState;
use crate::agency::orders::Estado;
use crate::error::{ApiError, ApiForm, ApiPath};
use crate::model::Role;

/// The sign-in form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
}

/// A form that only carries the session's token.
#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
}

fn frame(lang: Lang, title: &str, signed: Option<&Signed>, body: Markup) -> Markup {
    frame_with(lang, title, signed, None, body)
}

/// A page the console's script works on: its name (`data-page`) and the host it is about.
#[derive(Clone, Copy)]
pub struct Scripted<'a> {
    pub page: &'a str,
    pub host: Option<&'a str>,
}

/// The console's frame. A scripted page also carries the session's CSRF token for the
/// script's API calls, the words the script shows, a lost-connection notice and a toast area.
pub fn frame_with(
    lang: Lang,
    title: &str,
    signed: Option<&Signed>,
    scripted: Option<Scripted>,
    body: Markup,
) -> Markup {
    let admin = signed.is_some_and(|s| s.user.role == Role::Admin);
    let script = scripted.filter(|_| signed.is_some());
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (super::head(&format!("{title} — Axon"), None, true))
            body data-page=[script.map(|s| s.page)]
                data-host=[script.and_then(|s| s.host)]
                data-csrf=[script.and(signed).map(|s| s.browser.csrf.as_str())]
                data-role=[script.and(signed).map(|s| s.user.role.as_str())] {
                a.skip href="#main" { (lang.t("site.skip")) }
                header.top {
                    div.wrap {
                        a.brand href="/app" {
                            img src=(url("axon.svg")) alt="" width="28" height="28";
                            "Axon"
                        }
                        @if signed.is_some_and(|s| s.user.role != Role::Client) {
                            nav.app aria-label=(lang.t("app.nav")) {
                                a href={ "/app?lang=" (lang.code()) } { (lang.t("app.nav.overview")) }
                                a href={ "/app/fleet?lang=" (lang.code()) } { (lang.t("app.nav.fleet")) }
                                a href={ "/app/orders?lang=" (lang.code()) } { (lang.t("app.nav.orders")) }
                                a href={ "/app/factory?lang=" (lang.code()) } { (lang.t("app.nav.factory")) }
                                a href={ "/app/catalog?lang=" (lang.code()) } { (lang.t("app.nav.catalog")) }
                                a href={ "/app/llm?lang=" (lang.code()) } { "LLM" }
                                a href={ "/app/integrations?lang=" (lang.code()) } { (lang.t("app.nav.integrations")) }
                                @if admin {
                                    a href={ "/app/access?lang=" (lang.code()) } { (lang.t("app.nav.access")) }
                                    a href={ "/app/enroll?lang=" (lang.code()) } { (lang.t("app.nav.enroll")) }
                                    a href={ "/app/audit?lang=" (lang.code()) } { (lang.t("app.nav.audit")) }
                                }
                            }
                        }
                        @if let Some(s) = signed {
                            form.inline method="post" action="/app/logout" {
                                span.who { (s.user.email) " · " (role_name(lang, s.user.role)) }
                                input type="hidden" name="csrf" value=(s.browser.csrf);
                                button.button.quiet type="submit" { (lang.t("app.logout")) }
                            }
                        }
                    }
                }
                @if script.is_some() {
                    div.connection #connection role="status" hidden { (lang.t("js.lost")) }
                }
                (body)
                @if script.is_some() {
                    div.toasts #toast role="status" aria-live="polite" {}
                    script #axon-text type="application/json" { (maud::PreEscaped(super::i18n::script_words(lang))) }
                    script type="module" src=(url("console.js")) {}
                }
            }
        }
    }
}

fn role_name(lang: Lang, role: Role) -> &'static str {
    lang.t(match role {
        Role::Admin => "app.role.admin",
        Role::Operator => "app.role.operator",
        Role::Viewer => "app.role.viewer",
        Role::Client => "app.role.client",
    })
}

/// The sign-in page, with an error tied to the form when there is one.
fn login_page(lang: Lang, keep_lang: bool, csrf: &str, email: &str, error: Option<&str>) -> Markup {
    frame(
        lang,
        lang.t("app.login.title"),
        None,
        html! {
            main.page #main {
                div.wrap.narrow {
                    h1 { (lang.t("app.login.title")) }
                    form.stack method="post" action="/app/login" novalidate
                        aria-describedby=[error.map(|_| "login-error")] {
                        @if let Some(e) = error {
                            p.error #login-error role="alert" { (e) }
                        }
                        input type="hidden" name="csrf" value=(csrf);
                        @if keep_lang {
                            input type="hidden" name="lang" value=(lang.code());
                        }
                        label for="email" { (lang.t("app.login.email")) }
                        input #email type="email" name="email" value=(email) required
                            autocomplete="username" aria-invalid=[error.map(|_| "true")];
                        label for="password" { (lang.t("app.login.password")) }
                        input #password type="password" name="password" required
                            autocomplete="current-password" aria-invalid=[error.map(|_| "true")];
                        button.button.primary type="submit" { (lang.t("app.login.submit")) }
                    }
                }
            }
        },
    )
}

/// The first overview after signing in.
fn overview(state: &AppState, lang: Lang, signed: &Signed) -> Result<Markup, ApiError> {
    let hosts: Vec<_> = state
        .store
        .hosts
        .values()?
        .into_iter()
        .filter(|h| h.revoked_at.is_none())
        .filter(|h| signed.user.role != Role::Client || h.tenant_id == signed.user.tenant_id)
        .collect();
    let online = hosts.iter().filter(|h| state.hub.is_online(&h.id)).count();
    let orders: Vec<_> = state
        .agency
        .book
        .orders
        .values()?
        .into_iter()
        .filter(|o| signed.user.role != Role::Client || o.tenant_id == signed.user.tenant_id)
        .collect();
    let in_progress = orders
        .iter()
        .filter(|o| {
            matches!(
                o.estado,
                Estado::Nuevo | Estado::EnProduccion | Estado::EnQa
            )
        })
        .count();
    let ready = orders.iter().filter(|o| o.estado == Estado::Listo).count();
    let figures = [
        (
            "app.dash.hosts",
            format!("{online} / {}", hosts.len()),
            "hosts-online",
        ),
        (
            "app.dash.orders",
            in_progress.to_string(),
            "orders-in-progress",
        ),
        ("app.dash.ready", ready.to_string(), "orders-ready"),
    ];
    Ok(frame(
        lang,
        lang.t("app.dash.title"),
        Some(signed),
        html! {
            main.page #main {
                div.wrap {
                    h1 { (lang.t("app.dash.title")) }
                    p { (lang.t("app.dash.hello")) " " (signed.user.email) "." }
                    ul.cards {
                        @for (label, value, id) in &figures {
                            li.card {
                                h2 { (lang.t(label)) }
                                p.figure #(id) { (value) }
                            }
                        }
                    }
                    p { (lang.t("app.dash.next")) " " a href="/api/openapi.json" { "/api/openapi.json" } }
                }
            }
        },
    ))
}

/// `GET /app`: the overview when signed in, else the sign-in form.
pub async fn app(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = lang(&query, &headers);
    if let Some(signed) = session::signed_in(&state, &headers)? {
        // A client's console is its portal.
        if let Some(slug) = super::portal::home_of(&state, &signed)? {
            return Ok(super::see_other(&match &query.lang {
                Some(_) => format!("/portal/{slug}?lang={}", lang.code()),
                None => format!("/portal/{slug}"),
            }));
        }
        return Ok(page(overview(&state, lang, &signed)?));
    }
    Ok(login_form(
        lang,
        query.lang.is_some(),
        &headers,
        None,
        "",
        StatusCode::OK,
    ))
}

/// The sign-in form, with a fresh double-submit token unless the browser holds one.
pub(super) fn login_form(
    lang: Lang,
    keep_lang: bool,
    headers: &HeaderMap,
    error: Option<&str>,
    email: &str,
    status: StatusCode,
) -> Response {
    let existing = session::cookie(headers, session::LOGIN_CSRF_COOKIE)
        .filter(|t| t.len() >= 32 && t.len() <= 64)
        .map(str::to_owned);
    let token = existing
        .clone()
        .unwrap_or_else(|| crate::identity::auth::random_secret(""));
    let mut response = page(login_page(lang, keep_lang, &token, email, error));
    *response.status_mut() = status;
    if existing.is_none() {
        response.headers_mut().append(
            header::SET_COOKIE,
            session::set_cookie(session::LOGIN_CSRF_COOKIE, &token, 3600),
        );
    }
    response
}

/// `GET /app/fleet` (staff): every host at a glance, by pages, with filters.
pub async fn fleet(
    State(state): State<AppState>,
    query: Result<Query<super::fleet::FleetQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let lang = super::pick(query.lang.as_deref(), &headers);
    let signed = match staff(&state, lang, query.lang.is_some(), &headers)? {
        Ok(s) => s,
        Err(form) => return Ok(form),
    };
    let rows = super::fleet::rows(&state)?;
    Ok(scripted_page(
        lang,
        lang.t("fleet.title"),
        &signed,
        Scripted {
            page: "fleet",
            host: None,
        },
        html! {
            h1 { (lang.t("fleet.title")) }
            (super::fleet::table(lang, &rows, &query))
        },
    ))
}

/// The signed-in staff member, or what to answer instead (the sign-in form, or 403).
fn staff(
    state: &AppState,
    lang: Lang,
    keep_lang: bool,
    headers: &HeaderMap,
) -> Result<Result<Signed, Response>, ApiError> {
    let Some(signed) = session::signed_in(state, headers)? else {
        return Ok(Err(login_form(
            lang,
            keep_lang,
            headers,
            None,
            "",
            StatusCode::OK,
        )));
    };
    if signed.user.role == Role::Client {
        return Err(ApiError::forbidden("these pages are for staff"));
    }
    Ok(Ok(signed))
}

fn staff_page(lang: Lang, title: &str, signed: &Signed, body: Markup) -> Response {
    page(frame(
        lang,
        title,
        Some(signed),
        html! { main.page #main { div.wrap { (body) } } },
    ))
}

/// `GET /app/orders` (staff).
pub async fn orders(
    State(state): State<AppState>,
    Query(query): Query<super::orders::OrdersQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = super::pick(query.lang.as_deref(), &headers);
    let signed = match staff(&state, lang, query.lang.is_some(), &headers)? {
        Ok(s) => s,
        Err(form) => return Ok(form),
    };
    let filter = crate::agency::orders::Filter {
        estado: query.estado.as_deref().and_then(super::orders::estado_of),
        text: query
            .q
            .as_deref()
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty()),
        ..Default::default()
    };
    let found = state.agency.book.list(&filter, |_| true, None, 100)?;
    Ok(staff_page(
        lang,
        lang.t("orders.title"),
        &signed,
        super::orders::list(lang, &query, &found.items),
    ))
}

/// `?lang=` and the notice after a deploy was accepted.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct OrderQuery {
    /// `es` (the default) or `en`.
    #[serde(default)]
    pub lang: Option<String>,
    /// Set by the redirect after a deploy was accepted.
    #[serde(default)]
    pub deployed: Option<String>,
}

/// `GET /app/orders/{id}` (staff).
pub async fn order(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    Query(query): Query<OrderQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = super::pick(query.lang.as_deref(), &headers);
    let signed = match staff(&state, lang, query.lang.is_some(), &headers)? {
        Ok(s) => s,
        Err(form) => return Ok(form),
    };
    let order = state.agency.book.get(&id)?;
    let notice = query
        .deployed
        .is_some()
        .then(|| lang.t("orders.deploy.accepted"));
    Ok(scripted_page(
        lang,
        &order.title,
        &signed,
        Scripted {
            page: "order",
            host: None,
        },
        super::orders::detail(lang, &order, signed.user.role, &signed.browser.csrf, notice),
    ))
}

/// `POST /app/orders/{id}/deploy/{channel}` (admin): the same deploy as the API's.
pub async fn deploy(
    State(state): State<AppState>,
    ApiPath((id, channel)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiForm(form): ApiForm<TokenLangForm>,
) -> Result<Response, ApiError> {
    let lang = Lang::pick(form.lang.as_deref(), None);
    let signed = session::form_post(&state, &headers, &form.csrf)?;
    if signed.user.role != Role::Admin {
        return Err(ApiError::forbidden("only admins deploy"));
    }
    let channel = crate::agency::deploy::Channel::parse(&channel)
        .ok_or_else(|| ApiError::not_found("no such deploy channel"))?;
    let request = crate::agency::deploy::DeployRequest::default();
    let started =
        crate::api::deploys::start_deploy(&state, &signed.caller(), &id, channel, &request).await;
    match started {
        Ok(_) => Ok(super::see_other(&format!(
            "/app/orders/{id}?lang={}&deployed={}",
            lang.code(),
            channel.as_str()
        ))),
        Err(error) => {
            let order = state.agency.book.get(&id)?;
            let mut response = staff_page(
                lang,
                &order.title,
                &signed,
                html! {
                    p.error role="alert" #deploy-error { (error.message) }
                    (super::orders::detail(lang, &order, signed.user.role, &signed.browser.csrf, None))
                },
            );
            *response.status_mut() = error.status;
            Ok(response)
        }
    }
}

/// A form with the session's token and the page's language.
#[derive(Debug, Deserialize)]
pub struct TokenLangForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: Option<String>,
}

fn refused(why: &str) -> ApiError {
    ApiError::forbidden(format!("{why}; reload the page and try again"))
}

/// `POST /app/login`.
pub async fn login(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiForm(form): ApiForm<LoginForm>,
) -> Result<Response, ApiError> {
    let lang = Lang::pick(form.lang.as_deref(), None);
    if !session::same_origin(&state, &headers) {
        return Err(refused("this form was not sent from this site"));
    }
    let expected = session::cookie(&headers, session::LOGIN_CSRF_COOKIE).unwrap_or("");
    if !session::tokens_match(expected, &form.csrf) {
        return Err(refused("the form's security token does not match"));
    }
    let ip = crate::api::source_ip(&info);
    let user =
        match crate::api::auth::check_credentials(&state, ip, &form.email, form.password).await {
            Ok(user) => user,
            Err(e) => {
                let (message, status) = match e.status {
                    StatusCode::TOO_MANY_REQUESTS => {
                        (lang.t("app.login.throttled"), StatusCode::TOO_MANY_REQUESTS)
                    }
                    StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => {
                        (lang.t("app.login.failed"), StatusCode::UNAUTHORIZED)
                    }
                    _ => return Err(e),
                };
                return Ok(login_form(
                    lang,
                    form.lang.is_some(),
                    &headers,
                    Some(message),
                    &form.email,
                    status,
                ));
            }
        };
    let login = crate::api::auth::open_session(&state, &user, ip)?;
    let secret = session::start(&state, &login)?;
    state.store.db.flush().await?;
    crate::api::auth::audit_login(&state, &user, ip, &login.id);
    let max_age = (login.expires_at - crate::model::now()).whole_seconds();
    let mut response = super::see_other(&match &form.lang {
        Some(_) => format!("/app?lang={}", lang.code()),
        None => "/app".to_owned(),
    });
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::set_cookie(session::COOKIE, &secret, max_age),
    );
    h.append(
        header::SET_COOKIE,
        session::set_cookie(session::LOGIN_CSRF_COOKIE, "", 0),
    );
    Ok(response)
}

/// `POST /app/logout`: ends the login session (the API's tokens of it too).
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiForm(form): ApiForm<TokenForm>,
) -> Result<Response, ApiError> {
    let signed = session::form_post(&state, &headers, &form.csrf)?;
    crate::identity::auth::end_session(&state.store, &signed.session.id)?;
    session::forget(&state, &signed.key)?;
    state.store.db.flush().await?;
    state.audit.record(
        state
            .audit
            .event("auth.logout", "ok")
            .actor(
                &signed.user.id,
                signed.user.role,
                signed.user.tenant_id.as_deref(),
            )
            .target(&signed.session.id),
    );
    let mut response = super::see_other("/app");
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        session::set_cookie(session::COOKIE, "", 0),
    );
    Ok(response)
}

/// A staff page the script works on, in the console's frame.
fn scripted_page(
    lang: Lang,
    title: &str,
    signed: &Signed,
    scripted: Scripted,
    body: Markup,
) -> Response {
    page(frame_with(
        lang,
        title,
        Some(signed),
        Some(scripted),
        html! { main.page #main { div.wrap { (body) } } },
    ))
}

/// `GET /app/hosts/{id}` and its tabs (staff).
async fn host_tab(
    state: AppState,
    id: String,
    query: PageQuery,
    headers: HeaderMap,
    tab: super::host::Tab,
) -> Result<Response, ApiError> {
    use super::host;
    let lang = lang(&query, &headers);
    let signed = match staff(&state, lang, query.lang.is_some(), &headers)? {
        Ok(s) => s,
        Err(form) => return Ok(form),
    };
    let found = host::find(&state, &id)?;
    let body = match tab {
        host::Tab::Overview => host::overview(&state, lang, &found)?,
        host::Tab::Services => host::services(lang, &found),
        host::Tab::Files => host::files(lang, signed.user.role),
        host::Tab::Commands => host::commands(lang, signed.user.role),
    };
    Ok(scripted_page(
        lang,
        &found.hostname,
        &signed,
        Scripted {
            page: tab.page(),
            host: Some(&found.id),
        },
        html! { (host::header(&state, lang, &found, tab)) (body) },
    ))
}

/// `?path=` of the files page (read by the script) and `?lang=`; documents the files tab's
/// query (the page itself reads only `lang`).
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
pub struct FilesQuery {
    /// `es` (the default) or `en`.
    #[serde(default)]
    pub lang: Option<String>,
    /// The directory to open, e.g. `www/site`.
    #[serde(default)]
    pub path: Option<String>,
}

/// The handler of one of a host's tabs (staff).
pub fn host_page(tab: super::host::Tab) -> axum::routing::MethodRouter<AppState> {
    axum::routing::get(
        move |State(state): State<AppState>,
              ApiPath(id): ApiPath<String>,
              Query(query): Query<PageQuery>,
              headers: HeaderMap| host_tab(state, id, query, headers, tab),
    )
}

/// `GET /app/enroll` (admins): make an enrollment token and copy the command that uses it.
pub async fn enroll(
    State(state): State<AppState>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let lang = lang(&query, &headers);
    let signed = match staff(&state, lang, query.lang.is_some(), &headers)? {
        Ok(s) => s,
        Err(form) => return Ok(form),
    };
    if signed.user.role != Role::Admin {
        return Err(ApiError::forbidden("enrollment is for admins"));
    }
    Ok(scripted_page(
        lang,
        lang.t("enroll.title"),
        &signed,
        Scripted {
            page: "enroll",
            host: None,
        },
        super::admin::enroll(lang),
    ))
}

/// `GET /app/audit` (admins), with filters.
pub async fn audit(
    State(state): State<AppState>,
    query: Result<Query<super::admin::AuditQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(ApiError::from)?;
    let lang = super::pick(query.lang.as_deref(), &headers);
    let signed = match staff(&state, lang, query.lang.is_some(), &headers)? {
        Ok(s) => s,
        Err(form) => return Ok(form),
    };
    if signed.user.role != Role::Admin {
        return Err(ApiError::forbidden("the audit trail is for admins"));
    }
    let body = super::admin::audit(&state, lang, &query)?;
    Ok(scripted_page(
        lang,
        lang.t("audit.title"),
        &signed,
        Scripted {
            page: "audit",
            host: None,
        },
        body,
    ))
}

/// Which management page, and who may open it.
#[derive(Clone, Copy)]
pub enum Manage {
    Factory,
    Catalog,
    Llm,
    Integrations,
    Access,
}

async fn manage_page(
    state: AppState,
    query: PageQuery,
    headers: HeaderMap,
    which: Manage,
) -> Result<Response, ApiError> {
    use super::manage;
    let lang = lang(&query, &headers);
    let signed = match staff(&state, lang, query.lang.is_some(), &headers)? {
        Ok(s) => s,
        Err(form) => return Ok(form),
    };
    let role = signed.user.role;
    if matches!(which, Manage::Access) && role != Role::Admin {
        return Err(ApiError::forbidden(
            "users, tenants and keys are for admins",
        ));
    }
    let (page_name, title, body) = match which {
        Manage::Factory => {
            let stats = crate::api::catalog::factory_figures(&state)?;
            (
                "factory",
                lang.t("factory.title"),
                manage::factory(lang, &stats, role),
            )
        }
        Manage::Catalog => (
            "catalog",
            lang.t("catalog.title"),
            manage::catalog(lang, role),
        ),
        Manage::Llm => ("llm", lang.t("llm.title"), manage::llm(lang)),
        Manage::Integrations => (
            "integrations",
            lang.t("integrations.title"),
            manage::integrations(lang, role),
        ),
        Manage::Access => ("access", lang.t("access.title"), manage::access(lang)),
    };
    Ok(scripted_page(
        lang,
        title,
        &signed,
        Scripted {
            page: page_name,
            host: None,
        },
        body,
    ))
}

/// The handler of a management page (staff; `/app/access` admins only).
pub fn manage(which: Manage) -> axum::routing::MethodRouter<AppState> {
    axum::routing::get(
        move |State(state): State<AppState>, Query(query): Query<PageQuery>, headers: HeaderMap| {
            manage_page(state, query, headers, which)
        },
    )
}
