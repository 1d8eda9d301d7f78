//! `iotpipe devices publish|message|broadcast|rrpc|set-property|invoke`: cloud to device through
//! the API (docs/downlink.md).

use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::client::Client;
use super::table::{self, cell};

/// A payload: text or base64, exactly one.
#[derive(Debug, Clone, Args)]
pub struct PayloadArgs {
    /// The payload as text (UTF-8).
    #[arg(long, conflicts_with = "payload_base64", required_unless_present = "payload_base64")]
    pub payload: Option<String>,
    /// The payload as base64, for binary data.
    #[arg(long)]
    pub payload_base64: Option<String>,
}

impl PayloadArgs {
    fn into_body(self, mut body: Value) -> Value {
        match (self.payload, self.payload_base64) {
            (Some(text), _) => body["payload"] = json!(text),
            (None, Some(b64)) => body["payloadBase64"] = json!(b64),
            (None, None) => {}
        }
        body
    }
}

/// Cloud-to-device commands of `iotpipe devices`.
#[derive(Debug, Clone, Subcommand)]
pub enum DownlinkCommand {
    /// Publishes to one of the device's custom topics (/${pk}/${dn}/user/...); prints the
    /// message id. The device must be online.
    Publish {
        /// productKey.
        product_key: String,
        /// deviceName.
        device_name: String,
        /// The topic, /${pk}/${dn}/user/...
        topic: String,
        #[command(flatten)]
        payload: PayloadArgs,
        /// 0 or 1; QoS 1 is retried until the device acknowledges it.
        #[arg(long, default_value_t = 0)]
        qos: u8,
    },
    /// Shows what became of a message sent with `publish`: queued, sent, acknowledged,
    /// notSubscribed or deviceOffline.
    Message {
        /// productKey.
        product_key: String,
        /// deviceName.
        device_name: String,
        /// The message id `publish` printed.
        message_id: String,
    },
    /// Publishes to /broadcast/${pk}/... for every online device of the product subscribed.
    Broadcast {
        /// productKey.
        product_key: String,
        /// The topic, /broadcast/${pk}/...
        topic: String,
        #[command(flatten)]
        payload: PayloadArgs,
    },
    /// Sends an RRPC request and waits for the device's answer: SUCCESS, TIMEOUT or OFFLINE.
    Rrpc {
        /// productKey.
        product_key: String,
        /// deviceName.
        device_name: String,
        #[command(flatten)]
        payload: PayloadArgs,
        /// How long to wait for the answer, 1000-8000 ms.
        #[arg(long, default_value_t = 5_000)]
        timeout_ms: u64,
    },
    /// Sets properties (thing.service.property.set); each NAME=VALUE, VALUE as JSON when it
    /// parses (23.5, true, {"a":1}), else as a string.
    SetProperty {
        /// productKey.
        product_key: String,
        /// deviceName.
        device_name: String,
        /// NAME=VALUE, one or more.
        #[arg(required = true, value_name = "NAME=VALUE")]
        items: Vec<String>,
        /// Wait this long (1000-8000 ms) for the device's reply and print it.
        #[arg(long)]
        wait_ms: Option<u64>,
    },
    /// Invokes a service (thing.service.IDENTIFIER) with JSON arguments.
    Invoke {
        /// productKey.
        product_key: String,
        /// deviceName.
        device_name: String,
        /// The service's identifier.
        identifier: String,
        /// The arguments, a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Wait this long (1000-8000 ms) for the device's reply and print it.
        #[arg(long)]
        wait_ms: Option<u64>,
    },
}

/// Runs a cloud-to-device command.
///
/// # Errors
/// A malformed argument, or the request's failure, as one line.
pub fn run(client: &Client, cmd: DownlinkCommand) -> anyhow::Result<()> {
    use DownlinkCommand as C;
    let answer = match cmd {
        C::Publish { product_key, device_name, topic, payload, qos } => {
            let body = payload.into_body(json!({ "topic": topic, "qos": qos }));
            client.post(&["products", &product_key, "devices", &device_name, "messages"], Some(&body))?
        }
        C::Message { product_key, device_name, message_id } => {
            client.get(&["products", &product_key, "devices", &device_name, "messages", &message_id])?
        }
        C::Broadcast { product_key, topic, payload } => {
            let body = payload.into_body(json!({ "topic": topic }));
            client.post(&["products", &product_key, "broadcast"], Some(&body))?
        }
        C::Rrpc { product_key, device_name, payload, timeout_ms } => {
            let body = payload.into_body(json!({ "timeoutMs": timeout_ms }));
            client.post(&["products", &product_key, "devices", &device_name, "rrpc"], Some(&body))?
        }
        C::SetProperty { product_key, device_name, items, wait_ms } => {
            let mut body = json!({ "items": parse_items(&items)? });
            if let Some(ms) = wait_ms {
                body["waitMs"] = json!(ms);
            }
            client.post(&["products", &product_key, "devices", &device_name, "properties"], Some(&body))?
        }
        C::Invoke { product_key, device_name, identifier, args, wait_ms } => {
            let args: Value = serde_json::from_str(&args)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| anyhow::anyhow!("--args {args:?}: expected a JSON object"))?;
            let mut body = json!({ "args": args });
            if let Some(ms) = wait_ms {
                body["waitMs"] = json!(ms);
            }
            client.post(
                &["products", &product_key, "devices", &device_name, "services", &identifier],
                Some(&body),
            )?
        }
    };
    if client.json {
        answer.print_json();
        return Ok(());
    }
    let v = &answer.value;
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for key in ["messageId", "requestId", "topic", "qos", "state", "rrpcCode", "replyCode"] {
        if !v[key].is_null() {
            pairs.push((key, cell(&v[key])));
        }
    }
    if let Some(b64) = v["payloadBase64"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default();
        match String::from_utf8(bytes) {
            Ok(text) => pairs.push(("payload", text)),
            Err(_) => pairs.push(("payloadBase64", b64.to_string())),
        }
    }
    if !v["reply"].is_null() {
        pairs.push(("reply", v["reply"].to_string()));
    }
    table::print_fields(&pairs);
    Ok(())
}

/// `NAME=VALUE` pairs as a JSON object; a VALUE that is not JSON is a string.
fn parse_items(items: &[String]) -> anyhow::Result<Map<String, Value>> {
    items
        .iter()
        .map(|item| {
            let (name, value) = item
                .split_once('=')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| anyhow::anyhow!("{item:?}: write NAME=VALUE"))?;
            let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
            Ok((name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_json_when_they_parse() {
        let items = ["t=23.5", "on=true", "name=lamp", "cfg={\"a\":1}"].map(String::from);
        assert_eq!(
            Value::Object(parse_items(&items).unwrap()),
            json!({"t": 23.5, "on": true, "name": "lamp", "cfg": {"a": 1}})
        );
        assert!(parse_items(&["novalue".into()]).is_err());
        assert!(parse_items(&["=1".into()]).is_err());
    }
}
