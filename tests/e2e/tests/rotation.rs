//! Key rotation both ways, end to end, with real server and agent processes.
//!
//! Agent keys: `picket-agent rotate-keys` next to the running service, an
//! admin's request reaching an agent that was offline, and a crash between
//! the server's confirmation and the agent's promotion. After each, the old
//! identity is refused with a precise reason and jobs are sealed to the new
//! X25519 key.
//!
//! Server signing key: `picket-server admin rotate-signing-key` while an
//! agent is offline; the agent catches up through the key chain, runs jobs
//! signed by the old key during the overlap window and by the new one after,
//! and refuses the old key once its window is closed.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use picket_e2e::stack::{Stack, StackOpts, tail};
use picket_e2e::wait;
use picket_proto::{
    AgentMsg, AgentVersion, B64, EnrollRequest, EnrollmentToken, Hello, Hostname, RotateKeys,
    SealedJob, ServerMsg, decode_server_msg, encode,
};
use picket_shared::keys::AgentKeys;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(90);

/// The agent's current keys, as `picket-agent` stores them.
fn keys_in(state_dir: &Path) -> AgentKeys {
    let read = |f: &str| -> [u8; 32] {
        std::fs::read(state_dir.join(f))
            .unwrap()
            .try_into()
            .unwrap()
    };
    AgentKeys::from_bytes(&read("x25519.key"), &read("ed25519.key"))
}

/// The pending keys written by `rotate-keys` (X25519 secret ‖ Ed25519 seed).
fn pending_in(state_dir: &Path) -> AgentKeys {
    let both = std::fs::read(state_dir.join("rotation.pending")).unwrap();
    AgentKeys::from_bytes(
        &both[..32].try_into().unwrap(),
        &both[32..].try_into().unwrap(),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_server_msg(ws: &mut Ws) -> Result<ServerMsg, String> {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return Ok(decode_server_msg(&t, 1 << 20).unwrap()),
            Some(Ok(Message::Close(f))) => {
                return Err(f.map(|f| f.reason.to_string()).unwrap_or_default());
            }
            Some(Ok(_)) => {}
            other => return Err(format!("{other:?}")),
        }
    }
}

/// Connects to the gateway as `agent_id`, saying `Hello` with `identity`.
/// Returns the socket and the challenge nonce on `Welcome`, or the server's
/// close reason.
async fn hello_as(
    server: &str,
    agent_id: uuid::Uuid,
    identity: &AgentKeys,
) -> Result<(Ws, [u8; 32]), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{server}/v1/agent/connect"))
        .await
        .unwrap();
    let ServerMsg::Challenge(c) = next_server_msg(&mut ws).await? else {
        panic!("expected a challenge");
    };
    let sig = identity.sign(&Hello::signing_bytes(&c.nonce.0, &agent_id, &c.server_key));
    let hello = AgentMsg::Hello(Hello {
        agent_id,
        version: AgentVersion::new("0.1.0").unwrap(),
        capabilities: vec![picket_proto::SiemKind::Splunk],
        signature: B64(sig),
    });
    ws.send(Message::text(encode(&hello).unwrap()))
        .await
        .unwrap();
    match next_server_msg(&mut ws).await? {
        ServerMsg::Welcome(_) => Ok((ws, c.nonce.0)),
        other => panic!("expected welcome, got {other:?}"),
    }
}

fn agent_uuid(s: &Stack) -> uuid::Uuid {
    s.agent.agent_id.parse().unwrap()
}

async fn agent_view(s: &Stack) -> Value {
    s.admin
        .get_ok(&format!("/v1/agents/{}", s.agent.agent_id))
        .await
        .unwrap()
}

