//! Referential integrity under concurrency: deleting a consumer group races creating a rule or a
//! subscription that names it, over real HTTP. Whatever the order, afterwards no rule and no
//! subscription names a group that does not exist, and in each round exactly one of the two
//! calls succeeds.

mod common;

use std::collections::BTreeSet;

use common::api::{send, url};
use common::Server;
use serde_json::{json, Value};

/// Rounds per race: enough that an unguarded window shows up most of the time (before the
/// catalog serialised these changes, both calls succeeded in most rounds).
const ROUNDS: usize = 200;

/// A product per subscription round: a product has at most one subscription.
fn product(i: usize) -> String {
    format!("a1race{i:03}")
}

async fn create_group(server: &Server, client: &reqwest::Client, name: &str) -> String {
    let (status, body) =
        send(client.post(url(server, "/consumer-groups")).json(&json!({ "name": name }))).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// Runs `create(i, group)` and the deletion of a fresh group at the same time, `ROUNDS` times.
/// Returns how many rounds both succeeded; panics when neither did or one failed otherwise.
async fn race(
    server: &Server,
    client: &reqwest::Client,
    what: &str,
    create: impl Fn(usize, &str) -> reqwest::RequestBuilder,
) -> usize {
    let mut both = 0;
    for i in 0..ROUNDS {
        let group = create_group(server, client, &format!("{what}_race_{i}")).await;
        let delete = client.delete(url(server, &format!("/consumer-groups/{group}")));
        let ((deleted, d_body), (created, c_body)) = tokio::join!(send(delete), send(create(i, &group)));
        match (deleted, created) {
            (204, 201) => both += 1,
            // The deletion came first: the group is unknown to the creation.
            (204, 400) => assert_eq!(c_body["code"], "UnknownConsumerGroup", "{c_body}"),
            // The creation came first: the deletion finds the group in use.
            (409, 201) => assert_eq!(d_body["code"], "InUse", "{d_body}"),
            other => panic!("round {i} of {what}: unexpected {other:?}: {d_body} {c_body}"),
        }
    }
    both
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_deletion_never_leaves_a_rule_or_subscription_naming_a_missing_group() {
    let products: String =
        (0..ROUNDS).map(|i| format!("\n[[products]]\nkey = \"{}\"\n", product(i))).collect();
    let server = Server::start_with("", &products).await;
    // One client: its pooled connections let both calls of a round start at once.
    let client = reqwest::Client::new();

    let rules_both = race(&server, &client, "rule", |i, group| {
        client.post(url(&server, "/rules")).json(&json!({
            "name": format!("race{i}"),
            "sql": "SELECT * FROM \"/a1test/+/user/update\"",
            "actions": [format!("amqp {group}")],
        }))
    })
    .await;
    let subscriptions_both = race(&server, &client, "sub", |i, group| {
        client.post(url(&server, "/subscriptions")).json(&json!({
            "productKey": product(i),
            "messageTypes": ["upstream"],
            "consumerGroupIds": [group],
        }))
    })
    .await;

    let (_, groups) = send(client.get(url(&server, "/consumer-groups"))).await;
    let groups: BTreeSet<&str> =
        groups.as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    let (_, rules) = send(client.get(url(&server, "/rules"))).await;
    let dangling_rules: Vec<&Value> = rules
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["actions"].as_array().unwrap().iter().any(|a| {
                let group = a.as_str().unwrap().strip_prefix("amqp ").unwrap();
                !groups.contains(group)
            })
        })
        .map(|r| &r["name"])
        .collect();
    let (_, subscriptions) = send(client.get(url(&server, "/subscriptions"))).await;
    let dangling_subscriptions: Vec<&Value> = subscriptions
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["consumerGroupIds"].as_array().unwrap().iter().any(|g| !groups.contains(g.as_str().unwrap()))
        })
        .map(|s| &s["productKey"])
        .collect();

    let dangling = (dangling_rules.len(), dangling_subscriptions.len());
    assert!(
        (rules_both, subscriptions_both, dangling) == (0, 0, (0, 0)),
        "of {ROUNDS} rounds each, both the deletion and the creation succeeded in {rules_both} for rules \
         and {subscriptions_both} for subscriptions; {} rules and {} subscriptions name a missing group: \
         {dangling_rules:?} {dangling_subscriptions:?}",
        dangling.0,
        dangling.1
    );
}
