//! `GET /openapi.json` (generated from the routes by utoipa) and the interactive `/docs` page.

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
        // Schemas referenced only from query parameters are not collected from the routes.
        .components(Some(
            utoipa::openapi::ComponentsBuilder::new()
                .schema_from::<crate::exec::BashEventSortOrder>()
                .build(),
        ))
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

/// The interactive API page (`docs.html`): operations by tag, a form per operation that sends
/// the request from the browser, the session key kept in local storage. The document is embedded
/// in the page, so it needs no second fetch and nothing from outside (sandboxes are often offline).
fn docs_page(doc: &OpenApi) -> String {
    // `</` would end the embedding <script> element early; `<\/` is the same JSON string.
    let spec = serde_json::to_string(doc)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");
    include_str!("docs.html")
        .replace("__TITLE__", &html_escape(&doc.info.title))
        .replace("__VERSION__", &html_escape(&doc.info.version))
        .replace("__SPEC__", &spec)
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
