//! Sentinel simulator HTTP surface. Handlers copy what they need out of the
//! state lock and never hold it across an await.

// A ready `Response` is the helpers' error path (returned as is by handlers);
// boxing it would only add noise to a test simulator.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{
    API_VERSION, ARM_SCOPE, INGESTION_API_VERSION, LOG_ANALYTICS_SCOPE, MONITOR_SCOPE, Shared,
    StoredRule, Token,
};
use crate::common::{self, Fault, RunStatus, StoredEvent};

type Sim = State<Arc<Shared>>;

const RULES: &str = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.OperationalInsights/workspaces/{ws}/providers/Microsoft.SecurityInsights/alertRules";

/// Largest request body read (1 MiB).
const MAX_BODY: usize = 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route(RULES, get(list_rules))
        .route(
            &format!("{RULES}/{{rule}}"),
            get(get_rule).put(put_rule).delete(delete_rule),
        )
        .route("/v1/workspaces/{workspace}/query", post(query))
        .route("/dataCollectionRules/{dcr}/streams/{stream}", post(ingest))
        .fallback(|| async { arm_error_plain(StatusCode::NOT_FOUND, "NotFound", "no such path") })
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            count_and_fault,
        ))
        .with_state(shared)
}

fn arm_error_plain(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn arm_error(shared: &Shared, status: StatusCode, code: &str, message: &str) -> Response {
    let message = match &shared.error_suffix {
        Some(suffix) => {
            shared.suffixed_errors.fetch_add(1, Ordering::SeqCst);
            format!("{message} {suffix}")
        }
        None => message.to_owned(),
    };
    arm_error_plain(status, code, &message)
}

async fn count_and_fault(State(shared): Sim, request: Request, next: Next) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    if path.contains("/alertRules") {
        shared.rule_requests.fetch_add(1, Ordering::SeqCst);
    }
    let method = request.method().clone();
    let fault = {
        let mut state = shared.lock();
        let fault = state.fault.take();
        common::sync_drop_flag(&state.fault, &shared.drop_flag);
        fault
    };
    let response = match fault {
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = match status.as_u16() {
                401 => "InvalidAuthenticationToken",
                403 => "AuthorizationFailed",
                409 => "Conflict",
                412 => "PreconditionFailed",
                _ => "InternalServerError",
            };
            arm_error(&shared, status, code, "picket-siem-sim injected fault")
        }
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut response = arm_error(
                &shared,
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests, retry later (picket-siem-sim injected fault)",
            );
            if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            next.run(request).await
        }
        Some(Fault::DropConnection) | None => next.run(request).await,
    };
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    response
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- Entra token endpoint ----

async fn token(State(shared): Sim, Path(_tenant): Path<String>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = String::from_utf8_lossy(&body)
        .split('&')
        .filter_map(|p| {
            p.split_once('=')
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        })
        .collect();
    let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let oauth_error = |status: StatusCode, error: &str, text: &str| {
        let text = match &shared.error_suffix {
            Some(s) => {
                shared.suffixed_errors.fetch_add(1, Ordering::SeqCst);
                format!("{text} {s}")
            }
            None => text.to_owned(),
        };
        (
            status,
            axum::Json(
                json!({"error": error, "error_description": text, "error_codes": [7000215]}),
            ),
        )
            .into_response()
    };
    if get("grant_type").as_deref() != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let (Some(client_id), Some(secret)) = (get("client_id"), get("client_secret")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: The request body must contain client_id and client_secret.",
        );
    };
    if !shared
        .clients
        .iter()
        .any(|(id, s)| *id == client_id && *s == secret)
    {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let scope = get("scope").unwrap_or_default();
    if ![ARM_SCOPE, LOG_ANALYTICS_SCOPE, MONITOR_SCOPE].contains(&scope.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    }
    let access_token = format!("sim-{}", uuid::Uuid::new_v4().simple());
    let lifetime = shared.token_lifetime_secs;
    shared.lock().tokens.insert(
        access_token.clone(),
        Token {
            scope,
            expires_at: common::now() + i64::try_from(lifetime).unwrap_or(i64::MAX / 2),
            expired: false,
        },
    );
    shared.tokens_issued.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    }))
    .into_response()
}

/// Checks the bearer token for `scope`; the error answer otherwise.
fn authorize(shared: &Shared, headers: &HeaderMap, scope: &str) -> Result<(), Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let token = presented.and_then(|t| shared.lock().tokens.get(&t).cloned());
    match token {
        Some(t) if t.scope == scope && !t.expired && t.expires_at > common::now() => Ok(()),
        Some(t) if t.scope == scope => Err(arm_error(
            shared,
            StatusCode::UNAUTHORIZED,
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        )),
        _ => Err(arm_error(
            shared,
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )),
    }
}

