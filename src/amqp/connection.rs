//! One consumer connection: SASL, one receiver link, deliveries and their settlement.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SessionAcceptor};
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::link::{SendError, Sender};
use fe2o3_amqp::types::definitions::Role;
use fe2o3_amqp::types::definitions::{self, AmqpError};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Data, Message, MessageId, Outcome, Properties, Source, Target,
};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::Binary;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};

mod cluster;

use super::sasl::{ConsumerSasl, LoginSlot};
use super::AmqpContext;
use crate::groups::{Delivery, Membership, Settlement};
use crate::logsafe::Untrusted;
use crate::store::StoredMessage;

/// How long closing handshakes may take before the connection is simply dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a send may wait for link credit before the client counts as stalled and gives its
/// deliveries back. fe2o3 has no credit getter, so waiting is how credit shows; a client that
/// keeps up grants credit well within this, and a stalled one delays a message no longer.
const CREDIT_WAIT: Duration = Duration::from_millis(100);
/// A stalled client is tried again (with one message) after this, doubling up to
/// [`PROBE_LONGEST`]: a client that just ran dry resumes quickly, a zero-credit link costs a
/// message 100 ms about once a second.
const PROBE_FIRST: Duration = Duration::from_millis(10);
const PROBE_LONGEST: Duration = Duration::from_secs(1);
/// Deliveries sent, or outcomes settled, in one go once the first is at hand: what has piled
/// up meanwhile is handled without a round through the event loop each, and a burst cannot
/// keep the loop from its other events for long.
const BURST: usize = 64;

/// Why a consumer went offline when its group was deleted.
const GROUP_DELETED: &str = "group deleted";

type Links = LinkAcceptor<fn(Source) -> Option<Source>, fn(Target) -> Option<Target>>;

fn error(condition: AmqpError, description: String) -> definitions::Error {
    definitions::Error::new(condition, Some(description), None)
}

/// Serves one accepted connection until it ends. Never panics on input; every way out is logged.
pub(super) async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<AmqpContext>)
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    // Whatever way this function ends, the socket closes with it: fe2o3's engine would keep it.
    let (stream, _sever) = super::sever::severable(stream);
    let login: LoginSlot = LoginSlot::default();
    let sasl = ConsumerSasl {
        registry: shared.registry.clone(),
        groups: shared.groups.clone(),
        peer,
        login: login.clone(),
        stats: shared.stats.clone(),
        logs: shared.logs.clone(),
        timestamp_window: shared.timestamp_window,
    };
    // The idle timeout is deliberately not set: fe2o3's acceptor enforces exactly the value it
    // advertises, and clients heartbeating at that period get dropped (see crates.md 8).
    let acceptor = ConnectionAcceptor::builder().container_id("iotpipe").sasl_acceptor(sasl).build();
    let deadline = tokio::time::Instant::now() + shared.auth_timeout;

    let mut connection = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if let Some(suppressed) = shared.logs.protocol.admit() {
                tracing::warn!(%peer, error = %Untrusted(&e.to_string()), suppressed, "AMQP connection not opened");
            }
            return;
        }
        Err(_) => {
            if let Some(suppressed) = shared.logs.protocol.admit() {
                tracing::warn!(%peer, suppressed, "AMQP connection did not authenticate in time");
            }
            return;
        }
    };
    let Some(credentials) = login.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() else {
        tracing::warn!(%peer, "AMQP connection opened without a login");
        return;
    };
    let client_id = credentials.client_id.clone();
    // Authenticated, yet chosen freely by the client: escaped in every log line.
    let shown = Untrusted(&client_id);
    let group_id = credentials.group_id.clone();

    let mut session =
        match tokio::time::timeout_at(deadline, SessionAcceptor::new().accept(&mut connection)).await {
            Ok(Ok(s)) => s,
            _ => {
                tracing::warn!(%peer, client_id = %shown, "AMQP client began no session in time");
                let _ = tokio::time::timeout(CLOSE_WAIT, connection.close()).await;
                return;
            }
        };

    // Wait for the receiver link; refuse sender links meanwhile.
    let links: Links = LinkAcceptor::new();
    let sender = loop {
        let attach = match tokio::time::timeout_at(deadline, session.next_incoming_attach()).await {
            Ok(Some(a)) => a,
            Ok(None) => return,
            Err(_) => {
                tracing::warn!(%peer, client_id = %shown, "AMQP client attached no receiver link in time");
                let _ = tokio::time::timeout(CLOSE_WAIT, connection.close()).await;
                return;
            }
        };
        match accept_link(&links, attach, &mut session).await {
            Some(LinkEndpoint::Sender(sender)) => break sender,
            Some(LinkEndpoint::Receiver(receiver)) => {
                shared.stats.links_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, client_id = %shown, "Refused a sender link: consumers only receive");
                let e = error(AmqpError::NotAllowed, "iotpipe accepts only a receiver link".into());
                let _ = tokio::time::timeout(CLOSE_WAIT, receiver.close_with_error(e)).await;
            }
            None => return,
        }
    };

    let Some(group) = shared.groups.get(&group_id) else {
        let e = error(AmqpError::NotFound, format!("consumer group {group_id} does not exist"));
        let _ = tokio::time::timeout(CLOSE_WAIT, sender.close_with_error(e)).await;
        return;
    };
    // Cluster mode: the group's queue is the cluster's, through the queue boundary.
    if let Some(queues) = shared.cluster.clone() {
        let max_delivery_attempts = group.max_delivery_attempts();
        drop(group);
        let member =
            cluster::Member { group_id: &group_id, client_id: &client_id, peer, max_delivery_attempts };
        cluster::serve(queues, member, sender, &mut session, &mut connection, &links, &shared).await;
        return;
    }
    let membership = match group.join(&client_id, peer) {
        Ok(m) => m,
        Err(e) => {
            shared.stats.links_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, client_id = %shown, group = %group_id, error = %e, "Refused a consumer");
            let e = error(AmqpError::ResourceLimitExceeded, e.to_string());
            let _ = tokio::time::timeout(CLOSE_WAIT, sender.close_with_error(e)).await;
            let _ = tokio::time::timeout(CLOSE_WAIT, connection.close()).await;
            return;
        }
    };
    tracing::info!(%peer, client_id = %shown, group = %group_id, "Consumer online");

    let link = super::GaugeGuard::new(&shared.stats.links);
    let reason = deliver(sender, membership, &mut session, &mut connection, &links, &shared).await;
    drop(link);
    tracing::info!(%peer, client_id = %shown, group = %group_id, %reason, "Consumer offline");
    let _ = tokio::time::timeout(CLOSE_WAIT, connection.close()).await;
}

