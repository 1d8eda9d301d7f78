//! The management commands (`groups`, `devices`, `subscriptions`, `rules list|show|...`,
//! `alerts`): the built binary against a real server over HTTP, tables and `--json`, and the
//! one-line errors (server errors, a wrong token, no server).

mod common;

use common::amqp::consumer;
use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_iotpipe");

/// A product without a subscription, and a group that is not DEFAULT_GROUP.
const EXTRA: &str = "\n[[products]]\nkey = \"a1other\"\nname = \"Other\"\n\n[[consumer_groups]]\nid = \"g_cli\"\nname = \"cli_group\"\n";

#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:?}");
        &self.stdout
    }

    fn json(&self) -> Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Exit 1 with exactly one line on stderr; returns it.
    fn failed(&self) -> &str {
        assert_eq!(self.code, Some(1), "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "not one line: {self:?}");
        assert!(self.stderr.starts_with("error: "), "{self:?}");
        self.stderr.trim_end()
    }
}

/// Runs the binary with `args` (no `--server`/`--token` added) and the given environment; the
/// test's own IOTPIPE_* variables are removed.
async fn run_env(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Out {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).env_remove("IOTPIPE_SERVER").env_remove("IOTPIPE_TOKEN").envs(env.iter().copied());
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).await.unwrap();
    drop(input);
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("the CLI hung").unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `iotpipe ARGS --server URL --token test-token` against `server`.
async fn cli(server: &Server, args: &[&str]) -> Out {
    let url = format!("http://{}", server.app.http_addr());
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--server", &url, "--token", "test-token"]);
    run_env(&all, &[], None).await
}

/// The table rows (header dropped) as whitespace-split cells.
fn rows(table: &str) -> Vec<Vec<&str>> {
    table.lines().skip(1).map(|l| l.split_whitespace().collect()).collect()
}

/// The value of `key` in a `key  value` view.
fn field<'a>(view: &'a str, key: &str) -> &'a str {
    view.lines()
        .find_map(|l| l.strip_prefix(key).filter(|rest| rest.starts_with("  ")).map(str::trim))
        .unwrap_or_else(|| panic!("no {key} in:\n{view}"))
}

#[tokio::test]
async fn groups_are_created_listed_watched_cleared_and_deleted() {
    let server = Server::start().await;

    let created = cli(&server, &["groups", "create", "cli_orders"]).await;
    let id = field(created.ok(), "id").to_string();
    assert!(id.starts_with('g') && id.len() == 21, "{created:?}");
    assert_eq!(field(&created.stdout, "name"), "cli_orders");

    let list = cli(&server, &["groups", "list"]).await;
    let header: Vec<&str> = list.ok().lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "NAME"]);
    let listed = rows(&list.stdout);
    assert!(listed.contains(&vec!["DEFAULT_GROUP", "DEFAULT_GROUP"]), "{list:?}");
    assert!(listed.contains(&vec![id.as_str(), "cli_orders"]), "{list:?}");
    // Columns are aligned: every NAME starts where the header's does.
    let col = list.stdout.lines().next().unwrap().find("NAME").unwrap();
    for line in list.stdout.lines().skip(1) {
        assert_eq!(line[col..].trim_start().len(), line[col..].len(), "{line:?} in\n{}", list.stdout);
    }

    let filtered = cli(&server, &["groups", "list", "--name", "ORDERS", "--json"]).await.json();
    assert_eq!(filtered, serde_json::json!([{"id": id, "name": "cli_orders"}]));
    // --json is the server's answer as it came: one line.
    let raw = cli(&server, &["groups", "show", &id, "--json"]).await;
    assert_eq!(raw.ok().lines().count(), 1);
    assert_eq!(raw.json()["name"], "cli_orders");

    // Status with a client online: summary lines, then a table of clients.
    let watcher = consumer(server.app.amqp_addr(), "cli-watcher", &id).await;
    let status = cli(&server, &["groups", "status", &id]).await;
    let text = status.ok();
    assert_eq!(field(text, "group"), id);
    assert_eq!(field(text, "accumulated"), "0");
    assert_eq!(field(text, "online clients"), "1");
    let table: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("CLIENT ID")).collect();
    assert!(table.len() == 2 && table[1].starts_with("cli-watcher  127.0.0.1:"), "{text}");
    let json = cli(&server, &["groups", "status", &id, "--json"]).await.json();
    assert_eq!(json["onlineClients"][0]["clientId"], "cli-watcher");
    watcher.close().await;

    publish_n(server.addr(), "dev1", 2).await;
    let cleared = cli(&server, &["groups", "clear", "DEFAULT_GROUP"]).await;
    // Online, two messages, offline.
    assert_eq!(cleared.ok(), "cleared 4 message(s) from consumer group DEFAULT_GROUP\n");

    let deleted = cli(&server, &["groups", "delete", &id]).await;
    assert_eq!(deleted.ok(), format!("deleted consumer group {id}\n"));
    let gone = cli(&server, &["groups", "show", &id]).await;
    let line = gone.failed();
    assert!(line.contains("HTTP 404 Not Found: NotFound:") && line.contains(&id), "{line}");
    assert!(!cli(&server, &["groups", "list"]).await.ok().contains(&id));
}

