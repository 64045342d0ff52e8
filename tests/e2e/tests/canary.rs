//! Never a log line: a unique canary string is placed in every error body
//! the Splunk simulator returns and in a saved search stored there. A full
//! run (a successful deployment, then failures: 401 through a connection
//! with a wrong token, a 500 fault, a 429 fault, and health probes during a
//! fault) goes through a relay that records every frame the agent sends.
//! The canary must be in the simulator's answers (so the test is not
//! vacuous) and in none of: the agent's frames, the server's database files,
//! the server's log, the agent's log and its state directory.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use picket_e2e::stack::{Stack, StackOpts};
use picket_siem_sim::splunk::{Fault, SavedSearch};
use serde_json::{Value, json};

const FINISH: Duration = Duration::from_secs(60);

/// Requests, approves and waits for a deployment to `connection_id`.
async fn deploy(s: &Stack, title: &str, connection_id: &str) -> Value {
    let (rule_id, _) = s
        .create_rule(title, "index=main sourcetype=canary | stats count")
        .await
        .unwrap();
    let dep = s
        .requester
        .post_ok(
            "/v1/deployments",
            json!({ "rule_id": rule_id, "version": 1, "connection_id": connection_id, "message": "canary run" }),
        )
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.approve(&dep).await.unwrap();
    s.wait_final(&dep, FINISH).await.unwrap()
}

/// Every file under `dir`, with its bytes.
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

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn siem_text_never_leaves_the_agent() {
    let canary = format!("picket-canary-{}", uuid::Uuid::new_v4().simple());
    let s = Stack::start(StackOpts {
        proxy: true,
        sim_error_suffix: Some(canary.clone()),
        ..StackOpts::default()
    })
    .await
    .unwrap();
    // A customer's own saved search holding the canary, next to ours.
    s.sim.insert_saved_search(SavedSearch {
        name: "customer-search".into(),
        app: "search".into(),
        owner: "admin".into(),
        content: [("search".to_owned(), format!("index=main {canary}"))].into(),
    });

    // 1. Success.
    let ok = deploy(&s, "Canary success", &s.connection_id).await;
    assert_eq!(ok["status"], "succeeded", "{ok}");

    // 2. 401: a second connection to the same SIEM with a wrong token.
    let bad = s
        .admin
        .post_ok(
            "/v1/connections",
            json!({ "name": "bad-token-splunk", "kind": "splunk", "agent_id": s.agent.agent_id, "base_url": s.sim.base_url(), "token": "wrong-token-000" }),
        )
        .await
        .unwrap();
    let bad_id = bad["id"].as_str().unwrap().to_owned();
    let r = deploy(&s, "Canary 401", &bad_id).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["error_class"], "auth_failed", "{r}");

    // 3. 500 fault, held long enough for health probes to hit it too.
    s.sim.set_fault(Some(Fault::Status(500)));
    let r = deploy(&s, "Canary 500", &s.connection_id).await;
    assert_eq!(r["status"], "failed", "{r}");
    tokio::time::sleep(Duration::from_secs(6)).await;

    // 4. 429 fault.
    s.sim.set_fault(Some(Fault::Status(429)));
    let r = deploy(&s, "Canary 429", &s.connection_id).await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["error_class"], "rate_limited", "{r}");
    s.sim.set_fault(None);
    // Let a health report with the SIEM reachable again go out.
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Not vacuous: the simulator did answer with the canary.
    assert!(
        s.sim.suffixed_error_count() >= 3,
        "{}",
        s.sim.suffixed_error_count()
    );
    let body = reqwest::Client::new()
        .get(format!(
            "{}/services/server/info?output_mode=json",
            s.sim.base_url()
        ))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains(&canary), "{body}");
    assert!(
        s.sim
            .saved_search("customer-search")
            .unwrap()
            .content
            .values()
            .any(|v| v.contains(&canary))
    );

    // Every frame the agent sent: results and health reports included, no canary.
    let frames = s.proxy.as_ref().unwrap().agent_frames();
    let results = frames
        .iter()
        .filter(|f| f.contains("\"type\":\"job_result\""))
        .count();
    let health = frames
        .iter()
        .filter(|f| f.contains("\"type\":\"health\""))
        .count();
    assert!(
        results >= 4 && health >= 2,
        "captured {} frames, {results} results, {health} health reports",
        frames.len()
    );
    for f in &frames {
        assert!(!f.contains(&canary), "the canary left the agent: {f}");
    }

    // The server's database (SQLite file, -wal, -shm) and everything else in its data dir.
    let server_files = files_under(&s.server.data_dir());
    assert!(
        server_files
            .iter()
            .any(|(p, _)| p.to_string_lossy().contains(".db")
                || p.to_string_lossy().contains("sqlite")),
        "no database file found: {:?}",
        server_files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for (p, bytes) in &server_files {
        assert!(
            !contains(bytes, canary.as_bytes()),
            "canary in {}",
            p.display()
        );
    }
    let server_log = s.server.log();
    assert!(!server_log.is_empty());
    assert!(!server_log.contains(&canary), "canary in the server log");

    // The agent's own log (debug level in tests) and its state (ledger, journal).
    let agent_log = s.agent.log();
    assert!(!agent_log.contains(&canary), "canary in the agent log");
    for (p, bytes) in files_under(&s.agent.state_dir) {
        assert!(
            !contains(&bytes, canary.as_bytes()),
            "canary in {}",
            p.display()
        );
    }
    // The journal saw every job, refusals and failures included.
    let journal = std::fs::read_to_string(s.agent.state_dir.join("journal.jsonl")).unwrap();
    assert!(journal.lines().count() >= 4, "{journal}");
}
