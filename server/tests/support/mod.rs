//! A `TestApp` for the access-model tests: the real server on a loopback
//! port 0 (`picket_server::start`), an HTTP client, and the database opened
//! beside it to inspect rows and to move clocks (expire a session or a key)
//! where waiting for real would take hours.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;

use picket_proto::{AgentVersion, B64, EnrollRequest, EnrollmentToken, Hostname};
use picket_server::ServerConfig;
use sea_orm::DatabaseConnection;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
pub const PASSWORD: &str = "correct-horse-battery-staple";

pub struct TestApp {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub db: DatabaseConnection,
    pub database_url: String,
    pub http: reqwest::Client,
    pub scheme: &'static str,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The throwaway PostgreSQL database under `PICKET_E2E_DB=postgres`,
    /// dropped with this app (unless `stop` hands it to a restart).
    pg_db: Option<String>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(name) = self.pg_db.take() {
            // FORCE ends the pool's sessions of the server being shut down.
            let _ = std::process::Command::new("psql")
                .arg(format!("{}/test", pg_admin_url()))
                .args(["-q", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .output();
        }
    }
}

/// The PostgreSQL server for `PICKET_E2E_DB=postgres` (no database path).
pub fn pg_admin_url() -> String {
    std::env::var("PICKET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// Under `PICKET_E2E_DB=postgres` (the same switch as the end-to-end
/// harness): the name of a fresh PostgreSQL database for an app whose data
/// directory is `dir`, created once and remembered in `dir/pg-database` so a
/// restart on the same directory finds the same database.
async fn pg_database_for(dir: &std::path::Path) -> Option<String> {
    match std::env::var("PICKET_E2E_DB").as_deref() {
        Err(_) | Ok("" | "sqlite") => return None,
        Ok("postgres" | "postgresql") => {}
        Ok(other) => panic!("PICKET_E2E_DB={other:?}: expected `sqlite` or `postgres`"),
    }
    let marker = dir.join("pg-database");
    if let Ok(name) = std::fs::read_to_string(&marker) {
        return Some(name);
    }
    let name = format!("picket_st_{}", uuid::Uuid::new_v4().simple());
    let out = tokio::process::Command::new("psql")
        .arg(format!("{}/test", pg_admin_url()))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("CREATE DATABASE {name}"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "creating a PostgreSQL database (is PostgreSQL running? .ci/run starts it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&marker, &name).unwrap();
    Some(name)
}

/// What a call answered.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// How to start a server.
#[derive(Default)]
pub struct Builder {
    toml: String,
    env: Vec<(String, String)>,
    tls: bool,
    dir: Option<tempfile::TempDir>,
}

impl Builder {
    /// Extra `server.toml` text (sections such as `[sessions]`, `[login]`).
    pub fn with_toml(mut self, t: &str) -> Self {
        self.toml.push_str(t);
        self.toml.push('\n');
        self
    }
    /// A `PICKET_*` variable.
    pub fn with_env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }
    /// Serve TLS with a fresh self-signed certificate.
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }
    /// Reuse a data directory (restart on the same database).
    pub fn with_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    pub async fn start(self) -> TestApp {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = match self.dir {
            Some(d) => d,
            None => tempfile::tempdir().unwrap(),
        };
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("PICKET_MASTER_SECRET".into(), SECRET.into());
        env.insert("PICKET_LISTEN".into(), "127.0.0.1:0".into());
        env.insert(
            "PICKET_DATA_DIR".into(),
            dir.path().join("data").display().to_string(),
        );
        let pg_db = if self.env.iter().any(|(k, _)| k == "PICKET_DATABASE_URL")
            || self.toml.contains("database_url")
        {
            None
        } else {
            pg_database_for(dir.path()).await
        };
        if let Some(name) = &pg_db {
            env.insert(
                "PICKET_DATABASE_URL".into(),
                format!("{}/{name}", pg_admin_url()),
            );
        }
        for (k, v) in self.env {
            env.insert(k, v);
        }
        let mut toml = self.toml;
        if self.tls {
            let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let cert = dir.path().join("cert.pem");
            let key = dir.path().join("key.pem");
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
            toml.push_str(&format!(
                "[tls]\ncert_path = {:?}\nkey_path = {:?}\n",
                cert.display().to_string(),
                key.display().to_string()
            ));
        }
        let path = dir.path().join("server.toml");
        std::fs::write(&path, &toml).unwrap();
        let config = ServerConfig::load(Some(&path), true, &env).unwrap();
        let database_url = config.database_url.clone();
        let shutdown = CancellationToken::new();
        let running = picket_server::start(config, shutdown.clone())
            .await
            .unwrap();
        let db = sea_orm::Database::connect(database_url.clone())
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .unwrap();
        TestApp {
            dir,
            addr: running.addr,
            db,
            database_url,
            http,
            scheme: if self.tls { "https" } else { "http" },
            shutdown,
            task: Some(running.task),
            pg_db,
        }
    }
}

pub fn app() -> Builder {
    Builder::default()
}

impl TestApp {
    /// Stops the server and returns its data directory (to start again on it).
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        // The restart on the returned directory reuses (and later drops) it.
        self.pg_db = None;
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Any call. `bearer` goes in `Authorization`; `headers` are added as given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, self.url(path));
        if let Some(b) = &body {
            req = req.json(b);
        }
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    pub async fn get(&self, path: &str, bearer: &str) -> Answer {
        self.send("GET", path, Some(bearer), None, &[]).await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> Answer {
        self.send("POST", path, bearer, Some(body), &[]).await
    }

    /// Claims a self-hosted instance (or signs up in saas mode); returns the admin's token.
    pub async fn register(&self, path: &str, tenant: &str, email: &str) -> String {
        let a = self
            .post(
                path,
                None,
                json!({ "tenant_name": tenant, "email": email, "password": PASSWORD }),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["token"].as_str().unwrap().to_owned()
    }

    pub async fn login(&self, email: &str, password: &str) -> Answer {
        self.post(
            "/v1/auth/login",
            None,
            json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Creates a user with [`PASSWORD`] and signs them in; returns (id, token).
    pub async fn user(
        &self,
        admin: &str,
        email: &str,
        role: &str,
        approver: bool,
    ) -> (String, String) {
        let a = self
            .post(
                "/v1/users",
                Some(admin),
                json!({ "email": email, "password": PASSWORD, "role": role, "approver": approver }),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let id = a.body["id"].as_str().unwrap().to_owned();
        let l = self.login(email, PASSWORD).await;
        assert_eq!(l.status, 200, "{}", l.text);
        (id, l.body["token"].as_str().unwrap().to_owned())
    }

    /// Creates an API key; returns (id, key text).
    pub async fn api_key(&self, admin: &str, scopes: &[&str]) -> (String, String) {
        let a = self
            .post(
                "/v1/api-keys",
                Some(admin),
                json!({ "name": format!("key {scopes:?}"), "scopes": scopes }),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        (
            a.body["id"].as_str().unwrap().to_owned(),
            a.body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Enrolls an agent through the real enrollment flow; returns its id.
    pub async fn agent(&self, admin: &str) -> String {
        let t = self
            .post("/v1/enrollment-tokens", Some(admin), json!({}))
            .await;
        assert_eq!(t.status, 201, "{}", t.text);
        let token = t.body["token"].as_str().unwrap();
        let keys = picket_shared::AgentKeys::generate().unwrap();
        let parsed = EnrollmentToken::parse(token).unwrap();
        let (x, e) = (keys.x25519_public(), keys.ed25519_public());
        let req = serde_json::to_value(EnrollRequest {
            token_secret: B64(parsed.secret),
            hostname: Hostname::new("host-1").unwrap(),
            version: AgentVersion::new("0.1.0").unwrap(),
            x25519_public: B64(x),
            ed25519_public: B64(e),
            proof: B64(keys.sign(&EnrollRequest::proof_bytes(&parsed.secret, &x, &e))),
        })
        .unwrap();
        let a = self.post("/v1/agent/enroll", None, req).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["agent_id"].as_str().unwrap().to_owned()
    }

    /// Registers a Splunk connection served by `agent`; returns its id.
    pub async fn connection(&self, admin: &str, agent: &str, name: &str) -> String {
        let a = self
            .post(
                "/v1/connections",
                Some(admin),
                json!({ "name": name, "kind": "splunk", "agent_id": agent, "base_url": "https://splunk.test:8089", "token": "splunk-token-1" }),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["id"].as_str().unwrap().to_owned()
    }

    /// Creates a rule; returns its id.
    pub async fn rule(&self, author: &str, title: &str) -> String {
        let a = self.post("/v1/rules", Some(author), rule_body(title)).await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["id"].as_str().unwrap().to_owned()
    }

    /// Requests a deployment of version 1; returns its id.
    pub async fn deployment(&self, requester: &str, rule: &str, conn: &str) -> String {
        let a = self
            .post(
                "/v1/deployments",
                Some(requester),
                deployment_body(rule, conn),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        a.body["id"].as_str().unwrap().to_owned()
    }

    /// Runs a SQL query and returns the rows as strings of their first column.
    pub async fn scalar(&self, sql: &str) -> Vec<String> {
        use sea_orm::ConnectionTrait as _;
        let rows = self
            .db
            .query_all(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                sql,
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                r.try_get_by_index::<String>(0)
                    .or_else(|_| r.try_get_by_index::<i64>(0).map(|v| v.to_string()))
                    .or_else(|_| r.try_get_by_index::<uuid::Uuid>(0).map(|v| v.to_string()))
                    .or_else(|_| {
                        r.try_get_by_index::<Option<String>>(0)
                            .map(|v| v.unwrap_or_default())
                    })
                    .unwrap()
            })
            .collect()
    }

    pub async fn exec(&self, sql: &str) {
        use sea_orm::ConnectionTrait as _;
        self.db.execute_unprepared(sql).await.unwrap();
    }
}

pub fn rule_body(title: &str) -> Value {
    json!({ "title": title, "description": "Detects it.", "severity": "high", "query": "index=main sourcetype=auth failed", "cron": "*/5 * * * *", "earliest": "-10m", "latest": "now" })
}

pub fn deployment_body(rule: &str, conn: &str) -> Value {
    json!({ "rule_id": rule, "version": 1, "connection_id": conn, "action": "deploy", "message": "please" })
}
