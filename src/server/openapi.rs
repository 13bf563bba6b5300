//! `GET /openapi.json` and the interactive `/docs` page.
//!
//! The routes are collected by utoipa; every operation the reference also has is then described
//! with the reference's own definition (operation id, parameters, bodies, responses, schemas)
//! from its exported contract (`contract/openapi-1.58.2.json`), so clients generated from either
//! document agree. Operations only this server has keep their generated description.

use axum::http::header::CONTENT_TYPE;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use utoipa::openapi::OpenApi;

use super::AppState;

/// The document's header; paths are added by each domain router.
pub(super) fn base() -> OpenApi {
    utoipa::openapi::OpenApiBuilder::new()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("OpenHands Agent Server")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Wire-compatible Rust implementation of the OpenHands agent-server API.",
                ))
                .build(),
        )
        // Schemas referenced only from query parameters are not collected from the routes.
        .components(Some(
            utoipa::openapi::ComponentsBuilder::new()
                .schema_from::<crate::exec::BashEventSortOrder>()
                .build(),
        ))
        .build()
}

use crate::schema::CONTRACT;

/// Routes served outside the utoipa routers, as the reference names them: the server details,
/// the conversation-scoped bash/file/git copies (one wildcard route forwards them all) and the
/// workspace browser's wildcard.
fn unannotated(path: &str) -> bool {
    const SCOPED: [&str; 3] = ["bash/", "file/", "git/"];
    matches!(path, "/" | "/alive" | "/health" | "/ready" | "/server_info")
        || path
            .strip_prefix("/api/conversations/{runtime_conversation_id}/")
            .is_some_and(|rest| SCOPED.iter().any(|s| rest.starts_with(s)))
        || path == "/api/conversations/{conversation_id}/workspace/{file_path}"
}

/// A path with its parameter names blanked (`/a/{id}/b` → `/a/{}/b`), to match routes whose
/// parameters we name differently.
fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix("#/components/schemas/") {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// The served document: `doc` with the reference's definitions of the operations both have.
pub(super) fn with_contract(doc: &OpenApi) -> Value {
    let mut ours = serde_json::to_value(doc).unwrap_or_else(|_| json!({}));
    let contract: Value = serde_json::from_str(CONTRACT).unwrap_or_else(|_| json!({}));
    let empty = Map::new();
    let reference = contract["paths"].as_object().unwrap_or(&empty);
    let by_shape: HashMap<String, &String> = reference.keys().map(|p| (shape(p), p)).collect();
    let mut paths = Map::new();
    if let Some(generated) = ours["paths"].as_object() {
        for (path, item) in generated {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, op) in item {
                let ref_path = by_shape.get(&shape(path)).copied();
                let ref_op = ref_path.and_then(|p| reference[p].get(method));
                let (key, op) = match (ref_path, ref_op) {
                    (Some(p), Some(r)) => (p.clone(), r.clone()),
                    _ => (path.clone(), op.clone()),
                };
                let slot = paths.entry(key).or_insert_with(|| json!({}));
                slot[method.as_str()] = op;
            }
        }
    }
    for (path, item) in reference {
        if unannotated(path) {
            paths.insert(path.clone(), item.clone());
        }
    }
    // Schemas: ours, then the reference's for every name its operations use (transitively).
    let mut schemas = ours["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ref_schemas = contract["components"]["schemas"]
        .as_object()
        .unwrap_or(&empty);
    let mut pending = Vec::new();
    collect_refs(&Value::Object(paths.clone()), &mut pending);
    let mut seen = std::collections::HashSet::new();
    while let Some(name) = pending.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = ref_schemas.get(&name) {
            collect_refs(schema, &mut pending);
            schemas.insert(name, schema.clone());
        }
    }
    ours["paths"] = Value::Object(paths);
    ours["components"]["schemas"] = Value::Object(schemas);
    ours
}

/// `/openapi.json`, `/docs` and `/redoc` for `doc`. The served bodies are built on first use
/// (parsing the contract takes milliseconds that start-up need not spend) and shared.
pub(super) fn router(doc: OpenApi) -> Router<AppState> {
    let rendered: Arc<OnceLock<(Bytes, Bytes)>> = Arc::new(OnceLock::new());
    let render = move || -> (Bytes, Bytes) {
        let full = with_contract(&doc);
        let rendered = (
            Bytes::from(serde_json::to_vec(&full).unwrap_or_default()),
            Bytes::from(docs_page(&full)),
        );
        // The parsed contract is large and short-lived: give its memory back.
        drop(full);
        crate::util::trim_heap_soon();
        rendered
    };
    let render = Arc::new(render);
    let (cell, make) = (rendered.clone(), render.clone());
    let page = get(move || {
        let (cell, make) = (cell.clone(), make.clone());
        async move {
            let html = tokio::task::spawn_blocking(move || cell.get_or_init(|| make()).1.clone())
                .await
                .unwrap_or_default();
            Html(html)
        }
    });
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let (cell, make) = (rendered.clone(), render.clone());
                async move {
                    let json =
                        tokio::task::spawn_blocking(move || cell.get_or_init(|| make()).0.clone())
                            .await
                            .unwrap_or_default();
                    ([(CONTENT_TYPE, "application/json")], json)
                }
            }),
        )
        .route("/docs", page.clone())
        .route("/redoc", page)
}

/// The interactive API page (`docs.html`): operations by tag, a form per operation that sends
/// the request from the browser, the session key kept in local storage. The document is embedded
/// in the page, so it needs no second fetch and nothing from outside (sandboxes are often offline).
fn docs_page(doc: &Value) -> String {
    // `</` would end the embedding <script> element early; `<\/` is the same JSON string.
    let spec = serde_json::to_string(doc)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");
    include_str!("docs.html")
        .replace(
            "__TITLE__",
            &html_escape(doc["info"]["title"].as_str().unwrap_or("")),
        )
        .replace(
            "__VERSION__",
            &html_escape(doc["info"]["version"].as_str().unwrap_or("")),
        )
        .replace("__SPEC__", &spec)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
