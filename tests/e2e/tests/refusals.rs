//! Hostile delivery, end to end, with real server and agent processes and an
//! attacker on the path (the tamper relay): a job held back past its expiry,
//! an old job frame replayed after a newer one ran, a job sealed to one agent
//! delivered on another agent's session, a job re-signed by a key the agent
//! does not trust; and the fleet coming back spread out after a server
//! restart. Each refusal must reach the server, which records it.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use picket_e2e::api::Api;
use picket_e2e::procs::{AgentOpts, AgentProc, ServerOpts, ServerProc};
use picket_e2e::proxy::{Tamper, TamperProxy};
use picket_e2e::stack::{Stack, StackOpts, tail};
use picket_e2e::wait;
use serde_json::{Value, json};

/// Generous bound for anything eventual (a slow, shared CI machine).
const WAIT: Duration = Duration::from_secs(90);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// Creates a rule, requests and approves its deployment; returns the deployment id.
async fn approve_new_rule(s: &Stack, title: &str) -> String {
    let (rule_id, _) = s
        .create_rule(title, "index=main sourcetype=x")
        .await
        .unwrap();
    let dep = s.request_deploy(&rule_id, 1).await.unwrap();
    s.approve(&dep).await.unwrap();
    dep
}

/// The agent's journal as JSON lines.
async fn journal(agent: &AgentProc) -> Vec<Value> {
    let (ok, out) = agent.cli(&["journal", "--json"]).await.unwrap();
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The `expires_at` in a recorded job frame's header.
fn expires_at(frame: &str) -> i64 {
    use base64::Engine as _;
    let v: Value = serde_json::from_str(frame).unwrap();
    let header = base64::engine::general_purpose::STANDARD
        .decode(v["job"]["header"].as_str().unwrap())
        .unwrap();
    let h: Value = serde_json::from_slice(&header).unwrap();
    h["expires_at"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_held_past_its_expiry_is_refused_expired_and_recorded() {
    // Shortest TTL the server allows, and no skew allowance on the agent, so
    // the test waits about a minute rather than sixteen.
    let s = Stack::start(StackOpts {
        proxy: true,
        job_ttl_secs: Some(60),
        agent_clock_skew_secs: Some(0),
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let proxy = s.proxy.as_ref().unwrap();
    proxy.set(Tamper::Hold);
    let dep = approve_new_rule(&s, "Held back").await;
    wait::until("the relay to hold the job", WAIT, || async {
        Ok((proxy.held() == 1).then_some(()))
    })
    .await
    .unwrap();
    let expiry = expires_at(&proxy.server_jobs()[0]);
    // Hold it until the agent's clock is past expires_at (skew 0).
    wait::until("the job to expire", WAIT, || async {
        Ok((unix_now() > expiry + 1).then_some(()))
    })
    .await
    .unwrap();
    proxy.set(Tamper::None);
    assert_eq!(proxy.release_held().unwrap(), 1);

    let done = s.wait_final(&dep, WAIT).await.unwrap();
    assert_eq!(
        (&done["status"], &done["error_class"]),
        (&json!("refused"), &json!("expired")),
        "{done}\nagent log:\n{}",
        tail(&s.agent.log(), 30)
    );
    assert!(
        s.sim.saved_searches().is_empty(),
        "nothing reached the SIEM"
    );
    let j = journal(&s.agent).await;
    assert!(
        j.iter()
            .any(|e| e["outcome"] == "refused" && e["error_class"] == "expired"),
        "{j:?}"
    );
    let audit = s.server.audit_events().await.unwrap();
    assert!(
        audit
            .iter()
            .any(|(a, o, d)| a == "job.result" && o == "denied" && d["error_class"] == "expired"),
        "the server recorded the refusal: {audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_for_an_agent_offline_longer_than_its_ttl_expires_on_the_server() {
    let mut s = Stack::start(StackOpts {
        job_ttl_secs: Some(60),
        ..StackOpts::default()
    })
    .await
    .unwrap();
    s.agent.kill().await;
    wait::until("the agent to be offline", WAIT, || async {
        let v = s
            .admin
            .get_ok(&format!("/v1/agents/{}", s.agent.agent_id))
            .await?;
        Ok((v["connected"] == json!(false)).then_some(()))
    })
    .await
    .unwrap();
    let dep = approve_new_rule(&s, "Too late").await;
    let approved_at = unix_now();
    wait::until("the job's TTL to pass", WAIT, || async {
        Ok((unix_now() > approved_at + 61).then_some(()))
    })
    .await
    .unwrap();
    s.agent.start().unwrap();
    let done = s.wait_final(&dep, WAIT).await.unwrap();
    assert_eq!(
        (&done["status"], &done["error_class"]),
        (&json!("expired"), &json!("expired")),
        "{done}"
    );
    assert!(
        s.sim.saved_searches().is_empty(),
        "nothing reached the SIEM"
    );
    let audit = s.server.audit_events().await.unwrap();
    assert!(audit.iter().any(|(a, _, _)| a == "job.expire"), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_job_frames_are_refused_or_answered_from_the_ledger() {
    let s = Stack::start(StackOpts {
        proxy: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let proxy = s.proxy.as_ref().unwrap();
    // The attacker withholds job 1 and lets job 2 through.
    proxy.set(Tamper::Hold);
    let first = approve_new_rule(&s, "Withheld").await;
    wait::until("the relay to hold job 1", WAIT, || async {
        Ok((proxy.held() == 1).then_some(()))
    })
    .await
    .unwrap();
    proxy.set(Tamper::None);
    let second = approve_new_rule(&s, "Delivered").await;
    let done = s.wait_final(&second, WAIT).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(s.sim.saved_searches().len(), 1);

    // Job 1 now arrives after job 2 ran: its seq is below the barrier.
    proxy.release_held().unwrap();
    let done = s.wait_final(&first, WAIT).await.unwrap();
    assert_eq!(
        (&done["status"], &done["error_class"]),
        (&json!("refused"), &json!("replayed")),
        "{done}"
    );

    // Job 2's frame replayed verbatim: answered from the ledger, not run again.
    let frames = proxy.server_jobs();
    let job2 = frames.last().unwrap().clone();
    let results_before = proxy
        .agent_frames()
        .iter()
        .filter(|f| f.contains("\"job_result\""))
        .count();
    proxy.inject(&job2).unwrap();
    wait::until("the agent to answer the replay", WAIT, || async {
        let n = proxy
            .agent_frames()
            .iter()
            .filter(|f| f.contains("\"job_result\""))
            .count();
        Ok((n > results_before).then_some(()))
    })
    .await
    .unwrap();
    let last = proxy
        .agent_frames()
        .into_iter()
        .rev()
        .find(|f| f.contains("\"job_result\""))
        .unwrap();
    assert!(
        last.contains("\"outcome\":\"succeeded\""),
        "the stored result: {last}"
    );
    assert_eq!(s.sim.saved_searches().len(), 1, "applied once");
    assert_eq!(
        s.admin
            .get_ok(&format!("/v1/deployments/{second}"))
            .await
            .unwrap()["status"],
        "succeeded"
    );
    let audit = s.server.audit_events().await.unwrap();
    assert!(
        audit
            .iter()
            .any(|(a, o, d)| a == "job.result" && o == "denied" && d["error_class"] == "replayed"),
        "{audit:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_sealed_to_one_agent_is_refused_by_another() {
    let s = Stack::start(StackOpts {
        proxy: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let proxy_a = s.proxy.as_ref().unwrap();
    let (_, done) = s
        .deploy_and_wait("For agent A", "index=a", WAIT)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    let job_for_a = proxy_a.server_jobs().last().unwrap().clone();

    // Agent B, on the same server, behind its own relay.
    let token = s
        .admin
        .post_ok("/v1/enrollment-tokens", json!({ "label": "agent-b" }))
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let proxy_b = TamperProxy::start(format!("ws://{}", s.server.addr))
        .await
        .unwrap();
    let mut b = AgentProc::enroll(
        &s.root.join("agent-b"),
        &s.server.url,
        &token,
        &AgentOpts {
            plaintext: true,
            connect_url: Some(proxy_b.url()),
            ..AgentOpts::default()
        },
    )
    .await
    .unwrap();
    b.start().unwrap();
    // Both sides: the server marks the session connected just before it
    // sends the Welcome, and a job injected before the agent has read the
    // Welcome is (rightly) a handshake violation that drops the connection.
    wait::until("agent B to connect", WAIT, || async {
        let v = s
            .admin
            .get_ok(&format!("/v1/agents/{}", b.agent_id))
            .await?;
        let welcomed = b.log().contains("connected to the server");
        Ok((v["connected"] == json!(true) && welcomed).then_some(()))
    })
    .await
    .unwrap();

    proxy_b.inject(&job_for_a).unwrap();
    wait::until("agent B to refuse A's job", WAIT, || async {
        Ok(proxy_b
            .agent_frames()
            .iter()
            .any(|f| f.contains("\"job_result\"") && f.contains("\"wrong_agent\""))
            .then_some(()))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nagent B log:\n{}\nserver log:\n{}",
            tail(&b.log(), 30),
            tail(&s.server.log(), 30)
        )
    });
    assert!(
        !proxy_b
            .agent_frames()
            .iter()
            .any(|f| f.contains("\"job_ack\"")),
        "B never accepted it"
    );
    let j = journal(&b).await;
    assert!(
        j.iter()
            .any(|e| e["outcome"] == "refused" && e["error_class"] == "wrong_agent"),
        "{j:?}"
    );
    assert_eq!(
        s.sim.saved_searches().len(),
        1,
        "only A's deployment landed"
    );
    wait::until("the server to record B's refusal", WAIT, || async {
        let audit = s.server.audit_events().await?;
        Ok(audit
            .iter()
            .any(|(a, o, d)| {
                a == "job.result_foreign" && o == "denied" && d["error_class"] == "wrong_agent"
            })
            .then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_signed_by_an_unknown_key_is_refused_and_recorded() {
    let s = Stack::start(StackOpts {
        proxy: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    s.proxy.as_ref().unwrap().set(Tamper::Resign);
    let dep = approve_new_rule(&s, "Re-signed").await;
    let done = s.wait_final(&dep, WAIT).await.unwrap();
    assert_eq!(
        (&done["status"], &done["error_class"]),
        (&json!("refused"), &json!("unknown_signing_key")),
        "{done}"
    );
    assert!(
        s.sim.saved_searches().is_empty(),
        "nothing reached the SIEM"
    );
    let audit = s.server.audit_events().await.unwrap();
    assert!(
        audit.iter().any(|(a, o, d)| a == "job.result"
            && o == "denied"
            && d["error_class"] == "unknown_signing_key"),
        "{audit:?}"
    );
}

/// The log without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `delay_ms` of every "reconnecting after a delay" line in a log excerpt.
fn reconnect_delays(log: &str) -> Vec<u64> {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("reconnecting after a delay"))
        .filter_map(|l| {
            let rest = l.split("delay_ms=").nth(1)?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_come_back_spread_out_after_a_server_restart() {
    picket_e2e::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let mut server = ServerProc::start(&tmp.path().join("server"), ServerOpts::default())
        .await
        .unwrap();
    let admin = Api::new(&server.url, None)
        .unwrap()
        .claim("admin@acme.test")
        .await
        .unwrap();
    let token = admin
        .post_ok("/v1/enrollment-tokens", json!({ "max_uses": 4 }))
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut agents = Vec::new();
    for i in 0..4 {
        let mut a = AgentProc::enroll(
            &tmp.path().join(format!("agent-{i}")),
            &server.url,
            &token,
            &AgentOpts {
                plaintext: true,
                ..AgentOpts::default()
            },
        )
        .await
        .unwrap();
        a.start().unwrap();
        agents.push(a);
    }
    let all_connected = |admin: Api| async move {
        wait::until("every agent to be connected", WAIT, || async {
            let v = admin.get_ok("/v1/agents").await?;
            let n = v
                .as_array()
                .map(|a| a.iter().filter(|x| x["connected"] == json!(true)).count())
                .unwrap_or(0);
            Ok((n == 4).then_some(()))
        })
        .await
    };
    all_connected(admin.clone()).await.unwrap();
    let marks: Vec<usize> = agents.iter().map(|a| a.log().len()).collect();

    server.restart().await.unwrap();
    all_connected(admin.clone()).await.unwrap();

    let mut first_delays = Vec::new();
    for (a, mark) in agents.iter().zip(marks) {
        let log = a.log();
        let delays = reconnect_delays(&log[mark..]);
        assert!(
            !delays.is_empty(),
            "agent {} logged no reconnect delay:\n{}",
            a.agent_id,
            tail(&log, 20)
        );
        first_delays.push(delays[0]);
    }
    // Structural, not timing: every agent waited a random, non-zero delay
    // before its first attempt, and they did not all draw the same one.
    assert!(first_delays.iter().all(|&d| d > 0), "{first_delays:?}");
    let mut distinct = first_delays.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > 1,
        "all agents waited exactly the same delay: {first_delays:?}"
    );
}
