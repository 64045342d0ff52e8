//! SIEM connectors: where a verified, decrypted job action becomes calls on the
//! customer's SIEM API, and where the agent probes a SIEM's reachability for
//! health reports.
//!
//! Everything that comes back from here is an enum or a number. A connector
//! never logs, returns or stores what the SIEM answered (error text, saved
//! searches, results): every failure is mapped to one
//! [`ErrorClass`](picket_proto::ErrorClass), successes carry at most a content
//! hash, and only the HTTP status and the class are logged, at debug level.
//! That is what lets the protocol promise "numbers and enums only" (see the
//! design's "The wire").
//!
//! Connectors are enum-dispatched ([`Connector`]), not trait objects: the set of
//! SIEMs is closed and known at build time, and plain `async fn`s need no
//! boxing. A connector is cheap to build per job from the job's
//! [`SiemTarget`](picket_proto::SiemTarget) and the caller's `reqwest::Client`,
//! which carries the timeouts (the connector sets none of its own) and the
//! connection pool.
//!
//! Retries are mostly the caller's business: a connector reports `RateLimited`,
//! `Timeout` or `SiemUnreachable` for the job runner to retry or give up on.
//! The exception is throttling where the SIEM says when to come back: the
//! Sentinel and Elastic connectors retry a 429 after its `Retry-After`
//! ([`http::send_retrying`]). Every action is safe to repeat (deploy creates or
//! updates in place, disable and delete are idempotent apart from `NotFound`).
//!
//! # The connector interface
//! Every connector offers the same operations, dispatched by [`Connector`]:
//! [`Connector::check_connection`], [`Connector::deploy`],
//! [`Connector::set_enabled`], [`Connector::delete`],
//! [`Connector::content_hash`] (drift: the hash of the rule as the SIEM holds
//! it, in the same canonical form deploy returns), [`Connector::list_managed`]
//! (only objects named `picket-<uuid>`), [`Connector::read_rule`] (a
//! drifted rule's content normalized back to the rule model, for "accept
//! remote"), [`Connector::inject_test_events`]
//! (tagged `picket_test`), [`Connector::count_test_matches`] (bounded to test
//! events and a time window) and [`Connector::rule_health`] (numbers only).
//! Rules are named by [`managed_rule_name`](picket_proto::managed_rule_name),
//! so a connector cannot address a customer's own objects.
//!
//! # Layout
//! - [`splunk`]: Splunk REST API (saved searches, oneshot searches, HEC).
//! - [`sentinel`]: Microsoft Sentinel (Entra tokens, ARM `alertRules`, Log Analytics).
//! - [`elastic`]: Elastic Security (Kibana detection engine, Elasticsearch).
//! - [`http`]: one call with bounded reads, failure classes and 429 retries.
//! - [`canonical`]: canonical JSON for content hashes.

pub mod canonical;
pub mod elastic;
pub mod http;
pub mod sentinel;
pub mod splunk;

use std::collections::BTreeMap;
use std::time::Instant;

use picket_proto::{
    ConnectionInfo, ErrorClass, JobAction, RuleHealth, RuleSpec, SiemHealth, SiemKind,
    SiemSettings, SiemTarget,
};
use uuid::Uuid;

/// The marker every injected test event carries (Splunk `source`, Sentinel
/// `Source` column, Elastic `labels.picket`), and which count queries require.
pub const TEST_MARKER: &str = "picket_test";

/// Most test events one injection may carry.
pub const MAX_TEST_EVENTS: usize = 1000;

/// One synthetic event for a rule test: a time and flat string fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestEvent {
    /// Unix seconds.
    pub time: i64,
    /// Field name → value.
    pub fields: BTreeMap<String, String>,
}

/// A closed time window, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Start (inclusive).
    pub from: i64,
    /// End (inclusive).
    pub to: i64,
}

impl TimeWindow {
    /// The last `secs` seconds up to now.
    pub fn last(secs: i64) -> TimeWindow {
        let to = time::OffsetDateTime::now_utc().unix_timestamp();
        TimeWindow {
            from: to.saturating_sub(secs),
            to,
        }
    }

    /// `from`/`to` as RFC 3339.
    pub(crate) fn rfc3339(&self) -> Result<(String, String), ErrorClass> {
        Ok((rfc3339(self.from)?, rfc3339(self.to)?))
    }
}

