//! What a gRPC request body may hold before tonic decodes it. tonic reserves room for a
//! message as soon as its 5-byte prefix declares its length, so a stranger declaring
//! megabytes on hundreds of streams could make the server reserve gigabytes having sent
//! kilobytes. Here a message's bytes are gathered until the whole message has arrived
//! and only then handed on, so what is held never exceeds what was sent; a declared
//! length over the method's limit is refused at once; and the bytes of messages still
//! arriving, across all connections, stay within one budget, which also pays for the
//! calls left waiting on their client (their headers and state), so that streams opened
//! and never finished cannot add up beyond it either. The first such call of each
//! connection waits free: a client on a connection of its own is served however full
//! the budget, at a cost bounded by the connection cap.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Status, codegen::http};

use crate::activity::{Activity, WaitingPlace, connection_activity};

/// gRPC's message prefix: a compression flag and a 4-byte big-endian length.
const PREFIX: usize = 5;
/// A request carrying no credential may send no more than this: health checks and
/// reflection need far less, and every other call without one is refused anyway.
const ANONYMOUS_LIMIT: usize = 16 * 1024;
/// Most calls: a verification with every scope and cost unit at its bound is ~130 KiB.
const DEFAULT_LIMIT: usize = 256 * 1024;
/// A key written whole (metadata, credits, refills and limits at their bounds).
const KEY_WRITE_LIMIT: usize = 1024 * 1024;
/// What a call waiting on its client holds beside its headers and message bytes (h2's
/// stream, the call's future and its tracing): `tests/e2e/transport.rs` measures about
/// 23 KiB in a debug build and fails above this; charged to the budget while it waits.
const WAITING_CALL_COST: usize = 32 * 1024;
/// What HPACK counts per header field beside its name and value (RFC 7541, 4.1).
const HEADER_FIELD_OVERHEAD: usize = 32;

/// The largest message a call of `path` may send.
fn limit_for(path: &str) -> usize {
    match path {
        "/keyward.v1.ApiKeyService/CreateApiKey" | "/keyward.v1.ApiKeyService/UpdateApiKey" => KEY_WRITE_LIMIT,
        _ => DEFAULT_LIMIT,
    }
}

/// What a call waiting on its client is charged: its decoded headers and its state.
fn waiting_cost<B>(request: &http::Request<B>) -> usize {
    let headers: usize =
        request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + HEADER_FIELD_OVERHEAD).sum();
    WAITING_CALL_COST + headers + request.uri().path().len()
}

fn has_credential<B>(request: &http::Request<B>) -> bool {
    let headers = request.headers();
    headers.contains_key(http::header::AUTHORIZATION) || headers.contains_key("token")
}

/// Bounds the request bodies of the services it wraps.
#[derive(Debug, Clone)]
pub(crate) struct MessageLimitsLayer {
    budget: Arc<Semaphore>,
}

impl MessageLimitsLayer {
    pub(crate) fn new(budget_bytes: u64) -> Self {
        let permits = usize::try_from(budget_bytes).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Self { budget: Arc::new(Semaphore::new(permits)) }
    }
}

impl<S> tower::Layer<S> for MessageLimitsLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Limited { inner, budget: Arc::clone(&self.budget) }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Limited<S> {
    inner: S,
    budget: Arc<Semaphore>,
}

impl<S, B> tower::Service<http::Request<B>> for Limited<S>
where
    S: tower::Service<http::Request<BoundedBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limit = if has_credential(&request) { limit_for(request.uri().path()) } else { ANONYMOUS_LIMIT };
        let budget = Arc::clone(&self.budget);
        let waiting_cost = waiting_cost(&request);
        let connection = connection_activity(&request);
        self.inner.call(request.map(|body| BoundedBody {
            inner: body,
            limit,
            waiting_cost: Some(waiting_cost),
            connection,
            free_place: None,
            gathered: BytesMut::new(),
            budget,
            held: None,
        }))
    }
}

