//! Microsoft Sentinel connector: a Picket rule is a `Scheduled` analytics rule
//! (`Microsoft.SecurityInsights/alertRules`, API version `2024-09-01`) whose
//! rule id is [`managed_rule_name`] (`picket-<rule id>`).
//!
//! | operation | calls |
//! |---|---|
//! | token | `POST {login}/{tenant}/oauth2/v2.0/token` (client credentials; scope ARM, Log Analytics or Azure Monitor) |
//! | check connection | `GET {workspace}/providers/Microsoft.SecurityInsights/alertRules?api-version=2024-09-01` |
//! | deploy | `GET .../alertRules/{id}` (for the etag), then `PUT .../alertRules/{id}` with `kind: Scheduled`, the etag when updating |
//! | enable / disable | `GET`, then `PUT` of the same rule with `enabled` changed and its etag |
//! | delete | `DELETE .../alertRules/{id}` (204 = did not exist → `not_found`) |
//! | content hash | `GET .../alertRules/{id}` |
//! | list managed | `GET .../alertRules`, following `nextLink` (same origin only) |
//! | test events | `POST {dce}/dataCollectionRules/{dcr}/streams/{stream}?api-version=2023-01-01` (Logs Ingestion API) |
//! | count | `POST {log analytics}/v1/workspaces/{id}/query` with `... \| count` |
//! | health | the same query API over the `SentinelHealth` table |
//!
//! # Tokens
//! Access tokens are cached per (authority, tenant, client, secret digest,
//! scope) in the agent process until 5 minutes before `expires_in` (or half
//! their lifetime when that is shorter), so consecutive jobs do not ask Entra
//! again. A 401 from ARM or Log Analytics (an expired or revoked token) drops
//! the cached token and retries the call once with a new one.
//!
//! # Etags
//! An update sends the etag read just before; a 412 (someone changed the rule
//! in between) re-reads and retries once, then reports `conflict`.
//!
//! # Throttling
//! A 429 is retried after its `Retry-After` (see [`super::http::send_retrying`]).
//!
//! # Content hash
//! SHA-256 of the canonical JSON ([`super::canonical`]) of the managed
//! properties ([`MANAGED_PROPERTIES`]) as sent, or as read back, with a
//! `monitoring` marker when incident creation is off ([`content_hash`]).
//!
//! # Monitoring mode
//! `incidentConfiguration.createIncident = false`: alerts, no incidents
//! ([`deployed_properties_mode`]).
//!
//! # Count filter form
//! A KQL predicate, e.g. `EventID == "4625" and Account == "alice"`, applied
//! after the bound: `T | where TimeGenerated between (...) | where Source ==
//! "picket_test" | where <filter> | count`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use picket_proto::{
    Credential, ErrorClass, RuleHealth, RuleSpec, SentinelSettings, Severity, managed_rule_name,
};
use reqwest::{Client, RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::http::{self, Failure, Reply};
use super::{
    Period, TEST_MARKER, TestEvent, TimeWindow, canonical, managed_rule_id, parse_base_url,
};

/// The `alertRules` API version.
pub const API_VERSION: &str = "2024-09-01";
/// The Logs Ingestion API version.
pub const INGESTION_API_VERSION: &str = "2023-01-01";
/// Scope of Azure Resource Manager tokens.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// Scope of Log Analytics query tokens.
pub const LOG_ANALYTICS_SCOPE: &str = "https://api.loganalytics.io/.default";
/// Scope of Logs Ingestion tokens (with the double slash Microsoft documents).
pub const MONITOR_SCOPE: &str = "https://monitor.azure.com//.default";
/// How long before expiry a cached token is replaced.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Most pages of a rule listing followed.
const MAX_PAGES: usize = 200;

/// The properties Picket sets and hashes.
pub const MANAGED_PROPERTIES: [&str; 11] = [
    "displayName",
    "description",
    "enabled",
    "severity",
    "query",
    "queryFrequency",
    "queryPeriod",
    "triggerOperator",
    "triggerThreshold",
    "suppressionEnabled",
    "suppressionDuration",
];

const SIEM: &str = "sentinel";

/// Sentinel's severity for a Picket severity (it has no "critical": → High).
pub fn sentinel_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High | Severity::Critical => "High",
    }
}

