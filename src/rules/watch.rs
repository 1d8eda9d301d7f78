//! Hot reload of a rules directory.
//!
//! A thread receives file-system events (notify), waits for a short quiet period so an editor's
//! save (often several events) is one reload, and recompiles only the files that changed. A
//! file that no longer compiles is reported and its previous version keeps running; the other
//! rules are untouched. A changed script (`*.rhai`) recompiles everything, since rules may call
//! it. The new [`RuleSet`] is swapped in whole; evaluations in flight keep the old one.
//!
//! [`LiveRules`] shares the reloader between the watch thread and writers that need their change
//! in force when they return (the HTTP API writes a file, then applies it at once). A file whose
//! text is what is already loaded is not recompiled, so the watcher's own event for a file the
//! API has applied finds nothing to do.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use super::compile::DataType;
use super::error::Diagnostic;
use super::files;
use super::metrics::RuleMetrics;
use super::rule::Rule;
use super::ruleset::RuleSet;
use super::script::{Script, Scripts};

/// Quiet time after the last event before reloading: an editor's save settles within it, and
/// the contract's 2 s for a change to take effect leaves ample margin.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Watching failures.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// notify could not watch the directory.
    #[error("cannot watch the rules directory {dir}: {source}")]
    Notify {
        /// The directory.
        dir: PathBuf,
        /// notify's error.
        source: notify::Error,
    },
    /// The reload thread could not start.
    #[error("cannot start the rules reload thread: {0}")]
    Thread(std::io::Error),
}

/// The current rule set, shared by the message path and the reloader.
#[derive(Debug, Default)]
pub struct SharedRules {
    current: RwLock<Arc<RuleSet>>,
}

impl SharedRules {
    /// Wraps a rule set.
    pub fn new(set: RuleSet) -> Self {
        Self { current: RwLock::new(Arc::new(set)) }
    }

    /// The current rule set (cheap: one Arc clone).
    pub fn get(&self) -> Arc<RuleSet> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn set(&self, set: RuleSet) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
    }
}

/// The state of a directory: the last good version of every rule file.
#[derive(Debug)]
pub struct Reloader {
    dir: PathBuf,
    rules: BTreeMap<PathBuf, Arc<Rule>>,
    scripts: Scripts,
    decoders: HashMap<String, Arc<Script>>,
}

impl Reloader {
    /// Loads `dir` and returns the reloader, the first rule set and the problems found.
    pub fn load(dir: &Path) -> (Self, RuleSet, Vec<Diagnostic>) {
        let loaded = files::load_dir(dir);
        let me = Self {
            dir: dir.to_path_buf(),
            rules: loaded.rules,
            scripts: loaded.scripts,
            decoders: loaded.decoders,
        };
        let set = me.build();
        (me, set, loaded.diagnostics)
    }

    fn build(&self) -> RuleSet {
        RuleSet::new(self.rules.values().cloned().collect(), self.decoders.clone())
    }

    /// Applies changes to `paths` (created, modified or removed files) and returns the new rule
    /// set and the problems found. Broken files keep their previous version.
    #[cfg(test)]
    pub fn apply(&mut self, paths: &[PathBuf]) -> (RuleSet, Vec<Diagnostic>) {
        let (_, diagnostics) = self.apply_changes(paths);
        (self.build(), diagnostics)
    }

    /// Applies changes to `paths` (created, modified or removed files) without building the
    /// set: true when a rule or script changed. Broken files keep their previous version.
    fn apply_changes(&mut self, paths: &[PathBuf]) -> (bool, Vec<Diagnostic>) {
        let mut changed = false;
        let mut diagnostics = Vec::new();
        let scripts_changed = paths.iter().any(|p| has_ext(p, "rhai"));
        let targets: Vec<PathBuf> = if scripts_changed {
            let mut fresh = files::Loaded::default();
            files::load_scripts(&self.dir, &mut fresh);
            diagnostics.append(&mut fresh.diagnostics);
            self.scripts = fresh.scripts;
            self.decoders = fresh.decoders;
            changed = true;
            let mut all: Vec<PathBuf> = self.rules.keys().cloned().collect();
            all.extend(paths.iter().filter(|p| has_ext(p, "sql")).cloned());
            if let Ok(entries) = std::fs::read_dir(&self.dir) {
                all.extend(entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| has_ext(p, "sql")));
            }
            all.sort();
            all.dedup();
            all
        } else {
            paths.iter().filter(|p| has_ext(p, "sql")).cloned().collect()
        };
        let metrics: HashMap<String, Arc<RuleMetrics>> =
            self.rules.values().map(|r| (r.name.clone(), Arc::clone(&r.metrics))).collect();
        for path in targets {
            if !path.exists() {
                if self.rules.remove(&path).is_some() {
                    tracing::info!(file = %path.display(), "Removed a rule");
                    changed = true;
                }
                continue;
            }
            let text = match files::read_small(&path) {
                Ok(t) => t,
                Err(d) => {
                    diagnostics.push(d);
                    continue;
                }
            };
            // The same text with the same scripts compiles to the same rule.
            if !scripts_changed && self.rules.get(&path).is_some_and(|r| r.source == text) {
                continue;
            }
            match files::compile_rule(&path, &text, &self.scripts) {
                Ok(mut rule) => {
                    let clash = self.rules.iter().find(|(p, r)| **p != path && r.name == rule.name);
                    if let Some((other, _)) = clash {
                        diagnostics.push(Diagnostic {
                            file: path.display().to_string(),
                            line: 1,
                            col: 1,
                            message: format!(
                                "the rule name {:?} is already used by {}",
                                rule.name,
                                other.display()
                            ),
                            hint: None,
                        });
                        continue;
                    }
                    // Counters belong to the rule, not to one version of its file.
                    if let Some(m) = metrics.get(&rule.name) {
                        rule.metrics = Arc::clone(m);
                    }
                    tracing::info!(file = %path.display(), rule = %rule.name, "Loaded a rule");
                    self.rules.insert(path, Arc::new(rule));
                    changed = true;
                }
                Err(mut d) => {
                    if self.rules.contains_key(&path) {
                        tracing::warn!(file = %path.display(), "A rule file is broken; its previous version keeps running");
                    }
                    diagnostics.append(&mut d);
                }
            }
        }
        for d in &diagnostics {
            tracing::warn!(error = %d, "Rule file error");
        }
        (changed, diagnostics)
    }
}

