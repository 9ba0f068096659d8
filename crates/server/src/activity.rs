//! Whether a connection is in use, judged by calls rather than bytes: an HTTP/2 client
//! that answers the server's pings sends bytes forever without calling anything. Each
//! call is counted on its connection (for the idle timeout) and on its listener (so a
//! shutdown knows when nothing is left in flight, whatever idle sockets remain).

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use http_body::{Body, Frame, SizeHint};
use tokio::{sync::Notify, time::Instant};
use tonic::{codegen::http, transport::server::TlsConnectInfo};

/// The calls of one connection.
#[derive(Debug)]
pub(crate) struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` of the last call's start or end, plus one (0: no call yet).
    last_call: AtomicU64,
    /// Whether a call holds the connection's one free place to wait on its client.
    waiting: AtomicBool,
}

/// A connection's one free place for a call waiting on its client (see
/// `message_limits`), given back when dropped.
#[derive(Debug)]
pub(crate) struct WaitingPlace(Arc<Activity>);

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        self.0.waiting.store(false, Ordering::Release);
    }
}

/// When a connection may next be found idle.
pub(crate) enum Idleness {
    /// A call is in flight.
    Busy,
    /// No call yet since the connection opened at this instant.
    NeverCalled(Instant),
    /// The last call started or ended at this instant.
    LastCall(Instant),
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_call: AtomicU64::new(0),
            waiting: AtomicBool::new(false),
        }
    }

    /// Takes the connection's free place for a call waiting on its client, if no other
    /// call holds it.
    pub(crate) fn take_waiting_place(self: &Arc<Self>) -> Option<WaitingPlace> {
        self.waiting
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| WaitingPlace(Arc::clone(self)))
    }

    pub(crate) fn idleness(&self) -> Idleness {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Idleness::Busy;
        }
        match self.last_call.load(Ordering::Acquire) {
            0 => Idleness::NeverCalled(self.opened),
            stamp => Idleness::LastCall(self.opened + std::time::Duration::from_millis(stamp - 1)),
        }
    }

    fn stamp(&self) {
        let since = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_call.store(since + 1, Ordering::Release);
    }
}

/// What a connection tells the services about itself (tonic puts it in each request's
/// extensions).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    pub(crate) activity: Arc<Activity>,
}

/// The calls in flight on one listener, across its connections.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    calls: AtomicUsize,
    drained: Notify,
}

impl InFlight {
    /// Returns once no call is in flight (at once if none is).
    pub(crate) async fn drained(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.calls.load(Ordering::Acquire) == 0 {
                return;
            }
            drained.await;
        }
    }
}

/// Counts a call from its start until its response body is finished or dropped.
struct CallGuard {
    connection: Option<Arc<Activity>>,
    listener: Arc<InFlight>,
}

impl CallGuard {
    fn start(connection: Option<Arc<Activity>>, listener: Arc<InFlight>) -> Self {
        if let Some(activity) = &connection {
            activity.in_flight.fetch_add(1, Ordering::AcqRel);
            activity.stamp();
        }
        listener.calls.fetch_add(1, Ordering::AcqRel);
        Self { connection, listener }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if let Some(activity) = &self.connection {
            activity.stamp();
            activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        if self.listener.calls.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.listener.drained.notify_waiters();
        }
    }
}

/// Counts every call of the services it wraps on its connection and its listener.
#[derive(Debug, Clone)]
pub(crate) struct ActivityLayer(pub(crate) Arc<InFlight>);

impl<S> tower::Layer<S> for ActivityLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted { inner, listener: Arc::clone(&self.0) }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Counted<S> {
    inner: S,
    listener: Arc<InFlight>,
}

pub(crate) fn connection_activity<B>(request: &http::Request<B>) -> Option<Arc<Activity>> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectionInfo>()
        .or_else(|| extensions.get::<TlsConnectInfo<ConnectionInfo>>().map(TlsConnectInfo::get_ref))
        .map(|info| Arc::clone(&info.activity))
}

impl<S, B, R> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<CountedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let guard = CallGuard::start(connection_activity(&request), Arc::clone(&self.listener));
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| CountedBody { body, _guard: guard }))
        })
    }
}

/// A response body that keeps its call counted until it is sent or dropped.
pub(crate) struct CountedBody<B> {
    body: B,
    _guard: CallGuard,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
