//! Topic ACL: a device uses only its own topics.
//!
//! Own topics are `/${productKey}/${deviceName}/user/...` (custom) and
//! `/sys/${productKey}/${deviceName}/thing/...` (thing model). Publishing needs a concrete
//! topic below one of those prefixes or below the device's RRPC response prefix
//! `/sys/${pk}/${dn}/rrpc/response/`; subscribing may use `+` and `#` only below the own
//! prefixes, the device's RRPC request prefix `/sys/${pk}/${dn}/rrpc/request/` and its product's
//! broadcast prefix `/broadcast/${pk}/` (docs/downlink.md).

/// Why a topic or filter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Not below the device's own prefixes.
    NotOwn,
    /// Empty levels, wildcards in a topic name, or a malformed filter.
    Invalid,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Denied::NotOwn => "not one of the device's own topics",
            Denied::Invalid => "not a valid topic",
        })
    }
}

/// One device's topics. It keeps only `${productKey}/${deviceName}`, not its five prefixes, and
/// compares each prefix piece by piece: a connection holds one, and an idle connection should
/// cost little (docs/ingress.md).
#[derive(Debug, Clone)]
pub struct Acl {
    /// `${productKey}/${deviceName}`.
    device: Box<str>,
    /// Bytes of the productKey in `device`.
    product_len: usize,
}

/// `topic` without `before`, `middle` and `after`, in this order.
fn below<'t>(topic: &'t str, before: &str, middle: &str, after: &str) -> Option<&'t str> {
    topic.strip_prefix(before)?.strip_prefix(middle)?.strip_prefix(after)
}

impl Acl {
    /// The ACL of device `device_name` of product `product_key`.
    pub fn new(product_key: &str, device_name: &str) -> Self {
        Self { device: format!("{product_key}/{device_name}").into(), product_len: product_key.len() }
    }

    fn custom<'t>(&self, topic: &'t str) -> Option<&'t str> {
        below(topic, "/", &self.device, "/user/")
    }

    fn thing<'t>(&self, topic: &'t str) -> Option<&'t str> {
        below(topic, "/sys/", &self.device, "/thing/")
    }

    fn rest<'t>(&self, topic: &'t str) -> Option<&'t str> {
        self.custom(topic).or_else(|| self.thing(topic))
    }

    /// May the device publish to `topic`? Runs on every PUBLISH: up to three prefix compares
    /// and a byte scan, no allocation.
    pub fn check_publish(&self, topic: &str) -> Result<(), Denied> {
        let rest = self.rest(topic).or_else(|| self.rrpc_response(topic)).ok_or(Denied::NotOwn)?;
        concrete(rest)
    }

    /// Is `topic` one of the device's own custom topics (`/${pk}/${dn}/user/...`, no wildcard),
    /// the only topics a business server may publish to one device?
    pub fn check_custom_topic(&self, topic: &str) -> Result<(), Denied> {
        concrete(self.custom(topic).ok_or(Denied::NotOwn)?)
    }

    /// The message id of an RRPC response topic `/sys/${pk}/${dn}/rrpc/response/${id}` of this
    /// device; `None` for any other topic.
    pub fn rrpc_response<'t>(&self, topic: &'t str) -> Option<&'t str> {
        below(topic, "/sys/", &self.device, "/rrpc/response/")
    }

    /// Is `topic` a reply to a thing-model call (`.../thing/service/..._reply`)?
    pub fn is_service_reply(&self, topic: &str) -> bool {
        self.thing(topic).is_some_and(|rest| rest.starts_with("service/") && rest.ends_with("_reply"))
    }

    /// May the device subscribe to `filter`?
    pub fn check_subscribe(&self, filter: &str) -> Result<(), Denied> {
        if filter.starts_with("$share/") || filter.starts_with("$queue/") {
            return Err(Denied::NotOwn);
        }
        let rest = self
            .rest(filter)
            .or_else(|| below(filter, "/sys/", &self.device, "/rrpc/request/"))
            .or_else(|| below(filter, "/broadcast/", &self.device[..self.product_len], "/"))
            .ok_or(Denied::NotOwn)?;
        if rest.is_empty() {
            return Err(Denied::Invalid);
        }
        let levels: Vec<&str> = rest.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            let ok = match *level {
                "" => false,
                "+" => true,
                "#" => i == levels.len() - 1,
                l => !l.contains(['+', '#']),
            };
            if !ok {
                return Err(Denied::Invalid);
            }
        }
        Ok(())
    }
}

