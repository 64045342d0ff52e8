//! Elastic Security connector: a Picket rule is a detection rule of the Kibana
//! detection engine (API version `2023-10-31`) whose `rule_id` is
//! [`managed_rule_name`] (`picket-<rule id>`) and which carries the tag
//! [`MANAGED_TAG`].
//!
//! | operation | calls |
//! |---|---|
//! | check connection | `GET {kibana}[/s/{space}]/api/detection_engine/rules/_find?per_page=1` |
//! | deploy | `POST .../api/detection_engine/rules`; on 409 `PUT` the same body (full replace by `rule_id`) |
//! | enable / disable | `GET .../rules?rule_id=` (for the saved-object id), then `POST .../rules/_bulk_action` `{action, ids}` |
//! | delete | `DELETE .../rules?rule_id=` |
//! | content hash, health | `GET .../rules?rule_id=` |
//! | list managed | `GET .../rules/_find?filter=alert.attributes.tags:"picket"&page=N&per_page=100` until `total` |
//! | test events | `POST {elasticsearch}/_bulk?refresh=wait_for` (NDJSON `create` actions into the test index) |
//! | count | `POST {elasticsearch}/{test index}/_count` (KQL rules); EQL: `POST {elasticsearch}/{test index}/_eql/search`; ES\|QL: `POST {elasticsearch}/_query` with `FROM {test index} \| ... \| STATS picket_count = COUNT(*)` |
//!
//! Every Kibana call sends `Authorization: ApiKey <key>`, `kbn-xsrf: true`
//! and `Elastic-Api-Version: 2023-10-31`; Elasticsearch calls send the same
//! API key. A 429 is retried after its `Retry-After`.
//!
//! # Rule type
//! The query's language decides the rule type: a query starting with `FROM `
//! is ES|QL (`esql`), one starting with an EQL event category followed by
//! `where` (`process where ...`), or with `sequence`, is `eql`; anything else
//! is a KQL `query` rule.
//!
//! # Content hash
//! SHA-256 of the canonical JSON of the managed fields ([`MANAGED_FIELDS`]) as
//! sent, or as read back.
//!
//! # Monitoring mode
//! A building-block rule without actions, tagged `picket-monitoring`
//! ([`deployed_rule_mode`]).
//!
//! # Count filter form
//! A Lucene `query_string`, e.g. `event.code:4625 AND user.name:alice`,
//! combined with a `term` on `labels.picket: picket_test` and a `range` on
//! `@timestamp`. An EQL event query (`process where ...`) is run as it is
//! with the same two bounds as its `filter`; an ES|QL filter (`FROM * |
//! WHERE ...`) has its source replaced by the test index, a row count
//! appended, and the two bounds as its `filter`.
//!
//! # Health
//! From the rule's `execution_summary.last_execution`: one run, counted as
//! succeeded (`succeeded`), failed (`failed`) or skipped (`partial failure`)
//! when its `date` is inside the window; duration = search + indexing
//! duration; gap = `execution_gap_duration_s`. Elastic does not report
//! results or alerts there, so those stay `None`.

