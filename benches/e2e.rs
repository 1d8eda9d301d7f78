//! End-to-end benchmark: devices publish QoS 1 256-byte JSON over MQTT, iotpipe stores each in
//! DEFAULT_GROUP's queue, AMQP consumers (fe2o3-amqp) receive and accept each one.
//!
//! `cargo bench --bench e2e` (env: DEVICES=20, CONSUMERS=2, RATE=0 (msgs/s in total; 0 = as fast
//! as possible), SECONDS=10, WINDOW=64, CREDIT=500, FORWARD=subscription|rule).
//! Reports publish and consume rates, end-to-end latency (publish → consumer, from a timestamp
//! in the payload) p50/p99/p999, the server's CPU per message and peak RSS, as text and JSON.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Connection, Receiver, Session};
use iotpipe::amqp::auth::ConsumerCredentials;
use iotpipe::sign::SignMethod;
use support::*;

async fn consume(
    addr: std::net::SocketAddr,
    i: usize,
    credit: u32,
    consumed: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<u64>>>,
    stop: Arc<AtomicBool>,
) {
    let c = ConsumerCredentials {
        client_id: format!("bench-consumer-{i}"),
        access_key_id: "LTAIbench".into(),
        group_id: "DEFAULT_GROUP".into(),
        method: SignMethod::HmacSha1,
        timestamp: iotpipe::message::now_ms().to_string(),
        instance_id: None,
    };
    let mut connection = Connection::builder()
        .container_id(format!("bench-{i}"))
        .sasl_profile(SaslProfile::Plain { username: c.username(), password: c.password("bench-secret") })
        .open(format!("amqp://{addr}").as_str())
        .await
        .expect("consumer login");
    let mut session = Session::begin(&mut connection).await.expect("session");
    let mut receiver = Receiver::builder()
        .name("rx")
        .source("default")
        .credit_mode(CreditMode::Auto(credit))
        .auto_accept(false)
        .attach(&mut session)
        .await
        .expect("attach");
    let mut local = Vec::with_capacity(1 << 16);
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_millis(200), receiver.recv::<Body<Value>>()).await
        else {
            continue;
        };
        if let Body::Data(batch) = d.body() {
            if let Some(sent) = batch.iter().next().and_then(|b| sent_at_us(&b.0)) {
                local.push(now_us().saturating_sub(sent));
            }
        }
        receiver.accept(&d).await.expect("accept");
        consumed.fetch_add(1, Ordering::Relaxed);
    }
    latencies.lock().unwrap().extend(local);
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
}

fn main() {
    let devices = env("DEVICES", 20) as usize;
    let consumers = env("CONSUMERS", 2) as usize;
    let rate = env("RATE", 0) as f64;
    let seconds = env("SECONDS", 10);
    let window = env("WINDOW", 64) as u16;
    let credit = env("CREDIT", 500) as u32;
    let server = ServerProcess::start(devices);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let (published, consumed, elapsed, cpu, mut latencies) = runtime.block_on(async {
        let acked = Arc::new(AtomicU64::new(0));
        let consumed = Arc::new(AtomicU64::new(0));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let stop_publish = Arc::new(AtomicBool::new(false));
        let stop_consume = Arc::new(AtomicBool::new(false));
        let consumer_tasks: Vec<_> = (0..consumers)
            .map(|i| {
                tokio::spawn(consume(
                    server.amqp,
                    i,
                    credit,
                    consumed.clone(),
                    latencies.clone(),
                    stop_consume.clone(),
                ))
            })
            .collect();
        let mut streams = Vec::new();
        for i in 0..devices {
            streams.push(connect(server.mqtt, i).await);
        }
        let cpu_start = server.cpu_time();
        let start = Instant::now();
        let per_device = rate / devices as f64;
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                tokio::spawn(publish_loop(s, i, window, per_device, acked.clone(), stop_publish.clone()))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let published = acked.load(Ordering::Relaxed);
        let done = consumed.load(Ordering::Relaxed);
        let elapsed = start.elapsed();
        let cpu = server.cpu_time().saturating_sub(cpu_start);
        stop_publish.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        stop_consume.store(true, Ordering::Relaxed);
        for t in consumer_tasks {
            let _ = t.await;
        }
        let lat = std::mem::take(&mut *latencies.lock().unwrap());
        (published, done, elapsed, cpu, lat)
    });
    let rss = server.peak_rss_kib().map_or("n/a".to_string(), |k| format!("{} MiB", k / 1024));
    server.stop();
    latencies.sort_unstable();
    let secs = elapsed.as_secs_f64();
    let (p50, p99, p999) =
        (percentile(&latencies, 50.0), percentile(&latencies, 99.0), percentile(&latencies, 99.9));
    let cpu_per_msg = cpu.as_secs_f64() * 1e6 / consumed.max(1) as f64;
    let mode = if rate > 0.0 { format!("{rate:.0} msgs/s offered") } else { "full speed".into() };
    println!("e2e: {devices} devices -> DEFAULT_GROUP -> {consumers} AMQP consumers, {mode}, {seconds} s");
    println!("  published (PUBACKed)   {:.0} msgs/s", published as f64 / secs);
    println!("  consumed (accepted)    {:.0} msgs/s", consumed as f64 / secs);
    println!(
        "  latency p50/p99/p999   {:.2} / {:.2} / {:.2} ms",
        p50 as f64 / 1e3,
        p99 as f64 / 1e3,
        p999 as f64 / 1e3
    );
    println!("  server CPU per message {cpu_per_msg:.2} µs ({:.2} cores busy)", cpu.as_secs_f64() / secs);
    println!("  server peak RSS        {rss}");
    println!(
        "{}",
        serde_json::json!({"bench": "e2e", "forward": std::env::var("FORWARD").unwrap_or_else(|_| "subscription".into()), "devices": devices, "consumers": consumers, "offered_rate": rate,
            "seconds": seconds, "published_per_sec": (published as f64 / secs).round(),
            "consumed_per_sec": (consumed as f64 / secs).round(), "latency_ms_p50": p50 as f64 / 1e3,
            "latency_ms_p99": p99 as f64 / 1e3, "latency_ms_p999": p999 as f64 / 1e3,
            "server_cpu_us_per_message": cpu_per_msg})
    );
}
