//! Each worker's listener: connections accepted and served by hyper directly (HTTP/1.1, and
//! HTTP/2 with prior knowledge unless `GATEWAY_H2C=false`), each request handed to the
//! connection's [`ClientConnection`](crate::edge::ClientConnection) service without the generic glue of
//! axum's server (tower adapters, a boxed request body, a shutdown signal polled beside every
//! connection); graceful shutdown by hyper's own.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::edge::Worker;

/// How each worker serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeSettings {
    /// Whether HTTP/2 with prior knowledge is accepted too.
    pub h2c: bool,
    /// How long an HTTP/1 client may take to send a request's headers, counted from the end
    /// of its last request on a kept-alive connection (`None`: no limit).
    pub client_timeout: Option<Duration>,
    /// How long requests in flight may take to finish once shutdown begins.
    pub grace: Duration,
}

/// Serves `worker` on `listener` until `shutdown` fires, then lets the requests in flight
/// finish for up to `settings.grace` (connections between requests close at once).
pub async fn serve(
    listener: TcpListener,
    worker: Worker,
    settings: ServeSettings,
    shutdown: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // One write for a head and a small body; a client that sends no (complete) request head
    // in time is let go, as one idle too long between requests.
    http1
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(settings.client_timeout);
    let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    auto.http1()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(settings.client_timeout);
    let h2c = settings.h2c;
    let grace = settings.grace;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Responses go out at once (no Nagle delay behind an unacknowledged segment).
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let service = worker.connection(peer);
        let io = TokioIo::new(stream);
        if h2c {
            let connection = graceful.watch(auto.serve_connection(io, service).into_owned());
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            });
        } else {
            let connection = graceful.watch(http1.serve_connection(io, service));
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            });
        }
    }
    // No new connections; those open finish their requests (idle ones close now).
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(?grace, "in-flight requests did not finish within the grace period");
        }
    }
}

/// After a failed `accept`: a connection that failed before it was accepted is no matter; a
/// listener out of file descriptors (or worse) is given a second before the next try, as
/// hyper's and axum's servers do.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
