//! Oneshot searches (`POST /services/search/jobs`, `exec_mode=oneshot`) over
//! the simulator's small event store and scripted scheduler, and the HTTP
//! Event Collector (`POST /services/collector/event`) that fills the store.
//!
//! Search forms understood (anything else is Splunk's 400 "Unable to parse"):
//! - `search k=v k="v w" earliest=<epoch> latest=<epoch> [| search k=v ...] | stats count`
//!   counts stored events whose fields equal every `k=v` (`index`, `source`
//!   and `sourcetype` are fields too);
//! - `search index=_internal sourcetype=scheduler savedsearch_name="NAME" ... | stats ...`
//!   answers one row (`succeeded`, `skipped`, `failed`, `results`, `alerts`,
//!   `last_run`, `run_time`) from the runs scripted for NAME.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Shared;
use super::feed;
use super::routes::{param, parse_urlencoded, query_params, wants_json};
use crate::common::{self, RunStatus, StoredEvent};

/// Splits a search segment into `key=value` terms, honouring double quotes.
fn terms(segment: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = segment.trim().chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

/// The answer to a search the simulator does not understand, as Splunk words a parse error.
fn unparsable(json: bool) -> Response {
    feed::error(
        StatusCode::BAD_REQUEST,
        "FATAL",
        "Error in 'search' command: Unable to parse the search: picket-siem-sim supports key=value terms and '| stats count' only.",
        json,
    )
}

fn results(fields: &[&str], row: Value) -> Response {
    axum::Json(json!({
        "preview": false,
        "init_offset": 0,
        "messages": [],
        "fields": fields.iter().map(|f| json!({"name": f})).collect::<Vec<_>>(),
        "results": [row],
        "highlighted": {},
    }))
    .into_response()
}

/// `POST /services/search/jobs` (oneshot only).
pub(crate) async fn jobs(State(shared): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let form = parse_urlencoded(&body);
    let json = wants_json(&query_params(&uri)) || wants_json(&form);
    if !json {
        return feed::error(
            StatusCode::BAD_REQUEST,
            "ERROR",
            "picket-siem-sim answers JSON only: add output_mode=json",
            false,
        );
    }
    if param(&form, "exec_mode") != Some("oneshot") {
        return feed::error(
            StatusCode::BAD_REQUEST,
            "ERROR",
            "picket-siem-sim runs exec_mode=oneshot searches only",
            true,
        );
    }
    let Some(search) = param(&form, "search") else {
        return feed::error(StatusCode::BAD_REQUEST, "ERROR", "Missing search.", true);
    };
    if shared.lock().search_error {
        // Splunk's 200-with-error: the job "ran" but its messages hold the failure.
        let text = "Error in 'litsearch' command: Your Splunk license expired or you have exceeded your license limit too many times.";
        let text = match &shared.error_suffix {
            Some(s) => {
                shared
                    .suffixed_errors
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                format!("{text} {s}")
            }
            None => text.to_owned(),
        };
        return axum::Json(json!({
            "preview": false, "init_offset": 0,
            "messages": [{"type": "ERROR", "text": text}],
            "fields": [], "results": [], "highlighted": {},
        }))
        .into_response();
    }
    let text = search
        .trim()
        .strip_prefix("search ")
        .unwrap_or(search.trim());
    let segments: Vec<&str> = text.split('|').map(str::trim).collect();
    let Some((first, rest)) = segments.split_first() else {
        return unparsable(true);
    };
    let Some(mut conditions) = terms(first) else {
        return unparsable(true);
    };
    if conditions
        .iter()
        .any(|(k, v)| k == "sourcetype" && v == "scheduler")
    {
        let Some(name) = conditions
            .iter()
            .find(|(k, _)| k == "savedsearch_name")
            .map(|(_, v)| v.clone())
        else {
            return unparsable(true);
        };
        // The search's own time bounds, as Splunk applies them to `_time`;
        // without them, Splunk's default for a oneshot (all time) applies.
        let bound = |key: &str| {
            conditions
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.parse::<i64>().ok())
        };
        return scheduler(&shared, &name, bound("earliest"), bound("latest"));
    }
    let mut counted = false;
    for segment in rest {
        if *segment == "stats count" {
            counted = true;
        } else if let Some(more) = segment.strip_prefix("search ").and_then(terms) {
            if counted {
                return unparsable(true);
            }
            conditions.extend(more);
        } else {
            return unparsable(true);
        }
    }
    if !counted {
        return unparsable(true);
    }
    let mut earliest = None;
    let mut latest = None;
    conditions.retain(|(k, v)| match k.as_str() {
        "earliest" => {
            earliest = v.parse::<i64>().ok();
            false
        }
        "latest" => {
            latest = v.parse::<i64>().ok();
            false
        }
        _ => true,
    });
    let n = shared
        .lock()
        .events
        .iter()
        .filter(|e| earliest.is_none_or(|a| e.time >= a) && latest.is_none_or(|b| e.time <= b))
        .filter(|e| e.matches(&conditions))
        .count();
    results(&["count"], json!({"count": n.to_string()}))
}