/// Accepts an attach. A receiver without a source gets one: fe2o3 would echo a null source,
/// which the spec reads as a refused link.
async fn accept_link(
    links: &Links,
    mut attach: Attach,
    session: &mut fe2o3_amqp::acceptor::ListenerSessionHandle,
) -> Option<LinkEndpoint> {
    if attach.role == Role::Receiver && attach.source.is_none() {
        attach.source = Some(Box::new(Source::builder().address("default").build()));
    }
    match links.accept_incoming_attach(attach, session).await {
        Ok(link) => Some(link),
        Err(e) => {
            tracing::debug!(error = %e, "Link attach failed");
            None
        }
    }
}

/// One receiver per connection: any further link is attached and closed at once with
/// `amqp:not-allowed`.
async fn refuse_extra_link(
    shared: &AmqpContext,
    links: &Links,
    attach: Attach,
    session: &mut fe2o3_amqp::acceptor::ListenerSessionHandle,
) {
    shared.stats.links_refused.fetch_add(1, Ordering::Relaxed);
    let description = "iotpipe accepts one receiver link per connection".to_string();
    match accept_link(links, attach, session).await {
        Some(LinkEndpoint::Sender(s)) => {
            let _ = tokio::time::timeout(
                CLOSE_WAIT,
                s.close_with_error(error(AmqpError::NotAllowed, description)),
            )
            .await;
        }
        Some(LinkEndpoint::Receiver(r)) => {
            let _ = tokio::time::timeout(
                CLOSE_WAIT,
                r.close_with_error(error(AmqpError::NotAllowed, description)),
            )
            .await;
        }
        None => {}
    }
}

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = (u64, u64, Settlement)> + Send>>;

fn settlement(outcome: Result<Outcome, SendError>) -> Settlement {
    match outcome {
        Ok(Outcome::Accepted(_)) => Settlement::Accepted,
        Ok(Outcome::Rejected(_)) => Settlement::Rejected,
        Ok(Outcome::Modified(m)) if m.undeliverable_here == Some(true) => Settlement::Undeliverable,
        Ok(Outcome::Released(_) | Outcome::Modified(_)) => Settlement::Released,
        // The link went away before an outcome: deliver again at once.
        Err(_) => Settlement::Lost,
    }
}

fn pending(seq: u64, generation: u64, fut: DeliveryFut<Result<Outcome, SendError>>) -> Pending {
    Box::pin(async move { (seq, generation, settlement(fut.await)) })
}

/// The AMQP message of a stored message, as the contract says.
pub fn amqp_message(m: &StoredMessage) -> Message<Data> {
    into_amqp_message(m.clone())
}

/// [`amqp_message`] of a message no longer needed: its strings move into the AMQP message.
fn into_amqp_message(m: StoredMessage) -> Message<Data> {
    let StoredMessage { id, generate_time_ms, topic, tag, payload } = m;
    let id = id.to_string();
    let mut props = ApplicationProperties::builder()
        .insert("topic", topic)
        .insert("messageId", id.clone())
        .insert("generateTime", i64::try_from(generate_time_ms).unwrap_or(i64::MAX));
    if let Some(tag) = tag {
        props = props.insert("tag", tag);
    }
    // fe2o3's `Binary` owns a `Vec`: the one copy of the payload on its way out.
    Message::builder()
        .properties(Properties::builder().message_id(MessageId::String(id)).build())
        .application_properties(props.build())
        .data(Binary::from(payload.to_vec()))
        .build()
}

