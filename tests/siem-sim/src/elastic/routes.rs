//! Elastic simulator HTTP surface. Handlers never hold the state lock across an await.

// A ready `Response` is the helpers' error path (returned as is by handlers);
// boxing it would only add noise to a test simulator.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::{API_VERSION, Shared, StoredRule};
use crate::common::{self, Fault, RunStatus, StoredEvent};

type Sim = State<Arc<Shared>>;

/// Largest request body read (4 MiB).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Largest `per_page` of `_find`.
const MAX_PER_PAGE: usize = 100;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for prefix in ["", "/s/{space}"] {
        router = router
            .route(
                &format!("{prefix}/api/detection_engine/rules"),
                get(read_rule)
                    .post(create_rule)
                    .put(update_rule)
                    .patch(patch_rule)
                    .delete(delete_rule),
            )
            .route(
                &format!("{prefix}/api/detection_engine/rules/_find"),
                get(find),
            )
            .route(
                &format!("{prefix}/api/detection_engine/rules/_bulk_action"),
                post(bulk_action),
            );
    }
    router
        .route("/_bulk", post(bulk))
        .route("/{index}/_bulk", post(bulk))
        .route("/{index}/_count", get(count).post(count))
        .route("/{index}/_eql/search", get(eql_search).post(eql_search))
        .route("/_query", post(esql_query))
        .fallback(|| async { kibana_plain(StatusCode::NOT_FOUND, "Not Found", "Not Found") })
        .layer(middleware::from_fn_with_state(Arc::clone(&shared), guard))
        .with_state(shared)
}

fn kibana_plain(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"statusCode": status.as_u16(), "error": error, "message": message})),
    )
        .into_response()
}

fn suffixed(shared: &Shared, message: &str) -> String {
    match &shared.error_suffix {
        Some(s) => {
            shared.suffixed_errors.fetch_add(1, Ordering::SeqCst);
            format!("{message} {s}")
        }
        None => message.to_owned(),
    }
}

fn kibana_error(shared: &Shared, status: StatusCode, message: &str) -> Response {
    let error = status.canonical_reason().unwrap_or("Error");
    kibana_plain(status, error, &suffixed(shared, message))
}

/// The detection engine's own error shape (`status_code`, `message`).
fn engine_error(shared: &Shared, status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status_code": status.as_u16(), "message": suffixed(shared, message)})),
    )
        .into_response()
}

fn es_error(shared: &Shared, status: StatusCode, kind: &str, reason: &str) -> Response {
    let reason = suffixed(shared, reason);
    (
        status,
        axum::Json(json!({
            "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
            "status": status.as_u16(),
        })),
    )
        .into_response()
}

fn is_kibana(path: &str) -> bool {
    path.contains("/api/detection_engine/")
}

/// Counts, applies faults, then checks the API key, `kbn-xsrf` and the API version.
async fn guard(State(shared): Sim, request: Request, next: Next) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let kibana = is_kibana(&path);
    if kibana {
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
            if kibana {
                kibana_error(&shared, status, "picket-siem-sim injected fault")
            } else {
                es_error(
                    &shared,
                    status,
                    "exception",
                    "picket-siem-sim injected fault",
                )
            }
        }
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut response = if kibana {
                kibana_error(
                    &shared,
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too Many Requests (picket-siem-sim injected fault)",
                )
            } else {
                es_error(
                    &shared,
                    StatusCode::TOO_MANY_REQUESTS,
                    "es_rejected_execution_exception",
                    "rejected execution (picket-siem-sim injected fault)",
                )
            };
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            checked(&shared, request, next, kibana).await
        }
        _ => checked(&shared, request, next, kibana).await,
    };
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    response
}