/// A [`Reloader`] shared by the watch thread and direct writers, with the rule set it keeps up
/// to date. Every apply and the swap of the set happen under one lock, so the set in force is
/// always the result of the last apply, whoever made it.
#[derive(Debug)]
pub struct LiveRules {
    reloader: Mutex<Reloader>,
    shared: Arc<SharedRules>,
}

impl LiveRules {
    /// Shares `reloader`, which keeps `shared` up to date.
    pub fn new(reloader: Reloader, shared: Arc<SharedRules>) -> Self {
        Self { reloader: Mutex::new(reloader), shared }
    }

    /// The rule set in force.
    pub fn shared(&self) -> &Arc<SharedRules> {
        &self.shared
    }

    /// Applies changes to `paths` at once; when this returns, the rule set in force reflects
    /// them. Returns the problems found.
    #[cfg(test)]
    pub fn apply_now(&self, paths: &[PathBuf]) -> Vec<Diagnostic> {
        self.lock().apply(paths)
    }

    /// Takes the lock: what the holder reads, writes and applies is one step for the watch thread
    /// and every other writer. Hold it briefly (file writes and compiles only).
    pub fn lock(&self) -> LiveGuard<'_> {
        LiveGuard {
            reloader: self.reloader.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            shared: &self.shared,
        }
    }
}

/// The locked [`LiveRules`].
pub struct LiveGuard<'a> {
    reloader: MutexGuard<'a, Reloader>,
    shared: &'a SharedRules,
}

impl LiveGuard<'_> {
    /// The rules directory.
    pub fn dir(&self) -> &Path {
        &self.reloader.dir
    }

    /// The file of the loaded rule `name`.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.reloader.rules.iter().find(|(_, r)| r.name == name).map(|(p, _)| p.as_path())
    }

    /// The loaded rule `name`.
    pub fn rule(&self, name: &str) -> Option<Arc<Rule>> {
        self.reloader.rules.values().find(|r| r.name == name).cloned()
    }

    /// Number of loaded rules.
    pub fn len(&self) -> usize {
        self.reloader.rules.len()
    }

    /// Compiles `text` as the file `path` would be, with the directory's scripts.
    ///
    /// # Errors
    /// The text's problems, reported against `path`.
    pub fn compile(&self, path: &Path, text: &str) -> Result<Rule, Vec<Diagnostic>> {
        files::compile_rule(path, text, &self.reloader.scripts)
    }

    /// Compiles bare SQL (no header) as `rules test` does, with the directory's scripts.
    ///
    /// # Errors
    /// The SQL's problems, reported against `<sql>`.
    pub fn compile_sql(&self, sql: &str, data_type: DataType) -> Result<Rule, Vec<Diagnostic>> {
        let scripts = &self.reloader.scripts;
        Rule::from_sql(sql, data_type, (!scripts.is_empty()).then_some(scripts))
    }

    /// Applies changes to `paths` and swaps the rule set in force when anything changed.
    /// Returns the problems found.
    pub fn apply(&mut self, paths: &[PathBuf]) -> Vec<Diagnostic> {
        let (changed, diagnostics) = self.reloader.apply_changes(paths);
        if changed {
            self.shared.set(self.reloader.build());
        }
        diagnostics
    }

    /// Every file the watch thread should look at after a missed event: the loaded ones and
    /// those in the directory.
    fn known_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.reloader.rules.keys().cloned().collect();
        if let Ok(entries) = std::fs::read_dir(&self.reloader.dir) {
            paths.extend(entries.filter_map(Result::ok).map(|e| e.path()));
        }
        paths
    }
}

fn has_ext(p: &Path, ext: &str) -> bool {
    p.extension().and_then(|e| e.to_str()) == Some(ext)
}

