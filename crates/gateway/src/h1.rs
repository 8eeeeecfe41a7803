//! A request and its response over one kept-alive HTTP/1.1 connection, written and read by
//! the task of the request itself.
//!
//! The connection's I/O is done in line: the head is written with one `send` (with the body
//! when it is small and already here), the response head read and parsed (httparse, as hyper
//! does) in the same turn of the worker that read the client's request, and the body read as
//! the client's connection asks for it. Hyper's client connection, by design, runs on a task
//! of its own and hands each request, response and body chunk across channels, which costs
//! wake-ups and scheduling rounds per request (measured in the README's benchmark section).
//!
//! A request body is sent only with a `Content-Length` (the pool gives chunked ones to hyper's
//! client): its frames are written as they come from the client, and while a write waits for
//! the upstream to take more, or the body for the client to send more, an answer that arrives
//! early (a 413, a 401, an upstream giving up) ends the sending and is the response; that
//! connection is not reused, as part of the body was never sent.
//!
//! The response's framing follows RFC 9112 §6.3: no body for `HEAD` and 1xx/204/304; a
//! `Transfer-Encoding` ending in `chunked` decoded; otherwise `Content-Length`; otherwise the
//! body ends when the upstream closes. A connection is reused only when its response was
//! complete, self-delimited, HTTP/1.1 and not `InlineConnection: close`, and nothing else arrived;
//! an idle connection on which anything arrives (the upstream closing it, or bytes it should
//! not have sent) is not reused.

use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Header lines a request is sent with in place of any of the same names it has (`None`:
/// without that header). For a request without a body they are written straight into the
/// head it is sent with; otherwise set in its header map first.
pub type SetHeaders = [(HeaderName, Option<HeaderValue>)];

/// Most header lines in a response (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Largest response head.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest chunk-size or trailer line of a chunked body.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// How much is read at a time.
const READ_BYTES: usize = 16 * 1024;
/// Largest first piece of a body copied beside the head, to go out in one write.
const WITH_HEAD_BYTES: usize = 16 * 1024;

/// A request body's error, as its type gives it.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// How a response could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection closed (or was reset) before any byte of the response came: the
    /// upstream dropped a kept-alive connection as the request went out, or failed before
    /// answering.
    #[error("the connection closed before a response: {0}")]
    Closed(String),
    /// Reading or writing failed once the response had begun.
    #[error("connection error: {0}")]
    Io(std::io::Error),
    /// What the upstream sent is not a valid HTTP/1.1 response.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The request's own body failed (the client went away, or sent more than allowed).
    #[error("the request body failed: {0}")]
    Body(BodyError),
}

/// One connection to an upstream, between requests.
pub struct InlineConnection {
    io: TcpStream,
    /// Read but not yet used (empty between requests).
    read: BytesMut,
    /// The request head being written; kept for its capacity.
    write: Vec<u8>,
}

impl InlineConnection {
    /// A new connection over `io`. (Boxed once for its lifetime: it moves with every request
    /// and response, through the pool and each layer of the gateway.)
    pub fn new(io: TcpStream) -> Box<Self> {
        Box::new(Self {
            io,
            read: BytesMut::new(),
            write: Vec::new(),
        })
    }

