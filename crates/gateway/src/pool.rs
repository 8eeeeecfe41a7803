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
//!
//! Requests without a body (most of them: GET, HEAD, DELETE) and those whose body's length is
//! declared (`Content-Length`: nearly every POST) go over connections of their own, read and
//! written in line by the request's task ([`crate::h1`]); hyper's client connections, each
//! driven by a task, carry the requests with a chunked body.

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

use crate::h1::{self, SetHeaders};

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
    /// A request without a body failed once sent (see [`crate::h1`]).
    Inline(h1::Error),
}

impl<B> std::fmt::Display for SendError<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect { reason, .. } => f.write_str(reason),
            Self::Request(error) => f.write_str(&error_chain(error)),
            Self::Inline(error) => write!(f, "{error}"),
        }
    }
}

/// Whether a request's body has a declared length that it will keep to (`Content-Length`, no
/// `Transfer-Encoding`), so that it can be sent in line.
fn sized<B: Body>(request: &http::Request<B>) -> bool {
    let headers = request.headers();
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    declared.is_some()
        && declared == request.body().size_hint().exact()
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
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
    /// Most idle connections kept (of each kind: in-line and hyper's); more are closed once
    /// their response is done.
    pub max_idle: usize,
}

struct Inner<B> {
    settings: PoolSettings,
    /// `host:port` for errors.
    label: String,
    /// Idle connections, the most recently used last (taken first, so the least used ones
    /// age out when traffic falls).
    idle: Mutex<VecDeque<Idle<B>>>,
    /// Idle connections for requests sent in line, the most recently used last.
    inline_idle: Mutex<VecDeque<(Box<h1::InlineConnection>, Instant)>>,
    /// Whether the task that closes connections idle too long runs.
    reaping: std::sync::atomic::AtomicBool,
}

struct Idle<B> {
    sender: SendRequest<B>,
    since: Instant,
}

impl<B> Pool<B>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
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
                inline_idle: Mutex::new(VecDeque::new()),
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
    /// the end. A request without a body that may be `replayed` (the caller's judgement: a
    /// safe method, or one with an idempotency key) and finds its kept-alive connection
    /// closed before any response comes is sent again on the next connection, as nginx does.
    pub async fn send(
        &self,
        request: http::Request<B>,
        set: &SetHeaders,
        replayable: bool,
    ) -> Result<http::Response<PooledBody<B>>, SendError<B>> {
        if request.body().is_end_stream() {
            return self.send_inline(request, set, replayable).await;
        }
        if sized(&request) {
            return self.send_inline_body(request, set).await;
        }
        let mut request = request;
        let headers = request.headers_mut();
        headers.reserve(set.len());
        for (name, value) in set {
            match value {
                Some(value) => headers.insert(name.clone(), value.clone()),
                None => headers.remove(name),
            };
        }
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
                    let body = PooledBody(Kind::Hyper {
                        body,
                        connection: Some(Checkin {
                            sender,
                            pool: Arc::downgrade(&self.inner),
                        }),
                    });
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

    /// [`send`](Self::send) for a request without a body.
    async fn send_inline(
        &self,
        request: http::Request<B>,
        set: &SetHeaders,
        replayable: bool,
    ) -> Result<http::Response<PooledBody<B>>, SendError<B>> {
        let (head, body) = request.into_parts();
        loop {
            let (connection, reused) = match self.take_inline() {
                Some(connection) => (connection, true),
                None => match Box::pin(self.connect_stream()).await {
                    Ok(stream) => (h1::InlineConnection::new(stream), false),
                    Err(reason) => {
                        return Err(SendError::Connect {
                            reason,
                            request: Box::new(http::Request::from_parts(head, body)),
                        });
                    }
                },
            };
            match connection.send(&head, set).await {
                Ok(response) => {
                    let pool = Arc::downgrade(&self.inner);
                    return Ok(response.map(|body| PooledBody(Kind::Inline { body, pool })));
                }
                // The upstream closed a kept-alive connection as the request went out (its
                // keep-alive timeout, most likely): another connection gets it, if it may be
                // sent twice. A new connection failing so is an answer.
                Err(h1::Error::Closed(_)) if reused && replayable => {}
                Err(error) => return Err(SendError::Inline(error)),
            }
        }
    }

    /// [`send`](Self::send) for a request whose body's length is declared: in line as well
    /// ([`h1::InlineConnection::send_with_body`]). A connection found closed before anything
    /// of the request went out gives way to the next, whatever the method.
    async fn send_inline_body(
        &self,
        request: http::Request<B>,
        set: &SetHeaders,
    ) -> Result<http::Response<PooledBody<B>>, SendError<B>> {
        let (head, mut body) = request.into_parts();
        let mut unsent = None;
        loop {
            let (connection, reused) = match self.take_inline() {
                Some(connection) => (connection, true),
                None => match Box::pin(self.connect_stream()).await {
                    Ok(stream) => (h1::InlineConnection::new(stream), false),
                    // Nothing of the body taken yet: the request goes back whole.
                    Err(reason) if unsent.is_none() => {
                        return Err(SendError::Connect {
                            reason,
                            request: Box::new(http::Request::from_parts(head, body)),
                        });
                    }
                    Err(reason) => return Err(SendError::Inline(h1::Error::Closed(reason))),
                },
            };
            match connection
                .send_with_body(&head, set, &mut body, &mut unsent)
                .await
            {
                Ok(response) => {
                    let pool = Arc::downgrade(&self.inner);
                    return Ok(response.map(|body| PooledBody(Kind::Inline { body, pool })));
                }
                Err(h1::Error::Closed(_)) if reused => {}
                Err(error) => return Err(SendError::Inline(error)),
            }
        }
    }

    /// The most recently used idle connection for a request without a body that can still
    /// be used; expired ones are let go.
    fn take_inline(&self) -> Option<Box<h1::InlineConnection>> {
        let mut idle = self.inner.lock_inline();
        let expired = self.inner.settings.idle_timeout;
        while idle
            .front()
            .is_some_and(|(_, since)| since.elapsed() >= expired)
        {
            idle.pop_front();
        }
        while let Some((mut connection, _)) = idle.pop_back() {
            if connection.is_reusable() {
                return Some(connection);
            }
        }
        None
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

    /// A new hyper client connection, its I/O driven by a task of its own on the current
    /// runtime.
    async fn connect(&self) -> Result<SendRequest<B>, String> {
        let stream = self.connect_stream().await?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.inner.label))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }

    /// A new TCP connection to the upstream (and the reaper started, with the first).
    async fn connect_stream(&self) -> Result<TcpStream, String> {
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
        if !self
            .inner
            .reaping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tokio::spawn(reap(Arc::downgrade(&self.inner)));
        }
        Ok(stream)
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
        pool.lock()
            .retain(|entry| entry.since.elapsed() < expired && !entry.sender.is_closed());
        pool.lock_inline().retain_mut(|(connection, since)| {
            since.elapsed() < expired && connection.is_reusable()
        });
    }
}

