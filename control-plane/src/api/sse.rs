//! Relaying a request's chunks as a `text/event-stream`: one event per chunk the agent sends
//! for the request, then a `result` (or `error`) event with the answer.

use std::future::Future;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::error::ApiError;
use crate::fleet::LinkError;
use crate::live::LiveEvent;

/// What to do when the client leaves before the answer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnLeave {
    /// Let the request run to its end (its outcome still goes through `finish`).
    Finish,
    /// Tell the agent to stop the request.
    Cancel,
}

/// Runs `call` (the link request `request_id` to `host`) and answers with its chunks as
/// events made by `item` (from the chunk's stream and data), then the outcome through
/// `finish`. Subscribes before the call starts, so no chunk is missed.
pub fn relay<T, C, F>(
    state: AppState,
    host: String,
    request_id: String,
    call: C,
    item: fn(&str, &str) -> Option<Event>,
    on_leave: OnLeave,
    finish: F,
) -> Response
where
    T: Serialize,
    C: Future<Output = Result<serde_json::Value, LinkError>> + Send + 'static,
    F: FnOnce(Result<serde_json::Value, LinkError>) -> Result<T, ApiError> + Send + 'static,
{
    let mut events = state.live.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let wanted = |e: &LiveEvent| match e {
            LiveEvent::ExecOutput {
                host_id,
                request_id: rid,
                stream,
                data,
                last,
                ..
            } if *host_id == host && *rid == request_id && !*last => item(stream, data),
            _ => None,
        };
        tokio::pin!(call);
        let outcome = loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) => {
                        if let Some(ev) = wanted(&e)
                            && tx.send(ev).await.is_err()
                        {
                            break None;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx.send(Event::default().event("lagged").data(n.to_string())).await;
                    }
                    Err(_) => {}
                },
                _ = tx.closed() => break None,
                outcome = &mut call => break Some(outcome),
            }
        };
        let Some(outcome) = outcome else {
            // The client left.
            if on_leave == OnLeave::Cancel
                && let Some(conn) = state.hub.get(&host)
            {
                conn.notify(
                    axon_shared::op::CANCEL,
                    &axon_shared::Cancel { id: request_id },
                );
            }
            let _ = finish((&mut call).await);
            return;
        };
        while let Ok(e) = events.try_recv() {
            if let Some(ev) = wanted(&e) {
                let _ = tx.send(ev).await;
            }
        }
        let last = match finish(outcome) {
            Ok(result) => Event::default().event("result").json_data(&result),
            Err(e) => Event::default().event("error").json_data(
                serde_json::json!({"error": {"code": e.code.as_str(), "message": e.message}}),
            ),
        };
        if let Ok(last) = last {
            let _ = tx.send(last).await;
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
