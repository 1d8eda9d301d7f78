//! One local client of a JetStream group: its own pull from the group's durable consumer, the
//! deliveries it holds, and their settlement (ack, nak with the release backoff, term after a
//! copy in the dead letters).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::context::Context;
use async_nats::jetstream::message::{Acker, PublishMessage};
use async_nats::jetstream::AckKind;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::{lock, message_id, GroupHandle, PULL_ERROR_PAUSE};
use crate::groups::{release_backoff, RateWindow};
use crate::message::now_ms;
use crate::queues::{GroupClient, Handed, Outcome, StoredMessage, Ticket};

/// A delivery this client holds.
struct Held {
    acker: Acker,
    /// Deliveries of the message so far (this one included).
    delivered: i64,
    record: Bytes,
    stream_sequence: u64,
}

/// One local client: its own pull from the group's durable consumer.
pub(super) struct JetStreamClient {
    /// This client's number in its group's `online` list.
    number: u64,
    /// Its accepts per second.
    rate: RateWindow,
    handle: Arc<GroupHandle>,
    js: Context,
    dead_subject: String,
    messages: Pin<Box<pull::Stream>>,
    unsettled: HashMap<u64, Held>,
    next_ticket: u64,
    max_unsettled: usize,
    /// Its slot among the group's clients over every node (given back when it is dropped).
    pub(super) slot: Option<super::super::clients::SlotGuard>,
}

impl JetStreamClient {
    /// A client numbered `number` among its group's online clients on this node, pulling
    /// through `messages`.
    pub(super) fn new(
        number: u64,
        handle: Arc<GroupHandle>,
        js: Context,
        dead_subject: String,
        messages: pull::Stream,
        max_unsettled: usize,
    ) -> Self {
        Self {
            number,
            rate: RateWindow::default(),
            handle,
            js,
            dead_subject,
            messages: Box::pin(messages),
            unsettled: HashMap::new(),
            next_ticket: 1,
            max_unsettled,
            slot: None,
        }
    }

    /// Copies the record into the dead letters, then ends the message; if the copy cannot be
    /// stored the message is delivered again instead (nothing is lost).
    async fn dead_letter(&self, held: Held) -> Result<(), async_nats::Error> {
        let id = message_id(&held.record).unwrap_or(0);
        let message = PublishMessage::build()
            .payload(held.record.clone())
            .message_id(format!("{id}-{}-dead-{}", self.handle.id, held.stream_sequence));
        let stored = async { self.js.send_publish(self.dead_subject.clone(), message).await?.await }.await;
        match stored {
            Ok(_) => held.acker.ack_with(AckKind::Term).await,
            Err(e) => {
                tracing::warn!(group = %self.handle.id, error = %e, "Storing a dead letter failed; the message is delivered again");
                held.acker.ack_with(AckKind::Nak(None)).await
            }
        }
    }
}

