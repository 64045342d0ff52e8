//! Health reports keep the time their figures were taken (`taken_at`), and
//! the server drops a report whose time is implausible, without ending the
//! session. Real server; the agent's session is driven with its own keys.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use picket_e2e::stack::{Stack, StackOpts};
use picket_e2e::wait;
use picket_proto::{AgentMsg, AgentVersion, B64, HealthReport, Hello, ServerMsg, encode};
use picket_shared::keys::AgentKeys;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(90);

fn report(taken_at: i64, uptime_secs: u64) -> AgentMsg {
    AgentMsg::Health(HealthReport {
        taken_at,
        uptime_secs,
        cpu_percent: 1.0,
        rss_bytes: 1,
        host_mem_used_bytes: 1,
        host_mem_total_bytes: 2,
        jobs_succeeded: 0,
        jobs_failed: 0,
        siem: Vec::new(),
        audit_alarm: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_reports_keep_their_time_and_implausible_ones_are_dropped() {
    let mut s = Stack::start(StackOpts::default()).await.unwrap();
    s.agent.kill().await;
    let read = |f: &str| -> [u8; 32] {
        std::fs::read(s.agent.state_dir.join(f))
            .unwrap()
            .try_into()
            .unwrap()
    };
    let keys = AgentKeys::from_bytes(&read("x25519.key"), &read("ed25519.key"));
    let agent_id: uuid::Uuid = s.agent.agent_id.parse().unwrap();

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/agent/connect", s.server.addr))
            .await
            .unwrap();
    let challenge = match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => match picket_proto::decode_server_msg(&t, 1 << 20).unwrap() {
            ServerMsg::Challenge(c) => c,
            other => panic!("expected a challenge, got {other:?}"),
        },
        other => panic!("expected a challenge, got {other:?}"),
    };
    let sig = keys.sign(&Hello::signing_bytes(
        &challenge.nonce.0,
        &agent_id,
        &challenge.server_key,
    ));
    let hello = AgentMsg::Hello(Hello {
        agent_id,
        version: AgentVersion::new("0.1.0").unwrap(),
        capabilities: vec![picket_proto::SiemKind::Splunk],
        signature: B64(sig),
    });
    ws.send(Message::text(encode(&hello).unwrap()))
        .await
        .unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let now = i64::try_from(now).unwrap();
    // A report taken 10 minutes ago (buffered while offline) is stored with
    // that time; one from the far future and one from last week are dropped.
    let buffered_at = now - 600;
    for msg in [
        report(buffered_at, 11),
        report(now + 3600, 22),
        report(now - 7 * 24 * 3600, 33),
    ] {
        ws.send(Message::text(encode(&msg).unwrap())).await.unwrap();
    }
    let path = format!("/v1/agents/{}", s.agent.agent_id);
    let health: Value = wait::until("the buffered report to be stored", WAIT, || async {
        let v = s.admin.get_ok(&path).await?;
        Ok((v["health"]["uptime_secs"] == 11).then_some(v["health"].clone()))
    })
    .await
    .unwrap();
    let age = health["age_secs"].as_i64().unwrap();
    assert!(age >= 600, "stored with its own time: {health}");
    // The session survived the implausible reports: a later one is stored too.
    ws.send(Message::text(encode(&report(now, 44)).unwrap()))
        .await
        .unwrap();
    wait::until("the next report to be stored", WAIT, || async {
        let v = s.admin.get_ok(&path).await?;
        Ok((v["health"]["uptime_secs"] == 44).then_some(()))
    })
    .await
    .unwrap();
    let v = s.admin.get_ok(&path).await.unwrap();
    assert_eq!(v["connected"], true, "{v}");
    assert!(
        s.server
            .log()
            .contains("dropping a health report with an implausible taken_at"),
        "the server says why"
    );
}
