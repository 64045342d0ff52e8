//! One-time enrollment: read the token, generate the agent's keys, register
//! them with the server, and pin the server's job-signing key.
//!
//! The pin is checked twice before anything is written: the SHA-256 of the
//! key the server returns must equal the fingerprint inside the token (which
//! reached the installer out of band) and the `key_id` the server claims. A
//! mismatch aborts with no state written: someone between the agent and the
//! server (a TLS-inspecting proxy, a spoofed DNS name) could otherwise make
//! the agent trust their key.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::VerifyingKey;
use picket_proto::{AgentVersion, B64, EnrollRequest, EnrollResponse, EnrollmentToken, Hostname};
use picket_shared::keys::{AgentKeys, fingerprint};
use reqwest::Url;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::config::AgentConfig;
use crate::keyring::{Keyring, PinnedKey};
use crate::ledger::LEDGER_FILE;
use crate::net;
use crate::state::{Enrollment, StateDir};

/// Largest token file accepted (the token itself is about 120 characters).
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Reads the token from a file, or from standard input when `path` is `-`.
/// Surrounding whitespace is ignored; more than [`MAX_TOKEN_BYTES`] is refused.
///
/// # Errors
/// If the source cannot be read, is too large or does not hold a token.
pub fn read_token(path: &Path) -> anyhow::Result<EnrollmentToken> {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_TOKEN_BYTES + 1));
    let limit = (MAX_TOKEN_BYTES + 1) as u64;
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut buf)
            .context("cannot read the enrollment token from standard input")?;
    } else {
        std::fs::File::open(path)
            .with_context(|| format!("cannot open token file {}", path.display()))?
            .take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read token file {}", path.display()))?;
    }
    parse_token_bytes(&buf)
}

fn parse_token_bytes(buf: &[u8]) -> anyhow::Result<EnrollmentToken> {
    if buf.len() > MAX_TOKEN_BYTES {
        bail!(
            "the token input is larger than {MAX_TOKEN_BYTES} bytes: it is not an enrollment token"
        );
    }
    let text = std::str::from_utf8(buf).context("the enrollment token is not UTF-8 text")?;
    let text = text.trim();
    if text.is_empty() {
        bail!("the enrollment token input is empty");
    }
    EnrollmentToken::parse(text).context("invalid enrollment token")
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// Keeps server-supplied text printable and short before showing it.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Turns a failed enrollment request into a clear error: a proxy that
/// wants credentials (HTTP 407) is named as such, with the key or variable
/// the proxy came from; credentials are never part of the message.
fn explain_send_error(e: reqwest::Error, cfg: &AgentConfig, server: &Url) -> anyhow::Error {
    let mut chain = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = cur {
        chain.push_str(&err.to_string());
        chain.push_str(": ");
        cur = err.source();
    }
    let proxy = cfg.proxy.as_ref().filter(|p| p.applies_to(server));
    if let Some(p) = proxy
        && chain.contains("proxy authorization required")
    {
        return anyhow::anyhow!(
            "proxy authentication required (HTTP 407) by the proxy {}: check the user and password in {}",
            p.display(),
            p.source()
        );
    }
    let via = proxy
        .map(|p| format!(" through the proxy {}", p.display()))
        .unwrap_or_default();
    anyhow::Error::new(e).context(format!(
        "cannot reach the server at {}{via}",
        net::display_host(server)
    ))
}

/// This host's name, reduced to the characters the protocol allows
/// (`unknown-host` if nothing usable is left).
fn hostname() -> anyhow::Result<Hostname> {
    let raw = sysinfo::System::host_name().unwrap_or_default();
    let clean: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(Hostname::MAX_LEN)
        .collect();
    Hostname::new(clean)
        .or_else(|_| Hostname::new("unknown-host"))
        .context("cannot form a host name")
}

/// This build's version as the protocol carries it.
///
/// # Errors
/// Only if the crate version has characters the protocol refuses.
pub fn agent_version() -> anyhow::Result<AgentVersion> {
    AgentVersion::new(env!("CARGO_PKG_VERSION"))
        .context("this build's version is not protocol-valid")
}

/// Enrolls this host with `server` using `token` and writes the state
/// directory. Refuses to replace an existing enrollment unless `force`.
///
/// # Errors
/// If the agent is already enrolled, the server refuses (its error code and
/// message are included), or the server's key does not match the token.
pub async fn enroll(
    cfg: &AgentConfig,
    server: &Url,
    token: EnrollmentToken,
    force: bool,
) -> anyhow::Result<Enrollment> {
    let state = StateDir::new(&cfg.state_dir);
    if state.is_enrolled() && !force {
        let existing = state.load_enrollment().ok();
        bail!(
            "this host is already enrolled{} (state in {}); pass --force to replace that enrollment",
            existing
                .map(|e| format!(" as agent {}", e.agent_id))
                .unwrap_or_default(),
            state.path().display()
        );
    }
    if server.scheme() == "http" {
        tracing::warn!(
            "DANGEROUS: enrolling over plain http://; the enrollment token crosses the network \
             unencrypted (dangerous_plaintext is set)"
        );
    }

    let keys = AgentKeys::generate().context("cannot generate the agent keys")?;
    let x_pub = keys.x25519_public();
    let e_pub = keys.ed25519_public();
    let proof = keys.sign(&EnrollRequest::proof_bytes(&token.secret, &x_pub, &e_pub));
    let req = EnrollRequest {
        token_secret: B64(token.secret),
        hostname: hostname()?,
        version: agent_version()?,
        x25519_public: B64(x_pub),
        ed25519_public: B64(e_pub),
        proof: B64(proof),
    };

    let tls = net::tls_config(cfg.ca_bundle.as_deref())?;
    let http = net::server_http_client(&tls, cfg.connect_timeout, cfg.proxy.as_ref(), server)?;
    let url = net::endpoint(server, net::ENROLL_PATH)?;
    let resp = http
        .post(url)
        .json(&req)
        .send()
        .await
        .map_err(|e| explain_send_error(e, cfg, server))?;
    drop(req);
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .context("the server's answer was cut off")?;
    if !status.is_success() {
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => bail!(
                "the server refused the enrollment ({}): {}",
                printable(&b.error.code, 64),
                printable(&b.error.message, 300)
            ),
            Err(_) => bail!("the server refused the enrollment with HTTP {status}"),
        }
    }
    let answer: EnrollResponse =
        serde_json::from_slice(&body).context("the server's enrollment answer is malformed")?;

    let server_key = VerifyingKey::from_bytes(&answer.server_signing_key.0)
        .context("the server's signing key is not a valid Ed25519 public key")?;
    let actual = fingerprint(&server_key);
    // A token issued before a server key rotation pins an older key: the
    // current key is accepted only if the chain the server sent leads to it
    // from the token's key.
    let ring = if actual == token.fingerprint && actual == answer.key_id {
        None
    } else {
        chain_from_token(&token.fingerprint, &answer, actual)
    };
    if (actual != token.fingerprint && ring.is_none()) || actual != answer.key_id {
        bail!(
            "server key does not match the fingerprint in the token: possible interception \
             (token pins {}, server key is {}, server claims {}); nothing was written",
            token.fingerprint,
            actual,
            answer.key_id
        );
    }

    let enrollment = Enrollment {
        agent_id: answer.agent_id,
        tenant_id: answer.tenant_id,
        server_url: server.to_string(),
        server_signing_key: answer.server_signing_key,
        key_id: actual,
    };
    state.create()?;
    if force {
        retire_previous(&state)?;
    }
    state.write_keys(&keys)?;
    let ring_path = state.path().join(crate::keyring::SERVER_KEYS_FILE);
    match &ring {
        Some(r) => r.save(state.path())?,
        // A keyring left by a previous enrollment (`--force`) is stale.
        None if ring_path.exists() => std::fs::remove_file(&ring_path)
            .with_context(|| format!("cannot remove {}", ring_path.display()))?,
        None => {}
    }
    state.write_enrollment(&enrollment)?;
    Ok(enrollment)
}

