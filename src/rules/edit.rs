//! Writing rule files: a rule given as fields (the HTTP API's body) becomes a file with header
//! lines, written atomically and applied through [`LiveRules`] before the call returns, so the
//! change is in force when the caller answers. Hand-written files stay what they are: these
//! functions read and write the same format, and the watch thread keeps applying other changes.
//!
//! Every write holds the [`LiveRules`] lock from the check to the apply: two writers of the same
//! name are served one after the other (the second sees the first's file), and the watch thread
//! never applies a half-done change.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::compile::DataType;
use super::error::FieldDiagnostic;
use super::files::MAX_RULES;
use super::header::{header_line, valid_name, MAX_NAME};
use super::parse::MAX_SQL;
use super::rule::Rule;
use super::watch::{LiveGuard, LiveRules};

/// A rule as fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    /// The name, also the file stem.
    pub name: String,
    /// Free text, one line.
    pub description: String,
    /// Disabled rules match nothing.
    pub enabled: bool,
    /// JSON or binary payloads.
    pub data_type: DataType,
    /// Action texts (`amqp G tag=${dn}`), in order.
    pub actions: Vec<String>,
    /// The error action's text.
    pub error_action: Option<String>,
    /// The statement, without header lines.
    pub sql: String,
}

/// Why a rule file was not written.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The name breaks the name rule.
    #[error("name: a rule name is 1-{MAX_NAME} letters, digits, '_' or '-', got {0:?}")]
    InvalidName(String),
    /// The rule does not compile (or its file on disk does not).
    #[error("the rule does not compile: {}", FieldDiagnostic::join(.0))]
    Invalid(Vec<FieldDiagnostic>),
    /// A rule of that name, or its file, exists.
    #[error("{0}")]
    Exists(String),
    /// No rule of that name.
    #[error("rule {0} does not exist")]
    NotFound(String),
    /// The directory holds [`MAX_RULES`] rules.
    #[error("the rules directory already holds {MAX_RULES} rules")]
    Limit,
    /// Reading, writing or removing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> EditError + '_ {
    move |source| EditError::Io { path: path.to_path_buf(), source }
}

/// A rule file's text and the field each header line comes from.
struct Composed {
    text: String,
    fields: Vec<String>,
}

