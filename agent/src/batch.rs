//! Atomic deployment batches, dry runs, drift checks and previews
//! (`deploy_batch`, `drift_check`, `preview_count` jobs).
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
//! A drift check reads each rule's content hash; for a drifted rule it also
//! reads the rule's content, normalized back to the rule model by the
//! connector ([`Connector::read_rule`]), for at most
//! [`MAX_REMOTE_RULES`] rules per check, so the server can offer "accept
//! remote".
//!
//! Every SIEM call has its own deadline (the agent's `siem_timeout`) and is
//! retried twice on a transient class, so a slow item cannot stop the batch
//! before its reverts run.

use std::future::Future;
use std::time::Duration;

use picket_proto::{
    B64, Batch, BatchItem, BatchOp, DriftCheck, ErrorClass, ItemOutcome, ItemStatus,
    MAX_BATCH_ITEMS, MAX_PREVIEW_WINDOW_SECS, MAX_REMOTE_RULES, Preview,
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
        BatchOp::Disable | BatchOp::Enable => {
            let enabled = matches!(item.op, BatchOp::Enable);
            call(deadline, || c.set_enabled(id, enabled)).await?;
            // The new hash (enabled state is part of some SIEMs' content),
            // for later drift checks; unknown if the read fails.
            Ok(call(deadline, || c.content_hash(id)).await.ok())
        }
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
        remote: None,
        count: None,
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
    let mut remote_budget = MAX_REMOTE_RULES;
    for r in &check.rules {
        let base = ItemOutcome {
            rule_id: r.rule_id,
            status: ItemStatus::InSync,
            error_class: None,
            content_hash: None,
            remote: None,
            count: None,
        };
        outcomes.push(match call(deadline, || c.content_hash(&r.rule_id)).await {
            Ok(h) if h == r.expected.0 => ItemOutcome {
                content_hash: Some(B64(h)),
                ..base
            },
            Ok(h) => {
                // The drifted rule's content, for "accept remote": best
                // effort (a read or normalization failure leaves the hash
                // alone to tell the drift) and within the result's budget.
                let remote = if remote_budget > 0 {
                    match call(deadline, || c.read_rule(&r.rule_id)).await {
                        Ok(rule) if rule.within_bounds() => {
                            remote_budget -= 1;
                            Some(Box::new(rule))
                        }
                        Ok(_) => None,
                        Err(class) => {
                            tracing::debug!(
                                error_class = class.as_str(),
                                "cannot read a drifted rule's content"
                            );
                            None
                        }
                    }
                } else {
                    None
                };
                ItemOutcome {
                    status: ItemStatus::Drifted,
                    content_hash: Some(B64(h)),
                    remote,
                    ..base
                }
            }
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
        });
    }
    (failure, outcomes)
}

