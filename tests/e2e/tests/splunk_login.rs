//! Splunk session-key credentials end to end: a connection registered with a
//! username and password (write-only, sealed like a token), a Splunk
//! simulator that accepts no token at all (only session keys from
//! `/services/auth/login`), and a rule deployed through a real agent that
//! lands there — also after the simulator expired every session key.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use picket_e2e::stack::{Stack, StackOpts, tail};
use picket_siem_sim::splunk::SplunkSim;
use serde_json::json;

const FINISH: Duration = Duration::from_secs(120);
const USER: &str = "picket-svc";
const PASSWORD: &str = "splunk-password-0123-canary";

async fn deploy(s: &Stack, title: &str, connection_id: &str) -> (String, serde_json::Value) {
    let (rule_id, _) = s
        .create_rule(title, "index=main EventCode=4625")
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_splunk_connection_with_username_and_password_logs_in_for_session_keys() {
    let s = Stack::start(StackOpts::default()).await.unwrap();
    // Only a user: every Bearer token is refused by this simulator.
    let sim = SplunkSim::builder()
        .user(USER, PASSWORD)
        .start()
        .await
        .unwrap();
    let agent = s.agent.agent_id.to_string();

    // Precise refusals, nothing half-created.
    let base = json!({ "name": "login-splunk", "kind": "splunk", "agent_id": agent, "base_url": sim.base_url() });
    let with = |extra: serde_json::Value| {
        let mut b = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for (body, code, mention) in [
        (with(json!({"username": USER})), "missing_field", "password"),
        (
            with(json!({"password": PASSWORD})),
            "missing_field",
            "username",
        ),
        (
            with(json!({"username": USER, "password": PASSWORD, "token": "t"})),
            "field_not_allowed",
            "token",
        ),
        (
            with(json!({"username": "", "password": PASSWORD})),
            "invalid_field",
            "username",
        ),
        (with(json!({})), "missing_field", "token"),
    ] {
        let (status, v) = s.admin.post("/v1/connections", body.clone()).await.unwrap();
        assert_eq!(status.as_u16(), 400, "{body} -> {v}");
        assert_eq!(v["error"]["code"], code, "{body} -> {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(mention),
            "{v}"
        );
    }
    let (status, v) = s
        .admin
        .post(
            "/v1/connections",
            json!({ "name": "sentinel-x", "kind": "sentinel", "agent_id": agent, "username": USER, "password": PASSWORD }),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400, "{v}");
    assert_eq!(v["error"]["code"], "field_not_allowed", "{v}");

    let conn = s
        .admin
        .post_ok(
            "/v1/connections",
            with(json!({"username": USER, "password": PASSWORD})),
        )
        .await
        .unwrap();
    assert_eq!(conn["username"], USER);
    assert_eq!(conn["credential"], "********");
    assert!(
        !conn.to_string().contains(PASSWORD),
        "the password is write-only: {conn}"
    );
    let conn_id = conn["id"].as_str().unwrap().to_owned();
    let listed = s.admin.get_ok("/v1/connections").await.unwrap();
    assert!(!listed.to_string().contains(PASSWORD), "{listed}");

    let (rule_id, done) = deploy(&s, "Failed logons", &conn_id).await;
    assert_eq!(
        done["status"],
        "succeeded",
        "{done}\n{}",
        tail(&s.agent.log(), 30)
    );
    let saved = sim
        .saved_search(&format!("picket-{rule_id}"))
        .expect("saved search created through a session key");
    assert_eq!(saved.content["search"], "index=main EventCode=4625");

    // Expired session keys: the agent logs in again and carries on.
    sim.expire_sessions();
    let (rule_id, done) = deploy(&s, "Second rule", &conn_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(sim.saved_search(&format!("picket-{rule_id}")).is_some());

    // A wrong password is refused by Splunk and comes back as its class.
    let (status, v) = s
        .admin
        .put(
            &format!("/v1/connections/{conn_id}/credential"),
            json!({ "secret": "not-the-password" }),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{v}");
    assert_eq!(v["username"], USER, "{v}");
    let (_, failed) = deploy(&s, "Third rule", &conn_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_class"], "auth_failed", "{failed}");

    // The password is in no file of the server (database included) in clear.
    for entry in walk(&s.root.join("server")) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the password is in {} in clear",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
