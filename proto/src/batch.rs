//! Atomic deployment batches and drift checks.
//!
//! A [`Batch`] carries one deployment request's items, applied by the agent in
//! order. Before touching a rule the agent reads its current state on the
//! SIEM (present with a content hash, or absent); if an item fails, every
//! item already applied in this batch is reverted (a rule that was absent is
//! deleted, one that was present is restored from [`BatchItem::previous`]),
//! so a batch is never left half-applied. A dry run only reads: each item
//! reports whether it would create, change or leave the rule unchanged.
//!
//! A [`DriftCheck`] lists the rules the server believes it deployed on one
//! connection and the content hash it expects; the agent answers one
//! [`ItemOutcome`] per rule with the hash it found (or `absent`), and, for a
//! drifted rule, the rule as the SIEM holds it normalized back to the rule
//! model ([`RemoteRule`]: rule text and schedule metadata, never log data;
//! bounded by [`MAX_REMOTE_RULE_BYTES`] and [`MAX_REMOTE_RULES`]) so the
//! server can record it as a new version ("accept remote").

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bytes::B64;
use crate::job::{RuleSpec, Severity};
use crate::outcome::ErrorClass;

/// Most items one batch (or drift check) may carry; the server refuses
/// larger requests and the agent refuses larger jobs.
pub const MAX_BATCH_ITEMS: usize = 100;

/// One deployment request, applied atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Only read the SIEM and report what would change; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The items, in the order the agent applies them (at most [`MAX_BATCH_ITEMS`]).
    pub items: Vec<BatchItem>,
}

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchItem {
    /// The rule it touches.
    pub rule_id: Uuid,
    /// What to do to it.
    pub op: BatchOp,
    /// The version the server last deployed on this connection, so a revert
    /// can put it back when the rule was present before the batch. `None`
    /// for a rule that was never deployed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousState>,
}

/// What the server last deployed for a rule on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousState {
    /// The version's content.
    pub rule: RuleSpec,
    /// Whether it was deployed in monitoring mode.
    #[serde(default)]
    pub monitoring: bool,
    /// Whether it was enabled.
    pub enabled: bool,
}

/// The operation of one batch item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchOp {
    /// Create or update the rule with this version.
    Deploy {
        /// The version.
        rule: RuleSpec,
        /// Monitoring mode: the rule runs but raises no alert (no alert
        /// actions, no incidents, no triggered-alert records).
        #[serde(default)]
        monitoring: bool,
    },
    /// Disable the rule (it stays on the SIEM).
    Disable,
    /// Enable the rule.
    Enable,
    /// Delete the rule.
    Delete,
}

/// The rules of one connection and the hashes the server expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftCheck {
    /// At most [`MAX_BATCH_ITEMS`] rules.
    pub rules: Vec<DriftExpectation>,
}

/// One rule of a drift check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftExpectation {
    /// The rule.
    pub rule_id: Uuid,
    /// SHA-256 of its content as last deployed.
    pub expected: B64<32>,
}

/// Longest preview window: 7 days.
pub const MAX_PREVIEW_WINDOW_SECS: u32 = 7 * 24 * 3600;

/// A `preview_count` job: count what each rule's query matches on the
/// SIEM's data over the last `window_secs` seconds. The agent answers one
/// [`ItemOutcome`] per rule, `counted` with its `count`, or `failed` with an
/// error class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The window, 60 s to [`MAX_PREVIEW_WINDOW_SECS`].
    pub window_secs: u32,
    /// At most [`MAX_BATCH_ITEMS`] rules.
    pub rules: Vec<PreviewRule>,
}

/// One rule of a preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewRule {
    /// The rule.
    pub rule_id: Uuid,
    /// The rule's query in the SIEM's language, as it would be deployed;
    /// the connector turns it into a count over the window.
    pub query: String,
}

/// Most bytes of one [`RemoteRule`] (the sum of its text fields).
pub const MAX_REMOTE_RULE_BYTES: usize = 64 * 1024;

/// Most drifted rules whose content one drift result carries: with
/// [`MAX_REMOTE_RULE_BYTES`] each, a result stays well under the 1 MiB frame
/// cap. Further drifted rules report their hash only.
pub const MAX_REMOTE_RULES: usize = 12;

