//! Log lines with values from outside: a peer cannot forge a line or fill the disk.
//!
//! The log of a real server is captured through a global tracing subscriber writing into a
//! buffer; this file holds only tests that are fine sharing that one log.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::{raw_connect, Creds, Server};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide log, installed once.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        captured
    })
}

fn lines_with(needle: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned();
    text.lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_values_cannot_forge_log_lines_or_fill_the_disk() {
    log();
    let server = Server::start().await;

    // A newline in the client id and username, no login needed.
    let forged = "FORGED  INFO iotpipe: Device online device=admin";
    let creds = Creds {
        client_id: format!("evil-cid\n{forged}"),
        username: format!("evil-user\r\n{forged}"),
        password: "x".into(),
    };
    let (_s, code) = raw_connect(server.addr(), &creds, 60).await;
    assert_eq!(code, 4, "bad username or password");

    // 65,000 characters each of client id and username.
    let creds = Creds {
        client_id: format!("huge-cid{}", "c".repeat(65_000)),
        username: format!("huge-user{}", "u".repeat(65_000)),
        password: "x".into(),
    };
    let (_s, code) = raw_connect(server.addr(), &creds, 60).await;
    assert_eq!(code, 4);

    // The refusal is logged before the CONNACK is written, so both lines are there now.
    let text = String::from_utf8_lossy(&log().0.lock().unwrap()).into_owned();
    for line in text.lines() {
        assert!(!line.starts_with("FORGED"), "a forged line: {line}");
    }
    let evil = lines_with("evil-cid");
    assert_eq!(evil.len(), 1, "one line for the refusal: {evil:?}");
    assert!(evil[0].contains("evil-cid\\nFORGED"), "escaped: {}", evil[0]);

    let huge = lines_with("huge-cid");
    assert_eq!(huge.len(), 1, "{} lines", huge.len());
    assert!(huge[0].len() < 2_000, "a bounded line, got {} bytes", huge[0].len());
    assert!(huge[0].contains("bytes)"), "the full size is noted: {}", huge[0]);
    let total: usize = text.len();
    assert!(total < 20_000, "the whole log is {total} bytes after two refusals");
}

/// Refusals that used to leave no trace get one line each (issue 17, finding 7): an MQTT
/// connection that sends no CONNECT in time, and an AMQP peer that breaks the protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_refusals_are_logged() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    log();
    let server = Server::start_with("connect_timeout_secs = 1", "").await;

    let mut idle = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(common::WAIT, idle.read_to_end(&mut rest)).await.expect("closed").ok();
    assert_eq!(lines_with("sent no CONNECT in time").len(), 1);

    let mut garbage = tokio::net::TcpStream::connect(server.app.amqp_addr()).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    tokio::time::timeout(common::WAIT, garbage.read_to_end(&mut rest)).await.expect("closed").ok();
    // The line is written as the connection task ends, which may be just after the close.
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while lines_with("AMQP connection not opened").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no line for the AMQP protocol error");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
