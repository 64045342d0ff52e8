//! The admin side, over the server's JSON API: claim the instance, add an
//! approver, enroll agents in bulk (enrollment tokens with `max_uses`, at most
//! 10,000 each, so a larger fleet takes several tokens; every token and every
//! enrollment is audited by the server), create one SIEM connection per agent,
//! request deployments and approve them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use picket_proto::{AgentVersion, B64, EnrollRequest, EnrollResponse, EnrollmentToken, Hostname};
use picket_shared::AgentKeys;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fleet::SimAgent;

/// The password of the generated users.
const PASSWORD: &str = "loadgen-correct-horse-battery";
/// Largest `max_uses` the server allows on one token.
const MAX_TOKEN_USES: usize = 10_000;

/// A signed-in API client.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client of `base` (e.g. `http://127.0.0.1:8080`).
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(base: &str) -> anyhow::Result<Api> {
        crate::init_crypto();
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(64);
        if let Some(pem) = crate::tls::api_root() {
            b = b.tls_certs_only([reqwest::Certificate::from_pem(pem)?]);
        }
        Ok(Api {
            http: b.build()?,
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        })
    }

    fn with_token(&self, t: &str) -> Api {
        Api {
            token: Some(t.to_owned()),
            ..self.clone()
        }
    }

    /// POST JSON, expecting 2xx.
    ///
    /// # Errors
    /// On transport failure or another status (with the body).
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET JSON as this client's user, expecting 2xx.
    ///
    /// # Errors
    /// On transport failure or another status (with the body).
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET text with a bearer token (e.g. `/metrics`).
    ///
    /// # Errors
    /// On transport failure or a non-2xx status.
    pub async fn get_text(&self, path: &str, bearer: &str) -> anyhow::Result<String> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "GET {path}: {status}: {text}");
        Ok(text)
    }
}

/// The signed-in people of the run.
pub struct Admins {
    /// The tenant admin (creates tokens, connections, rules; requests deployments).
    pub admin: Api,
    /// A second user who approves (separation of duties).
    pub approver: Api,
}

/// Claims the fresh instance and adds an approver.
///
/// # Errors
/// If the server refuses (e.g. already claimed).
pub async fn claim(base: &str) -> anyhow::Result<Admins> {
    let api = Api::new(base)?;
    let v = api
        .post(
            "/v1/auth/claim",
            &json!({ "tenant_name": "Loadgen", "email": "admin@loadgen.test", "password": PASSWORD }),
        )
        .await?;
    let admin = api.with_token(v["token"].as_str().context("token")?);
    admin
        .post(
            "/v1/users",
            &json!({ "email": "approver@loadgen.test", "password": PASSWORD, "role": "user" }),
        )
        .await?;
    let v = api
        .post(
            "/v1/auth/login",
            &json!({ "email": "approver@loadgen.test", "password": PASSWORD }),
        )
        .await?;
    let approver = api.with_token(v["token"].as_str().context("token")?);
    Ok(Admins { admin, approver })
}

