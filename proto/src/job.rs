//! Sealed jobs: the only way work reaches an agent.
//!
//! ```text
//! SealedJob {
//!   header: base64(JSON bytes of JobHeader)   // signed, and the HPKE aad
//!   enc:    base64(HPKE encapsulated key)     // ephemeral X25519 public key
//!   ct:     base64(HPKE ciphertext of JobSpec)
//!   sig:    base64(Ed25519 signature)         // see `signed_bytes`
//! }
//! ```
//!
//! The header travels in clear (the agent must check addressing, freshness and
//! replay before decrypting); the spec, which holds SIEM credentials, is only in
//! the ciphertext.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::bytes::{B64, B64Vec, KeyFingerprint};

/// The envelope of one job as delivered to an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedJob {
    /// JSON bytes of [`JobHeader`], exactly as signed and used as HPKE `aad`.
    pub header: B64Vec,
    /// HPKE encapsulated key (the ephemeral X25519 public key).
    pub enc: B64<32>,
    /// HPKE ciphertext of the JSON bytes of [`JobSpec`].
    pub ct: B64Vec,
    /// Ed25519 signature over [`SealedJob::signed_bytes`].
    pub sig: B64<64>,
}

impl SealedJob {
    /// The exact bytes the server signs:
    /// `"picket-job-v1" ‖ u32be(len header) ‖ header ‖ u32be(len enc) ‖ enc ‖ u32be(len ct) ‖ ct`.
    ///
    /// Each field is length-prefixed so that no two different (header, enc, ct)
    /// triples share signed bytes (a plain concatenation would let bytes slide
    /// between neighbouring fields).
    pub fn signed_bytes(header: &[u8], enc: &[u8], ct: &[u8]) -> Vec<u8> {
        let ctx = crate::JOB_SIGNATURE_CONTEXT;
        let mut out = Vec::with_capacity(ctx.len() + 12 + header.len() + enc.len() + ct.len());
        out.extend_from_slice(ctx);
        for part in [header, enc, ct] {
            // Parts are bounded by the frame cap (1 MiB default), far below u32::MAX.
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// The signed, unencrypted part of a job: who it is for, when it is valid,
/// where it sits in the agent's sequence and what kind of work it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHeader {
    /// Unique id of the job (UUIDv7, so ids sort by creation time).
    pub job_id: Uuid,
    /// The one agent allowed to open this job.
    pub agent_id: Uuid,
    /// The tenant that owns the agent.
    pub tenant_id: Uuid,
    /// Per-agent sequence number, strictly increasing from 1.
    pub seq: u64,
    /// Unix seconds when the server sealed the job.
    pub issued_at: i64,
    /// Unix seconds after which the agent refuses the job.
    pub expires_at: i64,
    /// What the job does; checked against local policy before decryption
    /// and against the decrypted action after.
    pub kind: JobKind,
    /// Fingerprint of the server signing key that signed this job.
    pub key_id: KeyFingerprint,
}

/// Kinds of job. The agent's local policy allows or refuses each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobKind {
    /// Create a rule on the SIEM, or update it if it exists.
    DeployRule,
    /// Disable a deployed rule (keep it, stop it running).
    DisableRule,
    /// Delete a deployed rule.
    DeleteRule,
    /// Check that the SIEM answers and the credentials work.
    CheckConnection,
    /// Apply a deployment request's items atomically (see [`crate::batch`]).
    DeployBatch,
    /// Report the content hash of every rule the server expects on a connection.
    DriftCheck,
    /// Run a rule version's tests: inject sample events, count matches.
    TestRule,
    /// Report the run health (counts) of managed rules on a connection over a window.
    RuleHealth,
    /// Count what rules' queries match over a recent window (expected alert volume).
    PreviewCount,
}

impl JobKind {
    /// Stable snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::DeployRule => "deploy_rule",
            JobKind::DisableRule => "disable_rule",
            JobKind::DeleteRule => "delete_rule",
            JobKind::CheckConnection => "check_connection",
            JobKind::DeployBatch => "deploy_batch",
            JobKind::DriftCheck => "drift_check",
            JobKind::TestRule => "test_rule",
            JobKind::RuleHealth => "rule_health",
            JobKind::PreviewCount => "preview_count",
        }
    }
}

/// The encrypted part of a job: where to act and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The SIEM connection to act on, with its credential.
    pub target: SiemTarget,
    /// The work itself.
    pub action: JobAction,
}

impl JobSpec {
    /// The kind this spec's action corresponds to; must equal the header's kind.
    pub fn kind(&self) -> JobKind {
        match self.action {
            JobAction::DeployRule { .. } => JobKind::DeployRule,
            JobAction::DisableRule { .. } => JobKind::DisableRule,
            JobAction::DeleteRule { .. } => JobKind::DeleteRule,
            JobAction::CheckConnection => JobKind::CheckConnection,
            JobAction::DeployBatch { .. } => JobKind::DeployBatch,
            JobAction::DriftCheck { .. } => JobKind::DriftCheck,
            JobAction::TestRule { .. } => JobKind::TestRule,
            JobAction::RuleHealth { .. } => JobKind::RuleHealth,
            JobAction::PreviewCount { .. } => JobKind::PreviewCount,
        }
    }
}

