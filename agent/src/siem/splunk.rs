//! Splunk connector: a Picket rule is a scheduled saved search, managed through
//! the REST API on the management port (`/servicesNS/{owner}/{app}/saved/searches`).
//!
//! The saved search's name is [`managed_rule_name`] (`picket-<rule id>`): the
//! connector builds every name it touches from a rule id, so it can only ever
//! create, change or delete objects with the `picket-` prefix, never a
//! customer's own searches.
//!
//! | action | calls |
//! |---|---|
//! | deploy | `POST .../saved/searches` (create, 201); on 409 `POST .../saved/searches/{name}` with the same fields (update in place) |
//! | disable | `POST .../saved/searches/{name}` with `disabled=1` |
//! | delete | `DELETE .../saved/searches/{name}` |
//! | enable | `POST .../saved/searches/{name}` with `disabled=0` |
//! | check connection | `GET /services/server/info` |
//! | content hash | `GET .../saved/searches/{name}` |
//! | list managed | `GET .../saved/searches?count=100&offset=N` until `paging.total` |
//! | test events | `POST {hec}/services/collector/event` (`Authorization: Splunk <hec token>`) into the test index, `source=picket_test` |
//! | count | `POST /services/search/jobs` with `exec_mode=oneshot` |
//! | health | the same oneshot over `index=_internal sourcetype=scheduler savedsearch_name=...` |
//! | session login | `POST /services/auth/login` (when the settings carry a username and password) |
//!
//! Every call sends `output_mode=json` and `Authorization: Bearer <token>`,
//! or `Authorization: Splunk <session key>` when the settings name a user: the
//! key comes from `auth/login`, is kept for the connector's life, and a 401
//! (an expired session) logs in again once (reqwest marks the header
//! sensitive; secrets are never logged). Path
//! segments (owner, app, name) are percent-encoded. An HTTP error maps to a
//! class by [`classify_status`](super::classify_status). A 2xx answer is read
//! (at most [`MAX_REPLY_BYTES`]) only to see whether its `messages` hold an
//! `ERROR` or `FATAL` entry, which makes the call a
//! [`ErrorClass::SiemError`]; the messages' text is not even deserialized.
//! A 2xx whose body is not Splunk's JSON (a proxy's login page, say) is a
//! `SiemError` too.
//!
//! # Deployed fields
//! [`deployed_fields`] lists them; the alert fires when the search returns any
//! event (`number of events` `greater than` `0`), is tracked in Triggered
//! Alerts, and runs no alert action (`actions` empty): what happens on an alert
//! stays the customer's Splunk configuration. `alert.severity` follows
//! [`splunk_severity`].
//!
//! # Content hash
//! [`content_hash`] is SHA-256 over the deployed fields in a canonical form:
//! one line per field, `key=value\n`, sorted by key (byte order), UTF-8, with
//! `\` in values written `\\`, newline `\n` and carriage return `\r` (so a
//! multi-line SPL query cannot forge a line). The saved search's name is not
//! part of it (it is the object's identity, not its content). A drift check
//! recomputes it from the fields Splunk reports, normalising booleans to `1`/`0`.
//!
//! # Count filter form
//! SPL `key=value` terms, e.g. `EventCode=4625 user=alice`, run as
//! `search index="<test index>" source="picket_test" earliest=<from> latest=<to> | search <filter> | stats count`.
//!
//! # Health
//! One oneshot search over the scheduler's records of the saved search in the
//! window, reduced by `stats` to counts of `success`, `skipped` and other
//! (failed) runs, the sum of `result_count` of successful runs, the number of
//! successful runs with results (alerts, as the alert condition is "more than
//! 0 events"), the last run's time and `run_time`. Rows never leave Splunk.

use std::collections::BTreeMap;

use std::sync::{Mutex, PoisonError};

