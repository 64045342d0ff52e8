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
//! | check connection | `GET /services/server/info` |
//!
//! Every call sends `output_mode=json` and `Authorization: Bearer <token>`
//! (reqwest marks the header sensitive; the token is never logged). Path
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

use std::collections::BTreeMap;

use picket_proto::{
    Credential, ErrorClass, JobAction, RuleSpec, Severity, SplunkSettings, managed_rule_name,
};
use reqwest::{Client, RequestBuilder, Response, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ActionOk, classify_status, classify_transport, parse_base_url};

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
        ("alert.track", "1".to_owned()),
        ("alert.severity", splunk_severity(rule.severity).to_string()),
        ("actions", String::new()),
    ])
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
            }),
            JobAction::DisableRule { rule } => self.disable(&rule.rule_id).await.map(|()| none()),
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
        let name = managed_rule_name(&rule.rule_id);
        let fields = deployed_fields(rule);
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(fields.len() + 1);
        form.push(("name", &name));
        form.extend(fields.iter().map(|(k, v)| (*k, v.as_str())));

        let create = self.http.post(self.url(&[])?).form(&form);
        match self.send("create", create).await {
            Ok(()) => {}
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

    /// Disables the rule's saved search (`disabled=1`); it stays in Splunk.
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class.
    pub async fn disable(&self, rule_id: &Uuid) -> Result<(), ErrorClass> {
        let name = managed_rule_name(rule_id);
        let request = self
            .http
            .post(self.url(&[&name])?)
            .form(&[("disabled", "1")]);
        self.send("disable", request).await.map_err(|f| f.class)
    }

    /// Deletes the rule's saved search.
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class.
    pub async fn delete(&self, rule_id: &Uuid) -> Result<(), ErrorClass> {
        let name = managed_rule_name(rule_id);
        let request = self.http.delete(self.url(&[&name])?);
        self.send("delete", request).await.map_err(|f| f.class)
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

    /// Sends one call with the token and `output_mode=json`, then checks the answer.
    async fn send(&self, op: &'static str, request: RequestBuilder) -> Result<(), Failure> {
        let response = request
            .bearer_auth(self.token.expose())
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
            Ok(()) => {
                tracing::debug!(op, status, "Splunk call succeeded");
                Ok(())
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

fn none() -> ActionOk {
    ActionOk { content_hash: None }
}

/// Reads a 2xx body (bounded) and fails when it is not Splunk's JSON or
/// reports an error message. The body is dropped here, unlogged.
async fn check_reply(mut response: Response) -> Result<(), ErrorClass> {
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
    reply_status(&body)
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
