//! Thing-model requests to a device: topics, Alink JSON bodies and service identifiers.

use serde_json::{json, Map, Value};

use super::CommandError;

/// The Alink method and topic of a property set.
pub const PROPERTY_SET: &str = "property/set";

/// Checks a service identifier: the platform's TSL identifiers are 1-50 letters, digits and
/// underscores; `property` would collide with the property-set topic.
///
/// # Errors
/// Says what is wrong.
pub fn check_identifier(identifier: &str) -> Result<(), CommandError> {
    let ok = (1..=50).contains(&identifier.len())
        && identifier.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && identifier != "property";
    if ok {
        Ok(())
    } else {
        Err(CommandError::InvalidArgument {
            field: "identifier",
            message: format!(
                "{identifier:?} is not a service identifier; expected 1-50 letters, digits and \
                 underscores (and not \"property\")"
            ),
        })
    }
}

/// The request topic of `service` (`property/set` or an identifier).
pub fn topic(product_key: &str, device_name: &str, service: &str) -> String {
    format!("/sys/{product_key}/{device_name}/thing/service/{service}")
}

/// The Alink `id` of a request from its message id: a decimal string of at most 32 bits, as
/// the platform's ids are (0 to 4294967295).
pub fn request_id(message_id: u64) -> String {
    (message_id & 0xFFFF_FFFF).to_string()
}

/// The Alink request body: `{"id","version":"1.0","params","method":"thing.service.<service>"}`
/// where a property set's method is `thing.service.property.set`.
pub fn request(id: &str, service: &str, params: Map<String, Value>) -> Vec<u8> {
    let method = format!("thing.service.{}", service.replace('/', "."));
    let body = json!({"id": id, "version": "1.0", "params": params, "method": method});
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_the_platform_sends_them() {
        let mut params = Map::new();
        params.insert("LightSwitch".into(), json!(1));
        let body: Value = serde_json::from_slice(&request("7", PROPERTY_SET, params)).unwrap();
        assert_eq!(
            body,
            json!({"id":"7","version":"1.0","params":{"LightSwitch":1},"method":"thing.service.property.set"})
        );
        assert_eq!(topic("a1", "d1", "reboot"), "/sys/a1/d1/thing/service/reboot");
        assert_eq!(request_id(5), "5");
        assert_eq!(request_id((1 << 32) + 5), "5");
        assert!(check_identifier("reboot_now").is_ok());
        for bad in ["", "a/b", "property", "x+", &"a".repeat(51)] {
            assert!(check_identifier(bad).is_err(), "{bad}");
        }
    }
}