    /// Whether an idle connection can carry another request: the upstream has not closed it
    /// and has sent nothing since the last response. Costs no system call unless something
    /// arrived.
    pub fn is_reusable(&mut self) -> bool {
        match self
            .io
            .poll_read_ready(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last read; look.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends a request without a body (`head`: its method, origin-form target and headers,
    /// `Host` among them; `set`: header lines in place of any of the same names in `head`)
    /// and reads the response's head; the body follows in the [`Body`].
    pub async fn send(
        mut self: Box<Self>,
        head: &http::request::Parts,
        set: &SetHeaders,
    ) -> Result<http::Response<Body>, Error> {
        self.write_head(head, set);
        if let Err(error) = self.io.write_all(&self.write).await {
            return Err(Error::Closed(error.to_string()));
        }
        self.read_response(&head.method, true).await
    }

    /// Sends a request whose body is `body`, as long as `head`'s `Content-Length` says, and
    /// reads the response's head. `unsent` holds a piece of the body already taken from it
    /// but not sent: [`Error::Closed`] means nothing of the request was written (the
    /// connection was found closed), so it can go on another connection with `body` and
    /// `unsent` as they are left; any other error leaves the request half sent.
    pub async fn send_with_body<B>(
        mut self: Box<Self>,
        head: &http::request::Parts,
        set: &SetHeaders,
        body: &mut B,
        unsent: &mut Option<Bytes>,
    ) -> Result<http::Response<Body>, Error>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<BodyError>,
    {
        self.write_head(head, set);
        if unsent.is_none() {
            // A small body is usually here already, and goes out with the head.
            let mut noop = Context::from_waker(Waker::noop());
            match Pin::new(&mut *body).poll_frame(&mut noop) {
                Poll::Ready(Some(Ok(frame))) => *unsent = frame.into_data().ok(),
                Poll::Ready(Some(Err(error))) => return Err(Error::Body(error.into())),
                Poll::Ready(None) | Poll::Pending => {}
            }
        }
        let with_head = unsent.as_ref().filter(|data| data.len() <= WITH_HEAD_BYTES);
        if let Some(data) = with_head {
            self.write.extend_from_slice(data);
        }
        let sent_with_head = with_head.is_some();
        let mut head_bytes = std::mem::take(&mut self.write);
        let written = self.write_watching(&head_bytes, 0).await;
        head_bytes.clear();
        self.write = head_bytes;
        match written {
            Ok(Sending::Done) => {}
            Ok(Sending::Answered) => return sent(self.read_response(&head.method, false).await),
            Err((0, error)) => return Err(Error::Closed(error.to_string())),
            Err((_, error)) => return Err(Error::Io(error)),
        }
        if sent_with_head {
            *unsent = None;
        }
        // The rest of the body, as it comes, unless the upstream answers first.
        loop {
            let data = match unsent.take() {
                Some(data) => data,
                None => match self.next_data(body).await? {
                    Next::Data(data) => data,
                    Next::End => break,
                    Next::Answered => {
                        return sent(self.read_response(&head.method, false).await);
                    }
                },
            };
            match self.write_watching(&data, 1).await {
                Ok(Sending::Done) => {}
                Ok(Sending::Answered) => {
                    return sent(self.read_response(&head.method, false).await);
                }
                Err((_, error)) => return Err(Error::Io(error)),
            }
        }
        sent(self.read_response(&head.method, true).await)
    }

    /// Writes all of `bytes`, unless the upstream answers (or closes) while the writing has
    /// to wait for it. An error comes with how much was written (`already` added).
    async fn write_watching(
        &mut self,
        bytes: &[u8],
        already: usize,
    ) -> Result<Sending, (usize, std::io::Error)> {
        let mut written = 0;
        std::future::poll_fn(|cx| {
            while written < bytes.len() {
                match Pin::new(&mut self.io).poll_write(cx, &bytes[written..]) {
                    Poll::Ready(Ok(0)) => {
                        let error = std::io::ErrorKind::WriteZero.into();
                        return Poll::Ready(Err((already + written, error)));
                    }
                    Poll::Ready(Ok(n)) => written += n,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err((already + written, error))),
                    Poll::Pending => match ready!(self.poll_answer(cx)) {
                        Ok(true) => return Poll::Ready(Ok(Sending::Answered)),
                        Ok(false) => {}
                        Err(error) => return Poll::Ready(Err((already + written, error))),
                    },
                }
            }
            Poll::Ready(Ok(Sending::Done))
        })
        .await
    }

    /// The body's next piece of data; while it is not here, an answer from the upstream ends
    /// the waiting.
    async fn next_data<B>(&mut self, body: &mut B) -> Result<Next, Error>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<BodyError>,
    {
        std::future::poll_fn(|cx| {
            loop {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if data.is_empty() => {}
                        Ok(data) => return Poll::Ready(Ok(Next::Data(data))),
                        // Trailers: HTTP/1.1 with a Content-Length has nowhere to put them.
                        Err(_) => {}
                    },
                    Poll::Ready(Some(Err(error))) => {
                        return Poll::Ready(Err(Error::Body(error.into())));
                    }
                    Poll::Ready(None) => return Poll::Ready(Ok(Next::End)),
                    Poll::Pending => match ready!(self.poll_answer(cx)) {
                        Ok(true) => return Poll::Ready(Ok(Next::Answered)),
                        Ok(false) => {}
                        Err(error) => return Poll::Ready(Err(Error::Io(error))),
                    },
                }
            }
        })
        .await
    }

    /// While the request still goes out and has to wait: what the upstream sends meanwhile.
    /// `true` once it has answered or closed (read_response says which); `false` when only
    /// interim responses came (`100 Continue`, dropped), and the sending goes on.
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<bool>> {
        Poll::Ready(match ready!(self.poll_read(cx)) {
            Ok(0) => Ok(true),
            Ok(_) => Ok(self.answered()),
            Err(error) => Err(error),
        })
    }

