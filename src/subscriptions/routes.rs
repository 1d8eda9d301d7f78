//! Which consumer groups a message goes to, from the server-side subscriptions.

use std::collections::HashMap;
use std::sync::Arc;

use super::MessageType;
use crate::message::Message;

/// One message type of one subscription and its groups.
type Route = (MessageType, Arc<[Arc<str>]>);

/// Subscriptions by productKey.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    by_product: HashMap<String, Vec<Route>>,
}

impl Routes {
    /// Routes for the given subscriptions: (productKey, message types, consumer groups).
    pub fn new<'a>(
        subscriptions: impl IntoIterator<Item = (&'a str, &'a [MessageType], &'a [String])>,
    ) -> Self {
        let mut by_product: HashMap<String, Vec<Route>> = HashMap::new();
        for (product, types, groups) in subscriptions {
            let groups: Arc<[Arc<str>]> = groups.iter().map(|g| Arc::from(g.as_str())).collect();
            for t in types {
                by_product.entry(product.to_string()).or_default().push((*t, groups.clone()));
            }
        }
        Self { by_product }
    }

    /// The groups `message` goes to (each once).
    pub fn targets(&self, message: &Message) -> Vec<&Arc<str>> {
        let want = MessageType::from(message.kind);
        let mut out: Vec<&Arc<str>> = Vec::new();
        if let Some(subs) = self.by_product.get(&message.origin.product_key) {
            for (t, groups) in subs {
                if *t == want {
                    for g in groups.iter() {
                        if !out.contains(&g) {
                            out.push(g);
                        }
                    }
                }
            }
        }
        out
    }
}