/// Unix seconds as RFC 3339 (UTC).
pub(crate) fn rfc3339(secs: i64) -> Result<String, ErrorClass> {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .ok_or(ErrorClass::MalformedJob)
}

/// `description` without the note deploys append ("Managed by Picket (rule
/// version N); changes made in ... are overwritten."), trimmed: what the
/// rule's author wrote.
pub fn strip_managed_note(description: &str) -> String {
    let text = description.trim_end();
    match text.rfind("Managed by Picket (rule version ") {
        Some(at) if text.ends_with("are overwritten.") => text[..at].trim().to_owned(),
        _ => text.trim().to_owned(),
    }
}

/// The field each injected test event carries with its run-and-case tag.
pub const RUN_FIELD: &str = "picket_run";

/// `filter` restricted to events carrying `tag` in [`RUN_FIELD`], in the
/// SIEM's count filter form.
pub(crate) fn with_run_tag(kind: Option<SiemKind>, filter: &str, tag: &str) -> String {
    match kind {
        Some(SiemKind::Sentinel) => {
            format!("({filter}) and {RUN_FIELD} == \"{tag}\"")
        }
        Some(SiemKind::Elastic) => match elastic::rule_type(filter).0 {
            // ES|QL: one more row filter stage.
            "esql" => format!("{filter} | WHERE {RUN_FIELD} == \"{tag}\""),
            // EQL event query: `<category> where (<condition>) and ...`.
            "eql" => match filter.split_once(" where ") {
                Some((category, condition)) => {
                    format!("{category} where ({condition}) and {RUN_FIELD} == \"{tag}\"")
                }
                None => format!("{filter} and {RUN_FIELD} == \"{tag}\""),
            },
            _ => format!("({filter}) AND {RUN_FIELD}:{tag}"),
        },
        _ => format!("{filter} {RUN_FIELD}={tag}"),
    }
}

/// Checks an injection's size.
pub(crate) fn check_events(events: &[TestEvent]) -> Result<(), ErrorClass> {
    if events.is_empty() || events.len() > MAX_TEST_EVENTS {
        return Err(ErrorClass::MalformedJob);
    }
    Ok(())
}

/// Parses `picket-<uuid>` back into the rule id; `None` for anything else.
pub fn managed_rule_id(name: &str) -> Option<Uuid> {
    name.strip_prefix(picket_proto::job::MANAGED_PREFIX)
        .and_then(|rest| Uuid::parse_str(rest).ok())
        .filter(|id| picket_proto::managed_rule_name(id) == name)
}

/// A rule schedule turned into a period: the cron forms Picket supports for
/// SIEMs that schedule by interval (Sentinel, Elastic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Period {
    /// Every N minutes.
    Minutes(u32),
    /// Every N hours.
    Hours(u32),
    /// Every N days.
    Days(u32),
}

/// `*/N * * * *` → N minutes; `M * * * *` → 1 hour; `M */N * * *` → N hours;
/// `M H * * *` → 1 day; `M H */N * *` → N days. Anything else is
/// [`ErrorClass::QueryInvalid`] (the SIEM cannot express it).
pub(crate) fn cron_period(cron: &str) -> Result<Period, ErrorClass> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    let [min, hour, dom, month, dow] = fields.as_slice() else {
        return Err(ErrorClass::QueryInvalid);
    };
    let number = |s: &str| s.parse::<u32>().ok().filter(|n| *n > 0);
    let every = |s: &str| s.strip_prefix("*/").and_then(number);
    let fixed = |s: &str| s.parse::<u32>().is_ok();
    if *month != "*" || *dow != "*" {
        return Err(ErrorClass::QueryInvalid);
    }
    match (every(min), *hour, *dom) {
        (Some(n), "*", "*") => return Ok(Period::Minutes(n)),
        (Some(_), _, _) => return Err(ErrorClass::QueryInvalid),
        (None, _, _) => {}
    }
    if !fixed(min) {
        return Err(ErrorClass::QueryInvalid);
    }
    match (*hour, every(hour), *dom, every(dom)) {
        ("*", _, "*", _) => Ok(Period::Hours(1)),
        (_, Some(n), "*", _) => Ok(Period::Hours(n)),
        (h, None, "*", _) if fixed(h) => Ok(Period::Days(1)),
        (h, None, _, Some(n)) if fixed(h) => Ok(Period::Days(n)),
        _ => Err(ErrorClass::QueryInvalid),
    }
}

