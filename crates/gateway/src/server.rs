//! Each worker's listener: connections accepted and served by hyper directly (HTTP/1.1, and
//! HTTP/2 with prior knowledge when `GATEWAY_H2C` is set), each request handed to the
//! connection's [`Connection`](crate::Connection) service without the generic glue of
//! axum's server (tower adapters, a boxed request body, a shutdown signal polled beside every
//! connection); graceful shutdown by hyper's own.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Worker;

/// Serves `worker` on `listener` until `shutdown` fires, then lets the requests in flight
/// finish for up to `grace` (connections between requests close at once).
pub async fn serve(
    listener: TcpListener,
    worker: Worker,
    h2c: bool,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.writev(false);
    let mut auto = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    auto.http1().writev(false);
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