/// Enrolls `n` agents (fresh keys each) with `concurrency` requests in flight.
///
/// # Errors
/// On the first refused enrollment.
pub async fn enroll(
    admins: &Admins,
    base: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<Arc<SimAgent>>> {
    let mut tokens = Vec::new();
    let mut left = n;
    while left > 0 {
        let uses = left.min(MAX_TOKEN_USES);
        let t = admins
            .admin
            .post(
                "/v1/enrollment-tokens",
                &json!({ "label": "loadgen", "max_uses": uses }),
            )
            .await?;
        let token = EnrollmentToken::parse(t["token"].as_str().context("token")?)
            .map_err(|e| anyhow::anyhow!("enrollment token: {e}"))?;
        tokens.push(token);
        left -= uses;
    }
    let api = Api::new(base)?;
    let results: Vec<anyhow::Result<SimAgent>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let token = &tokens[i / MAX_TOKEN_USES];
            let api = api.clone();
            async move {
                let keys = AgentKeys::generate().map_err(|e| anyhow::anyhow!("keys: {e}"))?;
                let (x, e) = (keys.x25519_public(), keys.ed25519_public());
                let req = EnrollRequest {
                    token_secret: B64(token.secret),
                    hostname: Hostname::new(format!("loadgen-{i}"))
                        .map_err(|e| anyhow::anyhow!("hostname: {e}"))?,
                    version: AgentVersion::new("0.1.0")
                        .map_err(|e| anyhow::anyhow!("version: {e}"))?,
                    x25519_public: B64(x),
                    ed25519_public: B64(e),
                    proof: B64(keys.sign(&EnrollRequest::proof_bytes(&token.secret, &x, &e))),
                };
                let v = api
                    .post("/v1/agent/enroll", &serde_json::to_value(&req)?)
                    .await?;
                // From text: some fields deserialize only from borrowed strings.
                let resp: EnrollResponse = serde_json::from_str(&v.to_string())?;
                let server_key =
                    ed25519_dalek::VerifyingKey::from_bytes(&resp.server_signing_key.0)
                        .map_err(|e| anyhow::anyhow!("server key: {e}"))?;
                anyhow::ensure!(
                    picket_shared::fingerprint(&server_key) == token.fingerprint,
                    "the server key does not match the token's fingerprint"
                );
                Ok(SimAgent {
                    index: i,
                    id: resp.agent_id,
                    keys,
                    server_key,
                })
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results
        .into_iter()
        .map(|r| r.map(Arc::new))
        .collect::<anyhow::Result<Vec<_>>>()
}

/// Creates one Splunk connection per agent; returns their ids in agent order.
///
/// # Errors
/// On the first refusal.
pub async fn connections(
    admins: &Admins,
    agents: &[Arc<SimAgent>],
    concurrency: usize,
) -> anyhow::Result<Vec<Uuid>> {
    let results: Vec<anyhow::Result<(usize, Uuid)>> = futures_util::stream::iter(agents.iter())
        .map(|a| {
            let admin = admins.admin.clone();
            async move {
                let v = admin
                    .post(
                        "/v1/connections",
                        &json!({ "name": format!("splunk-{}", a.index), "kind": "splunk", "agent_id": a.id, "base_url": "https://splunk.invalid:8089", "token": "loadgen-splunk-token-0123456789" }),
                    )
                    .await?;
                Ok((a.index, v["id"].as_str().context("connection id")?.parse()?))
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut out = vec![Uuid::nil(); agents.len()];
    for r in results {
        let (i, id) = r?;
        if let Some(slot) = out.get_mut(i) {
            *slot = id;
        }
    }
    Ok(out)
}

/// One rule, then a deployment request of it per connection, then every
/// approval as fast as `concurrency` allows. Returns (the instant the first
/// approval was sent, the instant the last one was answered).
///
/// # Errors
/// On the first refusal.
pub async fn fan_out(
    admins: &Admins,
    connections: &[Uuid],
    concurrency: usize,
) -> anyhow::Result<(Instant, Instant)> {
    let rule = admins
        .admin
        .post(
            "/v1/rules",
            &json!({ "title": "Loadgen fan-out", "description": "Fan-out benchmark.", "severity": "low", "query": "index=main sourcetype=loadgen", "cron": "*/5 * * * *", "earliest": "-10m", "latest": "now" }),
        )
        .await?;
    let rule_id = rule["id"].as_str().context("rule id")?.to_owned();
    let requested: Vec<anyhow::Result<String>> = futures_util::stream::iter(connections.iter())
        .map(|c| {
            let admin = admins.admin.clone();
            let rule_id = rule_id.clone();
            async move {
                let d = admin
                    .post(
                        "/v1/deployments",
                        &json!({ "rule_id": rule_id, "version": 1, "connection_id": c, "message": "fan-out" }),
                    )
                    .await?;
                Ok(d["id"].as_str().context("deployment id")?.to_owned())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let ids = requested.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    let approved: Vec<anyhow::Result<()>> = futures_util::stream::iter(ids.iter())
        .map(|d| {
            let approver = admins.approver.clone();
            async move {
                approver
                    .post(&format!("/v1/deployments/{d}/approve"), &json!({}))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    approved.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok((start, Instant::now()))
}
