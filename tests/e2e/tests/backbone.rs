//! The backbone, end to end: a rule travels from approval to a SIEM inside a
//! sealed job. Real server and agent processes, a Splunk simulator, loopback ports.

use std::time::Duration;

use picket_e2e::proxy::Tamper;
use picket_e2e::stack::{Stack, StackOpts};
use picket_e2e::wait;
use serde_json::json;

const FINISH: Duration = Duration::from_secs(60);
const SPL: &str = "index=wineventlog EventCode=4625 | stats count by user | where count > 10";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_rule_lands_in_splunk_over_wss() {
    let s = Stack::start(StackOpts {
        tls: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let (rule_id, _) = s
        .create_rule("Brute force on Windows logons", SPL)
        .await
        .unwrap();
    let dep = s.request_deploy(&rule_id, 1).await.unwrap();

    let pending = s
        .admin
        .get_ok(&format!("/v1/deployments/{dep}"))
        .await
        .unwrap();
    assert_eq!(pending["status"], "pending_approval");
    assert_eq!(
        s.sim.request_count(),
        0,
        "nothing may reach the SIEM before approval"
    );

    let approved = s
        .approver
        .post_ok(
            &format!("/v1/deployments/{dep}/approve"),
            json!({ "comment": "LGTM" }),
        )
        .await
        .unwrap();
    assert_eq!(approved["status"], "queued");
    assert_eq!(approved["approvals"].as_array().unwrap().len(), 1);

    let done = s.wait_final(&dep, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["error_class"], serde_json::Value::Null);

    let saved = s
        .sim
        .saved_search(&format!("picket-{rule_id}"))
        .expect("saved search deployed");
    assert_eq!(saved.content.get("search").map(String::as_str), Some(SPL));
    assert_eq!(
        saved.content.get("cron_schedule").map(String::as_str),
        Some("*/5 * * * *")
    );
    assert_eq!(
        saved
            .content
            .get("dispatch.earliest_time")
            .map(String::as_str),
        Some("-10m")
    );
    assert_eq!(
        saved.content.get("is_scheduled").map(String::as_str),
        Some("1")
    );
    assert_eq!(saved.app, "search");
    assert_eq!(saved.owner, "nobody");

    // The agent reports health: connected, numbers present, the SIEM reachable.
    let agent = wait::until("a health report with SIEM reachability", FINISH, || async {
        let a = s
            .admin
            .get_ok(&format!("/v1/agents/{}", s.agent.agent_id))
            .await?;
        let reachable = a["health"]["siem"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x["reachable"] == json!(true)));
        Ok(reachable.then_some(a))
    })
    .await
    .unwrap();
    assert_eq!(agent["status"], "online", "{agent}");
    assert_eq!(agent["connected"], true);
    assert!(agent["health"]["rss_bytes"].as_i64().unwrap() > 0);
    assert!(agent["health"]["jobs_succeeded"].as_i64().unwrap() >= 1);
    assert_eq!(
        agent["health"]["siem"][0]["connection_id"],
        s.connection_id.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requester_cannot_approve_and_nothing_is_sent() {
    let s = Stack::start(StackOpts::default()).await.unwrap();
    let (rule_id, _) = s
        .create_rule(
            "Suspicious PowerShell",
            "index=win EventCode=4104 ScriptBlockText=*-enc*",
        )
        .await
        .unwrap();
    let dep = s.request_deploy(&rule_id, 1).await.unwrap();

    let (status, body) = s
        .requester
        .post(&format!("/v1/deployments/{dep}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requester")
    );

    // A viewer without the approver flag may not approve either.
    let viewer = s.admin.add_user("vic@acme.test", "viewer").await.unwrap();
    let (status, _) = viewer
        .post(&format!("/v1/deployments/{dep}/approve"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 403);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = s
        .admin
        .get_ok(&format!("/v1/deployments/{dep}"))
        .await
        .unwrap();
    assert_eq!(d["status"], "pending_approval");
    assert_eq!(d["job_id"], serde_json::Value::Null, "no job may exist");
    assert_eq!(s.sim.request_count(), 0, "nothing reached the SIEM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_altered_in_flight_are_refused_and_never_reach_the_siem() {
    let s = Stack::start(StackOpts {
        proxy: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let proxy = s.proxy.as_ref().unwrap();
    for (i, mode) in [Tamper::Ciphertext, Tamper::Header, Tamper::Signature]
        .into_iter()
        .enumerate()
    {
        proxy.set(mode);
        let (rule_id, _) = s
            .create_rule(
                &format!("Tamper case {i}"),
                "index=main sourcetype=linux_secure failed",
            )
            .await
            .unwrap();
        let dep = s.request_deploy(&rule_id, 1).await.unwrap();
        s.approve(&dep).await.unwrap();
        let done = s.wait_final(&dep, FINISH).await.unwrap();
        assert_eq!(done["status"], "refused", "{mode:?}: {done}");
        assert_eq!(done["error_class"], "bad_signature", "{mode:?}: {done}");
        assert!(s.sim.saved_search(&format!("picket-{rule_id}")).is_none());
    }
    assert!(proxy.jobs_seen() >= 3);
    assert_eq!(
        s.sim.request_count(),
        0,
        "a tampered job must never reach the SIEM"
    );

    // The channel itself still works once the attacker steps away.
    proxy.set(Tamper::None);
    let (rule_id, done) = s
        .deploy_and_wait(
            "Clean case",
            "index=main sourcetype=linux_secure failed",
            FINISH,
        )
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{rule_id}")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_job_delivered_twice_is_applied_once() {
    let s = Stack::start(StackOpts {
        proxy: true,
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let proxy = s.proxy.as_ref().unwrap();

    // Baseline: the SIEM requests one deployment makes.
    let (r1, done) = s
        .deploy_and_wait("Baseline", "index=main error", FINISH)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{r1}")).is_some());
    let one = s.sim.request_count();
    assert!(one > 0);

    proxy.set(Tamper::Duplicate);
    let (r2, done) = s
        .deploy_and_wait("Delivered twice", "index=main error", FINISH)
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{r2}")).is_some());
    // Let the duplicate be processed too, then compare.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.sim.request_count() - one,
        one,
        "the duplicate must not run again"
    );
    assert_eq!(s.sim.saved_searches().len(), 2);
    assert!(proxy.jobs_seen() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_job_survives_a_server_crash_and_reaches_the_agent() {
    let mut s = Stack::start(StackOpts::default()).await.unwrap();

    // (a) A job approved while the agent is away, then the server crashes.
    s.agent.kill().await;
    let (r1, _) = s
        .create_rule("Queued across a crash", "index=main sourcetype=sshd Failed")
        .await
        .unwrap();
    let d1 = s.request_deploy(&r1, 1).await.unwrap();
    s.approve(&d1).await.unwrap();
    s.server.restart().await.unwrap(); // SIGKILL, then start on the same port and data
    s.agent.start().unwrap();
    let done = s.wait_final(&d1, FINISH).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{r1}")).is_some());

    // (b) The server crashes under a connected agent; it reconnects by itself.
    s.server.restart().await.unwrap();
    s.wait_connected(FINISH).await.unwrap();
    let (r2, done) = s
        .deploy_and_wait(
            "After reconnect",
            "index=main sourcetype=sshd Accepted",
            FINISH,
        )
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{r2}")).is_some());
    assert_eq!(s.sim.saved_searches().len(), 2);
}