/// A Splunk-style relative time (`-5m`, `-1h@h`, `-7d`) as a period; the
/// snap (`@...`) is dropped. `s` rounds up to whole minutes.
pub(crate) fn lookback_period(earliest: &str) -> Result<Period, ErrorClass> {
    let text = earliest.trim();
    let text = text.split('@').next().unwrap_or_default();
    let text = text.strip_prefix('-').ok_or(ErrorClass::QueryInvalid)?;
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or(ErrorClass::QueryInvalid)?;
    let (digits, unit) = text.split_at(split);
    let n: u32 = digits
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or(ErrorClass::QueryInvalid)?;
    match unit {
        "s" | "sec" | "secs" => Ok(Period::Minutes(n.div_ceil(60))),
        "m" | "min" | "mins" => Ok(Period::Minutes(n)),
        "h" | "hr" | "hrs" => Ok(Period::Hours(n)),
        "d" | "day" | "days" => Ok(Period::Days(n)),
        _ => Err(ErrorClass::QueryInvalid),
    }
}

/// Calls the same method on whichever connector `self` holds.
macro_rules! dispatch {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Connector::Splunk($c) => $call,
            Connector::Sentinel($c) => $call,
            Connector::Elastic($c) => $call,
            Connector::Unsupported(kind) => {
                tracing::debug!(kind = kind.as_str(), "no connector for this SIEM kind");
                Err(ErrorClass::Internal)
            }
        }
    };
}

/// The connector for one SIEM connection.
#[derive(Debug)]
pub enum Connector {
    /// Splunk Enterprise / Cloud, through its REST API.
    Splunk(splunk::SplunkConnector),
    /// Microsoft Sentinel, through ARM and Log Analytics (boxed: its settings
    /// and three endpoint URLs make it twice the size of the others).
    Sentinel(Box<sentinel::SentinelConnector>),
    /// Elastic Security, through Kibana and Elasticsearch.
    Elastic(elastic::ElasticConnector),
    /// Settings of a SIEM kind this agent build has no connector for (the
    /// protocol's `SiemSettings` is non-exhaustive, so a newer server may name
    /// one). Every action fails with [`ErrorClass::Internal`] without any I/O.
    Unsupported(SiemKind),
}

impl Connector {
    /// The SIEM kind this connector speaks to (`None` when unsupported).
    fn kind(&self) -> Option<SiemKind> {
        match self {
            Connector::Splunk(_) => Some(SiemKind::Splunk),
            Connector::Sentinel(_) => Some(SiemKind::Sentinel),
            Connector::Elastic(_) => Some(SiemKind::Elastic),
            Connector::Unsupported(_) => None,
        }
    }

    /// Builds the connector for `target`, sending through `http` (whose
    /// timeouts bound every call). Never fails: bad settings (such as a base
    /// URL that does not parse) surface as an error class from [`Self::execute`].
    pub fn new(target: &SiemTarget, http: reqwest::Client) -> Connector {
        match &target.settings {
            SiemSettings::Splunk(settings) => {
                Connector::Splunk(splunk::SplunkConnector::new(settings, http))
            }
            SiemSettings::Sentinel(settings) => {
                Connector::Sentinel(Box::new(sentinel::SentinelConnector::new(settings, http)))
            }
            SiemSettings::Elastic(settings) => {
                Connector::Elastic(elastic::ElasticConnector::new(settings, http))
            }
            other => Connector::Unsupported(other.kind()),
        }
    }

    /// Runs `action` against the SIEM.
    ///
    /// # Errors
    /// The class of the failure, never the SIEM's own words: see
    /// [`classify_status`] for HTTP answers; a connection that cannot be made
    /// (or breaks before any answer) is [`ErrorClass::SiemUnreachable`]; the
    /// client's deadline is [`ErrorClass::Timeout`]; an action or SIEM kind this
    /// build does not implement is [`ErrorClass::Internal`].
    pub async fn execute(&self, action: &JobAction) -> Result<ActionOk, ErrorClass> {
        let none = ActionOk {
            content_hash: None,
            test_counts: None,
        };
        match action {
            JobAction::DeployRule { rule } => self.deploy(rule).await.map(|hash| ActionOk {
                content_hash: Some(hash),
                test_counts: None,
            }),
            JobAction::TestRule { test } => self.run_tests(test).await.map(|counts| ActionOk {
                content_hash: None,
                test_counts: Some(counts),
            }),
            JobAction::DisableRule { rule } => {
                self.set_enabled(&rule.rule_id, false).await.map(|()| none)
            }
            JobAction::DeleteRule { rule } => self.delete(&rule.rule_id).await.map(|()| none),
            JobAction::CheckConnection => self.check_connection().await.map(|()| none),
            _ => {
                tracing::debug!("action not implemented by the connectors");
                Err(ErrorClass::Internal)
            }
        }
    }