fn iso_duration(period: Period) -> String {
    match period {
        Period::Minutes(n) if n % 60 == 0 => format!("PT{}H", n / 60),
        Period::Minutes(n) => format!("PT{n}M"),
        Period::Hours(n) => format!("PT{n}H"),
        Period::Days(n) => format!("P{n}D"),
    }
}

/// The `properties` of the `Scheduled` rule a deploy sends: alert when the
/// query returns any row, no suppression (the 5 h suppression duration is
/// required even when suppression is off), incidents created from alerts.
///
/// # Errors
/// [`ErrorClass::QueryInvalid`] when the schedule has no Sentinel form.
pub fn deployed_properties(rule: &RuleSpec) -> Result<Value, ErrorClass> {
    deployed_properties_mode(rule, false)
}

/// [`deployed_properties`] in active or monitoring mode. Monitoring mode is
/// `incidentConfiguration.createIncident = false`: the rule runs and its
/// alerts are recorded, but no incident reaches the analysts' queue. Both
/// modes send `incidentConfiguration` (with grouping off) so that promoting
/// a monitored rule, a full `PUT`, turns incident creation back on
/// explicitly.
///
/// # Errors
/// [`ErrorClass::QueryInvalid`] when the schedule has no Sentinel form.
pub fn deployed_properties_mode(rule: &RuleSpec, monitoring: bool) -> Result<Value, ErrorClass> {
    let frequency = super::cron_period(&rule.schedule.cron)?;
    let period = super::lookback_period(&rule.schedule.earliest)?;
    let mut description = rule.description.trim().to_owned();
    if !description.is_empty() {
        description.push_str("\n\n");
    }
    description.push_str(&format!(
        "Managed by Picket (rule version {}); changes made in Sentinel are overwritten.",
        rule.version
    ));
    Ok(json!({
        "displayName": rule.title.trim(),
        "description": description,
        "enabled": true,
        "severity": sentinel_severity(rule.severity),
        "query": rule.query,
        "queryFrequency": iso_duration(frequency),
        "queryPeriod": iso_duration(period),
        "triggerOperator": "GreaterThan",
        "triggerThreshold": 0,
        "suppressionEnabled": false,
        "suppressionDuration": "PT5H",
        "incidentConfiguration": {
            "createIncident": !monitoring,
            "groupingConfiguration": {
                "enabled": false,
                "reopenClosedIncident": false,
                "lookbackDuration": "PT5H",
                "matchingMethod": "AllEntities",
            },
        },
    }))
}

/// Whether `properties` describe a rule in monitoring mode (incident
/// creation explicitly off).
pub fn is_monitoring(properties: &Value) -> bool {
    properties
        .pointer("/incidentConfiguration/createIncident")
        .and_then(Value::as_bool)
        == Some(false)
}

/// The hash of the managed properties in `properties`, plus a `monitoring`
/// marker when incident creation is off. Only the off state is marked, so
/// the hash of an active rule is the one computed before monitoring mode
/// existed (rules deployed then are not reported as drifted), and a rule
/// whose incidents someone switched on or off in the portal is.
pub fn content_hash(properties: &Value) -> [u8; 32] {
    let mut picked = canonical::pick(properties, &MANAGED_PROPERTIES);
    if is_monitoring(properties)
        && let Some(map) = picked.as_object_mut()
    {
        map.insert("monitoring".into(), Value::Bool(true));
    }
    canonical::hash(&picked)
}

