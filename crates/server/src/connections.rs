//! What one client connection may cost, on the gRPC and the HTTP listener alike: at most
//! `KEYWARD_MAX_CONNECTIONS` are open at once, and each is closed after
//! `KEYWARD_IDLE_TIMEOUT` without a byte either way, so silent sockets cannot pile up.

use std::{
    convert::Infallible,
    io,
    pin::Pin,
    sync::Arc,
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
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::config::ConnectionConfig;

/// How long accepting pauses after an accept error (say, out of file descriptors), so
/// the loop does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accepts connections from `listener` while fewer than `max_connections` are open;
/// beyond that, new clients wait in the kernel's listen backlog until one closes. The
/// stream ends the listener when it is dropped (at shutdown).
pub(crate) fn incoming(
    listener: TcpListener,
    settings: &ConnectionConfig,
) -> ReceiverStream<Result<Connection, Infallible>> {
    let (accepted, stream) = mpsc::channel(1);
    let permits = Arc::new(Semaphore::new(usize::try_from(settings.max_connections).unwrap_or(usize::MAX)));
    let idle_timeout = settings.idle_timeout;
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
                Ok((tcp, _)) => {
                    // Calls are small request/response pairs: send each at once.
                    let _ = tcp.set_nodelay(true);
                    if accepted.send(Ok(Connection::new(tcp, permit, idle_timeout))).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
    });
    ReceiverStream::new(stream)
}

/// An accepted TCP connection that fails its pending read once no byte went either way
/// for the idle timeout, which makes hyper close it; it frees its place under the
/// connection cap when dropped.
#[derive(Debug)]
pub(crate) struct Connection {
    tcp: TcpStream,
    idle_timeout: Duration,
    last_activity: Instant,
    idle: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit, idle_timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            tcp,
            idle_timeout,
            last_activity: now,
            idle: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            _permit: permit,
        }
    }

    /// Ready with an error once the connection has been idle for the timeout. The timer
    /// keeps its deadline while traffic flows and is moved only when it fires early (a
    /// byte went by since it was set), so a busy connection costs one timer update per
    /// timeout, not one per read.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.idle.as_mut().poll(cx));
            let due = self.last_activity + self.idle_timeout;
            if due <= Instant::now() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for KEYWARD_IDLE_TIMEOUT",
                )));
            }
            self.idle.as_mut().reset(due);
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.tcp).poll_read(cx, buf) {
            Poll::Ready(read) => {
                if buf.filled().len() > before {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(read)
            }
            Poll::Pending => self.poll_idle(cx),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.tcp).poll_write(cx, buf));
        if written.as_ref().is_ok_and(|&n| n > 0) {
            self.last_activity = Instant::now();
        }
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs));
        if written.as_ref().is_ok_and(|&n| n > 0) {
            self.last_activity = Instant::now();
        }
        Poll::Ready(written)
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
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
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
        .keep_alive_timeout(settings.http2_keepalive_timeout);
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
        let (builder, service, watcher, tls) =
            (builder.clone(), TowerToHyperService::new(router.clone()), graceful.watcher(), tls.clone());
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
    graceful.shutdown().await;
}