    /// Whether what arrived while the request was still going out is an answer: a complete
    /// final response head, or something that is no response at all (read_response says
    /// what). Interim responses (`100 Continue` for a forwarded `Expect`, `103 Early Hints`)
    /// are dropped; part of a head is not an answer yet.
    fn answered(&mut self) -> bool {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.read) {
                Ok(httparse::Status::Complete(length))
                    if parsed
                        .code
                        .is_some_and(|code| (100..200).contains(&code) && code != 101) =>
                {
                    self.read.advance(length);
                }
                Ok(httparse::Status::Partial) => return self.read.len() >= MAX_HEAD_BYTES,
                Ok(httparse::Status::Complete(_)) | Err(_) => return true,
            }
        }
    }

    /// Reads the response's head (the body follows in the [`Body`]). `complete`: whether the
    /// whole request was sent (else the connection is not kept after this response).
    async fn read_response(
        mut self: Box<Self>,
        method: &Method,
        complete: bool,
    ) -> Result<http::Response<Body>, Error> {
        let mut received = !self.read.is_empty();
        loop {
            if let Some((parts, framing, keep_alive)) = self.parse_head(method)? {
                let body = Body {
                    connection: Some(self),
                    framing,
                    keep_alive: keep_alive && complete,
                    complete: false,
                };
                return Ok(http::Response::from_parts(parts, body));
            }
            if self.read.len() >= MAX_HEAD_BYTES {
                return Err(Error::Invalid("response head too large"));
            }
            match std::future::poll_fn(|cx| self.poll_read(cx)).await {
                Ok(0) if !received => return Err(Error::Closed("end of stream".to_owned())),
                Ok(0) => return Err(Error::Invalid("incomplete response head")),
                Ok(_) => received = true,
                Err(error) if !received => return Err(Error::Closed(error.to_string())),
                Err(error) => return Err(Error::Io(error)),
            }
        }
    }

    fn write_head(&mut self, head: &http::request::Parts, set: &SetHeaders) {
        let out = &mut self.write;
        out.clear();
        out.extend_from_slice(head.method.as_str().as_bytes());
        out.push(b' ');
        let target = head
            .uri
            .path_and_query()
            .map_or("/", |target| target.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let lines = head
            .headers
            .iter()
            .filter(|(name, _)| !set.iter().any(|(replaced, _)| replaced == *name))
            .chain(
                set.iter()
                    .filter_map(|(name, value)| Some((name, value.as_ref()?))),
            );
        for (name, value) in lines {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Reads what the upstream has sent into `read`: how many bytes (0 at its end).
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        self.read.reserve(READ_BYTES);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// The response's head once all of it has been read (informational responses skipped),
    /// with its body's framing and whether the connection may be kept.
    fn parse_head(
        &mut self,
        method: &Method,
    ) -> Result<Option<(http::response::Parts, Framing, bool)>, Error> {
        loop {
            // Left uninitialised (as hyper does): filling 100 slots would cost more than
            // parsing the few lines there are.
            let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let parser = httparse::ParserConfig::default();
            let length = match parser.parse_response_with_uninit_headers(
                &mut parsed,
                &self.read,
                &mut slots,
            ) {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(Error::Invalid("too many header lines"));
                }
                Err(_) => return Err(Error::Invalid("malformed response head")),
            };
            let status = StatusCode::from_u16(parsed.code.unwrap_or_default())
                .map_err(|_| Error::Invalid("invalid status code"))?;
            if status.is_informational() {
                // 100 Continue, 103 Early Hints: the answer follows. (A 101 cannot have been
                // asked for: `Upgrade` is never forwarded.)
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(Error::Invalid("unrequested protocol switch"));
                }
                self.read.advance(length);
                continue;
            }
            let mut headers = HeaderMap::with_capacity(parsed.headers.len());
            let mut declared: Option<u64> = None;
            let mut transfer_encoded = false;
            let mut chunked = false;
            let mut keep_alive = parsed.version == Some(1);
            // The values share one copy of the head instead of a copy each.
            let head = Bytes::copy_from_slice(&self.read[..length]);
            let start = self.read.as_ptr() as usize;
            for line in parsed.headers.iter() {
                let name = HeaderName::from_bytes(line.name.as_bytes())
                    .map_err(|_| Error::Invalid("invalid header name"))?;
                let offset = line.value.as_ptr() as usize - start;
                let value =
                    HeaderValue::from_maybe_shared(head.slice(offset..offset + line.value.len()))
                        .map_err(|_| Error::Invalid("invalid header value"))?;
                if name == header::CONTENT_LENGTH {
                    let length = parse_length(line.value)?;
                    if declared.is_some_and(|seen| seen != length) {
                        return Err(Error::Invalid("conflicting Content-Length"));
                    }
                    declared = Some(length);
                } else if name == header::TRANSFER_ENCODING {
                    // The last coding decides: anything but `chunked` is read to the end of
                    // the connection.
                    transfer_encoded = true;
                    chunked = line
                        .value
                        .rsplit(|b| *b == b',')
                        .next()
                        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                } else if name == header::CONNECTION {
                    if has_token(line.value, b"close") {
                        keep_alive = false;
                    }
                    // About this connection only, and read here: not passed on, unless it
                    // names other headers as connection-specific (left for the caller to
                    // remove with them).
                    if only_tokens(line.value, &[b"close", b"keep-alive"]) {
                        continue;
                    }
                }
                headers.append(name, value);
            }
            let framing = if *method == Method::HEAD
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
            {
                Framing::Length(0)
            } else if transfer_encoded {
                if declared.is_some() {
                    // Both framings (a request smuggling pattern): `Transfer-Encoding` wins and
                    // the connection is not reused (RFC 9112 §6.3).
                    headers.remove(header::CONTENT_LENGTH);
                    keep_alive = false;
                }
                if chunked {
                    Framing::Chunked(Chunk::Size)
                } else {
                    Framing::Close
                }
            } else if let Some(length) = declared {
                Framing::Length(length)
            } else {
                Framing::Close
            };
            if matches!(framing, Framing::Close) {
                keep_alive = false;
            }
            self.read.advance(length);
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.status = status;
            parts.headers = headers;
            return Ok(Some((parts, framing, keep_alive)));
        }
    }
}

