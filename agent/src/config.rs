//! Typed agent configuration: `agent.toml` plus `PICKET_AGENT_*` environment
//! overrides, validated once at start-up.
//!
//! Precedence, lowest to highest: built-in defaults, the TOML file, the
//! environment, then command-line flags (applied by `main.rs`). Every error
//! names the offending key (`siem_timeout_secs`) or variable
//! (`PICKET_AGENT_SIEM_TIMEOUT_SECS`), so an operator can fix it without
//! reading the source.
//!
//! | key | env | default | meaning |
//! |---|---|---|---|
//! | `server_url` | `PICKET_AGENT_SERVER_URL` | from `enrollment.json` | control plane base URL |
//! | `state_dir` | `PICKET_AGENT_STATE_DIR` | `/var/lib/picket-agent` | keys, enrollment, ledger |
//! | `ca_bundle` | `PICKET_AGENT_CA_BUNDLE` | none | extra PEM roots (server and SIEM TLS) |
//! | `dangerous_plaintext` | `PICKET_AGENT_DANGEROUS_PLAINTEXT` | `false` | allow `http://` server URLs |
//! | `siem_timeout_secs` | `PICKET_AGENT_SIEM_TIMEOUT_SECS` | 30 | deadline of one SIEM job |
//! | `connect_timeout_secs` | `PICKET_AGENT_CONNECT_TIMEOUT_SECS` | 10 | TCP + TLS + WebSocket + handshake |
//! | `max_frame_bytes` | `PICKET_AGENT_MAX_FRAME_BYTES` | 1 MiB | largest WebSocket message accepted |
//! | `clock_skew_secs` | `PICKET_AGENT_CLOCK_SKEW_SECS` | 60 | tolerance on job `issued_at`/`expires_at` |
//! | `policy_file` | `PICKET_AGENT_POLICY_FILE` | `/etc/picket/policy.toml` if present | local job policy |
//! | `proxy_url` | `PICKET_AGENT_PROXY_URL` | `HTTPS_PROXY` / `ALL_PROXY` | HTTP CONNECT proxy to the server, `http://[user:password@]host:port` |
//! | `no_proxy` | `PICKET_AGENT_NO_PROXY` | `NO_PROXY` / `no_proxy` | hosts reached directly (comma list, suffixes, `*`) |
//!
//! The proxy is used for the server only (enrollment and the WebSocket),
//! never for the SIEM; see [`crate::proxy`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::proxy::ProxyConfig;

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/picket/agent.toml";
/// Default state directory (keys, enrollment, ledger).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/picket-agent";
/// Default location of the customer's local policy (optional).
pub const DEFAULT_POLICY_PATH: &str = "/etc/picket/policy.toml";
/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "PICKET_AGENT_";

/// Why the configuration was refused. Each variant names the key or variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML, has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
    /// A key or environment variable has a value outside its allowed range.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// The key (`siem_timeout_secs`) or variable (`PICKET_AGENT_SIEM_TIMEOUT_SECS`).
        key: String,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The file as written by the operator: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server_url: Option<String>,
    state_dir: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
    dangerous_plaintext: Option<bool>,
    siem_timeout_secs: Option<u64>,
    connect_timeout_secs: Option<u64>,
    max_frame_bytes: Option<u64>,
    clock_skew_secs: Option<u64>,
    policy_file: Option<PathBuf>,
    proxy_url: Option<String>,
    no_proxy: Option<String>,
}

/// The validated configuration of one agent process.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Control plane base URL. Optional: `enroll` takes it from `--server` and
    /// stores it in the state directory; `run` falls back to the stored one.
    pub server_url: Option<Url>,
    /// Where keys, the enrollment record and the job ledger live (created 0700).
    pub state_dir: PathBuf,
    /// PEM file of extra trust roots, added to the built-in web PKI roots for
    /// both the server and the SIEM connections.
    pub ca_bundle: Option<PathBuf>,
    /// Permit `http://` server URLs (no TLS). For local testing only; logged loudly.
    pub dangerous_plaintext: bool,
    /// Deadline for one SIEM job, from start to result.
    pub siem_timeout: Duration,
    /// Deadline for connecting and completing the handshake with the server.
    pub connect_timeout: Duration,
    /// Largest WebSocket message the agent accepts (the server may lower it in `Welcome`).
    pub max_frame_bytes: usize,
    /// Tolerance on job `issued_at` / `expires_at`, seconds.
    pub clock_skew_secs: i64,
    /// The customer's local policy file. `None` means "the default path, if it exists".
    pub policy_file: Option<PathBuf>,
    /// The HTTP CONNECT proxy to the server, if any (credentials inside are never printed).
    pub proxy: Option<ProxyConfig>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            server_url: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            ca_bundle: None,
            dangerous_plaintext: false,
            siem_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: picket_proto::DEFAULT_MAX_FRAME_BYTES,
            clock_skew_secs: 60,
            policy_file: None,
            proxy: None,
        }
    }
}