fn check_api_version(shared: &Shared, uri: &Uri, wanted: &str) -> Result<(), Response> {
    match query_param(uri, "api-version") {
        None => Err(arm_error(
            shared,
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if v == wanted => Ok(()),
        Some(_) => Err(arm_error(
            shared,
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            "The api-version is not supported.",
        )),
    }
}

fn arm_checks(shared: &Shared, headers: &HeaderMap, uri: &Uri) -> Result<(), Response> {
    authorize(shared, headers, ARM_SCOPE)?;
    check_api_version(shared, uri, API_VERSION)
}

// ---- alertRules ----

/// The resource as ARM shows it; `id` is the resource path (no host), as in ARM.
fn rule_json(path: &str, rule: &StoredRule) -> Value {
    json!({
        "id": format!("{path}/{}", rule.name),
        "name": rule.name,
        "type": "Microsoft.SecurityInsights/alertRules",
        "kind": rule.kind,
        "etag": rule.etag,
        "properties": rule.properties,
    })
}

fn collection_path(uri: &Uri) -> String {
    let path = uri.path();
    match path.find("/alertRules") {
        Some(i) => path[..i + "/alertRules".len()].to_owned(),
        None => path.to_owned(),
    }
}

async fn list_rules(State(shared): Sim, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = arm_checks(&shared, &headers, &uri) {
        return r;
    }
    let skip: usize = query_param(&uri, "$skipToken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let base = shared
        .next_link_base
        .clone()
        .unwrap_or_else(|| shared.base_url());
    let path = collection_path(&uri);
    let (page, total): (Vec<Value>, usize) = {
        let state = shared.lock();
        let page = state
            .rules
            .values()
            .skip(skip)
            .take(shared.page_size)
            .map(|r| rule_json(&path, r))
            .collect();
        (page, state.rules.len())
    };
    let mut body = json!({ "value": page });
    if skip + shared.page_size < total {
        body["nextLink"] = json!(format!(
            "{base}{path}?api-version={API_VERSION}&$skipToken={}",
            skip + shared.page_size
        ));
    }
    axum::Json(body).into_response()
}

async fn get_rule(
    State(shared): Sim,
    Path((_, _, _, rule)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(r) = arm_checks(&shared, &headers, &uri) {
        return r;
    }
    let found = shared.lock().rules.get(&rule).cloned();
    match found {
        Some(r) => axum::Json(rule_json(&collection_path(&uri), &r)).into_response(),
        None => arm_error(
            &shared,
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("Alert rule {rule} was not found"),
        ),
    }
}

async fn delete_rule(
    State(shared): Sim,
    Path((_, _, _, rule)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Err(r) = arm_checks(&shared, &headers, &uri) {
        return r;
    }
    if shared.lock().rules.remove(&rule).is_some() {
        StatusCode::OK.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

const SEVERITIES: [&str; 4] = ["High", "Medium", "Low", "Informational"];
const OPERATORS: [&str; 4] = ["GreaterThan", "LessThan", "Equal", "NotEqual"];

/// Whether `text` is an ISO 8601 duration of the forms ARM accepts here
/// (`PT5M`, `PT1H`, `P1D`, `PT1H30M`).
fn is_duration(text: &str) -> bool {
    let Some(rest) = text.strip_prefix('P') else {
        return false;
    };
    let (days, time) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let unit_ok = |s: &str, units: &[char]| {
        let mut digits = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits = true;
            } else if units.contains(&c) && digits {
                digits = false;
            } else {
                return false;
            }
        }
        !digits
    };
    let has_any = !days.is_empty() || time.is_some_and(|t| !t.is_empty());
    has_any
        && unit_ok(days, &['D'])
        && time.is_none_or(|t| !t.is_empty() && unit_ok(t, &['H', 'M', 'S']))
}

/// The first problem with a Scheduled rule's properties, as ARM words it.
fn invalid_property(props: &Value) -> Option<String> {
    let required_str = [
        "displayName",
        "query",
        "queryFrequency",
        "queryPeriod",
        "suppressionDuration",
    ];
    for name in required_str {
        match props.get(name) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => return Some(format!("The '{name}' property must be a non-empty string.")),
            None => return Some(format!("The '{name}' property is required.")),
        }
    }
    for name in ["enabled", "suppressionEnabled"] {
        if !props.get(name).is_some_and(Value::is_boolean) {
            return Some(format!(
                "The '{name}' property is required and must be a boolean."
            ));
        }
    }
    if props
        .get("triggerThreshold")
        .is_none_or(|v| v.as_i64().is_none_or(|n| i32::try_from(n).is_err()))
    {
        return Some("The 'triggerThreshold' property is required and must be an int32.".into());
    }
    let sev = props
        .get("severity")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !SEVERITIES.contains(&sev) {
        return Some(
            "The 'severity' property must be one of High, Medium, Low, Informational.".into(),
        );
    }
    let op = props
        .get("triggerOperator")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !OPERATORS.contains(&op) {
        return Some("The 'triggerOperator' property is invalid.".into());
    }
    // Optional, but when given ARM requires its `createIncident` flag.
    if let Some(ic) = props.get("incidentConfiguration")
        && !ic.get("createIncident").is_some_and(Value::is_boolean)
    {
        return Some(
            "The 'incidentConfiguration.createIncident' property is required and must be a boolean."
                .into(),
        );
    }
    for name in ["queryFrequency", "queryPeriod", "suppressionDuration"] {
        if !props
            .get(name)
            .and_then(Value::as_str)
            .is_some_and(is_duration)
        {
            return Some(format!(
                "The '{name}' property is not a valid ISO 8601 duration."
            ));
        }
    }
    None
}

async fn put_rule(
    State(shared): Sim,
    Path((_, _, _, rule)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Err(r) = arm_checks(&shared, &headers, &uri) {
        return r;
    }
    if body.len() > MAX_BODY {
        return arm_error(
            &shared,
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            "The request is too large.",
        );
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return arm_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized.",
        );
    };
    shared.lock().bodies.push(value.clone());
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != "Scheduled" {
        return arm_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The 'kind' property is required; this simulator supports 'Scheduled' only.",
        );
    }
    let Some(props) = value.get("properties").filter(|p| p.is_object()) else {
        return arm_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The 'properties' property is required.",
        );
    };
    if let Some(problem) = invalid_property(props) {
        return arm_error(&shared, StatusCode::BAD_REQUEST, "BadRequest", &problem);
    }
    let sent_etag = value.get("etag").and_then(Value::as_str).map(str::to_owned);
    let mut properties = props.clone();
    properties["lastModifiedUtc"] = json!(common::rfc3339(common::now()));
    let (status, stored) = {
        let mut state = shared.lock();
        let existing = state.rules.get(&rule).map(|r| r.etag.clone());
        match (&existing, &sent_etag) {
            (Some(current), Some(sent)) if current != sent => {
                drop(state);
                return arm_error(
                    &shared,
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "The etag in the request does not match the current etag of the alert rule.",
                );
            }
            (None, Some(_)) => {
                drop(state);
                return arm_error(
                    &shared,
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "An etag was given for an alert rule that does not exist.",
                );
            }
            _ => {}
        }
        let etag = state.next_etag();
        let stored = StoredRule {
            name: rule.clone(),
            etag,
            kind: kind.to_owned(),
            properties,
        };
        state.rules.insert(rule.clone(), stored.clone());
        let status = if existing.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        (status, stored)
    };
    (
        status,
        axum::Json(rule_json(&collection_path(&uri), &stored)),
    )
        .into_response()
}

// ---- Log Analytics query API ----

fn la_error(shared: &Shared, code: &str, message: &str) -> Response {
    let message = match &shared.error_suffix {
        Some(s) => {
            shared.suffixed_errors.fetch_add(1, Ordering::SeqCst);
            format!("{message} {s}")
        }
        None => message.to_owned(),
    };
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": {
            "message": "The request had some invalid properties",
            "code": "BadArgumentError",
            "correlationId": uuid::Uuid::new_v4().to_string(),
            "innererror": {"code": code, "message": message},
        }})),
    )
        .into_response()
}