/// A response to a request of which something was written: a connection closed before the
/// answer is no longer [`Error::Closed`], which says that the request may go elsewhere.
fn sent(result: Result<http::Response<Body>, Error>) -> Result<http::Response<Body>, Error> {
    result.map_err(|error| match error {
        Error::Closed(why) => Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the connection closed before a response: {why}"),
        )),
        other => other,
    })
}

/// How writing a piece of a request ended.
enum Sending {
    /// All of it was written.
    Done,
    /// The upstream answered (or closed) before all of it could be.
    Answered,
}

/// What came of waiting for the request body's next piece.
enum Next {
    Data(Bytes),
    End,
    /// The upstream answered (or closed) first.
    Answered,
}

/// Whether a comma-separated header value lists `token` (case-insensitively).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether a comma-separated header value lists nothing but some of `tokens`.
fn only_tokens(value: &[u8], tokens: &[&[u8]]) -> bool {
    value.split(|b| *b == b',').all(|item| {
        let item = item.trim_ascii();
        item.is_empty() || tokens.iter().any(|token| item.eq_ignore_ascii_case(token))
    })
}

/// A `Content-Length` value: digits only.
fn parse_length(value: &[u8]) -> Result<u64, Error> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(Error::Invalid("invalid Content-Length"));
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(Error::Invalid("invalid Content-Length"))
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// After this many more bytes.
    Length(u64),
    /// With the last chunk (and trailers, which are read and dropped).
    Chunked(Chunk),
    /// When the upstream closes the connection.
    Close,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Within a chunk's data: this many bytes left.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk, at a trailer line (the empty one ends the body).
    Trailers,
}

/// A response body, read from its connection as it is polled. Once read to its end, the
/// connection can be had back for the next request ([`Body::take_reusable`]).
pub struct Body {
    /// `None` once reading failed (the connection is dropped: closed).
    connection: Option<Box<InlineConnection>>,
    framing: Framing,
    keep_alive: bool,
    complete: bool,
}

impl Body {
    /// The connection, if the body has been read to its end and the connection may carry
    /// another request.
    pub fn take_reusable(&mut self) -> Option<Box<InlineConnection>> {
        if !self.complete || !self.keep_alive {
            return None;
        }
        // Bytes past the response: the upstream is out of step; do not reuse.
        self.connection.take().filter(|c| c.read.is_empty())
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.connection = None;
        Poll::Ready(Some(Err(error)))
    }

