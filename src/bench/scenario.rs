//! The three shapes of a run: steady load (throughput and latency), backlog drain, and idle
//! connections.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::consumer::{self, Consuming};
use super::device::{self, DeviceSpec, Publishing};
use super::procfs::ServerProc;
use super::report::{Backlog, Idle, Report, ServerUsage};
use super::stats::Latency;
use super::{BenchError, Endpoints, Scenario, Settings};

/// Devices connecting at once: enough to connect 10,000 in seconds, few enough not to overflow
/// a server's accept queue.
const CONNECT_CONCURRENCY: usize = 256;

/// How long consumers may take to log in and attach.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle connections settle (status messages stored, buffers shrunk) before memory is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// What a run measured, before it becomes a [`Report`].
#[derive(Debug, Default)]
pub struct Measured {
    devices: usize,
    seconds: f64,
    published: u64,
    consumed: u64,
    latencies: Option<Vec<u64>>,
    puback_latencies: Option<Vec<u64>>,
    cpu: Option<Duration>,
    peak_rss_kib: Option<u64>,
    backlog: Option<Backlog>,
    idle: Option<Idle>,
}

impl Measured {
    /// The report of this measurement under `settings`.
    pub fn into_report(self, settings: &Settings, system: String) -> Report {
        let per_sec = |n: u64| if self.seconds > 0.0 { n as f64 / self.seconds } else { 0.0 };
        let server = match (self.cpu, self.peak_rss_kib) {
            (Some(cpu), Some(rss)) => {
                let messages = if self.consumed > 0 { self.consumed } else { self.published };
                Some(ServerUsage {
                    cpu_seconds: round(cpu.as_secs_f64(), 3),
                    cores: round(cpu.as_secs_f64() / self.seconds.max(1e-9), 3),
                    cpu_us_per_msg: round(cpu.as_secs_f64() * 1e6 / messages.max(1) as f64, 2),
                    peak_rss_mib: round(rss as f64 / 1024.0, 1),
                })
            }
            _ => None,
        };
        Report {
            system,
            target: settings.target.name().to_string(),
            scenario: settings.scenario.name().to_string(),
            devices: self.devices,
            consumers: if settings.scenario == Scenario::Idle { 0 } else { settings.consumers },
            offered_rate: settings.rate,
            seconds: round(self.seconds, 3),
            published: self.published,
            consumed: self.consumed,
            published_per_sec: per_sec(self.published).round(),
            consumed_per_sec: per_sec(self.consumed).round(),
            latency: self.latencies.filter(|l| !l.is_empty()).map(Latency::of_micros),
            puback_latency: self.puback_latencies.filter(|l| !l.is_empty()).map(Latency::of_micros),
            nodes: (settings.nodes() > 1).then_some(settings.nodes()),
            server,
            backlog: self.backlog,
            idle: self.idle,
        }
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Runs the settings' scenario against a server at `endpoints`.
pub async fn run(
    settings: &Settings,
    endpoints: &Endpoints,
    server: Option<&ServerProc>,
) -> Result<Measured, BenchError> {
    match settings.scenario {
        Scenario::Backlog => backlog(settings, endpoints, server).await,
        Scenario::Idle => idle(settings, endpoints, server).await,
        _ => steady(settings, endpoints, server).await,
    }
}

/// Devices publish for warm-up + measured seconds while consumers accept.
async fn steady(
    settings: &Settings,
    endpoints: &Endpoints,
    server: Option<&ServerProc>,
) -> Result<Measured, BenchError> {
    let (consuming, consumers) = start_consumers(settings, endpoints).await?;
    let devices = connect_devices(settings, endpoints, settings.devices).await?;
    let publishing = Arc::new(Publishing::default());
    let per_device = settings.rate / settings.devices as f64;
    let publishers = spawn_publishers(devices, settings.window, per_device, &publishing);

    watch(Duration::from_secs_f64(settings.warmup), &publishing, &consuming).await?;
    let start = Instant::now();
    let (p0, c0) = (publishing.acked.load(Ordering::Relaxed), consuming.consumed.load(Ordering::Relaxed));
    let cpu0 = server.and_then(|s| s.cpu_time());
    let rss = server.map(|s| s.sample_rss());
    consuming.record.store(true, Ordering::Relaxed);
    publishing.record.store(true, Ordering::Relaxed);
    let watched = watch(Duration::from_secs_f64(settings.seconds), &publishing, &consuming).await;
    publishing.record.store(false, Ordering::Relaxed);
    consuming.record.store(false, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let (p1, c1) = (publishing.acked.load(Ordering::Relaxed), consuming.consumed.load(Ordering::Relaxed));
    let cpu = cpu_since(server, cpu0);

    publishing.stop.store(true, Ordering::Relaxed);
    join(publishers).await;
    consuming.stop.store(true, Ordering::Relaxed);
    join(consumers).await;
    watched?;
    let latencies = std::mem::take(&mut *consuming.latencies.lock().unwrap_or_else(|e| e.into_inner()));
    let pubacks = std::mem::take(&mut *publishing.puback_latencies.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(Measured {
        devices: settings.devices,
        seconds,
        published: p1 - p0,
        consumed: c1 - c0,
        latencies: Some(latencies),
        puback_latencies: Some(pubacks),
        cpu,
        peak_rss_kib: rss.map(|r| r.peak_kib()),
        ..Default::default()
    })
}

/// Devices publish `settings.backlog` messages with nobody consuming; then consumers start and
/// the time until they have accepted them all is the drain time.
async fn backlog(
    settings: &Settings,
    endpoints: &Endpoints,
    server: Option<&ServerProc>,
) -> Result<Measured, BenchError> {
    let devices = connect_devices(settings, endpoints, settings.devices).await?;
    let budget = i64::try_from(settings.backlog).unwrap_or(i64::MAX);
    let publishing = Arc::new(Publishing { budget: Some(AtomicI64::new(budget)), ..Default::default() });
    let rss = server.map(|s| s.sample_rss());
    let fill_start = Instant::now();
    join(spawn_publishers(devices, settings.window, 0.0, &publishing)).await;
    let fill = fill_start.elapsed().as_secs_f64();
    if let Some(f) = publishing.failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(BenchError::Run(f));
    }
    let messages = publishing.acked.load(Ordering::Relaxed);

    let cpu0 = server.and_then(|s| s.cpu_time());
    let drain_start = Instant::now();
    let (consuming, consumers) = start_consumers(settings, endpoints).await?;
    // A broker that drains at 1,000 msgs/s gets its chance; one that stalls fails the run.
    let limit = Duration::from_secs(120).max(Duration::from_millis(messages));
    let drained = loop {
        if consuming.consumed.load(Ordering::Relaxed) >= messages {
            break Ok(());
        }
        if let Some(f) = consuming.failure() {
            break Err(BenchError::Run(f));
        }
        if drain_start.elapsed() > limit {
            break Err(BenchError::Run(format!(
                "the consumers took only {} of {messages} messages in {} s",
                consuming.consumed.load(Ordering::Relaxed),
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let drain = drain_start.elapsed().as_secs_f64();
    let cpu = cpu_since(server, cpu0);
    consuming.stop.store(true, Ordering::Relaxed);
    join(consumers).await;
    drained?;
    Ok(Measured {
        devices: settings.devices,
        seconds: drain,
        published: messages,
        consumed: consuming.consumed.load(Ordering::Relaxed),
        latencies: None,
        cpu,
        peak_rss_kib: rss.map(|r| r.peak_kib()),
        backlog: Some(Backlog {
            messages,
            fill_per_sec: (messages as f64 / fill).round(),
            drain_seconds: round(drain, 3),
            drain_per_sec: (messages as f64 / drain).round(),
        }),
        ..Default::default()
    })
}

/// Connects `settings.idle_devices` devices that then do nothing; the server's resident memory
/// before and after gives the memory per connection.
async fn idle(
    settings: &Settings,
    endpoints: &Endpoints,
    server: Option<&ServerProc>,
) -> Result<Measured, BenchError> {
    let before = server.and_then(|s| s.rss_kib());
    let rss = server.map(|s| s.sample_rss());
    let start = Instant::now();
    let streams = connect_devices(settings, endpoints, settings.idle_devices).await?;
    let connect_seconds = start.elapsed().as_secs_f64();
    tokio::time::sleep(IDLE_SETTLE).await;
    let after = server.and_then(|s| s.rss_kib());
    let peak = rss.map(|r| r.peak_kib());
    let n = streams.len();
    drop(streams);
    let mib = |k: u64| round(k as f64 / 1024.0, 1);
    let idle = match (before, after) {
        (Some(b), Some(a)) => Idle {
            connections: n,
            connect_seconds: round(connect_seconds, 2),
            connects_per_sec: (n as f64 / connect_seconds.max(1e-9)).round(),
            rss_before_mib: mib(b),
            rss_after_mib: mib(a),
            kib_per_connection: round(a.saturating_sub(b) as f64 / n.max(1) as f64, 2),
        },
        _ => Idle {
            connections: n,
            connect_seconds: round(connect_seconds, 2),
            connects_per_sec: (n as f64 / connect_seconds.max(1e-9)).round(),
            ..Idle::default()
        },
    };
    Ok(Measured {
        devices: n,
        seconds: connect_seconds,
        cpu: server.and(Some(Duration::ZERO)),
        peak_rss_kib: peak,
        idle: Some(idle),
        ..Default::default()
    })
}

fn cpu_since(server: Option<&ServerProc>, start: Option<Duration>) -> Option<Duration> {
    Some(server?.cpu_time()?.saturating_sub(start?))
}

/// Starts the settings' consumers and waits until every one is attached.
async fn start_consumers(
    settings: &Settings,
    endpoints: &Endpoints,
) -> Result<(Arc<Consuming>, Vec<JoinHandle<()>>), BenchError> {
    let state = Arc::new(Consuming::default());
    let mut tasks = Vec::new();
    for i in 0..settings.consumers {
        let spec = settings.identity.consumer(
            settings.target,
            i,
            (settings.consumers, settings.devices),
            endpoints,
            settings.credit,
        )?;
        tasks.push(tokio::spawn(consumer::run(format!("bench-{i}"), spec, state.clone())));
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while state.ready.load(Ordering::Relaxed) < settings.consumers {
        if let Some(f) = state.failure() {
            state.stop.store(true, Ordering::Relaxed);
            return Err(BenchError::Run(f));
        }
        if Instant::now() > deadline {
            state.stop.store(true, Ordering::Relaxed);
            return Err(BenchError::Run(format!(
                "only {} of {} consumers attached within {} s",
                state.ready.load(Ordering::Relaxed),
                settings.consumers,
                READY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((state, tasks))
}

/// Connections per loopback source address. One address has about 28,000 ephemeral ports
/// (32768-60999), and the ports of the previous run's connections wait in TIME_WAIT for a
/// minute: 10,000 per address leaves room for a second run right after the first.
const PER_SOURCE_ADDRESS: usize = 10_000;

/// The source address of the `k`-th connection to `server`: on IPv4 loopback, 127.0.0.1 for
/// the first [`PER_SOURCE_ADDRESS`], then 127.0.0.2 and so on; elsewhere the system's choice.
fn source_address(server: std::net::SocketAddr, k: usize) -> Option<std::net::IpAddr> {
    match server.ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() => {
            let host = u8::try_from(1 + k / PER_SOURCE_ADDRESS).ok()?;
            Some(std::net::Ipv4Addr::new(127, 0, 0, host).into())
        }
        _ => None,
    }
}

/// Connects `n` devices, [`CONNECT_CONCURRENCY`] at a time.
async fn connect_devices(
    settings: &Settings,
    endpoints: &Endpoints,
    n: usize,
) -> Result<Vec<(DeviceSpec, TcpStream)>, BenchError> {
    let first = settings.identity.first_device;
    let servers = endpoints.mqtt.len().max(1);
    let results: Vec<Result<(DeviceSpec, TcpStream), BenchError>> = futures::stream::iter(first..first + n)
        .map(|i| {
            let spec = settings.identity.device(settings.target, i);
            // Device k goes to server k mod N: the k / N-th connection to that server.
            let addr = endpoints.mqtt_of(i - first);
            let source = source_address(addr, (i - first) / servers);
            async move {
                let s = device::connect(addr, source, &spec).await?;
                Ok((spec, s))
            }
        })
        .buffer_unordered(CONNECT_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

fn spawn_publishers(
    devices: Vec<(DeviceSpec, TcpStream)>,
    window: u16,
    rate: f64,
    state: &Arc<Publishing>,
) -> Vec<JoinHandle<()>> {
    devices
        .into_iter()
        .map(|(spec, s)| tokio::spawn(device::publish_loop(s, spec, window, rate, state.clone())))
        .collect()
}

/// Sleeps for `d`, failing early when a device or consumer fails.
async fn watch(d: Duration, publishing: &Publishing, consuming: &Consuming) -> Result<(), BenchError> {
    let end = Instant::now() + d;
    loop {
        if let Some(f) = publishing.failure.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Err(BenchError::Run(f));
        }
        if let Some(f) = consuming.failure() {
            return Err(BenchError::Run(f));
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(100))).await;
    }
}

async fn join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_connections_spread_over_source_addresses() {
        let server: std::net::SocketAddr = "127.0.0.1:1883".parse().unwrap();
        assert_eq!(source_address(server, 0), Some([127, 0, 0, 1].into()));
        assert_eq!(source_address(server, 9_999), Some([127, 0, 0, 1].into()));
        assert_eq!(source_address(server, 10_000), Some([127, 0, 0, 2].into()));
        assert_eq!(source_address(server, 18_000), Some([127, 0, 0, 2].into()));
        assert_eq!(source_address(server, 10_000_000), None, "past 127.0.0.255");
        assert_eq!(source_address("10.0.0.5:1883".parse().unwrap(), 20_000), None);
    }
}
