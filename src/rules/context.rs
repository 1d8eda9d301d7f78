//! What the platform passes to an evaluation besides the message.

use std::collections::BTreeMap;

/// Per-message context: data that is not in the message itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalContext<'a> {
    /// Tags of the sending device, for `attribute(key)`; `None` when unknown.
    pub tags: Option<&'a BTreeMap<String, String>>,
}
