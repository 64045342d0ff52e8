//! The hardened channel, end to end, with real server and agent processes:
//! enrollment tokens (reuse, use caps, revocation), agent revocation (the live
//! connection is closed at once, the agent stops for good, its keys cannot
//! enroll again, its queued work fails instead of hanging), connection
//! admission control (`RetryAfter`), and oversized frames.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use picket_e2e::api::Api;
use picket_e2e::procs::{AgentOpts, AgentProc, ServerOpts, ServerProc};
use picket_e2e::stack::{Stack, StackOpts, tail};
use picket_e2e::wait;
use picket_proto::{AgentVersion, B64, EnrollRequest, EnrollmentToken, Hostname};
use picket_shared::AgentKeys;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Exit code of `picket-agent` when the server revoked it (agent/src/main.rs).
const EXIT_REVOKED: i32 = 3;
const WAIT: Duration = Duration::from_secs(30);

/// A server with a claimed tenant, and its admin.
struct Bare {
    tmp: tempfile::TempDir,
    server: ServerProc,
    admin: Api,
}

async fn bare(opts: ServerOpts) -> Bare {
    picket_e2e::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let server = ServerProc::start(&tmp.path().join("server"), opts)
        .await
        .unwrap();
    let admin = Api::new(&server.url, None)
        .unwrap()
        .claim("admin@acme.test")
        .await
        .unwrap();
    Bare { tmp, server, admin }
}

