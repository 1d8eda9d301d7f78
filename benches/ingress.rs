//! Ingress benchmark: N devices publish QoS 1 256-byte JSON as fast as they can against the
//! release binary; every PUBACK means "stored durably in DEFAULT_GROUP's queue" (no consumer:
//! the backlog grows).
//!
//! `cargo bench --bench ingress` (env: DEVICES=100, SECONDS=10, WINDOW=64).
//! Reports messages/s, the server's CPU time per message (from /proc) and its peak RSS.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

fn main() {
    let devices = env("DEVICES", 100) as usize;
    let seconds = env("SECONDS", 10);
    let window = env("WINDOW", 64) as u16;
    let server = ServerProcess::start(devices);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (acked, elapsed, cpu) = runtime.block_on(async {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut streams = Vec::new();
        for i in 0..devices {
            streams.push(connect(server.mqtt, i).await);
        }
        let cpu_start = server.cpu_time();
        let start = Instant::now();
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| tokio::spawn(publish_loop(s, i, window, 0.0, acked.clone(), stop.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let done = acked.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        let cpu = server.cpu_time().saturating_sub(cpu_start);
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        (done, elapsed, cpu)
    });
    let rss = server.peak_rss_kib().map_or("n/a".to_string(), |k| format!("{} MiB", k / 1024));
    server.stop();
    let rate = acked as f64 / elapsed.as_secs_f64();
    let cpu_per_msg_us = cpu.as_secs_f64() * 1e6 / acked.max(1) as f64;
    println!(
        "ingress: {devices} devices, QoS 1, 256-byte JSON, window {window}, {seconds} s, stored in one group"
    );
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
