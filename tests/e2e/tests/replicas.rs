//! Two server replicas (real processes) on one PostgreSQL database, fresh
//! for this run and dropped after:
//!
//! 1. a deployment approved through replica B reaches the agent connected to
//!    replica A through `LISTEN/NOTIFY` (the periodic sweep is set to an hour,
//!    so nothing else could deliver it);
//! 2. both replicas show the agent connected, with its health (one fleet view);
//! 3. the same agent connecting to B while its session on A is alive ends
//!    with one live session: A closes its own as replaced;
//! 4. killing replica A moves the agent to B (it reconnects through the
//!    "load balancer" in front), and a deployment approved meanwhile is
//!    applied exactly once; A's metrics counted the first dispatch;
//! 5. (its own test) PostgreSQL terminating A's listener connection: A
//!    reconnects, and a job approved through B still reaches A's agent.
//!
//! The server is `postgres://postgres@127.0.0.1:5432` unless
//! `PICKET_TEST_POSTGRES_URL` names another. PostgreSQL being down is a test
//! failure, not a skip.

// Test code, helpers included: a failed unwrap is a test failure at its exact line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use picket_e2e::api::Api;
use picket_e2e::procs::{ServerOpts, ServerProc};
use picket_e2e::stack::{Stack, StackOpts, tail};
use picket_e2e::wait;
use picket_proto::{AgentMsg, AgentVersion, B64, Hello, ServerMsg, encode};
use picket_shared::keys::AgentKeys;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const WAIT: Duration = Duration::from_secs(90);
const METRICS_TOKEN: &str = "replica-test-metrics-token-0123";

fn admin_url() -> String {
    std::env::var("PICKET_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

async fn psql(db: &str, sql: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("psql")
        .arg(format!("{}/{db}", admin_url()))
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "psql failed (is PostgreSQL running on {}? .ci/run starts it): {}",
        admin_url(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A TCP relay standing in for the load balancer in front of the replicas:
/// new connections go to the current upstream; existing ones are left alone.
struct Switch {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
}

impl Switch {
    async fn start(upstream: SocketAddr) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let up = upstream.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = *up.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Switch { addr, upstream }
    }

    fn point_at(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens an agent session by hand with the agent's own keys.
async fn session(addr: SocketAddr, keys: &AgentKeys, agent_id: uuid::Uuid) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/agent/connect"))
        .await
        .unwrap();
    let challenge = match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Text(t))) => match picket_proto::decode_server_msg(&t, 1 << 20) {
            Ok(ServerMsg::Challenge(c)) => c,
            other => panic!("expected a challenge, got {other:?}"),
        },
        other => panic!("expected a challenge, got {other:?}"),
    };
    let sig = keys.sign(&Hello::signing_bytes(
        &challenge.nonce.0,
        &agent_id,
        &challenge.server_key,
    ));
    let hello = AgentMsg::Hello(Hello {
        agent_id,
        version: AgentVersion::new("0.1.0").unwrap(),
        capabilities: vec![picket_proto::SiemKind::Splunk],
        signature: B64(sig),
    });
    ws.send(Message::text(encode(&hello).unwrap()))
        .await
        .unwrap();
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => {
                if let Ok(ServerMsg::Welcome(_)) = picket_proto::decode_server_msg(&t, 1 << 20) {
                    return ws;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("expected a welcome, got {other:?}"),
        }
    }
}

/// Reads until the server closes the session; returns the close code and reason.
async fn closed(ws: &mut Ws) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => return (f.code, f.reason.to_string()),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a close frame"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("session failed before a close frame: {e}"),
        }
    }
}

async fn connected_on(api: &Api, agent_id: &str) -> anyhow::Result<Option<Value>> {
    let v = api.get_ok(&format!("/v1/agents/{agent_id}")).await?;
    Ok((v["connected"] == json!(true)).then_some(v))
}

/// Creates a rule and requests its deployment as the requester, approves it
/// as the approver, all through one replica's API.
async fn deploy(
    requester: &Api,
    approver: &Api,
    connection_id: &str,
    title: &str,
) -> anyhow::Result<(String, String)> {
    let rule = requester
        .post_ok(
            "/v1/rules",
            json!({ "title": title, "description": "Detects it.", "severity": "high", "query": "index=main sourcetype=sshd Failed", "cron": "*/5 * * * *", "earliest": "-10m", "latest": "now" }),
        )
        .await?;
    let rule_id = rule["id"].as_str().unwrap_or_default().to_owned();
    let dep = requester
        .post_ok(
            "/v1/deployments",
            json!({ "rule_id": rule_id, "version": 1, "connection_id": connection_id, "message": "new detection" }),
        )
        .await?;
    let dep = dep["id"].as_str().unwrap_or_default().to_owned();
    approver
        .post_ok(&format!("/v1/deployments/{dep}/approve"), json!({}))
        .await?;
    Ok((rule_id, dep))
}

