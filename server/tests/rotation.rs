//! `picket-server admin rotate-master-secret`: after a rotation the server
//! starts with the new secret, still decrypts SIEM credentials and signs with
//! the same job-signing key, and the old secret opens nothing; a rotation that
//! fails half-way (a tenant key that does not open, processed last) leaves
//! every key on the old secret. Run on SQLite and on PostgreSQL
//! (`postgres://postgres@127.0.0.1:5432` unless `PICKET_TEST_POSTGRES_URL`
//! says otherwise; a fresh database per run; PostgreSQL being down fails).

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine as _;
use picket_proto::SiemSettings;
use picket_server::db::entity::{server_key, siem_connection, tenant};
use picket_server::keys::ServerKeys;
use picket_server::service::{connections, rotation};
use picket_shared::vault::{MasterKeys, MasterSecret};
use sea_orm::{ActiveModelTrait as _, ConnectionTrait as _, EntityTrait as _, Set};
use support::{SECRET, TestApp, app};
use uuid::Uuid;

const NEW_SECRET: &[u8] = b"a-brand-new-master-secret-of-48-bytes-0123456789";

fn old_bytes() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(SECRET)
        .unwrap()
}

fn master(bytes: &[u8]) -> MasterKeys {
    MasterKeys::derive(&MasterSecret::new(bytes.to_vec()).unwrap())
}