async fn checked(shared: &Shared, request: Request, next: Next, kibana: bool) -> Response {
    let headers = request.headers();
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("ApiKey "));
    let known = key.is_some_and(|k| shared.keys.iter().any(|c| c == k));
    if !known || shared.keys_expired.load(Ordering::SeqCst) {
        let reason = if known {
            "[security_exception] api key is expired"
        } else {
            "[security_exception] unable to authenticate with provided credentials"
        };
        return if kibana {
            kibana_error(shared, StatusCode::UNAUTHORIZED, reason)
        } else {
            es_error(
                shared,
                StatusCode::UNAUTHORIZED,
                "security_exception",
                reason,
            )
        };
    }
    if kibana {
        if request.method() != Method::GET && !headers.contains_key("kbn-xsrf") {
            return kibana_error(
                shared,
                StatusCode::BAD_REQUEST,
                "Request must contain a kbn-xsrf header.",
            );
        }
        if let Some(v) = headers.get("elastic-api-version")
            && v.as_bytes() != API_VERSION.as_bytes()
        {
            return kibana_error(
                shared,
                StatusCode::BAD_REQUEST,
                "Invalid version. This route only supports version 2023-10-31.",
            );
        }
    }
    next.run(request).await
}

fn space_of(uri: &Uri) -> String {
    uri.path()
        .strip_prefix("/s/")
        .and_then(|rest| rest.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_owned()
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(b) = hex {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

const SEVERITIES: [&str; 4] = ["low", "medium", "high", "critical"];

/// The first problem with a rule body, worded like Kibana's request validation.
fn invalid_rule(body: &Map<String, Value>, full: bool) -> Option<String> {
    let need_str = |name: &str| -> Option<String> {
        match body.get(name) {
            Some(Value::String(s)) if !s.is_empty() => None,
            Some(_) => Some(format!(
                "[request body]: {name}: Expected string, received other"
            )),
            None if full => Some(format!("[request body]: {name}: Required")),
            None => None,
        }
    };
    for name in ["name", "description", "type"] {
        if let Some(p) = need_str(name) {
            return Some(p);
        }
    }
    if let Some(v) = body.get("severity") {
        if !v.as_str().is_some_and(|s| SEVERITIES.contains(&s)) {
            return Some("[request body]: severity: Invalid enum value".into());
        }
    } else if full {
        return Some("[request body]: severity: Required".into());
    }
    match body.get("risk_score") {
        Some(v) if v.as_u64().is_some_and(|n| n <= 100) => {}
        Some(_) => {
            return Some("[request body]: risk_score: Number must be between 0 and 100".into());
        }
        None if full => return Some("[request body]: risk_score: Required".into()),
        None => {}
    }
    if let Some(kind) = body.get("type").and_then(Value::as_str) {
        let language = body.get("language").and_then(Value::as_str);
        let ok = match kind {
            "query" => language.is_none_or(|l| l == "kuery" || l == "lucene"),
            "eql" => language == Some("eql"),
            "esql" => language == Some("esql"),
            _ => {
                return Some(format!(
                    "[request body]: type: Invalid discriminator value {kind}"
                ));
            }
        };
        if !ok {
            return Some("[request body]: language: Invalid literal value".into());
        }
        if body
            .get("query")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && kind != "query"
        {
            return Some("[request body]: query: Required".into());
        }
    }
    for name in ["enabled"] {
        if body.get(name).is_some_and(|v| !v.is_boolean()) {
            return Some(format!("[request body]: {name}: Expected boolean"));
        }
    }
    if body
        .get("tags")
        .is_some_and(|v| !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
    {
        return Some("[request body]: tags: Expected array of strings".into());
    }
    None
}

fn read_json(shared: &Shared, body: &Bytes) -> Result<Map<String, Value>, Response> {
    if body.len() > MAX_BODY {
        return Err(kibana_error(
            shared,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload content length greater than maximum allowed",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(kibana_error(
            shared,
            StatusCode::BAD_REQUEST,
            "[request body]: Expected object, received other",
        )),
    }
}

/// The rule as the API shows it, with `execution_summary` from the scripted runs.
fn view(shared: &Shared, rule: &StoredRule) -> Value {
    let mut out = rule.body.clone();
    let last = shared
        .lock()
        .runs
        .get(rule.rule_id())
        .and_then(|runs| runs.iter().max_by_key(|r| r.at).copied());
    if let Some(run) = last {
        let (status, order) = match run.status {
            RunStatus::Success => ("succeeded", 0),
            RunStatus::Skipped => ("partial failure", 20),
            RunStatus::Failure => ("failed", 30),
        };
        out["execution_summary"] = json!({"last_execution": {
            "date": common::rfc3339(run.at),
            "status": status,
            "status_order": order,
            "message": "picket-siem-sim scripted run",
            "metrics": {
                "total_search_duration_ms": run.duration_ms,
                "total_indexing_duration_ms": run.duration_ms / 10,
                "execution_gap_duration_s": run.gap_ms / 1000,
            },
        }});
    }
    out
}

fn not_found(shared: &Shared, rule_id: &str) -> Response {
    engine_error(
        shared,
        StatusCode::NOT_FOUND,
        &format!("rule_id: \"{rule_id}\" not found"),
    )
}

async fn create_rule(State(shared): Sim, uri: Uri, body: Bytes) -> Response {
    let mut map = match read_json(&shared, &body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    shared
        .lock()
        .bodies
        .push(("create".into(), Value::Object(map.clone())));
    if let Some(problem) = invalid_rule(&map, true) {
        return kibana_error(&shared, StatusCode::BAD_REQUEST, &problem);
    }
    let space = space_of(&uri);
    let rule_id = map
        .get("rule_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let key = (space.clone(), rule_id.clone());
    if shared.lock().rules.contains_key(&key) {
        return engine_error(
            &shared,
            StatusCode::CONFLICT,
            &format!("rule_id: \"{rule_id}\" already exists"),
        );
    }
    let id = uuid::Uuid::new_v4().to_string();
    let now = common::rfc3339(common::now());
    map.insert("id".into(), json!(id));
    map.insert("rule_id".into(), json!(rule_id));
    map.entry("enabled").or_insert(json!(true));
    map.entry("tags").or_insert(json!([]));
    map.entry("interval").or_insert(json!("5m"));
    map.entry("from").or_insert(json!("now-6m"));
    map.entry("to").or_insert(json!("now"));
    map.insert("created_at".into(), json!(now));
    map.insert("updated_at".into(), json!(now));
    map.insert("revision".into(), json!(0));
    map.insert("version".into(), json!(1));
    let rule = StoredRule {
        id,
        space,
        body: Value::Object(map),
    };
    shared.lock().rules.insert(key, rule.clone());
    axum::Json(view(&shared, &rule)).into_response()
}

async fn replace(shared: &Shared, uri: &Uri, body: &Bytes, merge: bool) -> Response {
    let map = match read_json(shared, body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    shared.lock().bodies.push((
        if merge { "patch" } else { "update" }.into(),
        Value::Object(map.clone()),
    ));
    if let Some(problem) = invalid_rule(&map, !merge) {
        return kibana_error(shared, StatusCode::BAD_REQUEST, &problem);
    }
    let Some(rule_id) = map
        .get("rule_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return kibana_error(
            shared,
            StatusCode::BAD_REQUEST,
            "either \"id\" or \"rule_id\" must be set",
        );
    };
    let key = (space_of(uri), rule_id.clone());
    let updated = {
        let mut state = shared.lock();
        let Some(existing) = state.rules.get_mut(&key) else {
            drop(state);
            return not_found(shared, &rule_id);
        };
        let mut next = if merge {
            existing.body.as_object().cloned().unwrap_or_default()
        } else {
            let mut keep = Map::new();
            for k in ["id", "rule_id", "created_at"] {
                if let Some(v) = existing.body.get(k) {
                    keep.insert(k.into(), v.clone());
                }
            }
            keep.insert("enabled".into(), json!(true));
            keep.insert("tags".into(), json!([]));
            keep.insert("interval".into(), json!("5m"));
            keep.insert("from".into(), json!("now-6m"));
            keep.insert("to".into(), json!("now"));
            keep
        };
        for (k, v) in map {
            if k != "id" {
                next.insert(k, v);
            }
        }
        let revision = existing
            .body
            .get("revision")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            + 1;
        next.insert("revision".into(), json!(revision));
        next.insert("updated_at".into(), json!(common::rfc3339(common::now())));
        existing.body = Value::Object(next);
        existing.clone()
    };
    axum::Json(view(shared, &updated)).into_response()
}

async fn update_rule(State(shared): Sim, uri: Uri, body: Bytes) -> Response {
    replace(&shared, &uri, &body, false).await
}

async fn patch_rule(State(shared): Sim, uri: Uri, body: Bytes) -> Response {
    replace(&shared, &uri, &body, true).await
}

async fn read_rule(State(shared): Sim, uri: Uri) -> Response {
    let Some(rule_id) = query_param(&uri, "rule_id") else {
        return kibana_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "either \"id\" or \"rule_id\" must be set",
        );
    };
    let found = shared
        .lock()
        .rules
        .get(&(space_of(&uri), rule_id.clone()))
        .cloned();
    match found {
        Some(rule) => axum::Json(view(&shared, &rule)).into_response(),
        None => not_found(&shared, &rule_id),
    }
}

async fn delete_rule(State(shared): Sim, uri: Uri) -> Response {
    let Some(rule_id) = query_param(&uri, "rule_id") else {
        return kibana_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "either \"id\" or \"rule_id\" must be set",
        );
    };
    let removed = shared
        .lock()
        .rules
        .remove(&(space_of(&uri), rule_id.clone()));
    match removed {
        Some(rule) => axum::Json(rule.body).into_response(),
        None => not_found(&shared, &rule_id),
    }
}

async fn find(State(shared): Sim, uri: Uri) -> Response {
    let page: usize = query_param(&uri, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let per_page: usize = query_param(&uri, "per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(20);
    if per_page == 0 || per_page > MAX_PER_PAGE {
        return kibana_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "[request query]: per_page: Number must be between 1 and 100",
        );
    }
    let tag = match query_param(&uri, "filter") {
        None => None,
        Some(f) => match f
            .strip_prefix("alert.attributes.tags:")
            .map(|t| t.trim_matches('"').to_owned())
        {
            Some(t) => Some(t),
            None => {
                return kibana_error(
                    &shared,
                    StatusCode::BAD_REQUEST,
                    "picket-siem-sim understands only alert.attributes.tags:\"T\" filters",
                );
            }
        },
    };
    let space = space_of(&uri);
    let matching: Vec<StoredRule> = shared
        .lock()
        .rules
        .values()
        .filter(|r| r.space == space)
        .filter(|r| {
            tag.as_ref().is_none_or(|t| {
                r.body["tags"]
                    .as_array()
                    .is_some_and(|tags| tags.iter().any(|x| x.as_str() == Some(t)))
            })
        })
        .cloned()
        .collect();
    let total = matching.len();
    let data: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| view(&shared, r))
        .collect();
    axum::Json(json!({"page": page, "perPage": per_page, "total": total, "data": data}))
        .into_response()
}

async fn bulk_action(State(shared): Sim, uri: Uri, body: Bytes) -> Response {
    let map = match read_json(&shared, &body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let action = map
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !["enable", "disable", "delete"].contains(&action.as_str()) {
        return kibana_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "[request body]: action: Invalid discriminator value",
        );
    }
    let Some(ids) = map.get("ids").and_then(Value::as_array) else {
        return kibana_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "picket-siem-sim needs \"ids\" in bulk actions",
        );
    };
    let ids: Vec<String> = ids
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let space = space_of(&uri);
    let mut updated = Vec::new();
    let mut deleted = Vec::new();
    let mut missing = Vec::new();
    {
        let mut state = shared.lock();
        for id in &ids {
            let key = state
                .rules
                .iter()
                .find(|(k, r)| k.0 == space && r.id == *id)
                .map(|(k, _)| k.clone());
            let Some(key) = key else {
                missing.push(id.clone());
                continue;
            };
            if action == "delete" {
                if let Some(r) = state.rules.remove(&key) {
                    deleted.push(r.body);
                }
            } else if let Some(r) = state.rules.get_mut(&key) {
                r.body["enabled"] = json!(action == "enable");
                updated.push(r.body.clone());
            }
        }
    }
    let succeeded = updated.len() + deleted.len();
    let mut body = json!({
        "success": missing.is_empty(),
        "rules_count": ids.len(),
        "attributes": {
            "results": {"updated": updated, "created": [], "deleted": deleted, "skipped": []},
            "summary": {"failed": missing.len(), "skipped": 0, "succeeded": succeeded, "total": ids.len()},
        },
    });
    if missing.is_empty() {
        return axum::Json(body).into_response();
    }
    body["attributes"]["errors"] = json!([{
        "message": suffixed(&shared, "Rule not found"),
        "status_code": 404,
        "rules": missing.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
    }]);
    body["message"] = json!("Bulk edit partially failed");
    body["status_code"] = json!(500);
    (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(body)).into_response()
}

/// Flattens nested objects into dotted keys, values as strings.
fn flatten(prefix: &str, value: &Value, out: &mut std::collections::BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_owned(), s.clone());
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

async fn bulk(State(shared): Sim, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-ndjson")
        && !content_type.starts_with("application/json")
    {
        return es_error(
            &shared,
            StatusCode::NOT_ACCEPTABLE,
            "media_type_header_exception",
            "Content-Type header is not supported",
        );
    }
    if body.len() > MAX_BODY {
        return es_error(
            &shared,
            StatusCode::PAYLOAD_TOO_LARGE,
            "content_too_long_exception",
            "request too large",
        );
    }
    let path_index = uri
        .path()
        .strip_suffix("/_bulk")
        .map(|p| p.trim_start_matches('/').to_owned())
        .filter(|p| !p.is_empty());
    let text = String::from_utf8_lossy(&body);
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let mut items = Vec::new();
    let mut stored: Vec<(String, StoredEvent)> = Vec::new();
    let mut errors = false;
    while let Some(action_line) = lines.next() {
        let Ok(action) = serde_json::from_str::<Value>(action_line) else {
            return es_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "x_content_parse_exception",
                "Malformed action/metadata line",
            );
        };
        let Some((op, meta)) = action.as_object().and_then(|m| m.iter().next()) else {
            return es_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                "Malformed action/metadata line",
            );
        };
        if op != "index" && op != "create" {
            return es_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                "picket-siem-sim supports index and create actions only",
            );
        }
        let Some(doc_line) = lines.next() else {
            return es_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            );
        };
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| path_index.clone());
        let doc = serde_json::from_str::<Value>(doc_line)
            .ok()
            .filter(Value::is_object);
        match (index, doc) {
            (Some(index), Some(doc)) => {
                let mut fields = std::collections::BTreeMap::new();
                flatten("", &doc, &mut fields);
                let time = fields
                    .get("@timestamp")
                    .and_then(|t| common::parse_rfc3339(t))
                    .unwrap_or_else(common::now);
                stored.push((index.clone(), StoredEvent { time, fields }));
                items.push(json!({op.clone(): {"_index": index, "_id": uuid::Uuid::new_v4().to_string(), "status": 201, "result": "created"}}));
            }
            (index, _) => {
                errors = true;
                items.push(json!({op.clone(): {"_index": index, "status": 400, "error": {"type": "document_parsing_exception", "reason": suffixed(&shared, "failed to parse")}}}));
            }
        }
    }
    {
        let mut state = shared.lock();
        for (index, event) in stored {
            state.indices.entry(index).or_default().push(event);
        }
    }
    axum::Json(json!({"took": 1, "errors": errors, "items": items})).into_response()
}