async fn deliver(
    mut sender: Sender,
    mut membership: Membership,
    session: &mut fe2o3_amqp::acceptor::ListenerSessionHandle,
    connection: &mut fe2o3_amqp::acceptor::ListenerConnectionHandle,
    links: &Links,
    shared: &AmqpContext,
) -> &'static str {
    let mut inflight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut outcomes = Vec::with_capacity(BURST);
    let mut probe = PROBE_FIRST;
    let mut resume_at: Option<tokio::time::Instant> = None;
    let reason = loop {
        if membership.is_stalled() && resume_at.is_none() {
            resume_at = Some(tokio::time::Instant::now() + probe);
            probe = (probe * 2).min(PROBE_LONGEST);
        }
        let resume = async {
            match resume_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => break "server shutdown",
            delivery = membership.rx.recv() => {
                // Only a deletion closes the channel while the membership lives.
                let Some(mut delivery) = delivery else { break GROUP_DELETED };
                let mut sent = 0;
                let failed = loop {
                    match send(&mut sender, &mut membership, delivery, &mut inflight).await {
                        Ok(true) => probe = PROBE_FIRST,
                        // Stale, or the client stalled (what it held went back).
                        Ok(false) => {}
                        Err(reason) => break Some(reason),
                    }
                    sent += 1;
                    // Whatever else is queued for this client goes out now, up to a burst; a
                    // stalled client gave back what it held.
                    if sent >= BURST || membership.is_stalled() {
                        break None;
                    }
                    match membership.rx.try_recv() {
                        Ok(next) => delivery = next,
                        Err(_) => break None,
                    }
                };
                if let Some(reason) = failed {
                    break reason;
                }
            }
            () = resume => {
                resume_at = None;
                membership.resume();
            }
            Some(first) = inflight.next() => {
                // Outcomes arrive in batches (one disposition frame can settle many): take
                // every one already known and settle them together.
                outcomes.push(first);
                while outcomes.len() < BURST {
                    match futures::FutureExt::now_or_never(inflight.next()) {
                        Some(Some(outcome)) => outcomes.push(outcome),
                        _ => break,
                    }
                }
                membership.settle_many(&outcomes);
                outcomes.clear();
            }
            attach = session.next_incoming_attach() => match attach {
                Some(attach) => refuse_extra_link(shared, links, attach, session).await,
                None => break "session ended",
            },
            _ = connection.on_close() => break "connection closed",
        }
    };
    // Outcomes that already arrived still count; the rest goes back with the membership.
    while let Some(Some((seq, generation, how))) = futures::FutureExt::now_or_never(inflight.next()) {
        membership.settle(seq, generation, how);
    }
    drop(inflight);
    let group = membership.group().id.clone();
    drop(membership);
    if reason == GROUP_DELETED {
        let e = error(AmqpError::NotFound, format!("consumer group {group} was deleted"));
        let _ = tokio::time::timeout(CLOSE_WAIT, sender.close_with_error(e)).await;
    } else {
        let _ = tokio::time::timeout(CLOSE_WAIT, sender.close()).await;
    }
    reason
}

/// Sends one delivery without waiting for its outcome; the outcome joins `inflight`. `Ok(true)`
/// when it was sent; `Ok(false)` when it was stale or the link had no credit within
/// [`CREDIT_WAIT`]: then the client is stalled and everything it holds goes back to the group.
async fn send(
    sender: &mut Sender,
    membership: &mut Membership,
    delivery: Delivery,
    inflight: &mut FuturesUnordered<Pending>,
) -> Result<bool, &'static str> {
    if !membership.is_current(&delivery) {
        membership.skip();
        return Ok(false);
    }
    let Delivery { seq, generation, message } = delivery;
    let message = into_amqp_message(message);
    // `send_batchable` is cancel-safe: cut short while waiting for credit, nothing was sent.
    let Ok(sent) = tokio::time::timeout(CREDIT_WAIT, sender.send_batchable(message)).await else {
        membership.stall();
        let mut back = vec![(seq, generation, Settlement::Unsent)];
        while let Ok(held) = membership.rx.try_recv() {
            back.push((held.seq, held.generation, Settlement::Unsent));
        }
        membership.settle_many(&back);
        return Ok(false);
    };
    match sent {
        Ok(fut) => {
            inflight.push(pending(seq, generation, fut));
            Ok(true)
        }
        Err(e) => {
            tracing::debug!(error = %e, "Send failed");
            membership.settle(seq, generation, Settlement::Lost);
            Err("link or connection lost")
        }
    }
}