/// Counts, per rule, what its preview query matches over the last
/// `window_secs` (a `preview_count` job). One outcome per rule: `counted`
/// with the count, or `failed` with the class; a failing rule does not stop
/// the others, and the job fails with the first class.
pub async fn run_preview(
    c: &Connector,
    deadline: Duration,
    preview: &Preview,
) -> (Option<ErrorClass>, Vec<ItemOutcome>) {
    if preview.rules.is_empty()
        || preview.rules.len() > MAX_BATCH_ITEMS
        || !(60..=MAX_PREVIEW_WINDOW_SECS).contains(&preview.window_secs)
    {
        return (Some(ErrorClass::MalformedJob), Vec::new());
    }
    let window = crate::siem::TimeWindow::last(i64::from(preview.window_secs));
    let mut outcomes = Vec::with_capacity(preview.rules.len());
    let mut failure = None;
    for r in &preview.rules {
        let base = ItemOutcome {
            rule_id: r.rule_id,
            status: ItemStatus::Counted,
            error_class: None,
            content_hash: None,
            remote: None,
            count: None,
        };
        outcomes.push(
            match call(deadline, || c.preview_count(&r.query, window)).await {
                Ok(n) => ItemOutcome {
                    count: Some(n),
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

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a test failure at its exact line.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use picket_proto::{
        Credential, DriftExpectation, PreviewRule, PreviousState, RuleSpec, Schedule, Severity,
        SiemSettings, SiemTarget, SplunkSettings, managed_rule_name,
    };
    use picket_siem_sim::splunk::{SplunkSim, SplunkSimHandle};
    use uuid::Uuid;

    use super::*;

    const TOKEN: &str = "batch-test-token";
    const DEADLINE: Duration = Duration::from_secs(10);

    async fn setup() -> (SplunkSimHandle, Connector) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let sim = SplunkSim::builder().token(TOKEN).start().await.unwrap();
        let target = SiemTarget {
            connection_id: Uuid::now_v7(),
            name: "splunk".into(),
            settings: SiemSettings::Splunk(SplunkSettings {
                base_url: sim.base_url(),
                app: "search".into(),
                owner: "nobody".into(),
                token: Credential::new(TOKEN.into()),
                login: None,
                hec: None,
            }),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        (sim, Connector::new(&target, http))
    }

    fn rule(rule_id: Uuid, version: u32) -> RuleSpec {
        RuleSpec {
            rule_id,
            version,
            title: format!("Rule v{version}"),
            description: String::new(),
            severity: Severity::High,
            query: format!("index=main EventCode=4625 v={version}"),
            schedule: Schedule {
                cron: "*/5 * * * *".into(),
                earliest: "-5m".into(),
                latest: "now".into(),
            },
        }
    }

    fn deploy(rule: RuleSpec, previous: Option<RuleSpec>) -> BatchItem {
        BatchItem {
            rule_id: rule.rule_id,
            op: BatchOp::Deploy {
                rule,
                monitoring: false,
            },
            previous: previous.map(|rule| PreviousState {
                rule,
                monitoring: false,
                enabled: true,
            }),
        }
    }

    fn search(sim: &SplunkSimHandle, id: Uuid) -> Option<String> {
        sim.saved_search(&managed_rule_name(&id))
            .and_then(|s| s.content.get("search").cloned())
    }

    fn statuses(o: &[ItemOutcome]) -> Vec<ItemStatus> {
        o.iter().map(|o| o.status).collect()
    }

    #[tokio::test]
    async fn a_failing_item_reverts_every_applied_one_and_skips_the_rest() {
        let (sim, c) = setup().await;
        let (a, b, f, d) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        c.deploy(&rule(a, 1)).await.unwrap();
        let a_before = sim.saved_search(&managed_rule_name(&a)).unwrap();
        sim.fail_writes_to(&managed_rule_name(&f), Some(400));
        let batch = Batch {
            dry_run: false,
            items: vec![
                deploy(rule(a, 2), Some(rule(a, 1))),
                deploy(rule(b, 1), None),
                deploy(rule(f, 1), None),
                deploy(rule(d, 1), None),
            ],
        };
        let (failure, outcomes) = run_batch(&c, DEADLINE, &batch).await;
        assert_eq!(failure, Some(ErrorClass::QueryInvalid));
        assert_eq!(
            statuses(&outcomes),
            [
                ItemStatus::Reverted,
                ItemStatus::Reverted,
                ItemStatus::Failed,
                ItemStatus::Skipped
            ]
        );
        assert_eq!(outcomes[2].error_class, Some(ErrorClass::QueryInvalid));
        assert_eq!(
            sim.saved_search(&managed_rule_name(&a)).unwrap().content,
            a_before.content
        );
        for id in [b, f, d] {
            assert_eq!(search(&sim, id), None);
        }
    }

    #[tokio::test]
    async fn a_batch_that_succeeds_reports_each_hash() {
        let (sim, c) = setup().await;
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let batch = Batch {
            dry_run: false,
            items: vec![
                deploy(rule(a, 1), None),
                BatchItem {
                    rule_id: b,
                    op: BatchOp::Deploy {
                        rule: rule(b, 1),
                        monitoring: true,
                    },
                    previous: None,
                },
            ],
        };
        let (failure, outcomes) = run_batch(&c, DEADLINE, &batch).await;
        assert_eq!(failure, None);
        assert_eq!(
            statuses(&outcomes),
            [ItemStatus::Applied, ItemStatus::Applied]
        );
        // The hash each item reports is what a drift check will find.
        for (id, o) in [(a, &outcomes[0]), (b, &outcomes[1])] {
            assert_eq!(
                o.content_hash.unwrap().0,
                c.content_hash(&id).await.unwrap()
            );
        }
        let monitored = sim.saved_search(&managed_rule_name(&b)).unwrap();
        assert_eq!(
            monitored.content.get("alert.track").map(String::as_str),
            Some("0")
        );
    }

    #[tokio::test]
    async fn a_present_rule_without_a_previous_version_cannot_be_restored() {
        let (sim, c) = setup().await;
        let (a, f) = (Uuid::now_v7(), Uuid::now_v7());
        c.deploy(&rule(a, 7)).await.unwrap();
        sim.fail_writes_to(&managed_rule_name(&f), Some(500));
        let batch = Batch {
            dry_run: false,
            items: vec![deploy(rule(a, 8), None), deploy(rule(f, 1), None)],
        };
        let (failure, outcomes) = run_batch(&c, DEADLINE, &batch).await;
        assert_eq!(failure, Some(ErrorClass::SiemError));
        assert_eq!(outcomes[0].status, ItemStatus::RevertFailed);
        assert_eq!(outcomes[0].error_class, Some(ErrorClass::Conflict));
        // What the failed revert left is visible: v8.
        assert_eq!(search(&sim, a), Some(rule(a, 8).query));
    }

    #[tokio::test]
    async fn a_dry_run_reads_and_changes_nothing() {
        let (sim, c) = setup().await;
        let (a, b, u) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        c.deploy(&rule(a, 1)).await.unwrap();
        c.deploy(&rule(u, 1)).await.unwrap();
        let before = sim.saved_searches();
        let batch = Batch {
            dry_run: true,
            items: vec![
                deploy(rule(a, 2), None),
                deploy(rule(b, 1), None),
                deploy(rule(u, 1), None),
                BatchItem {
                    rule_id: b,
                    op: BatchOp::Delete,
                    previous: None,
                },
            ],
        };
        let (failure, outcomes) = run_batch(&c, DEADLINE, &batch).await;
        assert_eq!(failure, None);
        assert_eq!(
            statuses(&outcomes),
            [
                ItemStatus::WouldChange,
                ItemStatus::WouldCreate,
                ItemStatus::Unchanged,
                ItemStatus::Unchanged
            ]
        );
        assert_eq!(sim.saved_searches(), before);
    }

    #[tokio::test]
    async fn drift_check_tells_in_sync_drifted_and_missing() {
        let (sim, c) = setup().await;
        let (a, b, m) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let ha = c.deploy(&rule(a, 1)).await.unwrap();
        let hb = c.deploy(&rule(b, 1)).await.unwrap();
        let hm = c.deploy(&rule(m, 1)).await.unwrap();
        let mut edited = sim.saved_search(&managed_rule_name(&b)).unwrap();
        edited.content.insert("search".into(), "index=*".into());
        sim.insert_saved_search(edited);
        assert!(sim.remove_saved_search(&managed_rule_name(&m)));
        let check = DriftCheck {
            rules: [(a, ha), (b, hb), (m, hm)]
                .into_iter()
                .map(|(rule_id, h)| DriftExpectation {
                    rule_id,
                    expected: B64(h),
                })
                .collect(),
        };
        let (failure, outcomes) = run_drift_check(&c, DEADLINE, &check).await;
        assert_eq!(failure, None);
        assert_eq!(
            statuses(&outcomes),
            [ItemStatus::InSync, ItemStatus::Drifted, ItemStatus::Missing]
        );
        assert_ne!(outcomes[1].content_hash.unwrap().0, hb);
        assert_eq!(outcomes[2].content_hash, None);
        // Only the drifted rule comes back with its content, normalized.
        let remote = outcomes[1].remote.as_deref().unwrap();
        assert_eq!(remote.query, "index=*");
        assert_eq!(remote.title, "Rule v1");
        assert_eq!(remote.schedule.cron.as_deref(), Some("*/5 * * * *"));
        assert_eq!(remote.schedule.earliest.as_deref(), Some("-5m"));
        assert_eq!(remote.severity, Severity::High);
        assert!(outcomes[0].remote.is_none() && outcomes[2].remote.is_none());
    }

    #[tokio::test]
    async fn drift_results_carry_at_most_the_remote_budget() {
        let (sim, c) = setup().await;
        let ids: Vec<Uuid> = (0..MAX_REMOTE_RULES + 2).map(|_| Uuid::now_v7()).collect();
        let mut rules = Vec::new();
        for id in &ids {
            let h = c.deploy(&rule(*id, 1)).await.unwrap();
            let mut edited = sim.saved_search(&managed_rule_name(id)).unwrap();
            edited
                .content
                .insert("search".into(), "index=edited".into());
            sim.insert_saved_search(edited);
            rules.push(DriftExpectation {
                rule_id: *id,
                expected: B64(h),
            });
        }
        let (failure, outcomes) = run_drift_check(&c, DEADLINE, &DriftCheck { rules }).await;
        assert_eq!(failure, None);
        assert!(outcomes.iter().all(|o| o.status == ItemStatus::Drifted));
        let with = outcomes.iter().filter(|o| o.remote.is_some()).count();
        assert_eq!(with, MAX_REMOTE_RULES);
    }

    #[tokio::test]
    async fn previews_count_per_rule_and_report_failures_per_rule() {
        let (sim, c) = setup().await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let event = |secs_ago: i64, user: &str| picket_siem_sim::common::StoredEvent {
            time: now - secs_ago,
            fields: [("index", "main"), ("EventCode", "4625"), ("user", user)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
        sim.insert_events(vec![
            event(60, "alice"),
            event(120, "alice"),
            event(180, "bob"),
            event(2 * 86_400, "alice"),
        ]);
        let (a, b, bad) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let preview = Preview {
            window_secs: 86_400,
            rules: vec![
                PreviewRule {
                    rule_id: a,
                    query: "index=main EventCode=4625 user=alice".into(),
                },
                PreviewRule {
                    rule_id: b,
                    query: "index=main EventCode=4625 | search user=bob".into(),
                },
                PreviewRule {
                    rule_id: bad,
                    query: "index=main mimikatz".into(),
                },
            ],
        };
        let (failure, outcomes) = run_preview(&c, DEADLINE, &preview).await;
        assert_eq!(outcomes[0].status, ItemStatus::Counted);
        assert_eq!(
            outcomes[0].count,
            Some(2),
            "the old event is outside the window"
        );
        assert_eq!(outcomes[1].count, Some(1));
        assert_eq!(outcomes[2].status, ItemStatus::Failed);
        assert_eq!(failure, outcomes[2].error_class);
        let too_long = Preview {
            window_secs: MAX_PREVIEW_WINDOW_SECS + 1,
            ..preview
        };
        assert_eq!(
            run_preview(&c, DEADLINE, &too_long).await.0,
            Some(ErrorClass::MalformedJob)
        );
    }

    #[tokio::test]
    async fn empty_or_oversized_batches_are_malformed() {
        let (_sim, c) = setup().await;
        let empty = Batch {
            dry_run: false,
            items: vec![],
        };
        assert_eq!(
            run_batch(&c, DEADLINE, &empty).await.0,
            Some(ErrorClass::MalformedJob)
        );
        let id = Uuid::now_v7();
        let big = Batch {
            dry_run: false,
            items: (0..=MAX_BATCH_ITEMS)
                .map(|_| deploy(rule(id, 1), None))
                .collect(),
        };
        assert_eq!(
            run_batch(&c, DEADLINE, &big).await.0,
            Some(ErrorClass::MalformedJob)
        );
    }
}
