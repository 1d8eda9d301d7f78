//! Alert rules over real sockets: the API, the configuration, and notifications POSTed to a
//! callback receiver on an ephemeral port.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::Json;
use common::api::{get, post, send as call, url};
use common::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// One POST the receiver got: path (without the leading `/`), body, when.
type Post = (String, Value, Instant);

/// An HTTP server recording every POST; paths starting with `fail` answer 500, others 200.
struct Receiver {
    addr: SocketAddr,
    rx: mpsc::UnboundedReceiver<Post>,
}

impl Receiver {
    async fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Post>();
        let app = axum::Router::new().route(
            "/{*path}",
            axum::routing::post(move |Path(path): Path<String>, Json(body): Json<Value>| {
                let tx = tx.clone();
                async move {
                    let failing = path.starts_with("fail");
                    let _ = tx.send((path, body, Instant::now()));
                    if failing {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, rx }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    async fn next(&mut self) -> Post {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("no callback in time")
            .expect("receiver alive")
    }

    /// Everything received so far, without waiting.
    fn received(&mut self) -> Vec<Post> {
        let mut out = Vec::new();
        while let Ok(p) = self.rx.try_recv() {
            out.push(p);
        }
        out
    }
}

/// A rule body: one-second periods, DEFAULT_GROUP, backlog above `threshold`.
fn rule(name: &str, callback: &str, consecutive: u32, mute: u64, threshold: u64) -> Value {
    json!({
        "name": name,
        "consumerGroupIds": ["DEFAULT_GROUP"],
        "metric": "accumulatedCount",
        "comparison": ">",
        "threshold": threshold,
        "periodSeconds": 1,
        "consecutivePeriods": consecutive,
        "muteSeconds": mute,
        "effective": {"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "00:00", "end": "23:59"},
        "callbackUrl": callback
    })
}

async fn create(server: &Server, body: &Value) -> String {
    let (status, created) = post(server, "/alert-rules", body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_string()
}

/// Polls `GET /alert-rules/{id}` until `pred` holds.
async fn rule_until(server: &Server, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, v) = get(server, &format!("/alert-rules/{id}")).await;
        assert_eq!(status, 200, "{v}");
        if pred(&v) {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: rule stayed {v:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn group_status<'a>(rule: &'a Value, group: &str) -> Option<&'a Value> {
    rule["status"].as_array()?.iter().find(|s| s["groupId"] == group)
}

fn consecutive(rule: &Value, group: &str) -> u64 {
    group_status(rule, group).and_then(|s| s["consecutive"].as_u64()).unwrap_or(0)
}

#[tokio::test]
async fn fires_after_exactly_n_periods_keeps_quiet_while_muted_and_resolves_after_a_clear() {
    let server = Server::start().await;
    let mut receiver = Receiver::start().await;
    // Online status + 3 messages (+ offline status) wait in DEFAULT_GROUP: above 2.
    publish_n(server.addr(), "dev1", 3).await;

    let before = iotpipe::message::now_ms();
    let id = create(&server, &rule("backlog", &receiver.url("ok/backlog"), 3, 3600, 2)).await;

    let (path, firing, _) = receiver.next().await;
    assert_eq!(path, "ok/backlog");
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["consecutive"], 3, "fires at the third period exactly: {firing}");
    assert_eq!(firing["rule"], "backlog");
    assert_eq!(firing["ruleId"], id.as_str());
    assert_eq!(firing["groupId"], "DEFAULT_GROUP");
    assert_eq!(firing["metric"], "accumulatedCount");
    assert_eq!(firing["threshold"], 2);
    assert!(firing["value"].as_u64().unwrap() >= 4, "{firing}");
    // Three one-second periods passed before it; none of the earlier two sent anything.
    let time = firing["time"].as_u64().unwrap();
    assert!(time >= before + 2990, "fired {} ms after the rule was created", time - before);

    // Muted: three more firing periods pass without a notification.
    let v = rule_until(&server, &id, "three more periods", |v| consecutive(v, "DEFAULT_GROUP") >= 6).await;
    assert_eq!(group_status(&v, "DEFAULT_GROUP").unwrap()["state"], "firing");
    assert_eq!(group_status(&v, "DEFAULT_GROUP").unwrap()["lastNotifiedAt"], time);
    assert!(receiver.received().is_empty(), "a repeat came through the mute");
    let history = v["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{v:#}");
    assert_eq!(history[0]["consecutive"], 3);
    assert_eq!(history[0]["delivery"], "sent");
    assert_eq!(history[0]["attempts"], 1);
    assert_eq!(v["delivery"]["sent"], 1);

    // Recovery.
    let (status, _) = post(&server, "/consumer-groups/DEFAULT_GROUP/clear", &json!({})).await;
    assert_eq!(status, 200);
    let (path, resolved, _) = receiver.next().await;
    assert_eq!(path, "ok/backlog");
    assert_eq!(resolved["state"], "resolved");
    assert_eq!(resolved["value"], 0);
    assert_eq!(resolved["consecutive"], 0);
    let v = rule_until(&server, &id, "resolved delivered", |v| v["delivery"]["sent"] == 2).await;
    assert_eq!(group_status(&v, "DEFAULT_GROUP").unwrap()["state"], "ok");
    assert_eq!(v["delivery"]["firing"], 1);
    assert_eq!(v["delivery"]["resolved"], 1);
}

#[tokio::test]
async fn a_repeat_comes_once_the_mute_has_passed() {
    let server = Server::start().await;
    let mut receiver = Receiver::start().await;
    publish_n(server.addr(), "dev1", 1).await;
    create(&server, &rule("repeat", &receiver.url("ok/repeat"), 1, 2, 0)).await;
    let (_, first, _) = receiver.next().await;
    let (_, second, _) = receiver.next().await;
    assert_eq!((first["state"].as_str(), second["state"].as_str()), (Some("firing"), Some("firing")));
    assert_eq!(first["consecutive"], 1);
    let gap = second["time"].as_u64().unwrap() - first["time"].as_u64().unwrap();
    assert!(gap >= 2000, "repeated after {gap} ms, inside the 2 s mute");
    // Periods 2 (1 s after the first) is muted; 3 or, with a late timer, 4 repeats.
    let n = second["consecutive"].as_u64().unwrap();
    assert!((3..=4).contains(&n), "{second}");
}

#[tokio::test]
async fn nothing_is_sent_outside_the_effective_period() {
    use chrono::Timelike;
    let server = Server::start().await;
    let mut receiver = Receiver::start().await;
    publish_n(server.addr(), "dev1", 1).await;

    // A window two to three hours from now, every day: now is outside it.
    let now = chrono::Local::now();
    let minute = now.hour() * 60 + now.minute();
    let hhmm = |m: u32| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let mut outside = rule("night_shift", &receiver.url("ok/outside"), 1, 0, 0);
    outside["effective"] = json!({"start": hhmm(minute + 120), "end": hhmm(minute + 180)});
    let outside_id = create(&server, &outside).await;
    // The same rule without a window, as the witness that evaluations happen.
    let inside_id = create(&server, &rule("always", &receiver.url("ok/inside"), 1, 0, 0)).await;

    let v =
        rule_until(&server, &outside_id, "three firing periods", |v| consecutive(v, "DEFAULT_GROUP") >= 3)
            .await;
    assert_eq!(group_status(&v, "DEFAULT_GROUP").unwrap()["state"], "firing");
    assert_eq!(group_status(&v, "DEFAULT_GROUP").unwrap()["lastNotifiedAt"], Value::Null);
    assert_eq!(v["history"], json!([]));
    assert_eq!(v["effective"]["days"].as_array().unwrap().len(), 7, "days default to every day");

    let inside =
        rule_until(&server, &inside_id, "notifications sent", |v| v["delivery"]["sent"].as_u64() >= Some(2))
            .await;
    assert!(inside["history"].as_array().unwrap().len() >= 2);
    let posts = receiver.received();
    assert!(posts.iter().any(|(p, _, _)| p == "ok/inside"));
    assert!(posts.iter().all(|(p, _, _)| p != "ok/outside"), "sent outside the window: {posts:?}");
}

#[tokio::test]
async fn a_failing_callback_is_retried_with_backoff_and_counted() {
    let server = Server::start().await;
    let mut receiver = Receiver::start().await;
    publish_n(server.addr(), "dev1", 1).await;
    let id = create(&server, &rule("unreachable", &receiver.url("fail/hook"), 1, 3600, 0)).await;

    let mut posts = Vec::new();
    for _ in 0..4 {
        posts.push(receiver.next().await);
    }
    assert!(
        posts.iter().all(|(p, body, _)| p == "fail/hook" && *body == posts[0].1),
        "the same notification each time"
    );
    // 0.5 s, 1 s, 2 s apart (the first retry waits 0.5 s, each next one twice as long).
    let gaps: Vec<Duration> = posts.windows(2).map(|w| w[1].2 - w[0].2).collect();
    for (gap, at_least) in gaps.iter().zip([450, 950, 1950]) {
        assert!(*gap >= Duration::from_millis(at_least), "gaps {gaps:?}");
    }
    let v = rule_until(&server, &id, "given up", |v| v["delivery"]["failed"] == 1).await;
    assert_eq!(v["delivery"]["retries"], 3);
    assert_eq!(v["delivery"]["sent"], 0);
    assert_eq!(v["history"][0]["delivery"], "failed");
    assert_eq!(v["history"][0]["attempts"], 4);
    assert!(receiver.received().is_empty(), "tried more than 4 times");

    let text = reqwest::get(format!("http://{}/metrics", server.app.http_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("iotpipe_alert_callback_failures_total{rule=\"unreachable\"} 1\n"), "{text}");
    assert!(text.contains("iotpipe_alert_callback_retries_total{rule=\"unreachable\"} 3\n"), "{text}");
}

#[tokio::test]
async fn the_api_validates_names_fields_and_keeps_rules_across_restarts() {
    let receiver = Receiver::start().await;
    let hook = receiver.url("ok/x");
    let config = format!(
        "[[consumer_groups]]\nid = \"g_alerts\"\nname = \"alerts_group\"\n\
         [[alert_rules]]\nname = \"from_config\"\nmetric = \"consumptionRate\"\ncomparison = \"<\"\n\
         threshold = 1\nperiod_seconds = 300\ncallback_url = \"{hook}\"\n"
    );
    let server = Server::start_with("", &config).await;

    // Field problems, each naming the field.
    let mut bad = rule("x", &hook, 0, 0, 1);
    bad["metric"] = json!("backlog");
    bad["effective"]["start"] = json!("7:00");
    let (status, e) = post(&server, "/alert-rules", &bad).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("InvalidAlertRule")), "{e}");
    let message = e["message"].as_str().unwrap();
    for field in ["metric", "consecutivePeriods", "effective.start"] {
        assert!(message.contains(field), "{message}");
    }
    let mut unknown = rule("x", &hook, 1, 0, 1);
    unknown["consumerGroupIds"] = json!(["DEFAULT_GROUP", "nope"]);
    let (status, e) = post(&server, "/alert-rules", &unknown).await;
    assert_eq!(status, 400);
    assert!(
        e["message"].as_str().unwrap().contains("consumerGroupIds[1]: consumer group nope does not exist"),
        "{e}"
    );
    let mut extra = rule("x", &hook, 1, 0, 1);
    extra["severity"] = json!("high");
    let (status, e) = post(&server, "/alert-rules", &extra).await;
    assert_eq!((status, e["code"].as_str()), (400, Some("InvalidBody")));
    assert!(e["message"].as_str().unwrap().contains("severity"), "{e}");
    let mut negative = rule("x", &hook, 1, 0, 1);
    negative["muteSeconds"] = json!(-1);
    let (status, e) = post(&server, "/alert-rules", &negative).await;
    assert_eq!(status, 400);
    assert!(e["message"].as_str().unwrap().contains("muteSeconds"), "{e}");
    let (status, e) = post(&server, "/alert-rules", &rule("from_config", &hook, 1, 0, 1)).await;
    assert_eq!((status, e["code"].as_str()), (409, Some("NameTaken")));

    // Create (every group: no list), view, replace.
    let mut all = rule("all_groups", &hook, 2, 60, 1_000_000);
    all.as_object_mut().unwrap().remove("consumerGroupIds");
    let id = create(&server, &all).await;
    assert!(id.starts_with('a') && id.len() == 21, "{id}");
    let (_, list) = get(&server, "/alert-rules").await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"from_config") && names.contains(&"all_groups"));
    let v = rule_until(&server, &id, "both groups evaluated", |v| {
        v["status"].as_array().is_some_and(|s| s.len() == 2)
    })
    .await;
    assert_eq!(v["consumerGroupIds"], json!([]));
    assert_eq!(v["source"], "api");
    assert_eq!(group_status(&v, "g_alerts").unwrap()["state"], "ok");
    assert_eq!(group_status(&v, "g_alerts").unwrap()["lastValue"], 0);

    let mut changed = all.clone();
    changed["threshold"] = json!(7.5);
    let (status, v) =
        call(reqwest::Client::new().put(url(&server, &format!("/alert-rules/{id}"))).json(&changed)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["threshold"], 7.5);
    assert_eq!(v["id"], id.as_str());

    // The configured rule cannot be changed or deleted through the API.
    let (status, e) = call(reqwest::Client::new().delete(url(&server, "/alert-rules/from_config"))).await;
    assert_eq!((status, e["code"].as_str()), (409, Some("Protected")));
    let (status, _) =
        call(reqwest::Client::new().put(url(&server, "/alert-rules/from_config")).json(&changed)).await;
    assert_eq!(status, 409);

    // Both come back after a restart; a deleted one stays deleted.
    let doomed = create(&server, &rule("doomed", &hook, 1, 0, 1_000_000)).await;
    let (status, _) =
        call(reqwest::Client::new().delete(url(&server, &format!("/alert-rules/{doomed}")))).await;
    assert_eq!(status, 204);
    let server = server.restart().await;
    let (status, v) = get(&server, &format!("/alert-rules/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(v["threshold"], 7.5);
    let (_, v) = get(&server, "/alert-rules/from_config").await;
    assert_eq!(v["source"], "config");
    assert_eq!(v["threshold"], 1, "whole thresholds read back as integers: {v}");
    assert_eq!(v["periodSeconds"], 300);
    assert_eq!(v["muteSeconds"], 86400, "default mute");
    let (status, e) = get(&server, &format!("/alert-rules/{doomed}")).await;
    assert_eq!((status, e["code"].as_str()), (404, Some("NotFound")));
    let resp =
        reqwest::Client::new().get(url(&server, "/alert-rules")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[test]
fn the_example_configuration_declares_a_valid_alert_rule() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/iotpipe.example.toml");
    let config = iotpipe::config::load_file(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    let rule = &config.alert_rules[0];
    assert_eq!((rule.name.as_str(), rule.period_seconds, rule.consecutive_periods), ("backlog_high", 300, 3));
    let body = iotpipe::alerts::model::AlertRuleBody::from(rule);
    let rule = body.validate().unwrap();
    assert_eq!(rule.effective.days, 0b0001_1111);
}
