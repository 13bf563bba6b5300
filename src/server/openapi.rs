//! `GET /openapi.json` (generated from the routes by utoipa) and a small `/docs` page.

use axum::http::header::CONTENT_TYPE;
use axum::response::Html;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
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
        .build()
}

/// `/openapi.json`, `/docs` and `/redoc` for `doc`. The bodies are rendered once and shared
/// (`Bytes`): handlers are cloned per request, and a captured document would be deep-copied.
pub(super) fn router(doc: OpenApi) -> Router<AppState> {
    let html = Bytes::from(docs_page(&doc));
    let page = get(move || {
        let html = html.clone();
        async move { Html(html) }
    });
    let json = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let json = json.clone();
                async move { ([(CONTENT_TYPE, "application/json")], json) }
            }),
        )
        .route("/docs", page.clone())
        .route("/redoc", page)
}

/// A self-contained HTML index of the operations (no CDN: sandboxes are often offline).
fn docs_page(doc: &OpenApi) -> String {
    let mut rows = String::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                let summary = op
                    .summary
                    .clone()
                    .or_else(|| op.description.clone())
                    .unwrap_or_default();
                rows.push_str(&format!(
                    "<tr><td><code>{method}</code></td><td><code>{}</code></td><td>{}</td></tr>\n",
                    html_escape(path),
                    html_escape(&summary)
                ));
            }
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\
<h1>{title} {version}</h1><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a></p>\
<table border=\"1\" cellpadding=\"4\"><tr><th>method</th><th>path</th><th>summary</th></tr>\n{rows}</table></body></html>",
        title = html_escape(&doc.info.title),
        version = html_escape(&doc.info.version),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
