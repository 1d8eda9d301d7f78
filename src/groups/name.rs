//! The consumer-group name rule of the modelled platform: 4 to 30 characters of letters,
//! digits, underscore, Chinese or Japanese, where each Chinese or Japanese character counts as 2.

/// Shortest name, in counted characters.
pub const MIN: usize = 4;
/// Longest name, in counted characters.
pub const MAX: usize = 30;

fn is_cjk(c: char) -> bool {
    matches!(c,
        '\u{4E00}'..='\u{9FFF}'   // CJK unified ideographs
        | '\u{3400}'..='\u{4DBF}' // extension A
        | '\u{F900}'..='\u{FAFF}' // compatibility ideographs
        | '\u{3040}'..='\u{309F}' // hiragana
        | '\u{30A0}'..='\u{30FF}' // katakana
        | '\u{31F0}'..='\u{31FF}' // katakana phonetic extensions
        | '\u{FF66}'..='\u{FF9F}' // half-width katakana
    )
}

/// Checks a group name; the error says what is wrong.
///
/// # Errors
/// A character outside the allowed set, or a counted length outside 4..=30.
pub fn validate(name: &str) -> Result<(), String> {
    let mut length = 0;
    for c in name.chars() {
        if is_cjk(c) {
            length += 2;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            length += 1;
        } else {
            return Err(format!(
                "{c:?} is not allowed in a consumer group name: use letters, digits, underscore, Chinese or Japanese"
            ));
        }
    }
    if !(MIN..=MAX).contains(&length) {
        return Err(format!(
            "a consumer group name must be {MIN} to {MAX} characters long (Chinese and Japanese characters count as 2); {name:?} counts {length}"
        ));
    }
    Ok(())
}

/// Longest group id.
pub const MAX_ID: usize = 64;

/// Checks a group id chosen by the caller: 1 to 64 ASCII letters, digits, `_` and `-`, as in the
/// configuration file.
///
/// # Errors
/// An empty or long id, or another character.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(format!("an id has 1 to {MAX_ID} characters, got {}", id.len()));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(format!("{id:?} contains {c:?}; an id may only contain ASCII letters, digits, _ and -"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn the_platform_rule() {
        let ok = ["abcd", "alerts_group", "数据组", "データ", "g_1234567890123456789012345678", "组a_b"];
        for name in ok {
            assert!(validate(name).is_ok(), "{name}: {:?}", validate(name));
        }
        let bad = ["abc", "", "组a", "a-b-c-d", "with space", &"x".repeat(31), &"组".repeat(16)];
        for name in bad {
            assert!(validate(name).is_err(), "{name}");
        }
        assert!(validate(&"组".repeat(15)).is_ok(), "15 × 2 = 30");
    }
}
