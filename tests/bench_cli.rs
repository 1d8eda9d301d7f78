//! `iotpipe bench` against a running server (the test harness): it logs devices and consumers
//! in with the harness's keys, reports a JSON line, and leaves no rule behind.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_iotpipe");

/// Runs `iotpipe bench` for about a second against `server` with `extra` options.
async fn bench(server: &Server, extra: &[&str]) -> Value {
    let started = Instant::now();
    let out = tokio::process::Command::new(BIN)
        .arg("bench")
        .args(["--mqtt", &server.addr().to_string(), "--amqp", &server.app.amqp_addr().to_string()])
        .args(["--product-key", PK, "--device-name", "dev{i}", "--device-secret", "secret{i}"])
        .args(["--first-device", "1", "--devices", "2", "--consumers", "1"])
        .args(["--access-key-id", "LTAItest", "--access-key-secret", "test-secret"])
        .args(["--seconds", "1", "--warmup", "0.2", "--rate", "200", "--json"])
        .args(["--server-pid", &std::process::id().to_string()])
        .args(extra)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "iotpipe bench failed: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_drives_a_running_server_through_the_subscription() {
    let server = Server::start().await;
    let r = bench(&server, &[]).await;
    assert_eq!(r["scenario"], "subscription");
    assert!(r["published"].as_u64().unwrap() > 0, "{r}");
    assert!(r["consumed"].as_u64().unwrap() > 0, "{r}");
    assert!(r["latency"]["samples"].as_u64().unwrap() > 0, "{r}");
    assert!(r["latency"]["p99_ms"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["server"]["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_installs_its_rule_through_the_api_and_removes_it() {
    let server = Server::start().await;
    let http = format!("http://{}", server.app.http_addr());
    let r = bench(&server, &["--scenario", "rule", "--http", &http, "--token", "test-token"]).await;
    assert_eq!(r["scenario"], "rule");
    assert!(r["consumed"].as_u64().unwrap() > 0, "{r}");
    let rules: Value = reqwest::Client::new()
        .get(format!("{http}/api/v1/rules"))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rules, serde_json::json!([]), "the bench rule is deleted at the end");
}
