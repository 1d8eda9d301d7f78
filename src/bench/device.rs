//! Lean devices: a hand-written MQTT 3.1.1 CONNECT, then QoS 1 publishes with a window of
//! PUBACKs outstanding, paced to a rate or as fast as the server acknowledges. Raw sockets
//! instead of a full client keep the load generator's CPU per message small: it shares the
//! machine with the server it measures.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::{v4, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::payload::{now_us, payload};
use super::BenchError;

/// Keep-alive asked for in CONNECT. Devices send no PINGREQ, so this must outlast a run; 20 min
/// is iotpipe's default maximum and well within what the peers accept.
const KEEP_ALIVE_SECS: u16 = 1200;

/// A CONNECT or CONNACK slower than this means the server is not coping; the run fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How one device logs in and where it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The device name, for messages and payloads.
    pub name: String,
    /// The MQTT client id.
    pub client_id: String,
    /// The MQTT username, if any.
    pub username: Option<String>,
    /// The MQTT password, if any.
    pub password: Option<String>,
    /// Where it publishes.
    pub topic: String,
}

/// Connects a device (from `source`, when given) and waits for an accepting CONNACK.
///
/// # Errors
/// No connection, no CONNACK in time, or a refusal.
pub async fn connect(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    d: &DeviceSpec,
) -> Result<TcpStream, BenchError> {
    let fail = |cause: String| BenchError::Device { device: d.name.clone(), addr, cause };
    let mut connect = v4::Connect::new(d.client_id.clone());
    connect.keep_alive = KEEP_ALIVE_SECS;
    if let Some(u) = &d.username {
        connect.set_login(u.clone(), d.password.clone().unwrap_or_default());
    }
    let mut buf = BytesMut::new();
    v4::Packet::Connect(connect)
        .write(&mut buf, 1 << 20)
        .map_err(|e| fail(format!("encode CONNECT: {e}")))?;
    let handshake = async {
        let mut s = match source {
            None => TcpStream::connect(addr).await.map_err(|e| fail(e.to_string()))?,
            Some(ip) => {
                let socket = match ip {
                    std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
                    std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
                }
                .map_err(|e| fail(e.to_string()))?;
                socket.bind(SocketAddr::new(ip, 0)).map_err(|e| fail(format!("bind {ip}: {e}")))?;
                socket.connect(addr).await.map_err(|e| fail(e.to_string()))?
            }
        };
        s.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        s.write_all(&buf).await.map_err(|e| fail(e.to_string()))?;
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await.map_err(|e| fail(format!("no CONNACK: {e}")))?;
        match ack {
            [0x20, 2, _, 0] => Ok(s),
            [0x20, 2, _, code] => Err(fail(format!("CONNACK refused the login with code {code}"))),
            other => Err(fail(format!("expected a CONNACK, got {other:02x?}"))),
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|_| fail(format!("no CONNACK within {} s", CONNECT_TIMEOUT.as_secs())))?
}

/// Shared state of the publishing devices.
#[derive(Debug, Default)]
pub struct Publishing {
    /// PUBACKs received, all devices.
    pub acked: AtomicU64,
    /// Set to end every publish loop.
    pub stop: AtomicBool,
    /// When present, how many messages may still be issued in all (the backlog scenario);
    /// devices stop issuing at zero and return once their last PUBACK arrived.
    pub budget: Option<AtomicI64>,
    /// Why a device stopped early, if one did.
    pub failure: std::sync::Mutex<Option<String>>,
    /// While set, publish-to-PUBACK latencies are recorded (the measured window).
    pub record: AtomicBool,
    /// Publish-to-PUBACK latencies recorded, microseconds (each device adds its own when it ends).
    pub puback_latencies: std::sync::Mutex<Vec<u64>>,
}

impl Publishing {
    fn fail(&self, device: &str, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert_with(|| format!("device {device}: {why}"));
    }

    /// Takes one message from the budget; false when it is spent.
    fn take(&self) -> bool {
        self.budget.as_ref().is_none_or(|b| b.fetch_sub(1, Ordering::Relaxed) > 0)
    }
}

/// Publishes QoS 1 with up to `window` PUBACKs outstanding; with `rate` > 0 at most that many
/// messages per second. Runs until `state.stop` or until the budget is spent and acknowledged.
pub async fn publish_loop(
    mut s: TcpStream,
    device: DeviceSpec,
    window: u16,
    rate: f64,
    state: Arc<Publishing>,
) {
    let mut pkid: u16 = 0;
    let mut seq = 0u64;
    let mut out = BytesMut::with_capacity(usize::from(window) * 300);
    let mut inb = BytesMut::with_capacity(8192);
    let mut in_flight: u16 = 0;
    let mut spent = false;
    let start = Instant::now();
    // (packet id, send time in µs) of the publishes waiting for their PUBACK, oldest first.
    let mut sent: VecDeque<(u16, u64)> = VecDeque::with_capacity(usize::from(window));
    let mut latencies = Vec::new();
    let keep = |latencies: Vec<u64>| {
        state.puback_latencies.lock().unwrap_or_else(|e| e.into_inner()).extend(latencies);
    };
    loop {
        if state.stop.load(Ordering::Relaxed) || (spent && in_flight == 0) {
            keep(latencies);
            return;
        }
        out.clear();
        while in_flight < window && !spent {
            if rate > 0.0 && (seq as f64) >= start.elapsed().as_secs_f64() * rate {
                break;
            }
            if !state.take() {
                spent = true;
                break;
            }
            pkid = pkid % u16::MAX + 1;
            let at = now_us();
            let mut p =
                v4::Publish::new(device.topic.as_str(), QoS::AtLeastOnce, payload(&device.name, seq, at));
            p.pkid = pkid;
            sent.push_back((pkid, at));
            if let Err(e) = p.write(&mut out) {
                state.fail(&device.name, format!("encode PUBLISH: {e}"));
                return;
            }
            in_flight += 1;
            seq += 1;
        }
        if !out.is_empty() {
            if let Err(e) = s.write_all(&out).await {
                state.fail(&device.name, format!("write: {e}"));
                return;
            }
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
            Ok(0) => {
                state.fail(&device.name, "the server closed the connection".into());
                return;
            }
            Err(e) => {
                state.fail(&device.name, format!("read: {e}"));
                return;
            }
            Ok(_) => {}
        }
        let recording = state.record.load(Ordering::Relaxed);
        let now = now_us();
        let acks = take_pubacks(&mut inb, |pkid| {
            // PUBACKs come in order on one connection; search in case a server reorders them.
            if let Some(i) = sent.iter().position(|(id, _)| *id == pkid) {
                let (_, at) = sent.remove(i).expect("found");
                if recording {
                    latencies.push(now.saturating_sub(at));
                }
            }
        });
        in_flight = in_flight.saturating_sub(acks);
        state.acked.fetch_add(u64::from(acks), Ordering::Relaxed);
    }
}

/// Removes every complete packet from `buf`; returns how many were PUBACKs and hands each
/// one's packet id to `acked`. Anything else a broker may send a publishing client (PINGRESP) is
/// skipped.
fn take_pubacks(buf: &mut BytesMut, mut acked: impl FnMut(u16)) -> u16 {
    let mut acks = 0u16;
    while let Some((header, len)) = frame(buf) {
        if header & 0xF0 == 0x40 {
            acks = acks.saturating_add(1);
            if len >= 4 {
                acked(u16::from_be_bytes([buf[2], buf[3]]));
            }
        }
        buf.advance(len);
    }
    acks
}

/// The first byte and total length of the complete packet at the start of `buf`, if any.
fn frame(buf: &[u8]) -> Option<(u8, usize)> {
    let header = *buf.first()?;
    let mut remaining = 0usize;
    for (i, b) in buf.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            let total = 1 + (i + 1) + remaining;
            return (buf.len() >= total).then_some((header, total));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubacks_are_counted_and_other_packets_skipped() {
        let mut b = BytesMut::from(&[0x40, 2, 0, 1, 0xD0, 0, 0x40, 2, 0, 2, 0x40, 2][..]);
        let mut ids = Vec::new();
        assert_eq!(take_pubacks(&mut b, |id| ids.push(id)), 2);
        assert_eq!(&b[..], &[0x40, 2], "a partial PUBACK waits for its rest");
        b.extend_from_slice(&[1, 3]);
        assert_eq!(take_pubacks(&mut b, |id| ids.push(id)), 1);
        assert!(b.is_empty());
        assert_eq!(ids, [1, 2, 0x0103], "each PUBACK's packet id");
    }

    #[test]
    fn frames_with_multi_byte_lengths() {
        let mut p = vec![0x30, 0x80, 0x02];
        p.resize(3 + 256, 0);
        assert_eq!(frame(&p), Some((0x30, 259)));
        assert_eq!(frame(&p[..100]), None);
        assert_eq!(frame(&[0x30]), None);
    }

    #[test]
    fn budget_is_shared() {
        let s = Publishing { budget: Some(AtomicI64::new(2)), ..Default::default() };
        assert!(s.take());
        assert!(s.take());
        assert!(!s.take());
        assert!(Publishing::default().take());
    }
}