fn pg_admin() -> String {
    std::env::var("PICKET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

async fn fresh_pg() -> (String, String) {
    let admin = sea_orm::Database::connect(format!("{}/test", pg_admin()))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is not reachable ({e})", pg_admin()));
    let name = format!("picket_rotation_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    (format!("{}/{name}", pg_admin()), name)
}

async fn drop_pg(name: &str) {
    if let Ok(admin) = sea_orm::Database::connect(format!("{}/test", pg_admin())).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

/// A server with a tenant whose SIEM credential is stored (so its tenant key exists).
async fn seeded(db_url: Option<&str>) -> (TestApp, Uuid) {
    let mut b = app();
    if let Some(u) = db_url {
        b = b.with_env("PICKET_DATABASE_URL", u);
    }
    let s = b.start().await;
    let admin = s
        .register("/v1/auth/claim", "Acme", "admin@acme.test")
        .await;
    let agent = s.agent(&admin).await;
    let conn = s.connection(&admin, &agent, "splunk-1").await;
    (s, conn.parse().unwrap())
}

/// The binary, as an operator runs it, on the server's database.
fn rotate_cli(s: &TestApp, new_secret_file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_picket-server"))
        .env_remove("PICKET_MASTER_SECRET_FILE")
        .env_remove("PICKET_CONFIG")
        .env("PICKET_MASTER_SECRET", SECRET)
        .env("PICKET_DATABASE_URL", &s.database_url)
        .env("PICKET_DATA_DIR", s.dir.path().join("data"))
        .args([
            "--config",
            s.dir.path().join("server.toml").to_str().unwrap(),
        ])
        .args(["admin", "rotate-master-secret", "--new-secret-file"])
        .arg(new_secret_file)
        .output()
        .unwrap()
}

async fn credential_token(
    db: &sea_orm::DatabaseConnection,
    keys: &ServerKeys,
    conn: Uuid,
) -> String {
    let c = siem_connection::Entity::find_by_id(conn)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    let target = connections::target_for_job(db, keys, &c).await.unwrap();
    match target.settings {
        SiemSettings::Splunk(sp) => sp.token.expose().to_owned(),
        #[allow(unreachable_patterns)] // Other SIEM kinds arrive later.
        _ => panic!("not splunk"),
    }
}

async fn rotation_round_trip(db_url: Option<&str>) {
    let (s, conn) = seeded(db_url).await;
    let db = sea_orm::Database::connect(s.database_url.clone())
        .await
        .unwrap();
    let before = ServerKeys::load_or_create(&db, &old_bytes()).await.unwrap();
    let fingerprint = before.fingerprint;
    assert_eq!(credential_token(&db, &before, conn).await, "splunk-token-1");

    let file = s.dir.path().join("new.secret");
    std::fs::write(
        &file,
        base64::engine::general_purpose::STANDARD.encode(NEW_SECRET),
    )
    .unwrap();
    let out = rotate_cli(&s, &file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 tenant key(s) and 1 signing key(s) re-wrapped"),
        "{stdout}"
    );

    // The old secret opens nothing any more.
    let err = ServerKeys::load_or_create(&db, &old_bytes())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("different master secret"), "{err}");
    let t = tenant::Entity::find().all(&db).await.unwrap();
    let wrapped = t[0].wrapped_key.clone().unwrap();
    assert!(
        master(&old_bytes())
            .unwrap_tenant_key(t[0].id, &wrapped)
            .is_err()
    );

    // The new secret opens everything: same signing key, same credential.
    let after = ServerKeys::load_or_create(&db, NEW_SECRET).await.unwrap();
    assert_eq!(after.fingerprint, fingerprint);
    assert_eq!(credential_token(&db, &after, conn).await, "splunk-token-1");
    let events = s
        .scalar("SELECT source FROM audit_events WHERE action = 'master_secret.rotate'")
        .await;
    assert_eq!(events, ["cli"]);

    // And the server starts with it, serves, and seals jobs (approval signs and stores one).
    let dir = s.stop().await;
    let mut b = app().with_dir(dir).with_env(
        "PICKET_MASTER_SECRET",
        &base64::engine::general_purpose::STANDARD.encode(NEW_SECRET),
    );
    if let Some(u) = db_url {
        b = b.with_env("PICKET_DATABASE_URL", u);
    }
    let s2 = b.start().await;
    let admin = s2.login("admin@acme.test", support::PASSWORD).await.body["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, user) = s2.user(&admin, "dana@acme.test", "user", false).await;
    let rule = s2.rule(&user, "After rotation").await;
    let d = s2.deployment(&user, &rule, &conn.to_string()).await;
    let a = s2
        .post(
            &format!("/v1/deployments/{d}/approve"),
            Some(&admin),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(s2.scalar("SELECT COUNT(*) FROM jobs").await, ["1"]);
}

#[tokio::test]
async fn rotation_on_sqlite() {
    rotation_round_trip(None).await;
}

#[tokio::test]
async fn rotation_on_postgresql() {
    let (url, name) = fresh_pg().await;
    rotation_round_trip(Some(&url)).await;
    drop_pg(&name).await;
}

async fn interrupted(db_url: Option<&str>) {
    let (s, conn) = seeded(db_url).await;
    let db = sea_orm::Database::connect(s.database_url.clone())
        .await
        .unwrap();
    // A second tenant whose key does not open (sorted last: the rotation
    // has re-wrapped the signing key and the first tenant key when it fails).
    tenant::ActiveModel {
        id: Set(Uuid::from_u128(u128::MAX)),
        name: Set("Broken".into()),
        wrapped_key: Set(Some(vec![1u8; 60])),
        key_version: Set(1),
        min_approvers: Set(1),
        require_tests: Set(false),
        created_at: Set(0),
    }
    .insert(&db)
    .await
    .unwrap();
    let keys_before = server_key::Entity::find().all(&db).await.unwrap();
    let tenants_before = tenant::Entity::find().all(&db).await.unwrap();

    let err = rotation::rotate_master_secret(&db, &master(&old_bytes()), &master(NEW_SECRET))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    let file = s.dir.path().join("new.secret");
    std::fs::write(&file, hex::encode(NEW_SECRET)).unwrap();
    let out = rotate_cli(&s, &file);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("still uses the current secret"), "{stderr}");

    // Nothing half-rotated: every row as it was, the old secret opens all, the new none.
    assert_eq!(
        server_key::Entity::find().all(&db).await.unwrap(),
        keys_before
    );
    assert_eq!(
        tenant::Entity::find().all(&db).await.unwrap(),
        tenants_before
    );
    let old = ServerKeys::load_or_create(&db, &old_bytes()).await.unwrap();
    assert_eq!(credential_token(&db, &old, conn).await, "splunk-token-1");
    assert!(ServerKeys::load_or_create(&db, NEW_SECRET).await.is_err());
    assert_eq!(
        s.scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'master_secret.rotate'")
            .await,
        ["0"]
    );
}

#[tokio::test]
async fn interrupted_rotation_on_sqlite_changes_nothing() {
    interrupted(None).await;
}

#[tokio::test]
async fn interrupted_rotation_on_postgresql_changes_nothing() {
    let (url, name) = fresh_pg().await;
    interrupted(Some(&url)).await;
    drop_pg(&name).await;
}
