//! Rule tests end to end: a real server, a real agent and the simulators.
//! A version's positive and negative cases are injected into the SIEM
//! (Splunk HEC, Sentinel Logs Ingestion, Elasticsearch `_bulk`), counted by
//! the agent, and judged by the server per case; a failing or missing result
//! blocks approval of a deployment with a precise 409, which only an Admin
//! can override with a written reason (audited).

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use picket_e2e::stack::{SPLUNK_HEC_TOKEN, Stack, StackOpts, tail};
use picket_e2e::wait;
use picket_siem_sim::elastic::ElasticSim;
use picket_siem_sim::sentinel::SentinelSim;
use serde_json::{Value, json};

const FINISH: Duration = Duration::from_secs(90);
const SECRET: &str = "entra-client-secret-0123";
const API_KEY: &str = "ZWxhc3RpYy1pZDplbGFzdGljLWtleQ==";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

/// A rule body with one positive and one negative case (Elastic EQL and
/// ES|QL queries, recognised by their form, name their language).
fn rule(kind: &str, query: &str, positive: Value, negative: Value) -> Value {
    let lower = query.to_ascii_lowercase();
    let language = match kind {
        "elastic" if lower.starts_with("from ") => Some("esql"),
        "elastic" if lower.contains(" where ") => Some("eql"),
        _ => None,
    };
    let mut body = rule_body(kind, query, positive, negative);
    if let Some(l) = language {
        body["language"] = json!(l);
    }
    body
}

fn rule_body(kind: &str, query: &str, positive: Value, negative: Value) -> Value {
    json!({
        "title": "Failed logon for alice", "siem_kind": kind, "severity": "high",
        "query": query, "cron": "*/5 * * * *", "earliest": "-10m", "latest": "now",
        "mitre": ["T1110.001"],
        "tests": [
            { "name": "alice fails", "expect": "match", "events": [positive] },
            { "name": "bob fails", "expect": "no_match", "events": [negative] },
        ],
    })
}

/// Runs version `version`'s tests on `conn` and waits for the outcome.
async fn run_tests(s: &Stack, rule_id: &str, version: i64, conn: &str) -> Value {
    let run = s
        .requester
        .post_ok(
            &format!("/v1/rules/{rule_id}/test-runs"),
            json!({ "version": version, "connection_id": conn }),
        )
        .await
        .unwrap();
    assert_eq!(run["status"], "queued", "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    wait::until("the test run to finish", FINISH, || async {
        let runs = s
            .requester
            .get_ok(&format!("/v1/rules/{rule_id}/test-runs?version={version}"))
            .await?;
        let run = runs
            .as_array()
            .and_then(|a| a.iter().find(|r| r["id"] == json!(id)).cloned());
        Ok(run.filter(|r| r["status"] != "queued"))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nagent log:\n{}\nserver log:\n{}",
            tail(&s.agent.log(), 30),
            tail(&s.server.log(), 30)
        )
    })
}