#[tokio::test]
async fn a_server_error_is_one_line_with_the_status_code_and_message() {
    let server = Server::start().await;
    let out = cli(&server, &["groups", "delete", "DEFAULT_GROUP"]).await;
    let line = out.failed();
    let url = format!("http://{}/api/v1/consumer-groups/DEFAULT_GROUP", server.app.http_addr());
    // What the server itself says, asked directly.
    let direct: Value = reqwest::Client::new()
        .delete(&url)
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (code, message) = (direct["code"].as_str().unwrap(), direct["message"].as_str().unwrap());
    assert_eq!(line, format!("error: DELETE {url}: HTTP 409 Conflict: {code}: {message}"));
    assert!(message.contains("DEFAULT_GROUP"), "{line}");
    assert!(out.stdout.is_empty());

    let bad = cli(&server, &["groups", "create", "x"]).await;
    assert!(bad.failed().contains("HTTP 400 Bad Request: InvalidName:"), "{bad:?}");
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_reported_and_never_printed() {
    let server = Server::start().await;
    let url = format!("http://{}", server.app.http_addr());
    let wrong = run_env(&["groups", "list", "--server", &url, "--token", "s3cret-wrong"], &[], None).await;
    let line = wrong.failed();
    assert!(line.contains("HTTP 401 Unauthorized: Unauthorized:"), "{line}");
    assert!(!line.contains("s3cret-wrong") && !wrong.stdout.contains("s3cret-wrong"));

    let missing = run_env(&["groups", "list", "--server", &url], &[], None).await;
    assert!(missing.failed().contains("no token given: use --token or IOTPIPE_TOKEN"), "{missing:?}");

    // The environment works as well as the flags.
    let env =
        run_env(&["groups", "list"], &[("IOTPIPE_SERVER", &url), ("IOTPIPE_TOKEN", "test-token")], None)
            .await;
    assert!(env.ok().contains("DEFAULT_GROUP"));
    let help = run_env(&["groups", "--help"], &[("IOTPIPE_TOKEN", "s3cret-env")], None).await;
    assert!(help.ok().contains("--token") && !help.stdout.contains("s3cret-env"), "{help:?}");
}

#[tokio::test]
async fn an_unreachable_server_is_one_line() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = run_env(&["devices", "products", "--server", &url, "--token", "t"], &[], None).await;
    let line = out.failed();
    assert!(line.starts_with(&format!("error: cannot reach the iotpipe server at {url}/: ")), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");

    let bad = run_env(&["groups", "list", "--server", "ftp://h"], &[], None).await;
    assert!(bad.failed().contains("--server \"ftp://h\""), "{bad:?}");
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        &["groups"][..],
        &["groups", "show"],
        &["subscriptions", "update", "a1test"],
        &["subscriptions", "create", "a1test", "--types", "upstream"],
        &["devices", "create", "a1test"],
        &["alerts", "create"],
    ] {
        let out = run_env(args, &[], None).await;
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
    }
}

