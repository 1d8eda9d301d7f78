//! `iotpipe device sign`.

use clap::{Args, ValueEnum};

use crate::ingress::auth::Credentials;
use crate::sign::SignMethod;

/// Arguments of `device sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// productKey.
    #[arg(long)]
    product_key: String,
    /// deviceName.
    #[arg(long)]
    device_name: String,
    /// deviceSecret.
    #[arg(long)]
    device_secret: String,
    /// hmacmd5, hmacsha1 or hmacsha256.
    #[arg(long, default_value = "hmacsha256")]
    sign_method: String,
    /// The device's own client id; defaults to the device name.
    #[arg(long)]
    client_id: Option<String>,
    /// Optional timestamp (epoch ms) to sign.
    #[arg(long)]
    timestamp: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Same as --format json.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned `name value` lines.
    Text,
    /// One JSON object.
    Json,
    /// Shell assignments: `eval "$(iotpipe device sign ... --format env)"`.
    Env,
}

pub(super) fn run(args: &SignArgs) -> anyhow::Result<()> {
    let method = SignMethod::parse(&args.sign_method).ok_or_else(|| {
        anyhow::anyhow!("--sign-method {:?}: use hmacmd5, hmacsha1 or hmacsha256", args.sign_method)
    })?;
    let credentials = Credentials {
        client_id: args.client_id.clone().unwrap_or_else(|| args.device_name.clone()),
        product_key: args.product_key.clone(),
        device_name: args.device_name.clone(),
        method,
        timestamp: args.timestamp.clone(),
    };
    let (client_id, username, password) =
        (credentials.mqtt_client_id(), credentials.username(), credentials.password(&args.device_secret));
    let format = if args.json { Format::Json } else { args.format };
    match format {
        Format::Text => {
            println!("clientId  {client_id}");
            println!("username  {username}");
            println!("password  {password}");
        }
        Format::Json => println!(
            "{}",
            serde_json::json!({"clientId": client_id, "username": username, "password": password})
        ),
        Format::Env => {
            println!("MQTT_CLIENT_ID='{client_id}'");
            println!("MQTT_USERNAME='{username}'");
            println!("MQTT_PASSWORD='{password}'");
        }
    }
    Ok(())
}
