//! One consumer connection: login and link ([`Endpoint::accept`]), then the group's deliveries
//! and their settlement.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::types::definitions::AmqpError;
use tokio::io::{AsyncRead, AsyncWrite};

mod cluster;

use super::endpoint::{error, sleep_until, Endpoint, Event, Reason};
use super::sasl::ConsumerSasl;
use super::AmqpContext;
use crate::groups::{Delivery, Membership, Settlement};
use crate::logsafe::Untrusted;
use crate::queues::Outcome;

/// How long a delivery at hand may wait for link credit before the client counts as stalled
/// and gives back what it holds: a client that keeps up grants credit well within this, and a
/// stalled one delays a message no longer.
const CREDIT_WAIT: Duration = Duration::from_millis(100);
/// Deliveries sent in one go once the first is at hand: what piled up meanwhile leaves in one
/// write, and a burst cannot keep the loop from its other events for long.
const BURST: usize = 64;

/// Why a consumer went offline when its group was deleted.
const GROUP_DELETED: &str = "group deleted";

/// Serves one accepted connection until it ends. Never panics on input; every way out is logged.
pub(super) async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<AmqpContext>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let sasl = ConsumerSasl {
        registry: shared.registry.clone(),
        groups: shared.groups.clone(),
        peer,
        stats: shared.stats.clone(),
        logs: shared.logs.clone(),
        timestamp_window: shared.timestamp_window,
    };
    let deadline = tokio::time::Instant::now() + shared.auth_timeout;
    if let Some(queues) = shared.cluster.clone() {
        let Some(accepted) = Endpoint::accept(stream, sasl, deadline).await else { return };
        cluster::serve(queues, accepted, peer, &shared).await;
        return;
    }
    let Some(accepted) = Endpoint::accept(stream, sasl, deadline).await else { return };
    let (mut endpoint, credentials) = (accepted.endpoint, accepted.credentials);
    let shown = Untrusted(&credentials.client_id);
    let group_id = &credentials.group_id;
    let Some(group) = shared.groups.get(group_id) else {
        endpoint
            .close(Some(error(AmqpError::NotFound, format!("consumer group {group_id} does not exist"))))
            .await;
        return;
    };
    let membership = match group.join(&credentials.client_id, peer) {
        Ok(m) => m,
        Err(e) => {
            shared.stats.links_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%peer, client_id = %shown, group = %group_id, error = %e, "Refused a consumer");
            endpoint.close(Some(error(AmqpError::ResourceLimitExceeded, e.to_string()))).await;
            return;
        }
    };
    drop(group);
    // Nothing is handed to the client before it grants credit.
    membership.set_window(endpoint.credit() as usize);
    tracing::info!(%peer, client_id = %shown, group = %group_id, "Consumer online");
    let link = super::GaugeGuard::new(&shared.stats.links);
    let reason = deliver(&mut endpoint, membership, &shared).await;
    drop(link);
    tracing::info!(%peer, client_id = %shown, group = %group_id, %reason, "Consumer offline");
    let e = (reason == GROUP_DELETED)
        .then(|| error(AmqpError::NotFound, format!("consumer group {group_id} was deleted")));
    endpoint.close(e).await;
}

fn settlement(outcome: Outcome) -> Settlement {
    match outcome {
        Outcome::Accepted => Settlement::Accepted,
        Outcome::Rejected => Settlement::Rejected,
        Outcome::Modified { undeliverable_here: true } => Settlement::Undeliverable,
        Outcome::Released | Outcome::Modified { .. } => Settlement::Released,
        Outcome::Lost => Settlement::Lost,
        Outcome::Unsent => Settlement::Unsent,
    }
}

/// Hands the outcomes that arrived to the group, in one batch (`buf` is kept for the next).
fn settle<S>(
    endpoint: &mut Endpoint<S, (u64, u64)>,
    membership: &Membership,
    buf: &mut Vec<(u64, u64, Settlement)>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    buf.extend(endpoint.settled().map(|((seq, generation), how)| (seq, generation, settlement(how))));
    membership.settle_many(buf);
    buf.clear();
}

/// Delivers the group's messages until the link, the connection, the group or the server ends;
/// the reason. Whatever was sent and not settled goes back with the membership.
async fn deliver<S>(
    endpoint: &mut Endpoint<S, (u64, u64)>,
    mut membership: Membership,
    shared: &AmqpContext,
) -> Reason
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    // A delivery taken from the group that the link has no credit for yet.
    let mut held: Option<Delivery> = None;
    let mut stall_at: Option<tokio::time::Instant> = None;
    let mut outcomes = Vec::with_capacity(BURST);
    let reason = loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break "server shutdown",
            delivery = membership.rx.recv(), if held.is_none() && endpoint.writable() => {
                // Only a deletion closes the channel while the membership lives.
                let Some(delivery) = delivery else { break GROUP_DELETED };
                held = Some(delivery);
            }
            event = endpoint.next_event() => match event {
                Ok(Event::Settled) => settle(endpoint, &membership, &mut outcomes),
                Ok(Event::Credit) => {
                    if membership.is_stalled() {
                        membership.resume();
                    }
                }
                Err(reason) => break reason,
            },
            () = sleep_until(stall_at) => {
                // No credit in time: the client stalls, and what it holds goes back.
                stall_at = None;
                membership.stall();
                let mut back: Vec<_> = held.take().into_iter().map(|d| (d.seq, d.generation, Settlement::Unsent)).collect();
                while let Ok(d) = membership.rx.try_recv() {
                    back.push((d.seq, d.generation, Settlement::Unsent));
                }
                membership.settle_many(&back);
            }
        }
        // Send what is at hand, as far as credit goes.
        if held.is_none() && endpoint.credit() > 0 {
            held = membership.rx.try_recv().ok();
        }
        let mut sent = 0;
        while let Some(delivery) = held.take() {
            if !membership.is_current(&delivery) {
                membership.skip();
            } else if endpoint.can_send(&delivery.message) {
                endpoint.send((delivery.seq, delivery.generation), &delivery.message);
                sent += 1;
            } else {
                held = Some(delivery);
                break;
            }
            if sent >= BURST {
                break;
            }
            held = membership.rx.try_recv().ok();
        }
        if held.is_none() {
            stall_at = None;
            endpoint.drained();
        } else if stall_at.is_none() && endpoint.credit() == 0 {
            stall_at = Some(tokio::time::Instant::now() + CREDIT_WAIT);
        } else if endpoint.credit() > 0 {
            stall_at = None;
        }
        // The group hands this client only what its credit covers: a client without credit
        // holds nothing the others could take.
        let holding = membership.rx.len() + usize::from(held.is_some());
        membership.set_window((endpoint.credit() as usize).saturating_sub(holding));
    };
    // What was held goes back unsent; the membership gives back what was sent and not settled.
    if let Some(d) = held {
        membership.settle(d.seq, d.generation, Settlement::Unsent);
    }
    settle(endpoint, &membership, &mut outcomes);
    drop(membership);
    reason
}
