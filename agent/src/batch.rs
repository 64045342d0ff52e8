//! Atomic deployment batches, dry runs and drift checks (`deploy_batch`,
//! `drift_check` jobs).
//!
//! A batch is applied item by item, in order. Before touching a rule the
//! worker reads its state on the SIEM (present, with its content hash, or
//! absent). When an item fails, every item already applied in this batch is
//! undone, newest first:
//!
//! | item op | rule before | revert |
//! |---|---|---|
//! | any | absent | delete it |
//! | deploy, delete | present | deploy the server's previous version (and disable it if it was disabled) |
//! | disable | present | enable |
//! | enable | present | disable |
//!
//! A present rule with no previous version from the server (something the
//! server never deployed) cannot be restored: that item ends `revert_failed`
//! (`conflict`). Items after the failing one are `skipped`. The job then ends
//! `failed` with the failing item's class; no item stays applied unless its
//! revert failed, which the outcome says.
//!
//! Every SIEM call has its own deadline (the agent's `siem_timeout`) and is
//! retried twice on a transient class, so a slow item cannot stop the batch
//! before its reverts run.

use std::future::Future;
use std::time::Duration;

use picket_proto::{
    B64, Batch, BatchItem, BatchOp, DriftCheck, ErrorClass, ItemOutcome, ItemStatus,
    MAX_BATCH_ITEMS,
};

use crate::siem::Connector;