fn table(columns: &[(&str, &str)], row: Vec<Value>) -> Value {
    json!({"tables": [{
        "name": "PrimaryResult",
        "columns": columns.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
        "rows": [row],
    }]})
}

async fn query(State(shared): Sim, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&shared, &headers, LOG_ANALYTICS_SCOPE) {
        return r;
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return la_error(
            &shared,
            "InvalidJson",
            "The request body is not valid JSON.",
        );
    };
    let Some(text) = value.get("query").and_then(Value::as_str) else {
        return la_error(&shared, "MissingQuery", "The 'query' property is required.");
    };
    if text.contains("SentinelHealth") {
        // The query API's `timespan` (ISO 8601 `start/end`) bounds
        // `TimeGenerated`; without it the query's own filters apply (none here).
        let span = value
            .get("timespan")
            .and_then(Value::as_str)
            .and_then(|t| t.split_once('/'))
            .and_then(|(a, b)| Some((common::parse_rfc3339(a)?, common::parse_rfc3339(b)?)));
        return health(&shared, text, span);
    }
    match count(&shared, text) {
        Some(n) => axum::Json(table(&[("Count", "long")], vec![json!(n)])).into_response(),
        None => la_error(
            &shared,
            "SemanticError",
            "A semantic error occurred: the query form is not supported by picket-siem-sim.",
        ),
    }
}

