//! The rules for what the registry holds, checked here for the configuration file and the API
//! alike: product keys, device names and device secrets.

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
    }
}
