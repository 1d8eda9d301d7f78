//! End-to-end ingress benchmark: N devices publish QoS 1 256-byte JSON as fast as they can
//! against the release binary; every PUBACK means "durably handed off".
//!
//! `cargo bench --bench ingress` (env: DEVICES=100, SECONDS=10, WINDOW=64).
//! Reports messages/s into the hand-off, the server's CPU time per message (from
//! /proc/<pid>/stat) and its peak RSS.
//!
//! The devices are lean: each keeps WINDOW publishes in flight over one socket with frames
//! encoded once, so the load generator costs far less CPU than a full client library and the
//! server stays the thing measured.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use iotpipe::ingress::auth::Credentials;
use iotpipe::sign::SignMethod;
use rumqttc::mqttbytes::{v4, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let devices = env("DEVICES", 100) as usize;
    let seconds = env("SECONDS", 10);
    let window = env("WINDOW", 64) as u16;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = format!(
        "[mqtt]\nlisten = \"127.0.0.1:0\"\n[amqp]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n[[products]]\nkey = \"a1bench\"\n",
        dir.path().join("data").display()
    );
    for i in 0..devices {
        config.push_str(&format!("[[products.devices]]\nname = \"dev{i:04}\"\nsecret = \"s{i}\"\n"));
    }
    config.push_str(
        "[[subscriptions]]\nproduct_key = \"a1bench\"\nmessage_types = [\"upstream\", \"status\"]\nconsumer_groups = [\"DEFAULT_GROUP\"]\n",
    );
    let config_path = dir.path().join("bench.toml");
    std::fs::write(&config_path, config).expect("write config");

    let mut child = Command::new(env!("CARGO_BIN_EXE_iotpipe"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "warn,iotpipe::app=info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start iotpipe");
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("server exited").expect("read stdout");
        if let Some(rest) = line.trim().strip_prefix("MQTT ") {
            break rest.trim().parse().expect("address");
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let result = runtime.block_on(load(addr, devices, seconds, window, pid));
    let rss = peak_rss_kib(pid).map_or("n/a".to_string(), |k| format!("{} MiB", k / 1024));
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let status = child.wait().expect("wait for iotpipe");
    assert!(status.success(), "iotpipe exited with {status}");

    let (acked, elapsed, cpu) = result;
    let rate = acked as f64 / elapsed.as_secs_f64();
    let cpu_per_msg_us = cpu.as_secs_f64() * 1e6 / acked.max(1) as f64;
    println!("ingress: {devices} devices, QoS 1, 256-byte JSON, window {window}, {seconds} s");
    println!("  messages acknowledged  {acked}");
    println!("  messages/s             {rate:.0}");
    println!(
        "  server CPU per message {cpu_per_msg_us:.2} µs ({:.2} cores busy)",
        cpu.as_secs_f64() / elapsed.as_secs_f64()
    );
    println!("  server peak RSS        {rss}");
    println!(
        "{}",
        serde_json::json!({"bench": "ingress", "devices": devices, "window": window, "seconds": seconds,
            "messages": acked, "messages_per_sec": rate.round(), "server_cpu_us_per_message": cpu_per_msg_us})
    );
}

async fn load(
    addr: SocketAddr,
    devices: usize,
    seconds: u64,
    window: u16,
    pid: u32,
) -> (u64, Duration, Duration) {
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut streams = Vec::new();
    for i in 0..devices {
        streams.push(connect(addr, i).await);
    }
    let cpu_start = cpu_time(pid);
    let start = Instant::now();
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(publish_loop(s, i, window, acked.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let done = acked.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu_start);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    (done, elapsed, cpu)
}

async fn connect(addr: SocketAddr, i: usize) -> TcpStream {
    let creds = Credentials {
        client_id: format!("dev{i:04}"),
        product_key: "a1bench".into(),
        device_name: format!("dev{i:04}"),
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

async fn publish_loop(mut s: TcpStream, i: usize, window: u16, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let topic = format!("/a1bench/dev{i:04}/user/update");
    let mut payload =
        format!("{{\"device\":\"dev{i:04}\",\"temperature\":38.5,\"humidity\":41,\"seq\":0,\"pad\":\"");
    while payload.len() < 254 {
        payload.push('x');
    }
    payload.push_str("\"}");
    let mut publish = v4::Publish::new(topic, QoS::AtLeastOnce, payload.into_bytes());
    let mut pkid: u16 = 0;
    let mut out = BytesMut::new();
    let mut inb = BytesMut::with_capacity(8192);
    let mut in_flight: u16 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        out.clear();
        while in_flight < window {
            pkid = pkid % u16::MAX + 1;
            publish.pkid = pkid;
            publish.write(&mut out).expect("encode");
            in_flight += 1;
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            return;
        }
        match s.read_buf(&mut inb).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // PUBACKs are 4 bytes: 0x40 0x02 pkid.
        let n = inb.len() / 4;
        for k in 0..n {
            assert_eq!(&inb[k * 4..k * 4 + 2], &[0x40, 0x02], "expected a PUBACK");
        }
        inb.advance(n * 4);
        in_flight -= n as u16;
        acked.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}
