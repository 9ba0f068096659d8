//! What one client connection may cost, on the gRPC and the HTTP listener alike: at most
//! `KEYWARD_MAX_CONNECTIONS` are open at once and `KEYWARD_MAX_CONNECTIONS_PER_PEER` from
//! one address; a connection must start its first call within
//! `KEYWARD_HEADER_READ_TIMEOUT` and is closed after `KEYWARD_IDLE_TIMEOUT` without a
//! call, so silent, trickling or merely pinging sockets cannot pile up.

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, ready},
    time::Duration,
};

use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    time::{Instant, Sleep},
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::{
    activity::{Activity, ActivityLayer, ConnectionInfo, Idleness, InFlight},
    config::ConnectionConfig,
};

/// How long accepting pauses after an accept error (say, out of file descriptors), so
/// the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

static ACCEPT_FAILURE_LINES: crate::log_lines::LineThrottle = crate::log_lines::LineThrottle::new();

/// Open connections per client address, shared by the accept loop and the connections.
#[derive(Debug)]
struct Peers {
    open: Mutex<HashMap<IpAddr, u32>>,
    cap: u32,
}

impl Peers {
    /// Counts a new connection from `peer`, unless it already holds the cap.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<PeerPlace> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(peer).or_default();
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(PeerPlace { peers: Arc::clone(self), peer })
    }
}

/// A connection's place under its address's cap, given back when it closes.
#[derive(Debug)]
struct PeerPlace {
    peers: Arc<Peers>,
    peer: IpAddr,
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// Accepts connections from `listener` while fewer than `max_connections` are open;
/// beyond that, new clients wait in the kernel's listen backlog until one closes. A
/// client address over its own cap is closed at once: waiting would hold everyone
/// behind it. The stream ends the listener when it is dropped (at shutdown).
pub(crate) fn incoming(
    listener: TcpListener,
    settings: &ConnectionConfig,
) -> ReceiverStream<Result<Connection, Infallible>> {
    let (accepted, stream) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(usize::try_from(settings.max_connections).unwrap_or(usize::MAX)));
    let peers = Arc::new(Peers { open: Mutex::default(), cap: settings.max_connections_per_peer });
    let timeouts = Timeouts { idle: settings.idle_timeout, first_call: settings.header_read_timeout };
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = accepted.closed() => return,
                permit = Arc::clone(&permits).acquire_owned() => permit,
            };
            // The semaphore is never closed.
            let Ok(permit) = permit else { return };
            let tcp = tokio::select! {
                () = accepted.closed() => return,
                tcp = listener.accept() => tcp,
            };
            match tcp {
                Ok((tcp, peer)) => {
                    let Some(place) = peers.admit(peer.ip()) else {
                        tracing::debug!(peer = %peer.ip(), "closed a connection over KEYWARD_MAX_CONNECTIONS_PER_PEER");
                        continue;
                    };
                    // Calls are small request/response pairs: send each at once.
                    let _ = tcp.set_nodelay(true);
                    let connection = Connection::new(tcp, (permit, place), timeouts);
                    if accepted.send(Ok(connection)).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    if let Some(suppressed) = ACCEPT_FAILURE_LINES.admit() {
                        tracing::warn!(error = %err, suppressed, "accepting a connection failed");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    });
    ReceiverStream::new(stream)
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    idle: Duration,
    first_call: Duration,
}

/// An accepted TCP connection that fails its pending read once it has gone without a
/// call for too long, which makes hyper close it; it frees its places under the
/// connection caps when dropped.
#[derive(Debug)]
pub(crate) struct Connection {
    tcp: TcpStream,
    timeouts: Timeouts,
    activity: Arc<Activity>,
    idle: Pin<Box<Sleep>>,
    _places: (OwnedSemaphorePermit, PeerPlace),
}

impl Connection {
    fn new(tcp: TcpStream, places: (OwnedSemaphorePermit, PeerPlace), timeouts: Timeouts) -> Self {
        let activity = Arc::new(Activity::new());
        let idle = Box::pin(tokio::time::sleep(timeouts.first_call));
        Self { tcp, timeouts, activity, idle, _places: places }
    }

    /// Ready with an error once the connection is idle: no call started within the
    /// first-call timeout, or none in flight or started for the idle timeout. The timer
    /// is moved only when it fires, so calls cost no timer updates.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.idle.as_mut().poll(cx));
            let due = match self.activity.idleness() {
                Idleness::Busy => Instant::now() + self.timeouts.idle,
                Idleness::NeverCalled(opened) => opened + self.timeouts.first_call,
                Idleness::LastCall(at) => at + self.timeouts.idle,
            };
            if due <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle")));
            }
            self.idle.as_mut().reset(due);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(read) => Poll::Ready(read),
            Poll::Pending => self.poll_idle(cx),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnectionInfo { activity: Arc::clone(&self.activity) }
    }
}

/// Serves `router` on the connections of `incoming` (over TLS when `tls` is given) until
/// `shutdown` fires, then lets open requests finish. The router is built once; each
/// connection holds only a reference to it.
pub(crate) async fn serve_http(
    incoming: ReceiverStream<Result<Connection, Infallible>>,
    router: axum::Router,
    tls: Option<(Arc<ServerConfig>, Duration)>,
    settings: &ConnectionConfig,
    in_flight: Arc<InFlight>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut incoming = incoming.into_inner();
    // Every handler becomes a route here, once, rather than per connection or request.
    let router = router.with_state(());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_keepalive_interval)
        .keep_alive_timeout(settings.http2_keepalive_timeout)
        .max_concurrent_streams(settings.max_concurrent_streams);
    let tls = tls.map(|(config, handshake_timeout)| (TlsAcceptor::from(config), handshake_timeout));
    let graceful = GracefulShutdown::new();
    loop {
        let connection = tokio::select! {
            _ = &mut shutdown => break,
            next = incoming.recv() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(never)) => match never {},
                None => break,
            },
        };
        // hyper does not say which connection a request came on: each connection's
        // service tells its requests, so that its calls keep it from being idle.
        let info = connection.connect_info();
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(info.clone());
                request
            })
            .layer(ActivityLayer(Arc::clone(&in_flight)))
            .service(router.clone());
        let (builder, service, watcher, tls) =
            (builder.clone(), TowerToHyperService::new(service), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                Some((acceptor, handshake_timeout)) => {
                    // A client that fails the handshake (no or a wrong certificate) or does
                    // not finish it in time is just dropped.
                    let Ok(Ok(stream)) = tokio::time::timeout(handshake_timeout, acceptor.accept(connection)).await
                    else {
                        return;
                    };
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await;
                }
                None => {
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(connection), service)).await;
                }
            }
        });
    }
    // Dropping the stream closes the listener, so no client waits on a port nobody serves.
    drop(incoming);
    // Open requests finish; connections with none (idle, or still sending headers) are
    // not waited for.
    tokio::select! {
        () = graceful.shutdown() => {}
        () = in_flight.drained() => {}
    }
}
