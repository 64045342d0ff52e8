//! `picket-server admin audit verify`: recompute every tree from the
//! database and check it against the signed checkpoints.
//!
//! For each log it checks, in order:
//! 1. every checkpoint's signature (under any of the server's stored
//!    signing keys), origin, size and root column;
//! 2. the stored leaf hashes: dense from 0, and the root of each prefix
//!    equal to the signed root of the checkpoint of that size;
//! 3. every event body still present: dense above the prune watermark, its
//!    leaf hash equal to `SHA-256(0x00 ‖ canonical)` and to the stored leaf,
//!    and its filter columns equal to what the canonical JSON says.
//!
//! The first bad event (lowest index) is named; a tampered leaf hash that
//! was rewritten together with its body is caught by step 2, which names the
//! range of events between the two checkpoints around it.

use std::collections::BTreeMap;

use picket_shared::checkpoint::verify_checkpoint;
use picket_shared::merkle::{Hash, leaf_hash};
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    QuerySelect as _,
};

use super::checkpoint::{KEY_NAME, origin};
use super::tree::Frontier;
use crate::db::entity::{audit_checkpoint, audit_event, audit_leaf, server_key};

/// Rows read per query while walking a log.
const PAGE: u64 = 5000;

/// The result of verifying one log.
#[derive(Debug, Clone, Default)]
pub struct LogReport {
    /// The log.
    pub log_id: String,
    /// Event bodies checked.
    pub events: u64,
    /// Leaves covered by the latest valid checkpoint.
    pub checkpointed: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Problems, by index where there is one (lowest first).
    pub problems: Vec<String>,
}

impl LogReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The server's signing keys (all of them: checkpoints signed before a key
/// rotation stay verifiable).
///
/// # Errors
/// On storage failure.
pub async fn signing_keys(
    db: &DatabaseConnection,
) -> Result<Vec<ed25519_dalek::VerifyingKey>, sea_orm::DbErr> {
    let rows = server_key::Entity::find().all(db).await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| <[u8; 32]>::try_from(r.public_key.as_slice()).ok())
        .filter_map(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
        .collect())
}

/// Verifies one log.
///
/// # Errors
/// Only on storage failure; findings are in the report.
pub async fn verify_log(db: &DatabaseConnection, log_id: &str) -> anyhow::Result<LogReport> {
    let keys = signing_keys(db).await?;
    let mut report = LogReport {
        log_id: log_id.to_owned(),
        ..LogReport::default()
    };
    let mut bad_events: BTreeMap<i64, String> = BTreeMap::new();

    // 1. Checkpoints.
    let cps = audit_checkpoint::Entity::find()
        .filter(audit_checkpoint::Column::LogId.eq(log_id))
        .order_by_asc(audit_checkpoint::Column::Size)
        .all(db)
        .await?;
    let mut signed: Vec<(u64, Hash)> = Vec::new();
    for c in &cps {
        report.checkpoints += 1;
        let parsed = keys
            .iter()
            .find_map(|k| verify_checkpoint(&c.note, KEY_NAME, k).ok());
        match parsed {
            None => report.problems.push(format!(
                "checkpoint of size {}: signature does not verify under any server key",
                c.size
            )),
            Some(p) if p.origin != origin(log_id) => report.problems.push(format!(
                "checkpoint of size {}: origin {:?} is not this log's",
                c.size, p.origin
            )),
            Some(p)
                if i64::try_from(p.size).ok() != Some(c.size) || p.root.as_slice() != c.root =>
            {
                report.problems.push(format!(
                    "checkpoint of size {}: the stored size/root columns differ from the signed note",
                    c.size
                ));
            }
            Some(p) => signed.push((p.size, p.root)),
        }
    }

    // 2. Leaf hashes against the signed roots.
    let mut frontier = Frontier::default();
    let mut leaves: Vec<Hash> = Vec::new();
    let mut next_cp = signed.iter().peekable();
    let mut prev_size = 0u64;
    let mut last = -1i64;
    'pages: loop {
        let page = audit_leaf::Entity::find()
            .filter(audit_leaf::Column::LogId.eq(log_id))
            .filter(audit_leaf::Column::Idx.gt(last))
            .order_by_asc(audit_leaf::Column::Idx)
            .limit(PAGE)
            .all(db)
            .await?;
        if page.is_empty() {
            break;
        }
        for l in page {
            last = l.idx;
            if u64::try_from(l.idx).ok() != Some(frontier.size()) {
                report.problems.push(format!(
                    "leaf hashes: index {} found where {} was expected (leaves missing)",
                    l.idx,
                    frontier.size()
                ));
                break 'pages;
            }
            let Ok(h) = Hash::try_from(l.leaf_hash.as_slice()) else {
                report
                    .problems
                    .push(format!("leaf hash of event #{} is malformed", l.idx));
                break 'pages;
            };
            frontier.push(h);
            leaves.push(h);
            while let Some((size, root)) = next_cp.peek() {
                if *size != frontier.size() {
                    break;
                }
                if frontier.root() == *root {
                    report.checkpointed = *size;
                } else {
                    report.problems.push(format!(
                        "leaf hashes of events #{prev_size}..#{} do not match the signed checkpoint of size {size}",
                        size - 1
                    ));
                }
                prev_size = *size;
                next_cp.next();
            }
        }
    }
    for (size, _) in next_cp {
        report.problems.push(format!(
            "checkpoint of size {size} covers leaves that are not stored ({} stored)",
            frontier.size()
        ));
    }

    // 3. Event bodies.
    let watermark: Option<i64> = {
        use sea_orm::{ConnectionTrait as _, Statement};
        let backend = db.get_database_backend();
        let sql = match backend {
            sea_orm::DbBackend::Postgres => "SELECT below_idx FROM audit_prune WHERE log_id = $1",
            _ => "SELECT below_idx FROM audit_prune WHERE log_id = ?",
        };
        db.query_one(Statement::from_sql_and_values(
            backend,
            sql,
            [log_id.into()],
        ))
        .await?
        .and_then(|r| r.try_get_by_index::<i64>(0).ok())
    };
    let mut expected = watermark.unwrap_or(0);
    let mut last = -1i64;
    loop {
        let page = audit_event::Entity::find()
            .filter(audit_event::Column::LogId.eq(log_id))
            .filter(audit_event::Column::Idx.gt(last))
            .order_by_asc(audit_event::Column::Idx)
            .limit(PAGE)
            .all(db)
            .await?;
        if page.is_empty() {
            break;
        }
        for e in page {
            last = e.idx;
            report.events += 1;
            if e.idx != expected {
                bad_events.entry(expected).or_insert_with(|| {
                    format!("event #{expected} is missing (next present is #{})", e.idx)
                });
            }
            expected = e.idx + 1;
            if let Some(why) = check_event(&e, log_id, &leaves) {
                bad_events
                    .entry(e.idx)
                    .or_insert_with(|| format!("event #{} (id {}): {why}", e.idx, e.event_id));
            }
        }
    }
    if let Some((idx, why)) = bad_events.iter().next() {
        report
            .problems
            .insert(0, format!("first bad event: #{idx} — {why}"));
    }
    report
        .problems
        .extend(bad_events.into_values().skip(1).take(20));
    Ok(report)
}

