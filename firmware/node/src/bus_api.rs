//! The bus over HTTP: `GET /api/v1/sensors`, `POST /api/v1/cmd`, and chat rooms at
//! `/api/v1/chat/{room}` (history, posting, and an event stream).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;

use crate::bus::chat::{check_room, MAX_TEXT};
use crate::bus::commands::Request;
use crate::bus::NodeView;
use crate::http::{unavailable, ApiError};
use crate::mesh::{Mesh, MeshError};
use crate::station::Station;

/// How long `cambox sensors` waits for nodes it starts following to answer.
const SENSORS_WAIT: Duration = Duration::from_secs(1);
/// How long a command waits for its reply.
const COMMAND_WAIT: Duration = Duration::from_secs(5);

pub fn routes() -> Router<Arc<Station>> {
    Router::new()
        .route("/api/v1/sensors", get(sensors))
        .route("/api/v1/cmd", post(command))
        .route("/api/v1/chat/{room}", get(chat_history).post(chat_post))
        .route("/api/v1/chat/{room}/events", get(chat_events))
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, msg)
}

fn mesh(st: &Station) -> Result<&Mesh, ApiError> {
    st.mesh.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this box is not in a mesh yet",
        )
    })
}

/// Every node of the mesh with its capabilities and latest readings.
async fn sensors(State(st): State<Arc<Station>>) -> Result<Response, ApiError> {
    let nodes = mesh(&st)?.nodes(SENSORS_WAIT).await.map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "nodes": nodes })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    /// A node id (hex, or its first digits) or a box name.
    node: String,
    capability: String,
    action: String,
    #[serde(default)]
    args: Vec<String>,
}

/// Finds the node `who` names among the nodes this box knows.
fn resolve<'a>(nodes: &'a [NodeView], who: &str) -> Result<&'a NodeView, ApiError> {
    let who_lower = who.to_ascii_lowercase();
    let by_id: Vec<&NodeView> = if who.len() >= 4 && who.chars().all(|c| c.is_ascii_hexdigit()) {
        nodes
            .iter()
            .filter(|n| n.id.starts_with(&who_lower))
            .collect()
    } else {
        Vec::new()
    };
    let by_name: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.announcement.as_ref().is_some_and(|a| a.name == who))
        .collect();
    let found = if by_id.is_empty() { by_name } else { by_id };
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no node '{who}' in this box's mesh; `cambox sensors` lists them"),
        )),
        many => Err(bad(format!(
            "'{who}' names {} nodes; give more of the id (`cambox sensors` lists them)",
            many.len()
        ))),
    }
}

/// Sends a command to a node (this box included) and returns its reply.
async fn command(
    State(st): State<Arc<Station>>,
    who: Option<axum::Extension<crate::auth::sessions::Person>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let c: CommandBody = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "body must be JSON like {{\"node\": \"a1b2c3\", \"capability\": \"live\", \
             \"action\": \"start\", \"args\": []}}: {e}"
        ))
    })?;
    let req = Request {
        capability: c.capability,
        action: c.action,
        args: c.args,
    };
    let m = mesh(&st)?;
    let nodes = m.nodes(Duration::ZERO).await.map_err(unavailable)?;
    let target = resolve(&nodes, &c.node)?;
    st.audit(
        crate::audit::Record::by("command", who.as_deref()).detail(format!(
            "{} {} to {}",
            req.capability, req.action, target.id
        )),
    );
    let reply = if target.local {
        let exec = st
            .bus
            .get()
            .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the box is starting"))?;
        exec.run(&req).await
    } else {
        let to = cambox_mesh::NodeId::from_hex(&target.id).ok_or_else(|| bad("bad node id"))?;
        match m.command(to, &req, COMMAND_WAIT).await {
            Ok(r) => r,
            Err(e @ MeshError::NoReply(..)) => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "{e}: is this box on its allow-list (--allow-commands {})?",
                        m.id.to_hex()
                    ),
                ))
            }
            Err(e) => return Err(unavailable(e)),
        }
    };
    Ok(Json(serde_json::json!({ "node": target.id, "reply": reply })).into_response())
}

async fn chat_history(
    State(st): State<Arc<Station>>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    check_room(&room).map_err(bad)?;
    let (history, _) = mesh(&st)?.chat_follow(&room).await.map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "room": room, "messages": history })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatPost {
    text: String,
    /// Shown as the sender [default: this box's name].
    name: Option<String>,
}

async fn chat_post(
    State(st): State<Arc<Station>>,
    Path(room): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_room(&room).map_err(bad)?;
    let p: ChatPost = serde_json::from_slice(&body).map_err(|e| {
        bad(format!(
            "body must be JSON like {{\"text\": \"hello\"}}: {e}"
        ))
    })?;
    let text = p.text.trim();
    if text.is_empty() || text.len() > MAX_TEXT {
        return Err(bad(format!("text must be 1 to {MAX_TEXT} bytes")));
    }
    let name = p.name.unwrap_or_else(|| st.settings.node.clone());
    if name.is_empty() || name.len() > 64 {
        return Err(bad("name must be 1 to 64 bytes"));
    }
    let m = mesh(&st)?
        .chat_send(&room, &name, text)
        .await
        .map_err(unavailable)?;
    Ok((StatusCode::CREATED, Json(m)).into_response())
}

/// `message` events: the room's recent messages, then each new one.
async fn chat_events(
    State(st): State<Arc<Station>>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    check_room(&room).map_err(bad)?;
    let (history, rx) = mesh(&st)?.chat_follow(&room).await.map_err(unavailable)?;
    let event = |m: &crate::bus::chat::Message| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .event("message")
                .data(serde_json::to_string(m).unwrap_or_default()),
        )
    };
    let past = futures_util::stream::iter(history.iter().map(event).collect::<Vec<_>>());
    let live = tokio_stream::wrappers::BroadcastStream::new(rx)
        .filter_map(move |m| std::future::ready(m.ok().map(|m| event(&m))));
    Ok(Sse::new(past.chain(live))
        .keep_alive(KeepAlive::default())
        .into_response())
}
