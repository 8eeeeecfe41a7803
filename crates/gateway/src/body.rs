//! The bodies the gateway handles ([`UpstreamBody`] up, [`UpstreamResponseBody`] back,
//! [`EdgeBody`] out), and an upstream's response body on its way to the client: its first
//! frame is read before the response is handed on, so that a body that fails at once (a malformed first chunk) or
//! never starts is answered with a 502 or 504 while no byte of the response has gone out;
//! after that each read may wait at most the read timeout (nginx's `proxy_read_timeout`),
//! so a body that stalls is cut off instead of holding the client until the upstream closes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// What is sent upstream: the client's body streamed, or one the gateway holds whole (a
/// mirrored request's, read once for both upstreams; none, for its own probes), cut off at
/// `MAX_BODY_BYTES`.
pub type UpstreamBody = http_body_util::Limited<
    http_body_util::Either<hyper::body::Incoming, http_body_util::Full<Bytes>>,
>;

/// An upstream's response body, streamed back (its first frame read before the response goes
/// on, and every read within the read timeout).
pub type UpstreamResponseBody = TimedBody<crate::pool::PooledBody<UpstreamBody>>;

/// The body of the gateway's responses: an upstream's, or one of its own.
pub type EdgeBody = http_body_util::Either<UpstreamResponseBody, axum::body::Body>;

/// How much of a refused request's body is read and thrown away, at most.
const DISCARD_BYTES: u64 = 16 * 1024 * 1024;
/// How long a refused request's body is read and thrown away, at most.
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads and throws away, in the background, the body of a request answered without it (a
/// `Content-Length` over `MAX_BODY_BYTES`), up to [`DISCARD_BYTES`] and [`DISCARD_TIME`]: a
/// client still sending it then reads the answer, instead of having the connection closed
/// under it and its next write reset it, which can lose the answer (RFC 9112 §9.6; nginx's
/// lingering close). A body that ends within the bounds even leaves the connection usable.
pub fn discard(body: hyper::body::Incoming) {
    tokio::spawn(async move {
        let mut body = body;
        let mut read = 0u64;
        let _ = tokio::time::timeout(DISCARD_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |data| data.len() as u64);
                if read > DISCARD_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// Why a body could not be started.
#[derive(Debug)]
pub enum StartError {
    /// The upstream's body failed before its first byte (malformed framing, a reset).
    Failed(String),
    /// No byte of the body came within the read timeout.
    TimedOut,
}

/// A body whose first frame is already read, and whose reads time out.
pub struct TimedBody<B> {
    first: Option<Frame<Bytes>>,
    body: B,
    idle: Duration,
    /// Set while a read waits; reset (not reallocated) for the next one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    waiting: bool,
}

/// The body's error: the upstream's, or the read timeout.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The read timeout ran out in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no body bytes for {0:?}")]
pub struct ReadTimeout(Duration);

impl<B> TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Reads the first frame of `body` (within `idle`), unless it has none.
    pub async fn start(mut body: B, idle: Duration) -> Result<Self, StartError> {
        let first = if body.is_end_stream() {
            None
        } else {
            match tokio::time::timeout(idle, body.frame()).await {
                Ok(Some(Ok(frame))) => Some(frame),
                Ok(None) => None,
                Ok(Some(Err(error))) => {
                    return Err(StartError::Failed(error.into().to_string()));
                }
                Err(_) => return Err(StartError::TimedOut),
            }
        };
        Ok(Self {
            first,
            body,
            idle,
            timer: None,
            waiting: false,
        })
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(polled) => {
                this.waiting = false;
                Poll::Ready(polled.map(|result| result.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                if !this.waiting {
                    this.waiting = true;
                    match &mut this.timer {
                        Some(timer) => timer.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
                match this.timer.as_mut().map(|timer| timer.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => {
                        Poll::Ready(Some(Err(Box::new(ReadTimeout(this.idle)))))
                    }
                    _ => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.body.size_hint();
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        let mut sum = SizeHint::new();
        sum.set_lower(hint.lower() + first);
        if let Some(upper) = hint.upper() {
            sum.set_upper(upper + first);
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    type Frames =
        StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>;

    fn frames(
        items: Vec<Result<&'static str, &'static str>>,
        stall_after: Option<usize>,
    ) -> Frames {
        use futures_util::StreamExt;
        let stream = futures_util::stream::iter(items.into_iter().map(|item| {
            item.map(|text| Frame::data(Bytes::from_static(text.as_bytes())))
                .map_err(std::io::Error::other)
        }));
        let stream = match stall_after {
            Some(n) => stream
                .take(n)
                .chain(futures_util::stream::pending())
                .boxed(),
            None => stream.boxed(),
        };
        StreamBody::new(stream)
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_frame_is_read_before_the_response_goes_on() {
        let started =
            TimedBody::start(frames(vec![Ok("a"), Ok("b")], None), Duration::from_secs(1))
                .await
                .unwrap();
        let collected = started.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "ab");
        let failed = TimedBody::start(
            frames(vec![Err("bad chunk size")], None),
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(failed, Err(StartError::Failed(why)) if why.contains("bad chunk")));
        let silent = TimedBody::start(frames(vec![], Some(0)), Duration::from_secs(1)).await;
        assert!(matches!(silent, Err(StartError::TimedOut)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_is_cut_off_after_the_read_timeout() {
        let mut body = TimedBody::start(
            frames(vec![Ok("a"), Ok("b")], Some(1)),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        let stalled = body.frame().await.unwrap().unwrap_err();
        assert!(stalled.is::<ReadTimeout>(), "{stalled}");
    }
}