fn datetime_arg(text: &str) -> Option<i64> {
    let inner = text.trim().strip_prefix("datetime(")?.strip_suffix(')')?;
    common::parse_rfc3339(inner.trim())
}

/// `T | where TimeGenerated between (datetime(A) .. datetime(B)) | where ... | count`.
fn count(shared: &Shared, text: &str) -> Option<u64> {
    let mut segments = text.split('|').map(str::trim);
    let table_name = segments.next()?.to_owned();
    if table_name.is_empty() || table_name.contains(' ') {
        return None;
    }
    let mut bounds: Option<(i64, i64)> = None;
    let mut conditions = Vec::new();
    let mut counted = false;
    for segment in segments {
        if segment == "count" {
            counted = true;
            continue;
        }
        let predicate = segment.strip_prefix("where ")?.trim();
        if let Some(range) = predicate.strip_prefix("TimeGenerated between") {
            let range = range.trim().strip_prefix('(')?.strip_suffix(')')?;
            let (a, b) = range.split_once("..")?;
            bounds = Some((datetime_arg(a)?, datetime_arg(b)?));
        } else {
            conditions.extend(common::conditions(predicate, "==")?);
        }
    }
    if !counted {
        return None;
    }
    let state = shared.lock();
    let events = state
        .tables
        .get(&table_name)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let n = events
        .iter()
        .filter(|e| bounds.is_none_or(|(a, b)| e.time >= a && e.time <= b))
        .filter(|e| e.matches(&conditions))
        .count();
    u64::try_from(n).ok()
}

/// The `SentinelHealth` summary for the rule named in `endswith "/alertRules/NAME"`.
fn health(shared: &Shared, text: &str, span: Option<(i64, i64)>) -> Response {
    let marker = "endswith \"/alertRules/";
    let Some(name) = text
        .find(marker)
        .map(|i| &text[i + marker.len()..])
        .and_then(|rest| rest.split('"').next())
    else {
        return la_error(
            shared,
            "SemanticError",
            "The SentinelHealth query form is not supported by picket-siem-sim.",
        );
    };
    let runs = shared.lock().runs.get(name).cloned().unwrap_or_default();
    let runs: Vec<_> = runs
        .into_iter()
        .filter(|r| span.is_none_or(|(a, b)| r.at >= a && r.at <= b))
        .collect();
    let n = |s: RunStatus| runs.iter().filter(|r| r.status == s).count();
    let alerts: u64 = runs.iter().map(|r| r.alerts).sum();
    let results: u64 = runs.iter().map(|r| r.results).sum();
    let last = runs.iter().max_by_key(|r| r.at);
    let columns = [
        ("Succeeded", "long"),
        ("Failed", "long"),
        ("Partial", "long"),
        ("Alerts", "long"),
        ("Results", "long"),
        ("LastRun", "datetime"),
        ("LastDurationMs", "long"),
    ];
    let row = vec![
        json!(n(RunStatus::Success)),
        json!(n(RunStatus::Failure)),
        json!(n(RunStatus::Skipped)),
        json!(alerts),
        json!(results),
        last.map_or(Value::Null, |r| json!(common::rfc3339(r.at))),
        last.map_or(Value::Null, |r| json!(r.duration_ms)),
    ];
    axum::Json(table(&columns, row)).into_response()
}

// ---- Logs Ingestion API ----

async fn ingest(
    State(shared): Sim,
    Path((_dcr, stream)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&shared, &headers, MONITOR_SCOPE) {
        return r;
    }
    if let Err(r) = check_api_version(&shared, &uri, INGESTION_API_VERSION) {
        return r;
    }
    let Some(table_name) = stream.strip_prefix("Custom-") else {
        return arm_error(
            &shared,
            StatusCode::NOT_FOUND,
            "InvalidStream",
            "The stream is not declared in the data collection rule.",
        );
    };
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&body) else {
        return arm_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "InvalidContent",
            "The body must be a JSON array of objects.",
        );
    };
    let mut events = Vec::with_capacity(items.len());
    for item in items {
        let Some(obj) = item.as_object() else {
            return arm_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "InvalidContent",
                "Every element must be an object.",
            );
        };
        let time = obj
            .get("TimeGenerated")
            .and_then(Value::as_str)
            .and_then(common::parse_rfc3339);
        let Some(time) = time else {
            return arm_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "InvalidContent",
                "TimeGenerated must be an ISO 8601 date-time.",
            );
        };
        let fields = obj
            .iter()
            .filter(|(k, _)| k.as_str() != "TimeGenerated")
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect();
        events.push(StoredEvent { time, fields });
    }
    shared
        .lock()
        .tables
        .entry(table_name.to_owned())
        .or_default()
        .extend(events);
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for ok in ["PT5M", "PT1H", "P1D", "PT1H30M", "P14D"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["5m", "P", "PT", "PTM", "P1H", "PT5"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }
}
