//! Typed server configuration: `server.toml` plus `PICKET_*` environment
//! overrides, validated once at start-up. Every error names the key or the
//! variable at fault; nothing here panics on bad input.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown/mistyped key.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A key or environment variable holds an invalid value.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key (`master_secret`) or variable (`PICKET_MASTER_SECRET`).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The file's shape. Every field is optional so environment variables can supply it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    public_url: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    master_secret: Option<String>,
    master_secret_file: Option<PathBuf>,
    #[serde(default)]
    tls: Option<TlsFile>,
    #[serde(default)]
    agents: Option<AgentsFile>,
    #[serde(default)]
    jobs: Option<JobsFile>,
    #[serde(default)]
    audit: Option<AuditFile>,
    log_format: Option<String>,
    mode: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    #[serde(default)]
    sessions: Option<SessionsFile>,
    #[serde(default)]
    login: Option<LoginFile>,
    metrics_token_file: Option<PathBuf>,
    replica_id: Option<String>,
    replica_sweep_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsFile {
    idle_timeout_secs: Option<i64>,
    absolute_timeout_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginFile {
    account_failures_before_delay: Option<u32>,
    ip_failures_before_delay: Option<u32>,
    max_delay_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert_path: PathBuf,
    key_path: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    heartbeat_secs: Option<u32>,
    health_secs: Option<u32>,
    max_frame_bytes: Option<u32>,
    enrollment_token_ttl_secs: Option<u64>,
    admission_rate_per_sec: Option<u32>,
    admission_burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsFile {
    ttl_secs: Option<u64>,
    drift_check_interval_secs: Option<u32>,
    rule_health_interval_secs: Option<u32>,
    preview_on_request: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditFile {
    checkpoint_secs: Option<u32>,
    retention_days: Option<u32>,
    #[serde(default)]
    syslog: Option<SyslogFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SyslogFile {
    address: Option<String>,
    tls: Option<bool>,
    server_name: Option<String>,
    ca_bundle: Option<PathBuf>,
    queue: Option<u32>,
}

/// Streaming of audit events to a syslog receiver (`[audit.syslog]`).
#[derive(Debug, Clone)]
pub struct SyslogConfig {
    /// `address` / `PICKET_AUDIT_SYSLOG_ADDRESS`: the receiver, `host:port` (TCP).
    pub address: String,
    /// `tls` / `PICKET_AUDIT_SYSLOG_TLS` (default false): TLS 1.2+ to the receiver (RFC 5425).
    pub tls: bool,
    /// `server_name`: the name the receiver's certificate must carry
    /// (default: the host part of `address`).
    pub server_name: String,
    /// `ca_bundle` / `PICKET_AUDIT_SYSLOG_CA_BUNDLE`: extra PEM roots
    /// trusted for the receiver (besides the public web roots).
    pub ca_bundle: Option<PathBuf>,
    /// `queue` (default 10000, 1 to 1000000): events held in memory while
    /// the receiver is down; beyond it the streamer stops reading the log
    /// (the database is the backlog) until the receiver is back.
    pub queue: u32,
}

/// The audit log's settings (`[audit]`).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `audit.checkpoint_secs` / `PICKET_AUDIT_CHECKPOINT_SECS` (default 60,
    /// 1 to 60): how often the checkpointer signs the logs that grew.
    pub checkpoint_secs: u32,
    /// `audit.retention_days` / `PICKET_AUDIT_RETENTION_DAYS` (default 400,
    /// 1 to 36500): event bodies older than this may be pruned by
    /// `picket-server admin audit prune`; leaf hashes are kept for ever.
    pub retention_days: u32,
    /// Streaming to a syslog receiver, when configured.
    pub syslog: Option<SyslogConfig>,
}

/// TLS served by the server itself (rustls). Absent: plain HTTP, for a TLS-terminating proxy in front.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// How accounts come to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One organisation: the first registration claims the instance, then
    /// registration is closed for good and everyone else is invited.
    SelfHosted,
    /// Hosted service: sign-up stays open, each sign-up creates a new tenant.
    Saas,
}

/// A network in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: std::net::IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix` or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The URL agents and browsers use to reach this server (shown in enrollment instructions).
    pub public_url: String,
    /// Directory for the SQLite database and other local state.
    pub data_dir: PathBuf,
    /// Database URL: `sqlite://...` (default: `<data_dir>/picket.db`) or `postgres://...`.
    pub database_url: String,
    /// Root of the key hierarchy; never stored in the database.
    pub master_secret: Zeroizing<Vec<u8>>,
    /// TLS served by the server itself, when configured.
    pub tls: Option<TlsConfig>,
    /// Seconds between pings to each agent.
    pub heartbeat_secs: u32,
    /// Seconds between agent health reports.
    pub health_secs: u32,
    /// Largest WebSocket frame accepted from or sent to an agent.
    pub max_frame_bytes: u32,
    /// Lifetime of a new enrollment token.
    pub enrollment_token_ttl_secs: u64,
    /// `agents.admission_rate_per_sec` (default 1000): new agent connections
    /// admitted per second on average (the refill rate of the admission token
    /// bucket). Over the limit a connection is answered `RetryAfter` and closed.
    pub admission_rate_per_sec: u32,
    /// `agents.admission_burst` (default 2000): connections admitted at once
    /// before the rate applies (the bucket's capacity), e.g. after a restart.
    pub admission_burst: u32,
    /// Lifetime of a sealed job: an agent refuses it after this.
    pub job_ttl_secs: u64,
    /// `jobs.drift_check_interval_secs` / `PICKET_DRIFT_CHECK_INTERVAL_SECS`
    /// (default 1800): how often every connection with deployed rules gets a
    /// `drift_check` job.
    pub drift_check_interval_secs: u32,
    /// `jobs.rule_health_interval_secs` / `PICKET_RULE_HEALTH_INTERVAL_SECS`
    /// (default 900): how often every connection with deployed rules gets a
    /// `rule_health` job, whose window is this long (at least 60 s).
    pub rule_health_interval_secs: u32,
    /// `jobs.preview_on_request` / `PICKET_PREVIEW_ON_REQUEST` (default
    /// `false`): send a `preview_count` job (the expected alert volume) when
    /// a deployment request is created or changed, not only when asked.
    pub preview_on_request: bool,
    /// The audit log.
    pub audit: AuditConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// `mode`: self-hosted (claim once, then invitations) or SaaS (open sign-up).
    pub mode: Mode,
    /// `trusted_proxies`: peers whose `X-Forwarded-For` is believed for the client IP.
    pub trusted_proxies: Vec<Cidr>,
    /// `sessions.idle_timeout_secs`: a session unused this long ends.
    pub session_idle_secs: i64,
    /// `sessions.absolute_timeout_secs`: a session ends this long after sign-in, used or not.
    pub session_absolute_secs: i64,
    /// `login.account_failures_before_delay`: failed logins for one email before it is slowed down.
    pub login_account_failures: u32,
    /// `login.ip_failures_before_delay`: failed logins from one client IP before it is slowed down.
    pub login_ip_failures: u32,
    /// `login.max_delay_secs`: the longest wait imposed after repeated failures.
    pub login_max_delay_secs: u64,
    /// `metrics_token_file` / `PICKET_METRICS_TOKEN_FILE`: a file holding the
    /// bearer token a scraper must send to `GET /metrics` (at least 16
    /// characters). Unset: `/metrics` answers 403 `metrics_disabled`.
    pub metrics_token: Option<Zeroizing<String>>,
    /// `replica_id` / `PICKET_REPLICA_ID` (default: the host name): names this
    /// process among the replicas sharing one database, in metrics and logs.
    pub replica_id: String,
    /// `replica_sweep_secs` (default 10, 1 to 3600): on PostgreSQL, how often
    /// each replica sweeps the outbox for jobs whose cross-replica wake-up
    /// was lost (the safety net under `LISTEN/NOTIFY`).
    pub replica_sweep_secs: u64,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact_url(&self.database_url))
            .field("master_secret", &"[redacted]")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Hides a password in a database URL for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://[redacted]@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Where environment variables come from (the process, or a map in tests).
pub trait Env {
    /// The variable's value, if set.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// Minimum master secret length in bytes.
pub const MIN_MASTER_SECRET_BYTES: usize = 32;

impl ServerConfig {
    /// Loads `path` (if it exists; a missing file is fine when `required` is false)
    /// and applies environment overrides, then validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key or variable at fault.
    pub fn load(path: Option<&Path>, required: bool, env: &dyn Env) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(text) => {
                    toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                        path: p.to_owned(),
                        message: e.to_string(),
                    })?
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                    FileConfig::default()
                }
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: p.to_owned(),
                        source,
                    });
                }
            },
            None => FileConfig::default(),
        };
        Self::from_parts(file, env)
    }

    fn from_parts(file: FileConfig, env: &dyn Env) -> Result<Self, ConfigError> {
        let listen_s = env
            .var("PICKET_LISTEN")
            .map(|v| ("PICKET_LISTEN", v))
            .or(file.listen.map(|v| ("listen", v)))
            .unwrap_or(("listen", "127.0.0.1:8080".to_owned()));
        let listen: SocketAddr = listen_s
            .1
            .parse()
            .map_err(|_| invalid(listen_s.0, "expected host:port, e.g. 0.0.0.0:8443"))?;

        let data_dir = env
            .var("PICKET_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("picket-data"));

        let database_url = match env.var("PICKET_DATABASE_URL").or(file.database_url) {
            Some(u)
                if u.starts_with("sqlite:")
                    || u.starts_with("postgres://")
                    || u.starts_with("postgresql://") =>
            {
                u
            }
            Some(_) => {
                return Err(invalid(
                    "database_url",
                    "expected a sqlite: or postgres:// URL",
                ));
            }
            None => format!("sqlite://{}?mode=rwc", data_dir.join("picket.db").display()),
        };

        let master_secret = load_master_secret(env, file.master_secret, file.master_secret_file)?;

        let tls = match (
            env.var("PICKET_TLS_CERT"),
            env.var("PICKET_TLS_KEY"),
            file.tls,
        ) {
            (Some(c), Some(k), _) => Some(TlsConfig {
                cert_path: c.into(),
                key_path: k.into(),
            }),
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(invalid(
                    "PICKET_TLS_CERT",
                    "PICKET_TLS_CERT and PICKET_TLS_KEY must be set together",
                ));
            }
            (None, None, Some(t)) => Some(TlsConfig {
                cert_path: t.cert_path,
                key_path: t.key_path,
            }),
            (None, None, None) => None,
        };

        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = env
            .var("PICKET_PUBLIC_URL")
            .or(file.public_url)
            .unwrap_or_else(|| format!("{scheme}://{listen}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(invalid("public_url", "expected an http:// or https:// URL"));
        }
        let public_url = public_url.trim_end_matches('/').to_owned();

        let agents = file.agents.unwrap_or_default();
        let heartbeat_secs = agents.heartbeat_secs.unwrap_or(30);
        if !(1..=3600).contains(&heartbeat_secs) {
            return Err(invalid("agents.heartbeat_secs", "expected 1 to 3600"));
        }
        let health_secs = agents.health_secs.unwrap_or(30);
        if !(1..=3600).contains(&health_secs) {
            return Err(invalid("agents.health_secs", "expected 1 to 3600"));
        }
        let max_frame_bytes = agents.max_frame_bytes.unwrap_or(1024 * 1024);
        if !(16 * 1024..=16 * 1024 * 1024).contains(&max_frame_bytes) {
            return Err(invalid(
                "agents.max_frame_bytes",
                "expected 16384 to 16777216",
            ));
        }
        let enrollment_token_ttl_secs = agents.enrollment_token_ttl_secs.unwrap_or(24 * 3600);
        if !(60..=30 * 24 * 3600).contains(&enrollment_token_ttl_secs) {
            return Err(invalid(
                "agents.enrollment_token_ttl_secs",
                "expected 60 to 2592000 (30 days)",
            ));
        }
        // Admission control: a token bucket on new agent connections, so a
        // fleet reconnecting at once (server restart, network blip) is spread
        // out with `RetryAfter` instead of overloading the database.
        let admission_rate_per_sec = agents.admission_rate_per_sec.unwrap_or(1000);
        if !(1..=100_000).contains(&admission_rate_per_sec) {
            return Err(invalid(
                "agents.admission_rate_per_sec",
                "expected 1 to 100000 connections per second",
            ));
        }
        let admission_burst = agents.admission_burst.unwrap_or(2000);
        if !(1..=1_000_000).contains(&admission_burst) {
            return Err(invalid(
                "agents.admission_burst",
                "expected 1 to 1000000 connections",
            ));
        }
        let drift_check_interval_secs = env_u32(env, "PICKET_DRIFT_CHECK_INTERVAL_SECS")?
            .or(file.jobs.as_ref().and_then(|j| j.drift_check_interval_secs))
            .unwrap_or(30 * 60);
        if !(5..=7 * 24 * 3600).contains(&drift_check_interval_secs) {
            return Err(invalid(
                "jobs.drift_check_interval_secs",
                "expected 5 to 604800 (7 days)",
            ));
        }
        let rule_health_interval_secs = env_u32(env, "PICKET_RULE_HEALTH_INTERVAL_SECS")?
            .or(file.jobs.as_ref().and_then(|j| j.rule_health_interval_secs))
            .unwrap_or(15 * 60);
        if !(5..=7 * 24 * 3600).contains(&rule_health_interval_secs) {
            return Err(invalid(
                "jobs.rule_health_interval_secs",
                "expected 5 to 604800 (7 days)",
            ));
        }
        let preview_on_request = match env.var("PICKET_PREVIEW_ON_REQUEST") {
            Some(v) => match v.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(invalid(
                        "PICKET_PREVIEW_ON_REQUEST",
                        "expected true or false",
                    ));
                }
            },
            None => file
                .jobs
                .as_ref()
                .and_then(|j| j.preview_on_request)
                .unwrap_or(false),
        };
        let job_ttl_secs = file.jobs.and_then(|j| j.ttl_secs).unwrap_or(15 * 60);
        if !(60..=7 * 24 * 3600).contains(&job_ttl_secs) {
            return Err(invalid("jobs.ttl_secs", "expected 60 to 604800 (7 days)"));
        }
        let audit_file = file.audit.unwrap_or_default();
        let checkpoint_secs = env_u32(env, "PICKET_AUDIT_CHECKPOINT_SECS")?
            .or(audit_file.checkpoint_secs)
            .unwrap_or(60);
        if !(1..=60).contains(&checkpoint_secs) {
            return Err(invalid(
                "audit.checkpoint_secs",
                "expected 1 to 60 (a grown log is signed at least every minute)",
            ));
        }
        let retention_days = env_u32(env, "PICKET_AUDIT_RETENTION_DAYS")?
            .or(audit_file.retention_days)
            .unwrap_or(400);
        if !(1..=36_500).contains(&retention_days) {
            return Err(invalid("audit.retention_days", "expected 1 to 36500"));
        }
        let syslog_file = audit_file.syslog.unwrap_or_default();
        let syslog = match env
            .var("PICKET_AUDIT_SYSLOG_ADDRESS")
            .map(|v| ("PICKET_AUDIT_SYSLOG_ADDRESS", v))
            .or(syslog_file.address.map(|v| ("audit.syslog.address", v)))
        {
            None => None,
            Some((key, address)) => {
                let host = address
                    .rsplit_once(':')
                    .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                    .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                    .ok_or_else(|| invalid(key, "expected host:port, e.g. siem.corp:6514"))?;
                let tls = match env.var("PICKET_AUDIT_SYSLOG_TLS").as_deref() {
                    Some("true" | "1") => true,
                    Some("false" | "0") => false,
                    Some(_) => {
                        return Err(invalid("PICKET_AUDIT_SYSLOG_TLS", "expected true or false"));
                    }
                    None => syslog_file.tls.unwrap_or(false),
                };
                let queue = syslog_file.queue.unwrap_or(10_000);
                if !(1..=1_000_000).contains(&queue) {
                    return Err(invalid("audit.syslog.queue", "expected 1 to 1000000"));
                }
                Some(SyslogConfig {
                    address,
                    tls,
                    server_name: syslog_file.server_name.unwrap_or(host),
                    ca_bundle: env
                        .var("PICKET_AUDIT_SYSLOG_CA_BUNDLE")
                        .map(PathBuf::from)
                        .or(syslog_file.ca_bundle),
                    queue,
                })
            }
        };
        let log_format = match env.var("PICKET_LOG_FORMAT").or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid("log_format", "expected \"text\" or \"json\"")),
        };

        let mode = match env.var("PICKET_MODE").or(file.mode).as_deref() {
            None | Some("self_hosted") => Mode::SelfHosted,
            Some("saas") => Mode::Saas,
            Some(_) => return Err(invalid("mode", "expected \"self_hosted\" or \"saas\"")),
        };
        let proxies: Vec<String> = match env.var("PICKET_TRUSTED_PROXIES") {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            None => file.trusted_proxies.unwrap_or_default(),
        };
        let mut trusted_proxies = Vec::with_capacity(proxies.len());
        for p in &proxies {
            trusted_proxies.push(Cidr::parse(p).ok_or_else(|| {
                invalid(
                    "trusted_proxies",
                    format!("{p:?} is not an address or CIDR network (e.g. 10.0.0.0/8)"),
                )
            })?);
        }
        let sessions = file.sessions.unwrap_or_default();
        let session_idle_secs = sessions.idle_timeout_secs.unwrap_or(3600);
        if !(60..=30 * 24 * 3600).contains(&session_idle_secs) {
            return Err(invalid(
                "sessions.idle_timeout_secs",
                "expected 60 to 2592000 (30 days)",
            ));
        }
        let session_absolute_secs = sessions.absolute_timeout_secs.unwrap_or(12 * 3600);
        if !(60..=90 * 24 * 3600).contains(&session_absolute_secs) {
            return Err(invalid(
                "sessions.absolute_timeout_secs",
                "expected 60 to 7776000 (90 days)",
            ));
        }
        if session_idle_secs > session_absolute_secs {
            return Err(invalid(
                "sessions.idle_timeout_secs",
                "must not exceed sessions.absolute_timeout_secs",
            ));
        }
        let login = file.login.unwrap_or_default();
        let login_account_failures = login.account_failures_before_delay.unwrap_or(5);
        if !(1..=1000).contains(&login_account_failures) {
            return Err(invalid(
                "login.account_failures_before_delay",
                "expected 1 to 1000",
            ));
        }
        let login_ip_failures = login.ip_failures_before_delay.unwrap_or(20);
        if !(1..=100_000).contains(&login_ip_failures) {
            return Err(invalid(
                "login.ip_failures_before_delay",
                "expected 1 to 100000",
            ));
        }
        let login_max_delay_secs = login.max_delay_secs.unwrap_or(900);
        if !(1..=86_400).contains(&login_max_delay_secs) {
            return Err(invalid("login.max_delay_secs", "expected 1 to 86400"));
        }

        let metrics_token = match env
            .var("PICKET_METRICS_TOKEN_FILE")
            .map(|v| ("PICKET_METRICS_TOKEN_FILE", PathBuf::from(v)))
            .or(file.metrics_token_file.map(|p| ("metrics_token_file", p)))
        {
            None => None,
            Some((key, path)) => {
                let text = read_secret_file(key, &path)?;
                let token = Zeroizing::new(text.trim().to_owned());
                if token.len() < 16 || !token.chars().all(|c| c.is_ascii_graphic()) {
                    return Err(invalid(
                        key,
                        "expected a token of at least 16 printable ASCII characters, without spaces",
                    ));
                }
                Some(token)
            }
        };
        let replica_id = match env
            .var("PICKET_REPLICA_ID")
            .map(|v| ("PICKET_REPLICA_ID", v))
            .or(file.replica_id.map(|v| ("replica_id", v)))
        {
            Some((key, v)) => {
                if !valid_replica_id(&v) {
                    return Err(invalid(
                        key,
                        "expected 1 to 64 characters among A-Z a-z 0-9 . _ -",
                    ));
                }
                v
            }
            None => default_replica_id(),
        };

        let replica_sweep_secs = file.replica_sweep_secs.unwrap_or(10);
        if !(1..=3600).contains(&replica_sweep_secs) {
            return Err(invalid("replica_sweep_secs", "expected 1 to 3600"));
        }

        Ok(ServerConfig {
            metrics_token,
            replica_id,
            replica_sweep_secs,
            mode,
            trusted_proxies,
            session_idle_secs,
            session_absolute_secs,
            login_account_failures,
            login_ip_failures,
            login_max_delay_secs,
            listen,
            public_url,
            data_dir,
            database_url,
            master_secret,
            tls,
            heartbeat_secs,
            health_secs,
            max_frame_bytes,
            enrollment_token_ttl_secs,
            admission_rate_per_sec,
            admission_burst,
            job_ttl_secs,
            drift_check_interval_secs,
            rule_health_interval_secs,
            preview_on_request,
            audit: AuditConfig {
                checkpoint_secs,
                retention_days,
                syslog,
            },
            log_format,
        })
    }
}