    /// Runs a rule version's tests: injects every case's events (tagged
    /// [`TEST_MARKER`], plus a `picket_run` field unique to this run and
    /// case), then counts, per case, the events of that case that match the
    /// rule's condition in the last 15 minutes. Counting on the per-case tag
    /// keeps cases, and runs that overlap in time, from counting each
    /// other's events.
    ///
    /// # Errors
    /// [`ErrorClass::MalformedJob`] for an empty or oversized test; the
    /// first failing call's class.
    pub async fn run_tests(
        &self,
        test: &picket_proto::RuleTest,
    ) -> Result<picket_proto::TestCounts, ErrorClass> {
        use picket_proto::ruletest::{MAX_EVENTS_PER_CASE, MAX_TEST_CASES};
        if test.cases.is_empty()
            || test.cases.len() > MAX_TEST_CASES
            || test
                .cases
                .iter()
                .any(|c| c.events.is_empty() || c.events.len() > MAX_EVENTS_PER_CASE)
        {
            return Err(ErrorClass::MalformedJob);
        }
        let run = Uuid::new_v4().simple().to_string();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let tag = |i: usize| format!("{run}c{i}");
        let mut events = Vec::new();
        for (i, case) in test.cases.iter().enumerate() {
            for fields in &case.events {
                let mut fields = fields.clone();
                fields.insert(RUN_FIELD.to_owned(), tag(i));
                events.push(TestEvent { time: now, fields });
            }
        }
        for chunk in events.chunks(MAX_TEST_EVENTS) {
            self.inject_test_events(chunk).await?;
        }
        // A window around the injection time: wide enough for clock skew
        // between agent and SIEM, while the run tag does the selecting.
        let window = TimeWindow {
            from: now.saturating_sub(900),
            to: now.saturating_add(60),
        };
        let mut counts = Vec::with_capacity(test.cases.len());
        for i in 0..test.cases.len() {
            let filter = with_run_tag(self.kind(), &test.filter, &tag(i));
            let n = self.count_test_matches(&filter, window).await?;
            counts.push(u32::try_from(n).unwrap_or(u32::MAX));
        }
        picket_proto::TestCounts::new(&counts).ok_or(ErrorClass::MalformedJob)
    }

    /// Checks that the SIEM answers and accepts the credential (and, where the
    /// SIEM tells, that it grants the permissions rules need).
    ///
    /// # Errors
    /// The call's class.
    pub async fn check_connection(&self) -> Result<(), ErrorClass> {
        dispatch!(self, c => c.check_connection().await)
    }

    /// Creates the rule, or updates it in place, enabled; returns the hash of
    /// the content as sent (the same canonical form as [`Self::content_hash`]).
    ///
    /// # Errors
    /// The first failing call's class; a schedule the SIEM cannot express is
    /// [`ErrorClass::QueryInvalid`].
    pub async fn deploy(&self, rule: &RuleSpec) -> Result<[u8; 32], ErrorClass> {
        dispatch!(self, c => c.deploy(rule).await)
    }

    /// [`Self::deploy`] in active or monitoring mode. Monitoring mode (the
    /// rule runs, nobody is alerted): Splunk `alert.track=0` and no actions;
    /// Sentinel `incidentConfiguration.createIncident=false`; Elastic a
    /// building-block rule without actions. The content hash differs
    /// between the modes, so drift checks and dry runs tell them apart.
    ///
    /// # Errors
    /// As [`Self::deploy`].
    pub async fn deploy_mode(
        &self,
        rule: &RuleSpec,
        monitoring: bool,
    ) -> Result<[u8; 32], ErrorClass> {
        dispatch!(self, c => c.deploy_mode(rule, monitoring).await)
    }