/// Opens a recorded job frame with `keys` (signature checked under the
/// server keys the agent pinned).
fn opens_with(frame: &str, state_dir: &Path, keys: &AgentKeys) -> bool {
    let v: Value = serde_json::from_str(frame).unwrap();
    // Byte fields deserialize from borrowed text, so parse from a string.
    let job: SealedJob = serde_json::from_str(&v["job"].to_string()).unwrap();
    let ring: Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("enrollment.json")).unwrap()).unwrap();
    let pk: B64<32> = serde_json::from_str(&ring["server_signing_key"].to_string()).unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&pk.0).unwrap();
    let header = picket_shared::verify_job(&job, &[vk]).unwrap();
    picket_shared::open_job(&job, &header, keys).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_rotation_next_to_the_running_agent_retires_the_old_identity() {
    let s = Stack::start(StackOpts {
        proxy: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let old = keys_in(&s.agent.state_dir);
    let (ok, out) = s.agent.cli(&["rotate-keys", "--wait", "90"]).await.unwrap();
    assert!(ok, "{out}\nagent log:\n{}", tail(&s.agent.log(), 30));
    assert!(out.contains("rotation complete"), "{out}");
    let new = keys_in(&s.agent.state_dir);
    assert_ne!(new.ed25519_public(), old.ed25519_public());
    assert_ne!(new.x25519_public(), old.x25519_public());
    assert!(!s.agent.state_dir.join("rotation.pending").exists());
    let v = agent_view(&s).await;
    assert!(v["keys_rotated_at"].is_string(), "{v}");

    let (_, status) = s.agent.cli(&["status"]).await.unwrap();
    assert!(
        status.contains(&hex(&new.ed25519_public())),
        "status shows the new identity: {status}"
    );

    // The old identity is refused, precisely.
    let err = hello_as(&s.server.addr.to_string(), agent_uuid(&s), &old)
        .await
        .err()
        .unwrap();
    assert_eq!(err, "agent key superseded by rotation");
    // The new one is accepted (the real agent is connected with it too).
    assert!(
        hello_as(&s.server.addr.to_string(), agent_uuid(&s), &new)
            .await
            .is_ok()
    );
    s.wait_connected(WAIT).await.unwrap();

    // Jobs are now sealed to the new X25519 key only.
    let (_, done) = s
        .deploy_and_wait("After rotation", "index=main", WAIT)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    let frame = s
        .proxy
        .as_ref()
        .unwrap()
        .server_jobs()
        .last()
        .unwrap()
        .clone();
    assert!(opens_with(&frame, &s.agent.state_dir, &new));
    assert!(!opens_with(&frame, &s.agent.state_dir, &old));

    // The retired keys cannot come back as a new agent either.
    let token = s
        .admin
        .post_ok("/v1/enrollment-tokens", json!({}))
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let t = EnrollmentToken::parse(&token).unwrap();
    let (x, e) = (old.x25519_public(), old.ed25519_public());
    let req = EnrollRequest {
        token_secret: B64(t.secret),
        hostname: Hostname::new("retired-keys").unwrap(),
        version: AgentVersion::new("0.1.0").unwrap(),
        x25519_public: B64(x),
        ed25519_public: B64(e),
        proof: B64(old.sign(&EnrollRequest::proof_bytes(&t.secret, &x, &e))),
    };
    let (status, body) = picket_e2e::api::Api::new(&s.server.url, None)
        .unwrap()
        .post("/v1/agent/enroll", serde_json::to_value(&req).unwrap())
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "key_revoked", "{body}");

    let audit = s.server.audit_events().await.unwrap();
    assert!(
        audit
            .iter()
            .any(|(a, o, _)| a == "agent.rotate_keys" && o == "success"),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|(a, o, d)| a == "agent.connect"
            && o == "denied"
            && d["reason"] == "agent key superseded by rotation"),
        "{audit:?}"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_request_reaches_an_offline_agent_at_its_next_connection() {
    let mut s = Stack::start(StackOpts::default()).await.unwrap();
    let old = keys_in(&s.agent.state_dir);
    s.agent.kill().await;
    let v = s
        .admin
        .post_ok(
            &format!("/v1/agents/{}/rotate-keys", s.agent.agent_id),
            json!({}),
        )
        .await
        .unwrap();
    assert!(v["rotation_requested_at"].is_string(), "{v}");
    assert!(v["keys_rotated_at"].is_null(), "{v}");
    // Only an admin may ask.
    let (status, _) = s
        .requester
        .post(
            &format!("/v1/agents/{}/rotate-keys", s.agent.agent_id),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);

    s.agent.start().unwrap();
    wait::until("the requested rotation to complete", WAIT, || async {
        let v = agent_view(&s).await;
        Ok(
            (v["keys_rotated_at"].is_string() && v["rotation_requested_at"].is_null())
                .then_some(()),
        )
    })
    .await
    .unwrap();
    wait::until("the agent to promote its keys", WAIT, || async {
        Ok((!s.agent.state_dir.join("rotation.pending").exists()
            && keys_in(&s.agent.state_dir).ed25519_public() != old.ed25519_public())
        .then_some(()))
    })
    .await
    .unwrap();
    let (_, done) = s
        .deploy_and_wait("After requested rotation", "index=main", WAIT)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    let audit = s.server.audit_events().await.unwrap();
    for action in ["agent.rotate_keys_request", "agent.rotate_keys"] {
        assert!(
            audit.iter().any(|(a, _, _)| a == action),
            "{action}: {audit:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_confirmation_and_promotion_still_connects() {
    let mut s = Stack::start(StackOpts::default()).await.unwrap();
    let old = keys_in(&s.agent.state_dir);
    s.agent.kill().await;
    // Step 1 as the CLI does it, with the service stopped.
    let (ok, out) = s.agent.cli(&["rotate-keys"]).await.unwrap();
    assert!(ok, "{out}");
    let (ok, again) = s.agent.cli(&["rotate-keys"]).await.unwrap();
    assert!(!ok && again.contains("already pending"), "{again}");
    let new = pending_in(&s.agent.state_dir);

    // Steps 2-3 happen (the server stores and confirms the new keys), then
    // the agent "crashes" before promoting: its files still say old + pending.
    let id = agent_uuid(&s);
    let (mut ws, nonce) = hello_as(&s.server.addr.to_string(), id, &old)
        .await
        .unwrap();
    let (x, ed) = (new.x25519_public(), new.ed25519_public());
    let bytes = RotateKeys::signing_bytes(&nonce, &id, &x, &ed);
    let msg = AgentMsg::RotateKeys(RotateKeys {
        x25519_public: B64(x),
        ed25519_public: B64(ed),
        old_sig: B64(old.sign(&bytes)),
        new_sig: B64(new.sign(&bytes)),
    });
    ws.send(Message::text(encode(&msg).unwrap())).await.unwrap();
    loop {
        match next_server_msg(&mut ws).await.unwrap() {
            ServerMsg::KeysRotated(k) => {
                assert_eq!(k.ed25519_public.0, ed);
                break;
            }
            _ => continue,
        }
    }
    drop(ws);

    // The restarted agent is refused with its current key, switches to the
    // pending one, gets the confirmation again and promotes it.
    s.agent.start().unwrap();
    s.wait_connected(WAIT).await.unwrap();
    wait::until("the agent to finish the rotation", WAIT, || async {
        Ok((!s.agent.state_dir.join("rotation.pending").exists()).then_some(()))
    })
    .await
    .unwrap();
    assert_eq!(keys_in(&s.agent.state_dir).ed25519_public(), ed);
    let (_, done) = s
        .deploy_and_wait("After a crash", "index=main", WAIT)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        s.agent.log().contains("key rotation complete"),
        "{}",
        tail(&s.agent.log(), 30)
    );
}

/// The fingerprint in an enrollment token's text (`pkt1.<secret>.<fingerprint>`).
fn token_fingerprint(token: &str) -> String {
    token.rsplit('.').next().unwrap().to_owned()
}

/// Creates a rule and requests + approves its deployment; returns its id.
async fn approve_new_rule(s: &Stack, title: &str) -> String {
    let (rule_id, _) = s.create_rule(title, "index=main").await.unwrap();
    let dep = s.request_deploy(&rule_id, 1).await.unwrap();
    s.approve(&dep).await.unwrap();
    dep
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_reaches_an_agent_that_was_offline() {
    let mut s = Stack::start(StackOpts::default()).await.unwrap();
    let (_, done) = s
        .deploy_and_wait("Before rotation", "index=a", WAIT)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    let token_before = s
        .admin
        .post_ok("/v1/enrollment-tokens", json!({}))
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let k0 = token_fingerprint(&token_before);

    // Offline during the announcement, with a job signed by the old key queued.
    s.agent.kill().await;
    let queued = approve_new_rule(&s, "Queued under the old key").await;
    let out = s.server.admin(&["rotate-signing-key"]).await.unwrap();
    assert!(out.contains("new job-signing key"), "{out}");
    s.server.restart().await.unwrap();
    let token_after = s
        .admin
        .post_ok("/v1/enrollment-tokens", json!({}))
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let k1 = token_fingerprint(&token_after);
    assert_ne!(k0, k1, "new tokens carry the new key");
    assert!(out.contains(&k1), "{out}");
    // A token issued before the rotation (pinning the old key) still
    // enrolls: the agent follows the key chain from the token's key.
    let late = picket_e2e::procs::AgentProc::enroll(
        &s.root.join("agent-late"),
        &s.server.url,
        &token_before,
        &picket_e2e::procs::AgentOpts {
            plaintext: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let late_ring: Value =
        serde_json::from_slice(&std::fs::read(late.state_dir.join("server_keys.json")).unwrap())
            .unwrap();
    assert_eq!(
        late_ring["keys"].as_array().unwrap().len(),
        2,
        "{late_ring}"
    );

    s.agent.start().unwrap();
    s.wait_connected(WAIT).await.unwrap();
    // Within the overlap window the old key's job still runs.
    let done = s.wait_final(&queued, WAIT).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    // New jobs are signed with the new key and run.
    let (_, done) = s
        .deploy_and_wait("After rotation", "index=b", WAIT)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");

    // The agent persisted both keys (0600) and shows them.
    let ring_path = s.agent.state_dir.join("server_keys.json");
    let ring: Value = serde_json::from_slice(&std::fs::read(&ring_path).unwrap()).unwrap();
    let ids: Vec<&str> = ring["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [k0.as_str(), k1.as_str()]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&ring_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (_, status) = s.agent.cli(&["status"]).await.unwrap();
    assert!(
        status.contains(&format!("trusted server key: {k0} (accepted until"))
            && status.contains(&format!("trusted server key: {k1} (current)")),
        "{status}"
    );

    // A second rotation with no overlap: a job signed by the previous key
    // that reaches the agent afterwards is refused as signed by an unknown key.
    s.agent.kill().await;
    let stale = approve_new_rule(&s, "Signed by a retired key").await;
    s.server
        .admin(&["rotate-signing-key", "--overlap-secs", "0"])
        .await
        .unwrap();
    s.server.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.agent.start().unwrap();
    let done = s.wait_final(&stale, WAIT).await.unwrap();
    assert_eq!(
        (&done["status"], &done["error_class"]),
        (&json!("refused"), &json!("unknown_signing_key")),
        "{done}"
    );
    let (_, done) = s
        .deploy_and_wait("Under the third key", "index=c", WAIT)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    // The agent, an audit witness, accepts checkpoints signed by the new key
    // (it follows the key chain; no false alarm after a rotation).
    let size = s
        .admin
        .post_ok("/v1/audit/checkpoint", json!({}))
        .await
        .unwrap()["size"]
        .as_u64()
        .unwrap();
    let witness = s.agent.state_dir.join("audit-witness.json");
    wait::until(
        "the agent to witness the new key's checkpoint",
        WAIT,
        || async {
            let text = std::fs::read_to_string(&witness).unwrap_or_default();
            let seen = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["size"].as_u64());
            Ok(seen.is_some_and(|n| n >= size).then_some(()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail(&s.agent.log(), 40)));
    let audit = s.server.audit_events().await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|(a, _, _)| a == "server.rotate_signing_key")
            .count(),
        2,
        "{audit:?}"
    );
    assert!(
        !audit.iter().any(|(a, _, _)| a == "audit.witness_alarm"),
        "{audit:?}"
    );
}
