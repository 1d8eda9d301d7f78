//! An iotpipe the load tool starts itself: the given binary serving a generated configuration
//! (the bench product's devices, one access key, the scenario's subscription and rules) on
//! loopback ports the OS picks, with its data in a fresh directory removed afterwards. And the
//! scenario's rules installed through the HTTP API of a server someone else started.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{BenchError, Identity, Route};

/// The admin token of a started server.
pub const TOKEN: &str = "bench-token";

/// Rules loaded beside the bench rule in the `rules-1000` scenario.
pub const FILLER_RULES: usize = 999;

/// The bench rule: a filter every bench payload passes and a projection that keeps `ts` (for the
/// latency) and adds the device name, which also becomes the `tag`.
pub fn bench_rule_sql(product_key: &str) -> String {
    format!(
        "SELECT deviceName() AS dn, temperature, ts, seq FROM \"/{product_key}/+/user/update\" WHERE temperature > 30"
    )
}

/// The bench rule's action.
pub fn bench_rule_action(group: &str) -> String {
    format!("amqp {group} tag=${{dn}}")
}

/// Filler rule `i` of `rules-1000`: the same shape on a topic of the product the devices never
/// publish to, so it is loaded (and indexed) but never matches.
pub fn filler_rule_sql(product_key: &str, i: usize) -> String {
    format!(
        "SELECT deviceName() AS dn, temperature, ts FROM \"/{product_key}/+/user/other{i}\" WHERE temperature > 30"
    )
}

/// (name, SQL, action) of every rule a route needs.
pub fn rules_of(route: Route, id: &Identity) -> Vec<(String, String, String)> {
    let mut rules = Vec::new();
    if matches!(route, Route::Rule | Route::Both | Route::Rules1000) {
        rules.push(("bench_rule".to_string(), bench_rule_sql(&id.product_key), bench_rule_action(&id.group)));
    }
    if route == Route::Rules1000 {
        for i in 0..FILLER_RULES {
            rules.push((
                format!("bench_filler_{i:03}"),
                filler_rule_sql(&id.product_key, i),
                bench_rule_action(&id.group),
            ));
        }
    }
    rules
}

/// `[storage]` options of a started iotpipe beside its data directory (none: its defaults).
#[derive(Debug, Clone, Default)]
pub struct StorageOptions {
    /// `early_delivery = true`.
    pub early_delivery: bool,
    /// `commit_interval_ms`.
    pub commit_interval_ms: Option<u64>,
}

impl StorageOptions {
    fn lines(&self) -> String {
        let mut out = String::new();
        if self.early_delivery {
            out.push_str("early_delivery = true\n");
        }
        if let Some(ms) = self.commit_interval_ms {
            out.push_str(&format!("commit_interval_ms = {ms}\n"));
        }
        out
    }
}

/// The configuration of a started server: `devices` devices named and keyed by the identity's
/// patterns, its access key, DEFAULT_GROUP plus the identity's group, and an upstream
/// subscription when the route has one.
pub fn config_text(
    dir: &Path,
    devices: usize,
    route: Route,
    id: &Identity,
    storage: &StorageOptions,
) -> String {
    let mut c = format!(
        "rules_dir = \"{rules}\"\n\n[mqtt]\nlisten = \"127.0.0.1:0\"\n\n[amqp]\nlisten = \"127.0.0.1:0\"\n\n\
         [http]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"{TOKEN}\"\n\n[storage]\ndir = \"{data}\"\n{interval}\n\
         [[access_keys]]\nid = \"{key}\"\nsecret = \"{secret}\"\n",
        rules = dir.join("rules").display(),
        data = dir.join("data").display(),
        interval = storage.lines(),
        key = id.access_key_id,
        secret = id.access_key_secret,
    );
    if id.group != crate::groups::DEFAULT_GROUP {
        // A fixed name: group names follow a stricter rule than ids (no `-`, at least 4 characters).
        c.push_str(&format!("\n[[consumer_groups]]\nid = \"{}\"\nname = \"bench_group\"\n", id.group));
    }
    c.push_str(&format!("\n[[products]]\nkey = \"{}\"\n", id.product_key));
    for i in id.first_device..id.first_device + devices {
        c.push_str(&format!(
            "[[products.devices]]\nname = \"{}\"\nsecret = \"{}\"\n",
            id.device_name(i),
            id.device_secret(i)
        ));
    }
    if matches!(route, Route::Subscription | Route::Both) {
        c.push_str(&format!(
            "\n[[subscriptions]]\nproduct_key = \"{}\"\nmessage_types = [\"upstream\"]\nconsumer_groups = [\"{}\"]\n",
            id.product_key, id.group
        ));
    }
    c
}

