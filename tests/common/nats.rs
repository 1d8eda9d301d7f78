//! A real `nats-server -js` for tests: its own port (chosen by the server) and a temporary
//! store directory; killed when dropped.
//!
//! When `nats-server` is missing the test fails with the reason: CI installs it
//! (`scripts/test-deps.sh`), and a silently skipped cluster test would prove nothing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A running nats-server with JetStream.
pub struct NatsServer {
    child: Child,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js` on a port of the server's choosing, with a temporary store
    /// directory, and waits until its log says it is ready.
    ///
    /// # Panics
    /// When `nats-server` is not installed or does not start: the message says why.
    pub fn start() -> Self {
        check_version();
        let store = tempfile::tempdir().expect("a temporary directory for the JetStream store");
        let spawned = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start nats-server ({e}): the JetStream cases need nats-server 2.10 or later on \
                 PATH; scripts/test-deps.sh installs the pinned 2.15.1"
            ),
        };
        let stderr = child.stderr.take().expect("piped stderr");
        // The log goes to stderr; read it on a thread until the server is ready, then keep
        // draining it so that the server never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
        std::thread::spawn(move || {
            let mut port = None;
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                    port = rest.trim().rsplit(':').next().map(str::to_string);
                }
                if line.contains("Server is ready") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port.clone().ok_or_else(|| "no client port in the log".to_string()));
                    }
                }
                if line.contains("[FTL]") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(Err(line.clone()));
                    }
                }
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(Err("nats-server exited before it was ready".to_string()));
            }
        });
        let started = Instant::now();
        let port = match rx.recv_timeout(READY_WITHIN) {
            Ok(Ok(port)) => port,
            Ok(Err(reason)) => {
                let _ = child.kill();
                panic!("nats-server did not start: {reason}");
            }
            Err(_) => {
                let _ = child.kill();
                panic!("nats-server was not ready within {:?}", started.elapsed());
            }
        };
        Self { child, url: format!("nats://127.0.0.1:{port}"), _store: store }
    }
}

/// Fails unless `nats-server --version` is 2.10 or later (Debian 12's 2.9.10 is too old).
fn check_version() {
    let output = match Command::new("nats-server").arg("--version").output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run nats-server ({e}): the JetStream cases need nats-server 2.10 or later on PATH; \
             scripts/test-deps.sh installs the pinned 2.15.1"
        ),
    };
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    // "nats-server: v2.15.1"
    let version = text.rsplit(" v").next().unwrap_or_default().trim().to_string();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        (major, minor) >= (2, 10),
        "nats-server {version:?} is too old ({text:?}): the JetStream cases need 2.10 or later; \
         scripts/test-deps.sh installs the pinned 2.15.1"
    );
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
