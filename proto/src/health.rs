//! Health reports: process, host and SIEM reachability figures. Numbers only.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ErrorClass, ProtoError};

/// Most SIEM connections one report may describe.
pub const MAX_SIEM_ENTRIES: usize = 64;

/// A periodic report from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// Unix seconds when the agent took these figures. A report buffered
    /// while the agent was offline keeps the time it describes, not the time
    /// it was finally sent; the server refuses values outside a bounded skew
    /// (see `HealthReport::check_taken_at`).
    pub taken_at: i64,
    /// Seconds since the agent process started.
    pub uptime_secs: u64,
    /// Agent process CPU use over the last interval, percent of one core (0 to 100 × cores).
    pub cpu_percent: f32,
    /// Agent process resident memory, bytes.
    pub rss_bytes: u64,
    /// Host memory in use, bytes.
    pub host_mem_used_bytes: u64,
    /// Host memory in total, bytes.
    pub host_mem_total_bytes: u64,
    /// Jobs that succeeded since the agent started.
    pub jobs_succeeded: u64,
    /// Jobs that failed or were refused since the agent started.
    pub jobs_failed: u64,
    /// One entry per SIEM connection the agent serves.
    pub siem: Vec<SiemHealth>,
    /// Set once the agent refused an audit checkpoint (docs/audit.md); stays
    /// set until the agent's witness state is reset by its operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_alarm: Option<crate::AuditAlarm>,
}

/// Reachability of one SIEM connection, from the agent's last probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiemHealth {
    /// Server-issued id of the connection.
    pub connection_id: Uuid,
    /// Whether the SIEM answered the last probe.
    pub reachable: bool,
    /// Round-trip time of the last probe, milliseconds, when it answered.
    pub latency_ms: Option<u32>,
    /// Why the last probe failed, when it did.
    pub error_class: Option<ErrorClass>,
}

impl HealthReport {
    /// Checks the bounds that serde cannot express.
    ///
    /// # Errors
    /// [`ProtoError::InvalidField`] naming the first field out of bounds.
    pub fn validate(&self) -> Result<(), ProtoError> {
        if !self.cpu_percent.is_finite() || self.cpu_percent < 0.0 || self.cpu_percent > 100_000.0 {
            return Err(ProtoError::InvalidField {
                field: "cpu_percent",
                reason: "expected a finite value from 0 to 100000",
            });
        }
        if self.taken_at <= 0 {
            return Err(ProtoError::InvalidField {
                field: "taken_at",
                reason: "expected positive Unix seconds",
            });
        }
        if self.host_mem_used_bytes > self.host_mem_total_bytes {
            return Err(ProtoError::InvalidField {
                field: "host_mem_used_bytes",
                reason: "exceeds host_mem_total_bytes",
            });
        }
        if self.siem.len() > MAX_SIEM_ENTRIES {
            return Err(ProtoError::InvalidField {
                field: "siem",
                reason: "more than 64 entries",
            });
        }
        Ok(())
    }