/// Where a value came from, so that an error names the right thing.
#[derive(Clone, Copy)]
enum Source {
    File,
    Env,
}

fn key_name(key: &str, src: Source) -> String {
    match src {
        Source::File => key.to_owned(),
        Source::Env => format!("{ENV_PREFIX}{}", key.to_ascii_uppercase()),
    }
}

impl AgentConfig {
    /// Loads the configuration from `path` (a missing file is fine: defaults
    /// and the environment apply) and the process environment.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, key or variable at fault.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::from_sources(text.as_deref(), path, &|k| std::env::var(k).ok())
    }

    /// Builds the configuration from TOML text (if any) and an environment
    /// lookup function, then validates it. `path` is only used in messages.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key or variable at fault.
    pub fn from_sources(
        toml_text: Option<&str>,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig = match toml_text {
            Some(t) => toml::from_str(t).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: describe_toml_error(t, &e),
            })?,
            None => RawConfig::default(),
        };
        let mut cfg = AgentConfig::default();
        let mut plain_src = Source::File;
        let mut url_src = Source::File;

        // File values.
        let mut server_url = raw.server_url;
        if let Some(v) = raw.state_dir {
            cfg.state_dir = v;
        }
        cfg.ca_bundle = raw.ca_bundle;
        cfg.policy_file = raw.policy_file;
        if let Some(v) = raw.dangerous_plaintext {
            cfg.dangerous_plaintext = v;
        }
        let mut siem = (raw.siem_timeout_secs, Source::File);
        let mut connect = (raw.connect_timeout_secs, Source::File);
        let mut frame = (raw.max_frame_bytes, Source::File);
        let mut skew = (raw.clock_skew_secs, Source::File);

        // Environment overrides.
        let var = |key: &str| env(&key_name(key, Source::Env)).filter(|v| !v.is_empty());
        if let Some(v) = var("server_url") {
            server_url = Some(v);
            url_src = Source::Env;
        }
        if let Some(v) = var("state_dir") {
            cfg.state_dir = PathBuf::from(v);
        }
        if let Some(v) = var("ca_bundle") {
            cfg.ca_bundle = Some(PathBuf::from(v));
        }
        if let Some(v) = var("policy_file") {
            cfg.policy_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("dangerous_plaintext") {
            cfg.dangerous_plaintext = parse_bool(&v).ok_or_else(|| {
                ConfigError::invalid(
                    key_name("dangerous_plaintext", Source::Env),
                    "expected true or false",
                )
            })?;
            plain_src = Source::Env;
        }
        for (key, slot) in [
            ("siem_timeout_secs", &mut siem),
            ("connect_timeout_secs", &mut connect),
            ("max_frame_bytes", &mut frame),
            ("clock_skew_secs", &mut skew),
        ] {
            if let Some(v) = var(key) {
                let n = v.trim().parse::<u64>().map_err(|_| {
                    ConfigError::invalid(key_name(key, Source::Env), "expected a whole number")
                })?;
                *slot = (Some(n), Source::Env);
            }
        }

        // Ranges.
        if let (Some(v), src) = siem {
            cfg.siem_timeout =
                Duration::from_secs(check_range("siem_timeout_secs", src, v, 1, 3600)?);
        }
        if let (Some(v), src) = connect {
            cfg.connect_timeout =
                Duration::from_secs(check_range("connect_timeout_secs", src, v, 1, 300)?);
        }
        if let (Some(v), src) = frame {
            let n = check_range("max_frame_bytes", src, v, 4096, 16 * 1024 * 1024)?;
            cfg.max_frame_bytes = usize::try_from(n)
                .map_err(|_| ConfigError::invalid(key_name("max_frame_bytes", src), "too large"))?;
        }
        if let (Some(v), src) = skew {
            let n = check_range("clock_skew_secs", src, v, 0, 3600)?;
            cfg.clock_skew_secs = i64::try_from(n)
                .map_err(|_| ConfigError::invalid(key_name("clock_skew_secs", src), "too large"))?;
        }
        // Proxy: the agent's own key, else the standard variables.
        let own_proxy = match var("proxy_url") {
            Some(v) => Some((v, key_name("proxy_url", Source::Env))),
            None => raw
                .proxy_url
                .filter(|v| !v.trim().is_empty())
                .map(|v| (v, key_name("proxy_url", Source::File))),
        };
        let no_proxy = var("no_proxy").or(raw.no_proxy);
        cfg.proxy = crate::proxy::resolve(own_proxy, no_proxy, &|k| env(k))
            .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;

        if cfg.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                key_name("state_dir", Source::File),
                "must not be empty",
            ));
        }

        // Cross-field: an http:// URL needs the dangerous switch.
        if let Some(s) = server_url {
            let key = key_name("server_url", url_src);
            cfg.server_url = Some(validate_server_url(
                &s,
                cfg.dangerous_plaintext,
                &key,
                plain_src,
            )?);
        }
        Ok(cfg)
    }

    /// Checks a server URL given on the command line or read from the
    /// enrollment record against this configuration (`https`, or `http` with
    /// `dangerous_plaintext`).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `what` (e.g. `--server`).
    pub fn check_server_url(&self, url: &str, what: &str) -> Result<Url, ConfigError> {
        validate_server_url(url, self.dangerous_plaintext, what, Source::File)
    }

    /// The URL `run` connects to: the configured one, else the one stored at enrollment.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] if neither is usable.
    pub fn effective_server_url(&self, stored: &str) -> Result<Url, ConfigError> {
        match &self.server_url {
            Some(u) => Ok(u.clone()),
            None => self.check_server_url(stored, "server_url (stored in enrollment.json)"),
        }
    }
}

