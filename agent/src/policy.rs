//! The customer's local policy (`policy.toml`): which job kinds may run,
//! which SIEM connections may be touched, and a rate cap. It lives on the
//! agent host and the server cannot change it.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `allow_kinds` | every kind (`deploy_rule`, `disable_rule`, `delete_rule`, `check_connection`, `deploy_batch`, `drift_check`, `test_rule`, `rule_health`, `preview_count`) | job kinds this agent may run |
//! | `allow_connections` | any | SIEM connections (name or id) this agent may act on |
//! | `max_jobs_per_hour` | 1000 | most jobs started in any sliding 60-minute window (1 to 100000) |
//! | `max_jobs_per_minute` | none | optional burst cap over any sliding 60-second window (1 to 10000), kept for older policy files |
//!
//! ```toml
//! allow_kinds = ["deploy_rule", "disable_rule", "delete_rule", "check_connection", "test_rule", "rule_health"]
//! allow_connections = ["prod-splunk"]
//! max_jobs_per_hour = 200
//! ```
//!
//! A job over a cap, of a kind not allowed, or for a connection not allowed
//! is answered `refused` / `policy_denied` (and written to the journal).
//! Refused jobs do not take a slot in the rate windows.
//!
//! When no policy file is configured and none exists at the default path,
//! every kind and connection is allowed with the default rate cap (logged at
//! start-up). A configured path that does not exist is an error.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use picket_proto::{JobKind, SiemTarget};
use serde::Deserialize;

/// Default rate cap (jobs started per sliding hour).
pub const DEFAULT_MAX_JOBS_PER_HOUR: u32 = 1000;
const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    allow_kinds: Option<Vec<JobKind>>,
    allow_connections: Option<Vec<String>>,
    max_jobs_per_hour: Option<u32>,
    max_jobs_per_minute: Option<u32>,
}

/// The validated local policy, with its rate-cap window.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `None`: every kind.
    allow_kinds: Option<Vec<JobKind>>,
    /// `None`: every connection. Entries match a connection's name or id.
    allow_connections: Option<Vec<String>>,
    max_per_hour: u32,
    /// Optional burst cap (older policy files).
    max_per_minute: Option<u32>,
    /// Start times of the jobs in the last hour, oldest first (at most `max_per_hour`).
    started: VecDeque<Instant>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_kinds: None,
            allow_connections: None,
            max_per_hour: DEFAULT_MAX_JOBS_PER_HOUR,
            max_per_minute: None,
            started: VecDeque::new(),
        }
    }
}

impl Policy {
    /// Loads the policy: `configured` if given (must exist), else `default_path` if it exists,
    /// else the permissive default.
    ///
    /// # Errors
    /// If a file is unreadable or invalid (the message names the key).
    pub fn load(configured: Option<&Path>, default_path: &Path) -> anyhow::Result<Self> {
        let path = match configured {
            Some(p) => p,
            None if default_path.exists() => default_path,
            None => {
                tracing::info!(
                    path = %default_path.display(),
                    "no local policy file; every job kind and connection is allowed \
                     (at most {DEFAULT_MAX_JOBS_PER_HOUR} jobs per hour)"
                );
                return Ok(Policy::default());
            }
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read policy file {}", path.display()))?;
        let p = Self::from_toml(&text)
            .with_context(|| format!("invalid policy file {}", path.display()))?;
        tracing::info!(path = %path.display(), "loaded local policy");
        Ok(p)
    }

    /// Parses and validates policy TOML.
    ///
    /// # Errors
    /// Invalid TOML, unknown keys or out-of-range values, naming the key.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let raw: RawPolicy = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("{}", crate::config::describe_toml_error(text, &e)))?;
        let per_hour = raw.max_jobs_per_hour.unwrap_or(DEFAULT_MAX_JOBS_PER_HOUR);
        if per_hour == 0 || per_hour > 100_000 {
            anyhow::bail!("`max_jobs_per_hour`: {per_hour} is out of range (allowed 1 to 100000)");
        }
        if let Some(m) = raw.max_jobs_per_minute
            && (m == 0 || m > 10_000)
        {
            anyhow::bail!("`max_jobs_per_minute`: {m} is out of range (allowed 1 to 10000)");
        }
        Ok(Policy {
            allow_kinds: raw.allow_kinds,
            allow_connections: raw.allow_connections,
            max_per_hour: per_hour,
            max_per_minute: raw.max_jobs_per_minute,
            started: VecDeque::new(),
        })
    }

    /// One line per rule, for `picket-agent check-config`.
    pub fn summary(&self) -> Vec<String> {
        let kinds = self.allow_kinds.as_ref().map_or_else(
            || "every kind".to_owned(),
            |k| {
                if k.is_empty() {
                    "none (every job is refused)".to_owned()
                } else {
                    k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
                }
            },
        );
        let conns = self.allow_connections.as_ref().map_or_else(
            || "any".to_owned(),
            |c| {
                if c.is_empty() {
                    "none (every job is refused)".to_owned()
                } else {
                    c.join(", ")
                }
            },
        );
        let minute = self
            .max_per_minute
            .map_or_else(|| "none".to_owned(), |m| m.to_string());
        vec![
            format!("allowed job kinds: {kinds}"),
            format!("allowed connections: {conns}"),
            format!("max jobs per hour: {}", self.max_per_hour),
            format!("max jobs per minute: {minute}"),
        ]
    }

