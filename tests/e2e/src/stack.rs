//! A whole deployment stack for a test or the demo: server, users, an
//! enrolled agent, a Splunk simulator and a connection to it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use picket_siem_sim::splunk::{SplunkSim, SplunkSimHandle};
use serde_json::{Value, json};

use crate::api::Api;
use crate::procs::{AgentOpts, AgentProc, ServerOpts, ServerProc};
use crate::proxy::TamperProxy;
use crate::tls::{TestPki, make_pki};
use crate::wait;

/// The Splunk token the simulator accepts.
pub const SPLUNK_TOKEN: &str = "sim-splunk-token-0123456789";

/// The HEC token the simulator accepts (rule tests inject with it).
pub const SPLUNK_HEC_TOKEN: &str = "sim-hec-token-0123456789";

/// How to build the stack.
#[derive(Default)]
pub struct StackOpts {
    /// Serve TLS (agents trust a test CA).
    pub tls: bool,
    /// Put a tampering relay between agent and server (plaintext).
    pub proxy: bool,
    /// Database URL (default: SQLite in the temp dir).
    pub database_url: Option<String>,
    /// Root directory (default: a fresh temp dir, removed on drop).
    pub root: Option<PathBuf>,
    /// `proxy_url` for the agent (an HTTP CONNECT proxy to the server).
    pub agent_proxy_url: Option<String>,
    /// A canary appended to every error text of the Splunk simulator.
    pub sim_error_suffix: Option<String>,
    /// The server's `[jobs] ttl_secs`.
    pub job_ttl_secs: Option<u64>,
    /// The agent's `clock_skew_secs`.
    pub agent_clock_skew_secs: Option<u64>,
    /// Extra top-level `server.toml` lines.
    pub server_toml: String,
}

/// Everything a test needs.
pub struct Stack {
    _tmp: Option<tempfile::TempDir>,
    /// Root directory of every file of the stack.
    pub root: PathBuf,
    /// The server process.
    pub server: ServerProc,
    /// The agent process.
    pub agent: AgentProc,
    /// The Splunk simulator.
    pub sim: SplunkSimHandle,
    /// The tamper relay, when requested.
    pub proxy: Option<TamperProxy>,
    /// Test PKI, when TLS is on.
    pub pki: Option<TestPki>,
    /// Tenant admin.
    pub admin: Api,
    /// A detection engineer who requests deployments.
    pub requester: Api,
    /// A SOC lead who approves them.
    pub approver: Api,
    /// The Splunk connection's id.
    pub connection_id: String,
}

impl Stack {
    /// Builds and starts everything, and waits until the agent is connected.
    ///
    /// # Errors
    /// If any piece fails to start.
    pub async fn start(opts: StackOpts) -> anyhow::Result<Self> {
        crate::init_crypto();
        let (tmp, root) = match opts.root {
            Some(r) => (None, r),
            None => {
                let t = tempfile::tempdir()?;
                let p = t.path().to_owned();
                (Some(t), p)
            }
        };
        let pki = if opts.tls {
            Some(make_pki(&root)?)
        } else {
            None
        };
        let server = ServerProc::start(
            &root.join("server"),
            ServerOpts {
                tls: pki
                    .as_ref()
                    .map(|p| (p.server_cert.clone(), p.server_key.clone())),
                database_url: opts.database_url,
                job_ttl_secs: opts.job_ttl_secs,
                extra_toml: opts.server_toml.clone(),
                ..ServerOpts::default()
            },
        )
        .await?;
        let api = Api::new(&server.url, pki.as_ref().map(|p| p.ca_cert.as_path()))?;
        let admin = api.claim("admin@acme.test").await?;
        let requester = admin.add_user("dana@acme.test", "user").await?;
        let approver = admin.add_user("sam@acme.test", "user").await?;
        let token = admin
            .post_ok("/v1/enrollment-tokens", json!({ "label": "siem-gw-01" }))
            .await?;
        let token = token["token"].as_str().context("token")?.to_owned();
        let proxy = if opts.proxy {
            Some(TamperProxy::start(format!("ws://{}", server.addr)).await?)
        } else {
            None
        };
        let mut agent = AgentProc::enroll(
            &root.join("agent"),
            &server.url,
            &token,
            &AgentOpts {
                ca_bundle: pki.as_ref().map(|p| p.ca_cert.clone()),
                plaintext: !opts.tls,
                connect_url: proxy.as_ref().map(TamperProxy::url),
                proxy_url: opts.agent_proxy_url.clone(),
                clock_skew_secs: opts.agent_clock_skew_secs,
            },
        )
        .await?;
        agent.start()?;
        let mut sim = SplunkSim::builder()
            .token(SPLUNK_TOKEN)
            .hec_token(SPLUNK_HEC_TOKEN);
        if let Some(suffix) = &opts.sim_error_suffix {
            sim = sim.error_text_suffix(suffix.clone());
        }
        let sim = sim.start().await?;
        let conn = admin
            .post_ok(
                "/v1/connections",
                json!({ "name": "prod-splunk", "kind": "splunk", "agent_id": agent.agent_id, "base_url": sim.base_url(), "token": SPLUNK_TOKEN }),
            )
            .await?;
        let connection_id = conn["id"].as_str().context("connection id")?.to_owned();
        let stack = Stack {
            _tmp: tmp,
            root,
            server,
            agent,
            sim,
            proxy,
            pki,
            admin,
            requester,
            approver,
            connection_id,
        };
        stack.wait_connected(Duration::from_secs(30)).await?;
        Ok(stack)
    }

