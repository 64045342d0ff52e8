//! The deployment lifecycle end to end (issue 6): approvals with separation
//! of duties and a minimum of two approvers, requests changed after approval,
//! atomic batches that revert on failure, monitoring mode and promotion,
//! rollback, drift and its resolutions, breakglass with its review, dry runs.
//! Real server and agent processes and the Splunk simulator.

// Test code: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use picket_e2e::api::Api;
use picket_e2e::stack::{Stack, StackOpts};
use picket_e2e::wait;
use picket_siem_sim::elastic::ElasticSim;
use picket_siem_sim::sentinel::SentinelSim;
use serde_json::{Value, json};

/// Generous bound for anything that waits on the agent (slow CI machines).
const FINISH: Duration = Duration::from_secs(90);

fn query(n: u32) -> String {
    format!("index=wineventlog EventCode=4625 user=u{n} | stats count by host")
}

async fn stack() -> Stack {
    Stack::start(StackOpts::default()).await.unwrap()
}

/// Adds a version to a rule as `who`; returns its number.
async fn add_version(who: &Api, rule_id: &str, q: &str) -> i64 {
    let v = who
        .post_ok(
            &format!("/v1/rules/{rule_id}/versions"),
            json!({ "title": "Brute force", "description": "Detects it.", "severity": "high", "query": q, "cron": "*/5 * * * *", "earliest": "-10m", "latest": "now" }),
        )
        .await
        .unwrap();
    v["version"].as_i64().unwrap()
}

/// Requests a batch as the requester; returns the deployment body.
async fn request_items(s: &Stack, items: Value, dry_run: bool) -> Value {
    s.requester
        .post_ok(
            "/v1/deployments",
            json!({ "connection_id": s.connection_id, "items": items, "message": "batch", "dry_run": dry_run }),
        )
        .await
        .unwrap()
}

/// Requests, approves (as the approver) and waits for the end.
async fn deploy(s: &Stack, items: Value) -> Value {
    let d = request_items(s, items, false).await;
    let id = d["id"].as_str().unwrap();
    s.approve(id).await.unwrap();
    s.wait_final(id, FINISH).await.unwrap()
}

/// Now as RFC 3339 UTC, the form the API uses (so strings compare in time order).
fn time_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn search_of(s: &Stack, rule_id: &str) -> Option<String> {
    s.sim
        .saved_search(&format!("picket-{rule_id}"))
        .and_then(|x| x.content.get("search").cloned())
}

