//! The tamper-evident audit log against an in-process server on SQLite and
//! PostgreSQL: signed checkpoints, inclusion and consistency proofs checked
//! with the verification code (as a customer would), filters, the
//! append-only triggers, the JSON Lines export verified offline, and
//! `picket-server admin audit verify` naming an event edited in the database.
//!
//! PostgreSQL is `postgres://postgres@127.0.0.1:5432` unless
//! `PICKET_TEST_POSTGRES_URL` says otherwise; each run uses a fresh
//! database; PostgreSQL being down fails the test.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use picket_server::ServerConfig;
use picket_server::audit::{self, Actor, Event, Outcome, Source};
use picket_shared::checkpoint::verify_checkpoint;
use picket_shared::merkle::{Hash, leaf_hash, verify_consistency, verify_inclusion};
use sea_orm::{ConnectionTrait as _, DatabaseConnection, TransactionTrait as _};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

fn pg_admin() -> String {
    std::env::var("PICKET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

async fn fresh_pg() -> (String, String) {
    let admin = sea_orm::Database::connect(format!("{}/postgres", pg_admin()))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is not reachable ({e})", pg_admin()));
    let name = format!("picket_audit_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    (format!("{}/{name}", pg_admin()), name)
}

async fn drop_pg(name: &str) {
    if let Ok(admin) = sea_orm::Database::connect(format!("{}/postgres", pg_admin())).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

struct TestServer {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    db: DatabaseConnection,
    url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(database_url: Option<&str>) -> TestServer {
    start_with(database_url, &[]).await
}

async fn start_with(database_url: Option<&str>, extra: &[(&str, String)]) -> TestServer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let mut env: HashMap<String, String> = [
        ("PICKET_MASTER_SECRET", SECRET),
        ("PICKET_LISTEN", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert(
        "PICKET_DATA_DIR".into(),
        dir.path().join("data").display().to_string(),
    );
    if let Some(u) = database_url {
        env.insert("PICKET_DATABASE_URL".into(), u.to_owned());
    }
    for (k, v) in extra {
        env.insert((*k).to_owned(), v.clone());
    }
    let config = ServerConfig::load(None, false, &env).unwrap();
    let url = config.database_url.clone();
    let shutdown = CancellationToken::new();
    let running = picket_server::start(config, shutdown.clone())
        .await
        .unwrap();
    let db = sea_orm::Database::connect(url.clone()).await.unwrap();
    TestServer {
        dir,
        addr: running.addr,
        db,
        url,
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl TestServer {
    async fn call(&self, bearer: Option<&str>, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, text) = self.raw(bearer, path, body).await;
        (s, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn raw(&self, bearer: Option<&str>, path: &str, body: Option<Value>) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr);
        let mut req = match &body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        };
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    async fn claim(&self) -> (String, Uuid) {
        let (s, v) = self
            .call(
                None,
                "/v1/auth/claim",
                Some(json!({ "tenant_name": "Acme", "email": "admin@acme.test", "password": "correct-horse-battery-staple" })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let token = v["token"].as_str().unwrap().to_owned();
        let (_, me) = self.call(Some(&token), "/v1/me", None).await;
        (token, me["tenant_id"].as_str().unwrap().parse().unwrap())
    }

    async fn checkpoint(&self, admin: &str) -> Value {
        let (s, v) = self
            .call(Some(admin), "/v1/audit/checkpoint", Some(json!({})))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Runs `picket-server admin audit ARGS` against this server's database.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_picket-server"))
            .env_remove("PICKET_CONFIG")
            .env("PICKET_MASTER_SECRET", SECRET)
            .env("PICKET_DATABASE_URL", &self.url)
            .env("PICKET_DATA_DIR", self.dir.path().join("data"))
            .args(["admin", "audit"])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

fn b64hash(s: &Value) -> Hash {
    STANDARD
        .decode(s.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

fn verified(cp: &Value) -> picket_shared::checkpoint::Checkpoint {
    let key: [u8; 32] = STANDARD
        .decode(cp["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).unwrap();
    verify_checkpoint(cp["note"].as_str().unwrap(), "picket-audit", &key).unwrap()
}

/// Makes `n` audited changes (users created by the admin).
async fn make_events(s: &TestServer, admin: &str, n: usize, tag: &str) {
    for i in 0..n {
        let (st, v) = s
            .call(
                Some(admin),
                "/v1/users",
                Some(json!({ "email": format!("u{i}-{tag}@acme.test"), "password": "correct-horse-battery-staple", "role": "viewer" })),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
}

async fn scenario(s: &TestServer) {
    let (admin, tenant) = s.claim().await;
    make_events(s, &admin, 5, "a").await;

    // A signed checkpoint whose origin names the tenant's log.
    let cp1 = s.checkpoint(&admin).await;
    let c1 = verified(&cp1);
    assert_eq!(c1.origin, format!("picket/audit/{tenant}"));
    assert!(c1.size >= 6, "claim + 5 users, got {}", c1.size);

    // Every event's inclusion proof verifies against the signed root.
    let (st, page) = s
        .call(Some(&admin), "/v1/audit/events?limit=1000", None)
        .await;
    assert_eq!(st, 200, "{page}");
    let events = page["events"].as_array().unwrap();
    assert!(events.len() as u64 >= c1.size);
    for e in events
        .iter()
        .filter(|e| e["index"].as_u64().unwrap() < c1.size)
    {
        let index = e["index"].as_u64().unwrap();
        let leaf = leaf_hash(e["canonical"].as_str().unwrap().as_bytes());
        assert_eq!(hex::encode(leaf), e["leaf_hash"].as_str().unwrap());
        let (st, p) = s
            .call(
                Some(&admin),
                &format!("/v1/audit/events/{index}/proof?tree_size={}", c1.size),
                None,
            )
            .await;
        assert_eq!(st, 200, "{p}");
        let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(b64hash).collect();
        verify_inclusion(index, c1.size, &leaf, &proof, &c1.root).unwrap();
        // The same proof does not prove another event.
        let other = leaf_hash(b"{\"forged\":true}");
        assert!(verify_inclusion(index, c1.size, &other, &proof, &c1.root).is_err());
    }

    // The log grows; the new checkpoint is consistent with the old one.
    make_events(s, &admin, 3, "b").await;
    let cp2 = s.checkpoint(&admin).await;
    let c2 = verified(&cp2);
    assert!(c2.size > c1.size);
    let (st, p) = s
        .call(
            Some(&admin),
            &format!("/v1/audit/consistency?from={}&to={}", c1.size, c2.size),
            None,
        )
        .await;
    assert_eq!(st, 200, "{p}");
    let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(b64hash).collect();
    verify_consistency(c1.size, c2.size, &proof, &c1.root, &c2.root).unwrap();
    assert!(verify_consistency(c1.size, c2.size, &proof, &c2.root, &c2.root).is_err());

    // Bad requests get the JSON error shape with a precise code.
    let (st, v) = s
        .call(
            Some(&admin),
            &format!("/v1/audit/consistency?from=0&to={}", c2.size),
            None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_proof_request")),
        "{v}"
    );
    let (st, v) = s
        .call(
            Some(&admin),
            &format!("/v1/audit/events/0/proof?tree_size={}", c2.size + 100),
            None,
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_proof_request")),
        "{v}"
    );
    let (st, v) = s
        .call(Some(&admin), "/v1/audit/events?outcome=maybe", None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "{v}"
    );
    let (st, v) = s
        .call(Some(&admin), "/v1/audit/events?since=yesterday", None)
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "{v}"
    );

    // Filters and paging.
    let (_, v) = s
        .call(
            Some(&admin),
            "/v1/audit/events?action=user.create&limit=2",
            None,
        )
        .await;
    let first = v["events"].as_array().unwrap().clone();
    assert_eq!(first.len(), 2, "{v}");
    assert!(first.iter().all(|e| e["event"]["action"] == "user.create"));
    // API events carry the client's address (set by the API layer, not each handler).
    assert!(
        first
            .iter()
            .all(|e| e["event"]["client_ip"] == "127.0.0.1" && e["event"]["source"] == "api"),
        "{v}"
    );
    let (_, doc) = s.call(None, "/v1/openapi.json", None).await;
    for path in [
        "/v1/audit/checkpoint",
        "/v1/audit/events",
        "/v1/audit/events/{index}/proof",
        "/v1/audit/consistency",
        "/v1/audit/export",
    ] {
        assert!(doc["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    let after = v["next_after"].as_i64().unwrap();
    let (_, v) = s
        .call(
            Some(&admin),
            &format!("/v1/audit/events?action=user.create&after={after}&limit=1000"),
            None,
        )
        .await;
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        6,
        "8 users in all: {v}"
    );
    assert!(v["next_after"].is_null());
    let (_, v) = s
        .call(Some(&admin), "/v1/audit/events?outcome=denied", None)
        .await;
    assert!(v["events"].as_array().unwrap().is_empty(), "{v}");
    let (_, v) = s
        .call(
            Some(&admin),
            "/v1/audit/events?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z",
            None,
        )
        .await;
    assert!(v["events"].as_array().unwrap().is_empty(), "{v}");

    // Only Admin (or audit:read) may read the audit log.
    let (st, v) = s
        .call(
            Some(&admin),
            "/v1/users",
            Some(json!({ "email": "viewer@acme.test", "password": "correct-horse-battery-staple", "role": "viewer" })),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (_, login) = s
        .call(
            None,
            "/v1/auth/login",
            Some(
                json!({ "email": "viewer@acme.test", "password": "correct-horse-battery-staple" }),
            ),
        )
        .await;
    let viewer = login["token"].as_str().unwrap().to_owned();
    for path in [
        "/v1/audit/events",
        "/v1/audit/checkpoint",
        "/v1/audit/export?format=jsonl",
    ] {
        let (st, _) = s.call(Some(&viewer), path, None).await;
        assert_eq!(st, 403, "{path}");
    }
    let (st, _) = s.call(None, "/v1/audit/events", None).await;
    assert_eq!(st, 401);

    // The database refuses to update or delete audit rows.
    for sql in [
        "UPDATE audit_events SET action = 'x' WHERE idx = 0",
        "DELETE FROM audit_events WHERE idx = 0",
        "UPDATE audit_leaves SET idx = idx WHERE idx = 0",
        "DELETE FROM audit_leaves",
        "DELETE FROM audit_checkpoints",
        "UPDATE audit_checkpoints SET note = ''",
    ] {
        let err = s.db.execute_unprepared(sql).await;
        assert!(err.is_err(), "{sql} must be refused");
    }

    // Export as JSON Lines; verify offline; a tampered line is named.
    let (st, body) = s
        .raw(Some(&admin), "/v1/audit/export?format=jsonl", None)
        .await;
    assert_eq!(st, 200, "{body}");
    let file = s.dir.path().join("export.jsonl");
    std::fs::write(&file, &body).unwrap();
    let (ok, out) = s.cli(&["verify-export", file.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("OK:"), "{out}");
    let key = cp2["public_key"].as_str().unwrap();
    let (ok, out) = s.cli(&["verify-export", file.to_str().unwrap(), "--public-key", key]);
    assert!(ok, "{out}");
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines.len() > 5);
    let tampered: String = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 3 {
                l.replace("user.create", "user.delete")
            } else {
                (*l).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(tampered.trim(), body.trim(), "the tampering changed line 4");
    std::fs::write(&file, tampered).unwrap();
    let (ok, out) = s.cli(&["verify-export", file.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("line 4"), "{out}");
    let other_key = STANDARD.encode(
        picket_shared::keys::ServerSigningKey::generate()
            .unwrap()
            .verifying_key()
            .as_bytes(),
    );
    std::fs::write(&file, &body).unwrap();
    let (ok, out) = s.cli(&[
        "verify-export",
        file.to_str().unwrap(),
        "--public-key",
        &other_key,
    ]);
    assert!(!ok, "another key must not verify: {out}");

    // CEF and syslog exports carry every event.
    for (fmt, marker) in [("cef", "CEF:0|Picket|picket-server|"), ("syslog", "<86>1 ")] {
        let (st, body) = s
            .raw(
                Some(&admin),
                &format!("/v1/audit/export?format={fmt}"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{body}");
        assert!(body.lines().count() as u64 >= c2.size, "{fmt}: {body}");
        assert!(
            body.lines()
                .all(|l| l.contains("CEF:0|") || l.starts_with('<')),
            "{fmt}: {body}"
        );
        assert!(body.contains(marker), "{fmt}: {body}");
    }
    // The exports themselves are audited.
    let (_, v) = s
        .call(Some(&admin), "/v1/audit/events?action=audit.export", None)
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 3, "{v}");

    // verify: clean first.
    let (ok, out) = s.cli(&["verify"]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("log {tenant}: OK")), "{out}");

    // Someone with database access edits one event (dropping the trigger first).
    let target = events
        .iter()
        .find(|e| e["event"]["action"] == "user.create")
        .unwrap();
    let idx = target["index"].as_i64().unwrap();
    let edited = target["canonical"]
        .as_str()
        .unwrap()
        .replace("\"outcome\":\"success\"", "\"outcome\":\"failure\"");
    drop_update_guard(&s.db).await;
    let txn = s.db.begin().await.unwrap();
    txn.execute(sea_orm::Statement::from_sql_and_values(
        txn.get_database_backend(),
        match txn.get_database_backend() {
            sea_orm::DbBackend::Postgres => "UPDATE audit_events SET canonical = $1, outcome = 'failure' WHERE log_id = $2 AND idx = $3",
            _ => "UPDATE audit_events SET canonical = ?, outcome = 'failure' WHERE log_id = ? AND idx = ?",
        },
        [edited.into(), tenant.to_string().into(), idx.into()],
    ))
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let (ok, out) = s.cli(&["verify", "--tenant", &tenant.to_string()]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("log {tenant}: TAMPERED")), "{out}");
    assert!(
        out.contains(&format!("first bad event: #{idx} ")),
        "verify must name event #{idx}: {out}"
    );
}

async fn drop_update_guard(db: &DatabaseConnection) {
    let sql = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => "DROP TRIGGER audit_events_guard ON audit_events",
        _ => "DROP TRIGGER audit_events_no_update",
    };
    db.execute_unprepared(sql).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_proofs_triggers_export_and_verify() {
    let s = start(None).await;
    scenario(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_checkpoints_proofs_triggers_export_and_verify() {
    let (url, name) = fresh_pg().await;
    {
        let s = start(Some(&url)).await;
        scenario(&s).await;
    }
    drop_pg(&name).await;
}

/// Many writers append to one log at once, each in its own transaction (some
/// rolled back): the indexes stay dense and the log verifies.
async fn concurrent_writers(url: &str) {
    let db = picket_server::db::connect(url).await.unwrap();
    let tenant = Uuid::now_v7();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let txn = db.begin().await.unwrap();
                let ev = Event::user(
                    tenant,
                    Uuid::now_v7(),
                    "test.write",
                    "thing",
                    format!("{w}-{i}"),
                );
                audit::record(&txn, ev).await.unwrap();
                if i % 5 == 4 {
                    txn.rollback().await.unwrap();
                } else {
                    txn.commit().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Outside a transaction too (the gateway records like this).
    audit::record(
        &db,
        Event {
            tenant_id: Some(tenant),
            actor: Actor::System,
            action: "test.autocommit",
            resource_type: "thing",
            resource_id: None,
            source: Source::System,
            client_ip: None,
            user_agent: None,
            outcome: Outcome::Success,
            details: json!({}),
        },
    )
    .await
    .unwrap();
    let rows = db
        .query_all(sea_orm::Statement::from_sql_and_values(
            db.get_database_backend(),
            match db.get_database_backend() {
                sea_orm::DbBackend::Postgres => {
                    "SELECT idx FROM audit_events WHERE log_id = $1 ORDER BY idx"
                }
                _ => "SELECT idx FROM audit_events WHERE log_id = ? ORDER BY idx",
            },
            [tenant.to_string().into()],
        ))
        .await
        .unwrap();
    let idx: Vec<i64> = rows
        .iter()
        .map(|r| r.try_get_by_index(0).unwrap())
        .collect();
    assert_eq!(
        idx.len(),
        8 * 20 + 1,
        "rolled-back events are not in the log"
    );
    assert_eq!(
        idx,
        (0..idx.len() as i64).collect::<Vec<_>>(),
        "dense indexes"
    );
    let key = picket_shared::keys::ServerSigningKey::generate().unwrap();
    let log = tenant.to_string();
    while audit::checkpoint::checkpoint_log(&db, &key, &log)
        .await
        .unwrap()
        .is_some()
    {}
    let cp = audit::checkpoint::latest(&db, &log).await.unwrap().unwrap();
    assert_eq!(cp.size, idx.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_writers_get_dense_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    concurrent_writers(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_writers_get_dense_indexes() {
    let (url, name) = fresh_pg().await;
    concurrent_writers(&url).await;
    drop_pg(&name).await;
}

/// Retention: bodies older than the cutoff are pruned by the audited admin
/// command, leaf hashes stay, proofs and `verify` still pass, and the
/// triggers still refuse deleting anything above the watermark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_deletes_old_bodies_but_proofs_still_verify() {
    let s = start(None).await;
    prune_scenario(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_prune_deletes_old_bodies_but_proofs_still_verify() {
    let (url, name) = fresh_pg().await;
    {
        let s = start(Some(&url)).await;
        prune_scenario(&s).await;
    }
    drop_pg(&name).await;
}

async fn prune_scenario(s: &TestServer) {
    let tenant = Uuid::now_v7();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for i in 0..5 {
        let ev = Event::user(tenant, Uuid::now_v7(), "test.old", "thing", i);
        audit::record_at(&s.db, ev, now - 500 * 86_400)
            .await
            .unwrap();
    }
    for i in 0..3 {
        let ev = Event::user(tenant, Uuid::now_v7(), "test.new", "thing", i);
        audit::record(&s.db, ev).await.unwrap();
    }
    let log = tenant.to_string();
    let (ok, out) = s.cli(&["prune", "--tenant", &log]);
    assert!(ok, "{out}");
    assert!(out.contains("pruned 5 event bodies below #5"), "{out}");
    let (ok, out) = s.cli(&["prune", "--tenant", &log]);
    assert!(ok && out.contains("nothing to prune"), "{out}");

    let count = |sql: &'static str| {
        let db = &s.db;
        let log = log.clone();
        async move {
            let sql = match db.get_database_backend() {
                sea_orm::DbBackend::Postgres => sql.replace('?', "$1"),
                _ => sql.to_owned(),
            };
            db.query_one(sea_orm::Statement::from_sql_and_values(
                db.get_database_backend(),
                sql,
                [log.into()],
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get_by_index::<i64>(0)
            .unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_events WHERE log_id = ? AND action = 'test.old'").await,
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_events WHERE log_id = ? AND action = 'test.new'").await,
        3
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_events WHERE log_id = ? AND action = 'audit.prune'")
            .await,
        1
    );
    // 8 events and the prune record (checkpointed by the second prune run).
    assert_eq!(
        count("SELECT COUNT(*) FROM audit_leaves WHERE log_id = ?").await,
        9
    );

    // A pruned event's leaf is still provably in the signed tree.
    let cp = audit::checkpoint::latest(&s.db, &log)
        .await
        .unwrap()
        .unwrap();
    let size = cp.size as u64;
    let leaves = audit::proof::leaves(&s.db, &log, size).await.unwrap();
    let proof = audit::proof::inclusion(&s.db, &log, 2, size).await.unwrap();
    let root: Hash = cp.root.as_slice().try_into().unwrap();
    verify_inclusion(2, size, &leaves[2], &proof, &root).unwrap();

    // Above the watermark, the triggers still refuse; the watermark cannot go down.
    for sql in [
        format!("DELETE FROM audit_events WHERE log_id = '{log}' AND action = 'test.new'"),
        format!("UPDATE audit_prune SET below_idx = 0 WHERE log_id = '{log}'"),
        format!("DELETE FROM audit_prune WHERE log_id = '{log}'"),
    ] {
        assert!(
            s.db.execute_unprepared(&sql).await.is_err(),
            "{sql} must be refused"
        );
    }
    let (ok, out) = s.cli(&["verify", "--tenant", &log]);
    assert!(ok, "{out}");
    assert!(out.contains("OK"), "{out}");
}

/// Reads RFC 6587 octet-counted syslog frames until `want` returns true for
/// the messages received so far (bounded by a generous deadline).
async fn read_frames(
    conn: &mut tokio::net::TcpStream,
    got: &mut Vec<String>,
    want: impl Fn(&[String]) -> bool,
) {
    use tokio::io::AsyncReadExt as _;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut buf: Vec<u8> = Vec::new();
    while !want(got) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, conn.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("timed out; received so far: {got:#?}"))
            .unwrap();
        assert!(
            n > 0,
            "the streamer closed the connection; received: {got:#?}"
        );
        buf.extend_from_slice(&chunk[..n]);
        while let Some(sp) = buf.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
            if buf.len() < sp + 1 + len {
                break;
            }
            got.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
            buf.drain(..sp + 1 + len);
        }
    }
}

async fn accept_within(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
    tokio::time::timeout(std::time::Duration::from_secs(90), listener.accept())
        .await
        .expect("the streamer connects (reconnect backoff is at most 30 s)")
        .unwrap()
        .0
}

async fn bind_again(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("rebinding {addr}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    }
}

fn users_created(msgs: &[String]) -> usize {
    msgs.iter().filter(|m| m.contains(" user.create [")).count()
}

/// Events are streamed to a TCP syslog receiver as they are committed; those
/// committed while the receiver is down wait in the queue and arrive, in
/// order, once it is back, also after it dropped a live connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_streaming_survives_receiver_down_then_up() {
    // Reserve a port, then leave it closed: the receiver starts down.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let s = start_with(None, &[("PICKET_AUDIT_SYSLOG_ADDRESS", addr.to_string())]).await;
    let (admin, tenant) = s.claim().await;
    make_events(&s, &admin, 3, "down").await;

    // The receiver comes up: the backlog arrives, in index order.
    let listener = bind_again(addr).await;
    let mut conn = accept_within(&listener).await;
    let mut got = Vec::new();
    read_frames(&mut conn, &mut got, |m| users_created(m) >= 3).await;
    make_events(&s, &admin, 2, "up").await;
    read_frames(&mut conn, &mut got, |m| users_created(m) >= 5).await;
    let ours: Vec<&String> = got
        .iter()
        .filter(|m| m.contains(&format!("log=\"{tenant}\"")))
        .collect();
    for m in &ours {
        assert!(m.starts_with("<86>1 ") || m.starts_with("<84>1 "), "{m}");
        assert!(m.contains(" picket-server - "), "{m}");
    }
    let idx: Vec<u64> = ours
        .iter()
        .map(|m| {
            let i = m.find("index=\"").unwrap() + 7;
            m[i..].split('"').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(
        idx,
        (0..idx.len() as u64).collect::<Vec<_>>(),
        "every event once, in order: {got:#?}"
    );

    // The receiver drops the connection and goes away; an event happens; it comes back.
    drop(conn);
    drop(listener);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    make_events(&s, &admin, 1, "again").await;
    let listener = bind_again(addr).await;
    let mut conn = accept_within(&listener).await;
    let mut again = Vec::new();
    read_frames(&mut conn, &mut again, |m| users_created(m) >= 1).await;
    let next = idx.len() as u64;
    assert!(
        again
            .iter()
            .any(|m| m.contains(&format!("index=\"{next}\""))),
        "event #{next}, made while the receiver was away, is delivered: {again:#?}"
    );
}

/// The same stream over TLS (RFC 5425) to a receiver whose certificate is
/// trusted through `ca_bundle` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_streaming_over_tls() {
    use tokio::io::AsyncReadExt as _;
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ck.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = start_with(
        None,
        &[
            ("PICKET_AUDIT_SYSLOG_ADDRESS", addr.to_string()),
            ("PICKET_AUDIT_SYSLOG_TLS", "true".to_owned()),
            ("PICKET_AUDIT_SYSLOG_CA_BUNDLE", ca.display().to_string()),
        ],
    )
    .await;
    let (admin, _) = s.claim().await;
    make_events(&s, &admin, 2, "tls").await;
    let tcp = accept_within(&listener).await;
    let mut tls = acceptor.accept(tcp).await.unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    while text.matches(" user.create [").count() < 2 {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tls.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("timed out; received: {text}"))
            .unwrap();
        assert!(n > 0, "closed; received: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(text.contains("<86>1 "), "{text}");
}