/// The parser's message, prefixed with the line and the key it concerns
/// (serde's "invalid type" messages do not name the key).
pub(crate) fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let Some(span) = e.span() else {
        return msg.to_owned();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default();
    match line.split_once('=') {
        Some((key, _)) if !msg.contains(key.trim()) => {
            format!("line {line_no}, key `{}`: {msg}", key.trim())
        }
        _ => format!("line {line_no}: {msg}"),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn check_range(key: &str, src: Source, v: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::invalid(
            key_name(key, src),
            format!("{v} is out of range (allowed {min} to {max})"),
        ));
    }
    Ok(v)
}

fn validate_server_url(
    s: &str,
    dangerous_plaintext: bool,
    key: &str,
    plain_src: Source,
) -> Result<Url, ConfigError> {
    let url = Url::parse(s.trim())
        .map_err(|e| ConfigError::invalid(key, format!("not a valid URL ({e})")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(key, "the URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            "the URL must not carry credentials",
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if dangerous_plaintext => Ok(url),
        "http" => Err(ConfigError::invalid(
            key,
            match plain_src {
                Source::Env => "http:// sends everything in clear; use https://, or set \
                    PICKET_AGENT_DANGEROUS_PLAINTEXT=true for a local test setup"
                    .to_owned(),
                Source::File => "http:// sends everything in clear; use https://, or set \
                    `dangerous_plaintext = true` in the config file (or \
                    PICKET_AGENT_DANGEROUS_PLAINTEXT=true) for a local test setup"
                    .to_owned(),
            },
        )),
        other => Err(ConfigError::invalid(
            key,
            format!("unsupported scheme `{other}` (expected https)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: Option<&str>, env: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AgentConfig::from_sources(toml, Path::new("agent.toml"), &move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    fn err_text(r: Result<AgentConfig, ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn defaults_without_file_or_env() {
        let c = load(None, &[]).unwrap();
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.siem_timeout, Duration::from_secs(30));
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.max_frame_bytes, 1024 * 1024);
        assert_eq!(c.clock_skew_secs, 60);
        assert!(!c.dangerous_plaintext);
        assert!(c.server_url.is_none());
    }

    #[test]
    fn env_overrides_file() {
        let c = load(
            Some("state_dir = \"/a\"\nsiem_timeout_secs = 5\n"),
            &[
                ("PICKET_AGENT_STATE_DIR", "/b"),
                ("PICKET_AGENT_SIEM_TIMEOUT_SECS", "7"),
            ],
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/b"));
        assert_eq!(c.siem_timeout, Duration::from_secs(7));
    }

    #[test]
    fn unknown_key_is_refused_by_name() {
        let e = err_text(load(Some("sever_url = \"https://x\"\n"), &[]));
        assert!(e.contains("sever_url"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = err_text(load(Some("siem_timeout_secs = \"thirty\"\n"), &[]));
        assert!(e.contains("siem_timeout_secs"), "{e}");
    }

    #[test]
    fn out_of_range_names_key_or_variable() {
        let e = err_text(load(Some("siem_timeout_secs = 0\n"), &[]));
        assert!(e.contains("`siem_timeout_secs`"), "{e}");
        let e = err_text(load(None, &[("PICKET_AGENT_MAX_FRAME_BYTES", "10")]));
        assert!(e.contains("`PICKET_AGENT_MAX_FRAME_BYTES`"), "{e}");
        let e = err_text(load(None, &[("PICKET_AGENT_CLOCK_SKEW_SECS", "soon")]));
        assert!(e.contains("`PICKET_AGENT_CLOCK_SKEW_SECS`"), "{e}");
        let e = err_text(load(None, &[("PICKET_AGENT_DANGEROUS_PLAINTEXT", "maybe")]));
        assert!(e.contains("`PICKET_AGENT_DANGEROUS_PLAINTEXT`"), "{e}");
    }

    #[test]
    fn plaintext_url_needs_the_dangerous_switch() {
        let e = err_text(load(Some("server_url = \"http://picket.local\"\n"), &[]));
        assert!(
            e.contains("`server_url`") && e.contains("dangerous_plaintext"),
            "{e}"
        );
        let e = err_text(load(
            None,
            &[("PICKET_AGENT_SERVER_URL", "http://picket.local")],
        ));
        assert!(e.contains("`PICKET_AGENT_SERVER_URL`"), "{e}");
        let c = load(
            Some("server_url = \"http://picket.local\"\ndangerous_plaintext = true\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.server_url.unwrap().scheme(), "http");
        let c = load(Some("server_url = \"https://picket.example\"\n"), &[]).unwrap();
        assert_eq!(c.server_url.unwrap().host_str(), Some("picket.example"));
    }

    #[test]
    fn proxy_comes_from_the_key_or_the_standard_variables() {
        let c = load(
            Some("proxy_url = \"http://u:pw@p.corp:3128\"\nno_proxy = \"picket.local\"\n"),
            &[("HTTPS_PROXY", "http://other:1")],
        )
        .unwrap();
        let p = c.proxy.unwrap();
        assert_eq!(p.display(), "p.corp:3128");
        assert_eq!(p.source(), "proxy_url");
        assert!(!p.applies_to(&Url::parse("https://picket.local").unwrap()));
        let c = load(None, &[("PICKET_AGENT_PROXY_URL", "http://q:8080")]).unwrap();
        assert_eq!(c.proxy.unwrap().source(), "PICKET_AGENT_PROXY_URL");
        let c = load(None, &[("https_proxy", "http://lower:8080")]).unwrap();
        assert_eq!(c.proxy.unwrap().display(), "lower:8080");
        assert!(load(None, &[]).unwrap().proxy.is_none());
        let e = err_text(load(Some("proxy_url = \"https://p:1\"\n"), &[]));
        assert!(e.contains("`proxy_url`"), "{e}");
        let e = err_text(load(None, &[("PICKET_AGENT_PROXY_URL", "nope")]));
        assert!(e.contains("`PICKET_AGENT_PROXY_URL`"), "{e}");
        let e = err_text(load(None, &[("ALL_PROXY", "socks5://s:1")]));
        assert!(e.contains("`ALL_PROXY`"), "{e}");
    }

    #[test]
    fn bad_urls_are_refused() {
        for u in ["not a url", "ftp://x", "https://user:pw@x"] {
            let e = err_text(load(Some(&format!("server_url = \"{u}\"\n")), &[]));
            assert!(e.contains("`server_url`"), "{u}: {e}");
        }
        let c = load(None, &[]).unwrap();
        let e = c
            .check_server_url("http://x", "--server")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`--server`"), "{e}");
    }
}