fn statuses(d: &Value) -> Vec<String> {
    d["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_separation_of_duties_and_changes_after_approval() {
    let s = stack().await;
    let (s_status, policy) = s
        .admin
        .put("/v1/approval-policy", json!({ "min_approvers": 2 }))
        .await
        .unwrap();
    assert_eq!(s_status, 200, "{policy}");
    assert_eq!(policy["min_approvers"], 2);
    let (s_status, _) = s
        .requester
        .put("/v1/approval-policy", json!({ "min_approvers": 1 }))
        .await
        .unwrap();
    assert_eq!(s_status, 403, "only an Admin sets the approval policy");

    // The requester writes v1; the approver writes v2.
    let (rule_id, _) = s.create_rule("Brute force", &query(1)).await.unwrap();
    let v2 = add_version(&s.approver, &rule_id, &query(2)).await;
    assert_eq!(v2, 2);
    let d = request_items(&s, json!([{ "rule_id": rule_id, "version": 2 }]), false).await;
    let id = d["id"].as_str().unwrap().to_owned();
    let first_digest = d["digest"].as_str().unwrap().to_owned();

    let (st, body) = s
        .requester
        .post(&format!("/v1/deployments/{id}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(st, 403, "the requester may not approve: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requester")
    );
    let (st, body) = s
        .approver
        .post(&format!("/v1/deployments/{id}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(st, 403, "the author of v2 may not approve: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("author")
    );

    // One approval of two: still pending, nothing sent.
    let d = s
        .admin
        .post_ok(
            &format!("/v1/deployments/{id}/approve"),
            json!({ "digest": first_digest, "comment": "ok" }),
        )
        .await
        .unwrap();
    assert_eq!(d["status"], "pending_approval");
    assert_eq!(s.sim.request_count(), 0);

    // The requester changes the request to v1: the digest changes, the
    // admin's approval no longer counts, and approving what they saw is refused.
    let (st, d) = s
        .requester
        .put(
            &format!("/v1/deployments/{id}"),
            json!({ "items": [{ "rule_id": rule_id, "version": 1 }] }),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{d}");
    let second_digest = d["digest"].as_str().unwrap().to_owned();
    assert_ne!(first_digest, second_digest);
    let (st, body) = s
        .admin
        .post(
            &format!("/v1/deployments/{id}/approve"),
            json!({ "digest": first_digest }),
        )
        .await
        .unwrap();
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["error"]["code"], "digest_changed");

    // Two distinct approvals of the new digest dispatch it (the approver did
    // not write v1, so may approve now).
    let d = s
        .admin
        .post_ok(
            &format!("/v1/deployments/{id}/approve"),
            json!({ "digest": second_digest }),
        )
        .await
        .unwrap();
    assert_eq!(d["status"], "pending_approval", "1 of 2: {d}");
    let d = s.approve(&id).await.unwrap();
    assert_eq!(d["status"], "queued", "{d}");
    let done = s.wait_final(&id, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(statuses(&done), ["applied"]);
    assert_eq!(search_of(&s, &rule_id), Some(query(1)));
    let counted: Vec<&Value> = done["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["digest"] == second_digest.as_str())
        .collect();
    assert_eq!(counted.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_item_reverts_the_batch() {
    let s = stack().await;
    // A is deployed at v1 before the batch; the batch moves it to v2.
    let (a, _) = s.create_rule("A", &query(1)).await.unwrap();
    let done = deploy(&s, json!([{ "rule_id": a, "version": 1 }])).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let a_before = s.sim.saved_search(&format!("picket-{a}")).unwrap();
    add_version(&s.requester, &a, &query(2)).await;
    let (b, _) = s.create_rule("B", &query(3)).await.unwrap();
    let (c, _) = s.create_rule("C", &query(4)).await.unwrap();
    s.sim.fail_writes_to(&format!("picket-{c}"), Some(400));

    let done = deploy(
        &s,
        json!([
            { "rule_id": a, "version": 2 },
            { "rule_id": b, "version": 1 },
            { "rule_id": c, "version": 1 },
        ]),
    )
    .await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error_class"], "query_invalid");
    assert_eq!(statuses(&done), ["reverted", "reverted", "failed"]);
    assert_eq!(done["items"][2]["error_class"], "query_invalid");

    // No partial deployment: A holds v1 exactly as before, B and C do not exist.
    let a_after = s.sim.saved_search(&format!("picket-{a}")).unwrap();
    assert_eq!(a_after.content, a_before.content);
    assert!(s.sim.saved_search(&format!("picket-{b}")).is_none());
    assert!(s.sim.saved_search(&format!("picket-{c}")).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_mode_then_promotion() {
    let s = stack().await;
    let (a, _) = s.create_rule("A", &query(1)).await.unwrap();
    let done = deploy(
        &s,
        json!([{ "rule_id": a, "version": 1, "monitoring": true }]),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["items"][0]["monitoring"], true);
    let saved = s.sim.saved_search(&format!("picket-{a}")).unwrap();
    assert_eq!(
        saved.content.get("alert.track").map(String::as_str),
        Some("0")
    );
    assert_eq!(saved.content.get("actions").map(String::as_str), Some(""));
    assert_eq!(
        saved.content.get("is_scheduled").map(String::as_str),
        Some("1")
    );

    // Promotion is its own change, approved like any other.
    let d = request_items(&s, json!([{ "rule_id": a, "version": 1 }]), false).await;
    assert_eq!(d["status"], "pending_approval");
    let id = d["id"].as_str().unwrap();
    s.approve(id).await.unwrap();
    let done = s.wait_final(id, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    let saved = s.sim.saved_search(&format!("picket-{a}")).unwrap();
    assert_eq!(
        saved.content.get("alert.track").map(String::as_str),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_previous_version_or_removes_a_new_rule() {
    let s = stack().await;
    let (a, _) = s.create_rule("A", &query(1)).await.unwrap();
    deploy(&s, json!([{ "rule_id": a, "version": 1 }])).await;
    add_version(&s.requester, &a, &query(2)).await;
    let done = deploy(&s, json!([{ "rule_id": a, "version": 2 }])).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(search_of(&s, &a), Some(query(2)));

    let rb = s
        .requester
        .post_ok(
            "/v1/deployments/rollback",
            json!({ "rule_id": a, "connection_id": s.connection_id, "message": "v2 is noisy" }),
        )
        .await
        .unwrap();
    assert_eq!(rb["kind"], "rollback");
    assert_eq!(
        rb["status"], "pending_approval",
        "a rollback is approved too"
    );
    assert_eq!(rb["items"][0]["version"], 1);
    let id = rb["id"].as_str().unwrap();
    s.approve(id).await.unwrap();
    let done = s.wait_final(id, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(search_of(&s, &a), Some(query(1)));
    // The rolled-back version is kept.
    let rule = s.admin.get_ok(&format!("/v1/rules/{a}")).await.unwrap();
    assert!(rule.to_string().contains(&query(2)), "{rule}");

    // A rule deployed once: rollback removes it.
    let (b, _) = s.create_rule("B", &query(3)).await.unwrap();
    deploy(&s, json!([{ "rule_id": b, "version": 1 }])).await;
    assert!(search_of(&s, &b).is_some());
    let rb = s
        .requester
        .post_ok(
            "/v1/deployments/rollback",
            json!({ "rule_id": b, "connection_id": s.connection_id }),
        )
        .await
        .unwrap();
    assert_eq!(rb["items"][0]["action"], "delete");
    let id = rb["id"].as_str().unwrap();
    s.approve(id).await.unwrap();
    let done = s.wait_final(id, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{b}")).is_none());

    // The audit log names the rollback.
    let audit = s
        .admin
        .get_ok("/v1/audit/events?action=deployment.request&limit=100")
        .await
        .unwrap();
    assert!(audit["events"].to_string().contains("rollback"), "{audit}");
}

/// Every tracked rule of the tenant with its drift state.
async fn tracked(s: &Stack) -> Vec<Value> {
    s.admin
        .get_ok("/v1/drift")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn drifted_rows(rows: &[Value]) -> Vec<Value> {
    drifted(rows)
}

fn drifted(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .filter(|r| r["state"] == "drift_detected")
        .cloned()
        .collect()
}

/// Sends a drift check and waits until every tracked rule was checked by it.
/// Checks are stamped in whole seconds, so it first waits for a second later
/// than any earlier check: a stale stamp can then never pass for a new one.
async fn check_drift(s: &Stack) -> Vec<Value> {
    check_drift_on(s, &s.connection_id).await
}

/// [`check_drift`] for the rules tracked on one connection.
async fn check_drift_on(s: &Stack, conn: &str) -> Vec<Value> {
    let on = |rows: Vec<Value>| -> Vec<Value> {
        rows.into_iter()
            .filter(|r| r["connection_id"] == conn)
            .collect()
    };
    let latest = on(tracked(s).await)
        .iter()
        .filter_map(|r| r["checked_at"].as_str().map(str::to_owned))
        .max()
        .unwrap_or_default();
    let after = wait::until("a second later than the last check", FINISH, || async {
        let now = time_now();
        if now > latest {
            return Ok(Some(now));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(None)
    })
    .await
    .unwrap();
    let path = format!("/v1/connections/{conn}/drift-check");
    let sent = s.requester.post_ok(&path, json!({})).await.unwrap();
    assert!(sent["job_id"].is_string(), "{sent}");
    wait::until("the drift check to finish", FINISH, || async {
        let rows = on(tracked(s).await);
        let done = rows
            .iter()
            .filter(|r| r["state"] == "deployed" || r["state"] == "drift_detected")
            .all(|r| {
                r["checked_at"]
                    .as_str()
                    .is_some_and(|t| t >= after.as_str())
            });
        Ok(done.then_some(rows))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_detected_and_resolved() {
    let s = stack().await;
    let (a, _) = s.create_rule("A", &query(1)).await.unwrap();
    let (b, _) = s.create_rule("B", &query(2)).await.unwrap();
    let (c, _) = s.create_rule("C", &query(3)).await.unwrap();
    let done = deploy(
        &s,
        json!([
            { "rule_id": a, "version": 1 },
            { "rule_id": b, "version": 1 },
            { "rule_id": c, "version": 1 },
        ]),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");

    // In sync: a check finds nothing.
    let rows = check_drift(&s).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(drifted(&rows).is_empty(), "{rows:?}");

    // Someone edits A in Splunk and deletes B.
    let mut edited = s.sim.saved_search(&format!("picket-{a}")).unwrap();
    edited
        .content
        .insert("search".into(), "index=* | head 1".into());
    s.sim.insert_saved_search(edited);
    assert!(s.sim.remove_saved_search(&format!("picket-{b}")));
    let rows = check_drift(&s).await;
    let drifted = drifted(&rows);
    assert_eq!(drifted.len(), 2, "{rows:?}");
    let of = |id: &str| drifted.iter().find(|d| d["rule_id"] == id).unwrap().clone();
    assert_eq!(of(&a)["state"], "drift_detected");
    assert!(of(&a)["found_hash"].is_string());
    assert_ne!(of(&a)["found_hash"], of(&a)["expected_hash"]);
    assert_eq!(of(&b)["found_hash"], Value::Null, "missing");

    // A missing rule has no remote content to accept.
    let resolve = |id: &str| format!("/v1/rules/{id}/drift/resolve");
    let (st, body) = s
        .requester
        .post(
            &resolve(&b),
            json!({ "connection_id": s.connection_id, "resolution": "accept_remote" }),
        )
        .await
        .unwrap();
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["error"]["code"], "remote_unknown");

    // Redeploy ours: a request approved like any change puts v1 back.
    let r = s
        .requester
        .post_ok(
            &resolve(&a),
            json!({ "connection_id": s.connection_id, "resolution": "redeploy", "message": "undo hand edit" }),
        )
        .await
        .unwrap();
    let id = r["deployment"]["id"].as_str().unwrap();
    assert_eq!(r["deployment"]["kind"], "redeploy");
    s.approve(id).await.unwrap();
    let done = s.wait_final(id, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(search_of(&s, &a), Some(query(1)));

    // Archive B: no longer tracked, nothing recreated.
    let r = s
        .requester
        .post_ok(
            &resolve(&b),
            json!({ "connection_id": s.connection_id, "resolution": "archive" }),
        )
        .await
        .unwrap();
    assert_eq!(r["state"], "archived");
    assert!(s.sim.saved_search(&format!("picket-{b}")).is_none());
    let rows = tracked(&s).await;
    assert!(drifted_rows(&rows).is_empty(), "{rows:?}");

    // A further check sees A in sync again and ignores archived B.
    let rows = check_drift(&s).await;
    assert!(drifted_rows(&rows).is_empty(), "{rows:?}");
    let audit = s
        .admin
        .get_ok("/v1/audit/events?action=rule.drift_detected&limit=100")
        .await
        .unwrap();
    assert_eq!(audit["events"].as_array().unwrap().len(), 2, "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breakglass_deploys_at_once_and_another_admin_signs_it_off() {
    let s = stack().await;
    let second_admin = s.admin.add_user("root2@acme.test", "admin").await.unwrap();
    let (a, _) = s.create_rule("A", &query(1)).await.unwrap();

    let (st, body) = s
        .requester
        .post(
            "/v1/deployments/breakglass",
            json!({ "reason": "active incident, need it now", "connection_id": s.connection_id, "rule_id": a, "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(st, 403, "only an Admin may break glass: {body}");
    let (st, body) = s
        .admin
        .post(
            "/v1/deployments/breakglass",
            json!({ "reason": "", "connection_id": s.connection_id, "rule_id": a, "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(st, 400, "a reason is required: {body}");

    let d = s
        .admin
        .post_ok(
            "/v1/deployments/breakglass",
            json!({ "reason": "active incident, need it now", "connection_id": s.connection_id, "rule_id": a, "version": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(d["breakglass"], true);
    assert_eq!(d["status"], "queued", "no approval needed: {d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let done = s.wait_final(&id, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["approvals"].as_array().unwrap().is_empty());
    assert_eq!(done["review"]["status"], "open");
    assert!(search_of(&s, &a).is_some());

    // Flagged in the list too; every Admin is notified; others are not shown.
    let list = s.requester.get_ok("/v1/deployments").await.unwrap();
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id.as_str())
        .unwrap();
    assert_eq!(listed["breakglass"], true);
    let notes = second_admin.get_ok("/v1/notifications").await.unwrap();
    assert_eq!(notes[0]["kind"], "breakglass");
    assert_eq!(notes[0]["deployment_id"], id.as_str());
    let (st, _) = s.requester.get("/v1/notifications").await.unwrap();
    assert_eq!(st, 403);

    // The review stays open until another Admin signs it off.
    let sign = format!("/v1/deployments/{id}/sign-off");
    let (st, body) = s.admin.post(&sign, json!({})).await.unwrap();
    assert_eq!(st, 403, "not one's own: {body}");
    let open = s.admin.get_ok("/v1/breakglass-reviews").await.unwrap();
    assert_eq!(open[0]["status"], "open");
    let r = second_admin
        .post_ok(&sign, json!({ "comment": "reviewed with the IR lead" }))
        .await
        .unwrap();
    assert_eq!(r["status"], "signed_off");
    let (st, _) = second_admin.post(&sign, json!({})).await.unwrap();
    assert_eq!(st, 409, "signed off once");
    let audit = s
        .admin
        .get_ok("/v1/audit/events?action=breakglass.sign_off&limit=10")
        .await
        .unwrap();
    assert_eq!(
        audit["events"].as_array().unwrap().len(),
        2,
        "denied + signed: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_reports_changes_and_changes_nothing() {
    let s = stack().await;
    let (a, _) = s.create_rule("A", &query(1)).await.unwrap();
    let (c, _) = s.create_rule("C", &query(3)).await.unwrap();
    deploy(
        &s,
        json!([{ "rule_id": a, "version": 1 }, { "rule_id": c, "version": 1 }]),
    )
    .await;
    add_version(&s.requester, &a, &query(2)).await;
    let (b, _) = s.create_rule("B", &query(4)).await.unwrap();
    let before = s.sim.saved_searches();

    let d = request_items(
        &s,
        json!([
            { "rule_id": a, "version": 2 },
            { "rule_id": b, "version": 1 },
            { "rule_id": c, "version": 1 },
        ]),
        true,
    )
    .await;
    assert_eq!(d["dry_run"], true);
    assert_eq!(d["status"], "queued", "a dry run needs no approval: {d}");
    let done = s
        .wait_final(d["id"].as_str().unwrap(), FINISH)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        statuses(&done),
        ["would_change", "would_create", "unchanged"]
    );
    assert_eq!(s.sim.saved_searches(), before, "a dry run changes nothing");
}

const SENTINEL_CLIENT: &str = "11111111-2222-3333-4444-555555555555";
const SENTINEL_SECRET: &str = "entra-client-secret-0123";
const ELASTIC_KEY: &str = "ZWxhc3RpYy1pZDplbGFzdGljLWtleQ==";

/// Requests one item on `conn`, has it approved, waits for the end.
async fn deploy_on(s: &Stack, conn: &str, item: Value) -> Value {
    let d = s
        .requester
        .post_ok(
            "/v1/deployments",
            json!({ "connection_id": conn, "items": [item], "message": "mode change" }),
        )
        .await
        .unwrap();
    assert_eq!(d["status"], "pending_approval", "{d}");
    let id = d["id"].as_str().unwrap();
    s.approve(id).await.unwrap();
    s.wait_final(id, FINISH).await.unwrap()
}

/// Monitoring mode on Sentinel (incident creation off) and Elastic (a
/// building-block rule without actions), each then promoted to active by
/// its own approved request; a drift check between finds both in sync (the
/// agent's hash is that of the mode deployed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_mode_then_promotion_on_sentinel_and_elastic() {
    let s = stack().await;
    let sentinel = SentinelSim::builder()
        .client(SENTINEL_CLIENT, SENTINEL_SECRET)
        .start()
        .await
        .unwrap();
    let elastic = ElasticSim::builder()
        .api_key(ELASTIC_KEY)
        .start()
        .await
        .unwrap();
    let base = sentinel.base_url();
    let sentinel_conn = s
        .admin
        .post_ok(
            "/v1/connections",
            json!({
                "name": "prod-sentinel", "kind": "sentinel", "agent_id": s.agent.agent_id,
                "base_url": base, "login_url": base, "log_analytics_url": base,
                "subscription_id": "00000000-0000-0000-0000-000000000001",
                "resource_group": "soc-rg", "workspace_name": "soc-ws",
                "workspace_id": "00000000-0000-0000-0000-0000000000aa",
                "tenant_id": "00000000-0000-0000-0000-0000000000bb",
                "client_id": SENTINEL_CLIENT, "client_secret": SENTINEL_SECRET,
            }),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let elastic_conn = s
        .admin
        .post_ok(
            "/v1/connections",
            json!({
                "name": "prod-elastic", "kind": "elastic", "agent_id": s.agent.agent_id,
                "base_url": elastic.base_url(), "elasticsearch_url": elastic.base_url(),
                "api_key": ELASTIC_KEY,
            }),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let new_rule = |kind: &str, q: &str| {
        json!({ "title": "Failed logons", "siem_kind": kind, "severity": "high", "query": q,
                "cron": "*/5 * * * *", "earliest": "-10m", "latest": "now" })
    };
    let st_rule = s
        .requester
        .post_ok(
            "/v1/rules",
            new_rule("sentinel", "SecurityEvent | where EventID == 4625"),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let el_rule = s
        .requester
        .post_ok(
            "/v1/rules",
            new_rule("elastic", "event.code:4625 and user.name:alice"),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let incidents = || {
        sentinel
            .rule(&format!("picket-{st_rule}"))
            .map(|r| r.properties["incidentConfiguration"]["createIncident"].clone())
    };
    let building_block = || {
        elastic
            .rule(&format!("picket-{el_rule}"))
            .map(|r| r.body.get("building_block_type").cloned())
    };

    // Monitoring mode.
    let done = deploy_on(
        &s,
        &sentinel_conn,
        json!({ "rule_id": st_rule, "version": 1, "monitoring": true }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["items"][0]["monitoring"], true);
    assert_eq!(incidents(), Some(json!(false)));
    let done = deploy_on(
        &s,
        &elastic_conn,
        json!({ "rule_id": el_rule, "version": 1, "monitoring": true }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(building_block(), Some(Some(json!("default"))));
    assert!(
        elastic
            .rule(&format!("picket-{el_rule}"))
            .unwrap()
            .enabled()
    );
    for conn in [&sentinel_conn, &elastic_conn] {
        let rows = check_drift_on(&s, conn).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(
            rows[0]["state"], "deployed",
            "monitored and in sync: {rows:?}"
        );
        assert_eq!(rows[0]["monitoring"], true, "{rows:?}");
    }

    // Promotion: the same version without monitoring, approved on its own.
    // Reviewers see what is there now, from Picket's record (in sync).
    let d = s
        .requester
        .post_ok(
            "/v1/deployments",
            json!({ "connection_id": sentinel_conn, "items": [{ "rule_id": st_rule, "version": 1 }], "message": "preview" }),
        )
        .await
        .unwrap();
    let current = &d["items"][0]["current"];
    assert_eq!(current["source"], "record", "{d}");
    assert_eq!(current["state"], "deployed", "{d}");
    assert_eq!(current["monitoring"], true, "{d}");
    assert!(
        current["diff"]["query"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["op"] == "equal"),
        "same version: {current}"
    );
    s.requester
        .post_ok(
            &format!("/v1/deployments/{}/withdraw", d["id"].as_str().unwrap()),
            json!({}),
        )
        .await
        .unwrap();
    let done = deploy_on(
        &s,
        &sentinel_conn,
        json!({ "rule_id": st_rule, "version": 1 }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(incidents(), Some(json!(true)));
    let done = deploy_on(
        &s,
        &elastic_conn,
        json!({ "rule_id": el_rule, "version": 1 }),
    )
    .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(building_block(), Some(None));
    for conn in [&sentinel_conn, &elastic_conn] {
        let rows = check_drift_on(&s, conn).await;
        assert_eq!(rows[0]["state"], "deployed", "active and in sync: {rows:?}");
        assert_eq!(rows[0]["monitoring"], false, "{rows:?}");
    }
}

/// Accept remote: someone changed the saved search in Splunk; the drift
/// check returns its normalized content, and accepting it records it as the
/// rule's next version (authored by the system, "accepted from SIEM"),
/// deployed as it is: the drift is resolved and the next check finds the
/// rule in sync. Content that is not a valid rule is reported, not stored.
/// A rollback then restores Picket's version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_remote_records_the_siems_version() {
    let s = stack().await;
    let (a, _) = s.create_rule("A", &query(1)).await.unwrap();
    let done = deploy(&s, json!([{ "rule_id": a, "version": 1 }])).await;
    assert_eq!(done["status"], "succeeded", "{done}");

    let remote_query = "index=wineventlog EventCode=4740 user=u1 | stats count by host";
    let mut edited = s.sim.saved_search(&format!("picket-{a}")).unwrap();
    edited.content.insert("search".into(), remote_query.into());
    edited
        .content
        .insert("cron_schedule".into(), "*/10 * * * *".into());
    edited
        .content
        .insert("dispatch.earliest_time".into(), "-20m".into());
    s.sim.insert_saved_search(edited);
    let rows = check_drift(&s).await;
    let row = drifted(&rows).pop().expect("A drifted");
    assert_eq!(row["rule_id"], json!(a));
    assert_eq!(row["remote"]["query"], remote_query, "{row}");
    assert_eq!(row["remote"]["title"], "A", "{row}");

    // A request made now shows reviewers the diff against what the SIEM
    // actually holds, not against Picket's record; its requester withdraws it.
    let d = request_items(&s, json!([{ "rule_id": a, "version": 1 }]), false).await;
    let current = &d["items"][0]["current"];
    assert_eq!(current["source"], "siem", "{d}");
    assert_eq!(current["state"], "drift_detected", "{d}");
    assert_eq!(current["version"], 1, "{d}");
    let lines = current["diff"]["query"].as_array().unwrap();
    let has = |op: &str, text: &str| lines.iter().any(|l| l["op"] == op && l["text"] == text);
    assert!(has("delete", remote_query), "{current}");
    assert!(has("insert", &query(1)), "{current}");
    assert!(
        current["diff"]["unified"]
            .as_str()
            .unwrap()
            .contains("--- siem"),
        "{current}"
    );
    let id = d["id"].as_str().unwrap();
    let w = s
        .requester
        .post_ok(&format!("/v1/deployments/{id}/withdraw"), json!({}))
        .await
        .unwrap();
    assert_eq!(w["status"], "withdrawn", "{w}");
    assert!(
        w["items"][0].get("current").is_none(),
        "only while awaiting a decision: {w}"
    );

    let resolve = format!("/v1/rules/{a}/drift/resolve");
    let r = s
        .requester
        .post_ok(
            &resolve,
            json!({ "connection_id": s.connection_id, "resolution": "accept_remote" }),
        )
        .await
        .unwrap();
    assert_eq!(r["state"], "deployed", "{r}");
    let v = &r["version"];
    assert_eq!(v["version"], 2, "{r}");
    assert_eq!(v["query"], remote_query);
    assert_eq!(v["cron"], "*/10 * * * *");
    assert_eq!(v["earliest"], "-20m");
    assert_eq!(v["title"], "A");
    assert_eq!(v["description"], "Detects it.");
    assert_eq!(v["author_id"], "00000000-0000-0000-0000-000000000000");
    assert!(
        v["origin"]
            .as_str()
            .unwrap()
            .starts_with("accepted from SIEM"),
        "{v}"
    );
    let rule = s.admin.get_ok(&format!("/v1/rules/{a}")).await.unwrap();
    assert_eq!(rule["latest_version"], 2, "{rule}");
    let row = tracked(&s)
        .await
        .into_iter()
        .find(|r| r["rule_id"] == json!(a))
        .unwrap();
    assert_eq!(row["version"], 2, "{row}");
    assert_eq!(row["state"], "deployed");
    // The SIEM holds exactly the accepted version: in sync.
    let rows = check_drift(&s).await;
    assert!(drifted(&rows).is_empty(), "{rows:?}");
    let audit = s
        .admin
        .get_ok("/v1/audit/events?action=rule.drift_resolve&limit=100")
        .await
        .unwrap();
    assert!(audit.to_string().contains("accept_remote"), "{audit}");

    // Content that is no valid rule (a destructive command) is reported and
    // not stored; the drift stays open.
    let mut edited = s.sim.saved_search(&format!("picket-{a}")).unwrap();
    edited
        .content
        .insert("search".into(), "index=main | delete".into());
    s.sim.insert_saved_search(edited);
    let rows = check_drift(&s).await;
    assert_eq!(drifted(&rows).len(), 1, "{rows:?}");
    let (st, body) = s
        .requester
        .post(
            &resolve,
            json!({ "connection_id": s.connection_id, "resolution": "accept_remote" }),
        )
        .await
        .unwrap();
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_remote_rule");
    assert_eq!(
        body["error"]["details"][0]["code"], "refused_command",
        "{body}"
    );
    let rule = s.admin.get_ok(&format!("/v1/rules/{a}")).await.unwrap();
    assert_eq!(rule["latest_version"], 2, "nothing stored: {rule}");
    assert_eq!(drifted(&tracked(&s).await).len(), 1);

    // Redeploying the accepted version, then rolling back, restores v1.
    let r = s
        .requester
        .post_ok(
            &resolve,
            json!({ "connection_id": s.connection_id, "resolution": "redeploy", "message": "undo" }),
        )
        .await
        .unwrap();
    let id = r["deployment"]["id"].as_str().unwrap();
    assert_eq!(r["deployment"]["items"][0]["version"], 2, "{r}");
    s.approve(id).await.unwrap();
    let done = s.wait_final(id, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(search_of(&s, &a).as_deref(), Some(remote_query));
    let rb = s
        .requester
        .post_ok(
            "/v1/deployments/rollback",
            json!({ "rule_id": a, "connection_id": s.connection_id, "message": "back to ours" }),
        )
        .await
        .unwrap();
    assert_eq!(rb["items"][0]["version"], 1, "{rb}");
    let id = rb["id"].as_str().unwrap();
    s.approve(id).await.unwrap();
    let done = s.wait_final(id, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(search_of(&s, &a), Some(query(1)));
}

/// The expected alert volume: asked for on a request awaiting a decision,
/// the agent counts what the rule's query (its search terms, with their
/// index) matched on the SIEM's own events over the last 24 h, and the
/// count appears on the item. A query with no preview form says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_counts_the_expected_alert_volume() {
    let s = stack().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let event = |secs_ago: i64, user: &str| picket_siem_sim::splunk::StoredEvent {
        time: now - secs_ago,
        fields: [
            ("index", "wineventlog"),
            ("EventCode", "4625"),
            ("user", user),
            ("host", "dc1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    s.sim.insert_events(vec![
        event(60, "u1"),
        event(3600, "u1"),
        event(7200, "u1"),
        event(600, "u2"),
        // Older than the 24 h window.
        event(2 * 86_400, "u1"),
    ]);
    let (a, _) = s.create_rule("A", &query(1)).await.unwrap();
    let (b, _) = s
        .create_rule("B", "| tstats count where index=wineventlog")
        .await
        .unwrap();
    let d = request_items(
        &s,
        json!([{ "rule_id": a, "version": 1 }, { "rule_id": b, "version": 1 }]),
        false,
    )
    .await;
    assert!(
        d["items"][0].get("preview").is_none(),
        "not asked for yet (jobs.preview_on_request is off): {d}"
    );
    let id = d["id"].as_str().unwrap().to_owned();
    let (st, asked) = s
        .requester
        .post(&format!("/v1/deployments/{id}/preview"), json!({}))
        .await
        .unwrap();
    assert_eq!(st, 202, "{asked}");
    assert_eq!(asked["items"][0]["preview"]["status"], "queued", "{asked}");
    assert_eq!(
        asked["items"][1]["preview"]["status"], "unsupported",
        "{asked}"
    );
    assert!(
        asked["items"][1]["preview"]["error"]
            .as_str()
            .unwrap()
            .contains("generating command"),
        "{asked}"
    );
    let done = wait::until("the preview count", FINISH, || async {
        let v = s.admin.get_ok(&format!("/v1/deployments/{id}")).await?;
        Ok((v["items"][0]["preview"]["status"] != "queued").then_some(v))
    })
    .await
    .unwrap();
    let p = &done["items"][0]["preview"];
    assert_eq!(p["status"], "counted", "{done}");
    assert_eq!(p["count"], 3, "u1's events of the last 24 h: {done}");
    assert_eq!(p["window_secs"], 86_400);
    // The request itself is untouched by the preview job.
    assert_eq!(done["status"], "pending_approval", "{done}");
    assert!(done["job_id"].is_null(), "{done}");
}