use picket_proto::{
    ElasticSettings, ErrorClass, RuleHealth, RuleSpec, Severity, managed_rule_name,
};
use reqwest::{Client, RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::http::{self, Failure, Reply};
use super::{
    Period, TEST_MARKER, TestEvent, TimeWindow, canonical, managed_rule_id, parse_base_url,
};

/// The detection engine API version.
pub const API_VERSION: &str = "2023-10-31";
/// The tag every managed rule carries (what `_find` filters on).
pub const MANAGED_TAG: &str = "picket";
/// Rules per `_find` page (Kibana's maximum is 10000; 100 keeps pages small).
const PER_PAGE: usize = 100;
/// Most pages followed.
const MAX_PAGES: usize = 200;

/// Tag added to rules deployed in monitoring mode (visible in Kibana's rule list).
pub const MONITORING_TAG: &str = "picket-monitoring";

/// The fields Picket sets and hashes (`building_block_type` only in
/// monitoring mode: absent fields are left out of the hash, so active rules
/// hash as before monitoring mode existed).
pub const MANAGED_FIELDS: [&str; 14] = [
    "rule_id",
    "name",
    "description",
    "risk_score",
    "severity",
    "type",
    "language",
    "query",
    "interval",
    "from",
    "to",
    "enabled",
    "tags",
    "building_block_type",
];

const SIEM: &str = "elastic";

/// Elastic's severity and risk score for a Picket severity (the risk scores
/// are Elastic's defaults per severity; `info` maps to low with a lower score).
pub fn elastic_severity(severity: Severity) -> (&'static str, u8) {
    match severity {
        Severity::Info => ("low", 10),
        Severity::Low => ("low", 21),
        Severity::Medium => ("medium", 47),
        Severity::High => ("high", 73),
        Severity::Critical => ("critical", 99),
    }
}

/// The rule type and language for a query (see the module docs).
pub fn rule_type(query: &str) -> (&'static str, &'static str) {
    let q = query.trim_start();
    let lower = q.to_ascii_lowercase();
    if lower.starts_with("from ") {
        return ("esql", "esql");
    }
    let mut words = lower.split_whitespace();
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    let category =
        !first.is_empty() && first.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first == "sequence" || (category && second == "where") {
        return ("eql", "eql");
    }
    ("query", "kuery")
}

fn duration(period: Period) -> String {
    match period {
        Period::Minutes(n) => format!("{n}m"),
        Period::Hours(n) => format!("{n}h"),
        Period::Days(n) => format!("{n}d"),
    }
}

/// The rule body a deploy sends (create and full update alike).
///
/// # Errors
/// [`ErrorClass::QueryInvalid`] when the schedule has no Kibana form.
pub fn deployed_rule(rule: &RuleSpec) -> Result<Value, ErrorClass> {
    deployed_rule_mode(rule, false)
}

/// [`deployed_rule`] in active or monitoring mode. Monitoring mode: enabled,
/// no `actions` (no notification leaves Kibana), and a building-block rule
/// (`building_block_type: default`), whose alerts Kibana writes but keeps
/// out of the default Alerts view, so no analyst is paged; tagged
/// [`MONITORING_TAG`]. A deploy is a full replace, so promoting the rule
/// (an active deploy) clears all three.
///
/// # Errors
/// [`ErrorClass::QueryInvalid`] when the schedule has no Kibana form.
pub fn deployed_rule_mode(rule: &RuleSpec, monitoring: bool) -> Result<Value, ErrorClass> {
    let interval = super::cron_period(&rule.schedule.cron)?;
    let lookback = super::lookback_period(&rule.schedule.earliest)?;
    let (severity, risk_score) = elastic_severity(rule.severity);
    let (kind, language) = rule_type(&rule.query);
    let mut description = rule.description.trim().to_owned();
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str(&format!(
        "Managed by Picket (rule version {}); changes made in Kibana are overwritten.",
        rule.version
    ));
    let mut body = json!({
        "rule_id": managed_rule_name(&rule.rule_id),
        "name": rule.title.trim(),
        "description": description,
        "risk_score": risk_score,
        "severity": severity,
        "type": kind,
        "language": language,
        "query": rule.query,
        "interval": duration(interval),
        "from": format!("now-{}", duration(lookback)),
        "to": "now",
        "enabled": true,
        "tags": [MANAGED_TAG],
    });
    if monitoring {
        body["building_block_type"] = json!("default");
        body["actions"] = json!([]);
        body["tags"] = json!([MANAGED_TAG, MONITORING_TAG]);
    }
    Ok(body)
}

/// A detection rule normalized back to the rule model: `name` is the title,
/// `description` without the "Managed by Picket" note, `severity` as is
/// except `low` with a risk score of at most 10 → info (the score deploys
/// give info), `interval` and `from` the native frequency and lookback; a
/// building-block rule is monitoring mode.
///
/// # Errors
/// [`ErrorClass::SiemError`] when the rule holds no query.
pub fn remote_rule(rule: &Value) -> Result<picket_proto::RemoteRule, ErrorClass> {
    let text = |key: &str| {
        rule.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let query = text("query");
    if query.is_empty() {
        return Err(ErrorClass::SiemError);
    }
    let risk = rule.get("risk_score").and_then(Value::as_u64).unwrap_or(0);
    let severity = match text("severity").as_str() {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ if risk > 10 => Severity::Low,
        _ => Severity::Info,
    };
    let non_empty = |v: String| (!v.is_empty()).then_some(v);
    Ok(picket_proto::RemoteRule {
        title: text("name").trim().to_owned(),
        description: super::strip_managed_note(&text("description")),
        severity,
        query,
        schedule: picket_proto::RemoteSchedule {
            cron: None,
            earliest: None,
            latest: None,
            frequency: non_empty(text("interval")),
            lookback: non_empty(text("from")),
        },
        monitoring: is_monitoring(rule),
        enabled: rule.get("enabled").and_then(Value::as_bool) != Some(false),
    })
}

/// Whether a rule (as sent or read back) is in monitoring mode.
pub fn is_monitoring(rule: &Value) -> bool {
    rule.get("building_block_type").and_then(Value::as_str) == Some("default")
}

/// The hash of the managed fields in `rule`.
pub fn content_hash(rule: &Value) -> [u8; 32] {
    canonical::hash(&canonical::pick(rule, &MANAGED_FIELDS))
}

/// Acts on one Kibana space and its Elasticsearch.
#[derive(Debug)]
pub struct ElasticConnector {
    settings: ElasticSettings,
    kibana: Option<Url>,
    elasticsearch: Option<Url>,
    http: Client,
}

#[derive(Deserialize)]
struct FindReply {
    #[serde(default)]
    total: usize,
    #[serde(default)]
    data: Vec<Value>,
}

#[derive(Deserialize)]
struct BulkActionReply {
    attributes: BulkAttributes,
}

#[derive(Deserialize)]
struct BulkAttributes {
    summary: BulkSummary,
}

#[derive(Deserialize)]
struct BulkSummary {
    failed: u64,
}

#[derive(Deserialize)]
struct BulkReply {
    errors: bool,
}

#[derive(Deserialize)]
struct CountReply {
    count: u64,
}

/// `POST /_query` (ES|QL): one row, one column (the count).
#[derive(Deserialize)]
struct EsqlReply {
    #[serde(default)]
    values: Vec<Vec<Value>>,
}

/// `POST /{index}/_eql/search`: only `hits.total.value` is read.
#[derive(Deserialize)]
struct EqlReply {
    hits: EqlHits,
}

#[derive(Deserialize)]
struct EqlHits {
    total: EqlTotal,
}

#[derive(Deserialize)]
struct EqlTotal {
    value: u64,
}

/// The ES|QL count of a test filter (`FROM * | WHERE ...`, see
/// `picket_rules::test_filter`): the source replaced by the test index, a
/// `STATS` counting the rows appended.
///
/// # Errors
/// [`ErrorClass::MalformedJob`] for a filter that does not start with `FROM`.
pub fn esql_count_query(filter: &str, test_index: &str) -> Result<String, ErrorClass> {
    let trimmed = filter.trim_start();
    if !trimmed.to_ascii_lowercase().starts_with("from ") {
        return Err(ErrorClass::MalformedJob);
    }
    let rest = trimmed.split_once('|').map(|(_, rest)| rest.trim());
    Ok(match rest {
        Some(stages) => format!("FROM {test_index} | {stages} | STATS picket_count = COUNT(*)"),
        None => format!("FROM {test_index} | STATS picket_count = COUNT(*)"),
    })
}

impl ElasticConnector {
    /// A connector for `settings`, sending through `http`.
    pub fn new(settings: &ElasticSettings, http: Client) -> Self {
        ElasticConnector {
            kibana: parse_base_url(&settings.kibana_url),
            elasticsearch: parse_base_url(&settings.elasticsearch_url),
            settings: settings.clone(),
            http,
        }
    }

    /// `{kibana}[/s/{space}]/api/detection_engine/rules[/{tail}]`.
    fn rules_url(&self, tail: Option<&str>) -> Result<Url, ErrorClass> {
        let base = self.kibana.as_ref().ok_or(ErrorClass::MalformedJob)?;
        let mut segments: Vec<&str> = Vec::new();
        if let Some(space) = self
            .settings
            .space
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "default")
        {
            segments.extend(["s", space]);
        }
        segments.extend(["api", "detection_engine", "rules"]);
        segments.extend(tail);
        http::join(base, &segments)
    }

    fn kibana(&self, request: RequestBuilder) -> RequestBuilder {
        request
            .header(
                reqwest::header::AUTHORIZATION,
                format!("ApiKey {}", self.settings.api_key.expose()),
            )
            .header("kbn-xsrf", "true")
            .header("Elastic-Api-Version", API_VERSION)
    }

    fn es(&self, request: RequestBuilder) -> RequestBuilder {
        request.header(
            reqwest::header::AUTHORIZATION,
            format!("ApiKey {}", self.settings.api_key.expose()),
        )
    }

    async fn call<F>(&self, op: &'static str, make: F) -> Result<Reply, Failure>
    where
        F: Fn() -> Result<RequestBuilder, ErrorClass>,
    {
        http::send_retrying(SIEM, op, make).await
    }

    fn by_rule_id(&self, rule_id: &Uuid) -> Result<Url, ErrorClass> {
        let mut url = self.rules_url(None)?;
        url.query_pairs_mut()
            .append_pair("rule_id", &managed_rule_name(rule_id));
        Ok(url)
    }

    /// GETs the rule: `None` when it does not exist.
    async fn read(&self, rule_id: &Uuid) -> Result<Option<Value>, ErrorClass> {
        let url = self.by_rule_id(rule_id)?;
        match self
            .call("get_rule", || Ok(self.kibana(self.http.get(url.clone()))))
            .await
        {
            Ok(reply) => Ok(Some(reply.json()?)),
            Err(f) if f.status == Some(404) => Ok(None),
            Err(f) => Err(f.class),
        }
    }

    /// Checks that Kibana answers and the key may read detection rules.
    ///
    /// # Errors
    /// The call's class.
    pub async fn check_connection(&self) -> Result<(), ErrorClass> {
        let mut url = self.rules_url(Some("_find"))?;
        url.query_pairs_mut().append_pair("per_page", "1");
        self.call("check_connection", || {
            Ok(self.kibana(self.http.get(url.clone())))
        })
        .await
        .map(|_| ())
        .map_err(|f| f.class)
    }

    /// Creates the rule, or replaces it when its `rule_id` exists.
    ///
    /// # Errors
    /// The failing call's class.
    pub async fn deploy(&self, rule: &RuleSpec) -> Result<[u8; 32], ErrorClass> {
        self.deploy_mode(rule, false).await
    }

    /// [`Self::deploy`] in active or monitoring mode ([`deployed_rule_mode`]).
    ///
    /// # Errors
    /// As [`Self::deploy`].
    pub async fn deploy_mode(
        &self,
        rule: &RuleSpec,
        monitoring: bool,
    ) -> Result<[u8; 32], ErrorClass> {
        let body = deployed_rule_mode(rule, monitoring)?;
        let url = self.rules_url(None)?;
        match self
            .call("create_rule", || {
                Ok(self.kibana(self.http.post(url.clone())).json(&body))
            })
            .await
        {
            Ok(_) => {}
            Err(f) if f.status == Some(409) => {
                self.call("update_rule", || {
                    Ok(self.kibana(self.http.put(url.clone())).json(&body))
                })
                .await
                .map_err(|f| f.class)?;
            }
            Err(f) => return Err(f.class),
        }
        Ok(content_hash(&body))
    }

    /// Enables or disables the rule through `_bulk_action`.
    ///
    /// # Errors
    /// `not_found`, or the call's class; a bulk answer reporting a failed rule is `siem_error`.
    pub async fn set_enabled(&self, rule_id: &Uuid, enabled: bool) -> Result<(), ErrorClass> {
        let rule = self.read(rule_id).await?.ok_or(ErrorClass::NotFound)?;
        let id = rule
            .get("id")
            .and_then(Value::as_str)
            .ok_or(ErrorClass::SiemError)?
            .to_owned();
        let url = self.rules_url(Some("_bulk_action"))?;
        let body = json!({ "action": if enabled { "enable" } else { "disable" }, "ids": [id] });
        let reply: BulkActionReply = self
            .call("bulk_action", || {
                Ok(self.kibana(self.http.post(url.clone())).json(&body))
            })
            .await
            .map_err(|f| f.class)?
            .json()?;
        if reply.attributes.summary.failed > 0 {
            return Err(ErrorClass::SiemError);
        }
        Ok(())
    }

    /// Deletes the rule.
    ///
    /// # Errors
    /// `not_found`, or the call's class.
    pub async fn delete(&self, rule_id: &Uuid) -> Result<(), ErrorClass> {
        let url = self.by_rule_id(rule_id)?;
        self.call("delete_rule", || {
            Ok(self.kibana(self.http.delete(url.clone())))
        })
        .await
        .map(|_| ())
        .map_err(|f| f.class)
    }

    /// The hash of the rule's managed fields as Kibana holds them.
    ///
    /// # Errors
    /// `not_found`, or the call's class.
    pub async fn content_hash(&self, rule_id: &Uuid) -> Result<[u8; 32], ErrorClass> {
        let rule = self.read(rule_id).await?.ok_or(ErrorClass::NotFound)?;
        Ok(content_hash(&rule))
    }

    /// The rule normalized back to the rule model ([`remote_rule`]).
    ///
    /// # Errors
    /// `not_found`, or the call's class; `siem_error` for a rule without a
    /// query.
    pub async fn read_rule(&self, rule_id: &Uuid) -> Result<picket_proto::RemoteRule, ErrorClass> {
        let rule = self.read(rule_id).await?.ok_or(ErrorClass::NotFound)?;
        remote_rule(&rule)
    }

    /// Ids of the rules tagged [`MANAGED_TAG`] whose `rule_id` is `picket-<uuid>`.
    ///
    /// # Errors
    /// The call's class.
    pub async fn list_managed(&self) -> Result<Vec<Uuid>, ErrorClass> {
        let mut ids = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut url = self.rules_url(Some("_find"))?;
            url.query_pairs_mut()
                .append_pair(
                    "filter",
                    &format!("alert.attributes.tags:\"{MANAGED_TAG}\""),
                )
                .append_pair("page", &page.to_string())
                .append_pair("per_page", &PER_PAGE.to_string());
            let reply: FindReply = self
                .call("find_rules", || Ok(self.kibana(self.http.get(url.clone()))))
                .await
                .map_err(|f| f.class)?
                .json()?;
            let seen = reply.data.len();
            ids.extend(
                reply
                    .data
                    .iter()
                    .filter_map(|r| r.get("rule_id").and_then(Value::as_str))
                    .filter_map(managed_rule_id),
            );
            if seen == 0 || page * PER_PAGE >= reply.total {
                return Ok(ids);
            }
        }
        Err(ErrorClass::SiemError)
    }

    /// Indexes test events into the test index with `_bulk`, each with
    /// `labels.picket: picket_test`; `refresh=wait_for` makes them countable at once.
    ///
    /// # Errors
    /// The call's class; a `_bulk` answer with `errors: true` is `siem_error`.
    pub async fn inject_test_events(&self, events: &[TestEvent]) -> Result<u64, ErrorClass> {
        let base = self
            .elasticsearch
            .as_ref()
            .ok_or(ErrorClass::MalformedJob)?;
        let mut url = http::join(base, &["_bulk"])?;
        url.query_pairs_mut().append_pair("refresh", "wait_for");
        let mut body = String::new();
        let action = json!({ "create": { "_index": self.settings.test_index } }).to_string();
        for event in events {
            let mut doc = serde_json::Map::new();
            for (k, v) in &event.fields {
                doc.insert(k.clone(), json!(v));
            }
            doc.insert("@timestamp".into(), json!(super::rfc3339(event.time)?));
            doc.insert("labels".into(), json!({ "picket": TEST_MARKER }));
            body.push_str(&action);
            body.push('\n');
            body.push_str(&Value::Object(doc).to_string());
            body.push('\n');
        }
        let reply: BulkReply = self
            .call("bulk_index", || {
                Ok(self
                    .es(self.http.post(url.clone()))
                    .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                    .body(body.clone()))
            })
            .await
            .map_err(|f| f.class)?
            .json()?;
        if reply.errors {
            return Err(ErrorClass::SiemError);
        }
        Ok(events.len() as u64)
    }

    /// Counts test events in the test index matching `filter` inside `window`.
    ///
    /// # Errors
    /// The call's class (a query Elasticsearch cannot parse is `query_invalid`).
    pub async fn count_test_matches(
        &self,
        filter: &str,
        window: TimeWindow,
    ) -> Result<u64, ErrorClass> {
        let base = self
            .elasticsearch
            .as_ref()
            .ok_or(ErrorClass::MalformedJob)?;
        let (from, to) = window.rfc3339()?;
        let bounds = json!([
            { "term": { "labels.picket": TEST_MARKER } },
            { "range": { "@timestamp": { "gte": from, "lte": to } } },
        ]);
        match rule_type(filter).0 {
            "esql" => {
                let url = http::join(base, &["_query"])?;
                let query = esql_count_query(filter, &self.settings.test_index)?;
                let body = json!({ "query": query, "filter": { "bool": { "filter": bounds } } });
                let reply: EsqlReply = self
                    .call("count_esql", || {
                        Ok(self.es(self.http.post(url.clone())).json(&body))
                    })
                    .await
                    .map_err(|f| f.class)?
                    .json()?;
                return reply
                    .values
                    .first()
                    .and_then(|row| row.first())
                    .and_then(Value::as_u64)
                    .ok_or(ErrorClass::SiemError);
            }
            "eql" => {
                let url = http::join(base, &[&self.settings.test_index, "_eql", "search"])?;
                // `size` above the most events a test case may inject, so the
                // total is never cut short.
                let body = json!({ "query": filter, "size": 1000, "filter": { "bool": { "filter": bounds } } });
                let reply: EqlReply = self
                    .call("count_eql", || {
                        Ok(self.es(self.http.post(url.clone())).json(&body))
                    })
                    .await
                    .map_err(|f| f.class)?
                    .json()?;
                return Ok(reply.hits.total.value);
            }
            _ => {}
        }
        let url = http::join(base, &[&self.settings.test_index, "_count"])?;
        let mut clauses = bounds;
        if let Some(list) = clauses.as_array_mut() {
            list.push(json!({ "query_string": { "query": filter } }));
        }
        let body = json!({ "query": { "bool": { "filter": clauses } } });
        let reply: CountReply = self
            .call("count", || {
                Ok(self.es(self.http.post(url.clone())).json(&body))
            })
            .await
            .map_err(|f| f.class)?
            .json()?;
        Ok(reply.count)
    }

    /// Counts the rows an ES|QL preview query (`FROM <its source> | <row
    /// stages>`) matches in `window`, through `_query` with a row count
    /// appended and the window as its `filter`. Kibana KQL and EQL rules get
    /// no preview (their index patterns are the space's defaults).
    ///
    /// # Errors
    /// `query_invalid` for anything but an ES|QL query; the call's class.
    pub async fn preview_count(&self, query: &str, window: TimeWindow) -> Result<u64, ErrorClass> {
        if rule_type(query).0 != "esql" {
            return Err(ErrorClass::QueryInvalid);
        }
        let base = self
            .elasticsearch
            .as_ref()
            .ok_or(ErrorClass::MalformedJob)?;
        let url = http::join(base, &["_query"])?;
        let (from, to) = window.rfc3339()?;
        let body = json!({
            "query": format!("{} | STATS picket_count = COUNT(*)", query.trim()),
            "filter": { "range": { "@timestamp": { "gte": from, "lte": to } } },
        });
        let reply: EsqlReply = self
            .call("preview_esql", || {
                Ok(self.es(self.http.post(url.clone())).json(&body))
            })
            .await
            .map_err(|f| f.class)?
            .json()?;
        reply
            .values
            .first()
            .and_then(|row| row.first())
            .and_then(Value::as_u64)
            .ok_or(ErrorClass::SiemError)
    }

    /// Reduces the rule's last execution to numbers (see the module docs).
    ///
    /// # Errors
    /// `not_found`, or the call's class.
    pub async fn rule_health(
        &self,
        rule_id: &Uuid,
        window: TimeWindow,
    ) -> Result<RuleHealth, ErrorClass> {
        let rule = self.read(rule_id).await?.ok_or(ErrorClass::NotFound)?;
        Ok(health_of(&rule, window))
    }
}

/// The numbers in a rule's `execution_summary.last_execution`.
pub fn health_of(rule: &Value, window: TimeWindow) -> RuleHealth {
    let mut health = RuleHealth::default();
    let Some(last) = rule.pointer("/execution_summary/last_execution") else {
        return health;
    };
    let at = last
        .get("date")
        .and_then(Value::as_str)
        .and_then(|d| {
            time::OffsetDateTime::parse(d, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(time::OffsetDateTime::unix_timestamp);
    health.last_run_at = at;
    let metric = |name: &str| {
        last.pointer(&format!("/metrics/{name}"))
            .and_then(Value::as_u64)
    };
    let search = metric("total_search_duration_ms");
    let indexing = metric("total_indexing_duration_ms");
    health.last_run_duration_ms = match (search, indexing) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    };
    health.gap_ms = metric("execution_gap_duration_s").map(|s| s.saturating_mul(1000));
    if at.is_some_and(|t| t >= window.from && t <= window.to) {
        match last.get("status").and_then(Value::as_str) {
            Some("succeeded") => health.runs_succeeded = 1,
            Some("failed") => health.runs_failed = 1,
            Some("partial failure") => health.runs_skipped = 1,
            _ => {}
        }
    }
    health
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_language_picks_the_type() {
        assert_eq!(rule_type("event.code:4625"), ("query", "kuery"));
        assert_eq!(
            rule_type("process where process.name == \"x\""),
            ("eql", "eql")
        );
        assert_eq!(
            rule_type("sequence by host.id [process where true]"),
            ("eql", "eql")
        );
        assert_eq!(
            rule_type("FROM logs-* | WHERE event.code == \"4625\""),
            ("esql", "esql")
        );
    }

    #[test]
    fn last_execution_becomes_numbers() {
        let window = TimeWindow {
            from: 0,
            to: i64::MAX / 2,
        };
        let rule = json!({"execution_summary": {"last_execution": {
            "date": "2026-01-01T00:00:00Z", "status": "partial failure", "status_order": 20,
            "message": "secret text", "metrics": {"total_search_duration_ms": 40, "total_indexing_duration_ms": 2, "execution_gap_duration_s": 3}
        }}});
        let h = health_of(&rule, window);
        assert_eq!(h.runs_skipped, 1);
        assert_eq!(h.last_run_duration_ms, Some(42));
        assert_eq!(h.gap_ms, Some(3000));
        assert_eq!(health_of(&json!({}), window), RuleHealth::default());
    }
}