/// A request body that yields whole gRPC messages only.
pub(crate) struct BoundedBody<B> {
    inner: B,
    limit: usize,
    /// Charged when the call first waits on its client (taken then).
    waiting_cost: Option<usize>,
    /// The call's connection, whose free place the call may take instead.
    connection: Option<Arc<Activity>>,
    free_place: Option<WaitingPlace>,
    /// Bytes of a message not yet complete.
    gathered: BytesMut,
    budget: Arc<Semaphore>,
    /// The budget the call has used so far (its waiting cost, once it waited, and the
    /// bytes gathered); returned when the body is dropped.
    held: Option<OwnedSemaphorePermit>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn declared_length(bytes: &[u8]) -> Option<usize> {
    let prefix: [u8; 4] = bytes.get(1..PREFIX)?.try_into().ok()?;
    usize::try_from(u32::from_be_bytes(prefix)).ok()
}

impl<B> BoundedBody<B> {
    fn too_large(&self, declared: usize) -> BoxError {
        let message = if self.limit == ANONYMOUS_LIMIT {
            format!(
                "a request message of {declared} bytes needs credentials (authorization or token metadata); \
                 without them the limit is {ANONYMOUS_LIMIT} bytes"
            )
        } else {
            format!("the request message of {declared} bytes exceeds this method's limit of {} bytes", self.limit)
        };
        let status = if self.limit == ANONYMOUS_LIMIT {
            Status::unauthenticated(message)
        } else {
            Status::resource_exhausted(message)
        };
        Box::new(status)
    }

    /// The next whole message of `gathered`, or an error if its prefix declares too much.
    fn next_message(&mut self) -> Option<Result<Bytes, BoxError>> {
        let declared = declared_length(&self.gathered)?;
        if declared > self.limit {
            return Some(Err(self.too_large(declared)));
        }
        (self.gathered.len() >= PREFIX + declared).then(|| Ok(self.gathered.split_to(PREFIX + declared).freeze()))
    }

    /// Takes `bytes` more of the budget for as long as the body lives.
    fn charge(&mut self, bytes: usize) -> Result<(), BoxError> {
        let needed = u32::try_from(bytes).map_err(|_| self.too_large(bytes))?;
        let permit = Arc::clone(&self.budget).try_acquire_many_owned(needed).map_err(|_| -> BoxError {
            Box::new(Status::resource_exhausted(
                "the server holds too many partly received requests (KEYWARD_REQUEST_BUFFER_BYTES); retry shortly",
            ))
        })?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }

    /// Keeps `data` until its message is whole, within the budget.
    fn gather(&mut self, data: &Bytes) -> Result<(), BoxError> {
        self.charge(data.len())?;
        self.gathered.extend_from_slice(data);
        Ok(())
    }
}

impl<B> Body for BoundedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(message) = self.next_message() {
                return Poll::Ready(Some(message.map(Frame::data)));
            }
            let polled = Pin::new(&mut self.inner).poll_frame(cx);
            if polled.is_pending()
                && let Some(cost) = self.waiting_cost.take()
            {
                // The call now waits on its client: from here it holds its connection's
                // free place or is paid for, and refused if the budget cannot.
                self.free_place = self.connection.as_ref().and_then(Activity::take_waiting_place);
                if self.free_place.is_none() {
                    self.charge(cost)?;
                }
            }
            let Some(frame) = ready!(polled) else {
                // What is left is an incomplete message: tonic reports it as such.
                let rest = std::mem::take(&mut self.gathered);
                return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest.freeze()))));
            };
            let data = match frame.map_err(Into::into)?.into_data() {
                Ok(data) => data,
                Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
            };
            // The common case, one whole message in one chunk, is passed on as it came.
            if self.gathered.is_empty()
                && let Some(declared) = declared_length(&data)
            {
                if declared > self.limit {
                    return Poll::Ready(Some(Err(self.too_large(declared))));
                }
                if data.len() == PREFIX + declared {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            }
            if data.has_remaining() {
                self.gather(&data)?;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.gathered.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
