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
//! - [`eval`]: runs the IR on one message; [`value`]: comparison, arithmetic and coercion rules.
//! - [`path`]: payload paths (`a.b[0]`, `"$.a[0]"`); [`like`]: LIKE patterns; [`payload`]: parsing
//!   only the members rules read.
//! - [`functions`]: built-in functions, one per file; [`script`]: rhai user functions and decoders.
//! - [`topic`], [`index`]: topic filters and the index that finds a message's rules.
//! - [`action`]: actions as data; [`metrics`]: per-rule counters; [`row`]: the ordered result.
//! - [`ruleset`]: the public entry point, [`RuleSet`]; [`dry_run`]: one rule on one made-up
//!   message (`rules test`, the API's rule test).
//!
//! The language is documented in docs/rules.md.

pub mod action;
pub mod compile;
pub mod context;
pub mod dry_run;
pub mod edit;
pub mod error;
pub mod eval;
pub mod files;
pub mod functions;
pub mod header;
pub mod index;
pub(crate) mod ir;
pub mod like;
pub mod metrics;
pub mod parse;
pub mod path;
pub mod payload;
pub mod position;
pub mod row;
pub mod rule;
pub mod ruleset;
pub mod script;
pub mod suggest;
pub mod topic;
pub mod value;
pub mod watch;

pub use action::{Action, Template};
pub use compile::DataType;
pub use context::EvalContext;
pub use error::{CompileError, Diagnostic, EvalError};
pub use metrics::{MetricsSnapshot, RuleMetrics};
pub use row::Row;
pub use rule::Rule;
pub use ruleset::{Outcome, RuleOutput, RuleSet};
pub use watch::{watch, watch_live, LiveRules, Reloader, SharedRules, Watch};