/// The scheduler summary for `name` over the runs between `earliest` and
/// `latest` (inclusive, unix seconds; a missing bound is open).
fn scheduler(shared: &Shared, name: &str, earliest: Option<i64>, latest: Option<i64>) -> Response {
    let runs = shared.lock().runs.get(name).cloned().unwrap_or_default();
    let runs: Vec<_> = runs
        .into_iter()
        .filter(|r| earliest.is_none_or(|a| r.at >= a) && latest.is_none_or(|b| r.at <= b))
        .collect();
    let n = |s: RunStatus| runs.iter().filter(|r| r.status == s).count().to_string();
    let last = runs.iter().max_by_key(|r| r.at);
    let results_sum: u64 = runs
        .iter()
        .filter(|r| r.status == RunStatus::Success)
        .map(|r| r.results)
        .sum();
    let alerts = runs
        .iter()
        .filter(|r| r.status == RunStatus::Success && r.alerts > 0)
        .count();
    let mut row = json!({
        "succeeded": n(RunStatus::Success),
        "skipped": n(RunStatus::Skipped),
        "failed": n(RunStatus::Failure),
        "results": results_sum.to_string(),
        "alerts": alerts.to_string(),
    });
    if let Some(last) = last {
        row["last_run"] = json!(last.at.to_string());
        // run_time is in seconds, with decimals, as the scheduler logs it.
        row["run_time"] = json!(format!("{:.3}", last.duration_ms as f64 / 1000.0));
    }
    results(
        &[
            "succeeded",
            "skipped",
            "failed",
            "results",
            "alerts",
            "last_run",
            "run_time",
        ],
        row,
    )
}

fn hec_answer(status: StatusCode, text: &str, code: u8) -> Response {
    (status, axum::Json(json!({"text": text, "code": code}))).into_response()
}

/// Flattens an event object into dotted string fields.
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

/// `POST /services/collector/event`: `Authorization: Splunk <hec token>`,
/// a body of one or more concatenated event objects.
pub(crate) async fn hec(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Splunk "));
    let Some(token) = token else {
        return hec_answer(StatusCode::UNAUTHORIZED, "Token is required", 2);
    };
    if !shared.hec_tokens.iter().any(|t| t == token.trim()) {
        return hec_answer(StatusCode::FORBIDDEN, "Invalid token", 4);
    }
    let mut events = Vec::new();
    for (i, item) in serde_json::Deserializer::from_slice(&body)
        .into_iter::<Value>()
        .enumerate()
    {
        let Ok(item) = item else {
            return hec_answer(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        };
        let Some(event) = item.get("event") else {
            return (StatusCode::BAD_REQUEST, axum::Json(json!({"text": "Event field is required", "code": 12, "invalid-event-number": i}))).into_response();
        };
        let mut fields = std::collections::BTreeMap::new();
        match event {
            Value::Object(_) => flatten("", event, &mut fields),
            other => {
                fields.insert(
                    "_raw".to_owned(),
                    other
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| other.to_string()),
                );
            }
        }
        for meta in ["index", "source", "sourcetype", "host"] {
            if let Some(v) = item.get(meta).and_then(Value::as_str) {
                fields.insert(meta.to_owned(), v.to_owned());
            }
        }
        fields
            .entry("index".to_owned())
            .or_insert_with(|| "main".to_owned());
        let time = item
            .get("time")
            .and_then(|t| {
                t.as_f64()
                    .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
            })
            .map(|t| t as i64)
            .unwrap_or_else(common::now);
        events.push(StoredEvent { time, fields });
    }
    if events.is_empty() {
        return hec_answer(StatusCode::BAD_REQUEST, "No data", 5);
    }
    shared.lock().events.extend(events);
    hec_answer(StatusCode::OK, "Success", 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_parse_quotes() {
        assert_eq!(
            terms(r#"index=t source="picket_test" user="a b""#),
            Some(vec![
                ("index".into(), "t".into()),
                ("source".into(), "picket_test".into()),
                ("user".into(), "a b".into())
            ])
        );
        assert_eq!(terms("lonely"), None);
        assert_eq!(terms(r#"a="open"#), None);
    }
}