impl<B> Inner<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle<B>>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_inline(
        &self,
    ) -> std::sync::MutexGuard<'_, VecDeque<(Box<h1::InlineConnection>, Instant)>> {
        self.inline_idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `connection` for the next request without a body, unless the pool is full.
    fn checkin_inline(&self, connection: Box<h1::InlineConnection>) {
        let mut idle = self.lock_inline();
        if idle.len() < self.settings.max_idle {
            idle.push_back((connection, Instant::now()));
        }
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

/// Idle time before the first TCP keepalive probe on an upstream connection.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

async fn connect_addr(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    // Dead peers behind a silent network are found by TCP keepalive probes.
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
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
pub struct PooledBody<B>(Kind<B>);

enum Kind<B> {
    /// From a hyper client connection.
    Hyper {
        body: Incoming,
        connection: Option<Checkin<B>>,
    },
    /// Read in line ([`crate::h1`]).
    Inline {
        body: h1::Body,
        pool: Weak<Inner<B>>,
    },
}

impl<B> PooledBody<B> {
    fn finish(&mut self) {
        match &mut self.0 {
            Kind::Hyper { connection, .. } => {
                if let Some(Checkin { sender, pool }) = connection.take()
                    && let Some(pool) = pool.upgrade()
                {
                    pool.checkin(sender);
                }
            }
            Kind::Inline { body, pool } => {
                if let Some(connection) = body.take_reusable()
                    && let Some(pool) = pool.upgrade()
                {
                    pool.checkin_inline(connection);
                }
            }
        }
    }
}

// `Incoming` and `h1::Body` are `Unpin`; `B` is never polled here.
impl<B> Unpin for PooledBody<B> {}

impl<B> Body for PooledBody<B> {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let (polled, end) = match &mut this.0 {
            Kind::Hyper { body, connection } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    drop(connection.take());
                }
                (polled.map_err(Into::into), body.is_end_stream())
            }
            Kind::Inline { body, .. } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                (polled.map_err(Into::into), body.is_end_stream())
            }
        };
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if end => this.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Hyper { body, .. } => body.is_end_stream(),
            Kind::Inline { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Hyper { body, .. } => body.size_hint(),
            Kind::Inline { body, .. } => body.size_hint(),
        }
    }
}

