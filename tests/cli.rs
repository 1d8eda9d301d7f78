//! The binary itself: `device sign`, `serve` with good and bad configuration, signals, and a
//! third-party client (mosquitto_pub) against it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_iotpipe");

#[test]
fn device_sign_prints_the_link_sdk_credentials() {
    let out = Command::new(BIN)
        .args(["device", "sign", "--product-key", "a14Xib5kdYd", "--device-name", "light1983432"])
        .args(["--device-secret", "oLyaKqVxtRvjH284LdhqVgVUx1UPy6zq", "--sign-method", "hmacsha1"])
        .args(["--client-id", "SN1928339", "--timestamp", "1539421321846", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clientId"], "SN1928339|securemode=3,signmethod=hmacsha1,timestamp=1539421321846|");
    assert_eq!(v["username"], "light1983432&a14Xib5kdYd");
    assert_eq!(v["password"], "b2488041f64f425016b467ee1c94959ebd592ad1");

    let bad = Command::new(BIN)
        .args(["device", "sign", "--product-key", "p", "--device-name", "d", "--device-secret", "s"])
        .args(["--sign-method", "sha512"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("hmacmd5, hmacsha1 or hmacsha256"));
    let usage = Command::new(BIN).args(["device", "sign"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn a_bad_config_file_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[mqtt]\nlisten = \"nowhere\"\nkeep_alive = 5\n\n[http]\nadmin_token = 7\n")
        .unwrap();
    let out = Command::new(BIN).arg("serve").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for (line, key) in [(2, "mqtt.listen"), (3, "mqtt.keep_alive"), (6, "http.admin_token")] {
        assert!(
            stderr.contains(&format!("{file}:{line}: {key}")),
            "missing {key} at line {line} in:\n{stderr}"
        );
    }
    let missing =
        Command::new(BIN).args(["serve", "--config", "/nonexistent/iotpipe.toml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/iotpipe.toml"));
}

struct Running {
    child: Child,
    mqtt: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iotpipe.toml");
    std::fs::write(&path, common::config_text(&dir.path().join("data"), "", "")).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mqtt = loop {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(addr) = line.trim().strip_prefix("MQTT ") {
            break addr.trim().parse().unwrap();
        }
    };
    Running { child, mqtt, _dir: dir }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn serve_shuts_down_gracefully_on_sigterm() {
    let mut running = serve();
    let c = common::creds("dev1");
    let (client, mut ev) = common::connect_v4(common::v4_options(running.mqtt, &c)).await.unwrap();
    client.publish("/a1test/dev1/user/update", rumqttc::QoS::AtLeastOnce, false, "x").await.unwrap();
    common::until_v4(&mut ev, "PUBACK", |p| matches!(p, rumqttc::Packet::PubAck(_))).await;

    let start = Instant::now();
    sigterm(&running.child);
    // The connected device is told and closed.
    common::until_v4_closed(&mut ev).await;
    let status = loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "serve did not exit within 5 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
}

fn mosquitto_pub(addr: SocketAddr, c: &common::Creds, password: &str, version: &str) -> std::process::Output {
    let program = std::env::var("MOSQUITTO_PUB").unwrap_or_else(|_| "mosquitto_pub".into());
    Command::new(&program)
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-V", version])
        .args(["-i", &c.client_id, "-u", &c.username, "-P", password])
        .args(["-q", "1", "-t", "/a1test/dev1/user/update", "-m", "{\"temperature\":40}"])
        .output()
        .unwrap_or_else(|e| panic!("{program} could not run ({e}): install mosquitto-clients (.ci/run does)"))
}

#[test]
fn mosquitto_pub_connects_and_a_wrong_password_is_refused() {
    let running = serve();
    let c = common::creds("dev1");
    for version in ["mqttv311", "mqttv5"] {
        let ok = mosquitto_pub(running.mqtt, &c, &c.password, version);
        assert!(ok.status.success(), "{version}: {}", String::from_utf8_lossy(&ok.stderr));
        let refused = mosquitto_pub(running.mqtt, &c, "wrong", version);
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
        assert!(stderr.contains("bad user name or password"), "{version}: {stderr}");
    }
}

#[test]
fn the_example_configuration_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/iotpipe.example.toml");
    let config = iotpipe::config::load_file(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.products[0].devices.len(), 2);
    assert_eq!(config.subscriptions[0].consumer_groups.len(), 2);
}

#[test]
fn amqp_sign_prints_a_login_the_server_accepts() {
    let out = Command::new(BIN)
        .args(["amqp", "sign", "--access-key-id", "ak", "--access-key-secret", "secret"])
        .args(["--consumer-group-id", "DEFAULT_GROUP", "--client-id", "c1", "--timestamp", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["username"],
        "c1|authMode=aksign,signMethod=hmacsha1,timestamp=1,authId=ak,iotInstanceId=,consumerGroupId=DEFAULT_GROUP|"
    );
    // printf 'authId=ak&timestamp=1' | openssl dgst -sha1 -hmac secret -binary | base64
    assert_eq!(v["password"], "hXZ4jQvHOiz+3SXmS1b6zQvWvXc=");
}

/// A listen address in use is reported once, with the key and file:line it came from (issue 17,
/// finding 7), as a configuration problem is.
#[test]
fn a_listen_address_in_use_names_its_key_and_line_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.toml");
    let text = common::config_text(&dir.path().join("data"), "", "").replacen(
        "[amqp]\nlisten = \"127.0.0.1:0\"",
        &format!("[amqp]\nlisten = \"{addr}\""),
        1,
    );
    assert!(text.contains(&addr.to_string()));
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.contains(&addr.to_string())).unwrap() + 1;
    let out = Command::new(BIN).arg("serve").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:{line}: amqp.listen: AMQP cannot listen on {addr}", path.display());
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "the OS error once:\n{stderr}");
    drop(taken);
}
