//! The `iotpipe` binary as a separate process: for `kill -9`, for memory read from /proc, and
//! for tests whose clients need the process's descriptors to themselves.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_iotpipe");

/// The server process; killed when dropped, so a failing test leaves no server behind.
pub struct Running {
    pub child: Child,
    pub mqtt: SocketAddr,
    pub amqp: SocketAddr,
    pub http: SocketAddr,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reaps the process.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// Resident memory now (VmRSS), KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident memory (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// Starts `iotpipe serve --config CONFIG`, its log (RUST_LOG=warn) going to `log` (appended)
/// or nowhere, and waits until it prints its listen addresses.
pub fn start(config: &Path, log: Option<&Path>) -> Running {
    let stderr = match log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the server log"),
        ),
        None => Stdio::null(),
    };
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn iotpipe serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
    let (mut mqtt, mut amqp, mut http) = (None, None, None);
    while mqtt.is_none() || amqp.is_none() || http.is_none() {
        let line = lines.next().expect("serve exited before listening").expect("read serve's stdout");
        let line = line.trim();
        for (prefix, slot) in [("MQTT ", &mut mqtt), ("AMQP ", &mut amqp), ("HTTP ", &mut http)] {
            if let Some(a) = line.strip_prefix(prefix) {
                *slot = Some(a.trim().parse().expect("a socket address"));
            }
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    Running { child, mqtt: mqtt.unwrap(), amqp: amqp.unwrap(), http: http.unwrap() }
}
