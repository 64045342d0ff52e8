//! Storage on both backends: migrations, the signing key wrapped under the
//! master secret and its rotation (key chain), and the outbox's per-agent
//! sequence under concurrency.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432` unless
//! `PICKET_TEST_POSTGRES_URL` says otherwise; each run uses a fresh database.
//! PostgreSQL being down fails the test (`.ci/run` starts it).

// Helpers here are test code: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use picket_proto::{Credential, JobAction, JobSpec, SiemSettings, SiemTarget, SplunkSettings};
use picket_server::db::entity::{agent, job, tenant};
use picket_server::keys::ServerKeys;
use picket_server::service::jobs;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait as _, DatabaseConnection,
    EntityTrait as _, QueryFilter as _, Set, TransactionTrait as _,
};
use uuid::Uuid;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-storage";

fn pg_admin() -> String {
    std::env::var("PICKET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

async fn fresh_pg() -> (String, String) {
    let admin = sea_orm::Database::connect(format!("{}/test", pg_admin()))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is not reachable ({e}); .ci/run starts it",
                pg_admin()
            )
        });
    let name = format!("picket_storage_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    (format!("{}/{name}", pg_admin()), name)
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("picket.db").display()
    )
}

async fn drop_pg(name: &str) {
    if let Ok(admin) = sea_orm::Database::connect(format!("{}/test", pg_admin())).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

async fn seed_agent(db: &DatabaseConnection) -> agent::Model {
    let tenant_id = Uuid::now_v7();
    tenant::ActiveModel {
        id: Set(tenant_id),
        name: Set("t".into()),
        wrapped_key: Set(None),
        key_version: Set(1),
        min_approvers: Set(1),
        require_tests: Set(false),
        created_at: Set(0),
    }
    .insert(db)
    .await
    .unwrap();
    let keys = picket_shared::AgentKeys::generate().unwrap();
    agent::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(tenant_id),
        hostname: Set("h".into()),
        version: Set("0.1.0".into()),
        x25519_public: Set(keys.x25519_public().to_vec()),
        ed25519_public: Set(keys.ed25519_public().to_vec()),
        enrolled_at: Set(0),
        last_seen_at: Set(None),
        last_seq: Set(0),
        revoked_at: Set(None),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
}

fn spec() -> JobSpec {
    JobSpec {
        target: SiemTarget {
            connection_id: Uuid::now_v7(),
            name: "c".into(),
            settings: SiemSettings::Splunk(SplunkSettings {
                base_url: "http://127.0.0.1:1".into(),
                app: "search".into(),
                owner: "nobody".into(),
                token: Credential::new("t".into()),
                login: None,
                hec: None,
            }),
        },
        action: JobAction::CheckConnection,
    }
}

async fn exercise(url: &str) {
    let db = picket_server::db::connect(url).await.unwrap();
    // Migrations are idempotent: a second start finds nothing to do.
    let db2 = picket_server::db::connect(url).await.unwrap();
    drop(db2);

    let keys = ServerKeys::load_or_create(&db, SECRET).await.unwrap();
    let again = ServerKeys::load_or_create(&db, SECRET).await.unwrap();
    assert_eq!(
        keys.fingerprint, again.fingerprint,
        "the signing key is stored, not regenerated"
    );
    let wrong =
        ServerKeys::load_or_create(&db, b"another-master-secret-of-32-bytes-at-least").await;
    let msg = format!(
        "{:#}",
        wrong
            .err()
            .expect("a different master secret must not open the signing key")
    );
    assert!(msg.contains("different master secret"), "{msg}");

    // Concurrent enqueues for one agent get distinct, gap-free sequence numbers.
    let a = seed_agent(&db).await;
    let keys = std::sync::Arc::new(keys);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (db, keys, a) = (db.clone(), keys.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            let txn = db.begin().await.unwrap();
            let j = jobs::enqueue(&txn, &keys, &a, &spec(), None, 900)
                .await
                .unwrap();
            txn.commit().await.unwrap();
            j.seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<i64>>());
    let pending = jobs::undelivered(&db, a.id, 0).await.unwrap();
    assert_eq!(pending.len(), 20);
    assert!(
        pending.windows(2).all(|w| w[0].0.seq < w[1].0.seq),
        "delivered in seq order"
    );
    // Every stored job verifies under the server key and opens only for the agent.
    let (row, sealed) = &pending[0];
    let header = picket_shared::verify_job(sealed, &[keys.signing.verifying_key()]).unwrap();
    assert_eq!(header.job_id, row.id);
    assert_eq!(header.agent_id, a.id);

    // A rolled-back transaction leaves no job behind (the outbox is transactional).
    let txn = db.begin().await.unwrap();
    jobs::enqueue(&txn, &keys, &a, &spec(), None, 900)
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    let count = job::Entity::find()
        .filter(job::Column::AgentId.eq(a.id))
        .all(&db)
        .await
        .unwrap()
        .len();
    assert_eq!(count, 20);

    rotation(&db, &keys, &a).await;
    read_then_write_under_concurrency(&db, &a).await;
}

/// Many transactions that read, then write (with an audit event), at once:
/// every one commits. On SQLite with several pooled connections, a deferred
/// transaction's upgrade to writer failed at once with `SQLITE_BUSY` whenever
/// another connection had committed since its read; that surfaced as sporadic
/// 1011 closes on agent sessions.
async fn read_then_write_under_concurrency(db: &DatabaseConnection, a: &agent::Model) {
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (db, a) = (db.clone(), a.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                let txn = db.begin().await?;
                let row = agent::Entity::find_by_id(a.id)
                    .one(&txn)
                    .await?
                    .ok_or_else(|| sea_orm::DbErr::Custom("agent vanished".into()))?;
                tokio::task::yield_now().await;
                let mut am: agent::ActiveModel = row.into();
                am.hostname = Set(format!("h-{i}-{round}"));
                am.update(&txn).await?;
                picket_server::audit::record(
                    &txn,
                    picket_server::audit::Event::agent(
                        a.tenant_id,
                        a.id,
                        "test.touch",
                        "agent",
                        a.id,
                    ),
                )
                .await?;
                txn.commit().await?;
            }
            Ok::<(), sea_orm::DbErr>(())
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(e.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} transactions failed: {failures:?}",
        failures.len()
    );
}

