//! Keep-alive connections to one upstream, over hyper's HTTP/1 client connections.
//!
//! Each gateway worker has a pool of its own per upstream (as each nginx worker keeps its own
//! `keepalive` connections), so checking a connection out or in touches nothing another core
//! uses: no pool key to hash, no lock anyone else takes, no task spawned per request to wait
//! for the connection to become idle again (what hyper-util's pooled client does). A connection
//! is taken before the request is handed over, so a connection that cannot be made fails the
//! request before anything is sent, and the caller may retry it without keeping a copy; one
//! found closed by the upstream only when the request is handed to it gives the request back
//! ([`SendRequest::try_send_request`]) and the next connection is tried.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How a request to an upstream failed.
pub enum SendError<B> {
    /// No connection could be made (refused, unreachable, not resolved, too slow to connect):
    /// nothing was sent, and the request is given back, so it may be tried again.
    Connect {
        /// `cannot connect to host:port: why`.
        reason: String,
        /// The request, untouched (boxed: this is the rare case).
        request: Box<http::Request<B>>,
    },
    /// The connection failed once the request was handed to it; the upstream may have seen
    /// some or all of it.
    Request(hyper::Error),
}

impl<B> std::fmt::Display for SendError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect { reason, .. } => f.write_str(reason),
            Self::Request(error) => f.write_str(&error_chain(error)),
        }
    }
}

/// One worker's idle connections to one upstream, and how to make more.
pub struct Pool<B> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// Where and how to connect, and how long idle connections are kept.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Host name or address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Time allowed to set up a connection (all resolved addresses together).
    pub connect_timeout: Duration,
    /// How long a connection may stay idle before it is closed.
    pub idle_timeout: Duration,
    /// Most idle connections kept; more are closed once their response is done.
    pub max_idle: usize,
}

struct Inner<B> {
    settings: PoolSettings,
    /// `host:port` for errors.
    label: String,
    /// Idle connections, the most recently used last (taken first, so the least used ones
    /// age out when traffic falls).
    idle: Mutex<VecDeque<Idle<B>>>,
    /// Whether the task that closes connections idle too long runs.
    reaping: std::sync::atomic::AtomicBool,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Pool<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// An empty pool; connections are made on demand.
    pub fn new(settings: PoolSettings) -> Self {
        let label = format!("{}:{}", bracketed(&settings.host), settings.port);
        Self {
            inner: Arc::new(Inner {
                settings,
                label,
                idle: Mutex::new(VecDeque::new()),
                reaping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The host it connects to.
    pub fn host(&self) -> &str {
        &self.inner.settings.host
    }

    /// The port it connects to.
    pub fn port(&self) -> u16 {
        self.inner.settings.port
    }

    /// A pool with the same settings and no connections (one per worker).
    pub fn empty_copy(&self) -> Self {
        Self::new(self.inner.settings.clone())
    }

    /// Sends `request` (origin-form URI, `Host` set) over an idle connection or a new one.
    /// The response's body hands its connection back to the pool once it has been read to
    /// the end.
    pub async fn send(
        &self,
        request: http::Request<B>,
    ) -> Result<http::Response<PooledBody<B>>, SendError<B>> {
        let mut request = request;
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                // Boxed: a new connection's setup is the rare case, and would otherwise make
                // every request's future (moved as a whole between the layers) larger.
                None => match Box::pin(self.connect()).await {
                    Ok(sender) => (sender, false),
                    Err(reason) => {
                        return Err(SendError::Connect {
                            reason,
                            request: Box::new(request),
                        });
                    }
                },
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = PooledBody {
                        body,
                        connection: Some(Checkin {
                            sender,
                            pool: Arc::downgrade(&self.inner),
                        }),
                    };
                    return Ok(http::Response::from_parts(parts, body));
                }
                // An idle connection the upstream had closed, found out before anything was
                // written: the request comes back whole; try the next one (a new connection
                // fails for good).
                Err(mut error) if reused => match error.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Request(error.into_error())),
                },
                Err(error) => return Err(SendError::Request(error.into_error())),
            }
        }
    }

    /// The most recently used idle connection that is ready for a request; closed and
    /// expired ones are let go.
    fn take_idle(&self) -> Option<SendRequest<B>> {
        let mut idle = self.inner.lock();
        let expired = self.inner.settings.idle_timeout;
        while idle
            .front()
            .is_some_and(|oldest| oldest.since.elapsed() >= expired)
        {
            idle.pop_front();
        }
        let mut index = idle.len();
        while index > 0 {
            index -= 1;
            let sender = &idle[index].sender;
            if sender.is_ready() {
                return idle.remove(index).map(|entry| entry.sender);
            }
            // Not ready and not closed: (rarely) not done with its last response yet; it
            // stays for a later request.
            if sender.is_closed() {
                idle.remove(index);
            }
        }
        None
    }

    /// A new connection, its I/O driven by a task of its own on the current runtime.
    async fn connect(&self) -> Result<SendRequest<B>, String> {
        let settings = &self.inner.settings;
        let failed = |reason: String| format!("cannot connect to {}: {reason}", self.inner.label);
        let stream = tokio::time::timeout(settings.connect_timeout, connect_tcp(settings))
            .await
            .map_err(|_| {
                failed(format!(
                    "no connection within {:?}",
                    settings.connect_timeout
                ))
            })?
            .map_err(|e| failed(e.to_string()))?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection closed with an error");
            }
        });
        if !self
            .inner
            .reaping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tokio::spawn(reap(Arc::downgrade(&self.inner)));
        }
        Ok(sender)
    }
}

