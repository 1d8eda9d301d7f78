//! `/api/v1/rules`: the rule files of the rules directory, read and written through the API.
//!
//! A write is a file in the rules directory (`{name}.sql`, header lines then the SQL), written
//! atomically and applied through the same reloader the directory watch uses before the answer
//! goes out: when a write is answered, the rule set in force has the change. Hand-written files
//! are listed, changed and removed the same way. File I/O and compiling run on the blocking pool.

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::ApiState;
use crate::catalog::RuleWriteError;
use crate::logsafe::Untrusted;
use crate::registry::Registry;
use crate::rules::dry_run::{self, DryRun, Matched, Sample, Subject, TestError};
use crate::rules::edit::{EditError, RuleSpec};
use crate::rules::error::FieldDiagnostic;
use crate::rules::{DataType, EvalContext, MetricsSnapshot, Row, Rule};

/// A rule as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleView {
    name: String,
    description: String,
    enabled: bool,
    data_type: BodyDataType,
    /// The statement without the header lines.
    sql: String,
    /// Action texts as header lines hold them (`amqp G tag=${dn}`).
    actions: Vec<String>,
    error_action: Option<String>,
    /// The file name in the rules directory.
    file: String,
    metrics: MetricsSnapshot,
}

impl RuleView {
    fn of(r: &Rule) -> Self {
        Self {
            name: r.name.clone(),
            description: r.description.clone(),
            enabled: r.enabled,
            data_type: if r.data_type == DataType::Binary {
                BodyDataType::Binary
            } else {
                BodyDataType::Json
            },
            sql: crate::rules::header::statement(&r.source),
            actions: r.actions.iter().map(ToString::to_string).collect(),
            error_action: r.error_action.as_ref().map(ToString::to_string),
            file: FsPath::new(&r.origin)
                .file_name()
                .map_or_else(|| r.origin.clone(), |f| f.to_string_lossy().into_owned()),
            metrics: r.metrics.snapshot(),
        }
    }
}

/// The answer to a write: the rule and what looks wrong without being an error.
#[derive(Debug, Serialize)]
pub struct Written {
    #[serde(flatten)]
    rule: RuleView,
    warnings: Vec<String>,
}

/// `json` or `binary`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyDataType {
    /// Parsed JSON payloads.
    #[default]
    Json,
    /// Raw payloads.
    Binary,
}

impl From<BodyDataType> for DataType {
    fn from(d: BodyDataType) -> Self {
        match d {
            BodyDataType::Json => DataType::Json,
            BodyDataType::Binary => DataType::Binary,
        }
    }
}

fn yes() -> bool {
    true
}

/// `POST /rules` and `PUT /rules/{name}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleBody {
    /// Required by POST; PUT takes it from the path (a body name must be the same).
    #[serde(default)]
    name: Option<String>,
    /// The statement, without header lines.
    sql: String,
    /// Action texts, in order (`amqp G [tag=...]`, `republish /TOPIC`).
    actions: Vec<String>,
    /// The error action's text.
    #[serde(default)]
    error_action: Option<String>,
    /// One line of free text.
    #[serde(default)]
    description: Option<String>,
    /// Default true.
    #[serde(default = "yes")]
    enabled: bool,
    /// Default json.
    #[serde(default)]
    data_type: BodyDataType,
}

impl RuleBody {
    fn spec(self, name: String) -> RuleSpec {
        RuleSpec {
            name,
            description: self.description.unwrap_or_default(),
            enabled: self.enabled,
            data_type: self.data_type.into(),
            actions: self.actions,
            error_action: self.error_action,
            sql: self.sql,
        }
    }
}

/// `PATCH /rules/{name}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRule {
    /// Enable or disable.
    enabled: bool,
}