/// One SIEM connection as the agent needs it to act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiemTarget {
    /// Server-issued id of the connection.
    pub connection_id: Uuid,
    /// Connection name, as registered by the tenant admin (local policy may allow by name).
    pub name: String,
    /// Kind-specific settings and credential.
    pub settings: SiemSettings,
}

/// Supported SIEMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SiemKind {
    /// Splunk Enterprise / Cloud, REST API on the management port.
    Splunk,
    /// Microsoft Sentinel: ARM `alertRules`, the Log Analytics query API.
    Sentinel,
    /// Elastic Security: the Kibana detection engine API and Elasticsearch.
    Elastic,
}

impl SiemKind {
    /// Stable snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            SiemKind::Splunk => "splunk",
            SiemKind::Sentinel => "sentinel",
            SiemKind::Elastic => "elastic",
        }
    }

    /// The kind named `name` (its [`Self::as_str`]), if any.
    pub fn parse(name: &str) -> Option<SiemKind> {
        match name {
            "splunk" => Some(SiemKind::Splunk),
            "sentinel" => Some(SiemKind::Sentinel),
            "elastic" => Some(SiemKind::Elastic),
            _ => None,
        }
    }
}

/// Kind-specific connection settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SiemSettings {
    /// Splunk REST API.
    Splunk(SplunkSettings),
    /// Microsoft Sentinel (Azure Resource Manager, Log Analytics).
    Sentinel(SentinelSettings),
    /// Elastic Security (Kibana detection engine, Elasticsearch).
    Elastic(ElasticSettings),
}

impl SiemSettings {
    /// Which SIEM these settings are for.
    pub fn kind(&self) -> SiemKind {
        match self {
            SiemSettings::Splunk(_) => SiemKind::Splunk,
            SiemSettings::Sentinel(_) => SiemKind::Sentinel,
            SiemSettings::Elastic(_) => SiemKind::Elastic,
        }
    }
}

/// Splunk REST API settings. Saved searches live in the `app`/`owner` namespace
/// (`/servicesNS/{owner}/{app}/saved/searches`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplunkSettings {
    /// Management API base URL, e.g. `https://splunk.corp:8089`.
    pub base_url: String,
    /// Splunk app that holds Picket's saved searches, e.g. `search`.
    pub app: String,
    /// Owner namespace, e.g. `nobody` for app-shared objects.
    pub owner: String,
    /// Splunk authentication token, sent as `Authorization: Bearer`. Unused
    /// when [`Self::login`] is set.
    pub token: Credential,
    /// Username and password for `/services/auth/login`, whose session key is
    /// then sent as `Authorization: Splunk <key>` instead of the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<SplunkLogin>,
    /// HTTP Event Collector for test events; without it, test events cannot
    /// be injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hec: Option<SplunkHec>,
}

/// A Splunk user for session-key authentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplunkLogin {
    /// Username.
    pub username: String,
    /// Password.
    pub password: Credential,
}

/// Splunk's HTTP Event Collector, where test events go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplunkHec {
    /// HEC base URL, e.g. `https://splunk.corp:8088`.
    pub url: String,
    /// HEC token, sent as `Authorization: Splunk <token>`.
    pub token: Credential,
    /// Index that receives test events (the HEC token must allow it).
    pub test_index: String,
}

/// Microsoft Sentinel settings: the workspace, the Entra app registration
/// whose client-credentials token the agent uses, and the endpoints (the
/// public Azure cloud's unless overridden, e.g. for a sovereign cloud).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelSettings {
    /// Azure subscription id.
    pub subscription_id: String,
    /// Resource group of the Log Analytics workspace.
    pub resource_group: String,
    /// Log Analytics workspace name (the ARM resource name).
    pub workspace_name: String,
    /// Log Analytics workspace id (a GUID), for the query API.
    pub workspace_id: String,
    /// Entra tenant (directory) id.
    pub tenant_id: String,
    /// Entra application (client) id.
    pub client_id: String,
    /// The application's client secret.
    pub client_secret: Credential,
    /// Azure Resource Manager, e.g. `https://management.azure.com`.
    pub management_url: String,
    /// Entra token authority, e.g. `https://login.microsoftonline.com`.
    pub login_url: String,
    /// Log Analytics query API, e.g. `https://api.loganalytics.io`.
    pub log_analytics_url: String,
    /// Logs Ingestion API target for test events; without it, test events
    /// cannot be injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingestion: Option<SentinelIngestion>,
}

/// The Azure Monitor Logs Ingestion target of test events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelIngestion {
    /// Data collection endpoint URL.
    pub endpoint: String,
    /// Immutable id of the data collection rule (`dcr-...`).
    pub dcr_immutable_id: String,
    /// Stream name declared in the rule, e.g. `Custom-PicketTest_CL`.
    pub stream: String,
    /// The table the stream lands in, which count queries read, e.g. `PicketTest_CL`.
    pub table: String,
}