    /// Checks `taken_at` against the receiver's clock `now`: at most
    /// `max_future_secs` ahead (clock skew) and at most `max_age_secs` old
    /// (how long an agent may buffer reports offline).
    ///
    /// # Errors
    /// [`ProtoError::InvalidField`] on `taken_at` saying which bound failed.
    pub fn check_taken_at(
        &self,
        now: i64,
        max_future_secs: i64,
        max_age_secs: i64,
    ) -> Result<(), ProtoError> {
        if self.taken_at > now.saturating_add(max_future_secs) {
            return Err(ProtoError::InvalidField {
                field: "taken_at",
                reason: "in the future beyond the allowed clock skew",
            });
        }
        if self.taken_at < now.saturating_sub(max_age_secs) {
            return Err(ProtoError::InvalidField {
                field: "taken_at",
                reason: "older than the server accepts",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(taken_at: i64) -> HealthReport {
        HealthReport {
            taken_at,
            uptime_secs: 1,
            cpu_percent: 0.5,
            rss_bytes: 1,
            host_mem_used_bytes: 1,
            host_mem_total_bytes: 2,
            jobs_succeeded: 0,
            jobs_failed: 0,
            siem: Vec::new(),
            audit_alarm: None,
        }
    }

    #[test]
    fn taken_at_is_bounded_both_ways() {
        let now = 1_800_000_000;
        assert!(report(now).validate().is_ok());
        assert!(report(0).validate().is_err());
        assert!(report(now).check_taken_at(now, 300, 3600).is_ok());
        assert!(report(now + 300).check_taken_at(now, 300, 3600).is_ok());
        assert!(report(now - 3600).check_taken_at(now, 300, 3600).is_ok());
        let future = report(now + 301)
            .check_taken_at(now, 300, 3600)
            .unwrap_err();
        assert!(future.to_string().contains("future"), "{future}");
        let old = report(now - 3601)
            .check_taken_at(now, 300, 3600)
            .unwrap_err();
        assert!(old.to_string().contains("older"), "{old}");
    }
}

/// Health of one managed rule on its SIEM, reduced to numbers: what a
/// connector derives from the SIEM's own run records (Splunk scheduler
/// records, Sentinel's `SentinelHealth` table, Elastic's execution summary).
/// No field can carry a SIEM message; how each figure is derived per SIEM is
/// in `docs/connectors.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuleHealth {
    /// Runs that completed successfully in the window.
    pub runs_succeeded: u64,
    /// Runs that failed in the window.
    pub runs_failed: u64,
    /// Runs the SIEM skipped or only partly completed in the window (Splunk
    /// `skipped`, Sentinel `Partial success`, Elastic `partial failure`).
    pub runs_skipped: u64,
    /// Results (events or rows) the successful runs returned in the window,
    /// where the SIEM reports it.
    pub results_total: Option<u64>,
    /// Alerts the rule generated in the window, where the SIEM reports it.
    pub alerts_fired: Option<u64>,
    /// Unix seconds of the last run the SIEM reports, if any.
    pub last_run_at: Option<i64>,
    /// Duration of the last run, milliseconds, where the SIEM reports it.
    pub last_run_duration_ms: Option<u64>,
    /// Time the last run left uncovered (Elastic's gap), milliseconds.
    pub gap_ms: Option<u64>,
}

/// Most rules one `rule_health` job may ask about, and so most entries its
/// result may carry (the same bound as a batch).
pub const MAX_RULE_HEALTH_RULES: usize = crate::batch::MAX_BATCH_ITEMS;

/// Longest window a `rule_health` job may cover: 7 days, in seconds.
pub const MAX_RULE_HEALTH_WINDOW_SECS: u32 = 7 * 24 * 3600;

/// What a `rule_health` job asks: the run health of the listed managed rules
/// on one connection over the last `window_secs` seconds (up to the agent's
/// clock at run time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHealthCheck {
    /// The rules, by server id (1 to [`MAX_RULE_HEALTH_RULES`]).
    pub rules: Vec<Uuid>,
    /// Length of the window, seconds (60 to [`MAX_RULE_HEALTH_WINDOW_SECS`]).
    pub window_secs: u32,
}

impl RuleHealthCheck {
    /// Checks the bounds serde cannot express.
    ///
    /// # Errors
    /// [`ProtoError::InvalidField`] naming the field out of bounds.
    pub fn validate(&self) -> Result<(), ProtoError> {
        if self.rules.is_empty() || self.rules.len() > MAX_RULE_HEALTH_RULES {
            return Err(ProtoError::InvalidField {
                field: "rules",
                reason: "expected 1 to 100 rules",
            });
        }
        if !(60..=MAX_RULE_HEALTH_WINDOW_SECS).contains(&self.window_secs) {
            return Err(ProtoError::InvalidField {
                field: "window_secs",
                reason: "expected 60 to 604800",
            });
        }
        Ok(())
    }
}

/// One rule's answer in a `rule_health` result: its numbers, or why the
/// connector could not read them. Exactly one of the two is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleHealthItem {
    /// The rule.
    pub rule_id: Uuid,
    /// Its health over the job's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<RuleHealth>,
    /// Why its health could not be read (e.g. `not_found` for a rule missing
    /// on the SIEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<ErrorClass>,
}

/// Checks a `rule_health` result list: at most [`MAX_RULE_HEALTH_RULES`]
/// entries, each with exactly one of numbers or an error class.
///
/// # Errors
/// [`ProtoError::InvalidField`] on `rule_health`.
pub fn validate_rule_health_items(items: &[RuleHealthItem]) -> Result<(), ProtoError> {
    if items.len() > MAX_RULE_HEALTH_RULES {
        return Err(ProtoError::InvalidField {
            field: "rule_health",
            reason: "more than 100 entries",
        });
    }
    if items
        .iter()
        .any(|i| i.health.is_some() == i.error_class.is_some())
    {
        return Err(ProtoError::InvalidField {
            field: "rule_health",
            reason: "each entry needs exactly one of health or error_class",
        });
    }
    Ok(())
}

#[cfg(test)]
mod rule_health_tests {
    use super::*;

    #[test]
    fn checks_are_bounded() {
        let ok = RuleHealthCheck {
            rules: vec![Uuid::nil()],
            window_secs: 3600,
        };
        assert!(ok.validate().is_ok());
        let empty = RuleHealthCheck {
            rules: vec![],
            ..ok.clone()
        };
        assert!(empty.validate().is_err());
        let too_many = RuleHealthCheck {
            rules: vec![Uuid::nil(); MAX_RULE_HEALTH_RULES + 1],
            ..ok.clone()
        };
        assert!(too_many.validate().is_err());
        for bad in [0, 59, MAX_RULE_HEALTH_WINDOW_SECS + 1] {
            let c = RuleHealthCheck {
                window_secs: bad,
                ..ok.clone()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn items_need_exactly_one_answer() {
        let numbers = RuleHealthItem {
            rule_id: Uuid::nil(),
            health: Some(RuleHealth::default()),
            error_class: None,
        };
        let failed = RuleHealthItem {
            health: None,
            error_class: Some(ErrorClass::NotFound),
            ..numbers
        };
        assert!(validate_rule_health_items(&[numbers, failed]).is_ok());
        let both = RuleHealthItem {
            error_class: Some(ErrorClass::NotFound),
            ..numbers
        };
        assert!(validate_rule_health_items(&[both]).is_err());
        let neither = RuleHealthItem {
            health: None,
            ..numbers
        };
        assert!(validate_rule_health_items(&[neither]).is_err());
        assert!(validate_rule_health_items(&vec![numbers; MAX_RULE_HEALTH_RULES + 1]).is_err());
    }
}