/// Signing-key rotation: the new key becomes active in one transaction, the
/// chain of endorsements loads in order and verifies, nothing changes on a
/// refused rotation, and new jobs are signed with the new key.
async fn rotation(db: &DatabaseConnection, first: &ServerKeys, a: &agent::Model) {
    use picket_proto::KeyLink;
    use picket_server::keys::{MAX_OVERLAP_SECS, rotate_signing_key};

    let e = rotate_signing_key(db, b"another-master-secret-of-32-bytes-at-least", 60)
        .await
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("different master secret"),
        "{e:#}"
    );
    let e = rotate_signing_key(db, SECRET, MAX_OVERLAP_SECS + 1)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("at most"), "{e:#}");
    let unchanged = ServerKeys::load_or_create(db, SECRET).await.unwrap();
    assert_eq!(unchanged.fingerprint, first.fingerprint);
    assert!(unchanged.chain.is_empty());

    let r1 = rotate_signing_key(db, SECRET, 3600).await.unwrap();
    assert_eq!(r1.previous, first.fingerprint);
    let r2 = rotate_signing_key(db, SECRET, 0).await.unwrap();
    assert_eq!(r2.previous, r1.current);
    let now = ServerKeys::load_or_create(db, SECRET).await.unwrap();
    assert_eq!(now.fingerprint, r2.current);
    assert_eq!(now.chain.len(), 2, "oldest link first");
    let mut endorser = first.signing.verifying_key().to_bytes();
    for (link, (prev, until)) in now.chain.iter().zip([
        (first.fingerprint, r1.previous_valid_until),
        (r1.current, r2.previous_valid_until),
    ]) {
        assert_eq!(link.prev_key_id, prev);
        assert_eq!(link.prev_valid_until, until);
        let bytes = KeyLink::signing_bytes(&link.prev_key_id, &link.public.0, until);
        picket_shared::keys::verify_signature(&endorser, &bytes, &link.sig.0).unwrap();
        endorser = link.public.0;
    }
    assert_eq!(endorser, now.signing.verifying_key().to_bytes());
    let active = picket_server::db::entity::server_key::Entity::find()
        .filter(picket_server::db::entity::server_key::Column::Active.eq(true))
        .all(db)
        .await
        .unwrap();
    assert_eq!(active.len(), 1, "exactly one active key");

    let txn = db.begin().await.unwrap();
    let j = jobs::enqueue(&txn, &now, a, &spec(), None, 900)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    let sealed: picket_proto::SealedJob = serde_json::from_str(&j.sealed).unwrap();
    assert!(picket_shared::verify_job(&sealed, &[first.signing.verifying_key()]).is_err());
    picket_shared::verify_job(&sealed, &[now.signing.verifying_key()]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&sqlite_url(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_on_postgresql() {
    let (url, name) = fresh_pg().await;
    exercise(&url).await;
    drop_pg(&name).await;
}

/// The lookups on hot paths use an index (SQLite's query plan): every agent
/// session loads its connections by agent when it starts, and the outbox
/// sweep and depth filter jobs by state. A full scan there held SQLite's
/// single connection for 10,000 rows per connect, and agents were closed
/// with 1011 while waiting (found by `picket-loadgen fan-out` at 10,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_lookups_use_an_index_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = picket_server::db::connect(&sqlite_url(&dir)).await.unwrap();
    // A tenant-prefixed index would also "use an index" while reading every
    // row of a one-tenant fleet: each lookup names the index it needs.
    for (what, sql, index) in [
        (
            "connections of an agent",
            "SELECT * FROM siem_connections WHERE tenant_id = x'00' AND agent_id = x'01'",
            "ix_connections_agent",
        ),
        (
            "undelivered jobs (replica sweep)",
            "SELECT DISTINCT agent_id FROM jobs WHERE state = 'pending' AND last_sent_at IS NULL AND expires_at > 0",
            "ix_jobs_state_expires",
        ),
        (
            "outbox depth",
            "SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'acked')",
            "ix_jobs_state_expires",
        ),
        (
            "deployments of a connection",
            "SELECT * FROM deployments WHERE tenant_id = x'00' AND connection_id = x'01'",
            "ix_deployments_connection",
        ),
        (
            "rule states of a connection",
            "SELECT * FROM rule_deployments WHERE tenant_id = x'00' AND connection_id = x'01'",
            "ix_rule_deployments_connection",
        ),
    ] {
        let rows = db
            .query_all(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Sqlite,
                format!("EXPLAIN QUERY PLAN {sql}"),
            ))
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String>("", "detail").unwrap())
            .collect();
        assert!(
            plan.iter().any(|d| d.contains(index)),
            "{what}: the plan does not use {index}: {plan:?}"
        );
    }
}