    /// Waits until the server lists the agent as connected.
    ///
    /// # Errors
    /// On timeout (the message includes the agent's log tail).
    pub async fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let path = format!("/v1/agents/{}", self.agent.agent_id);
        wait::until("the agent to connect", timeout, || async {
            let (s, v) = self.admin.get(&path).await?;
            Ok((s.is_success() && v["connected"] == json!(true)).then_some(()))
        })
        .await
        .with_context(|| format!("agent log:\n{}", tail(&self.agent.log(), 40)))
    }

    /// Creates a rule as the requester and returns (rule id, body).
    ///
    /// # Errors
    /// If the API refuses it.
    pub async fn create_rule(&self, title: &str, query: &str) -> anyhow::Result<(String, Value)> {
        let v = self
            .requester
            .post_ok(
                "/v1/rules",
                json!({ "title": title, "description": "Detects it.", "severity": "high", "query": query, "cron": "*/5 * * * *", "earliest": "-10m", "latest": "now" }),
            )
            .await?;
        Ok((v["id"].as_str().context("rule id")?.to_owned(), v))
    }

    /// Requests deployment of a rule version as the requester; returns the deployment id.
    ///
    /// # Errors
    /// If the API refuses it.
    pub async fn request_deploy(&self, rule_id: &str, version: i64) -> anyhow::Result<String> {
        let v = self
            .requester
            .post_ok(
                "/v1/deployments",
                json!({ "rule_id": rule_id, "version": version, "connection_id": self.connection_id, "message": "new detection" }),
            )
            .await?;
        Ok(v["id"].as_str().context("deployment id")?.to_owned())
    }

    /// Approves a deployment as the approver.
    ///
    /// # Errors
    /// If the API refuses it.
    pub async fn approve(&self, deployment_id: &str) -> anyhow::Result<Value> {
        self.approver
            .post_ok(
                &format!("/v1/deployments/{deployment_id}/approve"),
                json!({}),
            )
            .await
    }

    /// The whole happy path: create a rule, request version 1, approve it as
    /// someone else, and wait for the final status. Returns (rule id, deployment).
    ///
    /// # Errors
    /// If any step is refused or the deployment does not finish in `timeout`.
    pub async fn deploy_and_wait(
        &self,
        title: &str,
        query: &str,
        timeout: Duration,
    ) -> anyhow::Result<(String, Value)> {
        let (rule_id, _) = self.create_rule(title, query).await?;
        let dep = self.request_deploy(&rule_id, 1).await?;
        self.approve(&dep).await?;
        let done = self.wait_final(&dep, timeout).await?;
        Ok((rule_id, done))
    }

    /// Waits until the deployment reaches a final status and returns its body.
    ///
    /// # Errors
    /// On timeout.
    pub async fn wait_final(
        &self,
        deployment_id: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let path = format!("/v1/deployments/{deployment_id}");
        wait::until("the deployment to finish", timeout, || async {
            let v = self.admin.get_ok(&path).await?;
            let done = matches!(
                v["status"].as_str(),
                Some("succeeded" | "failed" | "refused" | "expired")
            );
            Ok(done.then_some(v))
        })
        .await
        .with_context(|| {
            format!(
                "agent log:\n{}\nserver log:\n{}",
                tail(&self.agent.log(), 40),
                tail(&self.server.log(), 40)
            )
        })
    }
}

/// The last `n` lines of a log.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
