//! `picket-agent check-config`: validates `agent.toml` and the local
//! `policy.toml` exactly as `run` would load them, and describes the result.
//!
//! Used after installing or editing the configuration (the Debian package's
//! test runs it as the service user), so a mistake shows up before the
//! service restarts. Reads files only: no network, no state written.

use std::path::Path;

use anyhow::Context;

use crate::config::{AgentConfig, DEFAULT_POLICY_PATH};
use crate::policy::Policy;
use crate::state::StateDir;

/// Loads and checks everything `run` reads at start-up, returning the
/// summary lines to print.
///
/// `config_path` is the file given with `--config` (a missing file means
/// built-in defaults, as for `run`).
///
/// # Errors
/// The first problem found, naming the file and key: invalid `agent.toml`
/// or environment override, unreadable or empty `ca_bundle`, missing or
/// invalid policy file.
pub fn check_config(config_path: &Path) -> anyhow::Result<Vec<String>> {
    let config = AgentConfig::load(config_path)?;
    let mut out = Vec::new();
    if config_path.exists() {
        out.push(format!("config file: {} (ok)", config_path.display()));
    } else {
        out.push(format!(
            "config file: {} (not found: built-in defaults and PICKET_AGENT_* variables apply)",
            config_path.display()
        ));
    }
    out.push(format!(
        "server_url: {}",
        config.server_url.as_ref().map_or_else(
            || "unset (the URL stored at enrollment is used)".to_owned(),
            ToString::to_string
        )
    ));
    if config.dangerous_plaintext {
        out.push("dangerous_plaintext: true (DANGEROUS: http:// server URLs allowed)".to_owned());
    }
    let state = StateDir::new(&config.state_dir);
    let enrolled = if state.is_enrolled() {
        "enrolled"
    } else if config.state_dir.is_dir() {
        "not enrolled yet: run `picket-agent enroll`"
    } else {
        "does not exist yet: `picket-agent enroll` creates it"
    };
    out.push(format!(
        "state_dir: {} ({enrolled})",
        config.state_dir.display()
    ));
    match &config.ca_bundle {
        Some(path) => {
            crate::net::tls_config(Some(path))?;
            out.push(format!("ca_bundle: {} (ok)", path.display()));
        }
        None => out.push("ca_bundle: none (built-in web PKI roots)".to_owned()),
    }
    out.push(format!(
        "proxy: {}",
        config.proxy.as_ref().map_or_else(
            || "none".to_owned(),
            |p| format!("{} (from {})", p.display(), p.source())
        )
    ));
    out.push(format!(
        "timeouts: connect {} s, SIEM job {} s; max frame {} bytes; clock skew {} s",
        config.connect_timeout.as_secs(),
        config.siem_timeout.as_secs(),
        config.max_frame_bytes,
        config.clock_skew_secs
    ));
    let default_policy = Path::new(DEFAULT_POLICY_PATH);
    let policy = Policy::load(config.policy_file.as_deref(), default_policy)
        .context("the local policy is invalid")?;
    let policy_source = match &config.policy_file {
        Some(p) => format!("{} (ok)", p.display()),
        None if default_policy.exists() => format!("{} (ok)", default_policy.display()),
        None => format!(
            "none ({} does not exist: the permissive default applies)",
            default_policy.display()
        ),
    };
    out.push(format!("policy file: {policy_source}"));
    out.extend(policy.summary().into_iter().map(|l| format!("policy: {l}")));
    Ok(out)
}