impl RuleSpec {
    /// The rule file's text, as the server writes it (`iotpipe rules export`).
    ///
    /// # Errors
    /// The fields' problems (a field on two lines, a statement that is empty or too long).
    pub fn file_text(&self) -> Result<String, String> {
        self.compose()
            .map(|c| c.text)
            .map_err(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }

    /// The file text: one header line per field, then the statement.
    fn compose(&self) -> Result<Composed, Vec<FieldDiagnostic>> {
        let mut problems = Vec::new();
        let mut one_line = |field: String, value: &str| {
            if value.contains(['\n', '\r']) {
                problems.push(FieldDiagnostic::field(&field, "must be one line"));
            }
            field
        };
        let mut lines: Vec<(String, String)> = vec![("name".into(), format!("-- name: {}", self.name))];
        if !self.description.trim().is_empty() {
            let field = one_line("description".into(), &self.description);
            lines.push((field, format!("-- description: {}", self.description)));
        }
        lines.push(("enabled".into(), format!("-- enabled: {}", self.enabled)));
        let data_type = if self.data_type == DataType::Binary { "binary" } else { "json" };
        lines.push(("dataType".into(), format!("-- data_type: {data_type}")));
        for (i, a) in self.actions.iter().enumerate() {
            let field = one_line(format!("actions[{i}]"), a);
            lines.push((field, format!("-- action: {a}")));
        }
        if let Some(e) = &self.error_action {
            let field = one_line("errorAction".into(), e);
            lines.push((field, format!("-- error_action: {e}")));
        }
        problems.extend(sql_problems(&self.sql));
        let mut text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        text.push_str(&self.sql);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        if text.len() > MAX_SQL {
            problems.push(FieldDiagnostic::field(
                "sql",
                format!("the rule file would be longer than {MAX_SQL} bytes"),
            ));
        }
        if problems.is_empty() {
            Ok(Composed { text, fields: lines.into_iter().map(|(f, _)| f).collect() })
        } else {
            Err(problems)
        }
    }
}

/// Problems of the statement the compiler would report at the wrong place: none at all, or
/// header lines in it (which would silently become headers of the file).
fn sql_problems(sql: &str) -> Vec<FieldDiagnostic> {
    if sql.trim().is_empty() {
        return vec![FieldDiagnostic::field("sql", "the rule has no SQL statement")];
    }
    let mut out = Vec::new();
    for (i, line) in sql.lines().enumerate() {
        let trimmed = line.trim_start();
        if !(trimmed.is_empty() || trimmed.starts_with("--")) {
            break;
        }
        if let Some((key, _)) = header_line(line) {
            out.push(FieldDiagnostic {
                field: "sql".into(),
                line: Some(i as u64 + 1),
                col: Some((line.len() - trimmed.len()) as u64 + 1),
                message: format!("a header line (-- {key}: ...) in the statement"),
                hint: Some(
                    "give name, description, enabled, dataType, actions and errorAction as fields".into(),
                ),
            });
        }
    }
    out
}

/// Compiles the composed text, with the compiler's diagnostics put back on the fields.
fn compile(live: &LiveGuard<'_>, path: &Path, spec: &RuleSpec) -> Result<(String, Rule), EditError> {
    if !valid_name(&spec.name) {
        return Err(EditError::InvalidName(spec.name.clone()));
    }
    let composed = spec.compose().map_err(EditError::Invalid)?;
    let header = composed.fields.len() as u64;
    match live.compile(path, &composed.text) {
        Ok(rule) => Ok((composed.text, rule)),
        Err(diagnostics) => Err(EditError::Invalid(
            diagnostics
                .into_iter()
                .map(|d| {
                    match usize::try_from(d.line.saturating_sub(1)).ok().and_then(|i| composed.fields.get(i))
                    {
                        Some(field) => {
                            FieldDiagnostic { hint: d.hint, ..FieldDiagnostic::field(field, d.message) }
                        }
                        None => FieldDiagnostic {
                            field: "sql".into(),
                            line: Some(d.line - header),
                            col: Some(d.col),
                            message: d.message,
                            hint: d.hint,
                        },
                    }
                })
                .collect(),
        )),
    }
}

/// Compiles `spec` as it would be written, without writing: for checks the rules engine cannot
/// make (do the consumer groups of its actions exist?).
///
/// # Errors
/// [`EditError::InvalidName`], [`EditError::Invalid`].
pub fn check(live: &LiveRules, spec: &RuleSpec) -> Result<Rule, EditError> {
    let guard = live.lock();
    let path = guard.dir().join(format!("{}.sql", spec.name));
    compile(&guard, &path, spec).map(|(_, rule)| rule)
}

/// Writes `{dir}/{name}.sql` for a new rule and puts it in force.
///
/// # Errors
/// [`EditError::Exists`] when a rule of that name or the file exists; compile and I/O errors.
pub fn create(live: &LiveRules, spec: &RuleSpec) -> Result<Arc<Rule>, EditError> {
    let mut guard = live.lock();
    let path = guard.dir().join(format!("{}.sql", spec.name));
    let (text, _) = compile(&guard, &path, spec)?;
    if let Some(other) = guard.path_of(&spec.name) {
        return Err(EditError::Exists(format!("rule {} exists (file {})", spec.name, file_name(other))));
    }
    if path.exists() {
        return Err(EditError::Exists(format!(
            "rule {}: the file {} exists (it does not compile; replace or delete it)",
            spec.name,
            file_name(&path)
        )));
    }
    if guard.len() >= MAX_RULES {
        return Err(EditError::Limit);
    }
    write_atomic(&path, &text)?;
    put_in_force(&mut guard, &spec.name, &path, None)
}

/// Replaces the file of rule `name` (hand-written files included, wherever the rule's file is)
/// and puts it in force. A file `{name}.sql` that does not compile may be replaced too.
///
/// # Errors
/// [`EditError::NotFound`]; compile and I/O errors.
pub fn replace(live: &LiveRules, name: &str, spec: &RuleSpec) -> Result<Arc<Rule>, EditError> {
    let mut guard = live.lock();
    let path = find(&guard, name)?;
    let (text, _) = compile(&guard, &path, spec)?;
    let old = std::fs::read(&path).map_err(io(&path))?;
    write_atomic(&path, &text)?;
    put_in_force(&mut guard, name, &path, Some(&old))
}

/// Rewrites the `enabled` header line of rule `name` (adding one when the file has none) and
/// puts the change in force; the rest of the file is left as it is.
///
/// # Errors
/// [`EditError::NotFound`]; [`EditError::Invalid`] when the file on disk does not compile.
pub fn set_enabled(live: &LiveRules, name: &str, enabled: bool) -> Result<Arc<Rule>, EditError> {
    let mut guard = live.lock();
    let path = find(&guard, name)?;
    let old =
        super::files::read_small(&path).map_err(|d| EditError::Invalid(vec![FieldDiagnostic::of_file(d)]))?;
    let text = with_enabled(&old, enabled);
    guard
        .compile(&path, &text)
        .map_err(|d| EditError::Invalid(d.into_iter().map(FieldDiagnostic::of_file).collect()))?;
    if text != old {
        write_atomic(&path, &text)?;
    }
    put_in_force(&mut guard, name, &path, Some(old.as_bytes()))
}

/// Removes the file of rule `name` (or a file `{name}.sql` that does not compile) and puts the
/// removal in force.
///
/// # Errors
/// [`EditError::NotFound`]; I/O errors.
pub fn delete(live: &LiveRules, name: &str) -> Result<(), EditError> {
    let mut guard = live.lock();
    let path = find(&guard, name)?;
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        // Removed by hand a moment ago; the watch thread has not applied it yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&path)(e)),
    }
    sync_dir(&path);
    guard.apply(&[path]);
    Ok(())
}

