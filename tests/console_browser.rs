//! The console in a real browser: tests/interop/console_browser.js drives Debian's chromium with
//! playwright-core against the `iotpipe` binary, with a real device (mosquitto_pub), a device whose
//! client id holds a `<script>` (mosquitto_sub) and a real AMQP consumer (rhea). Screenshots of
//! every page go to `target/tmp/console-screenshots/`.
//!
//! It runs against the release binary (`cargo test --release --test console_browser`, as `.ci/run`
//! does); in a debug build it is ignored, so `cargo test` does not run it twice.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use iotpipe::sign::SignMethod;

const BIN: &str = env!("CARGO_BIN_EXE_iotpipe");
const TOKEN: &str = "console-browser-token";
const PK: &str = "a1console";
const DEVICE: (&str, &str) = ("sensor01", "sensor-secret-01");
const EVIL: (&str, &str) = ("evil01", "evil-secret-0001");
const EVIL_CLIENT_ID: &str = "<script>window.__pwned=1</script>";

/// The server process; killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `iotpipe serve`; its MQTT, AMQP and HTTP addresses from the start-up lines.
fn start(config: &std::path::Path) -> (Running, [SocketAddr; 3]) {
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found: [Option<SocketAddr>; 3] = [None; 3];
    while found.iter().any(Option::is_none) {
        let line = lines.next().expect("serve exited before listening").unwrap();
        for (i, prefix) in ["MQTT ", "AMQP ", "HTTP "].iter().enumerate() {
            if let Some(a) = line.trim().strip_prefix(prefix) {
                found[i] = Some(a.trim().parse().unwrap());
            }
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (Running(child), found.map(Option::unwrap))
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "runs against the release binary: cargo test --release --test console_browser"
)]
fn the_console_works_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("iotpipe.toml");
    std::fs::write(
        &config,
        format!(
            r#"rules_dir = "{rules}"
[mqtt]
listen = "127.0.0.1:0"
[amqp]
listen = "127.0.0.1:0"
[http]
listen = "127.0.0.1:0"
admin_token = "{TOKEN}"
[storage]
dir = "{data}"
[[access_keys]]
id = "LTAIconsole"
secret = "console-key-secret"
[[products]]
key = "{PK}"
name = "Console product"
[[products.devices]]
name = "{}"
secret = "{}"
[[products.devices]]
name = "{}"
secret = "{}"
"#,
            DEVICE.0,
            DEVICE.1,
            EVIL.0,
            EVIL.1,
            rules = dir.path().join("rules").display(),
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let (_server, [mqtt, amqp, http]) = start(&config);
    let device = common::sign_as("sensor01-cid", PK, DEVICE.0, DEVICE.1, SignMethod::HmacSha256, None);
    let evil = common::sign_as(EVIL_CLIENT_ID, PK, EVIL.0, EVIL.1, SignMethod::HmacSha256, None);
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg("console_browser.js")
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
        .env("BASE", format!("http://{http}"))
        .env("TOKEN", TOKEN)
        .env("PK", PK)
        .env("MQTT_HOST", mqtt.ip().to_string())
        .env("MQTT_PORT", mqtt.port().to_string())
        .env("AMQP_PORT", amqp.port().to_string())
        .env("ACCESS_KEY_ID", "LTAIconsole")
        .env("ACCESS_KEY_SECRET", "console-key-secret")
        .env("DEVICE_NAME", DEVICE.0)
        .env("DEVICE_CLIENT_ID", &device.client_id)
        .env("DEVICE_USERNAME", &device.username)
        .env("DEVICE_PASSWORD", &device.password)
        .env("EVIL_NAME", EVIL.0)
        .env("EVIL_CLIENT_ID", &evil.client_id)
        .env("EVIL_CLIENT_ID_SHOWN", EVIL_CLIENT_ID)
        .env("EVIL_USERNAME", &evil.username)
        .env("EVIL_PASSWORD", &evil.password)
        .env("SHOTS", &shots)
        .output()
        .expect("node runs (scripts/test-deps.sh installs it, chromium and playwright-core)");
    assert!(
        out.status.success(),
        "the browser test failed (screenshots in {}):\n{}{}",
        shots.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