/// `POST /rules/test` body: a rule (`sql`, or the `name` of one in force) and one message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TestBody {
    #[serde(default)]
    sql: Option<String>,
    #[serde(default)]
    name: Option<String>,
    /// For `sql`; default json.
    #[serde(default)]
    data_type: Option<BodyDataType>,
    topic: String,
    /// A string is the payload's bytes as they are; any other JSON value is sent as JSON text.
    payload: serde_json::Value,
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    product_key: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    /// Device tags for `attribute()`; default: the device's tags when it exists.
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
}

/// `POST /rules/test` answer.
#[derive(Debug, Serialize)]
pub struct TestAnswer {
    matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<TestResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// The evaluation error, when the rule failed for the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The result object (in SELECT order), or the payload text of a binary rule selecting `*`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum TestResult {
    /// The SELECT result.
    Row(Row),
    /// The payload, unchanged (as text; invalid UTF-8 becomes U+FFFD).
    Raw(String),
}

/// An API error, or a rule that does not compile (with its diagnostics).
#[derive(Debug)]
pub enum RulesError {
    /// Any other refusal.
    Api(ApiError),
    /// 400 `InvalidRule`: `{"code", "message", "diagnostics": [{"field", "line"?, "col"?,
    /// "message", "hint"?}]}`.
    Invalid(Vec<FieldDiagnostic>),
}

impl From<ApiError> for RulesError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<JsonRejection> for RulesError {
    fn from(e: JsonRejection) -> Self {
        Self::Api(e.into())
    }
}

impl From<EditError> for RulesError {
    fn from(e: EditError) -> Self {
        let message = e.to_string();
        match e {
            EditError::Invalid(d) => Self::Invalid(d),
            EditError::InvalidName(_) => {
                Self::Api(ApiError::new(StatusCode::BAD_REQUEST, "InvalidName", message))
            }
            EditError::Exists(_) => Self::Api(ApiError::new(StatusCode::CONFLICT, "RuleExists", message)),
            EditError::NotFound(_) => Self::Api(ApiError::not_found(message)),
            EditError::Limit => Self::Api(ApiError::new(StatusCode::CONFLICT, "LimitExceeded", message)),
            EditError::Io { .. } => Self::Api(ApiError::internal(message)),
        }
    }
}

impl From<RuleWriteError> for RulesError {
    fn from(e: RuleWriteError) -> Self {
        match e {
            RuleWriteError::Edit(e) => e.into(),
            RuleWriteError::UnknownGroups(_) => {
                Self::Api(ApiError::new(StatusCode::BAD_REQUEST, "UnknownConsumerGroup", e.to_string()))
            }
            RuleWriteError::Task(_) => Self::Api(ApiError::internal(e.to_string())),
            RuleWriteError::Cluster(_) => {
                Self::Api(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ClusterUnavailable", e.to_string()))
            }
            RuleWriteError::Changed(_) => {
                Self::Api(ApiError::new(StatusCode::CONFLICT, "Conflict", e.to_string()))
            }
        }
    }
}

impl From<TestError> for RulesError {
    fn from(e: TestError) -> Self {
        let message = e.to_string();
        match e {
            TestError::Invalid(d) => Self::Invalid(d),
            TestError::NotFound(_) => Self::Api(ApiError::not_found(message)),
            TestError::Stale { .. } => Self::Api(ApiError::internal(message)),
        }
    }
}

impl IntoResponse for RulesError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Invalid(diagnostics) => {
                let message = format!(
                    "the rule does not compile: {}",
                    diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
                );
                let list: Vec<_> = diagnostics
                    .into_iter()
                    .map(|d| {
                        let mut v = serde_json::json!({"field": d.field, "message": d.message});
                        if let (Some(line), Some(col)) = (d.line, d.col) {
                            v["line"] = line.into();
                            v["col"] = col.into();
                        }
                        if let Some(h) = d.hint {
                            v["hint"] = h.into();
                        }
                        v
                    })
                    .collect();
                let body =
                    serde_json::json!({"code": "InvalidRule", "message": message, "diagnostics": list});
                (StatusCode::BAD_REQUEST, Json(body)).into_response()
            }
        }
    }
}