/// The file text `spec` becomes, after every check [`create`] (`new`) or [`replace`] makes,
/// without writing: cluster mode writes it to the cluster's state first, then [`put_text`].
///
/// # Errors
/// As [`create`] or [`replace`], I/O aside.
pub fn render(live: &LiveRules, spec: &RuleSpec, new: bool) -> Result<String, EditError> {
    let guard = live.lock();
    if !new {
        let path = find(&guard, &spec.name)?;
        return compile(&guard, &path, spec).map(|(text, _)| text);
    }
    let path = guard.dir().join(format!("{}.sql", spec.name));
    let (text, _) = compile(&guard, &path, spec)?;
    if let Some(other) = guard.path_of(&spec.name) {
        return Err(EditError::Exists(format!("rule {} exists (file {})", spec.name, file_name(other))));
    }
    if path.exists() {
        return Err(EditError::Exists(format!("rule {}: the file {} exists", spec.name, file_name(&path))));
    }
    if guard.len() >= MAX_RULES {
        return Err(EditError::Limit);
    }
    Ok(text)
}

/// The text of rule `name`'s file.
///
/// # Errors
/// [`EditError::NotFound`]; [`EditError::Invalid`] when the file cannot be read.
pub fn text(live: &LiveRules, name: &str) -> Result<String, EditError> {
    let path = find(&live.lock(), name)?;
    super::files::read_small(&path).map_err(|d| EditError::Invalid(vec![FieldDiagnostic::of_file(d)]))
}

/// Makes `text` the file of rule `name` (wherever its file is, else `{dir}/{name}.sql`) and puts
/// it in force: cluster mode, a rule from the cluster's state. Nothing is written when the
/// file holds that text already.
///
/// # Errors
/// A bad name, a text that does not compile here, I/O.
pub fn put_text(live: &LiveRules, name: &str, text: &str) -> Result<Arc<Rule>, EditError> {
    if !valid_name(name) {
        return Err(EditError::InvalidName(name.to_string()));
    }
    let mut guard = live.lock();
    let path = guard.path_of(name).map_or_else(|| guard.dir().join(format!("{name}.sql")), Path::to_path_buf);
    let old = std::fs::read(&path).ok();
    if old.as_deref() == Some(text.as_bytes()) {
        if let Some(rule) = guard.rule(name).filter(|_| guard.path_of(name) == Some(&path)) {
            return Ok(rule);
        }
    }
    guard
        .compile(&path, text)
        .map_err(|d| EditError::Invalid(d.into_iter().map(FieldDiagnostic::of_file).collect()))?;
    write_atomic(&path, text)?;
    put_in_force(&mut guard, name, &path, old.as_deref())
}

