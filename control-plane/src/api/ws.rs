//! `GET /api/ws`: a WebSocket of live events for staff — hosts online and offline, audit
//! records, command output. A client may narrow what it gets by sending
//! `{"hosts":["<id>",...],"types":["audit",...]}` (empty or absent: everything).

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::Route;
use crate::AppState;
use crate::error::ApiError;
use crate::identity::auth::Caller;
use crate::live::LiveEvent;
use crate::model::Role;

/// Largest message a subscriber may send.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

pub fn routes() -> Vec<Route> {
    vec![Route::new(Method::GET, "/api/ws", get(upgrade))]
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscription {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    types: Vec<String>,
}

impl Subscription {
    fn wants(&self, event: &LiveEvent) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event.kind()))
            && (self.hosts.is_empty()
                || event
                    .host()
                    .is_some_and(|h| self.hosts.iter().any(|w| w == h)))
    }
}

async fn upgrade(
    State(state): State<AppState>,
    caller: Caller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // A plain GET is refused in the API's error shape, not the framework's text.
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return ApiError::bad_request(format!(
                "this endpoint answers WebSocket upgrades only: {}",
                e.body_text()
            ))
            .into_response();
        }
    };
    let events = state.live.subscribe();
    ws.protocols(["axon.v1"])
        .max_message_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| session(state, socket, events, caller))
}

/// How often a subscriber's login session is checked again: a logout, a password change or a
/// disabled account ends the stream within this.
const RECHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a session caller's login session still stands (keys are checked at upgrade).
fn still_signed_in(state: &AppState, caller: &Caller) -> bool {
    let crate::identity::auth::Via::Session { sid } = &caller.via else {
        return true;
    };
    let live = crate::identity::auth::live_session(&state.store, sid)
        .ok()
        .flatten()
        .is_some();
    let enabled = state
        .store
        .users
        .get(&caller.id)
        .ok()
        .flatten()
        .is_some_and(|u| !u.disabled && u.role == caller.role);
    live && enabled
}

async fn session(
    state: AppState,
    mut socket: WebSocket,
    mut events: tokio::sync::broadcast::Receiver<std::sync::Arc<LiveEvent>>,
    caller: Caller,
) {
    let mut filter = Subscription::default();
    tracing::debug!(caller = %caller.id, "live subscriber connected");
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                if !still_signed_in(&state, &caller) {
                    let _ = socket.send(Message::Close(Some(axum::extract::ws::CloseFrame {
                        code: 4401,
                        reason: "the session ended".into(),
                    }))).await;
                    break;
                }
            }
            event = events.recv() => {
                let text = match event {
                    // The audit trail is for admins only, here as on GET /api/audit.
                    Ok(event) if matches!(*event, LiveEvent::Audit { .. })
                        && !(caller.role == Role::Admin && caller.has_scope("audit:read")) => continue,
                    Ok(event) if filter.wants(&event) => serde_json::to_string(&*event).unwrap_or_default(),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => format!(r#"{{"type":"lagged","missed":{missed}}}"#),
                    Err(RecvError::Closed) => break,
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Subscription>(&text) {
                    Ok(sub) => {
                        // Acknowledged once in force: events after this line follow it.
                        let ack = serde_json::json!({"type": "subscribed", "hosts": sub.hosts, "types": sub.types});
                        filter = sub;
                        if socket.send(Message::Text(ack.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let reply = serde_json::json!({"type": "error", "message": format!("invalid subscription: {e}")});
                        if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                            break;
                        }
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
}
