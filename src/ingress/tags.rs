//! Tag reports from devices (`/sys/${pk}/${dn}/thing/deviceinfo/update` and `.../delete`):
//! applied to the registry like an API edit, announced as tag-change messages, answered with
//! the platform's Alink reply.

use super::IngressContext;
use crate::logsafe::Untrusted;
use crate::message::alink::{self, Reply};
use crate::message::thing::tags::{self, ReportOp, Subject};
use crate::message::{Origin, Platform};
use crate::registry::RegistryError;

/// The platform's code for a request the server failed to carry out.
const CODE_SERVER_ERROR: u16 = 500;

/// Sets each reported tag, or removes it when its value is `None`.
fn apply_edits(tags: &mut std::collections::BTreeMap<String, String>, edits: Vec<(String, Option<String>)>) {
    for (key, value) in edits {
        match value {
            Some(value) => drop(tags.insert(key, value)),
            None => drop(tags.remove(&key)),
        }
    }
}

/// Applies `origin`'s tag report (`op`, published on `topic` with body `payload`): the
/// tag-change messages to store (none when nothing changed), or the error reply when the report
/// is refused (the caller then forwards it unconverted).
pub(super) async fn apply(
    shared: &IngressContext,
    origin: &Origin,
    op: ReportOp,
    topic: &str,
    payload: &[u8],
    now_ms: u64,
) -> Result<Vec<Platform>, Option<Reply>> {
    let edits = tags::parse_report(op, payload).map_err(|e| {
        tracing::warn!(device = %origin.device_name, topic = %Untrusted(topic), error = %e, "Refused a tag report");
        alink::post_reply(topic, payload, false)
    })?;
    let registry = shared.registry.clone();
    let (pk, dn) = (origin.product_key.clone(), origin.device_name.clone());
    let cluster = registry.shared().cloned();
    let updated = if let Some(cluster) = cluster {
        // Cluster mode: the report changes the device for every node.
        let change = |d: &mut crate::registry::Device| {
            apply_edits(&mut d.tags, edits.clone());
            crate::registry::names::check_tags(d.tags.iter()).map_err(RegistryError::InvalidTags)
        };
        Ok(cluster.modify(&pk, &dn, &change).await.map(|(before, after)| (before.tags, after)))
    } else {
        // The registry writes (and syncs) its store: off the async workers.
        tokio::task::spawn_blocking(move || registry.update_tags(&pk, &dn, |tags| apply_edits(tags, edits)))
            .await
    };
    let (before, device) = match updated {
        Ok(Ok(done)) => done,
        Ok(Err(RegistryError::InvalidTags(why))) => {
            tracing::warn!(device = %origin.device_name, reason = %Untrusted(&why), "Refused a tag report");
            return Err(alink::post_reply(topic, payload, false));
        }
        Ok(Err(e @ RegistryError::NoDevice(..))) => {
            tracing::warn!(device = %origin.device_name, error = %e, "Refused a tag report");
            return Err(alink::reply_with(topic, payload, alink::CODE_NO_DEVICE, "device not found"));
        }
        Ok(Err(e)) => {
            tracing::error!(device = %origin.device_name, error = %e, "Storing a tag report failed");
            return Err(alink::reply_with(topic, payload, CODE_SERVER_ERROR, "server error"));
        }
        Err(e) => {
            tracing::error!(device = %origin.device_name, error = %e, "Storing a tag report failed");
            return Err(alink::reply_with(topic, payload, CODE_SERVER_ERROR, "server error"));
        }
    };
    let subject =
        Subject { iot_id: &device.iot_id, product_key: &device.product_key, device_name: &device.name };
    Ok(tags::change_bodies(subject, &before, &device.tags, now_ms)
        .into_iter()
        .map(|payload| Platform { topic: tags::topic(&device.product_key, &device.name), payload })
        .collect())
}
