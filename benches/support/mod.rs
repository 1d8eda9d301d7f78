//! Shared parts of the end-to-end benchmarks: the server process, lean devices, CPU and RSS.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use iotpipe::ingress::auth::Credentials;
use iotpipe::sign::SignMethod;
use rumqttc::mqttbytes::{v4, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The rule of `FORWARD=rule`: a filter every message passes and a projection keeping `ts`.
pub const BENCH_RULE: &str = "-- action: amqp DEFAULT_GROUP tag=${dn}\n\
SELECT deviceName() AS dn, temperature, ts, seq FROM \"/a1bench/+/user/update\" WHERE temperature > 30\n";

pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The release binary, serving a generated configuration with `devices` devices of product
/// `a1bench` whose messages reach DEFAULT_GROUP through a subscription (upstream only) or,
/// with `FORWARD=rule` in the environment, through a rule with a filter and a projection.
pub struct ServerProcess {
    child: Child,
    _dir: tempfile::TempDir,
    pub mqtt: SocketAddr,
    pub amqp: SocketAddr,
}

impl ServerProcess {
    pub fn start(devices: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = format!(
            "rules_dir = \"{}\"\n[mqtt]\nlisten = \"127.0.0.1:0\"\n[amqp]\nlisten = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n\
             [[access_keys]]\nid = \"LTAIbench\"\nsecret = \"bench-secret\"\n[[products]]\nkey = \"a1bench\"\n",
            dir.path().join("rules").display(),
            dir.path().join("data").display()
        );
        for i in 0..devices {
            config.push_str(&format!("[[products.devices]]\nname = \"dev{i:05}\"\nsecret = \"s{i}\"\n"));
        }
        if std::env::var("FORWARD").as_deref() == Ok("rule") {
            std::fs::create_dir_all(dir.path().join("rules")).expect("rules dir");
            std::fs::write(dir.path().join("rules/bench.sql"), BENCH_RULE).expect("write rule");
        } else {
            config.push_str(
                "[[subscriptions]]\nproduct_key = \"a1bench\"\nmessage_types = [\"upstream\"]\nconsumer_groups = [\"DEFAULT_GROUP\"]\n",
            );
        }
        let path = dir.path().join("bench.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_iotpipe"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start iotpipe");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut mqtt, mut amqp) = (None, None);
        while mqtt.is_none() || amqp.is_none() {
            let line = lines.next().expect("server exited").expect("read stdout");
            if let Some(a) = line.trim().strip_prefix("MQTT ") {
                mqtt = Some(a.trim().parse().expect("address"));
            }
            if let Some(a) = line.trim().strip_prefix("AMQP ") {
                amqp = Some(a.trim().parse().expect("address"));
            }
        }
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, _dir: dir, mqtt: mqtt.unwrap(), amqp: amqp.unwrap() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time of the server so far.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    /// Peak resident memory in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM and wait; panics unless the server exits cleanly.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let status = self.child.wait().expect("wait for iotpipe");
        assert!(status.success(), "iotpipe exited with {status}");
    }
}

/// Connects device `i` with a hand-written CONNECT.
pub async fn connect(addr: SocketAddr, i: usize) -> TcpStream {
    let creds = Credentials {
        client_id: format!("dev{i:05}"),
        product_key: "a1bench".into(),
        device_name: format!("dev{i:05}"),
        method: SignMethod::HmacSha256,
        timestamp: None,
    };
    let mut connect = v4::Connect::new(creds.mqtt_client_id());
    connect.keep_alive = 60;
    connect.set_login(creds.username(), creds.password(&format!("s{i}")));
    let mut buf = BytesMut::new();
    v4::Packet::Connect(connect).write(&mut buf, 1 << 20).expect("encode");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(&buf).await.expect("write");
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.expect("connack");
    assert_eq!(ack[3], 0, "device {i} refused");
    s
}

/// Epoch microseconds.
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A 256-byte JSON payload carrying its send time (`ts`, epoch µs) for latency.
pub fn payload(device: usize, seq: u64) -> Vec<u8> {
    let mut p = format!(
        "{{\"device\":\"dev{device:05}\",\"temperature\":38.5,\"seq\":{seq},\"ts\":{},\"pad\":\"",
        now_us()
    );
    while p.len() < 254 {
        p.push('x');
    }
    p.push_str("\"}");
    p.into_bytes()
}

/// Reads `ts` back out of a payload.
pub fn sent_at_us(body: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(body).ok()?;
    let rest = &s[s.find("\"ts\":")? + 5..];
    rest[..rest.find(',')?].parse().ok()
}

/// One device publishing QoS 1 with up to `window` in flight; with `rate` > 0, at most that many
/// per second. Counts PUBACKs in `acked` until `stop`.
pub async fn publish_loop(
    mut s: TcpStream,
    i: usize,
    window: u16,
    rate: f64,
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let topic = format!("/a1bench/dev{i:05}/user/update");
    let mut pkid: u16 = 0;
    let mut seq = 0u64;
    let mut out = BytesMut::new();
    let mut inb = BytesMut::with_capacity(8192);
    let mut in_flight: u16 = 0;
    let start = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        out.clear();
        while in_flight < window {
            if rate > 0.0 && (seq as f64) >= start.elapsed().as_secs_f64() * rate {
                break;
            }
            pkid = pkid % u16::MAX + 1;
            let mut p = v4::Publish::new(topic.clone(), QoS::AtLeastOnce, payload(i, seq));
            p.pkid = pkid;
            p.write(&mut out).expect("encode");
            in_flight += 1;
            seq += 1;
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
        if in_flight == 0 {
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        let read = if rate > 0.0 {
            match tokio::time::timeout(Duration::from_millis(1), s.read_buf(&mut inb)).await {
                Ok(r) => r,
                Err(_) => continue,
            }
        } else {
            s.read_buf(&mut inb).await
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let n = inb.len() / 4;
        for k in 0..n {
            assert_eq!(&inb[k * 4..k * 4 + 2], &[0x40, 0x02], "expected a PUBACK");
        }
        inb.advance(n * 4);
        in_flight -= n as u16;
        acked.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The p-th percentile (0..=100) of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