/// The rest of a topic name below a prefix: non-empty levels, no wildcard, no NUL.
fn concrete(rest: &str) -> Result<(), Denied> {
    if rest.is_empty() || rest.bytes().any(|b| b == b'+' || b == b'#' || b == 0) {
        return Err(Denied::Invalid);
    }
    if rest.split('/').any(str::is_empty) {
        return Err(Denied::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_table() {
        let acl = Acl::new("a1demo", "dev1");
        let table = [
            ("/a1demo/dev1/user/update", Ok(())),
            ("/a1demo/dev1/user/a/b/c", Ok(())),
            ("/sys/a1demo/dev1/thing/event/property/post", Ok(())),
            ("/a1demo/dev2/user/update", Err(Denied::NotOwn)),
            ("/a1demo/dev1x/user/update", Err(Denied::NotOwn)),
            ("/sys/a1demo/dev2/thing/event/property/post", Err(Denied::NotOwn)),
            ("/a1demo/dev1/other", Err(Denied::NotOwn)),
            ("/a1demo/dev1/user", Err(Denied::NotOwn)),
            ("/as/mqtt/status/a1demo/dev1", Err(Denied::NotOwn)),
            ("/a1demo/dev1/user/", Err(Denied::Invalid)),
            ("/a1demo/dev1/user/a//b", Err(Denied::Invalid)),
            ("/a1demo/dev1/user/+", Err(Denied::Invalid)),
            ("/a1demo/dev1/user/#", Err(Denied::Invalid)),
            // RRPC: a device answers only its own requests, and never asks.
            ("/sys/a1demo/dev1/rrpc/response/123", Ok(())),
            ("/sys/a1demo/dev2/rrpc/response/123", Err(Denied::NotOwn)),
            ("/sys/a1demo/dev1/rrpc/request/123", Err(Denied::NotOwn)),
            ("/sys/a1demo/dev1/rrpc/response/", Err(Denied::Invalid)),
            // Broadcasts come from the platform only.
            ("/broadcast/a1demo/x", Err(Denied::NotOwn)),
        ];
        for (topic, want) in table {
            assert_eq!(acl.check_publish(topic), want, "{topic}");
        }
        assert_eq!(acl.rrpc_response("/sys/a1demo/dev1/rrpc/response/77"), Some("77"));
        assert_eq!(acl.rrpc_response("/sys/a1demo/dev2/rrpc/response/77"), None);
        assert!(acl.is_service_reply("/sys/a1demo/dev1/thing/service/property/set_reply"));
        assert!(acl.is_service_reply("/sys/a1demo/dev1/thing/service/reboot_reply"));
        assert!(!acl.is_service_reply("/sys/a1demo/dev1/thing/event/property/post"));
        assert!(!acl.is_service_reply("/sys/a1demo/dev2/thing/service/reboot_reply"));
        assert_eq!(acl.check_custom_topic("/a1demo/dev1/user/get"), Ok(()));
        assert_eq!(
            acl.check_custom_topic("/sys/a1demo/dev1/thing/service/property/set"),
            Err(Denied::NotOwn)
        );
        assert_eq!(acl.check_custom_topic("/a1demo/dev1/user/+"), Err(Denied::Invalid));
    }

    #[test]
    fn subscribe_table() {
        let acl = Acl::new("a1demo", "dev1");
        let table = [
            ("/a1demo/dev1/user/get", Ok(())),
            ("/a1demo/dev1/user/#", Ok(())),
            ("/a1demo/dev1/user/+/x", Ok(())),
            ("/sys/a1demo/dev1/thing/service/#", Ok(())),
            // Alink replies to the device's own posts.
            ("/sys/a1demo/dev1/thing/event/property/post_reply", Ok(())),
            ("/sys/a1demo/dev1/thing/event/+/post_reply", Ok(())),
            ("/sys/a1demo/dev2/thing/event/property/post_reply", Err(Denied::NotOwn)),
            ("/a1demo/+/user/get", Err(Denied::NotOwn)),
            ("/a1demo/dev2/user/get", Err(Denied::NotOwn)),
            ("#", Err(Denied::NotOwn)),
            ("/a1demo/dev1/#", Err(Denied::NotOwn)),
            ("$share/g//a1demo/dev1/user/get", Err(Denied::NotOwn)),
            ("/a1demo/dev1/user/#/x", Err(Denied::Invalid)),
            ("/a1demo/dev1/user/a+", Err(Denied::Invalid)),
            ("/sys/a1demo/dev1/rrpc/request/+", Ok(())),
            ("/sys/a1demo/dev2/rrpc/request/+", Err(Denied::NotOwn)),
            ("/sys/a1demo/dev1/rrpc/response/+", Err(Denied::NotOwn)),
            ("/broadcast/a1demo/#", Ok(())),
            ("/broadcast/a1demo/news", Ok(())),
            ("/broadcast/a1other/#", Err(Denied::NotOwn)),
            ("/broadcast/#", Err(Denied::NotOwn)),
        ];
        for (filter, want) in table {
            assert_eq!(acl.check_subscribe(filter), want, "{filter}");
        }
    }
}
