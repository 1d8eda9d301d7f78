//! The rules for what the registry holds, checked here for the configuration file and the API
//! alike: product keys, product categories, device names, device secrets and device tags.

/// Longest productKey.
pub const MAX_PRODUCT_KEY_CHARS: usize = 20;
/// A deviceName has 4 to 32 characters.
pub const DEVICE_NAME_CHARS: std::ops::RangeInclusive<usize> = 4..=32;
/// Longest deviceSecret.
pub const MAX_DEVICE_SECRET_BYTES: usize = 64;

/// Checks a productKey: 1 to 20 ASCII letters and digits. The error says what is wrong.
///
/// # Errors
/// An empty or long key, or another character.
pub fn check_product_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err(format!(
            "must not be empty; expected up to {MAX_PRODUCT_KEY_CHARS} ASCII letters and digits"
        ));
    }
    if let Some(c) = key.chars().find(|c| !c.is_ascii_alphanumeric()) {
        return Err(format!(
            "\"{key}\" contains {c:?}; a product key may only contain ASCII letters and digits"
        ));
    }
    if key.len() > MAX_PRODUCT_KEY_CHARS {
        return Err(format!(
            "\"{key}\" is {} characters long; a product key has at most {MAX_PRODUCT_KEY_CHARS}",
            key.len()
        ));
    }
    Ok(())
}

/// Checks a deviceName: 4 to 32 of ASCII letters, digits and `-` `.` `_` `@` `:`. The error
/// says what is wrong.
///
/// # Errors
/// Another character, or a length outside 4..=32.
pub fn check_device_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._@:".contains(c);
    if let Some(c) = name.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "\"{name}\" contains {c:?}; a device name may only contain ASCII letters, digits and - . _ @ :"
        ));
    }
    // Only ASCII is left, so bytes are characters.
    if !DEVICE_NAME_CHARS.contains(&name.len()) {
        return Err(format!(
            "\"{name}\" is {} characters long; a device name has {} to {} characters",
            name.len(),
            DEVICE_NAME_CHARS.start(),
            DEVICE_NAME_CHARS.end()
        ));
    }
    Ok(())
}

/// Checks a deviceSecret: 1 to 64 bytes. The error never repeats the secret.
///
/// # Errors
/// An empty or long secret.
pub fn check_device_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err("must not be empty".into());
    }
    if secret.len() > MAX_DEVICE_SECRET_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_DEVICE_SECRET_BYTES} bytes are allowed",
            secret.len()
        ));
    }
    Ok(())
}

/// Longest product category.
pub const MAX_CATEGORY_CHARS: usize = 64;
/// Tags per device: the platform's limit for device tags.
pub const MAX_TAGS: usize = 100;
/// Longest tag key, in characters.
pub const MAX_TAG_KEY_CHARS: usize = 64;
/// Longest tag value, in characters: the platform's limit.
pub const MAX_TAG_VALUE_CHARS: usize = 128;

/// Checks a product category (the `deviceType` of thing-model messages): 1 to 64 ASCII letters,
/// digits and `_` `-` `.`, as the platform's category keys (`Ammeter`, `CustomCategory`) are.
///
/// # Errors
/// An empty or long category, or another character.
pub fn check_category(category: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if let Some(c) = category.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "\"{category}\" contains {c:?}; a category may only contain ASCII letters, digits and _ - ."
        ));
    }
    if !(1..=MAX_CATEGORY_CHARS).contains(&category.len()) {
        return Err(format!("must have 1 to {MAX_CATEGORY_CHARS} characters"));
    }
    Ok(())
}

/// Checks a device's tags: at most 100, keys of 1 to 64 characters without control
/// characters, values of at most 128 characters. The error names the tag.
///
/// # Errors
/// Too many tags, or a bad key or value.
pub fn check_tags<'a>(tags: impl ExactSizeIterator<Item = (&'a String, &'a String)>) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!("{} tags; a device has at most {MAX_TAGS}", tags.len()));
    }
    for (k, v) in tags {
        let key_chars = k.chars().count();
        if key_chars == 0 {
            return Err("tag keys must not be empty".into());
        }
        if key_chars > MAX_TAG_KEY_CHARS || k.chars().any(char::is_control) {
            return Err(format!(
                "tag key {k:?} must have at most {MAX_TAG_KEY_CHARS} characters and no control characters"
            ));
        }
        if v.chars().count() > MAX_TAG_VALUE_CHARS {
            return Err(format!("the value of tag {k:?} has more than {MAX_TAG_VALUE_CHARS} characters"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules() {
        assert!(check_product_key("a1demo").is_ok());
        for bad in ["", "a1-demo", &"a".repeat(21)] {
            assert!(check_product_key(bad).is_err(), "{bad}");
        }
        for ok in ["dev1", "a.b-c_d@e:f", &"d".repeat(32)] {
            assert!(check_device_name(ok).is_ok(), "{ok}");
        }
        for bad in ["d1", "dev 2", "dév1", &"d".repeat(33)] {
            assert!(check_device_name(bad).is_err(), "{bad}");
        }
        assert!(check_device_secret("s").is_ok());
        assert!(check_device_secret("").is_err());
        let long = "S".repeat(65);
        let err = check_device_secret(&long).unwrap_err();
        assert!(!err.contains("SSS"), "{err}");
        assert!(check_category("CustomCategory").is_ok());
        for bad in ["", "a b", &"c".repeat(65)] {
            assert!(check_category(bad).is_err(), "{bad}");
        }
        let tags = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert!(check_tags(tags(&[("room", "lab"), ("floor", "")]).iter()).is_ok());
        assert!(check_tags(tags(&[("", "x")]).iter()).is_err());
        assert!(check_tags(tags(&[("a\nb", "x")]).iter()).is_err());
        let long = "v".repeat(129);
        assert!(check_tags(tags(&[("k", &long)]).iter()).unwrap_err().contains("\"k\""));
        let many: std::collections::BTreeMap<String, String> =
            (0..101).map(|i| (i.to_string(), String::new())).collect();
        assert!(check_tags(many.iter()).is_err());
    }
}