impl<B> Drop for PooledBody<B> {
    fn drop(&mut self) {
        // A body with nothing left to read (no body at all, or all of it read) may be
        // dropped without its end having been polled.
        if self.is_end_stream() {
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

    fn pool<B: RequestBody>(addr: SocketAddr, idle_timeout: Duration) -> Pool<B> {
        Pool::new(PoolSettings {
            host: addr.ip().to_string(),
            port: addr.port(),
            connect_timeout: Duration::from_secs(1),
            idle_timeout,
            max_idle: 8,
        })
    }

    /// What the tests send: no body (an in-line connection) or one (hyper's).
    trait RequestBody:
        Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
    {
        fn new() -> Self;
    }
    impl RequestBody for Empty<Bytes> {
        fn new() -> Self {
            Empty::new()
        }
    }
    impl RequestBody for http_body_util::Full<Bytes> {
        fn new() -> Self {
            http_body_util::Full::new(Bytes::from_static(b"x"))
        }
    }

    fn request<B: RequestBody>() -> http::Request<B> {
        http::Request::post("/")
            .header(http::header::HOST, "upstream")
            .body(B::new())
            .unwrap()
    }

    async fn send<B: RequestBody>(pool: &Pool<B>) -> http::Response<PooledBody<B>> {
        let Ok(response) = pool.send(request(), &[], true).await else {
            panic!("the upstream answers");
        };
        response
    }

    async fn get<B: RequestBody>(pool: &Pool<B>) -> Bytes {
        let response = send(pool).await;
        response.into_body().collect().await.unwrap().to_bytes()
    }

    /// Idle connections of both kinds.
    fn idle<B>(pool: &Pool<B>) -> usize {
        pool.inner.lock().len() + pool.inner.lock_inline().len()
    }

    #[test]
    fn host_headers_leave_out_the_default_port_and_bracket_ipv6() {
        let host = |h: &str, p: u16| host_header(h, p).unwrap().to_str().unwrap().to_owned();
        assert_eq!(host("accounts", 80), "accounts");
        assert_eq!(host("accounts", 8081), "accounts:8081");
        assert_eq!(host("::1", 8081), "[::1]:8081");
        assert_eq!(host("::1", 80), "[::1]");
    }

    async fn goes_back_once_read_and_is_closed_once_idle_too_long<B: RequestBody>() {
        let (addr, mut closed) = upstream().await;
        let pool = pool::<B>(addr, Duration::from_millis(300));
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(idle(&pool), 1, "back in the pool");
        // Closed by the pool's reaper, with no request coming to find it expired.
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the idle connection is closed")
            .unwrap();
        assert_eq!(idle(&pool), 0);
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_goes_back_and_is_closed_once_idle_too_long() {
        goes_back_once_read_and_is_closed_once_idle_too_long::<Empty<Bytes>>().await;
        goes_back_once_read_and_is_closed_once_idle_too_long::<http_body_util::Full<Bytes>>().await;
    }

    async fn is_not_given_back_unread<B: RequestBody>() {
        let (addr, mut closed) = upstream().await;
        let pool = pool::<B>(addr, Duration::from_secs(60));
        let response = send(&pool).await;
        // Its body unread: the connection cannot carry another request.
        drop(response);
        assert_eq!(idle(&pool), 0);
        drop(pool);
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the connection is closed")
            .unwrap();
    }

    #[tokio::test]
    async fn a_response_dropped_unread_does_not_give_its_connection_back() {
        is_not_given_back_unread::<Empty<Bytes>>().await;
        is_not_given_back_unread::<http_body_util::Full<Bytes>>().await;
    }

    /// An upstream that answers the first request on each connection and closes the
    /// connection when the next one comes, without answering (as one whose keep-alive timeout
    /// fires just then): how many connections it took.
    async fn closing_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    let mut request = Vec::new();
                    for answer in [true, false] {
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buffer[..n]),
                            }
                        }
                        request.clear();
                        if answer {
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            stream.write_all(ok).await.unwrap();
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn a_replayable_request_whose_kept_alive_connection_closes_unanswered_goes_on_another() {
        let (addr, accepted) = closing_upstream().await;
        let pool = pool::<Empty<Bytes>>(addr, Duration::from_secs(60));
        assert_eq!(get(&pool).await, "ok");
        // The kept connection takes the next request and closes: the request goes again.
        assert_eq!(get(&pool).await, "ok");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        // Not replayable: the failure is the answer.
        let failed = pool.send(request(), &[], false).await;
        assert!(matches!(
            failed,
            Err(SendError::Inline(h1::Error::Closed(_)))
        ));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    fn sized_request() -> http::Request<http_body_util::Full<Bytes>> {
        http::Request::post("/")
            .header(http::header::HOST, "upstream")
            .header(http::header::CONTENT_LENGTH, "1")
            .body(http_body_util::Full::new(Bytes::from_static(b"x")))
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_of_declared_length_goes_in_line_and_a_half_sent_one_is_not_sent_again() {
        let (addr, accepted) = closing_upstream().await;
        let pool = pool::<http_body_util::Full<Bytes>>(addr, Duration::from_secs(60));
        let Ok(response) = pool.send(sized_request(), &[], true).await else {
            panic!("the upstream answers");
        };
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "ok"
        );
        // In line: its connection went back to the in-line pool, not to hyper's.
        assert_eq!(pool.inner.lock_inline().len(), 1);
        assert_eq!(pool.inner.lock().len(), 0);
        // The kept connection takes the next one, body and all, and closes unanswered: the
        // body was sent, so even a replayable request is not sent again.
        let failed = pool.send(sized_request(), &[], true).await;
        assert!(matches!(failed, Err(SendError::Inline(h1::Error::Io(_)))));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