    /// The content hash a deploy of `rule` would leave on the SIEM, computed
    /// without any call (dry runs compare it with [`Self::content_hash`]).
    ///
    /// # Errors
    /// [`ErrorClass::QueryInvalid`] for a schedule the SIEM cannot express;
    /// [`ErrorClass::Internal`] for an unsupported SIEM kind.
    pub fn expected_hash(&self, rule: &RuleSpec, monitoring: bool) -> Result<[u8; 32], ErrorClass> {
        match self {
            Connector::Splunk(_) => Ok(splunk::content_hash(&splunk::deployed_fields_mode(
                rule, monitoring,
            ))),
            Connector::Sentinel(_) => Ok(sentinel::content_hash(
                &sentinel::deployed_properties_mode(rule, monitoring)?,
            )),
            Connector::Elastic(_) => Ok(elastic::content_hash(&elastic::deployed_rule_mode(
                rule, monitoring,
            )?)),
            Connector::Unsupported(_) => Err(ErrorClass::Internal),
        }
    }

    /// Enables or disables a managed rule; it stays on the SIEM.
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class.
    pub async fn set_enabled(&self, rule_id: &Uuid, enabled: bool) -> Result<(), ErrorClass> {
        dispatch!(self, c => c.set_enabled(rule_id, enabled).await)
    }

    /// Deletes a managed rule.
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class.
    pub async fn delete(&self, rule_id: &Uuid) -> Result<(), ErrorClass> {
        dispatch!(self, c => c.delete(rule_id).await)
    }

    /// The hash of the managed rule as the SIEM holds it now, normalized the
    /// way deploy computes it: equal to the deploy's hash unless someone
    /// changed the rule on the SIEM (drift).
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class.
    pub async fn content_hash(&self, rule_id: &Uuid) -> Result<[u8; 32], ErrorClass> {
        dispatch!(self, c => c.content_hash(rule_id).await)
    }

    /// The managed rule as the SIEM holds it, normalized back to the rule
    /// model (rule text and schedule, never data): what "accept remote"
    /// records as a new version. Each connector documents its mapping.
    ///
    /// # Errors
    /// [`ErrorClass::NotFound`] when it does not exist, or the call's class;
    /// [`ErrorClass::SiemError`] for an answer without the rule's fields.
    pub async fn read_rule(&self, rule_id: &Uuid) -> Result<picket_proto::RemoteRule, ErrorClass> {
        dispatch!(self, c => c.read_rule(rule_id).await)
    }

    /// Ids of the Picket-managed rules on the SIEM (named `picket-<uuid>`);
    /// every other object is left out.
    ///
    /// # Errors
    /// The call's class.
    pub async fn list_managed(&self) -> Result<Vec<Uuid>, ErrorClass> {
        dispatch!(self, c => c.list_managed().await)
    }

    /// Sends test events, each tagged [`TEST_MARKER`], into the connection's
    /// test index/table; returns how many the SIEM accepted.
    ///
    /// # Errors
    /// [`ErrorClass::MalformedJob`] for an empty or oversize batch or a
    /// connection without a test destination; otherwise the call's class.
    pub async fn inject_test_events(&self, events: &[TestEvent]) -> Result<u64, ErrorClass> {
        check_events(events)?;
        dispatch!(self, c => c.inject_test_events(events).await)
    }

    /// Counts test events (tagged [`TEST_MARKER`], in the test index/table,
    /// inside `window`) that match `filter`, the rule's match condition in the
    /// SIEM's language (see each connector for the form).
    ///
    /// # Errors
    /// The call's class; a SIEM that reports a search error is
    /// [`ErrorClass::SiemError`] or [`ErrorClass::QueryInvalid`].
    pub async fn count_test_matches(
        &self,
        filter: &str,
        window: TimeWindow,
    ) -> Result<u64, ErrorClass> {
        dispatch!(self, c => c.count_test_matches(filter, window).await)
    }

    /// Counts the events `query` (the rule's preview form, see
    /// `picket_rules::preview_query`) matches on the SIEM's own data inside
    /// `window`: the expected alert volume. A count, never events.
    ///
    /// # Errors
    /// The call's class; a query form the connector cannot count with is
    /// [`ErrorClass::QueryInvalid`].
    pub async fn preview_count(&self, query: &str, window: TimeWindow) -> Result<u64, ErrorClass> {
        dispatch!(self, c => c.preview_count(query, window).await)
    }