/// Elastic Security settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElasticSettings {
    /// Kibana URL, e.g. `https://kibana.corp:5601`.
    pub kibana_url: String,
    /// Elasticsearch URL (test events and counts), e.g. `https://es.corp:9200`.
    pub elasticsearch_url: String,
    /// Kibana space, when not the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// API key (the base64 `id:api_key` form), sent as `Authorization: ApiKey`.
    pub api_key: Credential,
    /// Index (or data stream) that receives test events.
    pub test_index: String,
}

/// A secret value inside a job spec. Zeroized on drop; its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Credential(pub Zeroizing<String>);

impl Credential {
    /// Wraps a secret.
    pub fn new(s: String) -> Self {
        Credential(Zeroizing::new(s))
    }

    /// The secret, for the one place that must send it to the SIEM.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential([redacted])")
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobAction {
    /// Create the rule, or update it in place if it already exists.
    DeployRule {
        /// The rule version to deploy.
        rule: RuleSpec,
    },
    /// Disable a deployed rule.
    DisableRule {
        /// The rule to disable.
        rule: RuleRef,
    },
    /// Delete a deployed rule.
    DeleteRule {
        /// The rule to delete.
        rule: RuleRef,
    },
    /// Check that the SIEM answers and the credential works.
    CheckConnection,
    /// Apply items atomically, or report what they would change (dry run).
    DeployBatch {
        /// The items.
        batch: crate::batch::Batch,
    },
    /// Report the content hash of each listed rule.
    DriftCheck {
        /// The rules and their expected hashes.
        check: crate::batch::DriftCheck,
    },
    /// Inject a rule version's test events and count matches per case.
    TestRule {
        /// The tests.
        test: crate::ruletest::RuleTest,
    },
    /// Report each listed rule's run health over a window, as numbers.
    RuleHealth {
        /// The rules and the window.
        check: crate::health::RuleHealthCheck,
    },
    /// Count, per rule, the events its query matches over a recent window
    /// on the SIEM's own data (the expected alert volume reviewers see):
    /// counts only, never events.
    PreviewCount {
        /// The rules and the window.
        preview: crate::batch::Preview,
    },
}

/// A reference to a managed rule by its server id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// Server id of the rule (stable across versions).
    pub rule_id: Uuid,
}

/// Severity of a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Stable snake_case name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// When a scheduled rule runs and over which window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Five-field cron expression, e.g. `*/5 * * * *`.
    pub cron: String,
    /// Start of the search window relative to run time, e.g. `-5m` (Splunk time modifier).
    pub earliest: String,
    /// End of the search window, e.g. `now`.
    pub latest: String,
}

/// One immutable rule version, as deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSpec {
    /// Server id of the rule (stable across versions).
    pub rule_id: Uuid,
    /// Version number, from 1.
    pub version: u32,
    /// Human title, shown in the SIEM's description.
    pub title: String,
    /// Longer description.
    pub description: String,
    /// Severity.
    pub severity: Severity,
    /// The query in the SIEM's language (SPL for Splunk).
    pub query: String,
    /// Schedule and window.
    pub schedule: Schedule,
}

/// The name under which a managed rule lives on the SIEM: `picket-<rule id>`.
/// Agents only ever touch objects with this prefix.
pub fn managed_rule_name(rule_id: &Uuid) -> String {
    format!("{MANAGED_PREFIX}{rule_id}")
}

/// Prefix of every SIEM object Picket manages.
pub const MANAGED_PREFIX: &str = "picket-";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bytes_are_unambiguous() {
        let a = SealedJob::signed_bytes(b"ab", b"c", b"d");
        let b = SealedJob::signed_bytes(b"a", b"bc", b"d");
        assert_ne!(a, b);
        assert!(a.starts_with(crate::JOB_SIGNATURE_CONTEXT));
    }

    #[test]
    fn credential_debug_is_redacted() {
        let c = Credential::new("s3cret-token".into());
        assert!(!format!("{c:?}").contains("s3cret"));
        let spec = SplunkSettings {
            base_url: "http://x".into(),
            app: "search".into(),
            owner: "nobody".into(),
            token: c,
            login: None,
            hec: None,
        };
        assert!(!format!("{spec:?}").contains("s3cret"));
    }

    #[test]
    fn spec_kind_matches_action() {
        let spec = JobSpec {
            target: SiemTarget {
                connection_id: Uuid::nil(),
                name: "prod".into(),
                settings: SiemSettings::Splunk(SplunkSettings {
                    base_url: "http://x".into(),
                    app: "search".into(),
                    owner: "nobody".into(),
                    token: Credential::new("t".into()),
                    login: None,
                    hec: None,
                }),
            },
            action: JobAction::CheckConnection,
        };
        assert_eq!(spec.kind(), JobKind::CheckConnection);
        let json = serde_json::to_string(&spec).unwrap();
        let back: JobSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}
