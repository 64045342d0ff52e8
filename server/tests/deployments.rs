//! Deployment requests over the API: batch bounds, decisions, changes after
//! review, the approval policy, rollback and drift refusals. No agent runs
//! here (the end-to-end tests in `tests/e2e/tests/lifecycle.rs` cover
//! dispatch and results); an enrolled agent and its connection are enough.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{TestApp, app};

struct Tenant {
    s: TestApp,
    admin: String,
    requester: String,
    approver: String,
    connection: String,
    rule: String,
}

async fn tenant() -> Tenant {
    let s = app().start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let (_, requester) = s.user(&admin, "dana@acme.test", "user", false).await;
    let (_, approver) = s.user(&admin, "sam@acme.test", "user", false).await;
    let agent = s.agent(&admin).await;
    let connection = s.connection(&admin, &agent, "splunk").await;
    let rule = s.rule(&requester, "Brute force").await;
    Tenant {
        s,
        admin,
        requester,
        approver,
        connection,
        rule,
    }
}

impl Tenant {
    async fn request(&self, body: Value) -> support::Answer {
        self.s
            .post("/v1/deployments", Some(&self.requester), body)
            .await
    }
}

#[tokio::test]
async fn batch_requests_are_bounded_and_refused_precisely() {
    let t = tenant().await;
    let other = t.s.rule(&t.requester, "Other").await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "connection_id": t.connection, "items": [] }),
            "invalid_items",
        ),
        (
            json!({ "connection_id": t.connection, "items": [
                { "rule_id": t.rule, "version": 1 }, { "rule_id": t.rule, "version": 1 }
            ] }),
            "duplicate_rule",
        ),
        (
            json!({ "connection_id": t.connection, "rule_id": t.rule, "version": 1,
                    "items": [{ "rule_id": other, "version": 1 }] }),
            "invalid_items",
        ),
        (
            json!({ "connection_id": t.connection, "items": [
                { "rule_id": t.rule, "version": 1, "action": "delete", "monitoring": true }
            ] }),
            "invalid_items",
        ),
        (
            json!({ "connection_id": t.connection, "items":
                (0..101).map(|_| json!({ "rule_id": t.rule, "version": 1 })).collect::<Vec<_>>() }),
            "invalid_items",
        ),
    ];
    for (body, code) in cases {
        let a = t.request(body.clone()).await;
        assert_eq!(a.status, 400, "{body} -> {}", a.text);
        assert_eq!(a.body["error"]["code"], code, "{body} -> {}", a.text);
    }
    let a = t
        .request(json!({ "connection_id": t.connection, "items": [{ "rule_id": t.rule, "version": 9 }] }))
        .await;
    assert_eq!(a.status, 404, "{}", a.text);

    // A two-item batch is one request with two queued items and one digest.
    let a = t
        .request(
            json!({ "connection_id": t.connection, "message": "both", "items": [
            { "rule_id": t.rule, "version": 1 },
            { "rule_id": other, "version": 1, "monitoring": true }
        ] }),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let items = a.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["status"] == "queued"));
    assert_eq!(items[1]["monitoring"], true);
    assert_eq!(a.body["status"], "pending_approval");
    assert_eq!(a.body["breakglass"], false);
    assert_eq!(a.body["digest"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn reject_and_request_changes_need_a_comment() {
    let t = tenant().await;
    let d = t.s.deployment(&t.requester, &t.rule, &t.connection).await;
    let path = |verb: &str| format!("/v1/deployments/{d}/{verb}");

    let a =
        t.s.post(&path("reject"), Some(&t.approver), json!({}))
            .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "comment_required");

    let a =
        t.s.post(
            &path("request-changes"),
            Some(&t.approver),
            json!({ "comment": "lookback too short" }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "changes_requested");
    assert_eq!(a.body["approvals"][0]["decision"], "request_changes");

    let a =
        t.s.post(&path("approve"), Some(&t.approver), json!({}))
            .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "not_pending");

    // Only the requester may change it; a change puts it back for review.
    let items = json!({ "items": [{ "rule_id": t.rule, "version": 1, "monitoring": true }] });
    let a =
        t.s.send(
            "PUT",
            &format!("/v1/deployments/{d}"),
            Some(&t.approver),
            Some(items.clone()),
            &[],
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a =
        t.s.send(
            "PUT",
            &format!("/v1/deployments/{d}"),
            Some(&t.requester),
            Some(items.clone()),
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "pending_approval");

    let a =
        t.s.post(
            &path("reject"),
            Some(&t.approver),
            json!({ "comment": "not this quarter" }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "rejected");
    let a =
        t.s.send(
            "PUT",
            &format!("/v1/deployments/{d}"),
            Some(&t.requester),
            Some(items),
            &[],
        )
        .await;
    assert_eq!(a.status, 409, "a rejected request is final: {}", a.text);
}

#[tokio::test]
async fn approval_policy_is_bounded_and_audited() {
    let t = tenant().await;
    let a = t.s.get("/v1/approval-policy", &t.requester).await;
    assert_eq!(a.body["min_approvers"], 1, "default: {}", a.text);
    for bad in [0, 11, -1] {
        let a =
            t.s.send(
                "PUT",
                "/v1/approval-policy",
                Some(&t.admin),
                Some(json!({ "min_approvers": bad })),
                &[],
            )
            .await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text);
        assert_eq!(a.body["error"]["code"], "invalid_min_approvers");
    }
    let a =
        t.s.send(
            "PUT",
            "/v1/approval-policy",
            Some(&t.admin),
            Some(json!({ "min_approvers": 3 })),
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        t.s.get("/v1/approval-policy", &t.approver).await.body["min_approvers"],
        3
    );
    let ev =
        t.s.get("/v1/audit/events?action=tenant.min_approvers", &t.admin)
            .await;
    let events = ev.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{}", ev.text);
    assert!(events[0].to_string().contains("\"new\":3"), "{}", ev.text);
}

#[tokio::test]
async fn rollback_and_drift_need_something_deployed() {
    let t = tenant().await;
    let a =
        t.s.post(
            "/v1/deployments/rollback",
            Some(&t.requester),
            json!({ "rule_id": t.rule, "connection_id": t.connection }),
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a =
        t.s.post(
            &format!("/v1/rules/{}/drift/resolve", t.rule),
            Some(&t.requester),
            json!({ "connection_id": t.connection, "resolution": "archive" }),
        )
        .await;
    assert_eq!(a.status, 404, "{}", a.text);
    let a =
        t.s.post(
            &format!("/v1/rules/{}/drift/resolve", t.rule),
            Some(&t.requester),
            json!({}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    // Nothing deployed on the connection: no drift job is sent.
    let a =
        t.s.post(
            &format!("/v1/connections/{}/drift-check", t.connection),
            Some(&t.requester),
            json!({}),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.body["job_id"], Value::Null);
    let a = t.s.get("/v1/drift", &t.requester).await;
    assert_eq!(a.body, json!([]));
}

/// Separation of duties holds for every decision, not only approve: the
/// requester and the authors of the included versions can neither reject
/// nor send back the request (403, audited as denied, nothing recorded);
/// the requester withdraws it instead.
#[tokio::test]
async fn requester_and_authors_cannot_reject_or_request_changes_and_the_requester_withdraws() {
    let t = tenant().await;
    // A rule written by someone other than the requester.
    let (_, author) = t.s.user(&t.admin, "alex@acme.test", "user", false).await;
    let theirs = t.s.rule(&author, "Alex's rule").await;
    let body = json!({ "connection_id": t.connection, "message": "two rules", "items": [
        { "rule_id": t.rule, "version": 1 }, { "rule_id": theirs, "version": 1 }
    ] });
    let a = t.request(body.clone()).await;
    assert_eq!(a.status, 201, "{}", a.text);
    let d = a.body["id"].as_str().unwrap().to_owned();
    let path = |verb: &str| format!("/v1/deployments/{d}/{verb}");

    for (who, token) in [("requester", &t.requester), ("author", &author)] {
        for verb in ["approve", "reject", "request-changes"] {
            let a =
                t.s.post(&path(verb), Some(token), json!({ "comment": "mine" }))
                    .await;
            assert_eq!(a.status, 403, "{who} {verb}: {}", a.text);
            assert_eq!(a.body["error"]["code"], "forbidden", "{who} {verb}");
        }
    }
    let denied = t
        .s
        .scalar(
            "SELECT action FROM audit_events WHERE outcome = 'denied' AND action LIKE 'deployment.%' ORDER BY action",
        )
        .await;
    assert_eq!(
        denied,
        [
            "deployment.approve",
            "deployment.approve",
            "deployment.reject",
            "deployment.reject",
            "deployment.request_changes",
            "deployment.request_changes"
        ]
    );
    let a = t.s.get(&format!("/v1/deployments/{d}"), &t.approver).await;
    assert_eq!(a.body["status"], "pending_approval", "{}", a.text);
    assert_eq!(
        a.body["approvals"].as_array().unwrap().len(),
        0,
        "{}",
        a.text
    );

    // Only the requester withdraws; a reviewer cannot.
    let a =
        t.s.post(&path("withdraw"), Some(&t.approver), json!({}))
            .await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a =
        t.s.post(
            &path("withdraw"),
            Some(&t.requester),
            json!({ "comment": "superseded" }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "withdrawn");
    // Withdrawn is final: no decision, no change, no second withdrawal.
    let a =
        t.s.post(&path("approve"), Some(&t.approver), json!({}))
            .await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "not_pending");
    let a =
        t.s.post(&path("withdraw"), Some(&t.requester), json!({}))
            .await;
    assert_eq!(a.status, 409, "{}", a.text);
    let a =
        t.s.send(
            "PUT",
            &format!("/v1/deployments/{d}"),
            Some(&t.requester),
            Some(json!({ "items": body["items"] })),
            &[],
        )
        .await;
    assert_eq!(a.status, 409, "{}", a.text);
    let withdrawn =
        t.s.scalar(
            "SELECT outcome FROM audit_events WHERE action = 'deployment.withdraw' ORDER BY idx",
        )
        .await;
    assert_eq!(withdrawn, ["denied", "success"]);
}

/// The tenant's test requirement: off by default; an Admin turns it on
/// (audited once per change); then a version without test cases cannot be
/// approved for deployment, except by an Admin's audited override.
#[tokio::test]
async fn require_tests_blocks_untested_versions_until_an_admin_overrides() {
    let t = tenant().await;
    let a = t.s.get("/v1/approval-policy", &t.requester).await;
    assert_eq!(a.body["require_tests"], false, "default: {}", a.text);
    let put = |who: &str, body: Value| {
        let who = who.to_owned();
        let s = &t.s;
        async move {
            s.send("PUT", "/v1/approval-policy", Some(&who), Some(body), &[])
                .await
        }
    };
    let a = put(&t.approver, json!({ "require_tests": true })).await;
    assert_eq!(a.status, 403, "{}", a.text);
    let a = put(&t.admin, json!({ "require_tests": "yes" })).await;
    assert_eq!(a.status, 400, "{}", a.text);
    // A bad field refuses the whole change: nothing half-applied.
    let a = put(
        &t.admin,
        json!({ "require_tests": true, "min_approvers": 0 }),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(
        t.s.get("/v1/approval-policy", &t.admin).await.body["require_tests"],
        false
    );
    for _ in 0..2 {
        let a = put(&t.admin, json!({ "require_tests": true })).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["require_tests"], true);
        assert_eq!(a.body["min_approvers"], 1, "untouched: {}", a.text);
    }
    let ev =
        t.s.get("/v1/audit/events?action=tenant.require_tests", &t.admin)
            .await;
    let events = ev.body["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "one change, one event: {}", ev.text);
    assert!(
        events[0].to_string().contains("\"new\":true"),
        "{}",
        ev.text
    );

    // The fixture rule has no test cases.
    let d = t.s.deployment(&t.requester, &t.rule, &t.connection).await;
    let approve = format!("/v1/deployments/{d}/approve");
    let a = t.s.post(&approve, Some(&t.approver), json!({})).await;
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "tests_not_passed");
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("v1: it has no test cases and this tenant requires tests"),
        "{msg}"
    );
    let a =
        t.s.post(
            &approve,
            Some(&t.approver),
            json!({ "test_override": "urgent" }),
        )
        .await;
    assert_eq!(a.status, 403, "only an Admin overrides: {}", a.text);
    let a =
        t.s.post(
            &approve,
            Some(&t.admin),
            json!({ "test_override": "incident 42: ship the detection now, tests follow" }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "queued", "{}", a.text);
    let over =
        t.s.get("/v1/audit/events?action=deployment.test_override", &t.admin)
            .await;
    assert!(over.text.contains("no_tests"), "{}", over.text);

    // Turned off again, the same kind of request is approved as before.
    let a = put(&t.admin, json!({ "require_tests": false })).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let other = t.s.rule(&t.requester, "Other").await;
    let d = t.s.deployment(&t.requester, &other, &t.connection).await;
    let a =
        t.s.post(
            &format!("/v1/deployments/{d}/approve"),
            Some(&t.approver),
            json!({}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["status"], "queued", "{}", a.text);
}