    /// The rule's run health over `window`, as numbers.
    ///
    /// # Errors
    /// The call's class.
    pub async fn rule_health(
        &self,
        rule_id: &Uuid,
        window: TimeWindow,
    ) -> Result<RuleHealth, ErrorClass> {
        dispatch!(self, c => c.rule_health(rule_id, window).await)
    }
}

/// What a successful action reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionOk {
    /// For a deploy: SHA-256 of the rule content as deployed, for drift checks
    /// (each connector documents its canonical form, e.g.
    /// [`splunk::content_hash`]). `None` for other actions.
    pub content_hash: Option<[u8; 32]>,
    /// For a test run: matches per test case, in case order. `None` for other actions.
    pub test_counts: Option<picket_proto::TestCounts>,
}

/// Probes whether the SIEM behind `info` answers, without credentials.
///
/// Any HTTP answer counts as reachable, 401 included (the probe sends no
/// credential, so a Splunk answers 401): the figure is about the network path
/// and the SIEM's listener, not the token, which jobs check
/// (`CheckConnection`). Latency is the time to the response headers. The probe
/// never reads the body. For Splunk it asks `GET /services/server/info`; for
/// other kinds, the base URL itself.
///
/// Failures: a connection that cannot be made is
/// [`ErrorClass::SiemUnreachable`] (so is a base URL that does not parse);
/// the client's deadline is [`ErrorClass::Timeout`].
pub async fn probe(info: &ConnectionInfo, http: &reqwest::Client) -> SiemHealth {
    let unreachable = |class: ErrorClass| SiemHealth {
        connection_id: info.connection_id,
        reachable: false,
        latency_ms: None,
        error_class: Some(class),
    };
    let url = match probe_url(info) {
        Some(url) => url,
        None => return unreachable(ErrorClass::SiemUnreachable),
    };
    let started = Instant::now();
    match http.get(url).send().await {
        Ok(response) => {
            let elapsed = started.elapsed();
            tracing::debug!(status = response.status().as_u16(), "SIEM probe answered");
            drop(response);
            SiemHealth {
                connection_id: info.connection_id,
                reachable: true,
                latency_ms: Some(u32::try_from(elapsed.as_millis()).unwrap_or(u32::MAX)),
                error_class: None,
            }
        }
        Err(error) => {
            let class = classify_transport(&error);
            tracing::debug!(class = class.as_str(), "SIEM probe failed");
            unreachable(class)
        }
    }
}

/// The URL the probe asks: a cheap, always-present endpoint of each SIEM.
fn probe_url(info: &ConnectionInfo) -> Option<reqwest::Url> {
    let mut url = parse_base_url(&info.base_url)?;
    if info.kind == SiemKind::Splunk {
        url.path_segments_mut()
            .ok()?
            .pop_if_empty()
            .extend(["services", "server", "info"]);
    }
    // Sentinel's base URL is ARM's, Elastic's is Kibana's: the root answers.
    Some(url)
}

/// Parses a SIEM base URL: `http` or `https`, query and fragment dropped.
pub(crate) fn parse_base_url(base_url: &str) -> Option<reqwest::Url> {
    let mut url = reqwest::Url::parse(base_url).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    Some(url)
}

/// Maps an HTTP error status to its class.
///
/// | status | class |
/// |---|---|
/// | 400 | [`ErrorClass::QueryInvalid`] (the SIEM refused the rule or a field) |
/// | 401 | [`ErrorClass::AuthFailed`] |
/// | 403 | [`ErrorClass::Forbidden`] |
/// | 404 | [`ErrorClass::NotFound`] |
/// | 409, 412 | [`ErrorClass::Conflict`] |
/// | 429 | [`ErrorClass::RateLimited`] |
/// | 5xx and anything else | [`ErrorClass::SiemError`] |
pub fn classify_status(status: u16) -> ErrorClass {
    match status {
        400 => ErrorClass::QueryInvalid,
        401 => ErrorClass::AuthFailed,
        403 => ErrorClass::Forbidden,
        404 => ErrorClass::NotFound,
        409 | 412 => ErrorClass::Conflict,
        429 => ErrorClass::RateLimited,
        _ => ErrorClass::SiemError,
    }
}

