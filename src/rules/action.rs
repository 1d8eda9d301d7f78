//! Actions of a rule, kept as data: running them (forwarding to consumer groups, republishing)
//! belongs to the forwarding stage.
//!
//! ```text
//! -- action: amqp GROUP_ID [tag=CONST|tag=${field}]
//! -- action: republish /pk/${deviceName()}/user/get
//! -- error_action: amqp ERRORS_GROUP
//! ```

use super::row::Row;
use crate::message::Message;

/// Longest tag: the platform's limit.
pub const MAX_TAG: usize = 128;

/// One action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward the result to an AMQP consumer group.
    Amqp {
        /// Consumer group id.
        group: String,
        /// Optional tag: a constant or `${field}`; no tag when the field is missing.
        tag: Option<Template>,
    },
    /// Publish the result to an MQTT topic.
    Republish {
        /// Target topic.
        topic: Template,
    },
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// `${field}` of the result.
    Field(String),
    /// `${deviceName()}`, `${productKey()}`, `${clientId()}`, `${messageId()}`, `${topic()}`.
    Func(&'static str),
    /// `${topic(n)}`.
    TopicLevel(usize),
}

/// Text with `${...}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub(crate) Vec<Part>);

const TEMPLATE_FUNCS: [&str; 5] = ["deviceName", "productKey", "clientId", "messageId", "topic"];

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    /// Unclosed or empty placeholders and unknown functions.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Lit(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| format!("unclosed '${{' in {text:?}"))?;
            let inner = after[..end].trim();
            parts.push(placeholder(inner)?);
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Ok(Self(parts))
    }

    /// True when the template is plain text.
    pub(crate) fn is_constant(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Part::Lit(_)))
    }

    /// Fills the template; `None` when a field is missing from the result.
    pub(crate) fn render(&self, row: &Row, msg: &Message) -> Option<String> {
        let (topic, _) = msg.forwarded();
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(f) => match row.get(f)? {
                    serde_json::Value::String(s) => out.push_str(s),
                    other => out.push_str(&other.to_string()),
                },
                Part::Func("deviceName") => out.push_str(&msg.origin.device_name),
                Part::Func("productKey") => out.push_str(&msg.origin.product_key),
                Part::Func("clientId") => out.push_str(&msg.origin.client_id),
                Part::Func("messageId") => out.push_str(&msg.id.to_string()),
                Part::Func(_) => out.push_str(topic),
                Part::TopicLevel(n) => {
                    out.push_str(topic.strip_prefix('/').unwrap_or(topic).split('/').nth(n - 1)?)
                }
            }
        }
        Some(out)
    }
}

/// Writes the template back as text (`/a/${dn}/${deviceName()}`), as a header line holds it.
impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            match p {
                Part::Lit(s) => f.write_str(s)?,
                Part::Field(name) => write!(f, "${{{name}}}")?,
                Part::Func(name) => write!(f, "${{{name}()}}")?,
                Part::TopicLevel(n) => write!(f, "${{topic({n})}}")?,
            }
        }
        Ok(())
    }
}

/// Writes the action back as the value of its header line (`amqp G tag=${dn}`); parsing
/// the text gives the same action.
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Amqp { group, tag: None } => write!(f, "amqp {group}"),
            Self::Amqp { group, tag: Some(tag) } => write!(f, "amqp {group} tag={tag}"),
            Self::Republish { topic } => write!(f, "republish {topic}"),
        }
    }
}

fn placeholder(inner: &str) -> Result<Part, String> {
    if inner.is_empty() {
        return Err("empty placeholder ${}".into());
    }
    let Some(open) = inner.find('(') else { return Ok(Part::Field(inner.to_string())) };
    let name = inner[..open].trim();
    let args =
        inner[open + 1..].strip_suffix(')').ok_or_else(|| format!("missing ')' in ${{{inner}}}"))?.trim();
    let known = TEMPLATE_FUNCS.iter().find(|f| f.eq_ignore_ascii_case(name)).ok_or_else(|| {
        format!(
            "unknown function {name}() in ${{{inner}}}; templates know {}",
            TEMPLATE_FUNCS.join("(), ") + "()"
        )
    })?;
    match (*known, args) {
        (f, "") => Ok(Part::Func(f)),
        ("topic", n) => match n.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Part::TopicLevel(n)),
            _ => Err(format!("topic(n) needs a level number >= 1 in ${{{inner}}}")),
        },
        (f, _) => Err(format!("{f}() takes no argument in ${{{inner}}}")),
    }
}

