//! Ingress benchmark: N devices publish QoS 1 256-byte JSON as fast as they can against the
//! release binary; every PUBACK means "stored durably in DEFAULT_GROUP's queue" (no consumer:
//! the backlog grows).
//!
//! `cargo bench --bench ingress` (env: DEVICES=100, SECONDS=10, WARMUP=2, WINDOW=64).
//! A thin wrapper around `iotpipe bench --consumers 0` (src/bench/): messages/s, the server's
//! CPU time per message and its peak RSS, as a table and a JSON line.

use iotpipe::bench::{self, Settings};

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let settings = Settings {
        binary: Some(env!("CARGO_BIN_EXE_iotpipe").into()),
        devices: env("DEVICES", 100.0) as usize,
        consumers: 0,
        seconds: env("SECONDS", 10.0),
        warmup: env("WARMUP", 2.0),
        window: env("WINDOW", 64.0) as u16,
        ..Settings::default()
    };
    bench::run_benchmark(&settings);
}
