//! What a crowd of idle or slow clients can do to the listeners: connections that never
//! call are closed after `KEYWARD_HEADER_READ_TIMEOUT` while normal clients are served, a
//! client that trickles its headers is cut off by it too, and beyond
//! `KEYWARD_MAX_CONNECTIONS` a client waits until a place frees. Listeners do not depend
//! on the store, so these run on SQLite only.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use keyward_server::Config;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::{Backend, TestApp, spawn_with};

const IDLE_CONNECTIONS: usize = 1000;
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

fn short_timeouts(config: &mut Config) {
    config.connections.idle_timeout = IDLE_TIMEOUT;
    config.connections.header_read_timeout = HEADER_READ_TIMEOUT;
}

/// The soft limit of open files, when the platform says.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Opens `count` TCP connections to `addr` and sends nothing on them.
async fn open_idle(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(TcpStream::connect(addr).await.expect("connect"));
    }
    streams
}

/// Whether the server closed `stream` within `within`: a read ends (0 bytes or an
/// error) instead of waiting.
async fn closed_by_server(mut stream: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A health check on a connection of its own (the test's shared one may have been
/// closed as idle).
async fn health_serving(app: &TestApp) -> bool {
    let channel = Channel::from_shared(format!("http://{}", app.running().grpc_addr)).unwrap().connect_lazy();
    let mut health = HealthClient::new(channel);
    let check = health.check(HealthCheckRequest { service: String::new() });
    matches!(
        tokio::time::timeout(Duration::from_secs(10), check).await,
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving
    )
}

async fn metrics_answered(app: &TestApp) -> bool {
    let url = format!("http://{}/metrics", app.running().http_addr);
    let get = reqwest::Client::new().get(url).timeout(Duration::from_secs(10)).send();
    matches!(get.await, Ok(response) if response.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_others_are_served_meanwhile() {
    // Both ends of every connection live in this process.
    let needed = 4 * IDLE_CONNECTIONS as u64 + 200;
    if open_files_limit().is_some_and(|limit| limit < needed) {
        eprintln!("skipped: the open files limit is below the {needed} this test needs (raise `ulimit -n`)");
        return;
    }
    let app = spawn_with(Backend::Sqlite, short_timeouts).await;
    let started = Instant::now();
    let grpc = open_idle(app.running().grpc_addr, IDLE_CONNECTIONS).await;
    let http = open_idle(app.running().http_addr, IDLE_CONNECTIONS).await;

    assert!(health_serving(&app).await, "a gRPC call is answered beside the idle connections");
    assert!(metrics_answered(&app).await, "an HTTP request is answered beside the idle connections");
    assert!(
        started.elapsed() < IDLE_TIMEOUT,
        "the idle connections were opened too slowly to test that they stay open"
    );

    let generous = IDLE_TIMEOUT * 10;
    let closed = futures::future::join_all(grpc.into_iter().chain(http).map(|s| closed_by_server(s, generous))).await;
    let open = closed.iter().filter(|closed| !**closed).count();
    assert_eq!(open, 0, "idle connections the server left open after {generous:?}");
    assert!(
        started.elapsed() >= HEADER_READ_TIMEOUT,
        "connections without a call are kept for the first-call timeout, not cut sooner"
    );

    // The server still serves new clients afterwards, on fresh connections.
    assert!(health_serving(&app).await);
    assert!(metrics_answered(&app).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trickling_its_headers_is_cut_off() {
    let app = spawn_with(Backend::Sqlite, short_timeouts).await;
    let mut slow = TcpStream::connect(app.running().http_addr).await.unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: keyward\r\nX-Slow: ").await.unwrap();
    let started = Instant::now();
    // One byte at an interval well below the idle timeout, so only the header timeout can end it.
    let cut_off = loop {
        if started.elapsed() > IDLE_TIMEOUT * 10 {
            break false;
        }
        if slow.write_all(b"a").await.is_err() {
            break true;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
            // Closed, or answered (408) and then closed: either way the headers never finished.
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(read)) => assert!(!buf[..read].starts_with(b"HTTP/1.1 200"), "a trickled request was served"),
            Err(_) => {}
        }
    };
    assert!(cut_off, "a client sending a header byte every 300 ms was still connected after {:?}", started.elapsed());
    assert!(metrics_answered(&app).await);
    app.stop().await;
}

/// On the gRPC port the same holds for HTTP/2: a client sending its connection preface,
/// SETTINGS and first HEADERS a byte at a time never gets to start a call, whatever the
/// idle timeout or keep-alive would allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_client_trickling_its_preface_and_headers_is_cut_off() {
    let app = spawn_with(Backend::Sqlite, short_timeouts).await;
    let mut opening = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame, then HEADERS (END_HEADERS) of stream 1: GET, http, /, from HPACK's static table.
    opening.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    opening.extend_from_slice(&[0, 0, 3, 0x1, 0x4, 0, 0, 0, 1, 0x82, 0x86, 0x84]);
    let mut slow = TcpStream::connect(app.running().grpc_addr).await.unwrap();
    let started = Instant::now();
    let mut sent = 0;
    // One byte every 300 ms: the whole opening takes about 10 s, well past the header
    // timeout and the idle timeout.
    for byte in &opening {
        if slow.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            // The server's own preface and SETTINGS: not an answer to a call.
            Ok(Ok(_)) | Err(_) => sent += 1,
        }
    }
    assert!(
        sent < opening.len(),
        "all {} bytes of a trickled opening were taken over {:?}: the connection was not cut off",
        opening.len(),
        started.elapsed()
    );
    assert!(health_serving(&app).await);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_connection_cap_a_client_waits_for_a_free_place() {
    const CAP: u32 = 4;
    let app = spawn_with(Backend::Sqlite, |config| config.connections.max_connections = CAP).await;
    let addr = app.running().http_addr;
    let mut held = open_idle(addr, CAP as usize).await;
    // The kernel completes the TCP handshake from its backlog, but the server reads nothing.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(b"GET /metrics HTTP/1.1\r\nHost: keyward\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_secs(1), waiting.read(&mut buf)).await;
    assert!(early.is_err(), "a connection beyond KEYWARD_MAX_CONNECTIONS was served at once");

    drop(held.pop());
    let served = tokio::time::timeout(Duration::from_secs(10), waiting.read(&mut buf)).await;
    assert!(
        matches!(served, Ok(Ok(read)) if buf[..read].starts_with(b"HTTP/1.1 200")),
        "the waiting client was served once a place freed: {served:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_place() {
    const PER_PEER: u32 = 3;
    let app = spawn_with(Backend::Sqlite, |config| config.connections.max_connections_per_peer = PER_PEER).await;
    let addr = app.running().grpc_addr;
    let _held = open_idle(addr, PER_PEER as usize).await;
    let over = TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_server(over, Duration::from_secs(5)).await, "a connection over the per-address cap is closed");
    // The other listener counts its own connections.
    assert!(metrics_answered(&app).await);
    app.stop().await;
}
