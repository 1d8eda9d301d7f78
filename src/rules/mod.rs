//! The rules engine: SQL rule files compiled once into an own IR and evaluated per message.
//!
//! # Layout
//! - [`rule`]: a rule file (header comments + one SQL statement) and the compiled [`Rule`];
//!   [`header`]: the one reader of the header lines, for the server and the CLI alike.
//! - [`files`]: reading a rules directory; [`watch`]: hot reload keeping the last good version;
//!   [`edit`]: writing rule files from fields (the HTTP API) and putting them in force at once.
//! - [`parse`]: SQL text to one sqlparser SELECT, errors with positions and hints.
//! - [`compile`]: sqlparser AST to the IR ([`ir`]); everything unsupported is an error here, at
//!   the [`position`] of the offending node, with [`suggest`]ions for misspelt names.
//! - [`eval`]: runs the IR on one message; [`value`]: comparison, arithmetic and coercion rules;
//!   [`context`]: what an expression reads (the message as rules see it, device tags).
//! - [`path`]: payload paths (`a.b[0]`, `"$.a[0]"`); [`like`]: LIKE patterns; [`payload`]: parsing
//!   only the members rules read.
//! - [`functions`]: built-in functions, one per file; [`script`]: rhai user functions and decoders.
//! - [`topic`], [`index`]: topic filters and the index that finds a message's rules.
//! - [`action`]: actions as data; [`metrics`]: per-rule counters; [`row`]: the ordered result;
//!   [`error`]: diagnostics with positions, evaluation failures.
//! - [`ruleset`]: the public entry point, [`RuleSet`]; [`dry_run`]: one rule on one made-up
//!   message (`rules test`, and the API's rule test against the rules in force).
//!
//! # Dependencies
//! The modules use each other one way: `compile` -> `ir` -> `functions` -> `context`, `value`,
//! `row`, `error`; `eval` -> `ir`, `functions`, `context`; `rule` -> `header`, `compile`;
//! `ruleset` -> `rule`, `eval`, `index`; `watch` -> `ruleset`, `files` -> `rule`; `edit` ->
//! `watch`, `header`; `dry_run` -> `watch`, `ruleset`. Outside itself, `rules` uses only
//! [`crate::message`].
//!
//! The public surface is what the binary's tests and the benches use: the items re-exported
//! here and [`script`]. Every other module is crate-internal.
//!
//! The language is documented in docs/rules.md.

pub(crate) mod action;
pub(crate) mod compile;
pub(crate) mod context;
pub(crate) mod dry_run;
pub(crate) mod edit;
pub(crate) mod error;
pub(crate) mod eval;
pub(crate) mod files;
pub(crate) mod functions;
pub(crate) mod header;
pub(crate) mod index;
pub(crate) mod ir;
pub(crate) mod like;
pub(crate) mod metrics;
pub(crate) mod parse;
pub(crate) mod path;
pub(crate) mod payload;
pub(crate) mod position;
pub(crate) mod row;
pub(crate) mod rule;
pub(crate) mod ruleset;
pub mod script;
pub(crate) mod suggest;
pub(crate) mod topic;
pub(crate) mod value;
pub(crate) mod watch;

pub use action::{Action, Template};
pub use compile::DataType;
pub use context::EvalContext;
pub use error::{Diagnostic, EvalError};
pub use metrics::{MetricsSnapshot, RuleMetrics};
pub use row::Row;
pub use rule::Rule;
pub use ruleset::{Outcome, RuleOutput, RuleSet};
