//! The accept loop: every connection gets a header-read deadline (which also bounds how long an
//! idle keep-alive connection is kept), the number of open HTTP connections is capped (over the
//! cap a connection gets a short 503 and is closed, instead of waiting unseen in the backlog),
//! and accept errors such as "too many open files" slow the loop down instead of ending it.
//! Upgraded connections (WebSockets) leave the cap and the deadline behind.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Limits of the accept loop (from [`crate::config::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time a client has to send a request's headers, and to start its next one on a kept-alive
    /// connection.
    pub header_read_timeout: Duration,
    /// Open HTTP connections at most (WebSockets excluded).
    pub max_connections: usize,
}

/// How long connections get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. no file descriptor left) before the next try.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Open connections from which a burst counts: once most of them have closed, the allocator is
/// asked to give their freed buffers back (glibc otherwise keeps them: floods of a few thousand
/// connections left the RSS tens of MiB higher for good).
const BURST: usize = 256;
/// Answer to a connection over the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 57\r\n\r\n{\"detail\":\"Too many open connections; try again shortly\"}";

/// Serves `app` on `listener` until `shutdown` resolves, then lets open connections finish
/// (at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let cap = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(cap));
    // Most connections open at once since the last trim.
    let peak = Arc::new(AtomicUsize::new(0));
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    // Set while accepts fail, so a streak of failures is logged once, not once per try.
    let mut failing = false;
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let tcp = match tcp {
            Ok((tcp, _)) => {
                failing = false;
                tcp
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    failing = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracker.spawn(refuse(tcp));
            continue;
        };
        peak.fetch_max(cap - slots.available_permits(), Ordering::Relaxed);
        let app = app.clone();
        let stop = stop.clone();
        let (slots, peak) = (slots.clone(), peak.clone());
        tracker.spawn(async move {
            serve_connection(tcp, app, limits.header_read_timeout, stop).await;
            drop(slot);
            let open = cap - slots.available_permits();
            let high = peak.load(Ordering::Relaxed);
            if high >= BURST
                && open <= high / 4
                && peak
                    .compare_exchange(high, open, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                crate::util::trim_heap_soon();
            }
        });
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the drain timeout"
        );
    }
}

/// One HTTP/1.1 connection (like the reference's server: no HTTP/2), with upgrades for
/// WebSockets. (hyper-util's version-detecting builder would wait for a first byte without any
/// deadline.)
async fn serve_connection(
    tcp: TcpStream,
    app: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
) {
    let service =
        TowerToHyperService::new(app.map_request(|req: Request<Incoming>| req.map(Body::new)));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut conn = pin!(builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades());
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::trace!(error = %e, "connection ended with an error");
            }
            return;
        }
        () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(BUSY)).await;
    let _ = tcp.shutdown().await;
}
