//! A real webhook receiver for the event tests: `webhook_receiver.py`, which verifies
//! every delivery with the Standard Webhooks reference library for Python.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub(crate) struct Receiver {
    child: Option<Child>,
    pub(crate) port: u16,
    secret_file: PathBuf,
    records: Arc<Mutex<Vec<Value>>>,
    _dir: tempfile::TempDir,
}

fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/python");
    assert!(python.exists(), "{} is missing: run `bash tests/tools.sh` before the tests", python.display());
    python
}

impl Receiver {
    /// Starts a receiver on a free port.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut receiver =
            Self { child: None, port: 0, secret_file: dir.path().join("secret"), records: Arc::default(), _dir: dir };
        receiver.listen().await;
        receiver
    }

    async fn listen(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/webhook_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(self.port.to_string())
            .arg(&self.secret_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the receiver starts within 30 s")
            .unwrap()
            .expect("the receiver prints its port");
        let listening: Value = serde_json::from_str(&first).unwrap();
        self.port = u16::try_from(listening["listening"].as_u64().unwrap()).unwrap();
        let records = Arc::clone(&self.records);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                records.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        self.child = Some(child);
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// The signing secret deliveries are verified with from now on.
    pub(crate) fn trust(&self, secret: &str) {
        std::fs::write(&self.secret_file, secret).unwrap();
    }

    /// Stops listening: deliveries fail to connect.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Listens again on the same port.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        self.listen().await;
    }

    /// The deliveries that verified, in arrival order.
    pub(crate) fn deliveries(&self) -> Vec<Value> {
        self.records.lock().unwrap().iter().filter(|record| record.get("id").is_some()).cloned().collect()
    }

    /// Reasons of the deliveries that did not verify.
    pub(crate) fn invalid(&self) -> Vec<Value> {
        self.records.lock().unwrap().iter().filter_map(|record| record.get("invalid").cloned()).collect()
    }

    /// Waits until `count` verified deliveries arrived (a guard against a hang, not a
    /// measure of time); returns them.
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        loop {
            let deliveries = self.deliveries();
            if deliveries.len() >= count {
                return deliveries;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{count} deliveries expected, {} arrived: {deliveries:#?}; invalid: {:?}",
                deliveries.len(),
                self.invalid()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The types of `deliveries`, in order.
pub(crate) fn types(deliveries: &[Value]) -> Vec<String> {
    deliveries.iter().map(|delivery| delivery["payload"]["type"].as_str().unwrap().to_owned()).collect()
}

/// A receiver that accepts connections and never answers: every post to it waits out the
/// webhook timeout.
pub(crate) struct Hanging {
    pub(crate) port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    listening: tokio::task::JoinHandle<()>,
}

impl Hanging {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let listening = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                open.push(socket);
            }
        });
        Self { port, accepted, listening }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Connections accepted so far: one per post, as none is ever answered.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.listening.abort();
    }
}