use picket_proto::{
    Credential, ErrorClass, JobAction, RuleHealth, RuleSpec, Severity, SplunkHec, SplunkLogin,
    SplunkSettings, managed_rule_name,
};
use reqwest::{Client, RequestBuilder, Response, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{
    ActionOk, TEST_MARKER, TestEvent, TimeWindow, classify_status, classify_transport,
    managed_rule_id, parse_base_url,
};

/// Saved searches per listing page.
const PAGE: usize = 100;
/// Most listing pages followed.
const MAX_PAGES: usize = 200;

/// Largest 2xx answer the connector reads to look for error messages (4 MiB);
/// a larger one is a [`ErrorClass::SiemError`].
pub const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Splunk's `alert.severity` for a Picket severity.
///
/// Splunk's scale is 1 debug, 2 info, 3 warn, 4 error, 5 severe, 6 fatal. Picket
/// maps info → 2, low → 3, medium → 3, high → 4, critical → 5: low and medium
/// share "warn" (Splunk has no finer step there), and 1 and 6 are never used.
pub fn splunk_severity(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 2,
        Severity::Low | Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// The saved-search fields a deploy sends (create and update alike), by the
/// REST argument names of Splunk's `saved/searches` endpoint. `name` is not
/// among them: it is sent on create only.
pub fn deployed_fields(rule: &RuleSpec) -> BTreeMap<&'static str, String> {
    deployed_fields_mode(rule, false)
}

/// [`deployed_fields`], in monitoring mode when `monitoring`: the search still
/// runs on schedule but `alert.track=0` (nothing recorded in Triggered
/// Alerts) and, as always, no alert action.
pub fn deployed_fields_mode(rule: &RuleSpec, monitoring: bool) -> BTreeMap<&'static str, String> {
    let mut description = rule.title.trim().to_owned();
    if !rule.description.trim().is_empty() {
        description.push_str("\n\n");
        description.push_str(rule.description.trim());
    }
    description.push_str(&format!(
        "\n\nManaged by Picket (rule version {}); changes made in Splunk are overwritten.",
        rule.version
    ));
    BTreeMap::from([
        ("search", rule.query.clone()),
        ("description", description),
        ("cron_schedule", rule.schedule.cron.clone()),
        ("is_scheduled", "1".to_owned()),
        ("disabled", "0".to_owned()),
        ("dispatch.earliest_time", rule.schedule.earliest.clone()),
        ("dispatch.latest_time", rule.schedule.latest.clone()),
        ("alert_type", "number of events".to_owned()),
        ("alert_comparator", "greater than".to_owned()),
        ("alert_threshold", "0".to_owned()),
        ("alert.track", if monitoring { "0" } else { "1" }.to_owned()),
        ("alert.severity", splunk_severity(rule.severity).to_string()),
        ("actions", String::new()),
    ])
}

/// A saved search's deployed fields (as [`SplunkConnector::read_rule`] reads
/// them) normalized back to the rule model: `search` is the query;
/// `cron_schedule`, `dispatch.earliest_time` and `dispatch.latest_time` the
/// schedule; the description's first paragraph the title and the rest the
/// description (without the "Managed by Picket" note); `alert.severity`
/// 2 → info, 3 → medium (low shares the step), 4 → high, 5 and 6 →
/// critical, 1 → info; `alert.track=0` is monitoring mode; `disabled=1` is
/// disabled.
pub fn remote_rule<K: AsRef<str> + Ord>(fields: &BTreeMap<K, String>) -> picket_proto::RemoteRule {
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    };
    let text = super::strip_managed_note(get("description"));
    let (title, description) = match text.split_once("\n\n") {
        Some((t, d)) => (t.trim().to_owned(), d.trim().to_owned()),
        None => (text.trim().to_owned(), String::new()),
    };
    let severity = match get("alert.severity").trim() {
        "3" => Severity::Medium,
        "4" => Severity::High,
        "5" | "6" => Severity::Critical,
        _ => Severity::Info,
    };
    let non_empty = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    picket_proto::RemoteRule {
        title,
        description,
        severity,
        query: get("search").to_owned(),
        schedule: picket_proto::RemoteSchedule {
            cron: non_empty(get("cron_schedule")),
            earliest: non_empty(get("dispatch.earliest_time")),
            latest: non_empty(get("dispatch.latest_time")),
            frequency: None,
            lookback: None,
        },
        monitoring: get("alert.track") == "0",
        enabled: !matches!(get("disabled"), "1" | "true"),
    }
}