async fn wait_final(api: &Api, dep: &str, logs: &str) -> Value {
    let path = format!("/v1/deployments/{dep}");
    wait::until("the deployment to finish", WAIT, || async {
        let v = api.get_ok(&path).await?;
        let done = matches!(
            v["status"].as_str(),
            Some("succeeded" | "failed" | "refused" | "expired")
        );
        Ok(done.then_some(v))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{logs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_postgresql() {
    let db = format!("picket_e2e_{}", uuid::Uuid::new_v4().simple());
    psql("test", &format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let url = format!("{}/{db}", admin_url());
    let result = tokio::spawn(scenario(url)).await;
    let _ = psql(
        "test",
        &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
    )
    .await;
    result.unwrap();
}

async fn scenario(url: String) {
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("metrics.token");
    std::fs::write(&token_file, METRICS_TOKEN).unwrap();
    // Sweep once an hour: only LISTEN/NOTIFY can deliver within the test's waits.
    let common = format!(
        "replica_sweep_secs = 3600\nmetrics_token_file = \"{}\"\n",
        token_file.display()
    );
    let mut s = Stack::start(StackOpts {
        database_url: Some(url.clone()),
        server_toml: format!("replica_id = \"a\"\n{common}"),
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let mut b = ServerProc::start(
        &s.root.join("replica-b"),
        ServerOpts {
            database_url: Some(url.clone()),
            extra_toml: format!("replica_id = \"b\"\n{common}"),
            ..ServerOpts::default()
        },
    )
    .await
    .unwrap();
    let on_b = Api::new(&b.url, None).unwrap();
    let approver_b = on_b.login("sam@acme.test").await.unwrap();
    let requester_b = on_b.login("dana@acme.test").await.unwrap();
    let admin_b = on_b.login("admin@acme.test").await.unwrap();
    let agent_id = s.agent.agent_id.clone();
    let logs = |s: &Stack, b: &ServerProc| {
        format!(
            "agent log:\n{}\nreplica A log:\n{}\nreplica B log:\n{}",
            tail(&s.agent.log(), 40),
            tail(&s.server.log(), 40),
            tail(&b.log(), 40)
        )
    };

    // 1. Approved through B, delivered by A.
    let (rule1, dep1) = deploy(&requester_b, &approver_b, &s.connection_id, "Approved on B")
        .await
        .unwrap();
    let done = wait_final(&admin_b, &dep1, &logs(&s, &b)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{rule1}")).is_some());

    // 2. One fleet view: B lists the agent (connected to A) as connected, with health.
    let v = wait::until(
        "B to show the agent connected with health",
        WAIT,
        || async {
            let v = connected_on(&admin_b, &agent_id).await?;
            Ok(v.filter(|v| v["health"].is_object()))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&s, &b)));
    assert!(
        matches!(v["status"].as_str(), Some("online" | "degraded")),
        "{v}"
    );

    // A's metrics: one live agent on replica a, one dispatch, one success.
    let scrape = Api::new(&s.server.url, None)
        .unwrap()
        .with_token(METRICS_TOKEN);
    let (st, m) = scrape.get("/metrics").await.unwrap();
    assert_eq!(st, 200);
    let m = m.as_str().unwrap().to_owned();
    for expected in [
        "picket_agents_connected{replica=\"a\"} 1",
        "picket_job_dispatch_latency_seconds_count 1",
        "picket_job_results_total{outcome=\"succeeded\",error_class=\"none\"} 1",
    ] {
        assert!(m.contains(expected), "missing {expected:?} in:\n{m}");
    }

    // 3. Duplicate sessions across replicas end with one: the agent process
    // stops, then its identity opens a session on A and another on B.
    s.agent.kill().await;
    let read = |f: &str| -> [u8; 32] {
        std::fs::read(s.agent.state_dir.join(f))
            .unwrap()
            .try_into()
            .unwrap()
    };
    let keys = AgentKeys::from_bytes(&read("x25519.key"), &read("ed25519.key"));
    let id: uuid::Uuid = agent_id.parse().unwrap();
    let mut on_a = session(s.server.addr, &keys, id).await;
    let mut on_b_session = session(b.addr, &keys, id).await;
    let (code, reason) = closed(&mut on_a).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "replaced by a newer connection")
    );
    // B's session is the live one: both views say connected, and B pings it.
    assert!(connected_on(&admin_b, &agent_id).await.unwrap().is_some());
    loop {
        match tokio::time::timeout(WAIT, on_b_session.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                if let Ok(ServerMsg::Ping { .. }) = picket_proto::decode_server_msg(&t, 1 << 20) {
                    break;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the session at B ended: {other:?}"),
        }
    }
    drop(on_b_session);

    // 4. The agent runs behind a switch pointing at A; A dies; the switch
    // sends new connections to B; a deployment approved now lands once.
    let switch = Switch::start(s.server.addr).await;
    let mut cfg = std::fs::read_to_string(&s.agent.config_path).unwrap();
    cfg.push_str(&format!("server_url = \"http://{}\"\n", switch.addr));
    std::fs::write(&s.agent.config_path, cfg).unwrap();
    let before = s.server.log().matches("agent connected").count();
    s.agent.start().unwrap();
    wait::until(
        "the agent to connect to A through the switch",
        WAIT,
        || async { Ok((s.server.log().matches("agent connected").count() > before).then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&s, &b)));
    s.server.kill().await;
    switch.point_at(b.addr);
    let (rule2, dep2) = deploy(
        &requester_b,
        &approver_b,
        &s.connection_id,
        "Approved while A is down",
    )
    .await
    .unwrap();
    let done = wait_final(&admin_b, &dep2, &logs(&s, &b)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{rule2}")).is_some());
    assert!(connected_on(&admin_b, &agent_id).await.unwrap().is_some());

    // Each job ran exactly once on the agent, per its own journal.
    let (ok, out) = s.agent.cli(&["journal", "--json"]).await.unwrap();
    assert!(ok, "{out}");
    let entries: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for dep in [&dep1, &dep2] {
        let d = admin_b
            .get_ok(&format!("/v1/deployments/{dep}"))
            .await
            .unwrap();
        let job = d["job_id"].as_str().unwrap();
        let runs = entries
            .iter()
            .filter(|e| e["job_id"] == json!(job) && e["outcome"] == "succeeded")
            .count();
        assert_eq!(runs, 1, "job {job} ran {runs} times:\n{out}");
    }
    b.kill().await;
}

/// The value of a counter or gauge line `name value` in a scrape of `server`.
async fn metric(server: &ServerProc, name: &str) -> anyhow::Result<Option<f64>> {
    let scrape = Api::new(&server.url, None)?.with_token(METRICS_TOKEN);
    let (status, body) = scrape.get("/metrics").await?;
    anyhow::ensure!(status == 200, "/metrics answered {status}: {body}");
    Ok(body.as_str().unwrap_or_default().lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }))
}

/// 5. PostgreSQL drops replica A's listener connection (an operator's
/// `pg_terminate_backend`, a failover, a connection reaper): A reconnects and
/// listens again (its log says so and its metric counts it), and a deployment
/// approved through B afterwards still reaches the agent on A. The sweep is
/// set to an hour, so only the re-established `LISTEN` can deliver it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_reconnects_after_postgresql_drops_it() {
    let db = picket_e2e::pg::TempDb::create().await.unwrap();
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("metrics.token");
    std::fs::write(&token_file, METRICS_TOKEN).unwrap();
    let common = format!(
        "replica_sweep_secs = 3600\nmetrics_token_file = \"{}\"\n",
        token_file.display()
    );
    let s = Stack::start(StackOpts {
        database_url: Some(db.url.clone()),
        server_toml: format!("replica_id = \"a\"\n{common}"),
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let mut b = ServerProc::start(
        &s.root.join("replica-b"),
        ServerOpts {
            database_url: Some(db.url.clone()),
            extra_toml: format!("replica_id = \"b\"\n{common}"),
            ..ServerOpts::default()
        },
    )
    .await
    .unwrap();
    let on_b = Api::new(&b.url, None).unwrap();
    let approver_b = on_b.login("sam@acme.test").await.unwrap();
    let requester_b = on_b.login("dana@acme.test").await.unwrap();
    let admin_b = on_b.login("admin@acme.test").await.unwrap();
    let logs = |s: &Stack, b: &ServerProc| {
        format!(
            "agent log:\n{}\nreplica A log:\n{}\nreplica B log:\n{}",
            tail(&s.agent.log(), 40),
            tail(&s.server.log(), 40),
            tail(&b.log(), 40)
        )
    };
    const CONNECTS: &str = "picket_replica_listener_connects_total";
    let listener_pids = || async {
        db.psql(&format!(
            // pg_stat_activity spans every database: other tests run replicas named "a" too.
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = '{}'",
            picket_server::gateway::cluster::listener_application_name("a")
        ))
        .await
    };

    // A listens once, on a connection of its own that PostgreSQL can name.
    wait::until("A's listener to connect", WAIT, || async {
        Ok((metric(&s.server, CONNECTS).await? == Some(1.0)).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&s, &b)));
    let before = listener_pids().await.unwrap();
    assert_eq!(before.lines().count(), 1, "listener backends: {before:?}");

    // PostgreSQL terminates it.
    let killed = db
        .psql(&format!("SELECT pg_terminate_backend({})", before.trim()))
        .await
        .unwrap();
    assert_eq!(killed.trim(), "t");

    // A notices, reconnects on a new backend, and says so.
    wait::until("A's listener to reconnect", WAIT, || async {
        let again = metric(&s.server, CONNECTS).await? >= Some(2.0);
        let pids = listener_pids().await?;
        let fresh = pids.lines().count() == 1 && pids.trim() != before.trim();
        Ok((again && fresh).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&s, &b)));
    assert!(
        s.server.log().contains("reconnected and listening again"),
        "{}",
        logs(&s, &b)
    );

    // Approved through B, delivered by A over the new LISTEN.
    let (rule, dep) = deploy(
        &requester_b,
        &approver_b,
        &s.connection_id,
        "After the drop",
    )
    .await
    .unwrap();
    let done = wait_final(&admin_b, &dep, &logs(&s, &b)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{rule}")).is_some());
    b.kill().await;
}
