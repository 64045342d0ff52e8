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
    log_format: Option<String>,
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
}

/// TLS served by the server itself (rustls). Absent: plain HTTP, for a TLS-terminating proxy in front.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
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
    /// `agents.admission_rate_per_sec` (default 200): new agent connections
    /// admitted per second on average (the refill rate of the admission token
    /// bucket). Over the limit a connection is answered `RetryAfter` and closed.
    pub admission_rate_per_sec: u32,
    /// `agents.admission_burst` (default 400): connections admitted at once
    /// before the rate applies (the bucket's capacity), e.g. after a restart.
    pub admission_burst: u32,
    /// Lifetime of a sealed job: an agent refuses it after this.
    pub job_ttl_secs: u64,
    /// Log format.
    pub log_format: LogFormat,
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
        let admission_rate_per_sec = agents.admission_rate_per_sec.unwrap_or(200);
        if !(1..=100_000).contains(&admission_rate_per_sec) {
            return Err(invalid(
                "agents.admission_rate_per_sec",
                "expected 1 to 100000 connections per second",
            ));
        }
        let admission_burst = agents.admission_burst.unwrap_or(400);
        if !(1..=1_000_000).contains(&admission_burst) {
            return Err(invalid(
                "agents.admission_burst",
                "expected 1 to 1000000 connections",
            ));
        }
        let job_ttl_secs = file.jobs.and_then(|j| j.ttl_secs).unwrap_or(15 * 60);
        if !(60..=7 * 24 * 3600).contains(&job_ttl_secs) {
            return Err(invalid("jobs.ttl_secs", "expected 60 to 604800 (7 days)"));
        }
        let log_format = match env.var("PICKET_LOG_FORMAT").or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => return Err(invalid("log_format", "expected \"text\" or \"json\"")),
        };

        Ok(ServerConfig {
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
            log_format,
        })
    }
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

fn read_secret_file(key: &str, path: &Path) -> Result<Zeroizing<String>, ConfigError> {
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
        assert_eq!((c.admission_rate_per_sec, c.admission_burst), (200, 400));
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
    fn redacts_database_password() {
        assert_eq!(
            redact_url("postgres://u:pw@h/db"),
            "postgres://[redacted]@h/db"
        );
    }
}
