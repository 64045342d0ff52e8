//! Per-rule health end to end: a rule deployed through a real agent into each
//! simulator (Splunk, Sentinel, Elastic), the simulator's scripted scheduler
//! producing successful, skipped and failed runs (and runs outside the
//! window), a `rule_health` job asked for through the API, and the numbers
//! the server stores and serves at `GET /v1/rules/{id}/health` equal to what
//! the simulator scripted, reduced the way docs/connectors.md says per SIEM.
//! A second test leaves it to the scheduler (`jobs.rule_health_interval_secs`).

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use picket_e2e::stack::{Stack, StackOpts, tail};
use picket_e2e::wait;
use picket_siem_sim::common::{RunStatus, ScriptedRun};
use picket_siem_sim::elastic::ElasticSim;
use picket_siem_sim::sentinel::SentinelSim;
use serde_json::{Value, json};

const FINISH: Duration = Duration::from_secs(120);
const SECRET: &str = "entra-client-secret-0123";
const API_KEY: &str = "ZWxhc3RpYy1pZDplbGFzdGljLWtleQ==";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// The window asked for: the scripted runs inside it are minutes old, the
/// one outside it two hours old.
const WINDOW_SECS: i64 = 1800;

async fn deploy_to(s: &Stack, title: &str, query: &str, connection_id: &str) -> String {
    let (rule_id, _) = s.create_rule(title, query).await.unwrap();
    let dep = s
        .requester
        .post_ok(
            "/v1/deployments",
            json!({ "rule_id": rule_id, "version": 1, "connection_id": connection_id, "message": "new detection" }),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.approve(&dep).await.unwrap();
    let done = s.wait_final(&dep, FINISH).await.unwrap();
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}",
        tail(&s.agent.log(), 30)
    );
    rule_id
}

/// Three successes (7 results, 2 of them alerting), one skipped, one failed,
/// all minutes old, plus a success two hours old that the window excludes.
/// The newest run is a success 60 s ago that left a 30 s gap.
fn script() -> Vec<ScriptedRun> {
    let newest = ScriptedRun {
        duration_ms: 1500,
        gap_ms: 30_000,
        ..ScriptedRun::success(60, 5, 1)
    };
    vec![
        ScriptedRun::failure(300),
        ScriptedRun::success(240, 0, 0),
        ScriptedRun::skipped(180),
        ScriptedRun::success(120, 2, 1),
        newest,
        ScriptedRun::success(7200, 9, 1),
    ]
}

