//! `[[access_keys]]`, `[[products]]` and `[[products.devices]]`: the registry's starting set,
//! and its check (the rules themselves are in `names.rs`, shared with the API).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::names::{check_category, check_device_name, check_device_secret, check_product_key, check_tags};
use crate::check::{index, key, within, Problem, Seen};

/// `[[access_keys]]`: what AMQP consumers sign with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// AccessKey ID.
    pub id: String,
    /// AccessKey secret.
    pub secret: String,
}

/// `[[products]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    /// productKey.
    pub key: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// The product's category, sent as `deviceType` in thing-model messages; absent:
    /// [`super::DEFAULT_CATEGORY`].
    #[serde(default)]
    pub category: Option<String>,
    /// Devices of this product.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
}

/// `[[products.devices]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// deviceName, unique within the product.
    pub name: String,
    /// deviceSecret the device signs its CONNECT with.
    pub secret: String,
    /// A disabled device is refused at CONNECT.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Device tags, readable by rules through `attribute()`.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_enabled() -> bool {
    true
}

/// Every problem of `[[access_keys]]`, at paths relative to the array (`[1].id`): ids present
/// and unique, secrets present.
pub fn check_access_keys(access_keys: &[AccessKeyConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    for (i, access_key) in access_keys.iter().enumerate() {
        let id = access_key.id.as_str();
        if id.is_empty() {
            problems.push(Problem::new(index(i).key("id"), "must not be empty"));
        } else if let Some(first) = seen.first(id, i) {
            let message = format!("\"{id}\" is already used by access_keys[{first}]; ids must be unique");
            problems.push(Problem::new(index(i).key("id"), message));
        }
        if access_key.secret.is_empty() {
            problems.push(Problem::new(index(i).key("secret"), "must not be empty"));
        }
    }
    problems
}

/// Every problem of `[[products]]` and their devices, at paths relative to the array
/// (`[1].devices[0].name`): the name rules, and keys and device names unique.
pub fn check_products(products: &[ProductConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    for (p, product) in products.iter().enumerate() {
        let product_key = product.key.as_str();
        let key_problem = match check_product_key(product_key) {
            Err(message) => Some(message),
            Ok(()) => seen.first(product_key, p).map(|first| {
                format!("\"{product_key}\" is already used by products[{first}]; product keys must be unique")
            }),
        };
        problems.extend(key_problem.map(|message| Problem::new(index(p).key("key"), message)));
        if let Some(Err(message)) = product.category.as_deref().map(check_category) {
            problems.push(Problem::new(index(p).key("category"), message));
        }
        problems.extend(within(&index(p).key("devices"), product.check_devices(p)));
    }
    problems
}

impl ProductConfig {
    /// Every problem of this product's devices (product number `p` in the file), at paths
    /// relative to its `devices` array.
    fn check_devices(&self, p: usize) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut seen = Seen::default();
        for (d, device) in self.devices.iter().enumerate() {
            let device_problems = device.check();
            // A name that breaks the name rule is reported as such, not also as a duplicate.
            let name_ok = !device_problems.iter().any(|problem| problem.path == key("name"));
            problems.extend(within(&index(d), device_problems));
            let name = device.name.as_str();
            if let Some(first) = name_ok.then(|| seen.first(name, d)).flatten() {
                let message = format!(
                    "\"{name}\" is already used by products[{p}].devices[{first}]; device names must \
                     be unique within a product"
                );
                problems.push(Problem::new(index(d).key("name"), message));
            }
        }
        problems
    }
}

impl DeviceConfig {
    /// Every problem of this device on its own, at keys relative to its table.
    pub fn check(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(message) = check_device_name(&self.name) {
            problems.push(Problem::new(key("name"), message));
        }
        if let Err(message) = check_device_secret(&self.secret) {
            problems.push(Problem::new(key("secret"), message));
        }
        if self.tags.contains_key("") {
            problems.push(Problem::new(key("tags").key(""), "tag keys must not be empty"));
        } else if let Err(message) = check_tags(self.tags.iter()) {
            problems.push(Problem::new(key("tags"), message));
        }
        problems
    }
}
