//! The bucket watch: the backup that ends a local session a newer revision names someone else
//! for, should the successor's release request have been lost.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{ClusterSessions, Owner, TAKEOVER_WAIT};
use crate::ingress::{OfflineReason, SessionsHandle};

impl ClusterSessions {
    /// Watches the bucket until `shutdown`; a watch that fails is made again.
    pub(super) async fn watch(
        self: Arc<Self>,
        local: &SessionsHandle,
        mut watch: kv::Watch,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                next = watch.next() => match next {
                    Some(Ok(entry)) => self.on_change(local, &entry, &shutdown),
                    Some(Err(e)) => tracing::warn!(error = %e, "Watching the sessions bucket"),
                    None => loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        match self.kv.watch_all().await {
                            Ok(w) => {
                                watch = w;
                                break;
                            }
                            Err(e) => tracing::warn!(error = %e, "Watching the sessions bucket again failed"),
                        }
                    },
                },
            }
        }
    }

    /// A key changed: a local session that a newer revision names someone else for is ended,
    /// unless its successor's request ends it first (this is the backup for a lost request, so
    /// it waits [`TAKEOVER_WAIT`], and such a session's offline status is not announced).
    fn on_change(self: &Arc<Self>, local: &SessionsHandle, entry: &kv::Entry, shutdown: &CancellationToken) {
        if entry.operation != Operation::Put {
            return;
        }
        let Ok(owner) = serde_json::from_slice::<Owner>(&entry.value) else { return };
        if self.is_mine(&owner) {
            return;
        }
        let claim = match self.lock().claims.get(&entry.key) {
            Some(c) if c.revision < entry.revision => c.clone(),
            _ => return,
        };
        let me = self.clone();
        let key = entry.key.clone();
        let (local, shutdown) = (local.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TAKEOVER_WAIT) => {}
            }
            let still = me.lock().claims.get(&key).is_some_and(|c| c.session == claim.session);
            if !still {
                return;
            }
            let marker = (key, claim.session);
            me.lock().released.insert(marker.clone(), None);
            let (pk, dn) = (&claim.product_key, &claim.device_name);
            if local.kick_session(pk, dn, claim.session, OfflineReason::TakenOver).is_some() {
                tracing::warn!(device = %dn, product = %pk, "Ending the device's session: a newer session on another node holds it");
            } else {
                me.lock().released.remove(&marker);
            }
        });
    }
}