    fn finish(&mut self) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.complete = true;
        Poll::Ready(None)
    }

    /// `n` bytes from the read buffer as a frame.
    fn data(
        connection: &mut InlineConnection,
        n: usize,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Poll::Ready(Some(Ok(Frame::data(connection.read.split_to(n).freeze()))))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            if this.complete {
                return Poll::Ready(None);
            }
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let buffered = connection.read.len();
            match &mut this.framing {
                Framing::Length(0) => return this.finish(),
                Framing::Length(rest) if buffered > 0 => {
                    let n = buffered.min(usize::try_from(*rest).unwrap_or(usize::MAX));
                    *rest -= n as u64;
                    if *rest == 0 {
                        this.complete = true;
                    }
                    return Self::data(connection, n);
                }
                Framing::Chunked(Chunk::Data(rest)) if buffered > 0 => {
                    let n = buffered.min(usize::try_from(*rest).unwrap_or(usize::MAX));
                    *rest -= n as u64;
                    if *rest == 0 {
                        this.framing = Framing::Chunked(Chunk::DataEnd);
                    }
                    return Self::data(connection, n);
                }
                Framing::Close if buffered > 0 => return Self::data(connection, buffered),
                Framing::Chunked(Chunk::DataEnd) if buffered >= 2 => {
                    if &connection.read[..2] != b"\r\n" {
                        return this.fail(Error::Invalid("chunk data not followed by CRLF"));
                    }
                    connection.read.advance(2);
                    this.framing = Framing::Chunked(Chunk::Size);
                    continue;
                }
                Framing::Chunked(state @ (Chunk::Size | Chunk::Trailers)) => {
                    if let Some(end) = connection.read.windows(2).position(|w| w == b"\r\n") {
                        let line = connection.read.split_to(end + 2);
                        let line = &line[..end];
                        if *state == Chunk::Trailers {
                            if line.is_empty() {
                                return this.finish();
                            }
                            continue;
                        }
                        match chunk_size(line) {
                            Some(0) => *state = Chunk::Trailers,
                            Some(size) => *state = Chunk::Data(size),
                            None => return this.fail(Error::Invalid("invalid chunk size")),
                        }
                        continue;
                    }
                    if buffered > MAX_LINE_BYTES {
                        return this.fail(Error::Invalid("chunk-size or trailer line too long"));
                    }
                }
                // Nothing buffered to go on with: read more.
                _ => {}
            }
            match ready!(connection.poll_read(cx)) {
                Ok(0) if this.framing == Framing::Close => return this.finish(),
                Ok(0) => return this.fail(Error::Invalid("body cut short")),
                Ok(_) => {}
                Err(error) => return this.fail(Error::Io(error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.complete || self.framing == Framing::Length(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            _ if self.complete => SizeHint::with_exact(0),
            Framing::Length(rest) => SizeHint::with_exact(rest),
            _ => SizeHint::default(),
        }
    }
}

/// The size in a chunk-size line, read strictly (RFC 9112 §7.1): 1 to 15 hex digits at the
/// start of the line, then nothing, or a chunk extension (`;`, after optional spaces or tabs),
/// which is ignored. A sign, leading whitespace, trailing whitespace without an extension, or
/// anything else makes the line invalid.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let rest = &line[digits..];
    let after_spaces = rest.trim_ascii_start();
    if !rest.is_empty() && !after_spaces.starts_with(b";") {
        return None;
    }
    if rest
        .iter()
        .take_while(|b| b.is_ascii_whitespace())
        .any(|b| !matches!(b, b' ' | b'\t'))
    {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn chunk_sizes_are_read_strictly() {
        for (line, size) in [
            (&b"5"[..], Some(5)),
            (b"1a", Some(26)),
            (b"00ff", Some(255)),
            (b"5;name=value", Some(5)),
            (b"5 ;name", Some(5)),
            (b"5\t; name", Some(5)),
            (b"+5", None),
            (b"-5", None),
            (b" 5", None),
            (b"5 ", None),
            (b" 5 ", None),
            (b"0x5", None),
            (b"5x", None),
            (b"", None),
            (b";ext", None),
            (b"1000000000000000", None),
        ] {
            assert_eq!(
                chunk_size(line),
                size,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    /// What an upstream connection does with each request it reads.
    enum Step {
        /// Writes these pieces, a pause between them.
        Answer(Vec<&'static [u8]>),
        /// Closes the connection without answering.
        Close,
    }
    use Step::{Answer, Close};

    /// An upstream whose n-th connection takes the n-th script, one step per request (and
    /// closes after its last step); each request head it reads is sent on the channel.
    async fn upstream(scripts: Vec<Vec<Step>>) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (heads, heads_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            for script in scripts {
                let (mut stream, _) = listener.accept().await.unwrap();
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut read = Vec::new();
                    for step in script {
                        let mut buffer = [0u8; 4096];
                        let end = loop {
                            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                                break end + 4;
                            }
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => read.extend_from_slice(&buffer[..n]),
                            }
                        };
                        let head: Vec<u8> = read.drain(..end).collect();
                        let _ = heads.send(String::from_utf8(head).unwrap());
                        match step {
                            Close => return,
                            Answer(pieces) => {
                                for piece in pieces {
                                    stream.write_all(piece).await.unwrap();
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, heads_rx)
    }

    use std::net::SocketAddr;

    async fn connect(addr: SocketAddr) -> Box<InlineConnection> {
        InlineConnection::new(TcpStream::connect(addr).await.unwrap())
    }

    fn head(method: Method, target: &str) -> http::request::Parts {
        let (mut parts, ()) = http::Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, "upstream:8081")
            .header("x-request-id", "r-1")
            .body(())
            .unwrap()
            .into_parts();
        parts
            .headers
            .append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        parts
    }

    /// Sends `GET /` on `connection`: the status, headers, body, and the connection if it may
    /// be reused.
    async fn get(
        connection: Box<InlineConnection>,
        method: Method,
    ) -> (
        StatusCode,
        HeaderMap,
        Result<Bytes, Error>,
        Option<Box<InlineConnection>>,
    ) {
        let response = connection.send(&head(method, "/a?b=1"), &[]).await.unwrap();
        let (parts, mut body) = response.into_parts();
        let mut data = BytesMut::new();
        let read = loop {
            match body.frame().await {
                None => break Ok(data.freeze()),
                Some(Ok(frame)) => data.extend_from_slice(&frame.into_data().unwrap()),
                Some(Err(error)) => break Err(error),
            }
        };
        (parts.status, parts.headers, read, body.take_reusable())
    }

    #[tokio::test]
    async fn the_request_head_goes_out_as_given_and_a_sized_body_comes_back_in_pieces() {
        let (addr, mut heads) = upstream(vec![vec![
            Answer(vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\nX-A: 2\r\n\r\nhel",
                b"lo ",
                b"world",
            ]),
            Answer(vec![b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"]),
        ]])
        .await;
        let (status, headers, body, reusable) = get(connect(addr).await, Method::GET).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.unwrap(), "hello world");
        assert_eq!(
            headers.get_all("x-a").iter().collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(
            heads.recv().await.unwrap(),
            "GET /a?b=1 HTTP/1.1\r\nhost: upstream:8081\r\nx-request-id: r-1\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
        // The same connection carries the next request.
        let mut connection = reusable.expect("a complete response leaves the connection reusable");
        assert!(connection.is_reusable());
        let (status, _, body, reusable) = get(connection, Method::DELETE).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::CREATED, Bytes::from("ok"))
        );
        assert!(reusable.is_some());
        assert!(
            heads
                .recv()
                .await
                .unwrap()
                .starts_with("DELETE /a?b=1 HTTP/1.1\r\n")
        );
    }

    #[tokio::test]
    async fn set_headers_replace_the_requests_own_of_the_same_name_or_remove_them() {
        let (addr, mut heads) =
            upstream(vec![vec![Answer(vec![b"HTTP/1.1 204 No Content\r\n\r\n"])]]).await;
        let set = [
            (
                header::HOST,
                Some(HeaderValue::from_static("accounts:8081")),
            ),
            (HeaderName::from_static("x-forwarded-for"), None),
            (
                HeaderName::from_static("x-forwarded-proto"),
                Some(HeaderValue::from_static("http")),
            ),
        ];
        let response = connect(addr)
            .await
            .send(&head(Method::GET, "/"), &set)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            heads.recv().await.unwrap(),
            "GET / HTTP/1.1\r\nx-request-id: r-1\r\nhost: accounts:8081\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_across_reads_with_extensions_and_trailers() {
        let (addr, _) = upstream(vec![vec![Answer(vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
            b"lo\r\n",
            b"6\r\n world\r\nA",
            b"\r\n0123456789\r\n0\r\nX-Trailer: t\r\n",
            b"\r\n",
        ])]])
        .await;
        let (_, headers, body, reusable) = get(connect(addr).await, Method::GET).await;
        assert_eq!(body.unwrap(), "hello world0123456789");
        assert!(headers.contains_key(header::TRANSFER_ENCODING));
        assert!(reusable.is_some());
    }

    #[tokio::test]
    async fn a_body_without_length_is_read_to_the_close_and_the_connection_not_kept() {
        let (addr, _) = upstream(vec![vec![Answer(vec![
            b"HTTP/1.1 200 OK\r\n\r\nall ",
            b"of it",
        ])]])
        .await;
        let (_, _, body, reusable) = get(connect(addr).await, Method::GET).await;
        assert_eq!(body.unwrap(), "all of it");
        assert!(reusable.is_none());
    }

    #[tokio::test]
    async fn head_204_and_304_have_no_body_whatever_their_headers_say() {
        let (addr, _) = upstream(vec![vec![
            Answer(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"]),
            Answer(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]),
            Answer(vec![
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            ]),
        ]])
        .await;
        let (status, headers, body, reusable) = get(connect(addr).await, Method::HEAD).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::new()));
        assert_eq!(headers[header::CONTENT_LENGTH], "5");
        let (status, _, body, reusable) = get(reusable.unwrap(), Method::GET).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::NO_CONTENT, Bytes::new())
        );
        let (status, _, body, reusable) = get(reusable.unwrap(), Method::GET).await;
        assert_eq!(
            (status, body.unwrap()),
            (StatusCode::NOT_MODIFIED, Bytes::new())
        );
        assert!(reusable.is_some());
    }

    #[tokio::test]
    async fn a_connection_header_is_read_and_dropped_unless_it_names_other_headers() {
        let (addr, _) = upstream(vec![vec![
            Answer(vec![b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"]),
            Answer(vec![b"HTTP/1.1 200 OK\r\nConnection: x-hop, close\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n"]),
        ]])
        .await;
        let (_, headers, _, reusable) = get(connect(addr).await, Method::GET).await;
        assert!(!headers.contains_key(header::CONNECTION));
        let (_, headers, _, reusable) = get(reusable.unwrap(), Method::GET).await;
        assert_eq!(headers[header::CONNECTION], "x-hop, close");
        assert!(reusable.is_none());
    }

    #[tokio::test]
    async fn informational_responses_are_skipped() {
        let (addr, _) = upstream(vec![vec![Answer(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ])]])
        .await;
        let (status, headers, body, _) = get(connect(addr).await, Method::GET).await;
        assert_eq!((status, body.unwrap()), (StatusCode::OK, Bytes::from("ok")));
        assert!(!headers.contains_key(header::LINK));
    }

    #[tokio::test]
    async fn connections_the_response_says_not_to_keep_are_not_kept() {
        let answers: [&'static [u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            // Both framings: chunked is believed, the length dropped, the connection not kept.
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            // More than the response: the upstream is out of step.
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
        ];
        let (addr, _) = upstream(answers.iter().map(|a| vec![Answer(vec![*a])]).collect()).await;
        for answer in answers {
            let (_, headers, body, reusable) = get(connect(addr).await, Method::GET).await;
            let text = String::from_utf8_lossy(answer);
            assert_eq!(body.unwrap(), "ok", "{text}");
            assert!(reusable.is_none(), "{text}");
            if text.contains("chunked") {
                assert!(!headers.contains_key(header::CONTENT_LENGTH));
            }
        }
    }

    #[tokio::test]
    async fn invalid_responses_fail_with_the_reason() {
        let heads: [(&'static [u8], &str); 4] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                "conflicting Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok",
                "invalid Content-Length",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "malformed response head"),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "unrequested protocol switch",
            ),
        ];
        let (addr, _) = upstream(heads.iter().map(|(a, _)| vec![Answer(vec![*a])]).collect()).await;
        for (answer, reason) in heads {
            let error = connect(addr)
                .await
                .send(&head(Method::GET, "/"), &[])
                .await
                .err();
            let text = String::from_utf8_lossy(answer);
            assert!(
                matches!(&error, Some(Error::Invalid(r)) if *r == reason),
                "{text}: {error:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_cut_short_or_badly_chunked_fails_and_the_connection_is_dropped() {
        let answers: [&'static [u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        ];
        let (addr, _) = upstream(answers.iter().map(|a| vec![Answer(vec![*a])]).collect()).await;
        for answer in answers {
            let (status, _, body, reusable) = get(connect(addr).await, Method::GET).await;
            let text = String::from_utf8_lossy(answer);
            assert_eq!(status, StatusCode::OK);
            assert!(body.is_err(), "{text}");
            assert!(reusable.is_none(), "{text}");
        }
    }

    #[tokio::test]
    async fn a_connection_closed_before_answering_says_so_and_an_idle_one_is_seen_closed() {
        let (addr, mut heads) = upstream(vec![
            vec![Close],
            vec![Answer(vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ])],
        ])
        .await;
        let error = connect(addr)
            .await
            .send(&head(Method::GET, "/"), &[])
            .await
            .err();
        assert!(matches!(error, Some(Error::Closed(_))), "{error:?}");
        heads.recv().await.unwrap();
        // The second connection: answered, then closed by the upstream (its script is done).
        let (_, _, body, reusable) = get(connect(addr).await, Method::GET).await;
        assert_eq!(body.unwrap(), "ok");
        let mut idle = reusable.unwrap();
        tokio::time::timeout(Duration::from_secs(5), async {
            while idle.is_reusable() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the upstream's close is noticed");
    }

    /// A request body of pieces given in advance (an error string fails it there), with its
    /// length as its size hint.
    struct Pieces {
        pieces: std::collections::VecDeque<Result<Bytes, &'static str>>,
        length: u64,
    }

    impl Pieces {
        fn new(pieces: Vec<Result<Bytes, &'static str>>) -> Self {
            let length = pieces.iter().flatten().map(|p| p.len() as u64).sum();
            Self {
                pieces: pieces.into(),
                length,
            }
        }
    }

    impl http_body::Body for Pieces {
        type Data = Bytes;
        type Error = BodyError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            Poll::Ready(
                self.pieces
                    .pop_front()
                    .map(|piece| piece.map(Frame::data).map_err(Into::into)),
            )
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.length)
        }
    }

    fn post(length: u64) -> http::request::Parts {
        let mut parts = head(Method::POST, "/upload");
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        parts
    }

    /// An upstream that reads each request's head and then as many body bytes as its
    /// `Content-Length` says, and answers with how many it read and their checksum; with
    /// `refuse_over`, a body longer than that is answered 413 at once, unread, and the
    /// connection closed.
    async fn reading_upstream(refuse_over: Option<usize>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut read = Vec::new();
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let end = loop {
                            if let Some(end) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                                break end + 4;
                            }
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => read.extend_from_slice(&buffer[..n]),
                            }
                        };
                        let head = String::from_utf8(read.drain(..end).collect()).unwrap();
                        let length: usize = head
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length: "))
                            .map_or(0, |length| length.parse().unwrap());
                        if refuse_over.is_some_and(|limit| length > limit) {
                            let _ = stream
                                .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
                                .await;
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            return;
                        }
                        if head.contains("expect: 100-continue") {
                            stream
                                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                                .await
                                .unwrap();
                        }
                        while read.len() < length {
                            match stream.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => read.extend_from_slice(&buffer[..n]),
                            }
                        }
                        let body: Vec<u8> = read.drain(..length).collect();
                        let sum: u64 = body.iter().map(|b| u64::from(*b)).sum();
                        let answer = format!("{length} {sum}");
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                            answer.len()
                        );
                        stream.write_all(response.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        addr
    }

    async fn read_all(
        response: http::Response<Body>,
    ) -> (StatusCode, Bytes, Option<Box<InlineConnection>>) {
        let (parts, mut body) = response.into_parts();
        let mut data = BytesMut::new();
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        (parts.status, data.freeze(), body.take_reusable())
    }

    #[tokio::test]
    async fn a_sized_body_goes_out_whole_small_or_large_and_the_connection_is_kept() {
        let addr = reading_upstream(None).await;
        let mut connection = connect(addr).await;
        let large: Vec<u8> = (0..3_000_000u32).map(|n| (n % 251) as u8).collect();
        let large_sum: u64 = large.iter().map(|b| u64::from(*b)).sum();
        let cases = [
            // Small: goes out with the head.
            (vec![Ok(Bytes::from_static(b"hello"))], "5 532"),
            // In pieces, large ones among them (writes wait for the upstream to read).
            (
                vec![
                    Ok(Bytes::from_static(b"a")),
                    Ok(Bytes::new()),
                    Ok(Bytes::from(large)),
                    Ok(Bytes::from_static(b"z")),
                ],
                &*format!("3000002 {}", large_sum + 97 + 122).leak(),
            ),
        ];
        for (pieces, expected) in cases {
            let mut body = Pieces::new(pieces);
            let mut unsent = None;
            let response = connection
                .send_with_body(&post(body.length), &[], &mut body, &mut unsent)
                .await
                .unwrap();
            let (status, answer, reusable) = read_all(response).await;
            assert_eq!((status, &answer[..]), (StatusCode::OK, expected.as_bytes()));
            assert!(unsent.is_none());
            connection = reusable.expect("a request sent whole leaves the connection reusable");
        }
        // A request without a body still goes on it.
        let (status, _, _, _) = get(connection, Method::GET).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_100_continue_while_the_body_goes_out_is_no_answer() {
        let addr = reading_upstream(None).await;
        let mut connection = connect(addr).await;
        for pieces in [
            vec![Ok(Bytes::from(vec![b'y'; 4_000_000]))],
            vec![Ok(Bytes::from_static(b"small"))],
        ] {
            let mut body = Pieces::new(pieces);
            let mut head = post(body.length);
            head.headers
                .insert(header::EXPECT, HeaderValue::from_static("100-continue"));
            let mut unsent = None;
            let response = tokio::time::timeout(
                Duration::from_secs(10),
                connection.send_with_body(&head, &[], &mut body, &mut unsent),
            )
            .await
            .expect("the final answer comes")
            .unwrap();
            let (status, answer, reusable) = read_all(response).await;
            assert_eq!(status, StatusCode::OK);
            assert!(answer.starts_with(format!("{} ", body.length).as_bytes()));
            connection = reusable.expect("the whole body went out: the connection is kept");
        }
    }

    #[tokio::test]
    async fn an_early_answer_ends_the_sending_and_the_connection_is_not_kept() {
        let addr = reading_upstream(Some(1024)).await;
        // Far more than the sockets' buffers hold: the writing has to wait, and sees the answer.
        let mut body = Pieces::new(vec![Ok(Bytes::from(vec![b'x'; 32 * 1024 * 1024]))]);
        let mut unsent = None;
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            connect(addr)
                .await
                .send_with_body(&post(body.length), &[], &mut body, &mut unsent),
        )
        .await
        .expect("the early answer is seen")
        .unwrap();
        let (status, answer, reusable) = read_all(response).await;
        assert_eq!(
            (status, &answer[..]),
            (StatusCode::PAYLOAD_TOO_LARGE, &b"big"[..])
        );
        assert!(reusable.is_none());
    }

    #[tokio::test]
    async fn a_failing_body_fails_the_request_with_its_error_and_not_as_closed() {
        let addr = reading_upstream(None).await;
        for pieces in [
            vec![Err("the client went away")],
            vec![Ok(Bytes::from_static(b"part")), Err("the client went away")],
        ] {
            let mut body = Pieces::new(pieces);
            let mut unsent = None;
            let Err(error) = connect(addr)
                .await
                .send_with_body(&post(10), &[], &mut body, &mut unsent)
                .await
            else {
                panic!("a failing body gave a response");
            };
            assert!(
                matches!(&error, Error::Body(why) if why.to_string() == "the client went away"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn a_connection_closed_before_anything_was_written_leaves_the_body_untouched() {
        // The upstream closes its end of each connection as soon as it is made.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                drop(stream);
            }
        });
        let mut connection = connect(addr).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while connection.is_reusable() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        // Written into a reset connection: the kernel refuses the write itself, or the
        // answer never comes. Either way the request is not half sent.
        let mut body = Pieces::new(vec![Ok(Bytes::from_static(b"kept"))]);
        let mut unsent = None;
        let Err(error) = connection
            .send_with_body(&post(4), &[], &mut body, &mut unsent)
            .await
        else {
            panic!("a closed connection gave a response");
        };
        match error {
            Error::Closed(_) => assert_eq!(unsent.as_deref(), Some(&b"kept"[..])),
            Error::Io(_) => assert!(unsent.is_none()),
            other => panic!("{other}"),
        }
    }
}