#[tokio::test]
async fn devices_are_created_disabled_listed_and_deleted() {
    let server = Server::start().await;
    let products = cli(&server, &["devices", "products"]).await;
    assert!(
        rows(products.ok()).contains(&vec!["a1test", "Test", "product", "CustomCategory"]),
        "{products:?}"
    );

    let created = cli(&server, &["devices", "create", "a1test", "cli-dev1", "--tag", "room=lab"]).await;
    let secret = field(created.ok(), "deviceSecret");
    assert_eq!(secret.len(), 32, "{created:?}");
    assert_eq!(field(&created.stdout, "tags"), "room=lab");
    assert!(created.stderr.contains("only once"), "{created:?}");
    let given = cli(&server, &["devices", "create", "a1test", "cli-dev2", "--secret", "my-secret", "--json"])
        .await
        .json();
    assert_eq!(given["deviceSecret"], "my-secret");

    let disabled = cli(&server, &["devices", "disable", "a1test", "cli-dev1"]).await;
    assert_eq!(disabled.ok(), "disabled device a1test/cli-dev1\n");
    let list = cli(&server, &["devices", "list", "a1test"]).await;
    let listed = rows(list.ok());
    let iot_id = field(&created.stdout, "iotId");
    assert_eq!(iot_id.len(), 26, "{created:?}");
    assert!(listed.contains(&vec!["cli-dev1", iot_id, "false", "room=lab"]), "{list:?}");
    assert!(listed.iter().any(|r| r[0] == "cli-dev2" && r[2..] == ["true", "-"]), "{list:?}");
    assert!(!list.stdout.contains(secret) && !list.stdout.contains("my-secret"));
    let json = cli(&server, &["devices", "list", "a1test", "--json"]).await.json();
    assert!(json.as_array().unwrap().iter().any(|d| d["deviceName"] == "cli-dev1" && d["enabled"] == false));

    let shown = cli(&server, &["devices", "enable", "a1test", "cli-dev1"]).await;
    assert_eq!(shown.ok(), "enabled device a1test/cli-dev1\n");
    assert_eq!(field(cli(&server, &["devices", "show", "a1test", "cli-dev1"]).await.ok(), "enabled"), "true");

    let tagged =
        cli(&server, &["devices", "tags", "a1test", "cli-dev1", "--set", "floor=2", "--remove", "room"])
            .await;
    assert_eq!(field(tagged.ok(), "tags"), "floor=2", "{tagged:?}");
    let replaced =
        cli(&server, &["devices", "tags", "a1test", "cli-dev1", "--set", "a=b", "--replace", "--json"])
            .await
            .json();
    assert_eq!(replaced["tags"], serde_json::json!({"a": "b"}));
    let bad = cli(&server, &["devices", "tags", "a1test", "cli-dev1", "--set", "novalue"]).await;
    assert!(bad.failed().contains("write key=value"), "{bad:?}");

    assert!(cli(&server, &["devices", "delete", "a1test", "cli-dev2"]).await.ok().starts_with("deleted"));
    let gone = cli(&server, &["devices", "show", "a1test", "cli-dev2"]).await;
    assert!(gone.failed().contains("HTTP 404"), "{gone:?}");
    let dup = cli(&server, &["devices", "create", "a1test", "cli-dev1"]).await;
    assert!(dup.failed().contains("HTTP 409 Conflict: DeviceExists:"), "{dup:?}");
}

