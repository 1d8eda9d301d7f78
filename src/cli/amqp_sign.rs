//! `iotpipe amqp sign`.

use clap::Args;

use crate::amqp::auth::ConsumerCredentials;
use crate::sign::SignMethod;

/// Arguments of `amqp sign`.
#[derive(Debug, Args)]
pub struct AmqpSignArgs {
    /// AccessKey ID.
    #[arg(long)]
    access_key_id: String,
    /// AccessKey secret.
    #[arg(long)]
    access_key_secret: String,
    /// Consumer group id.
    #[arg(long)]
    consumer_group_id: String,
    /// The consumer's client id (at most 64 characters); defaults to "iotpipe-consumer".
    #[arg(long, default_value = "iotpipe-consumer")]
    client_id: String,
    /// hmacmd5, hmacsha1 or hmacsha256.
    #[arg(long, default_value = "hmacsha1")]
    sign_method: String,
    /// Timestamp (epoch ms) to sign; defaults to now.
    #[arg(long)]
    timestamp: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: &AmqpSignArgs) -> anyhow::Result<()> {
    let method = SignMethod::parse(&args.sign_method).ok_or_else(|| {
        anyhow::anyhow!("--sign-method {:?}: use hmacmd5, hmacsha1 or hmacsha256", args.sign_method)
    })?;
    if args.client_id.is_empty() || args.client_id.chars().count() > 64 {
        anyhow::bail!("--client-id must be 1 to 64 characters");
    }
    let credentials = ConsumerCredentials {
        client_id: args.client_id.clone(),
        access_key_id: args.access_key_id.clone(),
        group_id: args.consumer_group_id.clone(),
        method,
        timestamp: args.timestamp.clone().unwrap_or_else(|| crate::message::now_ms().to_string()),
        instance_id: None,
    };
    let (username, password) = (credentials.username(), credentials.password(&args.access_key_secret));
    if args.json {
        println!("{}", serde_json::json!({"username": username, "password": password}));
    } else {
        println!("username  {username}");
        println!("password  {password}");
    }
    Ok(())
}