/// Closes the pool's connections that have been idle too long, however quiet it is, until
/// the pool is gone.
async fn reap<B>(pool: Weak<Inner<B>>) {
    let period = match pool.upgrade() {
        // Requests never take an expired connection (checked at checkout); this is for
        // the ones no request comes for, so a coarse period will do.
        Some(pool) => (pool.settings.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let expired = pool.settings.idle_timeout;
        let mut idle = pool.lock();
        idle.retain(|entry| entry.since.elapsed() < expired && !entry.sender.is_closed());
    }
}

impl<B> Inner<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle<B>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `sender` for the next request, unless the pool is full.
    fn checkin(&self, sender: SendRequest<B>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < self.settings.max_idle {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// Resolves the upstream and connects to the first address that answers.
async fn connect_tcp(settings: &PoolSettings) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((settings.host.as_str(), settings.port)).await? {
        match connect_addr(addr).await {
            Ok(stream) => return Ok(stream),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the name resolved to no address")))
}

async fn connect_addr(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    // Dead peers behind a silent network are found by TCP keepalive probes.
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    Ok(stream)
}

/// A connection on its way back to its pool.
struct Checkin<B> {
    sender: SendRequest<B>,
    pool: Weak<Inner<B>>,
}

/// An upstream response's body; once read to its end, its connection goes back to the pool
/// (dropped before that, the connection is closed, as the rest of the response is unread).
pub struct PooledBody<B> {
    body: Incoming,
    connection: Option<Checkin<B>>,
}

impl<B> PooledBody<B> {
    fn finish(&mut self) {
        if let Some(Checkin { sender, pool }) = self.connection.take()
            && let Some(pool) = pool.upgrade()
        {
            pool.checkin(sender);
        }
    }
}

// Only the `Incoming` body is ever polled, and it is `Unpin`.
impl<B> Unpin for PooledBody<B> {}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finish(),
            Poll::Ready(Some(Err(_))) => drop(this.connection.take()),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // A body with nothing left to read (no body at all, or all of it read) may be
        // dropped without its end having been polled.
        if self.body.is_end_stream() {
            self.finish();
        }
    }
}

/// The `Host` header of `host:port`: the port left out when it is HTTP's default.
pub fn host_header(host: &str, port: u16) -> Option<HeaderValue> {
    let host = bracketed(host);
    let value = if port == 80 {
        host.into_owned()
    } else {
        format!("{host}:{port}")
    };
    HeaderValue::from_str(&value).ok()
}

/// `host` as it stands before `:port`: an IPv6 address in brackets.
fn bracketed(host: &str) -> std::borrow::Cow<'_, str> {
    if host.contains(':') {
        format!("[{host}]").into()
    } else {
        host.into()
    }
}

/// `error` and each of its causes, `: `-separated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    for cause in std::iter::successors(error.source(), |cause| cause.source()) {
        text.push_str(": ");
        text.push_str(&cause.to_string());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that answers one request per connection and then reports, on `closed`, when
    /// the gateway closes the connection.
    async fn upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed, closed_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let closed = closed.clone();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    let mut request = Vec::new();
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    stream.write_all(answer).await.unwrap();
                    // Kept open until the other side closes it.
                    while !matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {}
                    let _ = closed.send(());
                });
            }
        });
        (addr, closed_rx)
    }

    fn pool(addr: SocketAddr, idle_timeout: Duration) -> Pool<Empty<Bytes>> {
        Pool::new(PoolSettings {
            host: addr.ip().to_string(),
            port: addr.port(),
            connect_timeout: Duration::from_secs(1),
            idle_timeout,
            max_idle: 8,
        })
    }

    async fn send(pool: &Pool<Empty<Bytes>>) -> http::Response<PooledBody<Empty<Bytes>>> {
        let request = http::Request::get("/")
            .header(http::header::HOST, "upstream")
            .body(Empty::new())
            .unwrap();
        let Ok(response) = pool.send(request).await else {
            panic!("the upstream answers");
        };
        response
    }

    async fn get(pool: &Pool<Empty<Bytes>>) -> Bytes {
        let response = send(pool).await;
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[test]
    fn host_headers_leave_out_the_default_port_and_bracket_ipv6() {
        let host = |h: &str, p: u16| host_header(h, p).unwrap().to_str().unwrap().to_owned();
        assert_eq!(host("accounts", 80), "accounts");
        assert_eq!(host("accounts", 8081), "accounts:8081");
        assert_eq!(host("::1", 8081), "[::1]:8081");
        assert_eq!(host("::1", 80), "[::1]");
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_goes_back_and_is_closed_once_idle_too_long() {
        let (addr, mut closed) = upstream().await;
        let pool = pool(addr, Duration::from_millis(300));
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(pool.inner.lock().len(), 1, "back in the pool");
        // Closed by the pool's reaper, with no request coming to find it expired.
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the idle connection is closed")
            .unwrap();
        assert_eq!(pool.inner.lock().len(), 0);
    }

    #[tokio::test]
    async fn a_response_dropped_unread_does_not_give_its_connection_back() {
        let (addr, mut closed) = upstream().await;
        let pool = pool(addr, Duration::from_secs(60));
        let response = send(&pool).await;
        // Its body unread: the connection cannot carry another request.
        drop(response);
        assert_eq!(pool.inner.lock().len(), 0);
        drop(pool);
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the connection is closed")
            .unwrap();
    }
}
