//! A paho-mqtt device (tests/interop/paho_downlink.py) as a child process: its events arrive
//! as JSON lines; closing its stdin makes it disconnect.

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use super::{Creds, Server, WAIT};

/// A running paho device.
pub struct Paho {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// The SUBACK's codes (0, 1, or 128 for a refusal).
    pub granted: Vec<u64>,
}

impl Paho {
    /// Connects device `dn` of `pk` with `creds`, subscribes to `subscribe`
    /// (`"filter:qos;..."`) and waits for the SUBACK. `extra`: MANUAL_ACK, ANSWER, PROTOCOL.
    pub async fn start(
        server: &Server,
        pk: &str,
        dn: &str,
        creds: &Creds,
        subscribe: &str,
        extra: &[(&str, &str)],
    ) -> Self {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.arg("paho_downlink.py")
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
            .env("HOST", "127.0.0.1")
            .env("PORT", server.addr().port().to_string())
            .env("CLIENT_ID", &creds.client_id)
            .env("USERNAME", &creds.username)
            .env("PASSWORD", &creds.password)
            .env("PK", pk)
            .env("DN", dn)
            .env("SUBSCRIBE", subscribe)
            .envs(extra.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("python3 could not run ({e}): scripts/test-deps.sh installs paho-mqtt")
        });
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut device = Self { child, lines, granted: Vec::new() };
        if !subscribe.is_empty() {
            let event = device.next_event().await;
            assert_eq!(event["event"], "subscribed", "{event}");
            device.granted =
                event["granted"].as_array().unwrap().iter().map(|g| g.as_u64().unwrap()).collect();
        }
        device
    }

    /// The next event line.
    pub async fn next_event(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("no event from the paho device in time")
            .unwrap()
            .expect("the paho device exited");
        serde_json::from_str(&line).unwrap()
    }

    /// The next message the device received.
    pub async fn next_message(&mut self) -> Value {
        loop {
            let event = self.next_event().await;
            match event["event"].as_str() {
                Some("message") => return event,
                Some("disconnected") => panic!("the paho device was disconnected: {event}"),
                _ => {}
            }
        }
    }

    /// Disconnects the device and waits for the process to end.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}
