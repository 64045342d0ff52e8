//! The same backbone flow with the server on PostgreSQL (the scale-out
//! backend), in a fresh database created for this run and dropped after.
//!
//! The server is `postgres://postgres@127.0.0.1:5432` unless
//! `PICKET_TEST_POSTGRES_URL` names another (without a database path).
//! PostgreSQL being down is a test failure, not a skip.

use std::time::Duration;

use picket_e2e::stack::{Stack, StackOpts};
use serde_json::json;

fn admin_url() -> String {
    std::env::var("PICKET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

async fn psql(db: &str, sql: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("psql")
        .arg(format!("{}/{db}", admin_url()))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "psql failed (is PostgreSQL running on {}? .ci/run starts it): {}",
        admin_url(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backbone_flow_on_postgresql() {
    let db = format!("picket_e2e_{}", uuid::Uuid::new_v4().simple());
    psql("test", &format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let result = async {
        let mut s = Stack::start(StackOpts {
            database_url: Some(format!("{}/{db}", admin_url())),
            ..StackOpts::default()
        })
        .await?;
        let (rule_id, _) = s
            .create_rule("Postgres-backed rule", "index=main sourcetype=sshd Failed")
            .await?;
        let dep = s.request_deploy(&rule_id, 1).await?;
        let (status, _) = s
            .requester
            .post(&format!("/v1/deployments/{dep}/approve"), json!({}))
            .await?;
        anyhow::ensure!(
            status == 403,
            "self-approval must be refused on PostgreSQL too"
        );
        // Durable outbox on PostgreSQL: approve with the agent away, crash the server, then deliver.
        s.agent.kill().await;
        s.approve(&dep).await?;
        s.server.restart().await?;
        s.agent.start()?;
        let done = s.wait_final(&dep, Duration::from_secs(60)).await?;
        anyhow::ensure!(done["status"] == "succeeded", "deployment: {done}");
        anyhow::ensure!(
            s.sim.saved_search(&format!("picket-{rule_id}")).is_some(),
            "saved search missing"
        );
        let agents = s.admin.get_ok("/v1/agents").await?;
        anyhow::ensure!(
            agents.as_array().map(Vec::len) == Some(1),
            "agents: {agents}"
        );
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let _ = psql(
        "test",
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    )
    .await;
    result.unwrap();
}