#[tokio::test]
async fn subscriptions_are_created_changed_and_deleted() {
    let server = Server::start_with("", EXTRA).await;
    let list = cli(&server, &["subscriptions", "list"]).await;
    let listed = rows(list.ok());
    assert_eq!(listed, vec![vec!["a1test", "upstream,status,lifecycle", "DEFAULT_GROUP"]], "{list:?}");

    let created = cli(
        &server,
        &[
            "subscriptions",
            "create",
            "a1other",
            "--types",
            "upstream,status",
            "--groups",
            "DEFAULT_GROUP,g_cli",
        ],
    )
    .await;
    assert_eq!(field(created.ok(), "messageTypes"), "upstream,status");
    assert_eq!(field(&created.stdout, "consumerGroupIds"), "DEFAULT_GROUP,g_cli");

    // An option left out keeps its value.
    let updated = cli(&server, &["subscriptions", "update", "a1other", "--types", "lifecycle"]).await;
    assert_eq!(field(updated.ok(), "messageTypes"), "lifecycle");
    assert_eq!(field(&updated.stdout, "consumerGroupIds"), "DEFAULT_GROUP,g_cli");

    let out = cli(&server, &["subscriptions", "unsubscribe", "a1other", "g_cli"]).await;
    assert_eq!(field(out.ok(), "consumerGroupIds"), "DEFAULT_GROUP");
    let shown = cli(&server, &["subscriptions", "show", "a1other", "--json"]).await.json();
    assert_eq!(shown["consumerGroupIds"], serde_json::json!(["DEFAULT_GROUP"]));

    let last = cli(&server, &["subscriptions", "unsubscribe", "a1other", "DEFAULT_GROUP"]).await;
    assert!(last.failed().contains("HTTP 409 Conflict: LastConsumerGroup:"), "{last:?}");
    let bad =
        cli(&server, &["subscriptions", "create", "a1other", "--types", "upstream", "--groups", "nope"])
            .await;
    assert!(bad.failed().contains("HTTP 409") || bad.stderr.contains("HTTP 400"), "{bad:?}");

    let deleted = cli(&server, &["subscriptions", "delete", "a1other"]).await;
    assert_eq!(deleted.ok(), "deleted the subscription of a1other\n");
    let json = cli(&server, &["subscriptions", "list", "--json"]).await.json();
    assert_eq!(json.as_array().unwrap().len(), 1);
}

const RULE: &str = "-- name: cli_hot\n-- description: Hot readings.\n-- action: amqp g_cli tag=${dn}\n\
                    SELECT temperature AS t, deviceName() AS dn FROM \"/a1other/+/user/update\" WHERE temperature > 38\n";

#[tokio::test]
async fn rules_are_managed_on_a_running_server() {
    let server = Server::start_with("", EXTRA).await;
    let file = server.dir.path().join("cli_hot.sql");
    std::fs::write(&file, RULE).unwrap();
    let file = file.to_str().unwrap();

    let created = cli(&server, &["rules", "create", "--file", file]).await;
    assert_eq!(field(created.ok(), "name"), "cli_hot");
    assert!(created.stdout.contains("WHERE temperature > 38"), "{created:?}");
    let list = cli(&server, &["rules", "list"]).await;
    let header: Vec<&str> = list.ok().lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ENABLED", "DATA", "TYPE", "ACTIONS", "DESCRIPTION"]);
    let row = rows(&list.stdout).into_iter().find(|r| r[0] == "cli_hot").expect("cli_hot listed");
    assert_eq!(&row[1..], ["true", "json", "amqp", "g_cli", "tag=${dn}", "Hot", "readings."]);

    let hit = cli(
        &server,
        &[
            "rules",
            "try",
            "cli_hot",
            "--topic",
            "/a1other/d1/user/update",
            "--payload",
            r#"{"temperature":40}"#,
        ],
    )
    .await;
    assert_eq!(serde_json::from_str::<Value>(hit.ok()).unwrap(), serde_json::json!({"t": 40, "dn": "d1"}));
    let miss = cli(
        &server,
        &[
            "rules",
            "try",
            "cli_hot",
            "--topic",
            "/a1other/d1/user/update",
            "--payload",
            r#"{"temperature":20}"#,
        ],
    )
    .await;
    assert_eq!((miss.code, miss.stdout.as_str()), (Some(3), "no match\n"), "{miss:?}");
    assert!(miss.stderr.contains("WHERE"), "{miss:?}");

    // A subscription that overlaps the rule is accepted with a warning on stderr.
    let sub =
        cli(&server, &["subscriptions", "create", "a1other", "--types", "upstream", "--groups", "g_cli"])
            .await;
    assert_eq!(sub.code, Some(0), "{sub:?}");
    assert!(sub.stderr.lines().any(|l| l.starts_with("warning: ")), "{sub:?}");

    assert_eq!(cli(&server, &["rules", "disable", "cli_hot"]).await.ok(), "disabled rule cli_hot\n");
    let shown = cli(&server, &["rules", "show", "cli_hot", "--json"]).await.json();
    assert_eq!(shown["enabled"], false);
    assert_eq!(cli(&server, &["rules", "enable", "cli_hot"]).await.ok(), "enabled rule cli_hot\n");

    std::fs::write(server.dir.path().join("cli_hot.sql"), RULE.replace("> 38", "> 10")).unwrap();
    let updated = cli(&server, &["rules", "update", "--file", file]).await;
    assert!(updated.ok().contains("WHERE temperature > 10"), "{updated:?}");
    let from_stdin = run_env(
        &["rules", "create", "--file", "-", "--server", &format!("http://{}", server.app.http_addr())],
        &[("IOTPIPE_TOKEN", "test-token")],
        Some(&RULE.replace("cli_hot", "cli_hot2")),
    )
    .await;
    assert_eq!(field(from_stdin.ok(), "name"), "cli_hot2");

    // A rule the server does not compile is reported at the file's own line.
    let broken = server.dir.path().join("broken.sql");
    std::fs::write(
        &broken,
        "-- name: broken\n-- action: amqp g_cli\n\nSELECT t\nFROM \"/a1other/+/user/update\" WHERE t >\n",
    )
    .unwrap();
    let out = cli(&server, &["rules", "create", "--file", broken.to_str().unwrap()]).await;
    let line = out.failed();
    assert!(line.contains(": HTTP 400 Bad Request: InvalidRule: the rule does not compile: "), "{line}");
    assert!(line.contains("broken.sql:5:"), "{line}");

    assert_eq!(cli(&server, &["rules", "delete", "cli_hot"]).await.ok(), "deleted rule cli_hot\n");
    let gone = cli(&server, &["rules", "show", "cli_hot"]).await;
    assert!(gone.failed().contains("HTTP 404"), "{gone:?}");
}