/// SHA-256 of `fields` in the canonical form described in the module docs
/// (sorted `key=value` lines, values escaped).
pub fn content_hash<K: AsRef<str>>(fields: &BTreeMap<K, String>) -> [u8; 32] {
    let mut lines: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_str()))
        .collect();
    // BTreeMap order is already by key; sorting again keeps the contract
    // independent of the key type's `Ord`.
    lines.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut hasher = Sha256::new();
    for (key, value) in lines {
        hasher.update(key.as_bytes());
        hasher.update(b"=");
        for chunk in value.split_inclusive(['\\', '\n', '\r']) {
            let (text, last) = match chunk.chars().last() {
                Some(c @ ('\\' | '\n' | '\r')) => (&chunk[..chunk.len() - 1], Some(c)),
                _ => (chunk, None),
            };
            hasher.update(text.as_bytes());
            match last {
                Some('\\') => hasher.update(b"\\\\"),
                Some('\n') => hasher.update(b"\\n"),
                Some('\r') => hasher.update(b"\\r"),
                _ => {}
            }
        }
        hasher.update(b"\n");
    }
    hasher.finalize().into()
}

/// Acts on one Splunk connection (`SplunkSettings`) through its REST API.
#[derive(Debug)]
pub struct SplunkConnector {
    /// The management URL, or `None` when the settings' URL does not parse
    /// (every action then fails with [`ErrorClass::MalformedJob`]).
    base: Option<Url>,
    /// Owner namespace of the saved searches.
    owner: String,
    /// App that holds them.
    app: String,
    /// The token, sent as `Authorization: Bearer`; zeroized on drop.
    token: Credential,
    /// User for session-key authentication, instead of the token.
    login: Option<SplunkLogin>,
    /// The HTTP Event Collector for test events.
    hec: Option<SplunkHec>,
    /// The session key from `auth/login`, once logged in.
    session: Mutex<Option<Zeroizing<String>>>,
    /// The caller's client: timeouts, pool, TLS.
    http: Client,
}

/// A failed call: the class, and the HTTP status when there was one (deploy
/// needs to tell 409 from 412, which share a class).
#[derive(Debug, Clone, Copy)]
struct Failure {
    status: Option<u16>,
    class: ErrorClass,
}

impl From<ErrorClass> for Failure {
    fn from(class: ErrorClass) -> Self {
        Failure {
            status: None,
            class,
        }
    }
}

/// The part of a Splunk JSON answer the connector looks at.
#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    messages: Vec<ReplyMessage>,
}

/// One entry of `messages`; its `text` is deliberately not read.
#[derive(Deserialize)]
struct ReplyMessage {
    #[serde(rename = "type", default)]
    kind: String,
}

impl SplunkConnector {
    /// A connector for `settings`, sending through `http`.
    pub fn new(settings: &SplunkSettings, http: Client) -> Self {
        SplunkConnector {
            base: parse_base_url(&settings.base_url),
            owner: settings.owner.clone(),
            app: settings.app.clone(),
            token: settings.token.clone(),
            login: settings.login.clone(),
            hec: settings.hec.clone(),
            session: Mutex::new(None),
            http,
        }
    }

    /// Runs one job action.
    ///
    /// # Errors
    /// The failure's class (see the module docs); an action this connector
    /// does not implement is [`ErrorClass::Internal`].
    pub async fn execute(&self, action: &JobAction) -> Result<ActionOk, ErrorClass> {
        match action {
            JobAction::DeployRule { rule } => self.deploy(rule).await.map(|hash| ActionOk {
                content_hash: Some(hash),
                test_counts: None,
            }),
            JobAction::DisableRule { rule } => self
                .set_enabled(&rule.rule_id, false)
                .await
                .map(|()| none()),
            JobAction::DeleteRule { rule } => self.delete(&rule.rule_id).await.map(|()| none()),
            JobAction::CheckConnection => self.check_connection().await.map(|()| none()),
            _ => {
                tracing::debug!("action not implemented by the Splunk connector");
                Err(ErrorClass::Internal)
            }
        }
    }

