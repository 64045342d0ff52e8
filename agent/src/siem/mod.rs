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
//! Retries are the caller's business: a connector makes each call once and
//! reports `RateLimited`, `Timeout` or `SiemUnreachable` for the job runner to
//! retry or give up on. Every action is safe to repeat (deploy creates or
//! updates in place, disable and delete are idempotent apart from `NotFound`).
//!
//! # Layout
//! - [`splunk`]: Splunk REST API (saved searches on the management port).

pub mod splunk;

use std::time::Instant;

use picket_proto::{
    ConnectionInfo, ErrorClass, JobAction, SiemHealth, SiemKind, SiemSettings, SiemTarget,
};

/// The connector for one SIEM connection.
#[derive(Debug)]
pub enum Connector {
    /// Splunk Enterprise / Cloud, through its REST API.
    Splunk(splunk::SplunkConnector),
    /// Settings of a SIEM kind this agent build has no connector for (the
    /// protocol's `SiemSettings` is non-exhaustive, so a newer server may name
    /// one). Every action fails with [`ErrorClass::Internal`] without any I/O.
    Unsupported(SiemKind),
}

impl Connector {
    /// Builds the connector for `target`, sending through `http` (whose
    /// timeouts bound every call). Never fails: bad settings (such as a base
    /// URL that does not parse) surface as an error class from [`Self::execute`].
    pub fn new(target: &SiemTarget, http: reqwest::Client) -> Connector {
        match &target.settings {
            SiemSettings::Splunk(settings) => {
                Connector::Splunk(splunk::SplunkConnector::new(settings, http))
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
        match self {
            Connector::Splunk(splunk) => splunk.execute(action).await,
            Connector::Unsupported(kind) => {
                tracing::debug!(kind = kind.as_str(), "no connector for this SIEM kind");
                Err(ErrorClass::Internal)
            }
        }
    }
}

/// What a successful action reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionOk {
    /// For a deploy: SHA-256 of the rule content as deployed, for drift checks
    /// (each connector documents its canonical form, e.g.
    /// [`splunk::content_hash`]). `None` for other actions.
    pub content_hash: Option<[u8; 32]>,
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