/// A rule file: header comment with the action, then the statement.
fn rule_file(sql: &str, action: &str) -> String {
    format!("-- action: {action}\n{sql}\n")
}

/// The `[cluster]` section of a started node.
#[derive(Debug, Clone)]
pub struct ClusterSection {
    /// NATS server URLs.
    pub nats: Vec<String>,
    /// The deployment's name (prefix of streams and subjects).
    pub name: String,
    /// JetStream replicas.
    pub replicas: usize,
    /// This node's name.
    pub node: String,
}

impl ClusterSection {
    fn text(&self) -> String {
        let nats: Vec<String> = self.nats.iter().map(|u| format!("{u:?}")).collect();
        format!(
            "\n[cluster]\nnats = [{}]\nname = \"{}\"\nreplicas = {}\nnode = \"{}\"\n",
            nats.join(", "),
            self.name,
            self.replicas,
            self.node
        )
    }
}

/// A running iotpipe started by the load tool; stopped (SIGTERM) and its directory removed on
/// drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    dir: PathBuf,
    /// MQTT listener.
    pub mqtt: SocketAddr,
    /// AMQP listener.
    pub amqp: SocketAddr,
    /// HTTP listener.
    pub http: SocketAddr,
}

impl ServerProcess {
    /// Writes the configuration and rules under a new directory in `parent` and starts `binary
    /// serve` on it, a cluster node when `cluster` is given; returns once it printed its
    /// listeners.
    ///
    /// # Errors
    /// The directory cannot be written, the binary does not start, or it exits before listening.
    pub fn start(
        binary: &Path,
        parent: &Path,
        devices: usize,
        route: Route,
        id: &Identity,
        cluster: Option<&ClusterSection>,
        storage: &StorageOptions,
    ) -> Result<Self, BenchError> {
        let dir = parent.join(format!("iotpipe-bench-{}-{}", std::process::id(), super::payload::now_us()));
        let io = |what: &str, e: std::io::Error| BenchError::Server(format!("{what} {}: {e}", dir.display()));
        std::fs::create_dir_all(dir.join("rules")).map_err(|e| io("cannot create", e))?;
        for (name, sql, action) in rules_of(route, id) {
            std::fs::write(dir.join("rules").join(format!("{name}.sql")), rule_file(&sql, &action))
                .map_err(|e| io("cannot write a rule into", e))?;
        }
        let config = dir.join("bench.toml");
        let mut text = config_text(&dir, devices, route, id, storage);
        if let Some(c) = cluster {
            text.push_str(&c.text());
        }
        std::fs::write(&config, text).map_err(|e| io("cannot write", e))?;
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| BenchError::Server(format!("cannot start {}: {e}", binary.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| BenchError::Server("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut mqtt, mut amqp, mut http) = (None, None, None);
        while mqtt.is_none() || amqp.is_none() || http.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                return Err(BenchError::Server(format!(
                    "{} serve exited before listening ({status})",
                    binary.display()
                )));
            };
            let line = line.trim();
            let addr =
                |prefix: &str| line.strip_prefix(prefix).and_then(|a| a.trim().parse::<SocketAddr>().ok());
            mqtt = mqtt.or(addr("MQTT "));
            amqp = amqp.or(addr("AMQP "));
            http = http.or(addr("HTTP "));
        }
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let (Some(mqtt), Some(amqp), Some(http)) = (mqtt, amqp, http) else {
            unreachable!("loop ends when all are set")
        };
        Ok(Self { child, dir, mqtt, amqp, http })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to 10 s (SIGKILL after that).
    ///
    /// # Errors
    /// When the server did not exit cleanly.
    pub fn stop(mut self) -> Result<(), BenchError> {
        let status = self.terminate();
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(BenchError::Server(format!("iotpipe exited with {s} when stopped"))),
            None => Err(BenchError::Server("iotpipe did not stop within 10 s of SIGTERM".into())),
        }
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(s)) = self.child.try_wait() {
            return Some(s);
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        for _ in 0..100 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The HTTP API of a server someone else started, for installing the scenario's rules.
#[derive(Debug, Clone)]
pub struct Api {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Bearer token.
    pub token: String,
}

impl Api {
    /// Creates the route's rules (`POST /api/v1/rules`); returns their names for [`Api::remove`].
    ///
    /// # Errors
    /// A request fails or is refused.
    pub async fn install(&self, route: Route, id: &Identity) -> Result<Vec<String>, BenchError> {
        let client = reqwest::Client::new();
        let mut created = Vec::new();
        for (name, sql, action) in rules_of(route, id) {
            let body = serde_json::json!({"name": name, "sql": sql, "actions": [action],
                "description": "created by iotpipe bench; deleted when it ends"});
            let url = format!("{}/api/v1/rules", self.url);
            let answer = client.post(&url).bearer_auth(&self.token).json(&body).send().await;
            match answer {
                Ok(r) if r.status().is_success() => created.push(name),
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    self.remove(&created).await;
                    return Err(BenchError::Api(format!("POST {url} (rule {name}): HTTP {status}: {text}")));
                }
                Err(e) => {
                    self.remove(&created).await;
                    return Err(BenchError::Api(format!("POST {url}: {e}")));
                }
            }
        }
        Ok(created)
    }

    /// Deletes rules by name; failures are reported on stderr, not fatal.
    pub async fn remove(&self, names: &[String]) {
        let client = reqwest::Client::new();
        for name in names {
            let url = format!("{}/api/v1/rules/{name}", self.url);
            match client.delete(&url).bearer_auth(&self.token).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => eprintln!("warning: DELETE {url}: HTTP {}", r.status()),
                Err(e) => eprintln!("warning: DELETE {url}: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configuration_loads() {
        let id = Identity::default();
        let dir = Path::new("/tmp/x");
        for route in [Route::Subscription, Route::Rule, Route::Both, Route::Rules1000] {
            let text = config_text(dir, 3, route, &id, &StorageOptions::default());
            let config = crate::config::load_str(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.products[0].devices.len(), 3);
            assert_eq!(config.products[0].devices[2].name, "dev00002");
            assert_eq!(
                config.subscriptions.len(),
                usize::from(matches!(route, Route::Subscription | Route::Both))
            );
        }
    }

    #[test]
    fn a_cluster_node_configuration_loads() {
        let section = ClusterSection {
            nats: vec!["nats://127.0.0.1:4222".into(), "nats://127.0.0.1:4223".into()],
            name: "bench1".into(),
            replicas: 3,
            node: "b2".into(),
        };
        let text = format!(
            "{}{}",
            config_text(
                Path::new("/tmp/x"),
                2,
                Route::Rule,
                &Identity::default(),
                &StorageOptions { early_delivery: true, commit_interval_ms: Some(2) }
            ),
            section.text()
        );
        let config = crate::config::load_str(&text, "bench.toml").unwrap_or_else(|e| panic!("{e}"));
        let cluster = config.cluster.expect("a [cluster] section");
        assert_eq!((cluster.nats.len(), cluster.replicas, cluster.node.as_deref()), (2, 3, Some("b2")));
    }

    #[test]
    fn rules_compile_and_the_bench_rule_keeps_the_send_time() {
        let id = Identity::default();
        assert!(rules_of(Route::Subscription, &id).is_empty());
        assert_eq!(rules_of(Route::Rule, &id).len(), 1);
        let all = rules_of(Route::Rules1000, &id);
        assert_eq!(all.len(), 1000);
        for (name, sql, action) in [&all[0], &all[999]] {
            crate::rules::Rule::from_file("bench.sql", name, &rule_file(sql, action), None)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        assert!(all[0].1.contains("ts") && all[0].2 == "amqp DEFAULT_GROUP tag=${dn}");
    }
}
