//! The queue contract: one set of cases about consumer-group semantics, run against every
//! backend of `iotpipe::queues::GroupQueues`: the embedded one (redb in a temporary
//! directory) and the JetStream one (a real `nats-server -js` started per test).
//!
//! Each case is written once (`cases::*`); `contract!` makes one test per case and backend.
//! When `nats-server` is missing, the JetStream tests fail and say so.

#[path = "common/nats.rs"]
mod nats;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iotpipe::cluster::config::ClusterConfig;
use iotpipe::cluster::{connect, JetStreamQueues};
use iotpipe::groups::Settings;
use iotpipe::queues::embedded::EmbeddedQueues;
use iotpipe::queues::{
    Append, GroupClient, GroupOptions, GroupQueues, Handed, Outcome, QueueError, QueueStatus, StoredMessage,
};

/// How long a case waits for something that should happen.
const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    JetStream,
}

/// A backend under test and what it needs to stay alive.
struct Fixture {
    queues: Arc<dyn GroupQueues>,
    _dir: tempfile::TempDir,
    _server: Option<nats::NatsServer>,
}

fn settings(ack_timeout: Duration) -> Settings {
    Settings {
        ack_timeout,
        retention: Duration::from_secs(3600),
        max_clients_per_group: 2,
        max_unsettled_per_client: 1024,
        max_groups: 100,
    }
}

