//! Exports of one log by time range, and the offline check of a JSON Lines
//! export.
//!
//! - **JSON Lines**: the first line is the signed checkpoint the export is
//!   proven against (`type: "checkpoint"`, with the signed note and the
//!   server's public key); each following line is one event (`type:
//!   "event"`) with its index, leaf hash, exact canonical bytes and its
//!   inclusion proof in that checkpoint's tree. Anyone holding the server's
//!   public key can verify it offline ([`verify_jsonl`]).
//! - **CEF** (ArcSight Common Event Format) and **syslog** (RFC 5424, one
//!   message per line, structured data `picket@32473`): for SIEM ingestion;
//!   they carry the event but no proof.
//!
//! Only events covered by the checkpoint are exported (callers checkpoint
//! the log first).

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use picket_shared::checkpoint::verify_checkpoint;
use picket_shared::merkle::{Hash, leaf_hash, verify_inclusion};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use super::checkpoint::{KEY_NAME, latest, origin};
use super::query::{self, Filter};
use super::tree::Levels;
use crate::db::entity::audit_event;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// JSON Lines with checkpoint and inclusion proofs.
    Jsonl,
    /// ArcSight CEF, one event per line.
    Cef,
    /// RFC 5424 syslog messages, one per line.
    Syslog,
}

impl Format {
    /// Parses `jsonl`, `cef` or `syslog`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "jsonl" => Some(Format::Jsonl),
            "cef" => Some(Format::Cef),
            "syslog" => Some(Format::Syslog),
            _ => None,
        }
    }

    /// The HTTP content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson",
            Format::Cef | Format::Syslog => "text/plain; charset=utf-8",
        }
    }
}

/// Most events in one export (ask for a narrower time range beyond it).
pub const MAX_EXPORT_EVENTS: u64 = 1_000_000;

/// Why an export could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Nothing is checkpointed yet.
    #[error("the audit log has no signed checkpoint yet")]
    NoCheckpoint,
    /// Too many events in the range.
    #[error("more than {MAX_EXPORT_EVENTS} events in the range; export a shorter time range")]
    TooLarge,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] anyhow::Error),
}

/// Exports the events of `log_id` with `since <= at < until` that the latest
/// checkpoint covers, in `format`, with `public_key` (the server's) in the
/// JSON Lines header.
///
/// # Errors
/// [`ExportError`].
pub async fn export(
    conn: &impl ConnectionTrait,
    log_id: &str,
    since: Option<i64>,
    until: Option<i64>,
    format: Format,
    public_key: &[u8; 32],
) -> Result<String, ExportError> {
    let cp = latest(conn, log_id)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or(ExportError::NoCheckpoint)?;
    let mut events: Vec<audit_event::Model> = Vec::new();
    let mut filter = Filter {
        since,
        until,
        limit: query::MAX_LIMIT,
        ..Filter::default()
    };
    loop {
        let page = query::list(conn, log_id, &filter)
            .await
            .map_err(anyhow::Error::new)?;
        let Some(last) = page.last() else { break };
        filter.after = Some(last.idx);
        let done = page.iter().any(|e| e.idx >= cp.size);
        events.extend(page.into_iter().filter(|e| e.idx < cp.size));
        if events.len() as u64 > MAX_EXPORT_EVENTS {
            return Err(ExportError::TooLarge);
        }
        if done {
            break;
        }
    }
    let mut out = String::new();
    match format {
        Format::Jsonl => {
            let size = u64::try_from(cp.size).unwrap_or(0);
            let levels = Levels::new(
                super::proof::leaves(conn, log_id, size)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            let header = json!({
                "type": "checkpoint",
                "log": log_id,
                "origin": origin(log_id),
                "size": cp.size,
                "root": STANDARD.encode(&cp.root),
                "key_name": KEY_NAME,
                "public_key": STANDARD.encode(public_key),
                "note": cp.note,
                "since": since,
                "until": until,
                "events": events.len(),
            });
            let _ = writeln!(out, "{header}");
            for e in events {
                let proof: Vec<String> = usize::try_from(e.idx)
                    .ok()
                    .and_then(|i| levels.inclusion(i))
                    .unwrap_or_default()
                    .iter()
                    .map(|h| STANDARD.encode(h))
                    .collect();
                let line = json!({
                    "type": "event",
                    "index": e.idx,
                    "leaf_hash": hex::encode(&e.leaf_hash),
                    "proof": proof,
                    "canonical": e.canonical,
                });
                let _ = writeln!(out, "{line}");
            }
        }
        Format::Cef => {
            for e in events {
                let _ = writeln!(out, "{}", cef_line(&e));
            }
        }
        Format::Syslog => {
            for e in events {
                let _ = writeln!(out, "{}", syslog_line(&e, "-"));
            }
        }
    }
    Ok(out)
}

fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

fn cef_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
}