    /// Creates the rule's saved search, or updates it in place when it exists,
    /// and returns the [`content_hash`] of what was sent.
    ///
    /// # Errors
    /// The class of the first failing call.
    pub async fn deploy(&self, rule: &RuleSpec) -> Result<[u8; 32], ErrorClass> {
        self.deploy_mode(rule, false).await
    }

    /// [`Self::deploy`], in monitoring mode when `monitoring` (see
    /// [`deployed_fields_mode`]).
    ///
    /// # Errors
    /// The class of the first failing call.
    pub async fn deploy_mode(
        &self,
        rule: &RuleSpec,
        monitoring: bool,
    ) -> Result<[u8; 32], ErrorClass> {
        let name = managed_rule_name(&rule.rule_id);
        let fields = deployed_fields_mode(rule, monitoring);
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(fields.len() + 1);
        form.push(("name", &name));
        form.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));

        let create = self.http.post(self.url(&[])?).form(&form);
        match self.send("create", create).await {
            Ok(_) => {}
            Err(Failure {
                status: Some(409), ..
            }) => {
                // Already there: update the same fields in place (no `name`).
                let update = self.http.post(self.url(&[&name])?).form(&form[1..]);
                self.send("update", update).await.map_err(|f| f.class)?;
            }
            Err(failure) => return Err(failure.class),
        }
        Ok(content_hash(&fields))
    }

    /// Disables (`disabled=1`) or enables (`disabled=0`) the rule's saved
    /// search; it stays in Splunk.
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class.
    pub async fn set_enabled(&self, rule_id: &Uuid, enabled: bool) -> Result<(), ErrorClass> {
        let name = managed_rule_name(rule_id);
        let request = self
            .http
            .post(self.url(&[&name])?)
            .form(&[("disabled", if enabled { "0" } else { "1" })]);
        self.send("set_enabled", request)
            .await
            .map(|_| ())
            .map_err(|f| f.class)
    }

    /// The [`content_hash`] of the saved search as Splunk reports it (the
    /// deployed fields only, booleans and numbers normalised to strings).
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class.
    pub async fn content_hash(&self, rule_id: &Uuid) -> Result<[u8; 32], ErrorClass> {
        Ok(content_hash(&self.read_fields(rule_id).await?))
    }

    /// The saved search normalized back to the rule model
    /// ([`remote_rule`]).
    ///
    /// # Errors
    /// As [`Self::content_hash`].
    pub async fn read_rule(&self, rule_id: &Uuid) -> Result<picket_proto::RemoteRule, ErrorClass> {
        Ok(remote_rule(&self.read_fields(rule_id).await?))
    }

    /// The deployed fields of the saved search as Splunk reports them
    /// (booleans and numbers normalised to strings, absent ones empty).
    async fn read_fields(&self, rule_id: &Uuid) -> Result<BTreeMap<String, String>, ErrorClass> {
        let name = managed_rule_name(rule_id);
        let body = self
            .send("read", self.http.get(self.url(&[&name])?))
            .await
            .map_err(|f| f.class)?;
        let feed: Value = serde_json::from_slice(&body).map_err(|_| ErrorClass::SiemError)?;
        let content = feed
            .pointer("/entry/0/content")
            .ok_or(ErrorClass::SiemError)?;
        let keys: Vec<&str> = deployed_fields_keys();
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        for key in keys {
            let value = match content.get(key) {
                None | Some(Value::Null) => String::new(),
                Some(Value::Bool(b)) => if *b { "1" } else { "0" }.to_owned(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            fields.insert(key.to_owned(), value);
        }
        Ok(fields)
    }

    /// Ids of the `picket-<uuid>` saved searches in the namespace, over every page.
    ///
    /// # Errors
    /// The call's class.
    pub async fn list_managed(&self) -> Result<Vec<Uuid>, ErrorClass> {
        let mut ids = Vec::new();
        let mut offset = 0usize;
        for _ in 0..MAX_PAGES {
            let request = self
                .http
                .get(self.url(&[])?)
                .query(&[("count", PAGE.to_string()), ("offset", offset.to_string())]);
            let body = self.send("list", request).await.map_err(|f| f.class)?;
            let feed: Value = serde_json::from_slice(&body).map_err(|_| ErrorClass::SiemError)?;
            let entries = feed
                .get("entry")
                .and_then(Value::as_array)
                .ok_or(ErrorClass::SiemError)?;
            ids.extend(
                entries
                    .iter()
                    .filter_map(|e| e.get("name").and_then(Value::as_str))
                    .filter_map(managed_rule_id),
            );
            let total = feed
                .pointer("/paging/total")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            offset += entries.len();
            if entries.is_empty() || offset as u64 >= total {
                return Ok(ids);
            }
        }
        Err(ErrorClass::SiemError)
    }

    /// Sends test events to HEC (`/services/collector/event`) into the test
    /// index with `source=picket_test`.
    ///
    /// # Errors
    /// `malformed_job` without HEC settings; a refused HEC token is
    /// `auth_failed`; a HEC answer with a non-zero `code` is `siem_error`.
    pub async fn inject_test_events(&self, events: &[TestEvent]) -> Result<u64, ErrorClass> {
        let hec = self.hec.as_ref().ok_or(ErrorClass::MalformedJob)?;
        let base = parse_base_url(&hec.url).ok_or(ErrorClass::MalformedJob)?;
        let url = super::http::join(&base, &["services", "collector", "event"])?;
        let mut body = String::new();
        for event in events {
            body.push_str(
                &json!({
                    "time": event.time,
                    "index": hec.test_index,
                    "source": TEST_MARKER,
                    "sourcetype": "picket:test",
                    "event": event.fields,
                })
                .to_string(),
            );
            body.push('\n');
        }
        let request = self
            .http
            .post(url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Splunk {}", hec.token.expose()),
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let reply = super::http::send("splunk", "hec", request)
            .await
            .map_err(|f| match f.status {
                // HEC answers a missing token 401 and an invalid one 403.
                Some(401 | 403) => ErrorClass::AuthFailed,
                _ => f.class,
            })?;
        #[derive(Deserialize)]
        struct HecReply {
            code: i64,
        }
        let answer: HecReply = reply.json()?;
        if answer.code != 0 {
            return Err(ErrorClass::SiemError);
        }
        Ok(events.len() as u64)
    }

    /// Runs a oneshot search and returns its first result row.
    async fn oneshot(&self, op: &'static str, search: &str) -> Result<Value, ErrorClass> {
        let mut url = self.base.clone().ok_or(ErrorClass::MalformedJob)?;
        url.path_segments_mut()
            .map_err(|()| ErrorClass::MalformedJob)?
            .pop_if_empty()
            .extend(["services", "search", "jobs"]);
        let request = self
            .http
            .post(url)
            .form(&[("search", search), ("exec_mode", "oneshot")]);
        let body = self.send(op, request).await.map_err(|f| match f.status {
            // A search Splunk cannot parse is refused with 400.
            Some(400) => ErrorClass::QueryInvalid,
            _ => f.class,
        })?;
        let reply: Value = serde_json::from_slice(&body).map_err(|_| ErrorClass::SiemError)?;
        Ok(reply.pointer("/results/0").cloned().unwrap_or(Value::Null))
    }

    /// Counts test events matching `filter` (SPL terms) in the window.
    ///
    /// # Errors
    /// `malformed_job` without HEC settings (no test index); a search error
    /// (400, or 200 with an `ERROR` message) is `query_invalid` / `siem_error`.
    pub async fn count_test_matches(
        &self,
        filter: &str,
        window: TimeWindow,
    ) -> Result<u64, ErrorClass> {
        let hec = self.hec.as_ref().ok_or(ErrorClass::MalformedJob)?;
        let search = format!(
            "search index={} source={} earliest={} latest={} | search {filter} | stats count",
            spl_quote(&hec.test_index),
            spl_quote(TEST_MARKER),
            window.from,
            window.to
        );
        let row = self.oneshot("count", &search).await?;
        row_number(&row, "count").ok_or(ErrorClass::SiemError)
    }

    /// Counts the events the rule's search terms (`query`: its first stage
    /// and `search` stages, with their `index=`) match in `window`:
    /// `search <query> earliest=.. latest=.. | stats count`.
    ///
    /// # Errors
    /// As [`Self::count_test_matches`].
    pub async fn preview_count(&self, query: &str, window: TimeWindow) -> Result<u64, ErrorClass> {
        let (first, rest) = match query.split_once('|') {
            Some((first, rest)) => (first.trim(), format!(" | {}", rest.trim())),
            None => (query.trim(), String::new()),
        };
        let search = format!(
            "search {first} earliest={} latest={}{rest} | stats count",
            window.from, window.to
        );
        let row = self.oneshot("preview", &search).await?;
        row_number(&row, "count").ok_or(ErrorClass::SiemError)
    }

    /// The saved search's scheduler records in the window, reduced to numbers.
    ///
    /// # Errors
    /// The call's class.
    pub async fn rule_health(
        &self,
        rule_id: &Uuid,
        window: TimeWindow,
    ) -> Result<RuleHealth, ErrorClass> {
        let name = managed_rule_name(rule_id);
        let search = format!(
            "search index=_internal sourcetype=scheduler savedsearch_name={} earliest={} latest={} \
             | stats count(eval(status=\"success\")) as succeeded count(eval(status=\"skipped\")) as skipped \
             count(eval(status!=\"success\" AND status!=\"skipped\")) as failed \
             sum(eval(if(status=\"success\", result_count, 0))) as results \
             count(eval(status=\"success\" AND result_count>0)) as alerts max(_time) as last_run latest(run_time) as run_time",
            spl_quote(&name),
            window.from,
            window.to
        );
        let row = self.oneshot("health", &search).await?;
        let seconds = row
            .get("run_time")
            .and_then(|v| {
                v.as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .or_else(|| v.as_f64())
            })
            .filter(|s| s.is_finite() && *s >= 0.0);
        Ok(RuleHealth {
            runs_succeeded: row_number(&row, "succeeded").unwrap_or(0),
            runs_failed: row_number(&row, "failed").unwrap_or(0),
            runs_skipped: row_number(&row, "skipped").unwrap_or(0),
            results_total: Some(row_number(&row, "results").unwrap_or(0)),
            alerts_fired: Some(row_number(&row, "alerts").unwrap_or(0)),
            last_run_at: row_number(&row, "last_run").and_then(|t| i64::try_from(t).ok()),
            last_run_duration_ms: seconds.map(|s| (s * 1000.0).round() as u64),
            gap_ms: None,
        })
    }

    /// Deletes the rule's saved search.
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class.
    pub async fn delete(&self, rule_id: &Uuid) -> Result<(), ErrorClass> {
        let name = managed_rule_name(rule_id);
        let request = self.http.delete(self.url(&[&name])?);
        self.send("delete", request)
            .await
            .map(|_| ())
            .map_err(|f| f.class)
    }

    /// Checks that Splunk answers and accepts the token (`GET /services/server/info`).
    ///
    /// # Errors
    /// [`ErrorClass::AuthFailed`] for a refused token, or the call's class.
    pub async fn check_connection(&self) -> Result<(), ErrorClass> {
        let mut url = self.base.clone().ok_or(ErrorClass::MalformedJob)?;
        url.path_segments_mut()
            .map_err(|()| ErrorClass::MalformedJob)?
            .pop_if_empty()
            .extend(["services", "server", "info"]);
        let request = self.http.get(url);
        self.send("check_connection", request)
            .await
            .map(|_| ())
            .map_err(|f| f.class)
    }

    /// `{base}/servicesNS/{owner}/{app}/saved/searches[/{name}]`, segments percent-encoded.
    fn url(&self, name: &[&str]) -> Result<Url, ErrorClass> {
        let mut url = self.base.clone().ok_or(ErrorClass::MalformedJob)?;
        url.path_segments_mut()
            .map_err(|()| ErrorClass::MalformedJob)?
            .pop_if_empty()
            .extend([
                "servicesNS",
                self.owner.as_str(),
                self.app.as_str(),
                "saved",
                "searches",
            ])
            .extend(name);
        Ok(url)
    }

    /// The `Authorization` value: the session key (logging in when there is
    /// none yet) or the bearer token.
    async fn authorization(&self) -> Result<Zeroizing<String>, Failure> {
        let Some(login) = &self.login else {
            return Ok(Zeroizing::new(format!("Bearer {}", self.token.expose())));
        };
        if let Some(key) = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(Zeroizing::new(format!("Splunk {}", key.as_str())));
        }
        let mut url = self.base.clone().ok_or(ErrorClass::MalformedJob)?;
        url.path_segments_mut()
            .map_err(|()| ErrorClass::MalformedJob)?
            .pop_if_empty()
            .extend(["services", "auth", "login"]);
        let request = self.http.post(url).form(&[
            ("username", login.username.as_str()),
            ("password", login.password.expose()),
            ("output_mode", "json"),
        ]);
        let reply = super::http::send("splunk", "login", request)
            .await
            .map_err(|f| Failure {
                status: f.status,
                class: f.class,
            })?;
        #[derive(Deserialize)]
        struct Login {
            #[serde(rename = "sessionKey")]
            session_key: Zeroizing<String>,
        }
        let key: Login = reply.json().map_err(Failure::from)?;
        let header = Zeroizing::new(format!("Splunk {}", key.session_key.as_str()));
        *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(key.session_key);
        Ok(header)
    }

    /// Sends one call with the credential and `output_mode=json`, then checks
    /// the answer and returns its body. With session-key auth, a 401 (the
    /// session expired) logs in again and resends once.
    async fn send(&self, op: &'static str, request: RequestBuilder) -> Result<Vec<u8>, Failure> {
        let again = if self.login.is_some() {
            request.try_clone()
        } else {
            None
        };
        match self.send_once(op, request).await {
            Err(Failure {
                status: Some(401), ..
            }) if again.is_some() => {
                tracing::debug!(op, "Splunk session refused; logging in again once");
                *self.session.lock().unwrap_or_else(PoisonError::into_inner) = None;
                match again {
                    Some(request) => self.send_once(op, request).await,
                    None => Err(Failure::from(ErrorClass::Internal)),
                }
            }
            other => other,
        }
    }

    async fn send_once(
        &self,
        op: &'static str,
        request: RequestBuilder,
    ) -> Result<Vec<u8>, Failure> {
        let auth = self.authorization().await?;
        let mut value = reqwest::header::HeaderValue::from_str(&auth)
            .map_err(|_| Failure::from(ErrorClass::MalformedJob))?;
        value.set_sensitive(true);
        let response = request
            .header(reqwest::header::AUTHORIZATION, value)
            .query(&[("output_mode", "json")])
            .send()
            .await
            .map_err(|error| {
                let class = classify_transport(&error);
                tracing::debug!(op, class = class.as_str(), "Splunk call failed");
                Failure::from(class)
            })?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let class = classify_status(status);
            tracing::debug!(op, status, class = class.as_str(), "Splunk call failed");
            return Err(Failure {
                status: Some(status),
                class,
            });
        }
        match check_reply(response).await {
            Ok(body) => {
                tracing::debug!(op, status, "Splunk call succeeded");
                Ok(body)
            }
            Err(class) => {
                tracing::debug!(op, status, class = class.as_str(), "Splunk call failed");
                Err(Failure {
                    status: Some(status),
                    class,
                })
            }
        }
    }
}