/// Asks for a rule health check on the connection and waits until the rule's
/// health holds a sample from that job; returns the sample.
async fn check_and_read(s: &Stack, connection_id: &str, rule_id: &str) -> Value {
    let sent = s
        .requester
        .post_ok(
            &format!("/v1/connections/{connection_id}/rule-health"),
            json!({ "window_secs": WINDOW_SECS }),
        )
        .await
        .unwrap();
    let jobs = sent["job_ids"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "one job for one deployed rule: {sent}");
    let job = jobs[0].clone();
    let path = format!("/v1/rules/{rule_id}/health?connection_id={connection_id}");
    wait::until("the rule health sample", FINISH, || async {
        let v = s.admin.get_ok(&path).await?;
        let hit = v["history"]
            .as_array()
            .and_then(|h| h.iter().find(|x| x["job_id"] == job).cloned());
        Ok(hit.map(|sample| (sample, v)))
    })
    .await
    .map(|(sample, whole)| {
        assert_eq!(
            whole["latest"][0], sample,
            "the newest sample is the latest: {whole}"
        );
        sample
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nagent log:\n{}\nserver log:\n{}",
            tail(&s.agent.log(), 40),
            tail(&s.server.log(), 40)
        )
    })
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_rule_health_equals_what_each_simulator_scripted() {
    let s = Stack::start(StackOpts::default()).await.unwrap();
    let runs = script();
    let newest = runs.iter().max_by_key(|r| r.at).copied().unwrap();
    assert_eq!(newest.status, RunStatus::Success);

    // Splunk: scheduler records in `_internal`, counted per status.
    let splunk_rule = deploy_to(
        &s,
        "Failed logons",
        "index=main EventCode=4625",
        &s.connection_id,
    )
    .await;
    s.sim
        .script_runs(&format!("picket-{splunk_rule}"), runs.clone());
    let h = check_and_read(&s, &s.connection_id, &splunk_rule).await;
    assert_eq!(h["error_class"], Value::Null, "{h}");
    assert_eq!(h["window_secs"], WINDOW_SECS, "{h}");
    assert_eq!(h["runs_succeeded"], 3, "{h}");
    assert_eq!(h["runs_skipped"], 1, "{h}");
    assert_eq!(h["runs_failed"], 1, "{h}");
    assert_eq!(h["results_total"], 7, "{h}");
    assert_eq!(h["alerts_fired"], 2, "successful runs with results: {h}");
    assert_eq!(h["last_run_at"], rfc3339(newest.at), "{h}");
    assert_eq!(h["last_run_duration_ms"], 1500, "{h}");
    assert_eq!(h["gap_ms"], Value::Null, "Splunk reports no gap: {h}");

    // Sentinel: `SentinelHealth` through the Log Analytics query API.
    let sentinel = SentinelSim::builder()
        .client(CLIENT_ID, SECRET)
        .start()
        .await
        .unwrap();
    let base = sentinel.base_url();
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
            }),
        )
        .await
        .unwrap();
    let sentinel_conn = conn["id"].as_str().unwrap().to_owned();
    let sentinel_rule = deploy_to(
        &s,
        "Failed logons (Sentinel)",
        "SecurityEvent | where EventID == 4625",
        &sentinel_conn,
    )
    .await;
    sentinel.script_runs(&format!("picket-{sentinel_rule}"), runs.clone());
    let h = check_and_read(&s, &sentinel_conn, &sentinel_rule).await;
    assert_eq!(h["error_class"], Value::Null, "{h}");
    assert_eq!(h["runs_succeeded"], 3, "{h}");
    assert_eq!(h["runs_skipped"], 1, "partial successes: {h}");
    assert_eq!(h["runs_failed"], 1, "{h}");
    assert_eq!(h["results_total"], 7, "sum of QueryResultAmount: {h}");
    assert_eq!(h["alerts_fired"], 2, "sum of AlertsGeneratedAmount: {h}");
    assert_eq!(h["last_run_at"], rfc3339(newest.at), "{h}");
    assert_eq!(h["gap_ms"], Value::Null, "{h}");

    // Elastic: only the last execution is in `execution_summary`.
    let elastic = ElasticSim::builder()
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
                "base_url": elastic.base_url(), "elasticsearch_url": elastic.base_url(),
                "api_key": API_KEY,
            }),
        )
        .await
        .unwrap();
    let elastic_conn = conn["id"].as_str().unwrap().to_owned();
    let elastic_rule = deploy_to(
        &s,
        "Failed logons (Elastic)",
        "event.code:4625",
        &elastic_conn,
    )
    .await;
    elastic.script_runs(&format!("picket-{elastic_rule}"), runs.clone());
    let h = check_and_read(&s, &elastic_conn, &elastic_rule).await;
    assert_eq!(h["error_class"], Value::Null, "{h}");
    assert_eq!(h["runs_succeeded"], 1, "the last execution: {h}");
    assert_eq!(h["runs_skipped"], 0, "{h}");
    assert_eq!(h["runs_failed"], 0, "{h}");
    assert_eq!(h["results_total"], Value::Null, "{h}");
    assert_eq!(h["alerts_fired"], Value::Null, "{h}");
    assert_eq!(h["last_run_at"], rfc3339(newest.at), "{h}");
    assert_eq!(
        h["last_run_duration_ms"], 1650,
        "search + indexing duration: {h}"
    );
    assert_eq!(h["gap_ms"], 30_000, "execution_gap_duration_s: {h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_collects_rule_health_without_being_asked() {
    let s = Stack::start(StackOpts {
        server_toml: "[jobs]\nrule_health_interval_secs = 5\n".into(),
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let rule = deploy_to(
        &s,
        "Failed logons",
        "index=main EventCode=4625",
        &s.connection_id,
    )
    .await;
    s.sim.script_runs(
        &format!("picket-{rule}"),
        vec![ScriptedRun::success(10, 3, 1), ScriptedRun::failure(20)],
    );
    let path = format!("/v1/rules/{rule}/health");
    let sample = wait::until("a scheduled rule health sample", FINISH, || async {
        let v = s.admin.get_ok(&path).await?;
        Ok(v["latest"]
            .as_array()
            .and_then(|l| l.first())
            .filter(|x| x["error_class"].is_null())
            .cloned())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nserver log:\n{}", tail(&s.server.log(), 40)));
    assert_eq!(sample["connection_id"], json!(s.connection_id));
    assert_eq!(
        sample["window_secs"], 60,
        "the interval, at least 60 s: {sample}"
    );

    // A viewer-level read of an unknown rule is a 404, not an empty answer.
    let (status, _) = s
        .admin
        .get(&format!("/v1/rules/{}/health", uuid::Uuid::now_v7()))
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 404);
}