/// A `Scheduled` rule's properties normalized back to the rule model:
/// `displayName` is the title, `description` without the "Managed by
/// Picket" note, `severity` High → high (critical shares the step),
/// Medium, Low, Informational → info; `queryFrequency` and `queryPeriod`
/// are the native frequency and lookback; incident creation off is
/// monitoring mode.
///
/// # Errors
/// [`ErrorClass::SiemError`] when the properties hold no query.
pub fn remote_rule(properties: &Value) -> Result<picket_proto::RemoteRule, ErrorClass> {
    let text = |key: &str| {
        properties
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let query = text("query");
    if query.is_empty() {
        return Err(ErrorClass::SiemError);
    }
    let severity = match text("severity").as_str() {
        "High" => Severity::High,
        "Medium" => Severity::Medium,
        "Low" => Severity::Low,
        _ => Severity::Info,
    };
    let non_empty = |v: String| (!v.is_empty()).then_some(v);
    Ok(picket_proto::RemoteRule {
        title: text("displayName").trim().to_owned(),
        description: super::strip_managed_note(&text("description")),
        severity,
        query,
        schedule: picket_proto::RemoteSchedule {
            cron: None,
            earliest: None,
            latest: None,
            frequency: non_empty(text("queryFrequency")),
            lookback: non_empty(text("queryPeriod")),
        },
        monitoring: is_monitoring(properties),
        enabled: properties.get("enabled").and_then(Value::as_bool) != Some(false),
    })
}

/// A cached access token.
struct CachedToken {
    token: Zeroizing<String>,
    refresh_at: Instant,
}

type TokenKey = (String, String, String, [u8; 32], &'static str);

fn token_cache() -> &'static Mutex<HashMap<TokenKey, CachedToken>> {
    static CACHE: OnceLock<Mutex<HashMap<TokenKey, CachedToken>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Acts on one Sentinel workspace.
#[derive(Debug)]
pub struct SentinelConnector {
    settings: SentinelSettings,
    management: Option<Url>,
    login: Option<Url>,
    log_analytics: Option<Url>,
    http: Client,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: Zeroizing<String>,
    expires_in: u64,
}

#[derive(Deserialize)]
struct RuleReply {
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    properties: Value,
}

#[derive(Deserialize)]
struct ListReply {
    #[serde(default)]
    value: Vec<ListedRule>,
    #[serde(rename = "nextLink", default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct ListedRule {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct QueryReply {
    #[serde(default)]
    tables: Vec<QueryTable>,
    /// Log Analytics reports a partial failure with 200 and this member.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct QueryTable {
    columns: Vec<QueryColumn>,
    rows: Vec<Vec<Value>>,
}

#[derive(Deserialize)]
struct QueryColumn {
    name: String,
}

impl SentinelConnector {
    /// A connector for `settings`, sending through `http`.
    pub fn new(settings: &SentinelSettings, http: Client) -> Self {
        SentinelConnector {
            management: parse_base_url(&settings.management_url),
            login: parse_base_url(&settings.login_url),
            log_analytics: parse_base_url(&settings.log_analytics_url),
            settings: settings.clone(),
            http,
        }
    }

    fn cache_key(&self, scope: &'static str) -> TokenKey {
        (
            self.settings.login_url.clone(),
            self.settings.tenant_id.clone(),
            self.settings.client_id.clone(),
            Sha256::digest(self.settings.client_secret.expose().as_bytes()).into(),
            scope,
        )
    }

    /// A token for `scope`, from the cache or from Entra.
    async fn token(&self, scope: &'static str) -> Result<Zeroizing<String>, ErrorClass> {
        let key = self.cache_key(scope);
        {
            let cache = token_cache().lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(cached) = cache.get(&key)
                && Instant::now() < cached.refresh_at
            {
                return Ok(cached.token.clone());
            }
        }
        let login = self.login.as_ref().ok_or(ErrorClass::MalformedJob)?;
        let url = http::join(
            login,
            &[&self.settings.tenant_id, "oauth2", "v2.0", "token"],
        )?;
        let secret: &Credential = &self.settings.client_secret;
        let reply = http::send_retrying(SIEM, "token", || {
            Ok(self.http.post(url.clone()).form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.settings.client_id.as_str()),
                ("client_secret", secret.expose()),
                ("scope", scope),
            ]))
        })
        .await
        .map_err(|f| match f.status {
            // Entra answers a bad client or secret with 400/401 (invalid_client, unauthorized_client).
            Some(400 | 401) => ErrorClass::AuthFailed,
            _ => f.class,
        })?;
        let token: TokenReply = reply.json()?;
        let lifetime = Duration::from_secs(token.expires_in);
        let margin = TOKEN_REFRESH_MARGIN.min(lifetime / 2);
        let refresh_at = Instant::now() + lifetime.saturating_sub(margin);
        token_cache()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key,
                CachedToken {
                    token: token.access_token.clone(),
                    refresh_at,
                },
            );
        Ok(token.access_token)
    }

    fn forget_token(&self, scope: &'static str) {
        token_cache()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.cache_key(scope));
    }

    /// One authenticated call (429s retried); a 401 renews the token and retries once.
    async fn call<F>(
        &self,
        op: &'static str,
        scope: &'static str,
        make: F,
    ) -> Result<Reply, Failure>
    where
        F: Fn() -> Result<RequestBuilder, ErrorClass>,
    {
        for attempt in 0..2 {
            let token = self.token(scope).await.map_err(Failure::from)?;
            let result =
                http::send_retrying(SIEM, op, || Ok(make()?.bearer_auth(token.as_str()))).await;
            match result {
                Err(f) if f.status == Some(401) && attempt == 0 => {
                    tracing::debug!(op, "token refused; renewing it once");
                    self.forget_token(scope);
                }
                other => return other,
            }
        }
        Err(Failure::from(ErrorClass::AuthFailed))
    }

    fn rules_url(&self, rule: Option<&str>) -> Result<Url, ErrorClass> {
        let base = self.management.as_ref().ok_or(ErrorClass::MalformedJob)?;
        let s = &self.settings;
        let mut segments = vec![
            "subscriptions",
            s.subscription_id.as_str(),
            "resourceGroups",
            s.resource_group.as_str(),
            "providers",
            "Microsoft.OperationalInsights",
            "workspaces",
            s.workspace_name.as_str(),
            "providers",
            "Microsoft.SecurityInsights",
            "alertRules",
        ];
        segments.extend(rule);
        let mut url = http::join(base, &segments)?;
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    /// GETs the rule: `None` when it does not exist.
    async fn read(&self, name: &str) -> Result<Option<RuleReply>, ErrorClass> {
        let url = self.rules_url(Some(name))?;
        match self
            .call("get_rule", ARM_SCOPE, || Ok(self.http.get(url.clone())))
            .await
        {
            Ok(reply) => Ok(Some(reply.json()?)),
            Err(f) if f.status == Some(404) => Ok(None),
            Err(f) => Err(f.class),
        }
    }

    /// PUTs `properties` with `etag`; `Ok(false)` on 412.
    async fn put(
        &self,
        name: &str,
        etag: Option<&str>,
        properties: &Value,
    ) -> Result<bool, ErrorClass> {
        let url = self.rules_url(Some(name))?;
        let mut body = json!({ "kind": "Scheduled", "properties": properties });
        if let Some(etag) = etag {
            body["etag"] = json!(etag);
        }
        match self
            .call("put_rule", ARM_SCOPE, || {
                Ok(self.http.put(url.clone()).json(&body))
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(f) if f.status == Some(412) => Ok(false),
            Err(f) => Err(f.class),
        }
    }

    /// Checks that ARM answers and the app may read the workspace's rules.
    ///
    /// # Errors
    /// The call's class.
    pub async fn check_connection(&self) -> Result<(), ErrorClass> {
        let url = self.rules_url(None)?;
        self.call("check_connection", ARM_SCOPE, || {
            Ok(self.http.get(url.clone()))
        })
        .await
        .map(|_| ())
        .map_err(|f| f.class)
    }

    /// Creates or updates the rule (etag honoured); returns its content hash.
    ///
    /// # Errors
    /// The failing call's class; `conflict` after a second 412.
    pub async fn deploy(&self, rule: &RuleSpec) -> Result<[u8; 32], ErrorClass> {
        self.deploy_mode(rule, false).await
    }

    /// [`Self::deploy`] in active or monitoring mode
    /// ([`deployed_properties_mode`]).
    ///
    /// # Errors
    /// As [`Self::deploy`].
    pub async fn deploy_mode(
        &self,
        rule: &RuleSpec,
        monitoring: bool,
    ) -> Result<[u8; 32], ErrorClass> {
        let name = managed_rule_name(&rule.rule_id);
        let properties = deployed_properties_mode(rule, monitoring)?;
        for _ in 0..2 {
            let etag = self.read(&name).await?.and_then(|r| r.etag);
            if self.put(&name, etag.as_deref(), &properties).await? {
                return Ok(content_hash(&properties));
            }
            tracing::debug!("etag mismatch; re-reading the rule once");
        }
        Err(ErrorClass::Conflict)
    }

    /// Sets `enabled` (disable = PUT with `enabled: false`), keeping the rest.
    ///
    /// # Errors
    /// `not_found`, `conflict` after a second 412, or the call's class.
    pub async fn set_enabled(&self, rule_id: &Uuid, enabled: bool) -> Result<(), ErrorClass> {
        let name = managed_rule_name(rule_id);
        for _ in 0..2 {
            let current = self.read(&name).await?.ok_or(ErrorClass::NotFound)?;
            let mut properties = current.properties;
            let Some(map) = properties.as_object_mut() else {
                return Err(ErrorClass::SiemError);
            };
            map.remove("lastModifiedUtc");
            map.insert("enabled".into(), json!(enabled));
            if self
                .put(&name, current.etag.as_deref(), &properties)
                .await?
            {
                return Ok(());
            }
        }
        Err(ErrorClass::Conflict)
    }

    /// Deletes the rule.
    ///
    /// # Errors
    /// `not_found` when ARM answers 204 (nothing to delete), or the call's class.
    pub async fn delete(&self, rule_id: &Uuid) -> Result<(), ErrorClass> {
        let url = self.rules_url(Some(&managed_rule_name(rule_id)))?;
        let reply = self
            .call("delete_rule", ARM_SCOPE, || {
                Ok(self.http.delete(url.clone()))
            })
            .await
            .map_err(|f| f.class)?;
        if reply.status == 204 {
            return Err(ErrorClass::NotFound);
        }
        Ok(())
    }

    /// The hash of the rule's managed properties as Sentinel holds them.
    ///
    /// # Errors
    /// `not_found`, or the call's class.
    pub async fn content_hash(&self, rule_id: &Uuid) -> Result<[u8; 32], ErrorClass> {
        let rule = self
            .read(&managed_rule_name(rule_id))
            .await?
            .ok_or(ErrorClass::NotFound)?;
        Ok(content_hash(&rule.properties))
    }

    /// The rule normalized back to the rule model ([`remote_rule`]).
    ///
    /// # Errors
    /// `not_found`, or the call's class; `siem_error` for a rule without a
    /// query.
    pub async fn read_rule(&self, rule_id: &Uuid) -> Result<picket_proto::RemoteRule, ErrorClass> {
        let rule = self
            .read(&managed_rule_name(rule_id))
            .await?
            .ok_or(ErrorClass::NotFound)?;
        remote_rule(&rule.properties)
    }

    /// Ids of the `picket-<uuid>` rules, over every page.
    ///
    /// # Errors
    /// The call's class; a `nextLink` to another origin is `siem_error` (the
    /// token is never sent elsewhere).
    pub async fn list_managed(&self) -> Result<Vec<Uuid>, ErrorClass> {
        let mut url = self.rules_url(None)?;
        let origin = url.origin();
        let mut ids = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: ListReply = self
                .call("list_rules", ARM_SCOPE, || Ok(self.http.get(url.clone())))
                .await
                .map_err(|f| f.class)?
                .json()?;
            ids.extend(page.value.iter().filter_map(|r| managed_rule_id(&r.name)));
            match page.next_link {
                None => return Ok(ids),
                Some(next) => {
                    let next = Url::parse(&next).map_err(|_| ErrorClass::SiemError)?;
                    if next.origin() != origin {
                        return Err(ErrorClass::SiemError);
                    }
                    url = next;
                }
            }
        }
        Err(ErrorClass::SiemError)
    }

    /// Sends test events through the Logs Ingestion API, each with
    /// `Source = "picket_test"`.
    ///
    /// # Errors
    /// `malformed_job` without an ingestion target; the call's class.
    pub async fn inject_test_events(&self, events: &[TestEvent]) -> Result<u64, ErrorClass> {
        let target = self
            .settings
            .ingestion
            .as_ref()
            .ok_or(ErrorClass::MalformedJob)?;
        let base = parse_base_url(&target.endpoint).ok_or(ErrorClass::MalformedJob)?;
        let mut url = http::join(
            &base,
            &[
                "dataCollectionRules",
                &target.dcr_immutable_id,
                "streams",
                &target.stream,
            ],
        )?;
        url.query_pairs_mut()
            .append_pair("api-version", INGESTION_API_VERSION);
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let mut row = serde_json::Map::new();
            for (k, v) in &event.fields {
                row.insert(k.clone(), json!(v));
            }
            row.insert("TimeGenerated".into(), json!(super::rfc3339(event.time)?));
            row.insert("Source".into(), json!(TEST_MARKER));
            rows.push(Value::Object(row));
        }
        let body = Value::Array(rows);
        self.call("ingest", MONITOR_SCOPE, || {
            Ok(self.http.post(url.clone()).json(&body))
        })
        .await
        .map_err(|f| f.class)?;
        Ok(events.len() as u64)
    }

    async fn query(
        &self,
        op: &'static str,
        kql: &str,
        window: TimeWindow,
    ) -> Result<(Vec<String>, Vec<Value>), ErrorClass> {
        let base = self
            .log_analytics
            .as_ref()
            .ok_or(ErrorClass::MalformedJob)?;
        let url = http::join(
            base,
            &["v1", "workspaces", &self.settings.workspace_id, "query"],
        )?;
        let (from, to) = window.rfc3339()?;
        let body = json!({ "query": kql, "timespan": format!("{from}/{to}") });
        let reply: QueryReply = self
            .call(op, LOG_ANALYTICS_SCOPE, || {
                Ok(self.http.post(url.clone()).json(&body))
            })
            .await
            .map_err(|f| f.class)?
            .json()?;
        if reply.error.is_some() {
            // A 200 carrying an error: partial or failed execution.
            return Err(ErrorClass::SiemError);
        }
        let table = reply
            .tables
            .into_iter()
            .next()
            .ok_or(ErrorClass::SiemError)?;
        let columns = table.columns.into_iter().map(|c| c.name).collect();
        let row = table.rows.into_iter().next().unwrap_or_default();
        Ok((columns, row))
    }

    /// Counts matching test events in the ingestion table inside `window`.
    ///
    /// # Errors
    /// `malformed_job` without an ingestion target; the call's class.
    pub async fn count_test_matches(
        &self,
        filter: &str,
        window: TimeWindow,
    ) -> Result<u64, ErrorClass> {
        let target = self
            .settings
            .ingestion
            .as_ref()
            .ok_or(ErrorClass::MalformedJob)?;
        let (from, to) = window.rfc3339()?;
        let kql = format!(
            "{} | where TimeGenerated between (datetime({from}) .. datetime({to})) | where Source == \"{TEST_MARKER}\" | where {filter} | count",
            target.table
        );
        let (columns, row) = self.query("count", &kql, window).await?;
        number(&columns, &row, "Count").ok_or(ErrorClass::SiemError)
    }

    /// Counts the rows the rule's table and `where` stages (`query`) match
    /// in `window`: `<table> | where TimeGenerated between (..) | <where
    /// stages> | count` through the Log Analytics query API.
    ///
    /// # Errors
    /// The call's class; a query without a table is `query_invalid`.
    pub async fn preview_count(&self, query: &str, window: TimeWindow) -> Result<u64, ErrorClass> {
        let (from, to) = window.rfc3339()?;
        let (table, rest) = match query.split_once('|') {
            Some((table, rest)) => (table.trim(), format!(" | {}", rest.trim())),
            None => (query.trim(), String::new()),
        };
        if table.is_empty() {
            return Err(ErrorClass::QueryInvalid);
        }
        let kql = format!(
            "{table} | where TimeGenerated between (datetime({from}) .. datetime({to})){rest} | count"
        );
        let (columns, row) = self.query("preview", &kql, window).await?;
        number(&columns, &row, "Count").ok_or(ErrorClass::SiemError)
    }

    /// Reduces the rule's `SentinelHealth` records in `window` to numbers.
    ///
    /// # Errors
    /// The call's class.
    pub async fn rule_health(
        &self,
        rule_id: &Uuid,
        window: TimeWindow,
    ) -> Result<RuleHealth, ErrorClass> {
        let name = managed_rule_name(rule_id);
        let kql = format!(
            "SentinelHealth | where SentinelResourceType == \"Analytics Rule\" | where SentinelResourceId endswith \"/alertRules/{name}\" \
             | extend Alerts = toint(ExtendedProperties.AlertsGeneratedAmount), Results = toint(ExtendedProperties.QueryResultAmount) \
             | summarize Succeeded = countif(Status == \"Success\"), Failed = countif(Status == \"Failure\"), Partial = countif(Status == \"Partial success\"), \
             Alerts = sum(Alerts), Results = sum(Results), LastRun = max(TimeGenerated), LastDurationMs = tolong(0)"
        );
        let (columns, row) = self.query("health", &kql, window).await?;
        let get = |name: &str| number(&columns, &row, name).unwrap_or(0);
        let last_run_at = index(&columns, "LastRun")
            .and_then(|i| row.get(i))
            .and_then(Value::as_str)
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(time::OffsetDateTime::unix_timestamp);
        Ok(RuleHealth {
            runs_succeeded: get("Succeeded"),
            runs_failed: get("Failed"),
            runs_skipped: get("Partial"),
            results_total: Some(get("Results")),
            alerts_fired: Some(get("Alerts")),
            last_run_at,
            last_run_duration_ms: None,
            gap_ms: None,
        })
    }
}