/// Attempts per call for transient failures (`rate_limited`, `siem_unreachable`, `timeout`).
const ATTEMPTS: u32 = 3;
/// Pause before the first retry; doubled for each further one.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// One SIEM call under `deadline`, retried on transient failures.
async fn call<T, F, Fut>(deadline: Duration, mut f: F) -> Result<T, ErrorClass>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ErrorClass>>,
{
    let mut pause = RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        let r = match tokio::time::timeout(deadline, f()).await {
            Ok(r) => r,
            Err(_) => Err(ErrorClass::Timeout),
        };
        match r {
            Err(ErrorClass::RateLimited | ErrorClass::SiemUnreachable | ErrorClass::Timeout)
                if attempt < ATTEMPTS =>
            {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The rule's hash on the SIEM, `None` when it does not exist.
async fn read_state(
    c: &Connector,
    deadline: Duration,
    item: &BatchItem,
) -> Result<Option<[u8; 32]>, ErrorClass> {
    match call(deadline, || c.content_hash(&item.rule_id)).await {
        Ok(h) => Ok(Some(h)),
        Err(ErrorClass::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Applies one item; returns the deployed content hash for a deploy.
async fn apply(
    c: &Connector,
    deadline: Duration,
    item: &BatchItem,
    before: Option<[u8; 32]>,
) -> Result<Option<[u8; 32]>, ErrorClass> {
    let id = &item.rule_id;
    match &item.op {
        BatchOp::Deploy { rule, monitoring } => {
            if rule.rule_id != *id {
                return Err(ErrorClass::MalformedJob);
            }
            call(deadline, || c.deploy_mode(rule, *monitoring))
                .await
                .map(Some)
        }
        BatchOp::Disable => call(deadline, || c.set_enabled(id, false))
            .await
            .map(|()| None),
        BatchOp::Enable => call(deadline, || c.set_enabled(id, true))
            .await
            .map(|()| None),
        // Deleting what is not there changes nothing: done.
        BatchOp::Delete if before.is_none() => Ok(None),
        BatchOp::Delete => call(deadline, || c.delete(id)).await.map(|()| None),
        _ => Err(ErrorClass::MalformedJob),
    }
}

/// Undoes one applied item, given the state read before it.
async fn revert(
    c: &Connector,
    deadline: Duration,
    item: &BatchItem,
    before: Option<[u8; 32]>,
) -> Result<(), ErrorClass> {
    let id = &item.rule_id;
    if before.is_none() {
        return match call(deadline, || c.delete(id)).await {
            Ok(()) | Err(ErrorClass::NotFound) => Ok(()),
            Err(e) => Err(e),
        };
    }
    match &item.op {
        BatchOp::Disable => call(deadline, || c.set_enabled(id, true)).await,
        BatchOp::Enable => call(deadline, || c.set_enabled(id, false)).await,
        _ => {
            let Some(prev) = &item.previous else {
                return Err(ErrorClass::Conflict);
            };
            call(deadline, || c.deploy_mode(&prev.rule, prev.monitoring)).await?;
            if !prev.enabled {
                call(deadline, || c.set_enabled(id, false)).await?;
            }
            Ok(())
        }
    }
}

fn outcome(item: &BatchItem, status: ItemStatus) -> ItemOutcome {
    ItemOutcome {
        rule_id: item.rule_id,
        status,
        error_class: None,
        content_hash: None,
    }
}

/// Runs a batch (or its dry run). Returns the failing item's class, if any,
/// and one outcome per item in order.
pub async fn run_batch(
    c: &Connector,
    deadline: Duration,
    batch: &Batch,
) -> (Option<ErrorClass>, Vec<ItemOutcome>) {
    if batch.items.is_empty() || batch.items.len() > MAX_BATCH_ITEMS {
        return (Some(ErrorClass::MalformedJob), Vec::new());
    }
    if batch.dry_run {
        return dry_run(c, deadline, batch).await;
    }
    let mut outcomes: Vec<ItemOutcome> = Vec::with_capacity(batch.items.len());
    // (index, state before) of every applied item, in order.
    let mut applied: Vec<(usize, Option<[u8; 32]>)> = Vec::new();
    let mut failure = None;
    for (i, item) in batch.items.iter().enumerate() {
        if failure.is_some() {
            outcomes.push(outcome(item, ItemStatus::Skipped));
            continue;
        }
        let result = match read_state(c, deadline, item).await {
            Ok(before) => apply(c, deadline, item, before)
                .await
                .map(|hash| (before, hash)),
            Err(e) => Err(e),
        };
        match result {
            Ok((before, hash)) => {
                applied.push((i, before));
                outcomes.push(ItemOutcome {
                    content_hash: hash.map(B64),
                    ..outcome(item, ItemStatus::Applied)
                });
            }
            Err(class) => {
                tracing::info!(
                    item = i,
                    error_class = class.as_str(),
                    "batch item failed; reverting the items already applied"
                );
                failure = Some(class);
                outcomes.push(ItemOutcome {
                    error_class: Some(class),
                    ..outcome(item, ItemStatus::Failed)
                });
            }
        }
    }
    if failure.is_some() {
        for (i, before) in applied.into_iter().rev() {
            let (Some(item), Some(slot)) = (batch.items.get(i), outcomes.get_mut(i)) else {
                continue;
            };
            match revert(c, deadline, item, before).await {
                Ok(()) => {
                    slot.status = ItemStatus::Reverted;
                    slot.content_hash = None;
                }
                Err(class) => {
                    tracing::warn!(
                        item = i,
                        error_class = class.as_str(),
                        "could not revert a batch item"
                    );
                    slot.status = ItemStatus::RevertFailed;
                    slot.error_class = Some(class);
                }
            }
        }
    }
    (failure, outcomes)
}

/// Reads each rule and compares it with what the item would leave.
async fn dry_run(
    c: &Connector,
    deadline: Duration,
    batch: &Batch,
) -> (Option<ErrorClass>, Vec<ItemOutcome>) {
    let mut outcomes = Vec::with_capacity(batch.items.len());
    let mut failure = None;
    for item in &batch.items {
        let found = read_state(c, deadline, item).await;
        let status = match (&item.op, found) {
            (_, Err(class)) => Err(class),
            (BatchOp::Deploy { rule, monitoring }, Ok(current)) => {
                match c.expected_hash(rule, *monitoring) {
                    Err(class) => Err(class),
                    Ok(_) if current.is_none() => Ok((ItemStatus::WouldCreate, None)),
                    Ok(want) if current == Some(want) => Ok((ItemStatus::Unchanged, current)),
                    Ok(_) => Ok((ItemStatus::WouldChange, current)),
                }
            }
            (BatchOp::Delete, Ok(None)) => Ok((ItemStatus::Unchanged, None)),
            (_, Ok(None)) => Err(ErrorClass::NotFound),
            (_, Ok(current)) => Ok((ItemStatus::WouldChange, current)),
        };
        outcomes.push(match status {
            Ok((status, hash)) => ItemOutcome {
                content_hash: hash.map(B64),
                ..outcome(item, status)
            },
            Err(class) => {
                failure.get_or_insert(class);
                ItemOutcome {
                    error_class: Some(class),
                    ..outcome(item, ItemStatus::Failed)
                }
            }
        });
    }
    (failure, outcomes)
}

/// Reads the hash of every listed rule. Returns the first read failure's
/// class, if any, and one outcome per rule.
pub async fn run_drift_check(
    c: &Connector,
    deadline: Duration,
    check: &DriftCheck,
) -> (Option<ErrorClass>, Vec<ItemOutcome>) {
    if check.rules.is_empty() || check.rules.len() > MAX_BATCH_ITEMS {
        return (Some(ErrorClass::MalformedJob), Vec::new());
    }
    let mut outcomes = Vec::with_capacity(check.rules.len());
    let mut failure = None;
    for r in &check.rules {
        let base = ItemOutcome {
            rule_id: r.rule_id,
            status: ItemStatus::InSync,
            error_class: None,
            content_hash: None,
        };
        outcomes.push(
            match call(deadline, || c.content_hash(&r.rule_id)).await {
                Ok(h) if h == r.expected.0 => ItemOutcome {
                    content_hash: Some(B64(h)),
                    ..base
                },
                Ok(h) => ItemOutcome {
                    status: ItemStatus::Drifted,
                    content_hash: Some(B64(h)),
                    ..base
                },
                Err(ErrorClass::NotFound) => ItemOutcome {
                    status: ItemStatus::Missing,
                    ..base
                },
                Err(class) => {
                    failure.get_or_insert(class);
                    ItemOutcome {
                        status: ItemStatus::Failed,
                        error_class: Some(class),
                        ..base
                    }
                }
            },
        );
    }
    (failure, outcomes)
}
