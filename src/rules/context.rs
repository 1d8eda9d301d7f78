//! What an evaluation reads: the message as rules see it ([`Env`]) and what the platform passes
//! besides the message ([`EvalContext`]). Built-in functions and the evaluator both read it, so
//! it sits below both.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::message::Message;

/// Per-message context: data that is not in the message itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct EvalContext<'a> {
    /// Tags of the sending device, for `attribute(key)`; `None` when unknown.
    pub tags: Option<&'a BTreeMap<String, String>>,
}

/// Everything an expression can read.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The message.
    pub msg: &'a Message,
    /// The topic rules see (the platform form of thing-model posts).
    pub topic: &'a str,
    /// The payload rules see.
    pub payload: &'a [u8],
    /// The parsed payload; null for binary rules.
    pub json: &'a Value,
    /// Device tags and the like.
    pub ctx: &'a EvalContext<'a>,
}