/// The keys [`deployed_fields`] sets.
fn deployed_fields_keys() -> Vec<&'static str> {
    vec![
        "search",
        "description",
        "cron_schedule",
        "is_scheduled",
        "disabled",
        "dispatch.earliest_time",
        "dispatch.latest_time",
        "alert_type",
        "alert_comparator",
        "alert_threshold",
        "alert.track",
        "alert.severity",
        "actions",
    ]
}

/// `"text"` with `\` and `"` escaped, for a value inside an SPL search.
fn spl_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A non-negative integer cell of a result row (Splunk sends numbers as strings).
fn row_number(row: &Value, name: &str) -> Option<u64> {
    let cell = row.get(name)?;
    cell.as_u64().or_else(|| {
        cell.as_str()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn none() -> ActionOk {
    ActionOk {
        content_hash: None,
        test_counts: None,
    }
}

/// Reads a 2xx body (bounded) and fails when it is not Splunk's JSON or
/// reports an error message. The body is never logged.
async fn check_reply(mut response: Response) -> Result<Vec<u8>, ErrorClass> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_REPLY_BYTES as u64)
    {
        return Err(ErrorClass::SiemError);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify_transport(&e))? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(ErrorClass::SiemError);
        }
        body.extend_from_slice(&chunk);
    }
    reply_status(&body)?;
    Ok(body)
}

