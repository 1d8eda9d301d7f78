//! End-to-end benchmark: devices publish QoS 1 256-byte JSON over MQTT, iotpipe stores each in
//! DEFAULT_GROUP's queue, AMQP consumers (fe2o3-amqp) receive and accept each one.
//!
//! `cargo bench --bench e2e` (env: DEVICES=20, CONSUMERS=2, RATE=0 (msgs/s in total; 0 = as fast
//! as possible), SECONDS=10, WARMUP=2, WINDOW=64, CREDIT=500, FORWARD=subscription|rule|both).
//! A thin wrapper around `iotpipe bench` (src/bench/), which starts the release binary on a
//! generated configuration; prints its table and its JSON line.

use iotpipe::bench::{self, Scenario, Settings};

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let scenario = match std::env::var("FORWARD").as_deref() {
        Ok("rule") => Scenario::Rule,
        Ok("both") => Scenario::Both,
        _ => Scenario::Subscription,
    };
    let settings = Settings {
        scenario,
        binary: Some(env!("CARGO_BIN_EXE_iotpipe").into()),
        devices: env("DEVICES", 20.0) as usize,
        consumers: env("CONSUMERS", 2.0) as usize,
        rate: env("RATE", 0.0),
        seconds: env("SECONDS", 10.0),
        warmup: env("WARMUP", 2.0),
        window: env("WINDOW", 64.0) as u16,
        credit: env("CREDIT", 500.0) as u32,
        ..Settings::default()
    };
    bench::run_benchmark(&settings);
}