#[tokio::test]
async fn a_bad_rule_file_is_reported_without_a_request() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.sql");
    std::fs::write(&file, "-- name: bad\n-- acton: amqp G\nSELECT 1 FROM \"/a\"\n").unwrap();
    // Port 1: nothing listens, so a request would fail differently.
    let out =
        run_env(&["rules", "create", "--file", file.to_str().unwrap(), "--server", "127.0.0.1:1"], &[], None)
            .await;
    let line = out.failed();
    assert!(line.contains("bad.sql:2: unknown header key \"acton\""), "{line}");
    // A header the server refuses in a file is refused by the CLI too (it reads headers with the
    // server's reader): here two error actions, of which the CLI once sent the last.
    let twice = dir.path().join("twice.sql");
    std::fs::write(&twice, "-- error_action: amqp E\n-- error_action: amqp F\nSELECT 1 FROM \"/a\"\n")
        .unwrap();
    let twice = twice.to_str().unwrap();
    let out = run_env(&["rules", "create", "--file", twice, "--server", "127.0.0.1:1"], &[], None).await;
    assert!(out.failed().contains("twice.sql:2: a rule has at most one error_action"), "{out:?}");
    let checked = run_env(&["rules", "check", twice], &[], None).await;
    assert_eq!(checked.code, Some(1), "{checked:?}");
    assert!(checked.stderr.contains("twice.sql:2:4: a rule has at most one error_action"), "{checked:?}");
    let missing = run_env(&["rules", "create", "--file", "/nonexistent/r.sql"], &[], None).await;
    assert!(missing.failed().contains("/nonexistent/r.sql"), "{missing:?}");
}

#[tokio::test]
async fn the_offline_rules_commands_need_no_server() {
    let out = run_env(
        &[
            "rules",
            "test",
            "--sql",
            "SELECT t FROM \"/a/+/user/x\"",
            "--topic",
            "/a/d/user/x",
            "--payload",
            "{\"t\":1}",
        ],
        &[("IOTPIPE_SERVER", "http://127.0.0.1:1")],
        None,
    )
    .await;
    assert_eq!(out.ok(), "{\"t\":1}\n");
}