/// Runs `f` on the blocking pool: it takes the reloader's lock, compiles and writes files.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RulesError> + Send + 'static,
) -> Result<T, RulesError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("the rule file task failed: {e}")))?
}

/// What is suspicious without being wrong: a FROM filter naming a product that does not exist
/// (the rule matches nothing until it does).
fn warnings(registry: &Registry, rule: &Rule) -> Vec<String> {
    match rule.from_product() {
        Some(product) if registry.product(product).is_none() => vec![format!(
            "FROM \"{}\": product {product} does not exist, so the rule matches nothing yet",
            rule.topic_filter()
        )],
        _ => Vec::new(),
    }
}

/// The rule's warnings, plus one per subscription forwarding the same data.
fn written(state: &ApiState, rule: &Rule) -> Written {
    let mut warnings = warnings(state.devices.registry(), rule);
    let subscriptions = state.subscriptions.list();
    warnings.extend(subscriptions.iter().filter_map(|s| crate::subscriptions::overlap(rule, s)));
    for w in &warnings {
        tracing::warn!(rule = %Untrusted(&rule.name), warning = %w, "Rule saved with a warning");
    }
    Written { rule: RuleView::of(rule), warnings }
}

/// `GET /rules`: every rule in force, by name.
pub async fn list(State(state): State<ApiState>) -> Json<Vec<RuleView>> {
    Json(state.rules.get().rules().iter().map(|r| RuleView::of(r)).collect())
}