    /// Whether jobs of this kind may run (checked before decryption, on the signed header).
    pub fn allows_kind(&self, kind: JobKind) -> bool {
        self.allow_kinds.as_ref().is_none_or(|k| k.contains(&kind))
    }

    /// Whether this connection may be touched (checked after decryption).
    pub fn allows_connection(&self, target: &SiemTarget) -> bool {
        self.allow_connections.as_ref().is_none_or(|list| {
            let id = target.connection_id.to_string();
            list.iter()
                .any(|c| *c == target.name || c.eq_ignore_ascii_case(&id))
        })
    }

    /// Takes a slot in the rate windows at `now`; `false` (and no slot taken)
    /// if the hourly cap, or the optional per-minute cap, is reached.
    pub fn try_start(&mut self, now: Instant) -> bool {
        while self
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= HOUR)
        {
            self.started.pop_front();
        }
        if self.started.len() >= self.max_per_hour as usize {
            return false;
        }
        if let Some(per_minute) = self.max_per_minute {
            let last_minute = self
                .started
                .iter()
                .rev()
                .take_while(|t| now.saturating_duration_since(**t) < MINUTE)
                .count();
            if last_minute >= per_minute as usize {
                return false;
            }
        }
        self.started.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use picket_proto::{Credential, SiemSettings, SplunkSettings};
    use uuid::Uuid;

    fn target(name: &str) -> SiemTarget {
        SiemTarget {
            connection_id: Uuid::nil(),
            name: name.into(),
            settings: SiemSettings::Splunk(SplunkSettings {
                base_url: "https://s:8089".into(),
                app: "search".into(),
                owner: "nobody".into(),
                token: Credential::new("t".into()),
                login: None,
                hec: None,
            }),
        }
    }

    #[test]
    fn default_allows_everything() {
        let p = Policy::default();
        assert!(p.allows_kind(JobKind::DeleteRule));
        assert!(p.allows_connection(&target("x")));
    }

    #[test]
    fn lists_restrict() {
        let p = Policy::from_toml(
            "allow_kinds = [\"check_connection\"]\nallow_connections = [\"prod\", \"00000000-0000-0000-0000-000000000000\"]\n",
        )
        .unwrap();
        assert!(p.allows_kind(JobKind::CheckConnection));
        assert!(!p.allows_kind(JobKind::DeployRule));
        assert!(p.allows_connection(&target("prod")));
        assert!(p.allows_connection(&target("other-name-but-allowed-id")));
        let p = Policy::from_toml("allow_connections = [\"prod\"]\n").unwrap();
        assert!(!p.allows_connection(&target("dev")));
    }

    #[test]
    fn errors_name_the_key() {
        let e = format!("{:#}", Policy::from_toml("allow_kind = []\n").unwrap_err());
        assert!(e.contains("allow_kind"), "{e}");
        let e = format!(
            "{:#}",
            Policy::from_toml("allow_kinds = [\"format_disk\"]\n").unwrap_err()
        );
        assert!(e.contains("format_disk") || e.contains("variant"), "{e}");
        let e = format!(
            "{:#}",
            Policy::from_toml("max_jobs_per_minute = 0\n").unwrap_err()
        );
        assert!(e.contains("max_jobs_per_minute"), "{e}");
    }

    #[test]
    fn hourly_cap_slides() {
        let mut p = Policy::from_toml("max_jobs_per_hour = 3\n").unwrap();
        let t0 = Instant::now();
        let min = |m: u64| t0 + Duration::from_secs(60 * m);
        assert!(p.try_start(t0));
        assert!(p.try_start(min(10)));
        assert!(p.try_start(min(20)));
        assert!(!p.try_start(min(30)), "fourth job within the hour");
        assert!(!p.try_start(min(59)));
        assert!(p.try_start(min(60)), "the first slot left the window");
        assert!(!p.try_start(min(65)));
        assert!(p.try_start(min(70)));
        let e = format!(
            "{:#}",
            Policy::from_toml("max_jobs_per_hour = 0\n").unwrap_err()
        );
        assert!(e.contains("max_jobs_per_hour"), "{e}");
        assert_eq!(Policy::default().max_per_hour, DEFAULT_MAX_JOBS_PER_HOUR);
    }

    #[test]
    fn rate_cap_slides() {
        let mut p = Policy::from_toml("max_jobs_per_minute = 2\n").unwrap();
        let t0 = Instant::now();
        assert!(p.try_start(t0));
        assert!(p.try_start(t0 + Duration::from_secs(1)));
        assert!(!p.try_start(t0 + Duration::from_secs(2)));
        assert!(p.try_start(t0 + Duration::from_secs(60)));
        assert!(!p.try_start(t0 + Duration::from_secs(60)));
        assert!(p.try_start(t0 + Duration::from_secs(61)));
    }
}