/// Applies one `_count` query clause to the filters; `None` for an unsupported one.
fn clause(
    c: &Value,
    conds: &mut Vec<(String, String)>,
    range: &mut Option<(i64, i64)>,
) -> Option<()> {
    let (kind, body) = c.as_object()?.iter().next()?;
    match kind.as_str() {
        "term" | "match_phrase" => {
            let (field, v) = body.as_object()?.iter().next()?;
            let v = v.get("value").unwrap_or(v);
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            conds.push((field.clone(), v));
        }
        "range" => {
            let r = body.get("@timestamp")?;
            let a = r
                .get("gte")
                .and_then(Value::as_str)
                .and_then(common::parse_rfc3339)?;
            let b = r
                .get("lte")
                .and_then(Value::as_str)
                .and_then(common::parse_rfc3339)?;
            *range = Some((a, b));
        }
        "query_string" => {
            let q = body.get("query")?.as_str()?;
            conds.extend(common::conditions(q, ":")?);
        }
        "match_all" => {}
        _ => return None,
    }
    Some(())
}

async fn count(
    State(shared): Sim,
    axum::extract::Path(index): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let mut conds = Vec::new();
    let mut range = None;
    if !body.is_empty() {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return es_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "parsing_exception",
                "request body is not JSON",
            );
        };
        let query = v.get("query").cloned().unwrap_or(json!({"match_all": {}}));
        let ok = match query.get("bool") {
            Some(b) => b
                .get("filter")
                .or_else(|| b.get("must"))
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .all(|c| clause(c, &mut conds, &mut range).is_some())
                }),
            None => clause(&query, &mut conds, &mut range).is_some(),
        };
        if !ok {
            return es_error(
                &shared,
                StatusCode::BAD_REQUEST,
                "parsing_exception",
                "picket-siem-sim does not understand this query form",
            );
        }
    }
    let state = shared.lock();
    let Some(docs) = state.indices.get(&index) else {
        drop(state);
        return es_error(
            &shared,
            StatusCode::NOT_FOUND,
            "index_not_found_exception",
            "no such index",
        );
    };
    let n = docs
        .iter()
        .filter(|e| range.is_none_or(|(a, b)| e.time >= a && e.time <= b))
        .filter(|e| e.matches(&conds))
        .count();
    axum::Json(
        json!({"count": n, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0}}),
    )
    .into_response()
}