impl Action {
    /// Parses the value of an `action:` or `error_action:` header line.
    ///
    /// # Errors
    /// Unknown kinds, missing targets, bad tags or templates.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut words = text.split_whitespace();
        let kind = words.next().ok_or("empty action; write `amqp GROUP` or `republish TOPIC`")?;
        match kind.to_ascii_lowercase().as_str() {
            "amqp" => {
                let group = words.next().ok_or("amqp needs a consumer group id: `amqp GROUP [tag=...]`")?;
                if group.contains("${") || group.contains('=') {
                    return Err(format!("{group:?} is not a consumer group id"));
                }
                let tag = match words.next() {
                    None => None,
                    Some(t) => {
                        let v = t
                            .strip_prefix("tag=")
                            .ok_or_else(|| format!("unknown amqp option {t:?}; only tag=... is known"))?;
                        Some(parse_tag(v)?)
                    }
                };
                if let Some(extra) = words.next() {
                    return Err(format!("unexpected {extra:?} after the amqp action"));
                }
                Ok(Self::Amqp { group: group.to_string(), tag })
            }
            "republish" => {
                let topic = words.next().ok_or("republish needs a topic: `republish /pk/dn/user/get`")?;
                if let Some(extra) = words.next() {
                    return Err(format!("unexpected {extra:?} after the republish topic"));
                }
                if !topic.starts_with('/') {
                    return Err(format!("the republish topic {topic:?} must start with '/'"));
                }
                let t = Template::parse(topic)?;
                if t.0.iter().any(|p| matches!(p, Part::Lit(s) if s.contains('+') || s.contains('#'))) {
                    return Err(format!("the republish topic {topic:?} must not contain wildcards"));
                }
                Ok(Self::Republish { topic: t })
            }
            other => Err(format!("unknown action {other:?}; known: amqp, republish")),
        }
    }
}

fn parse_tag(v: &str) -> Result<Template, String> {
    let t = Template::parse(v)?;
    if t.is_constant() {
        let ok = !v.is_empty()
            && v.len() <= MAX_TAG
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(format!("a constant tag is 1-{MAX_TAG} letters, digits, '_' or '-', got {v:?}"));
        }
    } else if !matches!(t.0.as_slice(), [Part::Field(_)] | [Part::Func(_)] | [Part::TopicLevel(_)]) {
        return Err(format!("a tag is a constant or one ${{field}}, got {v:?}"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parse_and_render() {
        let a = Action::parse("amqp g_alerts tag=${dn}").unwrap();
        let Action::Amqp { group, tag: Some(tag) } = &a else { panic!("{a:?}") };
        assert_eq!(group, "g_alerts");
        let msg = crate::rules::functions::testing::message("/a1demo/dev1/user/update", b"{}");
        let mut row = Row::default();
        row.set("dn", json!("dev1"));
        assert_eq!(tag.render(&row, &msg).as_deref(), Some("dev1"));
        assert_eq!(tag.render(&Row::default(), &msg), None);
        let Action::Republish { topic } =
            Action::parse("republish /${topic(1)}/${deviceName()}/user/${dn}").unwrap()
        else {
            panic!()
        };
        assert_eq!(topic.render(&row, &msg).as_deref(), Some("/a1demo/dev1/user/dev1"));
        for bad in [
            "",
            "kafka x",
            "amqp",
            "amqp g tag=",
            "amqp g tag=a b",
            "amqp g colour=red",
            "republish",
            "republish a/b",
            "republish /a/+/b",
            "republish /a/${nope()}",
            "republish /a/${x",
            "amqp g tag=x-${a}",
        ] {
            assert!(Action::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "amqp g_alerts",
            "amqp g_alerts tag=${dn}",
            "amqp g tag=const-1",
            "amqp g tag=${deviceName()}",
            "republish /${topic(1)}/${deviceName()}/user/${dn}",
        ] {
            let a = Action::parse(text).unwrap();
            assert_eq!(a.to_string(), text);
            assert_eq!(Action::parse(&a.to_string()).unwrap(), a);
        }
        assert_eq!(
            Action::parse("AMQP  g   tag=${DeviceName()}").unwrap().to_string(),
            "amqp g tag=${deviceName()}"
        );
    }
}