/// Whether a 2xx body means success: empty, or a JSON object whose `messages`
/// hold no `ERROR`/`FATAL` entry.
fn reply_status(body: &[u8]) -> Result<(), ErrorClass> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let reply: Reply = serde_json::from_slice(body).map_err(|_| ErrorClass::SiemError)?;
    let failed = reply
        .messages
        .iter()
        .any(|m| m.kind.eq_ignore_ascii_case("ERROR") || m.kind.eq_ignore_ascii_case("FATAL"));
    if failed {
        Err(ErrorClass::SiemError)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::Schedule;

    fn rule() -> RuleSpec {
        RuleSpec {
            rule_id: Uuid::nil(),
            version: 3,
            title: "Failed logons".into(),
            description: "Many failures".into(),
            severity: Severity::High,
            query: "index=main EventCode=4625".into(),
            schedule: Schedule {
                cron: "*/5 * * * *".into(),
                earliest: "-5m".into(),
                latest: "now".into(),
            },
        }
    }

    #[test]
    fn replies_with_error_messages_fail() {
        assert_eq!(reply_status(b""), Ok(()));
        assert_eq!(reply_status(br#"{"entry":[],"messages":[]}"#), Ok(()));
        assert_eq!(
            reply_status(br#"{"messages":[{"type":"WARN","text":"x"}]}"#),
            Ok(())
        );
        assert_eq!(
            reply_status(br#"{"messages":[{"type":"ERROR","text":"secret stuff"}]}"#),
            Err(ErrorClass::SiemError)
        );
        assert_eq!(
            reply_status(br#"{"messages":[{"type":"fatal"}]}"#),
            Err(ErrorClass::SiemError)
        );
        assert_eq!(
            reply_status(b"<html>login</html>"),
            Err(ErrorClass::SiemError)
        );
        assert_eq!(reply_status(b"[1,2]"), Err(ErrorClass::SiemError));
    }

    #[test]
    fn severities_follow_splunks_scale() {
        assert_eq!(splunk_severity(Severity::Info), 2);
        assert_eq!(splunk_severity(Severity::Low), 3);
        assert_eq!(splunk_severity(Severity::Medium), 3);
        assert_eq!(splunk_severity(Severity::High), 4);
        assert_eq!(splunk_severity(Severity::Critical), 5);
    }

    #[test]
    fn content_hash_is_canonical_and_unambiguous() {
        let fields = deployed_fields(&rule());
        let owned: BTreeMap<String, String> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        assert_eq!(content_hash(&fields), content_hash(&owned));

        // A newline inside a value cannot pass for a field boundary.
        let a = BTreeMap::from([("a", "1\nb=2".to_owned())]);
        let b = BTreeMap::from([("a", "1".to_owned()), ("b", "2".to_owned())]);
        assert_ne!(content_hash(&a), content_hash(&b));
        let c = BTreeMap::from([("a", "x\\ny".to_owned())]);
        let d = BTreeMap::from([("a", "x\ny".to_owned())]);
        assert_ne!(content_hash(&c), content_hash(&d));

        // Known answer: the canonical text of one field.
        let one = BTreeMap::from([("search", "a\\b\nc".to_owned())]);
        let expected: [u8; 32] = Sha256::digest(b"search=a\\\\b\\nc\n").into();
        assert_eq!(content_hash(&one), expected);
    }

    #[test]
    fn deployed_fields_carry_the_rule() {
        let fields = deployed_fields(&rule());
        assert_eq!(fields["search"], "index=main EventCode=4625");
        assert_eq!(fields["cron_schedule"], "*/5 * * * *");
        assert_eq!(fields["alert.severity"], "4");
        assert!(fields["description"].starts_with("Failed logons\n\nMany failures"));
        assert!(!fields.contains_key("name"));
    }
}