/// Reads a request's `filter` (a Query DSL `bool` of `filter`/`must`
/// clauses, as `_count` understands them) into conditions and a time range.
fn dsl_filter(
    filter: Option<&Value>,
    conds: &mut Vec<(String, String)>,
    range: &mut Option<(i64, i64)>,
) -> bool {
    let Some(f) = filter else {
        return true;
    };
    match f.get("bool") {
        Some(b) => b
            .get("filter")
            .or_else(|| b.get("must"))
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().all(|c| clause(c, conds, range).is_some())),
        None => clause(f, conds, range).is_some(),
    }
}

/// How many documents of the indices `pattern` names match: a name, or a
/// comma-separated list of names and `prefix*` patterns (as ES|QL's `FROM`
/// takes them). `None` when nothing matches the pattern.
fn count_matching(
    shared: &Shared,
    pattern: &str,
    conds: &[(String, String)],
    range: Option<(i64, i64)>,
) -> Option<usize> {
    let state = shared.lock();
    let wanted = |name: &str| {
        pattern
            .split(',')
            .map(str::trim)
            .any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == p,
            })
    };
    let mut found = false;
    let mut n = 0;
    for (name, docs) in &state.indices {
        if !wanted(name) {
            continue;
        }
        found = true;
        n += docs
            .iter()
            .filter(|e| range.is_none_or(|(a, b)| e.time >= a && e.time <= b))
            .filter(|e| e.matches(conds))
            .count();
    }
    // A pattern with a wildcard matching no index is zero rows, as in Elasticsearch.
    (found || pattern.contains('*')).then_some(n)
}