/// True when rule `name` is loaded, or its file `{name}.sql` exists (compiling or not).
pub fn exists(live: &LiveRules, name: &str) -> bool {
    find(&live.lock(), name).is_ok()
}

/// The file of rule `name`: the loaded rule's, or `{dir}/{name}.sql` when it exists but does not
/// compile.
fn find(guard: &LiveGuard<'_>, name: &str) -> Result<PathBuf, EditError> {
    if let Some(p) = guard.path_of(name) {
        return Ok(p.to_path_buf());
    }
    let candidate = guard.dir().join(format!("{name}.sql"));
    if valid_name(name) && candidate.is_file() {
        Ok(candidate)
    } else {
        Err(EditError::NotFound(name.to_string()))
    }
}

/// Applies `path` and returns the rule now in force. When it did not load (it compiled a moment
/// ago, so only a name taken meanwhile by a file written by hand can do that), the previous text
/// is put back.
fn put_in_force(
    guard: &mut LiveGuard<'_>,
    name: &str,
    path: &Path,
    previous: Option<&[u8]>,
) -> Result<Arc<Rule>, EditError> {
    let diagnostics = guard.apply(&[path.to_path_buf()]);
    if let Some(rule) = guard.rule(name).filter(|_| guard.path_of(name) == Some(path)) {
        return Ok(rule);
    }
    match previous {
        Some(old) => {
            let _ = std::fs::write(path, old);
        }
        None => {
            let _ = std::fs::remove_file(path);
        }
    }
    guard.apply(&[path.to_path_buf()]);
    Err(EditError::Invalid(diagnostics.into_iter().map(FieldDiagnostic::of_file).collect()))
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into_owned())
}

/// `text` with its `enabled` header lines set to `enabled`, or one added first when it has none.
pub fn with_enabled(text: &str, enabled: bool) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut found = false;
    let mut in_header = true;
    for line in text.split_inclusive('\n') {
        if in_header {
            let trimmed = line.trim_start();
            if !(trimmed.is_empty() || trimmed.starts_with("--")) {
                in_header = false;
            } else if header_line(line).is_some_and(|(key, _)| key == "enabled") {
                let body = line.trim_end_matches(['\n', '\r']);
                out.push_str(&format!("-- enabled: {enabled}"));
                out.push_str(&line[body.len()..]);
                found = true;
                continue;
            }
        }
        out.push_str(line);
    }
    if found {
        out
    } else {
        format!("-- enabled: {enabled}\n{out}")
    }
}

/// Writes `text` to a temporary file of the same directory, syncs it and renames it over `path`:
/// the watch thread and a crash see the old file or the new one, never a part. The temporary
/// name does not end in `.sql`, so nothing loads it.
fn write_atomic(path: &Path, text: &str) -> Result<(), EditError> {
    let tmp = path.with_file_name(format!(".{}.tmp", file_name(path)));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    sync_dir(path);
    Ok(())
}