/// The trusted keys when the token pins a key older than the server's
/// current one: the chain root must be the token's key and the chain must
/// reach `current`. `None` if it does not.
fn chain_from_token(
    pinned: &picket_proto::KeyFingerprint,
    answer: &EnrollResponse,
    current: picket_proto::KeyFingerprint,
) -> Option<Keyring> {
    let root = answer.chain_root?;
    let root_key = VerifyingKey::from_bytes(&root.0).ok()?;
    if fingerprint(&root_key) != *pinned {
        return None;
    }
    let mut ring = Keyring {
        keys: vec![PinnedKey {
            key_id: *pinned,
            public: root,
            valid_until: None,
        }],
    };
    ring.walk(&answer.key_chain);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    ring.is_valid(&current, now).then(|| {
        tracing::info!(token_key = %pinned, current = %current, "the server rotated its signing key since the token was issued; followed its key chain");
        ring
    })
}

/// On `--force`, moves the previous identity's ledger aside (its sequence
/// numbers belong to the old agent id) and clears a revocation marker.
fn retire_previous(state: &StateDir) -> anyhow::Result<()> {
    let ledger = state.path().join(LEDGER_FILE);
    if ledger.exists() {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let aside = state.path().join(format!("{LEDGER_FILE}.replaced-{stamp}"));
        std::fs::rename(&ledger, &aside)
            .with_context(|| format!("cannot move the old ledger to {}", aside.display()))?;
        tracing::info!(path = %aside.display(), "kept the previous agent's job ledger");
    }
    let marker = state.path().join(crate::state::REVOKED_FILE);
    if marker.exists() {
        std::fs::remove_file(&marker)
            .with_context(|| format!("cannot remove {}", marker.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_input_bounds() {
        let t = EnrollmentToken {
            secret: [1; 32],
            fingerprint: picket_proto::KeyFingerprint([2; 32]),
        };
        let text = format!("  {}\n", t.to_text());
        assert_eq!(parse_token_bytes(text.as_bytes()).unwrap(), t);
        let e = format!("{:#}", parse_token_bytes(&[b'a'; 1025]).unwrap_err());
        assert!(e.contains("larger than 1024"), "{e}");
        let e = format!("{:#}", parse_token_bytes(b"\n").unwrap_err());
        assert!(e.contains("empty"), "{e}");
        let e = format!("{:#}", parse_token_bytes(b"pkt1.zz").unwrap_err());
        assert!(e.contains("invalid enrollment token"), "{e}");
    }

    #[test]
    fn token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let t = EnrollmentToken {
            secret: [5; 32],
            fingerprint: picket_proto::KeyFingerprint([6; 32]),
        };
        let p = dir.path().join("token");
        std::fs::write(&p, format!("{}\n", t.to_text())).unwrap();
        assert_eq!(read_token(&p).unwrap(), t);
        let e = format!("{:#}", read_token(&dir.path().join("nope")).unwrap_err());
        assert!(e.contains("cannot open token file"), "{e}");
    }

    #[test]
    fn hostname_and_version_are_protocol_valid() {
        assert!(!hostname().unwrap().as_str().is_empty());
        assert_eq!(agent_version().unwrap().as_str(), env!("CARGO_PKG_VERSION"));
        assert_eq!(printable("a\nb\u{1b}[31m", 10), "ab[31m");
    }
}