/// `POST /{index}/_eql/search`: event queries of the form `<category> where
/// a == "x" and b == "y"` (`any` matches every category; otherwise
/// `event.category` must equal it), bounded by the request's `filter`.
/// Answers `hits.total` (events are never returned: tests read counts only).
async fn eql_search(
    State(shared): Sim,
    axum::extract::Path(index): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let bad = |reason: &str| {
        es_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "verification_exception",
            reason,
        )
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return bad("request body is not JSON");
    };
    let Some(query) = v.get("query").and_then(Value::as_str) else {
        return bad("[query] is required");
    };
    let Some((category, condition)) = query.split_once(" where ") else {
        return bad("picket-siem-sim supports `<category> where <condition>` only");
    };
    let mut conds = Vec::new();
    let category = category.trim();
    if category != "any" {
        conds.push(("event.category".to_owned(), category.to_owned()));
    }
    let condition = condition.trim();
    let condition = if condition == "true" { "" } else { condition };
    let Some(mut parsed) = common::conditions(condition, "==") else {
        return bad("picket-siem-sim does not understand this condition");
    };
    conds.append(&mut parsed);
    let mut range = None;
    if !dsl_filter(v.get("filter"), &mut conds, &mut range) {
        return bad("picket-siem-sim does not understand this filter");
    }
    let Some(n) = count_matching(&shared, &index, &conds, range) else {
        return es_error(
            &shared,
            StatusCode::NOT_FOUND,
            "index_not_found_exception",
            "no such index",
        );
    };
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    axum::Json(json!({
        "is_partial": false, "is_running": false, "took": 1, "timed_out": false,
        "hits": { "total": { "value": n, "relation": "eq" }, "events": Vec::<Value>::new() },
    }))
    .into_response()
}

