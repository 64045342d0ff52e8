//! Agents as witnesses of the audit log, with real server and agent
//! processes: the server pushes each new checkpoint of the tenant's log to
//! the agent, which accepts it after checking a consistency proof; after
//! someone rewrites an event in the database (triggers dropped, leaf hashes
//! and checkpoints deleted so the server re-signs a forked history), the
//! agent refuses the new checkpoint, journals it and raises the health
//! alarm, which the server records as `audit.witness_alarm`.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use picket_e2e::stack::{Stack, StackOpts, tail};
use picket_e2e::wait;
use sea_orm::{ConnectionTrait as _, Statement};
use serde_json::{Value, json};

/// Generous: the checkpointer, reconnect backoff and health interval all run on their own schedule.
const WAIT: Duration = Duration::from_secs(90);

fn witnessed_size(stack: &Stack) -> Option<u64> {
    let text = std::fs::read_to_string(stack.agent.state_dir.join("audit-witness.json")).ok()?;
    serde_json::from_str::<Value>(&text).ok()?["size"].as_u64()
}

async fn wait_witnessed(stack: &Stack, size: u64) {
    wait::until(
        &format!("the agent to accept checkpoint {size}"),
        WAIT,
        || async { Ok((witnessed_size(stack) == Some(size)).then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nagent log:\n{}", tail(&stack.agent.log(), 40)));
}

async fn checkpoint(stack: &Stack) -> u64 {
    let v = stack
        .admin
        .post_ok("/v1/audit/checkpoint", json!({}))
        .await
        .unwrap();
    v["size"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_witnesses_checkpoints_and_alarms_on_a_forked_history() {
    let mut stack = Stack::start(StackOpts::default()).await.unwrap();
    let tenant = stack.admin.get_ok("/v1/me").await.unwrap()["tenant_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Pushed to the connected agent and accepted (the first on its signature).
    let s1 = checkpoint(&stack).await;
    wait_witnessed(&stack, s1).await;
    // The log grows: accepted after a consistency proof from s1.
    stack
        .admin
        .add_user("auditor@acme.test", "viewer")
        .await
        .unwrap();
    let s2 = checkpoint(&stack).await;
    assert!(s2 > s1);
    wait_witnessed(&stack, s2).await;

    // Someone with the database rewrites event #1 and has the server re-sign.
    stack.server.kill().await;
    // On either backend (PICKET_E2E_DB): the SQLite file, or PostgreSQL.
    let url = stack.server.database_url().map_or_else(
        || {
            format!(
                "sqlite://{}?mode=rw",
                stack.server.data_dir().join("picket.db").display()
            )
        },
        str::to_owned,
    );
    let db = sea_orm::Database::connect(url).await.unwrap();
    let pg = db.get_database_backend() == sea_orm::DbBackend::Postgres;
    let drop_triggers: &[&str] = if pg {
        &[
            "DROP TRIGGER audit_events_guard ON audit_events",
            "DROP TRIGGER audit_leaves_guard ON audit_leaves",
            "DROP TRIGGER audit_checkpoints_guard ON audit_checkpoints",
        ]
    } else {
        &[
            "DROP TRIGGER audit_events_no_update",
            "DROP TRIGGER audit_leaves_no_delete",
            "DROP TRIGGER audit_checkpoints_no_delete",
        ]
    };
    for sql in drop_triggers {
        db.execute_unprepared(sql).await.unwrap();
    }
    // Placeholders differ: `?` on SQLite, `$n` on PostgreSQL.
    let ph = |n: usize| if pg { format!("${n}") } else { "?".to_owned() };
    let tenant_value: sea_orm::Value = tenant.clone().into();
    let row = db
        .query_one(Statement::from_sql_and_values(
            db.get_database_backend(),
            format!(
                "SELECT canonical FROM audit_events WHERE log_id = {} AND idx = 1",
                ph(1)
            ),
            [tenant_value.clone()],
        ))
        .await
        .unwrap()
        .unwrap();
    let canonical: String = row.try_get_by_index(0).unwrap();
    let forged = canonical.replace("\"outcome\":\"success\"", "\"outcome\":\"denied\"");
    assert_ne!(forged, canonical);
    let leaf = picket_shared::merkle::leaf_hash(forged.as_bytes()).to_vec();
    db.execute(Statement::from_sql_and_values(
        db.get_database_backend(),
        format!(
            "UPDATE audit_events SET canonical = {}, leaf_hash = {}, outcome = 'denied' WHERE log_id = {} AND idx = 1",
            ph(1),
            ph(2),
            ph(3)
        ),
        [forged.into(), leaf.into(), tenant_value.clone()],
    ))
    .await
    .unwrap();
    for table in ["audit_leaves", "audit_checkpoints"] {
        db.execute(Statement::from_sql_and_values(
            db.get_database_backend(),
            format!("DELETE FROM {table} WHERE log_id = {}", ph(1)),
            [tenant_value.clone()],
        ))
        .await
        .unwrap();
    }
    db.close().await.unwrap();
    stack.server.restart().await.unwrap();

    // The agent reconnects, gets the re-signed checkpoint, refuses it, and
    // its health reports carry the alarm, which the server records.
    let path = "/v1/audit/events?action=audit.witness_alarm";
    let alarm = wait::until("the witness alarm to reach the server", WAIT, || async {
        let (s, v) = stack.admin.get(path).await?;
        Ok((s.is_success() && !v["events"].as_array().is_none_or(Vec::is_empty)).then_some(v))
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e:#}\nagent log:\n{}\nserver log:\n{}",
            tail(&stack.agent.log(), 40),
            tail(&stack.server.log(), 40)
        )
    });
    let ev = &alarm["events"][0]["event"];
    assert_eq!(ev["details"]["alarm"], "inconsistent", "{alarm}");
    assert_eq!(ev["actor"]["id"], json!(stack.agent.agent_id), "{alarm}");
    // The agent kept the honest checkpoint and journaled the refusal.
    assert_eq!(witnessed_size(&stack), Some(s2));
    let (entries, _) =
        picket_agent::journal::Journal::read_last(&stack.agent.state_dir, 100).unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.audit_alarm == Some(picket_proto::AuditAlarm::Inconsistent)),
        "{entries:?}"
    );
}