/// Creates a token (`body` as for `POST /v1/enrollment-tokens`); returns (id, text).
async fn token(admin: &Api, body: Value) -> (String, String) {
    let v = admin.post_ok("/v1/enrollment-tokens", body).await.unwrap();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

async fn enroll(b: &Bare, name: &str, token: &str) -> anyhow::Result<AgentProc> {
    AgentProc::enroll(
        &b.tmp.path().join(name),
        &b.server.url,
        token,
        &AgentOpts {
            plaintext: true,
            ..AgentOpts::default()
        },
    )
    .await
}

/// The agent keys stored in a state directory (as `picket-agent` wrote them).
fn keys_in(state_dir: &Path) -> AgentKeys {
    let read = |f: &str| -> [u8; 32] {
        std::fs::read(state_dir.join(f))
            .unwrap()
            .try_into()
            .unwrap()
    };
    AgentKeys::from_bytes(&read("x25519.key"), &read("ed25519.key"))
}

/// An enrollment request for `token`, signed with `keys`, as the agent builds it.
fn enroll_request(token: &str, keys: &AgentKeys) -> Value {
    let t = EnrollmentToken::parse(token).unwrap();
    let x = keys.x25519_public();
    let e = keys.ed25519_public();
    let req = EnrollRequest {
        token_secret: B64(t.secret),
        hostname: Hostname::new("reused-keys-host").unwrap(),
        version: AgentVersion::new("0.1.0").unwrap(),
        x25519_public: B64(x),
        ed25519_public: B64(e),
        proof: B64(keys.sign(&EnrollRequest::proof_bytes(&t.secret, &x, &e))),
    };
    serde_json::to_value(&req).unwrap()
}

async fn wait_agent(admin: &Api, agent_id: &str, what: &str, pred: impl Fn(&Value) -> bool) {
    let path = format!("/v1/agents/{agent_id}");
    wait::until(what, WAIT, || async {
        let v = admin.get_ok(&path).await?;
        Ok(pred(&v).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_reuse_is_refused_and_max_uses_caps_enrollments() {
    let b = bare(ServerOpts::default()).await;

    // Single use by default: the second enrollment gets a precise error in the CLI output.
    let (single_id, single) = token(&b.admin, json!({ "label": "one host" })).await;
    enroll(&b, "first", &single).await.unwrap();
    let err = format!("{:#}", enroll(&b, "second", &single).await.err().unwrap());
    assert!(err.contains("token_used"), "{err}");
    assert!(err.contains("already been used"), "{err}");

    // max_uses = 2: exactly two hosts enroll.
    let (bulk_id, bulk) = token(&b.admin, json!({ "label": "site-b", "max_uses": 2 })).await;
    let a1 = enroll(&b, "bulk-1", &bulk).await.unwrap();
    let a2 = enroll(&b, "bulk-2", &bulk).await.unwrap();
    assert_ne!(a1.agent_id, a2.agent_id);
    let err = format!("{:#}", enroll(&b, "bulk-3", &bulk).await.err().unwrap());
    assert!(err.contains("token_used"), "{err}");

    // The listing shows uses and caps, never a secret.
    let (status, list) = b.admin.get("/v1/enrollment-tokens").await.unwrap();
    assert_eq!(status, 200, "{list}");
    let text = list.to_string();
    for secret in [&single, &bulk] {
        let part = secret.split('.').nth(1).unwrap();
        assert!(!text.contains(part), "a token secret was listed: {text}");
    }
    let find = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    };
    let s = find(&single_id);
    assert_eq!(
        (&s["uses"], &s["max_uses"], &s["status"]),
        (&json!(1), &json!(1), &json!("used_up"))
    );
    let m = find(&bulk_id);
    assert_eq!(
        (&m["uses"], &m["max_uses"], &m["status"], &m["label"]),
        (&json!(2), &json!(2), &json!("used_up"), &json!("site-b"))
    );
    assert!(
        m["expires_at"].is_string() && m["revoked_at"].is_null(),
        "{m}"
    );

    // Only an admin may list tokens.
    let viewer = b.admin.add_user("vic@acme.test", "viewer").await.unwrap();
    let (status, _) = viewer.get("/v1/enrollment-tokens").await.unwrap();
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_refused() {
    let b = bare(ServerOpts::default()).await;
    let (id, tok) = token(&b.admin, json!({ "max_uses": 5 })).await;

    let user = b.admin.add_user("dana@acme.test", "user").await.unwrap();
    let (status, body) = user
        .post(&format!("/v1/enrollment-tokens/{id}/revoke"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 403, "only an admin revokes: {body}");

    let revoked = b
        .admin
        .post_ok(&format!("/v1/enrollment-tokens/{id}/revoke"), json!({}))
        .await
        .unwrap();
    assert_eq!(revoked["status"], "revoked", "{revoked}");
    assert!(revoked["revoked_at"].is_string());

    let err = format!("{:#}", enroll(&b, "late", &tok).await.err().unwrap());
    assert!(err.contains("token_revoked"), "{err}");

    let (status, body) = b
        .admin
        .post(&format!("/v1/enrollment-tokens/{id}/revoke"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_revoked");
    let (status, _) = b
        .admin
        .post(
            &format!("/v1/enrollment-tokens/{}/revoke", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_connected_agent_stops_it_for_good() {
    let mut s = Stack::start(StackOpts::default()).await.unwrap();
    let old_id = s.agent.agent_id.clone();

    let v = s
        .admin
        .post_ok(&format!("/v1/agents/{old_id}/revoke"), json!({}))
        .await
        .unwrap();
    assert_eq!(v["status"], "revoked", "{v}");

    // The live connection is told at once: the agent exits with code 3.
    let code = s
        .agent
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail(&s.agent.log(), 30)));
    assert_eq!(code, Some(EXIT_REVOKED), "{}", tail(&s.agent.log(), 30));
    wait_agent(
        &s.admin,
        &old_id,
        "the revoked agent to be disconnected",
        |a| a["status"] == "revoked" && a["connected"] == false,
    )
    .await;
    // ...by its live session (not by a refused reconnect).
    let log = s.server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("agent disconnected") && l.contains("agent revoked")),
        "{}",
        tail(&log, 30)
    );

    // A restart refuses to run.
    s.agent.start().unwrap();
    let code = s.agent.wait_exit(Duration::from_secs(10)).await.unwrap();
    assert_eq!(code, Some(EXIT_REVOKED), "{}", tail(&s.agent.log(), 30));

    // Its keys can never enroll again, whatever the token.
    let old_keys = keys_in(&s.agent.state_dir);
    let (_, fresh) = token(&s.admin, json!({})).await;
    let (status, body) = s
        .admin
        .post("/v1/agent/enroll", enroll_request(&fresh, &old_keys))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "key_revoked", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked agent"),
        "{body}"
    );

    // `enroll --force` with a new token: new keys, new id, and it works.
    // (The refused attempt above did not consume `fresh`.)
    s.agent.reenroll_force(&s.server.url, &fresh).await.unwrap();
    assert_ne!(s.agent.agent_id, old_id);
    assert_ne!(
        keys_in(&s.agent.state_dir).ed25519_public(),
        old_keys.ed25519_public()
    );
    s.agent.start().unwrap();
    s.wait_connected(WAIT).await.unwrap();

    // Revocation is tenant-scoped and admin-only: a user cannot, an unknown id is 404.
    let (status, _) = s
        .requester
        .post(
            &format!("/v1/agents/{}/revoke", s.agent.agent_id),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, body) = s
        .admin
        .post(&format!("/v1/agents/{old_id}/revoke"), json!({}))
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), &body["error"]["code"]),
        (409, &json!("already_revoked"))
    );
    let (status, _) = s
        .admin
        .post(
            &format!("/v1/agents/{}/revoke", uuid::Uuid::now_v7()),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_offline_agent_fails_its_queued_work_and_refuses_its_reconnect() {
    let mut s = Stack::start(StackOpts::default()).await.unwrap();
    s.agent.kill().await;
    let agent_path = format!("/v1/agents/{}", s.agent.agent_id);
    wait_agent(
        &s.admin,
        &s.agent.agent_id,
        "the agent to be offline",
        |a| a["connected"] == false,
    )
    .await;

    let (rule_id, _) = s
        .create_rule("Queued while offline", "index=main sourcetype=syslog fail*")
        .await
        .unwrap();
    let dep = s.request_deploy(&rule_id, 1).await.unwrap();
    let queued = s.approve(&dep).await.unwrap();
    assert_eq!(queued["status"], "queued", "{queued}");

    s.admin
        .post_ok(&format!("{agent_path}/revoke"), json!({}))
        .await
        .unwrap();
    // The deployment does not wait for an agent that will never answer.
    let done = s.wait_final(&dep, Duration::from_secs(10)).await.unwrap();
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error_class"], "agent_revoked", "{done}");

    // The agent comes back: the server answers Revoked at the handshake.
    s.agent.start().unwrap();
    let code = s
        .agent
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail(&s.agent.log(), 30)));
    assert_eq!(code, Some(EXIT_REVOKED), "{}", tail(&s.agent.log(), 30));
    assert!(
        s.sim.saved_search(&format!("picket-{rule_id}")).is_none(),
        "the cancelled deployment never reached the SIEM"
    );
}

/// Opens a raw WebSocket to the gateway and returns the first text frame as JSON.
async fn first_frame(addr: std::net::SocketAddr) -> Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/agent/connect"))
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let _ = ws.close(None).await;
    match msg {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_control_answers_retry_after_over_the_rate() {
    let b = bare(ServerOpts {
        admission: Some((1, 1)),
        ..ServerOpts::default()
    })
    .await;
    let mut frames = Vec::new();
    for _ in 0..5 {
        frames.push(first_frame(b.server.addr).await);
    }
    assert_eq!(frames[0]["type"], "challenge", "{frames:?}");
    let refused: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == "retry_after")
        .collect();
    assert!(
        refused.len() >= 3,
        "at 1/s with a burst of 1, most of 5 quick connections are refused: {frames:?}"
    );
    for f in &refused {
        assert_eq!(f["v"], 1, "{f}");
        assert!(f["secs"].as_u64().unwrap() >= 1, "{f}");
    }
    // Later refusals are told to wait longer (they queue behind the earlier ones).
    let secs: Vec<u64> = refused
        .iter()
        .map(|f| f["secs"].as_u64().unwrap())
        .collect();
    assert!(secs.windows(2).all(|w| w[0] <= w[1]), "{secs:?}");
    assert!(secs.last() > secs.first(), "{secs:?}");

    // An agent refused with RetryAfter honours it and gets in later.
    let (_, tok) = token(&b.admin, json!({})).await;
    let mut agent = enroll(&b, "patient", &tok).await.unwrap();
    agent.start().unwrap();
    wait_agent(&b.admin, &agent.agent_id, "the agent to be admitted", |a| {
        a["connected"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_that_connection_only() {
    let b = bare(ServerOpts::default()).await;
    let (_, tok) = token(&b.admin, json!({})).await;

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/agent/connect", b.server.addr))
            .await
            .unwrap();
    let challenge = ws.next().await.unwrap().unwrap();
    assert!(challenge.to_text().unwrap().contains("challenge"));
    let huge = "x".repeat(2 * 1024 * 1024);
    // The server may reset the connection while the frame is still being written.
    let _ = ws.send(Message::Text(huge.into())).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => break None,
            }
        }
    })
    .await
    .expect("the server closes a connection that sent an oversized frame");
    if let Some(code) = ended {
        assert_eq!(code, 1009, "close code Message Too Big");
    }
    wait::until("the oversized frame to be logged", WAIT, || async {
        Ok(b.server
            .log()
            .contains("frame over max_frame_bytes")
            .then_some(()))
    })
    .await
    .unwrap();

    // The server keeps serving: a normal agent enrolls and connects.
    let mut agent = enroll(&b, "normal", &tok).await.unwrap();
    agent.start().unwrap();
    wait_agent(
        &b.admin,
        &agent.agent_id,
        "a normal agent to connect",
        |a| a["connected"] == true,
    )
    .await;
}