/// `GET /rules/{name}`.
pub async fn get(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<RuleView>, ApiError> {
    let set = state.rules.get();
    let rule = set.get(&name).ok_or_else(|| ApiError::not_found(format!("rule {name} does not exist")))?;
    Ok(Json(RuleView::of(rule)))
}

/// `POST /rules`: writes `{name}.sql` and puts it in force.
pub async fn create(
    State(state): State<ApiState>,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Written>), RulesError> {
    let Json(mut body) = body?;
    let name = body.name.take().ok_or_else(|| ApiError::bad_body("missing field `name`"))?;
    let rule = state.catalog.create_rule(body.spec(name)).await?;
    tracing::info!(rule = %Untrusted(&rule.name), "Rule created through the API");
    Ok((StatusCode::CREATED, Json(written(&state, &rule))))
}

/// `PUT /rules/{name}`: replaces the rule's file (wherever it is) and puts it in force.
pub async fn replace(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<RuleBody>, JsonRejection>,
) -> Result<Json<Written>, RulesError> {
    let Json(mut body) = body?;
    if let Some(other) = body.name.take().filter(|n| *n != name) {
        return Err(ApiError::bad_body(format!(
            "name: the body names rule {other:?} but the path names {name:?}; a rule cannot be renamed \
             (create the new one, then delete the old one)"
        ))
        .into());
    }
    let spec = body.spec(name.clone());
    let rule = state.catalog.replace_rule(name, spec).await?;
    tracing::info!(rule = %Untrusted(&rule.name), "Rule replaced through the API");
    Ok(Json(written(&state, &rule)))
}

/// `PATCH /rules/{name}` `{"enabled": bool}`: rewrites the `enabled` header line only.
pub async fn patch(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<PatchRule>, JsonRejection>,
) -> Result<Json<RuleView>, RulesError> {
    let Json(body) = body?;
    let rule = state.catalog.set_rule_enabled(name, body.enabled).await?;
    tracing::info!(rule = %Untrusted(&rule.name), enabled = rule.enabled, "Rule enabled or disabled through the API");
    Ok(Json(RuleView::of(&rule)))
}

/// `DELETE /rules/{name}`: removes the rule's file and the rule.
pub async fn delete(
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<StatusCode, RulesError> {
    state.catalog.delete_rule(name.clone()).await?;
    tracing::info!(rule = %Untrusted(&name), "Rule deleted through the API");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /rules/{name}`: only `POST /rules/test` exists. `test` is also a valid rule name, so
/// one route serves both: `GET /rules/test` is the rule named `test`.
pub async fn post_named(
    state: State<ApiState>,
    Path(name): Path<String>,
    body: Result<Json<TestBody>, JsonRejection>,
) -> Result<Json<TestAnswer>, RulesError> {
    if name != "test" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!(
                "POST /api/v1/rules/{name}: use PUT to replace a rule, POST /api/v1/rules/test to test one"
            ),
        )
        .into());
    }
    test(state, body).await
}

/// `POST /rules/test`: one rule on one message, as `iotpipe rules test` runs it, with the
/// decoders and scripts of the rules directory ([`dry_run::run_live`]). The counters of a rule in
/// force do not move.
pub async fn test(
    State(state): State<ApiState>,
    body: Result<Json<TestBody>, JsonRejection>,
) -> Result<Json<TestAnswer>, RulesError> {
    let Json(body) = body?;
    let subject = match (body.sql, body.name) {
        (Some(sql), None) => Subject::Sql { sql, data_type: body.data_type.unwrap_or_default().into() },
        (None, Some(_)) if body.data_type.is_some() => {
            return Err(ApiError::bad_body("dataType: goes with sql; a named rule has its own").into())
        }
        (None, Some(name)) => Subject::Named(name),
        _ => return Err(ApiError::bad_body("give one of sql and name").into()),
    };
    let payload = match body.payload {
        serde_json::Value::String(s) => Bytes::from(s),
        other => Bytes::from(other.to_string()),
    };
    let sample = Sample {
        topic: body.topic,
        payload,
        product_key: body.product_key,
        device_name: body.device_name,
        client_id: body.client_id,
    };
    let tags = body.tags.unwrap_or_else(|| {
        let (product_key, device_name) = sample.identity();
        let registry = state.devices.registry();
        registry.device(&product_key, &device_name).map(|d| d.tags.clone()).unwrap_or_default()
    });
    let live = state.live_rules.clone();
    let outcome =
        blocking(move || Ok(dry_run::run_live(&live, subject, &sample, &EvalContext { tags: Some(&tags) })?))
            .await?;
    Ok(Json(TestAnswer::of(outcome)))
}

impl TestAnswer {
    fn of(outcome: DryRun) -> Self {
        match outcome {
            DryRun::Matched(m) => Self {
                matched: true,
                result: Some(match m {
                    Matched::Row(row) => TestResult::Row(row),
                    Matched::Raw(bytes) => TestResult::Raw(String::from_utf8_lossy(&bytes).into_owned()),
                }),
                reason: None,
                error: None,
            },
            DryRun::Missed(why) => {
                Self { matched: false, result: None, reason: Some(why.to_string()), error: None }
            }
            DryRun::Failed(e) => Self {
                matched: false,
                result: None,
                reason: Some(format!("the rule failed for this message: {e}")),
                error: Some(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_show_header_fields_and_the_bare_statement() {
        let text = "-- name: hot\n-- description: Hot\n-- data_type: binary\n-- action: amqp G tag=${dn}\n\
                    -- error_action: republish /a/${deviceName()}/user/err\nSELECT to_hex(*) AS h FROM \"/a/+/user/raw\"\n";
        let rule = Rule::from_file("/rules/x.sql", "x", text, None).unwrap();
        let v = serde_json::to_value(RuleView::of(&rule)).unwrap();
        assert_eq!(v["name"], "hot");
        assert_eq!(v["dataType"], "binary");
        assert_eq!(v["sql"], "SELECT to_hex(*) AS h FROM \"/a/+/user/raw\"\n");
        assert_eq!(v["actions"], serde_json::json!(["amqp G tag=${dn}"]));
        assert_eq!(v["errorAction"], "republish /a/${deviceName()}/user/err");
        assert_eq!(v["file"], "x.sql");
        assert_eq!(v["metrics"]["failed.exception"], 0);
    }
}