/// A managed rule as the SIEM holds it, normalized back to Picket's rule
/// model by the agent's connector. Rule text and metadata only: the SIEM's
/// answers are read for these fields and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteRule {
    /// Title (empty when the SIEM keeps none the agent can tell apart).
    pub title: String,
    /// Description, without the "Managed by Picket" note deploys add.
    pub description: String,
    /// Severity, mapped back from the SIEM's scale (where one step of the
    /// SIEM's scale stands for two Picket severities, the connector names
    /// which one it picks).
    pub severity: Severity,
    /// The query.
    pub query: String,
    /// The schedule, in the form the SIEM keeps it.
    pub schedule: RemoteSchedule,
    /// Deployed with alerting off (the SIEM's monitoring form).
    pub monitoring: bool,
    /// Enabled on the SIEM.
    pub enabled: bool,
}

/// A schedule as a SIEM keeps it: Splunk `cron` + `earliest` + `latest`;
/// Sentinel (ISO 8601) and Elastic (`interval`, `from`) `frequency` +
/// `lookback`. The server turns it into the canonical form as for any save.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSchedule {
    /// Five-field cron.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Window start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest: Option<String>,
    /// Window end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<String>,
    /// Native frequency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency: Option<String>,
    /// Native lookback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookback: Option<String>,
}

impl RemoteRule {
    /// Bytes of its text fields.
    pub fn size(&self) -> usize {
        let s = &self.schedule;
        [&s.cron, &s.earliest, &s.latest, &s.frequency, &s.lookback]
            .iter()
            .map(|f| f.as_ref().map_or(0, String::len))
            .sum::<usize>()
            + self.title.len()
            + self.description.len()
            + self.query.len()
    }

    /// Whether it fits [`MAX_REMOTE_RULE_BYTES`] (the server ignores one that
    /// does not, whoever sent it).
    pub fn within_bounds(&self) -> bool {
        self.size() <= MAX_REMOTE_RULE_BYTES
    }
}

/// What happened to one batch item (or what a drift check found), in the
/// batch's order. Enums and hashes, plus for a drifted rule its normalized
/// content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemOutcome {
    /// The rule.
    pub rule_id: Uuid,
    /// Its end state.
    pub status: ItemStatus,
    /// Why it failed (or why its revert failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
    /// The content hash: as deployed (applied), as found (dry run, drift).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<B64<32>>,
    /// Drift check, `drifted`: the rule as found, when the connector could
    /// normalize it and the result's budget ([`MAX_REMOTE_RULES`]) allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<Box<RemoteRule>>,
    /// Preview, `counted`: events the rule's query matched in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// The end state of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ItemStatus {
    /// Applied and kept (the whole batch succeeded).
    Applied,
    /// This item failed; see the error class.
    Failed,
    /// Applied, then undone because a later item failed.
    Reverted,
    /// Applied, a later item failed, and undoing this one failed too: the
    /// SIEM may hold this item's change (the error class says why).
    RevertFailed,
    /// Not attempted because an earlier item failed.
    Skipped,
    /// Dry run: the rule does not exist and would be created.
    WouldCreate,
    /// Dry run: the rule exists with other content and would change.
    WouldChange,
    /// Dry run: the rule already holds exactly this content.
    Unchanged,
    /// Drift check: the rule holds the expected content.
    InSync,
    /// Drift check: the rule holds other content.
    Drifted,
    /// Drift check: the rule is missing.
    Missing,
    /// Preview: counted (see `count`).
    Counted,
}

impl ItemStatus {
    /// Stable snake_case name, as on the wire and as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Applied => "applied",
            ItemStatus::Failed => "failed",
            ItemStatus::Reverted => "reverted",
            ItemStatus::RevertFailed => "revert_failed",
            ItemStatus::Skipped => "skipped",
            ItemStatus::WouldCreate => "would_create",
            ItemStatus::WouldChange => "would_change",
            ItemStatus::Unchanged => "unchanged",
            ItemStatus::InSync => "in_sync",
            ItemStatus::Drifted => "drifted",
            ItemStatus::Missing => "missing",
            ItemStatus::Counted => "counted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_serde() {
        for s in [
            ItemStatus::Applied,
            ItemStatus::RevertFailed,
            ItemStatus::WouldCreate,
            ItemStatus::InSync,
        ] {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn ops_are_tagged() {
        let item = BatchItem {
            rule_id: Uuid::nil(),
            op: BatchOp::Delete,
            previous: None,
        };
        let json = serde_json::to_string(&item).unwrap();
        assert!(json.contains("\"op\":\"delete\""), "{json}");
        assert_eq!(serde_json::from_str::<BatchItem>(&json).unwrap(), item);
    }
}
