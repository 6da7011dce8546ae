//! The HTTP listener's connection discipline: every connection counts against a global
//! bound and one per client address, and is refused at once past either (never queued);
//! a request's headers must arrive within a deadline, which is also how long an idle
//! keep-alive connection may wait for its next request (hyper starts the same timer when it
//! waits for a request head). A slowloris client that sends half a request line and goes
//! silent is cut at the deadline and never holds more than its address's share.
//!
//! A WebSocket leaves this accounting once upgraded: the chat counts its sockets per
//! address itself (`chat.sockets_per_address`).

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The bounds, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub per_address: usize,
    pub header_timeout: Duration,
}

/// What a refused connection is told before it is closed: a whole response, small enough
/// for the socket's send buffer, so writing it never waits on the client.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
Retry-After: 5\r\nConnection: close\r\nContent-Length: 84\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many connections from here\"}}";

#[cfg(test)]
#[test]
fn the_refusal_is_a_whole_response() {
    let text = std::str::from_utf8(REFUSAL).expect("text");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{head}"
    );
    assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
}

fn refuse(socket: TcpStream, peer: SocketAddr, why: &'static str) {
    tracing::debug!(%peer, "http connection refused: {why}");
    metrics::counter!("commeow_http_connections_refused_total", "reason" => why).increment(1);
    // Written on the plain socket (non-blocking): tokio's `try_write` would wait for a
    // readiness event a just-accepted socket has not had yet, and say nothing.
    let Ok(mut socket) = socket.into_std() else {
        return;
    };
    let _ = std::io::Write::write(&mut socket, REFUSAL);
    // What the client already sent is read and dropped (without waiting for more), so the
    // close is a FIN after our answer, not a reset that could discard it.
    let mut sink = [0u8; 4096];
    while matches!(std::io::Read::read(&mut socket, &mut sink), Ok(n) if n > 0) {}
}

/// Serves `app` on `listener` within `limits` until `shutdown`; then stops accepting and
/// lets open connections finish what they are answering (the caller bounds the wait on
/// `connections`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(crate::throttle::Occupancy::default());
    let mut refused_logged = std::time::Instant::now() - Duration::from_secs(60);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            // Out of descriptors (EMFILE) or the like: wait a moment rather than spin.
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept an http connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            if refused_logged.elapsed() > Duration::from_secs(10) {
                refused_logged = std::time::Instant::now();
                tracing::warn!(
                    max = limits.max_connections,
                    "http connections refused: the box's bound is reached"
                );
            }
            refuse(socket, peer, "box_bound");
            continue;
        };
        let Some(slot) = per_address.take(peer.ip(), limits.per_address) else {
            refuse(socket, peer, "address_bound");
            continue;
        };
        // Chat frames and playlist answers are small and wanted now: no Nagle delay.
        if let Err(e) = socket.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(axum::body::Body::new)
            },
        ));
        let stop = shutdown.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(%peer, error = %e, "http connection ended");
                    }
                }
                () = stop.cancelled() => {
                    // Answer what is in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop((permit, slot));
        });
    }
}