const ALERT: &str = r#"{"name": "backlog_high", "consumerGroupIds": ["DEFAULT_GROUP"], "metric": "accumulatedCount",
 "comparison": ">", "threshold": 1000, "periodSeconds": 300, "consecutivePeriods": 3, "muteSeconds": 3600,
 "effective": {"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "00:00", "end": "23:59"},
 "callbackUrl": "http://127.0.0.1:9/alert"}"#;

#[tokio::test]
async fn alert_rules_are_managed_on_a_running_server() {
    let server = Server::start().await;
    let file = server.dir.path().join("alert.json");
    std::fs::write(&file, ALERT).unwrap();
    let file = file.to_str().unwrap();

    let created = cli(&server, &["alerts", "create", "--file", file, "--json"]).await.json();
    let id = created["id"].as_str().map_or_else(|| created["id"].to_string(), str::to_string);
    let list = cli(&server, &["alerts", "list"]).await;
    let header: Vec<&str> = list.ok().lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["ID", "NAME", "METRIC", "CONDITION", "PERIOD", "(S)", "CONSECUTIVE", "GROUPS"]);
    assert_eq!(
        rows(&list.stdout),
        vec![vec![id.as_str(), "backlog_high", "accumulatedCount", ">", "1000", "300", "3", "DEFAULT_GROUP"]]
    );
    let shown = cli(&server, &["alerts", "show", &id]).await;
    assert_eq!(field(shown.ok(), "effective"), "mon,tue,wed,thu,fri,sat,sun 00:00-23:59");

    std::fs::write(server.dir.path().join("alert.json"), ALERT.replace("1000", "5")).unwrap();
    let updated = cli(&server, &["alerts", "update", &id, "--file", file]).await;
    assert_eq!(field(updated.ok(), "threshold"), "5");

    let broken = server.dir.path().join("broken.json");
    std::fs::write(&broken, "{\"name\": }").unwrap();
    let bad = cli(&server, &["alerts", "create", "--file", broken.to_str().unwrap()]).await;
    assert!(
        bad.failed().contains("broken.json: not valid JSON: expected value at line 1 column 10"),
        "{bad:?}"
    );

    assert_eq!(cli(&server, &["alerts", "delete", &id]).await.ok(), format!("deleted alert rule {id}\n"));
    let json = cli(&server, &["alerts", "list", "--json"]).await.json();
    assert_eq!(json, serde_json::json!([]));
}

#[tokio::test]
async fn groups_dead_letters_are_listed_requeued_and_purged() {
    let server = Server::start().await;
    let mut c = consumer(server.app.amqp_addr(), "c", "DEFAULT_GROUP").await;
    publish_one(server.addr(), "dev1", "{}").await;
    loop {
        let d = c.next().await;
        if common::amqp::read(&d).topic.ends_with("/user/update") {
            c.receiver.reject(&d, None).await.unwrap();
            break;
        }
        c.accept(&d).await;
    }
    let group = server.app.groups().get("DEFAULT_GROUP").unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let listed = loop {
        let out = cli(&server, &["groups", "dead-letters", "list", "DEFAULT_GROUP"]).await;
        let listed = out.ok().to_string();
        if rows(&listed).len() == 1 {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "not listed:\n{listed}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(listed.contains("/a1test/dev1/user/update"), "{listed}");
    assert_eq!(group.status().dead_letters, 1);
    let status = cli(&server, &["groups", "status", "DEFAULT_GROUP"]).await;
    assert_eq!(field(status.ok(), "dead letters"), "1");
    let requeued = cli(&server, &["groups", "dead-letters", "requeue", "DEFAULT_GROUP"]).await;
    assert!(requeued.ok().contains("re-queued 1 dead letter(s)"), "{requeued:?}");
    assert_eq!(group.status().dead_letters, 0);
    let purged = cli(&server, &["groups", "dead-letters", "purge", "DEFAULT_GROUP", "--json"]).await.json();
    assert_eq!(purged["purged"], 0);
}