/// One event as an ArcSight CEF line.
pub fn cef_line(e: &audit_event::Model) -> String {
    let v: Value = serde_json::from_str(&e.canonical).unwrap_or(Value::Null);
    let severity = match e.outcome.as_str() {
        "success" => 3,
        "failure" => 6,
        _ => 7,
    };
    let mut ext = vec![
        format!("rt={}", e.at.saturating_mul(1000)),
        format!("externalId={}", cef_value(&e.event_id)),
        format!("act={}", cef_value(&e.action)),
        format!("outcome={}", cef_value(&e.outcome)),
        format!(
            "suser={}",
            cef_value(&format!(
                "{}:{}",
                e.actor_type,
                e.actor_id.clone().unwrap_or_default()
            ))
        ),
        format!("cs1Label=log cs1={}", cef_value(&e.log_id)),
        format!("cn1Label=index cn1={}", e.idx),
        format!(
            "cs2Label=resource cs2={}",
            cef_value(&format!(
                "{}:{}",
                e.resource_type,
                e.resource_id.clone().unwrap_or_default()
            ))
        ),
        format!("cs3Label=source cs3={}", cef_value(&e.source)),
        format!("cs4Label=leafHash cs4={}", hex::encode(&e.leaf_hash)),
    ];
    if let Some(ip) = &e.client_ip {
        ext.push(format!("src={}", cef_value(ip)));
    }
    if let Some(ua) = v.pointer("/user_agent").and_then(Value::as_str) {
        ext.push(format!("requestClientApplication={}", cef_value(ua)));
    }
    if let Some(d) = v.get("details").filter(|d| !d.is_null()) {
        ext.push(format!(
            "msg={}",
            cef_value(&super::canonical::to_canonical(d))
        ));
    }
    format!(
        "CEF:0|Picket|picket-server|{}|{}|{}|{}|{}",
        cef_header(env!("CARGO_PKG_VERSION")),
        cef_header(&e.action),
        cef_header(&e.action),
        severity,
        ext.join(" ")
    )
}

fn sd_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace(']', "\\]")
}

