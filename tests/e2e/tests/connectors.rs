//! Sentinel and Elastic end to end: a connection of each kind registered
//! through the API (secret write-only), a rule approved and deployed through
//! a real agent into the simulator, the agent's health report covering the
//! connection, and a SIEM failure whose text (a canary) never leaves the agent:
//! not in its frames (recorded by a relay), nor in any file of the server or agent.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use picket_e2e::stack::{Stack, StackOpts, tail};
use picket_e2e::wait;
use picket_siem_sim::elastic::{ElasticSim, Fault as ElasticFault};
use picket_siem_sim::sentinel::{Fault as SentinelFault, SentinelSim};
use serde_json::{Value, json};

const FINISH: Duration = Duration::from_secs(90);
const SECRET: &str = "entra-client-secret-0123";
const API_KEY: &str = "ZWxhc3RpYy1pZDplbGFzdGljLWtleQ==";
const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

async fn deploy_to(s: &Stack, title: &str, query: &str, connection_id: &str) -> (String, Value) {
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
    (rule_id, s.wait_final(&dep, FINISH).await.unwrap())
}

/// Restarts the agent so its next `Welcome` lists the new connection, then
/// waits for a health report where it is reachable.
async fn wait_reachable(s: &mut Stack, connection_id: &str) -> Value {
    s.agent.kill().await;
    s.agent.start().unwrap();
    wait::until(
        "a health report with the connection reachable",
        FINISH,
        || async {
            let a = s
                .admin
                .get_ok(&format!("/v1/agents/{}", s.agent.agent_id))
                .await?;
            let hit = a["health"]["siem"].as_array().and_then(|v| {
                v.iter()
                    .find(|x| {
                        x["connection_id"] == json!(connection_id) && x["reachable"] == json!(true)
                    })
                    .cloned()
            });
            Ok(hit)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail(&s.agent.log(), 40)))
}

fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p, bytes));
        }
    }
    out
}