impl GroupClient for JetStreamClient {
    fn next(&mut self) -> BoxFuture<'_, Option<Handed>> {
        async move {
            if self.unsettled.len() >= self.max_unsettled {
                // Full: a settlement (the caller's other branch) makes room.
                std::future::pending::<()>().await;
            }
            loop {
                let message = match self.messages.next().await? {
                    Ok(m) => m,
                    Err(e) => match e.kind() {
                        MessagesErrorKind::ConsumerDeleted => {
                            tracing::info!(group = %self.handle.id, "The group's consumer was deleted");
                            return None;
                        }
                        MessagesErrorKind::MissingHeartbeat => {
                            tracing::debug!(group = %self.handle.id, "Pulling anew after missed heartbeats");
                            continue;
                        }
                        _ => {
                            tracing::warn!(group = %self.handle.id, error = %e, "Pulling from JetStream failed");
                            tokio::time::sleep(PULL_ERROR_PAUSE).await;
                            continue;
                        }
                    },
                };
                let (delivered, stream_sequence) =
                    message.info().map(|i| (i.delivered, i.stream_sequence)).unwrap_or((1, 0));
                let (message, acker) = message.split();
                if stream_sequence <= self.handle.cleared_through.load(Ordering::Acquire) {
                    // Pulled before a clear dropped it: the ack only tidies up.
                    let _ = acker.ack().await;
                    continue;
                }
                let Some(decoded) = StoredMessage::decode(&message.payload) else {
                    tracing::error!(group = %self.handle.id, stream_sequence, "Dropping a corrupt queue record");
                    if let Err(e) = acker.ack_with(AckKind::Term).await {
                        tracing::warn!(group = %self.handle.id, error = %e, "Ending a corrupt record failed");
                    }
                    continue;
                };
                let held = Held { acker, delivered, record: message.payload, stream_sequence };
                // Delivered as often as the group allows and never accepted: to the dead letters
                // instead of out again (the embedded backend does the same in its dispatcher).
                let max = self.handle.max_delivery_attempts.load(Ordering::Relaxed);
                if max > 0 && delivered > i64::from(max) {
                    tracing::info!(group = %self.handle.id, id = decoded.id, max, "A message moved to the dead letters after the last delivery attempt");
                    if let Err(e) = self.dead_letter(held).await {
                        tracing::warn!(group = %self.handle.id, error = %e, "Moving a message to the dead letters failed");
                    }
                    continue;
                }
                let ticket = self.next_ticket;
                self.next_ticket += 1;
                self.unsettled.insert(ticket, held);
                return Some(Handed { message: decoded, ticket: Ticket { a: ticket, b: 0 } });
            }
        }
        .boxed()
    }

    fn settle(&mut self, ticket: Ticket, outcome: Outcome) -> BoxFuture<'_, ()> {
        async move {
            let Some(held) = self.unsettled.remove(&ticket.a) else { return };
            let result = match outcome {
                Outcome::Accepted => {
                    let r = held.acker.ack().await;
                    if r.is_ok() {
                        let now = now_ms();
                        self.handle.accepted.fetch_add(1, Ordering::Relaxed);
                        self.handle.last_accept_ms.store(now, Ordering::Relaxed);
                        lock(&self.handle.rate).add(now / 1000, 1);
                        self.rate.add(now / 1000, 1);
                        let rate = self.rate.per_minute(now / 1000);
                        if let Some(info) = lock(&self.handle.online).get_mut(&self.number) {
                            info.rate_per_minute = rate;
                        }
                        if let Some(slot) = &self.slot {
                            slot.set_rate(rate);
                        }
                    }
                    r
                }
                Outcome::Released | Outcome::Modified { .. } => {
                    let delay = release_backoff(u32::try_from(held.delivered).unwrap_or(u32::MAX));
                    held.acker.ack_with(AckKind::Nak(Some(delay))).await
                }
                Outcome::Lost | Outcome::Unsent => held.acker.ack_with(AckKind::Nak(None)).await,
                Outcome::Rejected => self.dead_letter(held).await,
            };
            if let Err(e) = result {
                // The lease ends on the server anyway: the message comes again after ack_wait.
                tracing::warn!(group = %self.handle.id, error = %e, ?outcome, "Settling with JetStream failed");
            }
        }
        .boxed()
    }
}

impl Drop for JetStreamClient {
    fn drop(&mut self) {
        self.handle.clients.fetch_sub(1, Ordering::AcqRel);
        lock(&self.handle.online).remove(&self.number);
        if self.unsettled.is_empty() {
            return;
        }
        // The client left: what it held goes back at once, not after ack_wait.
        let held: Vec<Held> = self.unsettled.drain().map(|(_, h)| h).collect();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for h in held {
                    // On failure the server redelivers after ack_wait.
                    let _ = h.acker.ack_with(AckKind::Nak(None)).await;
                }
            });
        }
    }
}