/// One event as an RFC 5424 message (without framing): facility
/// security/authorization (10), severity informational for success and
/// warning otherwise; MSGID is the action; MSG is the canonical JSON.
pub fn syslog_line(e: &audit_event::Model, hostname: &str) -> String {
    let severity = if e.outcome == "success" { 6 } else { 4 };
    let pri = 10 * 8 + severity;
    let ts = time::OffsetDateTime::from_unix_timestamp(e.at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".to_owned());
    let msgid: String = e
        .action
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    format!(
        "<{pri}>1 {ts} {hostname} picket-server - {} [picket@32473 log=\"{}\" index=\"{}\" outcome=\"{}\" actor=\"{}\" leaf=\"{}\"] {}",
        if msgid.is_empty() {
            "-".to_owned()
        } else {
            msgid
        },
        sd_value(&e.log_id),
        e.idx,
        sd_value(&e.outcome),
        sd_value(&format!(
            "{}:{}",
            e.actor_type,
            e.actor_id.clone().unwrap_or_default()
        )),
        hex::encode(&e.leaf_hash),
        e.canonical
    )
}

/// Result of verifying a JSON Lines export.
#[derive(Debug, Clone)]
pub struct ExportCheck {
    /// The log the export is from.
    pub log_id: String,
    /// The checkpoint size it is proven against.
    pub size: u64,
    /// Events verified.
    pub events: u64,
    /// Fingerprint (hex SHA-256) of the key the checkpoint verified under.
    pub key_fingerprint: String,
    /// True when the key came from the file itself rather than the caller.
    pub key_from_file: bool,
}

/// Verifies a JSON Lines export offline: the checkpoint's signature under
/// `trusted_key` (or, if `None`, under the key the file names — the caller
/// must then compare the printed fingerprint with the server's), then each
/// event's leaf hash and inclusion proof against the checkpoint root.
///
/// # Errors
/// A message naming the first bad line (1-based) and why.
pub fn verify_jsonl(text: &str, trusted_key: Option<[u8; 32]>) -> Result<ExportCheck, String> {
    let mut lines = text.lines().enumerate();
    let (_, first) = lines.next().ok_or("the export is empty")?;
    let header: Value =
        serde_json::from_str(first).map_err(|e| format!("line 1: not JSON: {e}"))?;
    if header.get("type").and_then(Value::as_str) != Some("checkpoint") {
        return Err("line 1: expected the checkpoint line".into());
    }
    let log_id = header
        .get("log")
        .and_then(Value::as_str)
        .ok_or("line 1: no log")?
        .to_owned();
    let note = header
        .get("note")
        .and_then(Value::as_str)
        .ok_or("line 1: no signed note")?;
    let (key_bytes, key_from_file) = match trusted_key {
        Some(k) => (k, false),
        None => {
            let b = header
                .get("public_key")
                .and_then(Value::as_str)
                .and_then(|s| STANDARD.decode(s).ok())
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or("line 1: no valid public_key")?;
            (b, true)
        }
    };
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| "the public key is not a valid Ed25519 key".to_owned())?;
    let cp = verify_checkpoint(note, KEY_NAME, &key)
        .map_err(|e| format!("line 1: the checkpoint does not verify: {e}"))?;
    if cp.origin != origin(&log_id) {
        return Err(format!(
            "line 1: the checkpoint's origin {:?} is not log {log_id}",
            cp.origin
        ));
    }
    let mut events = 0u64;
    for (n, line) in lines {
        let lineno = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("line {lineno}: not JSON: {e}"))?;
        let index = v
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("line {lineno}: no index"))?;
        let canonical = v
            .get("canonical")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("line {lineno}: no canonical event"))?;
        let leaf = leaf_hash(canonical.as_bytes());
        if v.get("leaf_hash").and_then(Value::as_str) != Some(hex::encode(leaf).as_str()) {
            return Err(format!(
                "line {lineno} (event #{index}): the event does not match its leaf hash: it was modified"
            ));
        }
        let proof: Vec<Hash> = v
            .get("proof")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("line {lineno}: no proof"))?
            .iter()
            .map(|p| {
                p.as_str()
                    .and_then(|s| STANDARD.decode(s).ok())
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
            })
            .collect::<Option<_>>()
            .ok_or_else(|| format!("line {lineno}: malformed proof"))?;
        verify_inclusion(index, cp.size, &leaf, &proof, &cp.root)
            .map_err(|e| format!("line {lineno} (event #{index}): not in the signed tree: {e}"))?;
        let ev: Value = serde_json::from_str(canonical)
            .map_err(|_| format!("line {lineno}: the canonical event is not JSON"))?;
        if ev.get("log").and_then(Value::as_str) != Some(log_id.as_str()) {
            return Err(format!("line {lineno}: the event belongs to another log"));
        }
        events += 1;
    }
    Ok(ExportCheck {
        log_id,
        size: cp.size,
        events,
        key_fingerprint: picket_shared::keys::fingerprint(&key).to_hex(),
        key_from_file,
    })
}