/// A replica id is a metrics label and a log field: short and plain.
fn valid_replica_id(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The host name (Linux), or `local` when it cannot be read or is not a valid id.
fn default_replica_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| valid_replica_id(h))
        .unwrap_or_else(|| "local".to_owned())
}

/// An optional numeric environment variable.
fn env_u32(env: &dyn Env, key: &str) -> Result<Option<u32>, ConfigError> {
    env.var(key)
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .map_err(|_| invalid(key, "expected a whole number"))
        })
        .transpose()
}

/// The master secret is given as base64 (standard or URL-safe) or hex, inline
/// (`master_secret` / `PICKET_MASTER_SECRET`) or in a file
/// (`master_secret_file` / `PICKET_MASTER_SECRET_FILE`), and must decode to at
/// least 32 bytes.
fn load_master_secret(
    env: &dyn Env,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let (key, text) = if let Some(v) = env.var("PICKET_MASTER_SECRET") {
        ("PICKET_MASTER_SECRET", Zeroizing::new(v))
    } else if let Some(p) = env.var("PICKET_MASTER_SECRET_FILE").map(PathBuf::from) {
        (
            "PICKET_MASTER_SECRET_FILE",
            read_secret_file("PICKET_MASTER_SECRET_FILE", &p)?,
        )
    } else if let Some(v) = inline {
        ("master_secret", Zeroizing::new(v))
    } else if let Some(p) = file {
        (
            "master_secret_file",
            read_secret_file("master_secret_file", &p)?,
        )
    } else {
        return Err(invalid(
            "master_secret",
            "required: set master_secret_file (or PICKET_MASTER_SECRET_FILE) to a file holding at least 32 random bytes in base64, e.g. from `openssl rand -base64 48`",
        ));
    };
    decode_master_secret(key, &text)
}

