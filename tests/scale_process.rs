//! 10,000 subscribed devices (issue 17, finding 3: the router allowed 1,023). Each device holds
//! a router link once it subscribes, so this checks the router is sized from
//! `[mqtt] max_connections`. Client and server sockets in one process would need 20,000
//! descriptors, the hard limit here: the server runs as its own process (the `iotpipe` binary)
//! and the devices in this one.
//!
//! Ignored in `cargo test` (tests/scale_tls.rs runs 2,000 in-process for CI); scripts/faults.sh
//! runs it in release (`IOTPIPE_DEVICES`, 10,000 by default) and prints the connect rate and the
//! server's memory.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::process::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10,000 devices take a while in a debug build: scripts/faults.sh runs it in release"]
async fn ten_thousand_subscribed_devices() {
    let n: usize = std::env::var("IOTPIPE_DEVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    // Each side needs a descriptor per device plus a few; children inherit the limit.
    let limit = iotpipe::bench::procfs::raise_fd_limit(n as u64 + 512);
    assert!(limit > n as u64 + 100, "the open-file limit {limit} is too low for {n} devices");
    let dir = tempfile::tempdir().unwrap();
    let mut extra = String::from("\n[[products]]\nkey = \"a1many\"\n");
    for i in 0..n {
        extra.push_str(&format!("[[products.devices]]\nname = \"dev{i:05}\"\nsecret = \"s{i}\"\n"));
    }
    let config = dir.path().join("iotpipe.toml");
    std::fs::write(
        &config,
        common::config_text(&dir.path().join("data"), &format!("max_connections = {n}"), &extra),
    )
    .unwrap();
    let server = start(&config, None);
    let rss_before = server.rss_kib().unwrap_or(0);
    let addr = server.mqtt;
    // 64 handshakes at a time: the server's accept loop, not this test, should be the limit.
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            common::many_device_subscribed(addr, i).await
        }));
    }
    let mut streams = Vec::with_capacity(n);
    for t in tasks {
        streams.push(t.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(streams.len(), n);
    let rss_after = server.rss_kib().unwrap_or(0);
    let report = serde_json::json!({
        "devices": n,
        "connect_and_subscribe_seconds": (seconds * 10.0).round() / 10.0,
        "per_second": (n as f64 / seconds).round(),
        "rss_before_mib": rss_before / 1024,
        "rss_after_mib": rss_after / 1024,
        "kib_per_device": (rss_after.saturating_sub(rss_before) as f64 / n as f64 * 10.0).round() / 10.0,
        "peak_rss_mib": server.peak_rss_kib().unwrap_or(0) / 1024,
    });
    println!("FAULTS devices {report}");
}
