//! Enrollment tokens and agent revocation against an in-process server
//! (`picket_server::start` on a loopback port), driven over HTTP like an agent
//! or an admin script, with the database opened beside it to set up what the
//! API cannot (an expired token, a second tenant).
//!
//! The use cap is checked under concurrency on SQLite and on PostgreSQL
//! (`postgres://postgres@127.0.0.1:5432` unless `PICKET_TEST_POSTGRES_URL`
//! says otherwise; a fresh database per run; PostgreSQL being down fails).

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;

use picket_proto::{AgentVersion, B64, EnrollRequest, EnrollmentToken, Hostname};
use picket_server::ServerConfig;
use picket_server::db::entity::{enrollment_token, tenant, user};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait as _, DatabaseConnection,
    EntityTrait as _, QueryFilter as _, Set,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes

struct TestServer {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    db: DatabaseConnection,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(database_url: Option<&str>) -> TestServer {
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
    let config = ServerConfig::load(None, false, &env).unwrap();
    let url = config.database_url.clone();
    let shutdown = CancellationToken::new();
    let running = picket_server::start(config, shutdown.clone())
        .await
        .unwrap();
    let db = sea_orm::Database::connect(url).await.unwrap();
    TestServer {
        _dir: dir,
        addr: running.addr,
        db,
        http: reqwest::Client::new(),
        shutdown,
    }
}

impl TestServer {
    async fn call(&self, bearer: Option<&str>, path: &str, body: Option<Value>) -> (u16, Value) {
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
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn claim(&self) -> String {
        let (s, v) = self
            .call(
                None,
                "/v1/auth/claim",
                Some(json!({ "tenant_name": "Acme", "email": "admin@acme.test", "password": "correct-horse-battery-staple" })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().unwrap().to_owned()
    }

    /// Creates a token; returns (id, text).
    async fn token(&self, admin: &str, body: Value) -> (Uuid, String) {
        let (s, v) = self
            .call(Some(admin), "/v1/enrollment-tokens", Some(body))
            .await;
        assert_eq!(s, 201, "{v}");
        (
            v["id"].as_str().unwrap().parse().unwrap(),
            v["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn enroll(&self, token: &str, keys: &picket_shared::AgentKeys) -> (u16, Value) {
        self.call(None, "/v1/agent/enroll", Some(enroll_request(token, keys)))
            .await
    }
}

fn enroll_request(token: &str, keys: &picket_shared::AgentKeys) -> Value {
    let t = EnrollmentToken::parse(token).unwrap();
    let (x, e) = (keys.x25519_public(), keys.ed25519_public());
    serde_json::to_value(EnrollRequest {
        token_secret: B64(t.secret),
        hostname: Hostname::new("host-1").unwrap(),
        version: AgentVersion::new("0.1.0").unwrap(),
        x25519_public: B64(x),
        ed25519_public: B64(e),
        proof: B64(keys.sign(&EnrollRequest::proof_bytes(&t.secret, &x, &e))),
    })
    .unwrap()
}

fn new_keys() -> picket_shared::AgentKeys {
    picket_shared::AgentKeys::generate().unwrap()
}

#[tokio::test]
async fn expired_token_is_refused_with_token_expired() {
    let s = start(None).await;
    let admin = s.claim().await;
    let (id, tok) = s.token(&admin, json!({ "ttl_secs": 3600 })).await;
    enrollment_token::Entity::update_many()
        .col_expr(
            enrollment_token::Column::ExpiresAt,
            Expr::value(picket_server::time::unix_now() - 10),
        )
        .filter(enrollment_token::Column::Id.eq(id))
        .exec(&s.db)
        .await
        .unwrap();
    let (status, body) = s.enroll(&tok, &new_keys()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "token_expired", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{body}"
    );
    let (_, list) = s.call(Some(&admin), "/v1/enrollment-tokens", None).await;
    assert_eq!(list[0]["status"], "expired", "{list}");
    assert_eq!(list[0]["uses"], 0, "a refused enrollment consumes nothing");
}

#[tokio::test]
async fn bad_token_fields_are_refused_precisely() {
    let s = start(None).await;
    let admin = s.claim().await;
    for body in [json!({ "max_uses": 0 }), json!({ "max_uses": 10_001 })] {
        let (status, v) = s
            .call(Some(&admin), "/v1/enrollment-tokens", Some(body))
            .await;
        assert_eq!(status, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("max_uses"),
            "{v}"
        );
    }
}

async fn use_cap_holds_under_concurrency(database_url: Option<&str>) {
    let s = start(database_url).await;
    let admin = s.claim().await;
    let (id, tok) = s.token(&admin, json!({ "max_uses": 3 })).await;
    let attempts = (0..8).map(|_| {
        let keys = new_keys();
        let s = &s;
        let tok = tok.clone();
        async move { s.enroll(&tok, &keys).await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let ok = results.iter().filter(|(st, _)| *st == 200).count();
    assert_eq!(ok, 3, "{results:?}");
    for (st, body) in results.iter().filter(|(st, _)| *st != 200) {
        assert_eq!(*st, 401, "{body}");
        assert_eq!(body["error"]["code"], "token_used", "{body}");
    }
    let row = enrollment_token::Entity::find_by_id(id)
        .one(&s.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.uses, row.max_uses), (3, 3));
}

#[tokio::test]
async fn use_cap_holds_under_concurrency_on_sqlite() {
    use_cap_holds_under_concurrency(None).await;
}

fn pg_admin() -> String {
    std::env::var("PICKET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

#[tokio::test]
async fn use_cap_holds_under_concurrency_on_postgresql() {
    let admin = sea_orm::Database::connect(format!("{}/test", pg_admin()))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is not reachable ({e})", pg_admin()));
    let name = format!("picket_enroll_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{}/{name}", pg_admin());
    let run = tokio::spawn(async move { use_cap_holds_under_concurrency(Some(&url)).await });
    let result = run.await;
    // The server's pool may still hold connections; FORCE ends them.
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn revocation_is_tenant_scoped_and_revoked_keys_cannot_enroll() {
    let s = start(None).await;
    let admin = s.claim().await;
    let (tok_id, tok) = s.token(&admin, json!({ "max_uses": 2 })).await;
    let keys = new_keys();
    let (st, enrolled) = s.enroll(&tok, &keys).await;
    assert_eq!(st, 200, "{enrolled}");
    let agent_id = enrolled["agent_id"].as_str().unwrap().to_owned();

    // An admin of another tenant sees neither the agent nor the token.
    let other_tenant = Uuid::now_v7();
    tenant::ActiveModel {
        id: Set(other_tenant),
        name: Set("Other".into()),
        wrapped_key: Set(None),
        key_version: Set(1),
        min_approvers: Set(1),
        require_tests: Set(false),
        created_at: Set(0),
    }
    .insert(&s.db)
    .await
    .unwrap();
    let other = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant_id: Set(other_tenant),
        email: Set("eve@other.test".into()),
        password_hash: Set("x".into()),
        role: Set("admin".into()),
        approver: Set(false),
        created_at: Set(0),
    }
    .insert(&s.db)
    .await
    .unwrap();
    let eve = picket_server::auth::create_session(&s.db, &other, 3600)
        .await
        .unwrap();
    let (st, _) = s
        .call(
            Some(&eve),
            &format!("/v1/agents/{agent_id}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .call(
            Some(&eve),
            &format!("/v1/enrollment-tokens/{tok_id}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, list) = s.call(Some(&eve), "/v1/enrollment-tokens", None).await;
    assert_eq!((st, list), (200, json!([])));

    // The tenant's admin revokes it; the event is in the audit trail.
    let (st, v) = s
        .call(
            Some(&admin),
            &format!("/v1/agents/{agent_id}/revoke"),
            Some(json!({})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "revoked");
    let audited = s
        .db
        .query_one(sea_orm::Statement::from_string(
            s.db.get_database_backend(),
            format!(
                "SELECT COUNT(*) AS n FROM audit_events WHERE action = 'agent.revoke' AND resource_id = '{agent_id}'"
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(audited, 1);

    // Its keys cannot come back, even with a valid token (which stays unconsumed).
    let (st, body) = s.enroll(&tok, &keys).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["error"]["code"], "key_revoked");
    // Either key alone is enough to refuse.
    let half = picket_shared::AgentKeys::from_bytes(
        &keys.x25519_secret_bytes(),
        &new_keys().ed25519_seed(),
    );
    let (st, body) = s.enroll(&tok, &half).await;
    assert_eq!((st, &body["error"]["code"]), (403, &json!("key_revoked")));
    let (st, body) = s.enroll(&tok, &new_keys()).await;
    assert_eq!(st, 200, "new keys enroll: {body}");
}

/// Hostile or malformed requests get the API's JSON error shape with a
/// precise code, never a framework plain-text body, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_precise_json_errors() {
    let s = start(None).await;
    let admin = s.claim().await;
    let base = format!("http://{}", s.addr);

    let (status, v) = s.call(Some(&admin), "/v1/agents/not-a-uuid", None).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_path");

    let (status, v) = s
        .call(Some(&admin), "/v1/deployments?limit=lots", None)
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "invalid_query");

    let resp = s
        .http
        .delete(format!("{base}/v1/rules"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "method_not_allowed");

    let resp = s
        .http
        .post(format!("{base}/v1/rules"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json");

    let big = "x".repeat(300 * 1024);
    let (status, v) = s
        .call(
            Some(&admin),
            "/v1/rules",
            Some(json!({ "title": "t", "query": big })),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "body_too_large");

    let (status, v) = s.call(Some(&admin), "/v1/rules", None).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!([]), "nothing was created by the refused requests");
}
