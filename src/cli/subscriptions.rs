//! `iotpipe subscriptions ...`: product-wide server-side subscriptions through
//! `/api/v1/subscriptions`.

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use super::client::Client;
use super::table::{self, cell, Table};

/// `iotpipe subscriptions ...`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// Lists the subscriptions, one per product.
    List,
    /// Shows the subscription of one product.
    Show {
        /// productKey.
        product_key: String,
    },
    /// Subscribes consumer groups to a product's messages.
    Create {
        /// productKey.
        product_key: String,
        /// Message types, comma-separated: upstream, status, lifecycle, thing_history, tag_change.
        #[arg(long, value_delimiter = ',', required = true)]
        types: Vec<String>,
        /// Consumer group ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        groups: Vec<String>,
    },
    /// Replaces a subscription's message types and/or consumer groups (an option left out keeps
    /// its current value).
    Update(UpdateArgs),
    /// Deletes a product's subscription.
    Delete {
        /// productKey.
        product_key: String,
    },
    /// Removes one consumer group from a product's subscription.
    Unsubscribe {
        /// productKey.
        product_key: String,
        /// Consumer group id.
        group_id: String,
    },
}

/// Arguments of `subscriptions update`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["types", "groups"])))]
pub struct UpdateArgs {
    /// productKey.
    product_key: String,
    /// Message types, comma-separated: upstream, status, lifecycle, thing_history, tag_change.
    #[arg(long, value_delimiter = ',')]
    types: Option<Vec<String>>,
    /// Consumer group ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    groups: Option<Vec<String>>,
}

/// Runs a subscriptions command.
///
/// # Errors
/// The request's failure, as one line.
pub fn run(client: &Client, cmd: &SubscriptionsCommand) -> anyhow::Result<()> {
    use SubscriptionsCommand as C;
    let answer = match cmd {
        C::List => client.get(&["subscriptions"])?,
        C::Show { product_key } => client.get(&["subscriptions", product_key])?,
        C::Create { product_key, types, groups } => {
            let body = json!({
                "productKey": product_key,
                "messageTypes": non_empty(types),
                "consumerGroupIds": non_empty(groups),
            });
            client.post(&["subscriptions"], Some(&body))?
        }
        C::Update(a) => {
            let (types, groups) = match (&a.types, &a.groups) {
                (Some(t), Some(g)) => (non_empty(t), non_empty(g)),
                // PUT replaces the whole subscription: fill in what was not given.
                (t, g) => {
                    let current = client.get(&["subscriptions", &a.product_key])?.value;
                    (
                        t.as_deref().map_or_else(|| strings(&current["messageTypes"]), non_empty),
                        g.as_deref().map_or_else(|| strings(&current["consumerGroupIds"]), non_empty),
                    )
                }
            };
            let body = json!({ "messageTypes": types, "consumerGroupIds": groups });
            client.put(&["subscriptions", &a.product_key], &body)?
        }
        C::Delete { product_key } => client.delete(&["subscriptions", product_key])?,
        C::Unsubscribe { product_key, group_id } => {
            client.delete(&["subscriptions", product_key, "consumer-groups", group_id])?
        }
    };
    answer.print_warnings();
    if client.json {
        answer.print_json();
        return Ok(());
    }
    match cmd {
        C::List => {
            let mut t = Table::new(&["PRODUCT KEY", "MESSAGE TYPES", "CONSUMER GROUPS"]);
            for s in answer.items() {
                t.row(vec![cell(&s["productKey"]), cell(&s["messageTypes"]), cell(&s["consumerGroupIds"])]);
            }
            t.print();
        }
        C::Show { .. } | C::Create { .. } | C::Update(_) => print_subscription(&answer.value),
        C::Delete { product_key } => table::emit(&format!("deleted the subscription of {product_key}\n")),
        C::Unsubscribe { product_key, group_id } => {
            if answer.value.is_object() {
                print_subscription(&answer.value);
            } else {
                table::emit(&format!("unsubscribed {group_id} from {product_key}\n"));
            }
        }
    }
    Ok(())
}

fn print_subscription(v: &Value) {
    table::print_fields(&[
        ("productKey", cell(&v["productKey"])),
        ("messageTypes", cell(&v["messageTypes"])),
        ("consumerGroupIds", cell(&v["consumerGroupIds"])),
    ]);
}

/// `--groups a,,b` and `--groups ''` leave no empty ids.
fn non_empty(items: &[String]) -> Vec<String> {
    items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}