/// `POST /_query` (ES|QL): `FROM <index> | WHERE a == "x" [and ...] | ... |
/// STATS <name> = COUNT(*)`, bounded by the request's `filter`; answers one
/// row with the count.
async fn esql_query(State(shared): Sim, body: Bytes) -> Response {
    let bad = |reason: &str| {
        es_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "verification_exception",
            reason,
        )
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return bad("request body is not JSON");
    };
    let Some(query) = v.get("query").and_then(Value::as_str) else {
        return bad("[query] is required");
    };
    let stages: Vec<&str> = query.split('|').map(str::trim).collect();
    let Some(index) = stages
        .first()
        .and_then(|s| s.strip_prefix("FROM ").or_else(|| s.strip_prefix("from ")))
        .map(str::trim)
    else {
        return bad("picket-siem-sim needs a FROM source");
    };
    let mut conds = Vec::new();
    let mut counted = None;
    for stage in stages.iter().skip(1) {
        let lower = stage.to_ascii_lowercase();
        if let Some(cond) = lower.strip_prefix("where ").map(|_| &stage[6..]) {
            let Some(mut parsed) = common::conditions(cond, "==") else {
                return bad("picket-siem-sim does not understand this WHERE");
            };
            conds.append(&mut parsed);
        } else if lower.starts_with("stats ") && lower.ends_with("count(*)") {
            let name = stage[6..].split('=').next().unwrap_or("count").trim();
            counted = Some(name.to_owned());
        } else {
            return bad("picket-siem-sim supports WHERE and a final STATS ... = COUNT(*) only");
        }
    }
    let Some(column) = counted else {
        return bad("picket-siem-sim answers counts only (STATS ... = COUNT(*))");
    };
    let mut range = None;
    if !dsl_filter(v.get("filter"), &mut conds, &mut range) {
        return bad("picket-siem-sim does not understand this filter");
    }
    let Some(n) = count_matching(&shared, index, &conds, range) else {
        return es_error(
            &shared,
            StatusCode::BAD_REQUEST,
            "verification_exception",
            &format!("Unknown index [{index}]"),
        );
    };
    axum::Json(json!({
        "columns": [{ "name": column, "type": "long" }],
        "values": [[n]],
    }))
    .into_response()
}