async fn fixture(backend: Backend, ack_timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    match backend {
        Backend::Embedded => {
            let queues =
                EmbeddedQueues::open(dir.path(), settings(ack_timeout)).expect("embedded store opens");
            Fixture { queues, _dir: dir, _server: None }
        }
        Backend::JetStream => {
            let server = nats::NatsServer::start();
            let mut config = ClusterConfig::new(vec![server.url.clone()]);
            config.replicas = 1;
            config.name = "contract".into();
            assert!(config.check().is_empty(), "{:?}", config.check());
            let client = connect(&config, "test").await.expect("connects to nats-server");
            let queues = JetStreamQueues::open(client, &config, settings(ack_timeout))
                .await
                .expect("JetStream streams set up");
            Fixture { queues, _dir: dir, _server: Some(server) }
        }
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// A copy of message `id` for `group`.
fn copy(group: &str, id: u64) -> Append {
    let message = StoredMessage {
        id,
        generate_time_ms: iotpipe::message::now_ms(),
        topic: format!("/a1test/dev1/user/m{id}"),
        tag: None,
        payload: bytes::Bytes::from(format!("payload {id}")),
    };
    Append { group: group.into(), record: message.encode().into() }
}

async fn groups(q: &dyn GroupQueues, ids: &[&str]) {
    for id in ids {
        q.ensure_group(id, GroupOptions::default()).await.expect("group set up");
    }
}

async fn join(q: &dyn GroupQueues, group: &str, client: &str) -> Box<dyn GroupClient> {
    match q.join(group, client, peer()).await {
        Ok(c) => c,
        Err(e) => panic!("{client} cannot join {group}: {e}"),
    }
}

/// The next delivery, failing the test after `within`.
async fn next(client: &mut Box<dyn GroupClient>, within: Duration) -> Handed {
    match tokio::time::timeout(within, client.next()).await {
        Ok(Some(h)) => h,
        Ok(None) => panic!("the client's deliveries ended"),
        Err(_) => panic!("no delivery within {within:?}"),
    }
}

/// Asserts that nothing is delivered within `quiet`.
async fn nothing(client: &mut Box<dyn GroupClient>, quiet: Duration, why: &str) {
    if let Ok(Some(h)) = tokio::time::timeout(quiet, client.next()).await {
        panic!("{why}: message {} was delivered", h.message.id);
    }
}

async fn status(q: &dyn GroupQueues, group: &str) -> QueueStatus {
    q.status(group).await.expect("status")
}

/// Waits until the group's status satisfies `ok` (the backends settle asynchronously: a
/// JetStream ack is applied by the server after the client sent it).
async fn eventually(
    q: &dyn GroupQueues,
    group: &str,
    what: &str,
    ok: impl Fn(&QueueStatus) -> bool,
) -> QueueStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = status(q, group).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: status stayed {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod cases {
    use super::*;

    /// An append for several groups resolves once every copy is stored; each group then holds
    /// its copies.
    pub async fn append_for_several_groups(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one", "g_two", "g_three"]).await;
        let mut batch = Vec::new();
        for id in 1..=10 {
            for g in ["g_one", "g_two", "g_three"] {
                batch.push(copy(g, id));
            }
        }
        q.append(batch).await.expect("append");
        for g in ["g_one", "g_two", "g_three"] {
            // Resolved means stored: the count is right at once, without waiting.
            let s = status(q, g).await;
            assert_eq!(s.accumulated, 10, "{backend:?} {g}: {s:?}");
            assert_eq!(s.in_flight, 0);
        }
        let mut client = join(q, "g_two", "c1").await;
        let mut ids = Vec::new();
        for _ in 0..10 {
            let h = next(&mut client, WAIT).await;
            ids.push(h.message.id);
            assert_eq!(h.message.payload, bytes::Bytes::from(format!("payload {}", h.message.id)));
            assert_eq!(h.message.topic, format!("/a1test/dev1/user/m{}", h.message.id));
            client.settle(h.ticket, Outcome::Accepted).await;
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        q.close().await;
    }

    /// Each message goes to one of the group's clients.
    pub async fn a_delivery_goes_to_one_client(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one"]).await;
        let mut a = join(q, "g_one", "a").await;
        let mut b = join(q, "g_one", "b").await;
        q.append((1..=40).map(|id| copy("g_one", id)).collect()).await.expect("append");
        let mut seen = HashSet::new();
        let mut per_client = [0, 0];
        let deadline = tokio::time::Instant::now() + WAIT;
        while seen.len() < 40 {
            let (h, which) = tokio::select! {
                Some(h) = a.next() => (h, 0),
                Some(h) = b.next() => (h, 1),
                () = tokio::time::sleep_until(deadline) => panic!("{backend:?}: only {} of 40 delivered", seen.len()),
            };
            assert!(seen.insert(h.message.id), "{backend:?}: message {} delivered twice", h.message.id);
            per_client[which] += 1;
            let client = if which == 0 { &mut a } else { &mut b };
            client.settle(h.ticket, Outcome::Accepted).await;
        }
        eventually(q, "g_one", "all accepted", |s| s.accumulated == 0).await;
        nothing(&mut a, Duration::from_millis(300), "after every accept").await;
        nothing(&mut b, Duration::from_millis(300), "after every accept").await;
        q.close().await;
    }

    /// An accepted message is gone for good.
    pub async fn accepted_is_gone(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(1)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one"]).await;
        let mut c = join(q, "g_one", "c").await;
        q.append(vec![copy("g_one", 7)]).await.expect("append");
        let h = next(&mut c, WAIT).await;
        assert_eq!(h.message.id, 7);
        let before = iotpipe::message::now_ms();
        c.settle(h.ticket, Outcome::Accepted).await;
        let s = eventually(q, "g_one", "accepted", |s| s.accumulated == 0 && s.in_flight == 0).await;
        assert!(s.accepted >= 1, "{s:?}");
        assert!(s.last_consumption_ms.is_some_and(|t| t + 1000 >= before), "{s:?}");
        // Longer than the ack timeout: an accepted message does not come back.
        nothing(&mut c, Duration::from_millis(2000), "after the accept").await;
        q.close().await;
    }

    /// Released and modified messages come again (after the first backoff, 1 s).
    pub async fn released_and_modified_come_again(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one"]).await;
        let mut c = join(q, "g_one", "c").await;
        q.append(vec![copy("g_one", 1), copy("g_one", 2)]).await.expect("append");
        let first = next(&mut c, WAIT).await;
        let second = next(&mut c, WAIT).await;
        let mut ids = vec![first.message.id, second.message.id];
        c.settle(first.ticket, Outcome::Released).await;
        c.settle(second.ticket, Outcome::Modified { undeliverable_here: false }).await;
        let mut again = Vec::new();
        for _ in 0..2 {
            let h = next(&mut c, WAIT).await;
            again.push(h.message.id);
            c.settle(h.ticket, Outcome::Accepted).await;
        }
        ids.sort_unstable();
        again.sort_unstable();
        assert_eq!(again, ids, "{backend:?}");
        eventually(q, "g_one", "accepted after redelivery", |s| s.accumulated == 0).await;
        q.close().await;
    }

    /// A rejected message goes to the dead letters: not delivered again, listed, re-queued with
    /// its message id, purged.
    pub async fn rejected_goes_to_dead_letters(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(1)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one"]).await;
        let mut c = join(q, "g_one", "c").await;
        q.append(vec![copy("g_one", 42)]).await.expect("append");
        let h = next(&mut c, WAIT).await;
        c.settle(h.ticket, Outcome::Rejected).await;
        let s = eventually(q, "g_one", "dead-lettered", |s| s.dead_letters == 1 && s.accumulated == 0).await;
        assert_eq!(s.in_flight, 0, "{s:?}");
        nothing(&mut c, Duration::from_millis(2000), "after a reject (longer than the ack timeout)").await;
        let letters = q.dead_letters("g_one", 0, 10).await.expect("dead letters");
        assert_eq!(letters.len(), 1);
        let dead = StoredMessage::decode(&letters[0].record).expect("a dead letter decodes");
        assert_eq!(dead.id, 42);
        assert!(letters[0].dead_since_ms > 0);

        assert_eq!(q.requeue_dead_letters("g_one").await.expect("requeue"), 1);
        let again = next(&mut c, WAIT).await;
        assert_eq!(again.message.id, 42, "re-queued with its message id");
        eventually(q, "g_one", "re-queued", |s| s.dead_letters == 0).await;
        c.settle(again.ticket, Outcome::Rejected).await;
        eventually(q, "g_one", "dead-lettered again", |s| s.dead_letters == 1).await;
        assert_eq!(q.purge_dead_letters("g_one").await.expect("purge"), 1);
        eventually(q, "g_one", "purged", |s| s.dead_letters == 0 && s.accumulated == 0).await;
        q.close().await;
    }

    /// A delivery left unsettled comes again after the ack timeout, not before.
    pub async fn unsettled_comes_again_after_the_ack_timeout(backend: Backend) {
        let ack_timeout = Duration::from_secs(1);
        let f = fixture(backend, ack_timeout).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one"]).await;
        let mut c = join(q, "g_one", "c").await;
        q.append(vec![copy("g_one", 5)]).await.expect("append");
        let h = next(&mut c, WAIT).await;
        let delivered = Instant::now();
        let _held = h.ticket; // never settled
        let again = next(&mut c, WAIT).await;
        let waited = delivered.elapsed();
        assert_eq!(again.message.id, 5);
        assert!(
            waited >= ack_timeout - Duration::from_millis(100),
            "{backend:?}: came back after {waited:?}"
        );
        c.settle(again.ticket, Outcome::Accepted).await;
        eventually(q, "g_one", "accepted", |s| s.accumulated == 0).await;
        q.close().await;
    }

    /// A client that leaves gives back what it held at once, long before the ack timeout.
    pub async fn a_departed_clients_messages_come_again(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one"]).await;
        let mut a = join(q, "g_one", "a").await;
        q.append(vec![copy("g_one", 9)]).await.expect("append");
        let h = next(&mut a, WAIT).await;
        assert_eq!(h.message.id, 9);
        drop(a);
        let mut b = join(q, "g_one", "b").await;
        let again = next(&mut b, Duration::from_secs(5)).await;
        assert_eq!(again.message.id, 9);
        b.settle(again.ticket, Outcome::Accepted).await;
        q.close().await;
    }

    /// Clear drops everything stored, in-flight messages included; dead letters stay.
    pub async fn clear_empties(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(1)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one", "g_two"]).await;
        q.append((1..=6).map(|id| copy("g_one", id)).chain([copy("g_two", 1)]).collect())
            .await
            .expect("append");
        let mut c = join(q, "g_one", "c").await;
        let held = next(&mut c, WAIT).await;
        let dead = next(&mut c, WAIT).await;
        c.settle(dead.ticket, Outcome::Rejected).await;
        eventually(q, "g_one", "one dead letter", |s| s.dead_letters == 1).await;
        let cleared = q.clear("g_one").await.expect("clear");
        assert_eq!(cleared, 5, "{backend:?}: stored messages, the in-flight one included");
        let s = eventually(q, "g_one", "cleared", |s| s.accumulated == 0).await;
        assert_eq!(s.dead_letters, 1, "dead letters stay: {s:?}");
        assert_eq!(status(q, "g_two").await.accumulated, 1, "other groups keep theirs");
        // A late outcome of a cleared delivery changes nothing.
        c.settle(held.ticket, Outcome::Released).await;
        nothing(&mut c, Duration::from_millis(2500), "after clear (longer than the ack timeout)").await;
        assert_eq!(status(q, "g_one").await.accumulated, 0);
        q.close().await;
    }

    /// The status numbers: backlog with in-flight messages, in flight, accepts (the rate's
    /// input) and the last consumption time.
    pub async fn status_numbers(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one"]).await;
        let empty = status(q, "g_one").await;
        assert_eq!((empty.accumulated, empty.in_flight, empty.dead_letters, empty.accepted), (0, 0, 0, 0));
        assert_eq!(empty.last_consumption_ms, None);
        assert!(empty.online_clients.is_empty());
        q.append((1..=5).map(|id| copy("g_one", id)).collect()).await.expect("append");
        let mut c = join(q, "g_one", "c").await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(next(&mut c, WAIT).await);
        }
        // The JetStream client may pull ahead of what it handed out; in flight counts what the
        // group leased, at least what this client holds.
        let s = eventually(q, "g_one", "three in flight", |s| s.in_flight >= 3).await;
        assert_eq!(s.accumulated, 5, "{s:?}");
        let before = iotpipe::message::now_ms();
        for h in held.drain(..2) {
            c.settle(h.ticket, Outcome::Accepted).await;
        }
        let s = eventually(q, "g_one", "two accepted", |s| s.accumulated == 3).await;
        assert_eq!(s.accepted, 2, "{s:?}");
        assert_eq!(s.consumption_rate_per_minute, 2, "{s:?}");
        assert_eq!(s.online_clients.len(), 1, "{s:?}");
        assert_eq!((s.online_clients[0].client_id.as_str(), s.online_clients[0].peer), ("c", peer()));
        assert_eq!(s.online_clients[0].rate_per_minute, 2, "{s:?}");
        assert!(s.last_consumption_ms.is_some_and(|t| t + 1000 >= before), "{s:?}");
        q.close().await;
    }

    /// Appending copies that are already stored (a retried append) stores them once where the
    /// backend promises it.
    pub async fn a_retried_append_is_deduplicated(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one", "g_two"]).await;
        let batch: Vec<Append> = (1..=5).flat_map(|id| [copy("g_one", id), copy("g_two", id)]).collect();
        q.append(batch.clone()).await.expect("append");
        q.append(batch).await.expect("the same append again");
        let expected = if q.dedupes_appends() { 5 } else { 10 };
        for g in ["g_one", "g_two"] {
            assert_eq!(status(q, g).await.accumulated, expected, "{backend:?} {g}");
        }
        q.close().await;
    }

    /// Removing a group ends its clients' deliveries and drops its messages.
    pub async fn removing_a_group_ends_it(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one", "g_two"]).await;
        q.append((1..=3).map(|id| copy("g_one", id)).chain([copy("g_two", 1)]).collect())
            .await
            .expect("append");
        let mut c = join(q, "g_one", "c").await;
        let _held = next(&mut c, WAIT).await;
        q.remove_group("g_one").await.expect("remove");
        q.remove_group("g_one").await.expect("removing again changes nothing");
        match tokio::time::timeout(WAIT, async { while c.next().await.is_some() {} }).await {
            Ok(()) => {}
            Err(_) => panic!("{backend:?}: the client's deliveries did not end"),
        }
        assert_eq!(status(q, "g_two").await.accumulated, 1, "other groups keep theirs");
        groups(q, &["g_one"]).await;
        assert_eq!(
            status(q, "g_one").await.accumulated,
            0,
            "{backend:?}: a group of the same id starts empty"
        );
        q.close().await;
    }

    /// A group's `maxDeliveryAttempts`: a message delivered that often and never accepted goes
    /// to the dead letters instead of out again.
    pub async fn the_last_delivery_attempt_dead_letters(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        q.ensure_group("g_one", GroupOptions { max_delivery_attempts: Some(2) }).await.expect("group");
        let mut c = join(q, "g_one", "c").await;
        q.append(vec![copy("g_one", 3)]).await.expect("append");
        for attempt in 1..=2 {
            let h = next(&mut c, WAIT).await;
            assert_eq!(h.message.id, 3, "attempt {attempt}");
            // Lost: given back at once, no backoff; still a delivery.
            c.settle(h.ticket, Outcome::Lost).await;
        }
        // The client keeps asking, as a consumer connection does, and gets nothing more (the
        // JetStream backend sees the third delivery arrive while pulling and dead-letters it).
        nothing(&mut c, Duration::from_millis(1500), "after the last attempt").await;
        let s =
            eventually(q, "g_one", "dead after two attempts", |s| s.dead_letters == 1 && s.accumulated == 0)
                .await;
        assert_eq!(s.in_flight, 0, "{s:?}");
        q.close().await;
    }

    /// The group's client limit holds; a client that leaves frees its place.
    pub async fn the_client_limit_holds(backend: Backend) {
        let f = fixture(backend, Duration::from_secs(30)).await;
        let q = f.queues.as_ref();
        groups(q, &["g_one"]).await;
        let a = join(q, "g_one", "a").await;
        let _b = join(q, "g_one", "b").await;
        match q.join("g_one", "c", peer()).await {
            Err(QueueError::Full { limit: 2, .. }) => {}
            Err(e) => panic!("{backend:?}: expected Full, got {e}"),
            Ok(_) => panic!("{backend:?}: a third client joined a group limited to 2"),
        }
        drop(a);
        let _c = join(q, "g_one", "c").await;
        let online: Vec<String> =
            status(q, "g_one").await.online_clients.into_iter().map(|c| c.client_id).collect();
        assert_eq!(online.len(), 2, "{online:?}");
        assert!(online.contains(&"b".to_string()) && online.contains(&"c".to_string()), "{online:?}");
        assert!(matches!(q.join("g_nope", "d", peer()).await, Err(QueueError::NotFound(_))));
        q.close().await;
    }
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(super::Backend::Embedded).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(super::Backend::JetStream).await;
                }
            )*
        }
    };
}

contract!(
    append_for_several_groups,
    a_delivery_goes_to_one_client,
    accepted_is_gone,
    released_and_modified_come_again,
    rejected_goes_to_dead_letters,
    unsettled_comes_again_after_the_ack_timeout,
    a_departed_clients_messages_come_again,
    clear_empties,
    status_numbers,
    a_retried_append_is_deduplicated,
    the_client_limit_holds,
    removing_a_group_ends_it,
    the_last_delivery_attempt_dead_letters,
);