/// Decodes a master secret written as base64 (standard or URL-safe) or hex,
/// at least [`MIN_MASTER_SECRET_BYTES`] long.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key`.
pub fn decode_master_secret(key: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let t = text.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
        .or_else(|_| hex::decode(t))
        .map_err(|_| invalid(key, "expected base64 or hex"))?;
    let decoded = Zeroizing::new(decoded);
    if decoded.len() < MIN_MASTER_SECRET_BYTES {
        return Err(invalid(
            key,
            format!(
                "decodes to {} bytes; at least {MIN_MASTER_SECRET_BYTES} are required",
                decoded.len()
            ),
        ));
    }
    Ok(decoded)
}

/// Reads a secret file (at most 4 KiB).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key`.
pub fn read_secret_file(key: &str, path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > 4096 {
        return Err(invalid(
            key,
            format!("{} is larger than 4 KiB", path.display()),
        ));
    }
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

    #[test]
    fn missing_master_secret_names_the_key() {
        let e = ServerConfig::load(None, false, &env(&[])).unwrap_err();
        assert!(e.to_string().starts_with("master_secret: required"), "{e}");
    }

    #[test]
    fn short_master_secret_is_refused_with_its_length() {
        let e = ServerConfig::load(None, false, &env(&[("PICKET_MASTER_SECRET", "c2hvcnQ=")]))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "PICKET_MASTER_SECRET: decodes to 5 bytes; at least 32 are required"
        );
    }

    #[test]
    fn defaults_and_env_overrides() {
        let c = ServerConfig::load(
            None,
            false,
            &env(&[
                ("PICKET_MASTER_SECRET", SECRET),
                ("PICKET_LISTEN", "127.0.0.1:0"),
                ("PICKET_DATA_DIR", "/tmp/x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.database_url, "sqlite:///tmp/x/picket.db?mode=rwc");
        assert_eq!(c.job_ttl_secs, 900);
        assert_eq!((c.admission_rate_per_sec, c.admission_burst), (1000, 2000));
        assert!(!format!("{c:?}").contains(SECRET));
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.toml");
        std::fs::write(&p, "listn = \"0.0.0.0:1\"\n").unwrap();
        let e = ServerConfig::load(Some(&p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)]))
            .unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = ServerConfig::load(
            None,
            false,
            &env(&[("PICKET_MASTER_SECRET", SECRET), ("PICKET_LISTEN", "nope")]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("PICKET_LISTEN:"), "{e}");
        let e = ServerConfig::load(
            None,
            false,
            &env(&[
                ("PICKET_MASTER_SECRET", SECRET),
                ("PICKET_DATABASE_URL", "mysql://x"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("database_url:"), "{e}");
    }

    #[test]
    fn admission_settings_are_read_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.toml");
        std::fs::write(
            &p,
            "[agents]\nadmission_rate_per_sec = 5\nadmission_burst = 7\n",
        )
        .unwrap();
        let c =
            ServerConfig::load(Some(&p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)])).unwrap();
        assert_eq!((c.admission_rate_per_sec, c.admission_burst), (5, 7));
        std::fs::write(&p, "[agents]\nadmission_rate_per_sec = 0\n").unwrap();
        let e = ServerConfig::load(Some(&p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)]))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("agents.admission_rate_per_sec:"),
            "{e}"
        );
        std::fs::write(&p, "[agents]\nadmission_burst = 0\n").unwrap();
        let e = ServerConfig::load(Some(&p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)]))
            .unwrap_err();
        assert!(e.to_string().starts_with("agents.admission_burst:"), "{e}");
    }

    #[test]
    fn access_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("server.toml");
        std::fs::write(
            &p,
            "mode = \"saas\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[sessions]\nidle_timeout_secs = 600\nabsolute_timeout_secs = 7200\n",
        )
        .unwrap();
        let c =
            ServerConfig::load(Some(&p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)])).unwrap();
        assert_eq!(c.mode, Mode::Saas);
        assert_eq!((c.session_idle_secs, c.session_absolute_secs), (600, 7200));
        assert!(c.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!c.trusted_proxies[0].contains("11.1.2.3".parse().unwrap()));
        assert!(c.trusted_proxies[1].contains("::1".parse().unwrap()));
        std::fs::write(&p, "trusted_proxies = [\"10.0.0.0/33\"]\n").unwrap();
        let e = ServerConfig::load(Some(&p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)]))
            .unwrap_err();
        assert!(e.to_string().starts_with("trusted_proxies:"), "{e}");
        std::fs::write(&p, "mode = \"open\"\n").unwrap();
        let e = ServerConfig::load(Some(&p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)]))
            .unwrap_err();
        assert!(e.to_string().starts_with("mode:"), "{e}");
        std::fs::write(
            &p,
            "[sessions]\nidle_timeout_secs = 7200\nabsolute_timeout_secs = 3600\n",
        )
        .unwrap();
        let e = ServerConfig::load(Some(&p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)]))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("sessions.idle_timeout_secs:"),
            "{e}"
        );
    }

    #[test]
    fn the_commented_example_file_loads() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config-examples/server.toml"
        ));
        let c =
            ServerConfig::load(Some(p), true, &env(&[("PICKET_MASTER_SECRET", SECRET)])).unwrap();
        assert_eq!(c.mode, Mode::SelfHosted);
        assert_eq!(
            (c.session_idle_secs, c.session_absolute_secs),
            (3600, 43200)
        );
        assert_eq!(
            (
                c.login_account_failures,
                c.login_ip_failures,
                c.login_max_delay_secs
            ),
            (5, 20, 900)
        );
    }

    #[test]
    fn redacts_database_password() {
        assert_eq!(
            redact_url("postgres://u:pw@h/db"),
            "postgres://[redacted]@h/db"
        );
    }
}
