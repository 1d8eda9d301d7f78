//! Fuzz targets on stable Rust: each target feeds generated and mutated inputs to one parser or
//! server surface for a time budget and checks that nothing panics or hangs.
//!
//! The budget per target is `IOTPIPE_FUZZ_SECONDS` (default 2, so `cargo test` stays fast);
//! `scripts/fuzz.sh SECONDS` runs every target longer in release mode. The generator is a
//! deterministic xorshift (seeded, so a failure replays) that builds inputs from seeds by byte
//! flips, insertions, deletions, splices and interesting values, plus fully random inputs. Each
//! target prints `fuzz target NAME: N executions, C crashes` and then fails if C > 0.
//!
//! An input that crashes a target becomes a `regression_*` test at the end of this file (none has
//! been found so far: see docs/security.md, "Fuzzing").

mod common;
#[path = "common/rng.rs"]
mod rng;

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{creds, publish_one, Server, PK};
use iotpipe::amqp::auth::parse_username;
use iotpipe::ingress::codec::{detect, Version};
use rng::{budget, Rng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A seed per run is fixed unless `IOTPIPE_FUZZ_SEED` is set, so a CI failure replays.
fn seed(salt: u64) -> u64 {
    let base = std::env::var("IOTPIPE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15);
    (base ^ salt.wrapping_mul(0x2545_F491_4F6C_DD1D)) | 1
}

const INTERESTING: &[u8] =
    &[0x00, 0x01, 0x7F, 0x80, 0xFF, 0xFE, 0x10, 0x20, 0x30, 0x32, 0x82, 0xC0, 0xE0, 0x04, 0x05];

/// A few byte-level mutations of `seed`.
fn mutate(r: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut s = seed.to_vec();
    for _ in 0..1 + r.below(6) {
        let at = r.below(s.len() + 1);
        match r.below(7) {
            0 if !s.is_empty() => {
                let i = at.min(s.len() - 1);
                s[i] ^= 1 << r.below(8);
            }
            1 => s.insert(at, r.next() as u8),
            2 if at < s.len() => {
                let end = (at + 1 + r.below(8)).min(s.len());
                s.drain(at..end);
            }
            3 if !s.is_empty() => {
                let i = at.min(s.len() - 1);
                s[i] = INTERESTING[r.below(INTERESTING.len())];
            }
            4 => {
                // Splice a copy of a slice of the input elsewhere (duplicated fields, packets).
                let a = r.below(s.len() + 1);
                let b = (a + r.below(16)).min(s.len());
                let piece = s[a..b].to_vec();
                let at = r.below(s.len() + 1);
                s.splice(at..at, piece);
            }
            5 => s.truncate(at),
            _ => {
                let extra = r.bytes(8);
                s.splice(at..at, extra);
            }
        }
    }
    s
}

thread_local! {
    /// Set while a target runs an input under `catch_unwind`, so the hook below does not count
    /// the panic twice.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Panics anywhere else in the process: the server's tasks and threads.
static SERVER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn install_panic_counter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CATCHING.with(Cell::get) {
                SERVER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// CPU time of the calling thread: what one input costs, whatever else the machine runs (a
/// niced fuzz run beside a build can be off the CPU for seconds of wall time).
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `one` on generated inputs until the budget is spent; counts panics and slow inputs.
fn run_target<T: std::fmt::Debug>(name: &str, mut gen: impl FnMut(&mut Rng) -> T, mut one: impl FnMut(&T)) {
    install_panic_counter();
    let mut r = Rng(seed(name.len() as u64 ^ name.as_bytes()[0] as u64));
    let start = Instant::now();
    let (mut execs, mut crashes) = (0u64, 0u64);
    let mut first: Option<String> = None;
    while start.elapsed() < budget() {
        let input = gen(&mut r);
        let t = thread_cpu_time();
        CATCHING.with(|c| c.set(true));
        let result = catch_unwind(AssertUnwindSafe(|| one(&input)));
        CATCHING.with(|c| c.set(false));
        // A parser that spends a second of CPU on one small input is a hang in waiting. (Wall
        // time would count the seconds a loaded machine keeps the thread waiting: a 60-minute
        // run at nice 19 beside builds reported such "slow" inputs that take microseconds.)
        let slow = thread_cpu_time().saturating_sub(t) > Duration::from_secs(1);
        if result.is_err() || slow {
            crashes += 1;
            first.get_or_insert_with(|| format!("{input:?} (slow: {slow})"));
        }
        execs += 1;
    }
    println!("fuzz target {name}: {execs} executions, {crashes} crashes");
    assert!(execs > 0);
    assert_eq!(crashes, 0, "{name}: first failing input: {}", first.unwrap_or_default());
}

// ---- MQTT codec ---------------------------------------------------------------------------

/// Valid packet streams of both versions, written by rumqttc's encoders.
fn codec_seeds() -> Vec<(Version, Vec<u8>)> {
    use rumqttc::mqttbytes::v4;
    use rumqttc::v5::mqttbytes::v5;
    let mut seeds = Vec::new();

    let mut b = BytesMut::new();
    let mut c = v4::Connect::new("client-1");
    c.set_login("dev1&a1test", "password");
    v4::Packet::Connect(c).write(&mut b, 1 << 20).unwrap();
    let mut p = v4::Publish::new("/a1test/dev1/user/update", rumqttc::QoS::AtLeastOnce, "{\"t\":1}");
    p.pkid = 1;
    v4::Packet::Publish(p).write(&mut b, 1 << 20).unwrap();
    let mut sub = v4::Subscribe::new("/a1test/dev1/user/#", rumqttc::QoS::AtLeastOnce);
    sub.pkid = 2;
    v4::Packet::Subscribe(sub).write(&mut b, 1 << 20).unwrap();
    v4::Packet::PingReq.write(&mut b, 1 << 20).unwrap();
    v4::Packet::PubAck(v4::PubAck::new(7)).write(&mut b, 1 << 20).unwrap();
    v4::Packet::Disconnect.write(&mut b, 1 << 20).unwrap();
    seeds.push((Version::V311, b.to_vec()));

    let mut b = BytesMut::new();
    let c = v5::Connect { keep_alive: 60, client_id: "client-5".into(), clean_start: true, properties: None };
    let login = v5::Login { username: "dev1&a1test".into(), password: "password".into() };
    v5::Packet::Connect(c, None, Some(login)).write(&mut b, None).unwrap();
    let props = v5::PublishProperties {
        topic_alias: Some(3),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    let mut p = v5::Publish::new(
        "/a1test/dev1/user/update",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        "{}",
        Some(props),
    );
    p.pkid = 9;
    v5::Packet::Publish(p).write(&mut b, None).unwrap();
    v5::Packet::PingReq(v5::PingReq).write(&mut b, None).unwrap();
    v5::Packet::Disconnect(v5::Disconnect::new(v5::DisconnectReasonCode::NormalDisconnection))
        .write(&mut b, None)
        .unwrap();
    seeds.push((Version::V5, b.to_vec()));
    seeds
}

/// Reads a byte stream the way a connection does: detect the version, then packets until the
/// buffer runs dry or an error.
fn read_stream(version: Option<Version>, bytes: &[u8]) {
    let version = match detect(bytes) {
        Ok(Some(v)) => v,
        Ok(None) | Err(_) => match version {
            Some(v) => v,
            None => return,
        },
    };
    let mut buf = BytesMut::from(bytes);
    for _ in 0..1000 {
        let before = buf.len();
        match version.read(&mut buf, 4096) {
            Ok(Some(_)) if buf.len() < before => {}
            // A packet read must consume bytes; a read that returns one without progress would
            // spin a connection forever.
            Ok(Some(p)) => panic!("read {p:?} without consuming bytes"),
            Ok(None) | Err(_) => return,
        }
    }
}

#[test]
fn fuzz_mqtt_codec() {
    let seeds = codec_seeds();
    run_target(
        "mqtt_codec",
        |r| {
            let (v, s) = &seeds[r.below(seeds.len())];
            match r.below(4) {
                0 => (Some(*v), r.bytes(64)),
                _ => (Some(*v), mutate(r, s)),
            }
        },
        |(v, bytes)| {
            read_stream(None, bytes);
            read_stream(*v, bytes);
        },
    );
}

// ---- Thing-model bodies ------------------------------------------------------------------

/// Device topics and Alink bodies of every kind the ingress converts.
const THING_SEEDS: &[(&str, &str)] = &[
    (
        "/sys/a1test/dev1/thing/event/property/post",
        r#"{"id":"1","version":"1.0","params":{"t":{"value":23.6,"time":1524448722000},"h":40},"method":"thing.event.property.post"}"#,
    ),
    ("/sys/a1test/dev1/thing/event/alarm/post", r#"{"id":"2","params":{"value":{"code":1},"time":5}}"#),
    (
        "/sys/a1test/dev1/thing/event/property/batch/post",
        r#"{"id":"3","params":{"properties":{"t":[{"value":1,"time":1},2]},"events":{"e":[{"value":{"c":1},"time":3}]}}}"#,
    ),
    (
        "/sys/a1test/dev1/thing/event/property/history/post",
        r#"{"id":"4","params":[{"identity":{"productKey":"a1test","deviceName":"dev1"},"properties":[{"t":{"value":1,"time":1}}],"events":[{"e":{"value":{},"time":2}}]}]}"#,
    ),
    ("/sys/a1test/dev1/thing/service/property/set_reply", r#"{"id":"5","code":200,"data":{}}"#),
    (
        "/sys/a1test/dev1/thing/service/reboot_reply",
        r#"{"id":"6","code":"460","message":"m","data":{"o":1}}"#,
    ),
    ("/sys/a1test/dev1/thing/deviceinfo/update", r#"{"id":"7","params":[{"attrKey":"k","attrValue":"v"}]}"#),
    ("/sys/a1test/dev1/thing/deviceinfo/delete", r#"{"id":"8","params":[{"attrKey":"k"}]}"#),
];

#[test]
fn fuzz_thing_bodies() {
    use iotpipe::message::thing::{self, tags};
    let origin = iotpipe::message::Origin {
        product_key: PK.into(),
        device_name: "dev1".into(),
        iot_id: "iot1".into(),
        device_type: "CustomCategory".into(),
        client_id: "c".into(),
        peer: None,
    };
    run_target(
        "thing_bodies",
        |r| {
            let (topic, body) = THING_SEEDS[r.below(THING_SEEDS.len())];
            let bytes = match r.below(4) {
                0 => r.bytes(64),
                1 => mutate(r, body.as_bytes()),
                _ => {
                    let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
                    for _ in 0..1 + r.below(3) {
                        mutate_json(r, &mut v);
                    }
                    v.to_string().into_bytes()
                }
            };
            (topic, bytes)
        },
        |(topic, bytes)| {
            if let Some(Ok(c)) = thing::convert(&origin, topic, bytes, 1) {
                assert!(!c.messages.is_empty() && c.messages.len() <= thing::MAX_CONVERTED);
                for m in &c.messages {
                    serde_json::from_slice::<serde_json::Value>(&m.payload)
                        .expect("converted bodies are JSON");
                }
            }
            if let Some(op) = tags::report_op(&origin, topic) {
                let _ = tags::parse_report(op, bytes);
            }
            let _ = iotpipe::message::alink::post_reply(topic, bytes, true);
        },
    );
}

// ---- AMQP SASL username -----------------------------------------------------------------

#[test]
fn fuzz_amqp_username() {
    let seeds = [
        "c1|authMode=aksign,signMethod=hmacsha1,timestamp=1700000000000,authId=LTAItest,consumerGroupId=DEFAULT_GROUP|",
        "c1|authMode=aksign,signMethod=hmacsha256,timestamp=1,authId=a,consumerGroupId=g,iotInstanceId=i|",
        "é|authMode=aksign,signMethod=hmacmd5,timestamp=0,authId=,consumerGroupId=,|",
    ];
    run_target(
        "amqp_username",
        |r| {
            let bytes = if r.below(4) == 0 {
                r.bytes(64)
            } else {
                {
                    let i = r.below(seeds.len());
                    mutate(r, seeds[i].as_bytes())
                }
            };
            String::from_utf8_lossy(&bytes).into_owned()
        },
        |s| {
            if let Ok(c) = parse_username(s) {
                // What parses must render back to a username that parses the same way.
                let again = parse_username(&c.username()).expect("a rendered username parses");
                assert_eq!(again.client_id, c.client_id);
                assert_eq!(again.group_id, c.group_id);
                let _ = c.password("secret");
                let _ = c.verify("secret", b"x");
            }
        },
    );
}

// ---- config loader ----------------------------------------------------------------------

/// Config keys, values and punctuation the mutator splices in at char boundaries.
const CONFIG_TOKENS: &[&str] = &[
    "[[products]]\n",
    "[[products.devices]]\n",
    "[mqtt]\n",
    "[amqp]\n",
    "[http]\n",
    "[storage]\n",
    "[[rules]]\n",
    "[[subscriptions]]\n",
    "[[access_keys]]\n",
    "[[consumer_groups]]\n",
    "listen = \"127.0.0.1:0\"\n",
    "key = \"a1demo\"\n",
    "name = \"dev1\"\n",
    "secret = \"\"\n",
    "max_connections = 0\n",
    "max_payload_bytes = 18446744073709551615\n",
    "keep_alive_min_secs = -1\n",
    "= ",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "#",
    "=",
    "1e400",
    "-0",
    "0x",
    "\u{0}",
    "é",
    "\\u0000",
];

fn mutate_text(r: &mut Rng, seed: &str) -> String {
    let mut s = seed.to_string();
    for _ in 0..1 + r.below(5) {
        let mut at = r.below(s.len() + 1);
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        match r.below(4) {
            0 => s.insert_str(at, CONFIG_TOKENS[r.below(CONFIG_TOKENS.len())]),
            1 => {
                let mut end = (at + 1 + r.below(40)).min(s.len());
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.replace_range(at..end, "");
            }
            2 => {
                // Duplicate a line: repeated keys and tables.
                let line = s.lines().nth(r.below(s.lines().count().max(1))).unwrap_or("").to_string();
                s.insert_str(at, &format!("\n{line}\n"));
            }
            _ => {
                let bytes = r.bytes(6);
                s.insert_str(at, &String::from_utf8_lossy(&bytes));
            }
        }
    }
    s
}

#[test]
fn fuzz_config_loader() {
    let example = include_str!("../fixtures/iotpipe.example.toml");
    let dir = tempfile::tempdir().unwrap();
    let harness = common::config_text(dir.path(), "", "");
    let seeds = [example.to_string(), harness];
    run_target(
        "config_loader",
        |r| {
            let i = r.below(seeds.len());
            mutate_text(r, &seeds[i])
        },
        |text| {
            if let Err(e) = iotpipe::config::load_str(text, "fuzz.toml") {
                let _ = e.to_string();
            }
        },
    );
}

// ---- MQTT session layer over TCP --------------------------------------------------------

/// Opens a raw connection, writes `bytes` in one or a few pieces, reads what comes back for a
/// moment and drops the socket.
async fn feed(addr: std::net::SocketAddr, bytes: &[u8], pieces: usize) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    let chunk = bytes.len().div_ceil(pieces.max(1)).max(1);
    for part in bytes.chunks(chunk) {
        s.write_all(part).await?;
    }
    let mut sink = [0u8; 512];
    // The server answers a complete CONNECT at once and closes an incomplete one after its 1 s
    // connect timeout; 2 s waits for either (200 ms was too short on two loaded cores: the
    // coverage check below then failed with nothing wrong).
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut sink)).await.unwrap_or(Ok(0))?;
    // A CONNACK with return/reason code 0: the input got past authentication into a session.
    Ok(n >= 4 && sink[0] == 0x20 && sink[3] == 0)
}

/// A valid authenticated CONNECT of either version, and the packets that follow it.
fn session_seeds() -> Vec<(Vec<u8>, Vec<u8>)> {
    use rumqttc::mqttbytes::v4;
    use rumqttc::v5::mqttbytes::v5;
    let c = creds("dev2");
    let mut out = Vec::new();
    let mut b = BytesMut::new();
    let mut connect = v4::Connect::new(c.client_id.clone());
    connect.set_login(c.username.clone(), c.password.clone());
    v4::Packet::Connect(connect).write(&mut b, 1 << 20).unwrap();
    let head = b.split().to_vec();
    let topic = format!("/{PK}/dev2/user/update");
    let mut p = v4::Publish::new(&topic, rumqttc::QoS::AtLeastOnce, "{\"t\":1}");
    p.pkid = 1;
    v4::Packet::Publish(p).write(&mut b, 1 << 20).unwrap();
    let mut sub = v4::Subscribe::new(format!("/{PK}/dev2/user/get"), rumqttc::QoS::AtLeastOnce);
    sub.pkid = 2;
    v4::Packet::Subscribe(sub).write(&mut b, 1 << 20).unwrap();
    v4::Packet::PingReq.write(&mut b, 1 << 20).unwrap();
    out.push((head, b.to_vec()));

    let mut b = BytesMut::new();
    let connect =
        v5::Connect { keep_alive: 60, client_id: c.client_id.clone(), clean_start: true, properties: None };
    let login = v5::Login { username: c.username.clone(), password: c.password.clone() };
    v5::Packet::Connect(connect, None, Some(login)).write(&mut b, None).unwrap();
    let head = b.split().to_vec();
    let props = v5::PublishProperties { topic_alias: Some(1), ..Default::default() };
    let mut p = v5::Publish::new(&topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, "{}", Some(props));
    p.pkid = 1;
    v5::Packet::Publish(p).write(&mut b, None).unwrap();
    v5::Packet::PingReq(v5::PingReq).write(&mut b, None).unwrap();
    out.push((head, b.to_vec()));
    out
}

/// Feeds fuzzed byte streams to a server for the time budget, eight connections at a time (enough
/// to overlap sessions of the same client, few enough for two shared cores); returns how many
/// inputs ran and how many `feed` called accepted. Most inputs keep a seed's head (a login)
/// intact so the layer behind it is reached; the rest mutate the whole stream or are random
/// bytes. Refused connections are fine; a hang is not: the servers close a silent connection
/// after 1 s, and 30 s leaves room for a loaded machine (a niced run beside builds once took over
/// 5 s to connect and write a few hundred bytes).
async fn fuzz_connections<F, Fut>(seeds: Vec<(Vec<u8>, Vec<u8>)>, salt: u64, feed: F) -> (u64, u64)
where
    F: Fn(Arc<Vec<u8>>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<bool>> + Send,
{
    let seeds = Arc::new(seeds);
    let start = Instant::now();
    let budget = budget();
    let mut workers = Vec::new();
    for w in 0..8u64 {
        let (seeds, feed) = (seeds.clone(), feed.clone());
        workers.push(tokio::spawn(async move {
            let mut r = Rng(seed(salt + w));
            let (mut execs, mut accepted) = (0u64, 0u64);
            while start.elapsed() < budget {
                let (head, tail) = &seeds[r.below(seeds.len())];
                let bytes = match r.below(10) {
                    0 | 1 => r.bytes(128),
                    2..=4 => mutate(&mut r, &[head.as_slice(), tail.as_slice()].concat()),
                    _ => [head.clone(), mutate(&mut r, tail)].concat(),
                };
                let (bytes, pieces) = (Arc::new(bytes), 1 + r.below(3));
                let ok = tokio::time::timeout(Duration::from_secs(30), feed(bytes.clone(), pieces))
                    .await
                    .unwrap_or_else(|_| panic!("connection hung on {bytes:?}"))
                    .unwrap_or(false);
                execs += 1;
                accepted += u64::from(ok);
            }
            (execs, accepted)
        }));
    }
    let (mut execs, mut accepted) = (0, 0);
    for w in workers {
        let (e, a) = w.await.unwrap();
        execs += e;
        accepted += a;
    }
    (execs, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_mqtt_sessions() {
    install_panic_counter();
    let server = Server::start_with("connect_timeout_secs = 1", "").await;
    let addr = server.addr();
    let (execs, sessions) = fuzz_connections(session_seeds(), 0x5E55, move |bytes, pieces| async move {
        feed(addr, &bytes, pieces).await
    })
    .await;
    // The mutator must get inputs past the CONNECT into a session, not only refusals.
    assert!(sessions * 5 > execs, "only {sessions} of {execs} inputs opened a session");
    // The server is alive: a normal device connects and gets its PUBACK.
    tokio::time::timeout(Duration::from_secs(15), publish_one(addr, "dev1", "{\"alive\":true}"))
        .await
        .expect("a normal device could not publish after the fuzzing");
    let crashes = SERVER_PANICS.load(Ordering::SeqCst);
    println!(
        "fuzz target mqtt_sessions: {execs} executions ({sessions} opened a session), {crashes} crashes"
    );
    assert_eq!(crashes, 0, "the server panicked while fed fuzzed MQTT streams");
}

// ---- AMQP consumer connections over TCP --------------------------------------------------

/// A consumer's whole conversation: the login and open (kept intact by most inputs), then a
/// session, a receiver link, credit, outcomes and the goodbyes (mutated).
fn amqp_seeds() -> (Vec<u8>, Vec<u8>) {
    use common::amqp_raw::{attach_receiver, begin, credit, frame, login_and_open};
    use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role};
    use fe2o3_amqp::types::messaging::{Accepted, DeliveryState};
    use fe2o3_amqp::types::performatives::{Close, Detach, Disposition, End};

    let head = login_and_open("fuzz", "DEFAULT_GROUP");
    let mut tail = Vec::new();
    frame(&mut tail, &begin());
    frame(&mut tail, &attach_receiver(ReceiverSettleMode::First));
    frame(&mut tail, &credit(0, 10, false));
    let disposition = Disposition {
        role: Role::Receiver,
        first: 0,
        last: Some(5),
        settled: true,
        state: Some(DeliveryState::Accepted(Accepted {})),
        batchable: false,
    };
    frame(&mut tail, &disposition);
    frame(&mut tail, &Detach { handle: Handle(0), closed: true, error: None });
    frame(&mut tail, &End { error: None });
    frame(&mut tail, &Close { error: None });
    (head, tail)
}

/// Writes `bytes` in a few pieces and reads what comes back until the server closes or pauses.
/// True when the login went through (the server continued with the AMQP header).
async fn feed_amqp(addr: std::net::SocketAddr, bytes: &[u8], pieces: usize) -> std::io::Result<bool> {
    let mut s = TcpStream::connect(addr).await?;
    let chunk = bytes.len().div_ceil(pieces.max(1)).max(1);
    for part in bytes.chunks(chunk) {
        if s.write_all(part).await.is_err() {
            break;
        }
    }
    // What the server answers comes at once; a pause of 250 ms means it waits for more input
    // (it would close the connection at its 1 s login deadline, or keep a logged-in one open).
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
        got.extend_from_slice(&buf[..n]);
    }
    Ok(got.windows(8).any(|w| w == b"AMQP\x00\x01\x00\x00"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_amqp_connections() {
    install_panic_counter();
    let server = Server::start_full("", "auth_timeout_secs = 1", "").await;
    let addr = server.app.amqp_addr();
    let seeds = vec![amqp_seeds()];
    let (execs, logins) =
        fuzz_connections(
            seeds,
            0xA3,
            move |bytes, pieces| async move { feed_amqp(addr, &bytes, pieces).await },
        )
        .await;
    // The mutator must get inputs past the login into the session, not only refusals.
    assert!(logins * 5 > execs, "only {logins} of {execs} inputs logged in");
    // The server is alive: a normal consumer gets a device's message.
    let mut c = common::amqp::consumer(addr, "after-fuzz", "DEFAULT_GROUP").await;
    publish_one(server.addr(), "dev1", "{\"alive\":true}").await;
    loop {
        let d = c.next().await;
        c.accept(&d).await;
        if common::amqp::read(&d).topic.ends_with("/user/update") {
            break;
        }
    }
    let crashes = SERVER_PANICS.load(Ordering::SeqCst);
    println!("fuzz target amqp_connections: {execs} executions ({logins} logged in), {crashes} crashes");
    assert_eq!(crashes, 0, "the server panicked while fed fuzzed AMQP streams");
}

// ---- HTTP API bodies --------------------------------------------------------------------

const API_SEEDS: &[(&str, &str, &str)] = &[
    ("POST", "/consumer-groups", r#"{"name":"fuzzgroup"}"#),
    ("POST", "/products/a1test/devices", r#"{"deviceName":"newdev","deviceSecret":"k-secret"}"#),
    ("PATCH", "/products/a1test/devices/dev3", r#"{"enabled":true}"#),
    ("PUT", "/products/a1test/devices/dev3/tags", r#"{"tags":{"room":"lab","floor":"2"}}"#),
    ("PATCH", "/products/a1test/devices/dev3/tags", r#"{"tags":{"room":"hall","floor":null}}"#),
    (
        "POST",
        "/products/a1test/devices/dev1/messages",
        r#"{"topic":"/a1test/dev1/user/get","payload":"on","qos":1}"#,
    ),
    ("POST", "/products/a1test/broadcast", r#"{"topic":"/broadcast/a1test/news","payloadBase64":"aGk="}"#),
    ("POST", "/products/a1test/devices/dev1/rrpc", r#"{"payload":"ping","timeoutMs":1000}"#),
    ("POST", "/products/a1test/devices/dev1/properties", r#"{"items":{"LightSwitch":1},"waitMs":1000}"#),
    ("POST", "/products/a1test/devices/dev1/services/reboot", r#"{"args":{"delay":5}}"#),
    (
        "POST",
        "/subscriptions",
        r#"{"productKey":"a1test","messageTypes":["upstream","status"],"consumerGroupIds":["DEFAULT_GROUP"]}"#,
    ),
    (
        "POST",
        "/rules",
        r#"{"name":"fz","sql":"SELECT t FROM \"/a1test/+/user/update\" WHERE t > 1","dataType":"json","actions":["amqp DEFAULT_GROUP tag=${dn}"]}"#,
    ),
    (
        "POST",
        "/rules/test",
        r#"{"sql":"SELECT t * 2 AS d FROM \"/a1test/+/user/update\"","topic":"/a1test/dev1/user/update","payload":{"t":3}}"#,
    ),
    (
        "POST",
        "/alert-rules",
        r#"{"name":"backlog","consumerGroupIds":["DEFAULT_GROUP"],"metric":"accumulatedCount","comparison":">","threshold":1000,"periodSeconds":300,"consecutivePeriods":3,"muteSeconds":3600,"effective":{"days":["mon","sun"],"start":"00:00","end":"23:59"},"callbackUrl":"http://127.0.0.1:9/alert"}"#,
    ),
];

/// Values a JSON-aware mutation puts in place of a seed's value: wrong types, edges, long and
/// hostile strings.
fn json_value(r: &mut Rng) -> serde_json::Value {
    use serde_json::json;
    match r.below(14) {
        0 => json!(null),
        1 => json!(true),
        2 => json!(-1),
        3 => json!(u64::MAX),
        4 => json!(1e308),
        5 => json!(""),
        6 => json!("x".repeat(r.below(5000))),
        7 => json!("a\nb\u{0}c/../é"),
        8 => json!([]),
        9 => json!({}),
        10 => json!(["DEFAULT_GROUP", "DEFAULT_GROUP"]),
        11 => json!("DEFAULT_GROUP"),
        12 => json!([{"type": "republish"}]),
        _ => json!(String::from_utf8_lossy(&r.bytes(16))),
    }
}

/// Changes, removes or adds one key of a JSON object, recursing into nested values.
fn mutate_json(r: &mut Rng, v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) if !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = keys[r.below(keys.len())].clone();
            match r.below(5) {
                0 => {
                    map.remove(&key);
                }
                1 => {
                    map.insert(format!("{key}x"), json_value(r));
                }
                2 => mutate_json(r, map.get_mut(&key).unwrap()),
                _ => {
                    map.insert(key, json_value(r));
                }
            }
        }
        serde_json::Value::Array(items) if !items.is_empty() => {
            let i = r.below(items.len());
            mutate_json(r, &mut items[i]);
        }
        // Same type, another value: reaches the checks behind deserialization.
        serde_json::Value::String(text) if r.below(3) > 0 => {
            *text = String::from_utf8_lossy(&mutate(r, text.as_bytes())).into_owned();
        }
        serde_json::Value::Number(_) if r.below(3) > 0 => {
            let edges = [0.0, -1.0, 0.5, 1e9, 4294967296.0, -1e300, 1e300];
            *v = serde_json::json!(edges[r.below(edges.len())]);
        }
        other => *other = json_value(r),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_api_bodies() {
    install_panic_counter();
    let server = Server::start().await;
    let base = format!("http://{}/api/v1", server.app.http_addr());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut r = Rng(seed(0xA91));
    let start = Instant::now();
    let budget = budget();
    let (mut execs, mut crashes, mut accepted) = (0u64, 0u64, 0u64);
    let mut first = None;
    while start.elapsed() < budget {
        let (method, path, body) = API_SEEDS[r.below(API_SEEDS.len())];
        // Half the bodies stay JSON with changed values and keys, so the handlers behind the
        // JSON parser are reached; the rest are mutated bytes or random bytes.
        let body = match r.below(6) {
            0 => r.bytes(64),
            1 | 2 => mutate(&mut r, body.as_bytes()),
            _ => {
                let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
                for _ in 0..1 + r.below(3) {
                    mutate_json(&mut r, &mut v);
                }
                serde_json::to_vec(&v).unwrap()
            }
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth("test-token")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        execs += 1;
        let bad = match resp {
            Err(e) => Some(format!("no answer: {e}")),
            Ok(resp) => {
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                // Past the JSON parser: accepted, or refused by the handler's own checks.
                accepted += u64::from(!text.contains("\"InvalidBody\""));
                let json = text.is_empty() || serde_json::from_str::<serde_json::Value>(&text).is_ok();
                if status >= 500 || !(200..500).contains(&status) || !json {
                    Some(format!("{status} {text}"))
                } else {
                    None
                }
            }
        };
        if let Some(why) = bad {
            crashes += 1;
            first.get_or_insert_with(|| {
                format!("{method} {path} {:?}: {why}", String::from_utf8_lossy(&body))
            });
        }
    }
    let (status, _) = common::api::get(&server, "/products").await;
    assert_eq!(status, 200, "the API no longer answers");
    let panics = SERVER_PANICS.load(Ordering::SeqCst) as u64;
    println!(
        "fuzz target api_bodies: {execs} executions ({accepted} past the JSON parser), {} crashes",
        crashes + panics
    );
    assert_eq!(crashes, 0, "first bad answer: {}", first.unwrap_or_default());
    assert_eq!(panics, 0, "the server panicked while fed fuzzed API bodies");
}
