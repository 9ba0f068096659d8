//! The first seconds of a PostgreSQL outage, before health notices: the database's
//! connections are gone and new ones are accepted but never answered (a host gone
//! silent), so every call that needs it waits for a connection. Each such call fails
//! UNAVAILABLE within one `KEYWARD_DATABASE_ACQUIRE_TIMEOUT`, not two: a cache miss's
//! wait for a turn and its connect share one deadline, and a refused create does not
//! wait again to audit that it was refused.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use keyward_proto::v1;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::helpers::{Replica, admin, create_request, empty_postgres_database, key_with};

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// A TCP relay to the test PostgreSQL server that can go silent: cut, it closes the
/// connections it relays and accepts new ones without ever answering.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
    relayed: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let relayed: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (accept_up, accept_relayed) = (Arc::clone(&up), Arc::clone(&relayed));
        let accepting = tokio::spawn(async move {
            let mut silent = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                if !accept_up.load(Ordering::SeqCst) {
                    silent.push(client);
                    continue;
                }
                accept_relayed.lock().unwrap().push(tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect("127.0.0.1:5432").await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }));
            }
        });
        Self { port, up, relayed, accepting }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for relay in self.relayed.lock().unwrap().drain(..) {
            relay.abort();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_costs_a_call_one_acquire_timeout() {
    let relay = Relay::start().await;
    let name = empty_postgres_database().await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{name}", relay.port);
    let dir = tempfile::tempdir().unwrap();
    let acquire = format!("{}ms", ACQUIRE_TIMEOUT.as_millis());
    let env = [
        ("KEYWARD_DATABASE_ACQUIRE_TIMEOUT", acquire.as_str()),
        ("KEYWARD_DATABASE_CONNECT_TIMEOUT", acquire.as_str()),
        // Health would notice after its next probe and fail calls at once; this is the
        // window before it does.
        ("KEYWARD_HEALTH_INTERVAL", "1h"),
    ];
    let replica = Replica::start(&url, dir.path(), &env).await.expect("the replica starts");
    // Caches the caller's key: the calls below fail on what they ask, not on who asks.
    assert_eq!(replica.code("imported-looking-unknown-key-before").await, v1::VerificationCode::NotFound);
    relay.cut();

    // More cache misses at once than the connections that serve them, so that some wait
    // for a turn before they wait for a connect.
    let started = Instant::now();
    let misses = (0..20).map(|n| {
        let mut client = replica.client.clone();
        async move {
            let request = admin(v1::VerifyApiKeyRequest {
                key: format!("imported-looking-unknown-key-{n}"),
                ..Default::default()
            });
            let answer = client.verify_api_key(request).await;
            (answer.map(|_| ()), started.elapsed())
        }
    });
    let misses = futures::future::join_all(misses).await;
    for (answer, took) in &misses {
        let refused = answer.as_ref().expect_err("a miss cannot be answered without the database");
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        // Twice the timeout is what waiting for a turn and then for a connect cost.
        assert!(*took < ACQUIRE_TIMEOUT * 3 / 2, "a miss failed after {took:?}");
    }

    let started = Instant::now();
    let created = replica.client.clone().create_api_key(admin(create_request(key_with("during")))).await;
    let took = started.elapsed();
    assert_eq!(created.unwrap_err().code(), tonic::Code::Unavailable);
    // Twice the timeout is what the write and then its audit record cost.
    assert!(took < ACQUIRE_TIMEOUT * 3 / 2, "a refused create answered after {took:?}");
    println!("misses failed after {:?} at most, a create after {took:?}", misses.iter().map(|(_, took)| *took).max());
}