fn index(columns: &[String], name: &str) -> Option<usize> {
    columns.iter().position(|c| c == name)
}

/// A non-negative integer cell (Log Analytics sends longs as numbers).
fn number(columns: &[String], row: &[Value], name: &str) -> Option<u64> {
    let cell = row.get(index(columns, name)?)?;
    cell.as_u64()
        .or_else(|| cell.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
        .or_else(|| cell.as_str().and_then(|s| s.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::Schedule;

    fn rule(cron: &str, earliest: &str) -> RuleSpec {
        RuleSpec {
            rule_id: Uuid::nil(),
            version: 2,
            title: "Failed logons".into(),
            description: "Many failures".into(),
            severity: Severity::Critical,
            query: "SecurityEvent | where EventID == 4625".into(),
            schedule: Schedule {
                cron: cron.into(),
                earliest: earliest.into(),
                latest: "now".into(),
            },
        }
    }

    #[test]
    fn properties_carry_the_rule() {
        let p = deployed_properties(&rule("*/5 * * * *", "-5m")).unwrap_or_default();
        assert_eq!(p["queryFrequency"], "PT5M");
        assert_eq!(p["queryPeriod"], "PT5M");
        assert_eq!(p["severity"], "High");
        assert_eq!(p["enabled"], true);
        let p = deployed_properties(&rule("0 */2 * * *", "-1d")).unwrap_or_default();
        assert_eq!(p["queryFrequency"], "PT2H");
        assert_eq!(p["queryPeriod"], "P1D");
        assert_eq!(
            deployed_properties(&rule("*/5 * * * 1", "-5m")).err(),
            Some(ErrorClass::QueryInvalid)
        );
    }

    #[test]
    fn hash_ignores_fields_sentinel_adds() {
        let p = deployed_properties(&rule("*/5 * * * *", "-5m")).unwrap_or_default();
        let mut read_back = p.clone();
        read_back["lastModifiedUtc"] = json!("2026-01-01T00:00:00Z");
        read_back["tactics"] = json!([]);
        assert_eq!(content_hash(&p), content_hash(&read_back));
        read_back["query"] = json!("SecurityEvent");
        assert_ne!(content_hash(&p), content_hash(&read_back));
    }
}