fn case_counts(run: &Value) -> Vec<(String, u64, bool)> {
    run["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["matched"].as_u64().unwrap(),
                c["passed"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn request(s: &Stack, rule_id: &str, version: i64, conn: &str) -> String {
    s.requester
        .post_ok(
            "/v1/deployments",
            json!({ "rule_id": rule_id, "version": version, "connection_id": conn, "message": "new detection" }),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A precise rule version (passes its tests) and a too broad one (its
/// negative case matches): pass and fail on one SIEM.
async fn pass_then_fail(
    s: &Stack,
    kind: &str,
    conn: &str,
    good: &str,
    broad: &str,
    pos: Value,
    neg: Value,
) -> (String, Value, Value) {
    let v1 = s
        .requester
        .post_ok("/v1/rules", rule(kind, good, pos.clone(), neg.clone()))
        .await
        .unwrap();
    let rule_id = v1["id"].as_str().unwrap().to_owned();
    let passed = run_tests(s, &rule_id, 1, conn).await;
    s.requester
        .post_ok(
            &format!("/v1/rules/{rule_id}/versions"),
            rule(kind, broad, pos, neg),
        )
        .await
        .unwrap();
    let failed = run_tests(s, &rule_id, 2, conn).await;
    (rule_id, passed, failed)
}

fn assert_pass_fail(kind: &str, passed: &Value, failed: &Value) {
    assert_eq!(passed["status"], "passed", "{kind}: {passed}");
    assert_eq!(
        case_counts(passed),
        [
            ("alice fails".to_owned(), 1, true),
            ("bob fails".to_owned(), 0, true)
        ],
        "{kind}"
    );
    assert_eq!(failed["status"], "failed", "{kind}: {failed}");
    assert_eq!(
        case_counts(failed),
        [
            ("alice fails".to_owned(), 1, true),
            ("bob fails".to_owned(), 1, false)
        ],
        "{kind}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splunk_tests_pass_and_fail_and_gate_approval() {
    let s = Stack::start(StackOpts::default()).await.unwrap();
    let conn = s.connection_id.clone();
    // The HEC token is write-only, like the connection's credential.
    let (status, c) = s
        .admin
        .put(
            &format!("/v1/connections/{conn}/hec"),
            json!({ "url": s.sim.base_url(), "test_index": "picket_test_idx", "token": SPLUNK_HEC_TOKEN }),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {c}");
    assert_eq!(c["settings"]["test_index"], "picket_test_idx");
    assert!(!c.to_string().contains(SPLUNK_HEC_TOKEN), "{c}");

    let (rule_id, passed, failed) = pass_then_fail(
        &s,
        "splunk",
        &conn,
        "index=main EventCode=4625 user=alice",
        "index=main EventCode=4625",
        json!({ "EventCode": "4625", "user": "alice" }),
        json!({ "EventCode": "4625", "user": "bob" }),
    )
    .await;
    assert_pass_fail("splunk", &passed, &failed);
    // The events really went through HEC into the test index, tagged.
    let injected = s.sim.events();
    assert_eq!(injected.len(), 4, "{injected:?}");
    assert!(
        injected
            .iter()
            .all(
                |e| e.fields.get("index").map(String::as_str) == Some("picket_test_idx")
                    && e.fields.get("source").map(String::as_str) == Some("picket_test")
            )
    );

    // v2 failed its tests: reviewers see the run with its cases on the
    // request, and approval is refused with a precise 409.
    let dep = request(&s, &rule_id, 2, &conn).await;
    let shown = s
        .approver
        .get_ok(&format!("/v1/deployments/{dep}"))
        .await
        .unwrap();
    let tests = &shown["items"][0]["tests"];
    assert_eq!(tests["status"], "failed", "{shown}");
    assert_eq!(tests["version"], 2, "{shown}");
    assert_eq!(tests["cases"][1]["passed"], false, "{shown}");
    let (status, body) = s
        .approver
        .post(&format!("/v1/deployments/{dep}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 409, "{body}");
    assert_eq!(body["error"]["code"], "tests_not_passed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("rule {rule_id} v2")) && msg.contains("failed"),
        "{msg}"
    );
    // A non-Admin cannot override.
    let (status, body) = s
        .approver
        .post(
            &format!("/v1/deployments/{dep}/approve"),
            json!({ "test_override": "trust me" }),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 403, "{body}");
    // An Admin can, with a written reason, and the deployment goes out.
    let reason = "bob's logons are noise in prod; ticket SOC-142";
    let (status, body) = s
        .admin
        .post(
            &format!("/v1/deployments/{dep}/approve"),
            json!({ "test_override": reason }),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    let done = s.wait_final(&dep, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    let events = s
        .admin
        .get_ok("/v1/audit/events?action=deployment.test_override")
        .await
        .unwrap();
    let ev = &events["events"][0];
    assert_eq!(ev["event"]["resource"]["id"], json!(dep), "{events}");
    assert_eq!(ev["event"]["details"]["reason"], reason, "{ev}");
    assert!(ev.to_string().contains(reason), "{ev}");
    let results = s
        .admin
        .get_ok("/v1/audit/events?action=rule.test_result")
        .await
        .unwrap();
    assert_eq!(results["events"].as_array().unwrap().len(), 2, "{results}");
    let runs = s
        .admin
        .get_ok("/v1/audit/events?action=rule.test_run")
        .await
        .unwrap();
    assert_eq!(runs["events"].as_array().unwrap().len(), 2, "{runs}");

    // v1 passed: approved without any override.
    let dep1 = request(&s, &rule_id, 1, &conn).await;
    s.approve(&dep1).await.unwrap();
    assert_eq!(
        s.wait_final(&dep1, FINISH).await.unwrap()["status"],
        "succeeded"
    );

    // A version with tests never run is blocked too.
    s.requester
        .post_ok(
            &format!("/v1/rules/{rule_id}/versions"),
            rule(
                "splunk",
                "index=main EventCode=4625 user=alice host=dc1",
                json!({ "EventCode": "4625", "user": "alice", "host": "dc1" }),
                json!({ "EventCode": "4625", "user": "bob" }),
            ),
        )
        .await
        .unwrap();
    let dep3 = request(&s, &rule_id, 3, &conn).await;
    let (status, body) = s
        .approver
        .post(&format!("/v1/deployments/{dep3}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("have not been run"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_tests_pass_and_fail_through_logs_ingestion() {
    let s = Stack::start(StackOpts::default()).await.unwrap();
    let sim = SentinelSim::builder()
        .client(CLIENT_ID, SECRET)
        .start()
        .await
        .unwrap();
    let base = sim.base_url();
    let conn = s
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
                "client_id": CLIENT_ID, "client_secret": SECRET,
                "ingestion": { "endpoint": base, "dcr_immutable_id": "dcr-00000000000000000000000000000000",
                               "stream": "Custom-PicketTest_CL", "table": "PicketTest_CL" },
            }),
        )
        .await
        .unwrap();
    let conn = conn["id"].as_str().unwrap().to_owned();
    let (_, passed, failed) = pass_then_fail(
        &s,
        "sentinel",
        &conn,
        "SecurityEvent\n| where EventID == \"4625\"\n| where Account == \"alice\"",
        "SecurityEvent | where EventID == \"4625\"",
        json!({ "EventID": "4625", "Account": "alice" }),
        json!({ "EventID": "4625", "Account": "bob" }),
    )
    .await;
    assert_pass_fail("sentinel", &passed, &failed);
    assert_eq!(sim.events("PicketTest_CL").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elastic_tests_pass_and_fail_through_bulk() {
    let s = Stack::start(StackOpts::default()).await.unwrap();
    let sim = ElasticSim::builder()
        .api_key(API_KEY)
        .start()
        .await
        .unwrap();
    let conn = s
        .admin
        .post_ok(
            "/v1/connections",
            json!({
                "name": "prod-elastic", "kind": "elastic", "agent_id": s.agent.agent_id,
                "base_url": sim.base_url(), "elasticsearch_url": sim.base_url(), "api_key": API_KEY,
            }),
        )
        .await
        .unwrap();
    let conn = conn["id"].as_str().unwrap().to_owned();
    let (_, passed, failed) = pass_then_fail(
        &s,
        "elastic",
        &conn,
        "event.code:4625 and user.name:alice",
        "event.code:4625",
        json!({ "event.code": "4625", "user.name": "alice" }),
        json!({ "event.code": "4625", "user.name": "bob" }),
    )
    .await;
    assert_pass_fail("elastic", &passed, &failed);
}

/// EQL and ES|QL rules are tested too: the Elastic connector counts EQL
/// matches with `_eql/search` and ES|QL ones with `_query` (source replaced
/// by the test index, rows counted), both bounded to the run's events and
/// window. A precise version passes, a too broad one fails, and the
/// failing one blocks approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elastic_eql_and_esql_tests_pass_and_fail() {
    let s = Stack::start(StackOpts::default()).await.unwrap();
    let sim = ElasticSim::builder()
        .api_key(API_KEY)
        .start()
        .await
        .unwrap();
    let conn = s
        .admin
        .post_ok(
            "/v1/connections",
            json!({
                "name": "prod-elastic", "kind": "elastic", "agent_id": s.agent.agent_id,
                "base_url": sim.base_url(), "elasticsearch_url": sim.base_url(), "api_key": API_KEY,
            }),
        )
        .await
        .unwrap();
    let conn = conn["id"].as_str().unwrap().to_owned();
    let alice = json!({ "event.category": "process", "process.name": "mimikatz.exe", "user.name": "alice" });
    let bob =
        json!({ "event.category": "process", "process.name": "mimikatz.exe", "user.name": "bob" });
    let (eql_rule, passed, failed) = pass_then_fail(
        &s,
        "elastic",
        &conn,
        "process where process.name == \"mimikatz.exe\" and user.name == \"alice\"",
        "process where process.name == \"mimikatz.exe\"",
        alice.clone(),
        bob.clone(),
    )
    .await;
    assert_pass_fail("eql", &passed, &failed);
    let (_, passed, failed) = pass_then_fail(
        &s,
        "elastic",
        &conn,
        "FROM logs-* | WHERE process.name == \"mimikatz.exe\" | WHERE user.name == \"alice\" | KEEP user.name | LIMIT 10",
        "FROM logs-* | WHERE process.name == \"mimikatz.exe\" | STATS n = COUNT(*) BY user.name | WHERE n > 0",
        alice,
        bob,
    )
    .await;
    assert_pass_fail("esql", &passed, &failed);
    // Counts only: 2 rules x 2 versions x 2 cases, one event each, all kept
    // in the test index and nowhere else.
    assert_eq!(sim.documents("picket-test").len(), 8);

    // The failing EQL version blocks approval.
    let d = request(&s, &eql_rule, 2, &conn).await;
    let (st, body) = s
        .approver
        .post(&format!("/v1/deployments/{d}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["error"]["code"], "tests_not_passed");
}