/// The canary is in none of the agent's frames and none of the server's and
/// agent's files (database, logs, state); the frames include job results.
fn assert_canary_absent(s: &Stack, canary: &str) {
    let frames = s.proxy.as_ref().expect("the relay").agent_frames();
    assert!(
        frames
            .iter()
            .filter(|f| f.contains("\"job_result\""))
            .count()
            >= 2,
        "the relay saw the job results: {frames:?}"
    );
    for f in &frames {
        assert!(!f.contains(canary), "SIEM text leaked into a frame: {f}");
    }
    for (path, bytes) in files_under(&s.root) {
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "SIEM text leaked into {}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_rule_lands_in_sentinel_and_its_failures_stay_classes() {
    let canary = format!("picket-canary-{}", uuid::Uuid::new_v4().simple());
    let mut s = Stack::start(StackOpts {
        proxy: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let sim = SentinelSim::builder()
        .client(CLIENT_ID, SECRET)
        .error_text_suffix(canary.clone())
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
            }),
        )
        .await
        .unwrap();
    assert_eq!(conn["kind"], "sentinel");
    assert_eq!(conn["credential"], "********");
    assert_eq!(conn["settings"]["workspace_name"], "soc-ws");
    assert!(
        !conn.to_string().contains(SECRET),
        "the secret is write-only"
    );
    let conn_id = conn["id"].as_str().unwrap().to_owned();

    let query = "SecurityEvent | where EventID == 4625";
    let (rule_id, done) = deploy_to(&s, "Failed logons", query, &conn_id).await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}",
        tail(&s.agent.log(), 30)
    );
    let rule = sim
        .rule(&format!("picket-{rule_id}"))
        .expect("alert rule deployed");
    assert_eq!(rule.kind, "Scheduled");
    assert_eq!(rule.properties["query"], query);
    assert_eq!(rule.properties["queryFrequency"], "PT5M");
    assert_eq!(rule.properties["queryPeriod"], "PT10M");
    assert_eq!(rule.properties["displayName"], "Failed logons");

    // A SIEM failure comes back as its class only.
    sim.set_fault(Some(SentinelFault::Status(500)));
    let (_, failed) = deploy_to(&s, "Second rule", query, &conn_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_class"], "siem_error");
    assert!(sim.suffixed_error_count() > 0, "the canary was served");
    sim.set_fault(None);

    let health = wait_reachable(&mut s, &conn_id).await;
    assert!(health["latency_ms"].as_u64().is_some(), "{health}");
    assert_canary_absent(&s, &canary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_rule_lands_in_elastic_and_its_failures_stay_classes() {
    let canary = format!("picket-canary-{}", uuid::Uuid::new_v4().simple());
    let mut s = Stack::start(StackOpts {
        proxy: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let sim = ElasticSim::builder()
        .api_key(API_KEY)
        .error_text_suffix(canary.clone())
        .start()
        .await
        .unwrap();
    let conn = s
        .admin
        .post_ok(
            "/v1/connections",
            json!({
                "name": "prod-elastic", "kind": "elastic", "agent_id": s.agent.agent_id,
                "base_url": sim.base_url(), "elasticsearch_url": sim.base_url(),
                "space": "soc", "api_key": API_KEY,
            }),
        )
        .await
        .unwrap();
    assert_eq!(conn["kind"], "elastic");
    assert_eq!(conn["credential"], "********");
    assert_eq!(conn["settings"]["test_index"], "picket-test");
    assert!(
        !conn.to_string().contains(API_KEY),
        "the API key is write-only"
    );
    let conn_id = conn["id"].as_str().unwrap().to_owned();

    let query = "event.code:4625 and winlog.channel:Security";
    let (rule_id, done) = deploy_to(&s, "Failed logons", query, &conn_id).await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}",
        tail(&s.agent.log(), 30)
    );
    let rule = sim
        .rule(&format!("picket-{rule_id}"))
        .expect("detection rule deployed");
    assert_eq!(rule.space, "soc");
    assert_eq!(rule.body["query"], query);
    assert_eq!(rule.body["type"], "query");
    assert_eq!(rule.body["interval"], "5m");
    assert_eq!(rule.body["from"], "now-10m");

    sim.set_fault(Some(ElasticFault::Status(401)));
    let (_, failed) = deploy_to(&s, "Second rule", query, &conn_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_class"], "auth_failed");
    assert!(sim.suffixed_error_count() > 0, "the canary was served");
    sim.set_fault(None);

    wait_reachable(&mut s, &conn_id).await;
    assert_canary_absent(&s, &canary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_settings_are_validated_with_precise_errors() {
    let s = Stack::start(StackOpts::default()).await.unwrap();
    let agent = s.agent.agent_id.to_string();
    let sentinel = |extra: Value| {
        let mut body = json!({
            "name": "s1", "kind": "sentinel", "agent_id": agent,
            "subscription_id": "00000000-0000-0000-0000-000000000001",
            "resource_group": "rg", "workspace_name": "ws",
            "workspace_id": "00000000-0000-0000-0000-0000000000aa",
            "tenant_id": "00000000-0000-0000-0000-0000000000bb",
            "client_id": CLIENT_ID, "client_secret": SECRET,
        });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let cases = [
        (
            sentinel(json!({"subscription_id": "not-a-guid"})),
            "invalid_field",
            "subscription_id",
        ),
        (
            sentinel(json!({"client_secret": null})),
            "missing_field",
            "client_secret",
        ),
        (
            sentinel(json!({"token": "x"})),
            "field_not_allowed",
            "token",
        ),
        (
            sentinel(json!({"resource_group": "bad name"})),
            "invalid_field",
            "resource_group",
        ),
        (
            sentinel(
                json!({"ingestion": {"endpoint": "https://dce.example", "dcr_immutable_id": "dcr-123", "stream": "Custom-T_CL", "table": "T_CL"}}),
            ),
            "invalid_field",
            "dcr_immutable_id",
        ),
        (
            json!({"name": "e1", "kind": "elastic", "agent_id": agent, "base_url": "https://kibana.example", "api_key": "k"}),
            "missing_field",
            "elasticsearch_url",
        ),
        (
            json!({"name": "e1", "kind": "elastic", "agent_id": agent, "base_url": "https://kibana.example", "elasticsearch_url": "https://es.example", "api_key": "k", "test_index": "Upper"}),
            "invalid_field",
            "test_index",
        ),
        (
            json!({"name": "e1", "kind": "elastic", "agent_id": agent, "base_url": "https://kibana.example", "elasticsearch_url": "https://es.example", "api_key": "k", "space": "Has Space"}),
            "invalid_field",
            "space",
        ),
        (
            json!({"name": "q1", "kind": "qradar", "agent_id": agent, "base_url": "https://q.example"}),
            "unsupported_kind",
            "kind",
        ),
    ];
    for (body, code, mention) in cases {
        let (status, v) = s.admin.post("/v1/connections", body.clone()).await.unwrap();
        assert_eq!(status.as_u16(), 400, "{body} -> {v}");
        assert_eq!(v["error"]["code"], code, "{body} -> {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(mention),
            "{v}"
        );
    }
    let (status, listed) = s.admin.get("/v1/connections").await.unwrap();
    assert!(status.is_success());
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "nothing half-created: {listed}"
    );
}