/// Makes a rename or removal in `path`'s directory durable (best effort: not every platform can
/// sync a directory).
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::watch::{Reloader, SharedRules};

    fn live(dir: &Path) -> LiveRules {
        let (reloader, set, _) = Reloader::load(dir);
        LiveRules::new(reloader, Arc::new(SharedRules::new(set)))
    }

    fn spec(name: &str, sql: &str) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            description: "Hot readings".into(),
            enabled: true,
            data_type: DataType::Json,
            actions: vec!["amqp G tag=${dn}".into()],
            error_action: None,
            sql: sql.into(),
        }
    }

    const SQL: &str = "SELECT t, deviceName() AS dn\nFROM \"/a/+/user/update\"\nWHERE t > 38";

    #[test]
    fn create_replace_disable_delete_are_in_force_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let live = live(dir.path());
        let rule = create(&live, &spec("hot", SQL)).unwrap();
        assert_eq!(rule.actions.len(), 1);
        let text = std::fs::read_to_string(dir.path().join("hot.sql")).unwrap();
        assert_eq!(
            text,
            "-- name: hot\n-- description: Hot readings\n-- enabled: true\n-- data_type: json\n\
             -- action: amqp G tag=${dn}\n"
                .to_string()
                + SQL
                + "\n"
        );
        assert_eq!(crate::rules::header::statement(&text), format!("{SQL}\n"));
        assert!(live.shared().get().get("hot").is_some());
        assert!(matches!(create(&live, &spec("hot", SQL)), Err(EditError::Exists(_))));
        rule.metrics.action(true);

        let replaced = replace(&live, "hot", &spec("hot", "SELECT 1 AS one FROM \"/b/#\"")).unwrap();
        assert_eq!(replaced.topic_filter(), "/b/#");
        assert_eq!(replaced.metrics.snapshot().actions_success, 1, "counters belong to the rule");
        assert_eq!(live.shared().get().get("hot").unwrap().topic_filter(), "/b/#");

        let off = set_enabled(&live, "hot", false).unwrap();
        assert!(!off.enabled && !live.shared().get().get("hot").unwrap().enabled);
        assert!(std::fs::read_to_string(dir.path().join("hot.sql")).unwrap().contains("-- enabled: false\n"));

        delete(&live, "hot").unwrap();
        assert!(live.shared().get().is_empty());
        assert!(!dir.path().join("hot.sql").exists());
        assert!(matches!(delete(&live, "hot"), Err(EditError::NotFound(_))));
        assert!(matches!(replace(&live, "hot", &spec("hot", SQL)), Err(EditError::NotFound(_))));
        // Nothing but rule files is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn diagnostics_point_at_fields_and_sql_positions() {
        let dir = tempfile::tempdir().unwrap();
        let live = live(dir.path());
        let mut bad = spec("bad", "SELECT t\nFROM \"/a/+\"\nWHERE frob(t)");
        bad.actions.push("kafka x".into());
        let Err(EditError::Invalid(d)) = create(&live, &bad) else { panic!() };
        let text: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("actions[1]: unknown action \"kafka\""), "{text:?}");
        assert!(text[1].starts_with("sql:3:7: unknown function frob()"), "{text:?}");

        let mut injected = spec("inj", "-- action: amqp EVIL\nSELECT 1 FROM \"/a\"");
        injected.description = "two\n-- action: amqp EVIL".into();
        let Err(EditError::Invalid(d)) = create(&live, &injected) else { panic!() };
        assert_eq!(d.iter().map(|d| d.field.as_str()).collect::<Vec<_>>(), ["description", "sql"]);
        assert!(matches!(create(&live, &spec("a.b", SQL)), Err(EditError::InvalidName(_))));
        assert!(matches!(create(&live, &spec("e", " \n")), Err(EditError::Invalid(_))));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was written");
    }

    #[test]
    fn hand_written_files_are_edited_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("custom.sql");
        std::fs::write(&file, "-- name: other\r\n-- A note\r\nSELECT 1 AS v FROM \"/a/+\"\r\n").unwrap();
        std::fs::write(dir.path().join("broken.sql"), "SELECT FROM").unwrap();
        let live = live(dir.path());
        set_enabled(&live, "other", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "-- enabled: false\n-- name: other\r\n-- A note\r\nSELECT 1 AS v FROM \"/a/+\"\r\n"
        );
        set_enabled(&live, "other", true).unwrap();
        assert!(std::fs::read_to_string(&file).unwrap().starts_with("-- enabled: true\n-- name: other\r\n"));
        assert!(live.shared().get().get("other").unwrap().enabled);

        // A clash with a name a hand-written file uses, and a broken file in the way.
        assert!(matches!(create(&live, &spec("other", SQL)), Err(EditError::Exists(_))));
        assert!(matches!(create(&live, &spec("broken", SQL)), Err(EditError::Exists(_))));
        assert!(matches!(set_enabled(&live, "broken", true), Err(EditError::Invalid(_))));
        replace(&live, "broken", &spec("broken", SQL)).unwrap();
        assert!(live.shared().get().get("broken").is_some());
    }
}
