//! A small client of the JSON API, as a user or script would call it.

use anyhow::Context as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An API client, optionally signed in.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// Server base URL.
    pub base: String,
    token: Option<String>,
}

/// The password every test user gets.
pub const PASSWORD: &str = "correct-horse-battery-staple";

impl Api {
    /// A client for `base`, trusting `ca_pem` in addition to the system roots when given.
    ///
    /// # Errors
    /// If the CA file cannot be read.
    pub fn new(base: &str, ca_pem: Option<&std::path::Path>) -> anyhow::Result<Self> {
        crate::init_crypto();
        let mut b = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30));
        if let Some(p) = ca_pem {
            let pem = std::fs::read(p)?;
            b = b.tls_certs_only([reqwest::Certificate::from_pem(&pem)?]);
        }
        Ok(Api {
            http: b.build()?,
            base: base.trim_end_matches('/').to_owned(),
            token: None,
        })
    }

    /// A copy signed in with `token`.
    pub fn with_token(&self, token: &str) -> Self {
        Api {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("request to {path}"))?;
        let status = resp.status();
        let text = resp.text().await?;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, v))
    }

    /// POST a JSON body.
    ///
    /// # Errors
    /// On transport failure.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// PUT a JSON body.
    ///
    /// # Errors
    /// On transport failure.
    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// GET.
    ///
    /// # Errors
    /// On transport failure.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// POST expecting a 2xx, returning the body.
    ///
    /// # Errors
    /// On any other status, with the body in the message.
    pub async fn post_ok(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (s, v) = self.post(path, body).await?;
        anyhow::ensure!(s.is_success(), "POST {path} answered {s}: {v}");
        Ok(v)
    }

    /// GET expecting a 2xx.
    ///
    /// # Errors
    /// On any other status.
    pub async fn get_ok(&self, path: &str) -> anyhow::Result<Value> {
        let (s, v) = self.get(path).await?;
        anyhow::ensure!(s.is_success(), "GET {path} answered {s}: {v}");
        Ok(v)
    }

    /// Claims the instance and returns the admin's client.
    ///
    /// # Errors
    /// If the claim is refused.
    pub async fn claim(&self, email: &str) -> anyhow::Result<Api> {
        let v = self
            .post_ok(
                "/v1/auth/claim",
                json!({ "tenant_name": "Acme SOC", "email": email, "password": PASSWORD }),
            )
            .await?;
        Ok(self.with_token(v["token"].as_str().context("token")?))
    }

    /// Creates a user (as admin) and returns their signed-in client.
    ///
    /// # Errors
    /// If creation or login fails.
    pub async fn add_user(&self, email: &str, role: &str) -> anyhow::Result<Api> {
        self.post_ok(
            "/v1/users",
            json!({ "email": email, "password": PASSWORD, "role": role }),
        )
        .await?;
        self.login(email).await
    }

    /// Signs in.
    ///
    /// # Errors
    /// If the login fails.
    pub async fn login(&self, email: &str) -> anyhow::Result<Api> {
        let v = self
            .post_ok(
                "/v1/auth/login",
                json!({ "email": email, "password": PASSWORD }),
            )
            .await?;
        Ok(self.with_token(v["token"].as_str().context("token")?))
    }
}