/// A running directory watch; dropping it stops the watch.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // The watcher is dropped after this body; its channel closing ends the thread, which
        // is not joined here so that drop never blocks on a reload in progress.
        drop(self.thread.take());
    }
}

/// Watches the directory of `live`, applying changes through it (so they interleave safely
/// with [`LiveRules::apply_now`]).
///
/// # Errors
/// The directory cannot be watched.
pub fn watch_live(live: Arc<LiveRules>) -> Result<Watch, WatchError> {
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let dir = live.lock().dir().to_path_buf();
    let mut watcher = notify::recommended_watcher(move |ev| {
        // The receiver is gone only when the watch is being dropped.
        let _ = tx.send(ev);
    })
    .map_err(|source| WatchError::Notify { dir: dir.clone(), source })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError::Notify { dir: dir.clone(), source })?;
    let thread = std::thread::Builder::new()
        .name("rules-watch".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut events = vec![first];
                while let Ok(ev) = rx.recv_timeout(DEBOUNCE) {
                    events.push(ev);
                }
                let mut paths: Vec<PathBuf> = Vec::new();
                let mut rescan = false;
                for ev in events {
                    match ev {
                        Ok(ev) => {
                            rescan |= ev.need_rescan();
                            paths.extend(ev.paths);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "Rules directory watch error; rescanning");
                            rescan = true;
                        }
                    }
                }
                let mut live = live.lock();
                if rescan {
                    // A missed event: treat every known and present file as changed.
                    paths.extend(live.known_paths());
                }
                paths.sort();
                paths.dedup();
                live.apply(&paths);
            }
        })
        .map_err(WatchError::Thread)?;
    Ok(Watch { _watcher: watcher, thread: Some(thread) })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn shareable_between_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SharedRules>();
        assert_send_sync::<LiveRules>();
    }

    fn wait_for(shared: &SharedRules, what: &str, ok: impl Fn(&RuleSet) -> bool) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if ok(&shared.get()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("not within 2 s: {what}");
    }

    #[test]
    fn reload_keeps_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.sql");
        std::fs::write(&a, "SELECT 1 AS v FROM \"/a/+\"").unwrap();
        std::fs::write(dir.path().join("b.sql"), "SELECT 2 AS v FROM \"/b/+\"").unwrap();
        let (reloader, set, diags) = Reloader::load(dir.path());
        assert!(diags.is_empty());
        let shared = Arc::new(SharedRules::new(set));
        let _watch = watch_live(Arc::new(LiveRules::new(reloader, Arc::clone(&shared)))).unwrap();

        std::fs::write(&a, "SELECT 1 AS v FROM \"/a2/+\"").unwrap();
        wait_for(&shared, "change", |s| s.get("a").is_some_and(|r| r.topic_filter() == "/a2/+"));

        std::fs::write(&a, "SELECT FROM nothing").unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(shared.get().get("a").unwrap().topic_filter(), "/a2/+");
        assert!(shared.get().get("b").is_some());

        std::fs::write(dir.path().join("c.sql"), "SELECT 3 AS v FROM \"/c/+\"").unwrap();
        wait_for(&shared, "add", |s| s.get("c").is_some());

        std::fs::remove_file(&a).unwrap();
        wait_for(&shared, "remove", |s| s.get("a").is_none() && s.len() == 2);
    }

    #[test]
    fn apply_now_is_in_force_at_once_and_the_watch_then_finds_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (reloader, set, _) = Reloader::load(dir.path());
        let shared = Arc::new(SharedRules::new(set));
        let live = Arc::new(LiveRules::new(reloader, Arc::clone(&shared)));
        let _watch = watch_live(Arc::clone(&live)).unwrap();
        let a = dir.path().join("a.sql");
        std::fs::write(&a, "SELECT 1 AS v FROM \"/a/+\"").unwrap();
        assert!(live.apply_now(std::slice::from_ref(&a)).is_empty());
        let applied = shared.get();
        assert!(applied.get("a").is_some());
        // The watch's own event for the file comes after the debounce and swaps nothing.
        std::thread::sleep(DEBOUNCE * 3);
        assert!(Arc::ptr_eq(&applied, &shared.get()));
        // Broken files keep their previous version, through either path.
        std::fs::write(&a, "SELECT FROM").unwrap();
        assert_eq!(live.apply_now(std::slice::from_ref(&a)).len(), 1);
        assert!(shared.get().get("a").is_some());
    }

    #[test]
    fn apply_keeps_metrics_and_refuses_name_clashes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.sql");
        std::fs::write(&a, "SELECT 1 FROM \"/a/+\"").unwrap();
        let (mut r, set, _) = Reloader::load(dir.path());
        set.get("a").unwrap().metrics.action(true);
        std::fs::write(&a, "SELECT 2 FROM \"/a/+\"").unwrap();
        let b = dir.path().join("b.sql");
        std::fs::write(&b, "-- name: a\nSELECT 1 FROM \"/b/+\"").unwrap();
        let (set, diags) = r.apply(&[a, b]);
        assert_eq!(set.get("a").unwrap().metrics.snapshot().actions_success, 1);
        assert_eq!(diags.len(), 1);
        assert!(diags[0].message.contains("already used"));
    }
}
