//! A consumer connection in cluster mode (a part of `connection.rs`, which owns the login and
//! the link): the group's messages come through the queue boundary ([`GroupQueues`]), whose
//! backend owns the leases (JetStream), instead of a [`crate::groups::Membership`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fe2o3_amqp::types::definitions::AmqpError;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{error, Endpoint, Event, Reason, GROUP_DELETED};
use crate::amqp::endpoint::Accepted;
use crate::amqp::AmqpContext;
use crate::logsafe::Untrusted;
use crate::queues::{GroupClient, GroupOptions, GroupQueues, Handed, Outcome, QueueError, Ticket};

/// Joins the group through `queues` and delivers until the link, the connection, the group or
/// the server ends.
pub(super) async fn serve<S>(
    queues: Arc<dyn GroupQueues>,
    accepted: Accepted<S, Ticket>,
    peer: SocketAddr,
    shared: &AmqpContext,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let (mut endpoint, credentials) = (accepted.endpoint, accepted.credentials);
    let (group_id, client_id) = (&credentials.group_id, &credentials.client_id);
    let shown = Untrusted(client_id);
    let Some(max_delivery_attempts) = shared.groups.get(group_id).map(|g| g.max_delivery_attempts()) else {
        endpoint
            .close(Some(error(AmqpError::NotFound, format!("consumer group {group_id} does not exist"))))
            .await;
        return;
    };
    // Groups created through the API after start-up get their queue here (idempotent).
    let joined = match queues.ensure_group(group_id, GroupOptions { max_delivery_attempts }).await {
        Ok(()) => queues.join(group_id, client_id, peer).await,
        Err(e) => Err(e),
    };
    let client = match joined {
        Ok(c) => c,
        Err(e) => {
            shared.stats.links_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, client_id = %shown, group = %group_id, error = %e, "Refused a consumer");
            let condition = match e {
                QueueError::Full { .. } => AmqpError::ResourceLimitExceeded,
                QueueError::NotFound(_) => AmqpError::NotFound,
                _ => AmqpError::InternalError,
            };
            endpoint.close(Some(error(condition, e.to_string()))).await;
            return;
        }
    };
    tracing::info!(%peer, client_id = %shown, group = %group_id, backend = queues.backend(), "Consumer online");
    let link = crate::amqp::GaugeGuard::new(&shared.stats.links);
    let reason = deliver(&mut endpoint, client, shared).await;
    drop(link);
    tracing::info!(%peer, client_id = %shown, group = %group_id, %reason, "Consumer offline");
    let e = (reason == GROUP_DELETED)
        .then(|| error(AmqpError::NotFound, format!("consumer group {group_id} was deleted")));
    endpoint.close(e).await;
}

async fn deliver<S>(
    endpoint: &mut Endpoint<S, Ticket>,
    mut client: Box<dyn GroupClient>,
    shared: &AmqpContext,
) -> Reason
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    // A pulled message is leased: one is pulled only when the link has credit for it.
    let mut held: Option<Handed> = None;
    let mut outcomes: Vec<(Ticket, Outcome)> = Vec::new();
    let reason = loop {
        let may_pull = held.is_none() && endpoint.credit() > 0 && endpoint.writable();
        tokio::select! {
            () = shared.shutdown.cancelled() => break "server shutdown",
            handed = client.next(), if may_pull => {
                let Some(handed) = handed else { break GROUP_DELETED };
                held = Some(handed);
            }
            event = endpoint.next_event() => match event {
                Ok(Event::Settled) => {
                    outcomes.extend(endpoint.settled());
                    for (ticket, how) in outcomes.drain(..) {
                        client.settle(ticket, how).await;
                    }
                }
                Ok(Event::Credit) => {}
                Err(reason) => break reason,
            },
        }
        if let Some(handed) = held.take() {
            if endpoint.can_send(&handed.message) {
                endpoint.send(handed.ticket, &handed.message);
            } else {
                held = Some(handed);
            }
        }
        if held.is_none() && endpoint.draining() {
            // A drain asks for what is there now: one more pull that does not wait.
            if let Some(Some(handed)) = futures::FutureExt::now_or_never(client.next()) {
                held = Some(handed);
                continue;
            }
            endpoint.drained();
        }
    };
    // Outcomes that already arrived still count; the client gives the rest back when dropped.
    if let Some(handed) = held {
        client.settle(handed.ticket, Outcome::Unsent).await;
    }
    outcomes.extend(endpoint.settled());
    for (ticket, how) in outcomes {
        client.settle(ticket, how).await;
    }
    drop(client);
    reason
}
