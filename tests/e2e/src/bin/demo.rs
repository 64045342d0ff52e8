//! `picket-demo`: the whole product on one machine, in one process, on the
//! embedded default (SQLite). Starts the control plane, a Splunk simulator and
//! an enrolled agent, creates two users and a rule deployment that waits for
//! approval, then prints how to approve it. Ctrl-C stops everything.
//!
//! Everything lives in `--dir` (default `./.picket-demo`), wiped at start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Parser;
use picket_e2e::api::Api;
use picket_siem_sim::splunk::SplunkSim;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Run a complete Picket demo: server (SQLite), Splunk simulator and an enrolled agent.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Port for the control plane (the URL you open).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Directory for the demo's database, agent state and logs (wiped at start).
    #[arg(long, default_value = ".picket-demo")]
    dir: PathBuf,
}

const SPLUNK_TOKEN: &str = "demo-splunk-token";

fn password() -> anyhow::Result<String> {
    let raw: [u8; 12] =
        picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PICKET_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,picket_server=info,picket_agent=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    picket_e2e::init_crypto();
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("cannot clear {}", args.dir.display()))?;
    }
    std::fs::create_dir_all(&args.dir)?;
    let dir = std::fs::canonicalize(&args.dir)?;
    let shutdown = CancellationToken::new();

    // 1. A Splunk simulator standing in for the customer's SIEM.
    let sim = SplunkSim::builder().token(SPLUNK_TOKEN).start().await?;

    // 2. The control plane on SQLite, plain HTTP on loopback (TLS in front in production).
    let secret: [u8; 32] =
        picket_shared::random::random_array().map_err(|e| anyhow::anyhow!("{e}"))?;
    let env: HashMap<String, String> = [
        ("PICKET_LISTEN", format!("127.0.0.1:{}", args.port)),
        ("PICKET_DATA_DIR", dir.join("server").display().to_string()),
        (
            "PICKET_MASTER_SECRET",
            base64::engine::general_purpose::STANDARD.encode(secret),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = picket_server::ServerConfig::load(None, false, &env)?;
    let running = picket_server::start(config, shutdown.clone())
        .await
        .with_context(|| {
            format!(
                "cannot start the server on port {} (use --port to pick another)",
                args.port
            )
        })?;
    let url = format!("http://{}", running.addr);

    // 3. The tenant, its admin and two people: one requests, the other approves.
    let api = Api::new(&url, None)?;
    let admin_pw = password()?;
    let dana_pw = password()?;
    let sam_pw = password()?;
    let admin = api.with_token(
        api.post_ok("/v1/auth/claim", json!({ "tenant_name": "Demo SOC", "email": "admin@picket.demo", "password": admin_pw }))
            .await?["token"]
            .as_str()
            .context("token")?,
    );
    admin
        .post_ok(
            "/v1/users",
            json!({ "email": "dana@picket.demo", "password": dana_pw, "role": "user" }),
        )
        .await?;
    admin
        .post_ok(
            "/v1/users",
            json!({ "email": "sam@picket.demo", "password": sam_pw, "role": "user" }),
        )
        .await?;
    let dana = api.with_token(
        api.post_ok(
            "/v1/auth/login",
            json!({ "email": "dana@picket.demo", "password": dana_pw }),
        )
        .await?["token"]
            .as_str()
            .context("token")?,
    );

    // 4. An agent enrolled with a one-time token, then running.
    let token = admin
        .post_ok("/v1/enrollment-tokens", json!({ "label": "demo-agent" }))
        .await?;
    let token_text = token["token"].as_str().context("token")?;
    let agent_dir = dir.join("agent");
    let agent_cfg_text = format!(
        "state_dir = \"{}\"\ndangerous_plaintext = true\n",
        agent_dir.join("state").display()
    );
    let agent_cfg_path = agent_dir.join("agent.toml");
    std::fs::create_dir_all(&agent_dir)?;
    std::fs::write(&agent_cfg_path, &agent_cfg_text)?;
    let agent_cfg = picket_agent::AgentConfig::load(&agent_cfg_path)?;
    let enrollment = picket_agent::enroll::enroll(
        &agent_cfg,
        &url.parse()?,
        picket_proto::EnrollmentToken::parse(token_text)?,
        false,
    )
    .await?;
    let agent_id = enrollment.agent_id;
    let agent_shutdown = shutdown.clone();
    let agent_task =
        tokio::spawn(async move { picket_agent::run_agent(agent_cfg, agent_shutdown).await });

    // 5. A Splunk connection served by the agent, a rule, and a deployment request by Dana.
    let conn = admin
        .post_ok(
            "/v1/connections",
            json!({ "name": "demo-splunk", "kind": "splunk", "agent_id": agent_id, "base_url": sim.base_url(), "token": SPLUNK_TOKEN }),
        )
        .await?;
    let rule = dana
        .post_ok(
            "/v1/rules",
            json!({
                "title": "Brute force against Windows logons",
                "description": "More than 10 failed logons (4625) for one account in 10 minutes.",
                "severity": "high",
                "query": "index=wineventlog EventCode=4625 | stats count by user | where count > 10",
                "cron": "*/5 * * * *", "earliest": "-10m", "latest": "now"
            }),
        )
        .await?;
    let dep = dana
        .post_ok(
            "/v1/deployments",
            json!({ "rule_id": rule["id"], "version": 1, "connection_id": conn["id"], "message": "New brute-force detection for the SOC" }),
        )
        .await?;
    let dep_id = dep["id"].as_str().context("deployment id")?.to_owned();

    // Wait for the agent to be online so the demo starts in a steady state.
    picket_e2e::wait::until("the agent to connect", Duration::from_secs(30), || async {
        let a = admin.get_ok(&format!("/v1/agents/{agent_id}")).await?;
        Ok((a["connected"] == json!(true)).then_some(()))
    })
    .await?;

    println!(
        r#"
Picket demo is running.

  Console         {url}/            (the web console; API description: {url}/v1/openapi.json)
  Splunk (sim)    {sim_url}
  Agent           {agent_id} (online)
  Data            {dir}

  Users (password shown once):
    admin@picket.demo   {admin_pw}   admin
    dana@picket.demo    {dana_pw}   requested the deployment
    sam@picket.demo     {sam_pw}   may approve it (Dana may not: separation of duties)

  Deployment {dep_id} is waiting for approval.

  In the console: sign in as Sam, open {url}/deployments/{dep_id} and press
  Approve; the status turns applied without a reload. Signed in as Dana, the
  button is absent.

  Or with the API, as Sam:
    TOKEN=$(curl -s {url}/v1/auth/login -H 'content-type: application/json' \
      -d '{{"email":"sam@picket.demo","password":"{sam_pw}"}}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
    curl -s -X POST {url}/v1/deployments/{dep_id}/approve -H "authorization: Bearer $TOKEN"

  Then watch it land in Splunk:
    curl -s {url}/v1/deployments/{dep_id} -H "authorization: Bearer $TOKEN"
    curl -s -H 'authorization: Bearer {splunk}' '{sim_url}/servicesNS/-/search/saved/searches?output_mode=json&count=0'

Ctrl-C stops everything.
"#,
        sim_url = sim.base_url(),
        dir = dir.display(),
        splunk = SPLUNK_TOKEN,
    );

    tokio::signal::ctrl_c().await?;
    eprintln!("stopping...");
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), running.task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), agent_task).await;
    Ok(())
}
