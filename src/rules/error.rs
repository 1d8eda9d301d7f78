//! Errors of the rules engine: compile-time diagnostics with positions, and evaluation failures.

use std::fmt;
use std::path::Path;

/// A problem found while loading or compiling a rule, with its position in the rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File name (or `<sql>` for SQL given on the command line).
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// 1-based column.
    pub col: u64,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when there is an obvious fix.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// A problem of a rule, tied to the field (or file) it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDiagnostic {
    /// `name`, `description`, `enabled`, `dataType`, `actions[i]`, `errorAction`, `sql`, or the
    /// file name for a file on disk.
    pub field: String,
    /// 1-based line in the field's text (`sql` and files only).
    pub line: Option<u64>,
    /// 1-based column in the field's text (`sql` and files only).
    pub col: Option<u64>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl FieldDiagnostic {
    /// A problem of a whole field.
    pub(crate) fn field(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.into(), line: None, col: None, message: message.into(), hint: None }
    }

    /// A problem at a line and column of a field's text (`sql`).
    pub(crate) fn at(field: &str, d: Diagnostic) -> Self {
        Self { field: field.into(), line: Some(d.line), col: Some(d.col), message: d.message, hint: d.hint }
    }

    /// Problems as one line: `sql:2:7: message; actions[0]: message`.
    pub(crate) fn join(d: &[FieldDiagnostic]) -> String {
        d.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    }

    /// A problem of a file on disk, named by its file name.
    pub(crate) fn of_file(d: Diagnostic) -> Self {
        let file =
            Path::new(&d.file).file_name().map_or(d.file.clone(), |f| f.to_string_lossy().into_owned());
        Self::at(&file, d)
    }
}

/// `sql:2:7: message (hint: ...)`, `actions[0]: message`.
impl std::fmt::Display for FieldDiagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.field)?;
        if let (Some(line), Some(col)) = (self.line, self.col) {
            write!(f, ":{line}:{col}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// A compile error before it is tied to a file: a position and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct CompileError {
    /// 1-based line (0 when unknown; reported as line 1).
    pub line: u64,
    /// 1-based column (0 when unknown; reported as column 1).
    pub col: u64,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl CompileError {
    /// An error at a position.
    pub fn at(line: u64, col: u64, message: impl Into<String>) -> Self {
        Self { line, col, message: message.into(), hint: None }
    }

    /// Adds a hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Ties the error to a file.
    pub fn in_file(self, file: &str) -> Diagnostic {
        Diagnostic {
            file: file.to_string(),
            line: self.line.max(1),
            col: self.col.max(1),
            message: self.message,
            hint: self.hint,
        }
    }
}

/// Why evaluating a rule failed for one message (counted as `failed.exception`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// `/`, `%` or `mod()` by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// An operator or function got a value of the wrong type.
    #[error("{0}")]
    Type(String),
    /// A result is NaN or infinite, which JSON cannot carry.
    #[error("{0} is not a finite number")]
    NotFinite(&'static str),
    /// A function failed.
    #[error("{name}(): {message}")]
    Function {
        /// Function name.
        name: &'static str,
        /// What failed.
        message: String,
    },
    /// A rhai script failed.
    #[error("script {name}: {message}")]
    Script {
        /// Script function name.
        name: String,
        /// rhai's error.
        message: String,
    },
}