/// Maps a transport failure (no HTTP status) to its class.
///
/// Checked in this order: a connection that could not be made, including a
/// connect timeout, is `SiemUnreachable`; the client's deadline is `Timeout`;
/// a failure while reading an answer's body is `SiemError`; a request that got
/// no answer at all (connection closed or reset, not HTTP) is
/// `SiemUnreachable`; anything else is `SiemError`.
pub(crate) fn classify_transport(error: &reqwest::Error) -> ErrorClass {
    if error.is_connect() {
        ErrorClass::SiemUnreachable
    } else if error.is_timeout() {
        ErrorClass::Timeout
    } else if error.is_body() || error.is_decode() {
        ErrorClass::SiemError
    } else if error.is_request() {
        ErrorClass::SiemUnreachable
    } else {
        ErrorClass::SiemError
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_managed_note_is_stripped_and_nothing_else() {
        assert_eq!(
            strip_managed_note(
                "Failed logons.\n\nManaged by Picket (rule version 3); changes made in Splunk are overwritten."
            ),
            "Failed logons."
        );
        assert_eq!(
            strip_managed_note(
                "Managed by Picket (rule version 1); changes made in Kibana are overwritten."
            ),
            ""
        );
        // Someone's own text that mentions Picket stays.
        assert_eq!(
            strip_managed_note("  Managed by Picket (rule version 1), then edited by hand. "),
            "Managed by Picket (rule version 1), then edited by hand."
        );
    }

    #[test]
    fn statuses_map_to_classes() {
        assert_eq!(classify_status(400), ErrorClass::QueryInvalid);
        assert_eq!(classify_status(401), ErrorClass::AuthFailed);
        assert_eq!(classify_status(403), ErrorClass::Forbidden);
        assert_eq!(classify_status(404), ErrorClass::NotFound);
        assert_eq!(classify_status(409), ErrorClass::Conflict);
        assert_eq!(classify_status(412), ErrorClass::Conflict);
        assert_eq!(classify_status(429), ErrorClass::RateLimited);
        for status in [500, 502, 503, 504, 302, 418] {
            assert_eq!(classify_status(status), ErrorClass::SiemError, "{status}");
        }
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(parse_base_url("https://splunk.corp:8089").is_some());
        let url = parse_base_url("http://h:1/prefix?x=1#f").map(|u| u.to_string());
        assert_eq!(url.as_deref(), Some("http://h:1/prefix"));
        assert!(parse_base_url("ftp://h").is_none());
        assert!(parse_base_url("mailto:a@b").is_none());
        assert!(parse_base_url("not a url").is_none());
    }

    #[test]
    fn schedules_become_periods() {
        assert_eq!(cron_period("*/5 * * * *"), Ok(Period::Minutes(5)));
        assert_eq!(cron_period("0 * * * *"), Ok(Period::Hours(1)));
        assert_eq!(cron_period("15 */4 * * *"), Ok(Period::Hours(4)));
        assert_eq!(cron_period("0 3 * * *"), Ok(Period::Days(1)));
        assert_eq!(cron_period("0 3 */2 * *"), Ok(Period::Days(2)));
        for bad in [
            "* * * * 1",
            "1,2 * * * *",
            "*/0 * * * *",
            "x",
            "*/5 1 * * *",
        ] {
            assert_eq!(cron_period(bad), Err(ErrorClass::QueryInvalid), "{bad}");
        }
        assert_eq!(lookback_period("-5m"), Ok(Period::Minutes(5)));
        assert_eq!(lookback_period("-1h@h"), Ok(Period::Hours(1)));
        assert_eq!(lookback_period("-7d"), Ok(Period::Days(7)));
        assert_eq!(lookback_period("-90s"), Ok(Period::Minutes(2)));
        assert!(lookback_period("now").is_err());
    }

    #[test]
    fn managed_names_round_trip() {
        let id = Uuid::now_v7();
        assert_eq!(
            managed_rule_id(&picket_proto::managed_rule_name(&id)),
            Some(id)
        );
        assert_eq!(managed_rule_id("customer-rule"), None);
        assert_eq!(managed_rule_id("picket-not-a-uuid"), None);
        assert_eq!(managed_rule_id(&format!("picket-{}", id.simple())), None);
    }

    #[test]
    fn splunk_probe_asks_server_info() {
        let info = ConnectionInfo {
            connection_id: uuid::Uuid::nil(),
            name: "prod".into(),
            kind: SiemKind::Splunk,
            base_url: "https://splunk.corp:8089/".into(),
        };
        let url = probe_url(&info).map(|u| u.to_string());
        assert_eq!(
            url.as_deref(),
            Some("https://splunk.corp:8089/services/server/info")
        );
    }
}
