//! A consumer connection in cluster mode (a part of `connection.rs`, which owns the login, the
//! link and the refusals): the group's messages come through the queue boundary
//! ([`GroupQueues`]), whose backend owns the leases (JetStream), instead of a
//! [`crate::groups::Membership`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fe2o3_amqp::acceptor::{ListenerConnectionHandle, ListenerSessionHandle};
use fe2o3_amqp::link::{SendError, Sender};
use fe2o3_amqp::types::definitions::AmqpError;
use fe2o3_amqp::types::messaging::Outcome as AmqpOutcome;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use super::{
    amqp_message, error, refuse_extra_link, Links, CLOSE_WAIT, CREDIT_WAIT, GROUP_DELETED, PROBE_FIRST,
    PROBE_LONGEST,
};
use crate::amqp::AmqpContext;
use crate::logsafe::Untrusted;
use crate::queues::{GroupClient, GroupOptions, GroupQueues, Outcome, QueueError, Ticket};

/// Who is consuming.
pub(super) struct Member<'a> {
    pub group_id: &'a str,
    pub client_id: &'a str,
    pub peer: SocketAddr,
    /// The group's limit on deliveries of a message.
    pub max_delivery_attempts: Option<u32>,
}

type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = (Ticket, Outcome)> + Send>>;

fn outcome(result: Result<AmqpOutcome, SendError>) -> Outcome {
    match result {
        Ok(AmqpOutcome::Accepted(_)) => Outcome::Accepted,
        Ok(AmqpOutcome::Rejected(_)) => Outcome::Rejected,
        Ok(AmqpOutcome::Modified(m)) => {
            Outcome::Modified { undeliverable_here: m.undeliverable_here == Some(true) }
        }
        Ok(AmqpOutcome::Released(_)) => Outcome::Released,
        // The link went away before an outcome: deliver again at once.
        Err(_) => Outcome::Lost,
    }
}

/// Joins the group through `queues` and delivers until the link, the connection, the group or
/// the server ends.
pub(super) async fn serve(
    queues: Arc<dyn GroupQueues>,
    member: Member<'_>,
    sender: Sender,
    session: &mut ListenerSessionHandle,
    connection: &mut ListenerConnectionHandle,
    links: &Links,
    shared: &AmqpContext,
) {
    let Member { group_id, client_id, peer, max_delivery_attempts } = member;
    let shown = Untrusted(client_id);
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
            let _ =
                tokio::time::timeout(CLOSE_WAIT, sender.close_with_error(error(condition, e.to_string())))
                    .await;
            let _ = tokio::time::timeout(CLOSE_WAIT, connection.close()).await;
            return;
        }
    };
    tracing::info!(%peer, client_id = %shown, group = %group_id, backend = queues.backend(), "Consumer online");
    let link = crate::amqp::GaugeGuard::new(&shared.stats.links);
    let reason = deliver(sender, client, group_id, session, connection, links, shared).await;
    drop(link);
    tracing::info!(%peer, client_id = %shown, group = %group_id, %reason, "Consumer offline");
    let _ = tokio::time::timeout(CLOSE_WAIT, connection.close()).await;
}

async fn deliver(
    mut sender: Sender,
    mut client: Box<dyn GroupClient>,
    group_id: &str,
    session: &mut ListenerSessionHandle,
    connection: &mut ListenerConnectionHandle,
    links: &Links,
    shared: &AmqpContext,
) -> &'static str {
    let mut inflight: FuturesUnordered<Pending> = FuturesUnordered::new();
    // After a send found no credit within CREDIT_WAIT, the next pull waits this long (doubling):
    // a pulled message is leased, so a client without credit should not pull.
    let mut probe = PROBE_FIRST;
    let mut paused_until: Option<tokio::time::Instant> = None;
    let reason = loop {
        let pause = async {
            match paused_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => break "server shutdown",
            handed = client.next(), if paused_until.is_none() => {
                let Some(handed) = handed else { break GROUP_DELETED };
                let message = amqp_message(&handed.message);
                // `send_batchable` is cancel-safe: cut short while waiting for credit, nothing was sent.
                match tokio::time::timeout(CREDIT_WAIT, sender.send_batchable(message)).await {
                    Err(_) => {
                        client.settle(handed.ticket, Outcome::Unsent).await;
                        paused_until = Some(tokio::time::Instant::now() + probe);
                        probe = (probe * 2).min(PROBE_LONGEST);
                    }
                    Ok(Ok(fut)) => {
                        probe = PROBE_FIRST;
                        let ticket = handed.ticket;
                        inflight.push(Box::pin(async move { (ticket, outcome(fut.await)) }));
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "Send failed");
                        client.settle(handed.ticket, Outcome::Lost).await;
                        break "link or connection lost";
                    }
                }
            }
            () = pause => paused_until = None,
            Some((ticket, how)) = inflight.next() => client.settle(ticket, how).await,
            attach = session.next_incoming_attach() => match attach {
                Some(attach) => refuse_extra_link(shared, links, attach, session).await,
                None => break "session ended",
            },
            _ = connection.on_close() => break "connection closed",
        }
    };
    // Outcomes that already arrived still count; the client gives the rest back when dropped.
    while let Some(Some((ticket, how))) = futures::FutureExt::now_or_never(inflight.next()) {
        client.settle(ticket, how).await;
    }
    drop(inflight);
    drop(client);
    if reason == GROUP_DELETED {
        let e = error(AmqpError::NotFound, format!("consumer group {group_id} was deleted"));
        let _ = tokio::time::timeout(CLOSE_WAIT, sender.close_with_error(e)).await;
    } else {
        let _ = tokio::time::timeout(CLOSE_WAIT, sender.close()).await;
    }
    reason
}
