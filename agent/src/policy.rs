//! The customer's local policy (`policy.toml`): which job kinds may run,
//! which SIEM connections may be touched, and a rate cap. It lives on the
//! agent host and the server cannot change it.
//!
//! ```toml
//! # Job kinds this agent may run (default: all of them).
//! allow_kinds = ["deploy_rule", "disable_rule", "delete_rule", "check_connection"]
//! # SIEM connections, by name or id, this agent may act on (default: any).
//! allow_connections = ["prod-splunk"]
//! # Most jobs started in any 60-second window; more are refused (default 60).
//! max_jobs_per_minute = 60
//! ```
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

/// Default rate cap (jobs started per minute).
pub const DEFAULT_MAX_JOBS_PER_MINUTE: u32 = 60;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    allow_kinds: Option<Vec<JobKind>>,
    allow_connections: Option<Vec<String>>,
    max_jobs_per_minute: Option<u32>,
}

/// The validated local policy, with its rate-cap window.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `None`: every kind.
    allow_kinds: Option<Vec<JobKind>>,
    /// `None`: every connection. Entries match a connection's name or id.
    allow_connections: Option<Vec<String>>,
    max_per_minute: u32,
    started: VecDeque<Instant>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_kinds: None,
            allow_connections: None,
            max_per_minute: DEFAULT_MAX_JOBS_PER_MINUTE,
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
                     (at most {DEFAULT_MAX_JOBS_PER_MINUTE} jobs per minute)"
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
        let max = raw
            .max_jobs_per_minute
            .unwrap_or(DEFAULT_MAX_JOBS_PER_MINUTE);
        if max == 0 || max > 10_000 {
            anyhow::bail!("`max_jobs_per_minute`: {max} is out of range (allowed 1 to 10000)");
        }
        Ok(Policy {
            allow_kinds: raw.allow_kinds,
            allow_connections: raw.allow_connections,
            max_per_minute: max,
            started: VecDeque::new(),
        })
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

    /// Takes a slot in the rate window at `now`; `false` if the cap is reached.
    pub fn try_start(&mut self, now: Instant) -> bool {
        let window = Duration::from_secs(60);
        while self
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            self.started.pop_front();
        }
        if self.started.len() >= self.max_per_minute as usize {
            return false;
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