/// What is wrong with one stored event, if anything.
fn check_event(e: &audit_event::Model, log_id: &str, leaves: &[Hash]) -> Option<String> {
    let h = leaf_hash(e.canonical.as_bytes());
    if h.as_slice() != e.leaf_hash {
        return Some("its content does not match its leaf hash (the event was modified)".into());
    }
    if let Some(stored) = usize::try_from(e.idx).ok().and_then(|i| leaves.get(i))
        && stored != &h
    {
        return Some(
            "its leaf hash differs from the checkpointed leaf (the event was modified)".into(),
        );
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&e.canonical) else {
        return Some("its canonical form is not JSON".into());
    };
    let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).map(str::to_owned);
    let checks = [
        ("log", s("/log") == Some(log_id.to_owned())),
        ("id", s("/id") == Some(e.event_id.clone())),
        ("tenant", s("/tenant") == e.tenant_id),
        (
            "at",
            v.pointer("/at").and_then(serde_json::Value::as_i64) == Some(e.at),
        ),
        ("actor type", s("/actor/type") == Some(e.actor_type.clone())),
        ("actor id", s("/actor/id") == e.actor_id),
        ("action", s("/action") == Some(e.action.clone())),
        (
            "resource type",
            s("/resource/type") == Some(e.resource_type.clone()),
        ),
        ("resource id", s("/resource/id") == e.resource_id),
        ("source", s("/source") == Some(e.source.clone())),
        ("client ip", s("/client_ip") == e.client_ip),
        ("outcome", s("/outcome") == Some(e.outcome.clone())),
    ];
    checks.iter().find(|(_, ok)| !ok).map(|(field, _)| {
        format!("its {field} column differs from the hashed event (the row was modified)")
    })
}

/// Verifies `only` (a log id) or every log.
///
/// # Errors
/// Only on storage failure.
pub async fn verify_all(
    db: &DatabaseConnection,
    only: Option<&str>,
) -> anyhow::Result<Vec<LogReport>> {
    let logs = match only {
        Some(l) => vec![l.to_owned()],
        None => super::checkpoint::log_ids(db).await?,
    };
    let mut out = Vec::new();
    for l in logs {
        out.push(verify_log(db, &l).await?);
    }
    Ok(out)
}
