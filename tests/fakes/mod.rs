//! Local fake HTTP services (Cloud API, Runtime API) that record every request and answer from a
//! script, for the launcher tests.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::Value;

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
    /// How many earlier requests had the same method and path.
    pub nth: usize,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `"METHOD /path[?query]"`.
    pub fn line(&self) -> String {
        if self.query.is_empty() {
            format!("{} {}", self.method, self.path)
        } else {
            format!("{} {}?{}", self.method, self.path, self.query)
        }
    }
}

type Responder = dyn Fn(&Req, &str) -> (u16, Value) + Send + Sync;

#[derive(Clone)]
struct St {
    log: Arc<Mutex<Vec<Req>>>,
    respond: Arc<Responder>,
    base: String,
}

/// A running fake service.
pub struct Fake {
    pub url: String,
    log: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    /// Starts a fake on a free loopback port; `respond(req, base_url)` gives status and JSON body.
    pub async fn start(
        respond: impl Fn(&Req, &str) -> (u16, Value) + Send + Sync + 'static,
    ) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let st = St {
            log: log.clone(),
            respond: Arc::new(respond),
            base: url.clone(),
        };
        let app = Router::new().fallback(handle).with_state(st);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { url, log, task }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Req> {
        self.log.lock().unwrap().clone()
    }

    /// `"METHOD /path?query"` of every request so far, health checks included.
    pub fn lines(&self) -> Vec<String> {
        self.requests().iter().map(Req::line).collect()
    }
}

async fn handle(
    State(st): State<St>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut log = st.log.lock().unwrap();
    let path = uri.path().to_string();
    let nth = log
        .iter()
        .filter(|r| r.method == method.as_str() && r.path == path)
        .count();
    let req = Req {
        method: method.to_string(),
        path,
        query: uri.query().unwrap_or("").to_string(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        nth,
    };
    log.push(req.clone());
    drop(log);
    let (status, body) = (st.respond)(&req, &st.base);
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
}
