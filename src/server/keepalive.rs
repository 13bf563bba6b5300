//! `Connection: close` on answers given before the request body was read.
//!
//! A handler may answer without reading the body (401 from the auth layer, an unknown route, a
//! wrong method). hyper cannot then reuse the connection and closes it after the answer; without
//! a `Connection: close` header a pooling client sends its next request on that connection and
//! sees it fail. This layer watches whether the body was read to its end and, when it was not,
//! says so in the answer, so clients open a new connection instead.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// The middleware: see the module documentation.
pub async fn close_if_body_unread(req: Request, next: Next) -> Response {
    if !has_body(&req) {
        return next.run(req).await;
    }
    let finished = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(Watched {
            inner: body,
            finished: finished.clone(),
        })
    });
    let mut response = next.run(req).await;
    if !finished.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the request announces a body (a non-zero length or chunked transfer).
fn has_body(req: &Request) -> bool {
    let headers = req.headers();
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match length {
        Some(n) => n > 0,
        None => headers.contains_key(TRANSFER_ENCODING),
    }
}

/// A request body that records when it has been read to its end.
struct Watched {
    inner: Body,
    finished: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
