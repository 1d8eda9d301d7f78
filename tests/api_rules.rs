//! Rules through the HTTP API over real sockets: a rule written through the API is in force when
//! the API answers (no waiting for the directory watch), is an ordinary rule file on disk, and
//! survives a restart; refusals name what is wrong.

mod common;

use common::amqp::{consumer, read, Consumer};
use common::api::{get, post, send, url};
use common::*;
use serde_json::{json, Value};

const GROUP: &str = "[[consumer_groups]]\nid = \"g_rules\"\nname = \"rules_group\"\n";
const HOT: &str =
    r#"SELECT temperature AS t, deviceName() AS dn FROM "/a1test/+/user/update" WHERE temperature > 38"#;

/// The next message of the consumer, accepted: (body, tag).
async fn next(c: &mut Consumer) -> (Value, Option<String>) {
    let d = c.next().await;
    c.accept(&d).await;
    let r = read(&d);
    (serde_json::from_slice(&r.body).unwrap(), r.tag)
}

fn hot_rule() -> Value {
    json!({
        "name": "hot",
        "description": "Readings above 38 degrees",
        "sql": HOT,
        "actions": ["amqp g_rules tag=${dn}"],
    })
}

#[tokio::test]
async fn a_rule_written_through_the_api_is_in_force_when_the_api_answers() {
    let server = Server::start_with("", GROUP).await;
    let client = reqwest::Client::new();
    let mut c = consumer(server.app.amqp_addr(), "rules-api", "g_rules").await;

    let (status, created) = post(&server, "/rules", &hot_rule()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "hot");
    assert_eq!(created["description"], "Readings above 38 degrees");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["dataType"], "json");
    assert_eq!(created["sql"], format!("{HOT}\n"));
    assert_eq!(created["actions"], json!(["amqp g_rules tag=${dn}"]));
    assert_eq!(created["errorAction"], Value::Null);
    assert_eq!(created["file"], "hot.sql");
    assert_eq!(created["metrics"]["matched"], 0);
    // The harness subscribes a1test's upstream messages to DEFAULT_GROUP: the same data, twice.
    let warnings = created["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{created}");
    assert!(warnings[0].as_str().unwrap().contains("subscription of product a1test"), "{created}");

    // An ordinary rule file: header lines, then the SQL; `iotpipe rules check` accepts it.
    let file = server.dir.path().join("rules/hot.sql");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text,
        format!(
            "-- name: hot\n-- description: Readings above 38 degrees\n-- enabled: true\n-- data_type: json\n\
             -- action: amqp g_rules tag=${{dn}}\n{HOT}\n"
        )
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_iotpipe"))
        .args(["rules", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let (status, list) = get(&server, "/rules").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "hot");
    let (status, one) = get(&server, "/rules/hot").await;
    assert_eq!(status, 200);
    assert_eq!(one["actions"], created["actions"]);
    assert!(one.get("warnings").is_none(), "warnings come with writes: {one}");

    // In force at once: no waiting for the directory watch.
    publish_one(server.addr(), "dev1", r#"{"temperature":40}"#).await;
    assert_eq!(next(&mut c).await, (json!({"t": 40, "dn": "dev1"}), Some("dev1".to_string())));

    // PUT changes what the rule does.
    let cold = json!({
        "sql": r#"SELECT temperature AS c FROM "/a1test/+/user/update" WHERE temperature < 0"#,
        "actions": ["amqp g_rules tag=cold"],
    });
    let (status, replaced) = send(client.put(url(&server, "/rules/hot")).json(&cold)).await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["actions"], json!(["amqp g_rules tag=cold"]));
    assert_eq!(replaced["description"], "");
    assert_eq!(
        replaced["warnings"].as_array().unwrap().len(),
        1,
        "the overlap with the subscription stays: {replaced}"
    );
    assert_eq!(replaced["metrics"]["passed"], 1, "the counters belong to the rule, not to one version");
    publish_one(server.addr(), "dev2", r#"{"temperature":41}"#).await;
    publish_one(server.addr(), "dev2", r#"{"temperature":-5}"#).await;
    assert_eq!(
        next(&mut c).await,
        (json!({"c": -5}), Some("cold".to_string())),
        "41 no longer matches, -5 does"
    );

    // PATCH enabled=false: nothing matches until it is enabled again.
    let (status, off) = send(client.patch(url(&server, "/rules/hot")).json(&json!({"enabled": false}))).await;
    assert_eq!((status, off["enabled"].as_bool()), (200, Some(false)), "{off}");
    assert!(std::fs::read_to_string(&file).unwrap().contains("\n-- enabled: false\n"));
    publish_one(server.addr(), "dev3", r#"{"temperature":-6}"#).await;
    let (_, view) = get(&server, "/rules/hot").await;
    assert_eq!(view["metrics"]["matched"], off["metrics"]["matched"], "a disabled rule matches nothing");
    let (status, on) = send(client.patch(url(&server, "/rules/hot")).json(&json!({"enabled": true}))).await;
    assert_eq!((status, on["enabled"].as_bool()), (200, Some(true)));
    publish_one(server.addr(), "dev3", r#"{"temperature":-7}"#).await;
    assert_eq!(next(&mut c).await.0, json!({"c": -7}), "-6 was published while the rule was disabled");

    // DELETE removes the file and the rule.
    let (status, _) = send(client.delete(url(&server, "/rules/hot"))).await;
    assert_eq!(status, 204);
    assert!(!file.exists());
    assert!(server.app.rules().get("hot").is_none());
    assert_eq!(get(&server, "/rules/hot").await.0, 404);
    let (status, body) = send(client.delete(url(&server, "/rules/hot"))).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NotFound")));
    let left: Vec<_> = std::fs::read_dir(server.dir.path().join("rules")).unwrap().collect();
    assert!(left.is_empty(), "no temporary files are left behind: {left:?}");
    c.close().await;
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let server = Server::start_with("", GROUP).await;
    let client = reqwest::Client::new();

    let unauthenticated = client.get(url(&server, "/rules")).send().await.unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    let resp = client.post(url(&server, "/rules")).json(&hot_rule()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    let mut rule = hot_rule();
    rule["actions"] = json!(["amqp g_rules", "amqp g_nowhere tag=x"]);
    rule["errorAction"] = json!("amqp g_errors");
    let (status, body) = post(&server, "/rules", &rule).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("UnknownConsumerGroup")), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("g_nowhere") && message.contains("g_errors"), "{message}");
    assert!(!message.contains("g_rules"), "{message}");

    let mut rule = hot_rule();
    rule["sql"] = json!("SELECT temperature AS t\nFROM \"/a1test/+/user/update\"\nWHERE frob(temperature)");
    let (status, body) = post(&server, "/rules", &rule).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidRule")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("sql:3:7: unknown function frob()"), "{body}");
    assert_eq!(body["diagnostics"][0]["field"], "sql");
    assert_eq!(
        (body["diagnostics"][0]["line"].as_u64(), body["diagnostics"][0]["col"].as_u64()),
        (Some(3), Some(7))
    );

    let mut rule = hot_rule();
    rule["actions"] = json!(["kafka topic"]);
    let (status, body) = post(&server, "/rules", &rule).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidRule")));
    assert!(body["message"].as_str().unwrap().contains("actions[0]: unknown action \"kafka\""), "{body}");

    let mut rule = hot_rule();
    rule["description"] = json!("two\n-- action: amqp g_rules");
    let (status, body) = post(&server, "/rules", &rule).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("InvalidRule")),
        "header lines cannot be smuggled in"
    );
    assert!(body["message"].as_str().unwrap().contains("description: must be one line"), "{body}");

    for name in ["../escape", "a.b", "", "has space", &"x".repeat(31)] {
        let mut rule = hot_rule();
        rule["name"] = json!(name);
        let (status, body) = post(&server, "/rules", &rule).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("InvalidName")), "{name:?}: {body}");
    }

    let mut rule = hot_rule();
    let sql = rule.as_object_mut().unwrap().remove("sql").unwrap();
    rule["sqll"] = sql;
    let (status, body) = post(&server, "/rules", &rule).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    assert!(body["message"].as_str().unwrap().contains("sqll"), "the message names the field: {body}");
    let (status, body) = post(&server, "/rules", &json!({"name": "x", "sql": HOT})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    assert!(body["message"].as_str().unwrap().contains("actions"), "{body}");
    let (status, body) =
        send(client.post(url(&server, "/rules")).header("content-type", "application/json").body("{")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    let mut rule = hot_rule();
    rule["dataType"] = json!("xml");
    let (status, body) = post(&server, "/rules", &rule).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    assert!(body["message"].as_str().unwrap().contains("dataType"), "{body}");
    assert!(
        std::fs::read_dir(server.dir.path().join("rules")).unwrap().next().is_none(),
        "nothing was written"
    );

    // Unknown rules, renames, and a FROM filter naming no product (written, with a warning).
    let put = |name: &str| client.put(url(&server, &format!("/rules/{name}")));
    let (status, _) = send(put("nope").json(&json!({"sql": HOT, "actions": []}))).await;
    assert_eq!(status, 404);
    let (status, _) = send(client.patch(url(&server, "/rules/nope")).json(&json!({"enabled": true}))).await;
    assert_eq!(status, 404);
    let (status, body) = post(
        &server,
        "/rules",
        &json!({"name": "elsewhere", "sql": "SELECT * FROM \"/p9/+/user/x\"", "actions": []}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert!(body["warnings"][0].as_str().unwrap().contains("product p9 does not exist"), "{body}");
    let (status, body) =
        send(put("elsewhere").json(&json!({"name": "other", "sql": HOT, "actions": []}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")), "{body}");
    // `test` is a rule name like any other, beside POST /rules/test.
    let named_test = json!({"name": "test", "sql": HOT, "actions": []});
    assert_eq!(post(&server, "/rules", &named_test).await.0, 201);
    assert_eq!(get(&server, "/rules/test").await.1["name"], "test");
    let (status, body) = post(&server, "/rules/elsewhere", &json!({})).await;
    assert_eq!((status, body["code"].as_str()), (405, Some("MethodNotAllowed")), "{body}");
    let (status, body) =
        send(client.patch(url(&server, "/rules/elsewhere")).json(&json!({"enabled": "no"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    assert!(body["message"].as_str().unwrap().contains("enabled"), "{body}");
}

#[tokio::test]
async fn concurrent_creations_of_one_name_give_one_rule() {
    let server = Server::start_with("", GROUP).await;
    let rule = hot_rule();
    let answers = futures::future::join_all((0..8).map(|_| post(&server, "/rules", &rule))).await;
    let mut codes: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    codes.sort_unstable();
    assert_eq!(codes, [201, 409, 409, 409, 409, 409, 409, 409], "{answers:?}");
    let conflict = answers.iter().find(|(s, _)| *s == 409).unwrap();
    assert_eq!(conflict.1["code"], "RuleExists");
    assert_eq!(server.app.rules().len(), 1);
}

#[tokio::test]
async fn rules_test_runs_one_rule_on_one_message() {
    let server = Server::start_with("", GROUP).await;
    let test = |body: Value| {
        let server = &server;
        async move { post(server, "/rules/test", &body).await }
    };
    let (status, body) =
        test(json!({"sql": HOT, "topic": "/a1test/dev1/user/update", "payload": {"temperature": 40}})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"matched": true, "result": {"t": 40, "dn": "dev1"}}));
    let (_, body) = test(json!({
        "sql": HOT, "topic": "/a1test/dev1/user/update", "payload": "{\"temperature\":30}", "deviceName": "other"
    }))
    .await;
    assert_eq!(body["matched"], false);
    assert!(body["reason"].as_str().unwrap().contains("WHERE"), "{body}");
    let (_, body) = test(json!({"sql": HOT, "topic": "/other/dev1/user/update", "payload": {}})).await;
    assert!(body["reason"].as_str().unwrap().contains("does not match the FROM filter"), "{body}");
    let (_, body) = test(json!({
        "sql": "SELECT 1 / temperature AS x FROM \"/a1test/+/user/update\"",
        "topic": "/a1test/dev1/user/update", "payload": {"temperature": 0}
    }))
    .await;
    assert_eq!((body["matched"].as_bool(), body["error"].as_str()), (Some(false), Some("division by zero")));

    // A rule in force, by name; its counters do not move.
    assert_eq!(post(&server, "/rules", &hot_rule()).await.0, 201);
    let (status, body) =
        test(json!({"name": "hot", "topic": "/a1test/dev2/user/update", "payload": {"temperature": 39}}))
            .await;
    assert_eq!((status, &body["result"]), (200, &json!({"t": 39, "dn": "dev2"})), "{body}");
    let (_, view) = get(&server, "/rules/hot").await;
    assert_eq!(view["metrics"]["matched"], 0);

    let (status, body) =
        test(json!({"sql": "SELECT order FROM \"/a/+\"", "topic": "/a/b", "payload": {}})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidRule")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("sql:1:8:"), "{body}");
    let (status, _) = test(json!({"name": "nope", "topic": "/a/b", "payload": {}})).await;
    assert_eq!(status, 404);
    let (status, body) = test(json!({"topic": "/a/b", "payload": {}})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    let (status, body) = test(json!({"sql": HOT, "payload": {}})).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    assert!(body["message"].as_str().unwrap().contains("topic"), "{body}");
}

#[tokio::test]
async fn hand_written_files_and_api_rules_live_side_by_side_and_survive_a_restart() {
    let server = Server::start_with("", GROUP).await;
    // A file written by hand, loaded by the directory watch as before.
    let hand = server.dir.path().join("rules/by_hand.sql");
    std::fs::write(
        &hand,
        "-- action: amqp g_rules tag=hand\nSELECT temperature AS h FROM \"/a1test/+/user/update\"\n",
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.app.rules().get("by_hand").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the hand-written rule was not loaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(post(&server, "/rules", &hot_rule()).await.0, 201);
    // The API edits the hand-written file in place: only its enabled line.
    let (status, body) =
        send(reqwest::Client::new().patch(url(&server, "/rules/by_hand")).json(&json!({"enabled": false})))
            .await;
    assert_eq!((status, body["file"].as_str()), (200, Some("by_hand.sql")), "{body}");
    assert_eq!(
        std::fs::read_to_string(&hand).unwrap(),
        "-- enabled: false\n-- action: amqp g_rules tag=hand\nSELECT temperature AS h FROM \"/a1test/+/user/update\"\n"
    );

    let server = server.restart().await;
    let (status, list) = get(&server, "/rules").await;
    assert_eq!(status, 200);
    let names: Vec<(&str, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["enabled"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("by_hand", false), ("hot", true)]);
    let mut c = consumer(server.app.amqp_addr(), "after-restart", "g_rules").await;
    publish_one(server.addr(), "dev1", r#"{"temperature":45}"#).await;
    assert_eq!(next(&mut c).await, (json!({"t": 45, "dn": "dev1"}), Some("dev1".to_string())));
    c.close().await;
}
