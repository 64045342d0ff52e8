//! The real agent (`run_agent`) against a tiny in-test WebSocket server that
//! speaks the server side of the protocol with real keys: challenge, signed
//! hello, welcome, sealed jobs, result acks, pings, revocation.
//!
//! Jobs are `check_connection` against a closed loopback port, so they fail
//! with `siem_unreachable` without any SIEM simulator.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use picket_agent::ledger::Ledger;
use picket_agent::state::{Enrollment, StateDir};
use picket_agent::{AgentConfig, Revoked, run_agent};
use picket_proto::{
    AgentMsg, B64, Challenge, ConnectionInfo, Credential, ErrorClass, Hello, JobAction, JobHeader,
    JobKind, JobResult, JobSpec, Outcome, SealedJob, ServerMsg, SiemKind, SiemSettings, SiemTarget,
    SplunkSettings, Welcome, decode_agent_msg, encode,
};
use picket_shared::keys::{AgentKeys, ServerSigningKey, verify_signature};
use picket_shared::seal::seal_job;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{WebSocketStream, accept_async};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The server end of a connection, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Ws = WebSocketStream<Box<dyn Io>>;

/// Upper bound for anything the agent does on its own schedule. Generous on
/// purpose: after a run of failed connects, full-jitter backoff alone can take
/// 30 s, and a slow machine must never fail a test. Passing tests never wait it out.
const WAIT: Duration = Duration::from_secs(60);

/// One agent with its own state directory, and the fake server it talks to.
struct TestApp {
    listener: TcpListener,
    /// Set when the fake server speaks TLS (the agent trusts it through `ca_bundle`).
    tls: Option<tokio_rustls::TlsAcceptor>,
    signing: ServerSigningKey,
    agent_id: Uuid,
    tenant_id: Uuid,
    agent_x25519: [u8; 32],
    agent_ed25519: [u8; 32],
    state_dir: PathBuf,
    shutdown: CancellationToken,
    agent: Option<JoinHandle<anyhow::Result<()>>>,
    siem_url: String,
    _tmp: tempfile::TempDir,
}

impl TestApp {
    async fn start() -> TestApp {
        Self::start_with("# allow everything\n", |_| {}).await
    }

    /// Starts an agent with this local policy, after `prepare` has seen the
    /// state directory (to plant a ledger, for instance).
    async fn start_with(policy_toml: &str, prepare: impl FnOnce(&std::path::Path)) -> TestApp {
        Self::start_full(policy_toml, prepare, false).await
    }

    async fn start_full(
        policy_toml: &str,
        prepare: impl FnOnce(&std::path::Path),
        tls: bool,
    ) -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let signing = ServerSigningKey::generate().unwrap();
        let keys = AgentKeys::generate().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let state_dir = tmp.path().join("state");
        let sd = StateDir::new(&state_dir);
        sd.create().unwrap();
        sd.write_keys(&keys).unwrap();
        let agent_id = Uuid::now_v7();
        let tenant_id = Uuid::now_v7();
        sd.write_enrollment(&Enrollment {
            agent_id,
            tenant_id,
            server_url: format!("{}://{addr}", if tls { "https" } else { "http" }),
            server_signing_key: B64(signing.verifying_key().to_bytes()),
            key_id: signing.fingerprint(),
        })
        .unwrap();
        let policy = tmp.path().join("policy.toml");
        std::fs::write(&policy, policy_toml).unwrap();
        prepare(&state_dir);
        let mut toml = format!(
            "state_dir = {sd:?}\nconnect_timeout_secs = 5\n\
             siem_timeout_secs = 5\npolicy_file = {policy:?}\n",
            sd = state_dir.display().to_string(),
            policy = policy.display().to_string(),
        );
        let acceptor = if tls {
            // A self-signed certificate for 127.0.0.1, trusted through ca_bundle only.
            let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let ca = tmp.path().join("ca.pem");
            std::fs::write(&ca, ck.cert.pem()).unwrap();
            toml.push_str(&format!("ca_bundle = {:?}\n", ca.display().to_string()));
            let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
            let cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
            Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg)))
        } else {
            toml.push_str("dangerous_plaintext = true\n");
            None
        };
        let config = AgentConfig::from_sources(Some(&toml), tmp.path(), &|_| None).unwrap();
        let shutdown = CancellationToken::new();
        let agent = tokio::spawn(run_agent(config, shutdown.clone()));

        // A port nothing listens on: the SIEM is unreachable.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let siem_url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);

        TestApp {
            listener,
            tls: acceptor,
            signing,
            agent_id,
            tenant_id,
            agent_x25519: keys.x25519_public(),
            agent_ed25519: keys.ed25519_public(),
            state_dir,
            shutdown,
            agent: Some(agent),
            siem_url,
            _tmp: tmp,
        }
    }

    /// Accepts the agent's next connection and completes the handshake as the
    /// server would, checking the hello signature with the agent's public key.
    async fn accept(&self) -> Ws {
        self.accept_with(3600, vec![]).await
    }

    async fn accept_with(&self, health_secs: u32, connections: Vec<ConnectionInfo>) -> Ws {
        let mut ws = self.accept_raw().await;
        let nonce = picket_shared::random::random_nonce().unwrap();
        let server_key = self.signing.fingerprint();
        send(
            &mut ws,
            &ServerMsg::Challenge(Challenge {
                nonce: B64(nonce),
                server_key,
                key_chain: Vec::new(),
            }),
        )
        .await;
        let hello = match recv(&mut ws).await {
            AgentMsg::Hello(h) => h,
            other => panic!("expected hello, got {other:?}"),
        };
        assert_eq!(hello.agent_id, self.agent_id);
        assert_eq!(hello.version.as_str(), env!("CARGO_PKG_VERSION"));
        let signed = Hello::signing_bytes(&nonce, &self.agent_id, &server_key);
        verify_signature(&self.agent_ed25519, &signed, &hello.signature.0)
            .expect("hello signature verifies under the agent's identity key");
        // The same signature must not verify for another nonce (no replay).
        let other = Hello::signing_bytes(&[0u8; 32], &self.agent_id, &server_key);
        assert!(verify_signature(&self.agent_ed25519, &other, &hello.signature.0).is_err());
        send(
            &mut ws,
            &ServerMsg::Welcome(Welcome {
                agent_id: self.agent_id,
                heartbeat_secs: 30,
                health_secs,
                max_frame_bytes: 1 << 20,
                connections,
            }),
        )
        .await;
        ws
    }

    /// The agent's next WebSocket. Connections the agent already gave up on
    /// (left in the backlog while the test was not accepting) are skipped.
    async fn accept_raw(&self) -> Ws {
        loop {
            let (tcp, _) = tokio::time::timeout(WAIT, self.listener.accept())
                .await
                .expect("agent connects")
                .unwrap();
            let io: Box<dyn Io> = match &self.tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(t) => Box::new(t),
                    Err(_) => continue,
                },
                None => Box::new(tcp),
            };
            if let Ok(ws) = accept_async(io).await {
                return ws;
            }
        }
    }

    fn header(&self, seq: u64) -> JobHeader {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        JobHeader {
            job_id: Uuid::now_v7(),
            agent_id: self.agent_id,
            tenant_id: self.tenant_id,
            seq,
            issued_at: now,
            expires_at: now + 300,
            kind: JobKind::CheckConnection,
            key_id: self.signing.fingerprint(),
        }
    }

    fn seal(&self, header: &JobHeader) -> SealedJob {
        let spec = JobSpec {
            target: SiemTarget {
                connection_id: Uuid::now_v7(),
                name: "prod-splunk".into(),
                settings: SiemSettings::Splunk(SplunkSettings {
                    base_url: self.siem_url.clone(),
                    app: "search".into(),
                    owner: "nobody".into(),
                    token: Credential::new("test-token-never-logged".into()),
                    login: None,
                    hec: None,
                }),
            },
            action: JobAction::CheckConnection,
        };
        seal_job(header, &spec, &self.agent_x25519, &self.signing).unwrap()
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let h = self.agent.take().unwrap();
        tokio::time::timeout(WAIT, h)
            .await
            .expect("agent stops")
            .unwrap()
    }
}

async fn send(ws: &mut Ws, msg: &ServerMsg) {
    ws.send(Message::text(encode(msg).unwrap())).await.unwrap();
}

/// The next protocol message from the agent (health reports skipped).
async fn recv(ws: &mut Ws) -> AgentMsg {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("agent answers in time")
            .expect("connection open")
            .unwrap();
        match frame {
            Message::Text(t) => match decode_agent_msg(&t, 1 << 20).unwrap() {
                AgentMsg::Health(_) => continue,
                m => return m,
            },
            Message::Close(f) => panic!("agent closed the connection: {f:?}"),
            _ => continue,
        }
    }
}

async fn recv_result(ws: &mut Ws) -> JobResult {
    match recv(ws).await {
        AgentMsg::JobResult(r) => r,
        other => panic!("expected a job result, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_job_is_acked_then_answered_and_never_run_twice() {
    let app = TestApp::start().await;
    let mut ws = app.accept().await;
    let header = app.header(1);
    let job = app.seal(&header);

    send(&mut ws, &ServerMsg::Job { job: job.clone() }).await;
    assert_eq!(
        recv(&mut ws).await,
        AgentMsg::JobAck {
            job_id: header.job_id
        }
    );
    let first = recv_result(&mut ws).await;
    assert_eq!(first.job_id, header.job_id);
    assert_eq!(first.outcome, Outcome::Failed);
    assert_eq!(first.error_class, Some(ErrorClass::SiemUnreachable));

    // Delivered again: the stored result comes back, with no new ack (no second run).
    send(&mut ws, &ServerMsg::Job { job }).await;
    let again = recv(&mut ws).await;
    assert_eq!(
        again,
        AgentMsg::JobResult(first.clone()),
        "same result, no JobAck, no rerun"
    );

    // A ping is answered in between.
    send(&mut ws, &ServerMsg::Ping { t: 77 }).await;
    assert_eq!(recv(&mut ws).await, AgentMsg::Pong { t: 77 });

    // A different job reusing seq 1 is a replay.
    let replay = app.header(1);
    send(
        &mut ws,
        &ServerMsg::Job {
            job: app.seal(&replay),
        },
    )
    .await;
    let r = recv_result(&mut ws).await;
    assert_eq!(
        (r.job_id, r.outcome, r.error_class),
        (replay.job_id, Outcome::Refused, Some(ErrorClass::Replayed))
    );

    // The ledger on disk holds the one run (read while the agent still owns the directory).
    let last = Ledger::last_job_in(&app.state_dir).unwrap().unwrap();
    assert_eq!(last.job_id, header.job_id);
    assert_eq!(last.result, first);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn tampered_foreign_and_expired_jobs_are_refused() {
    let app = TestApp::start().await;
    let mut ws = app.accept().await;

    // Tampered ciphertext: the signature no longer verifies.
    let h = app.header(1);
    let mut job = app.seal(&h);
    job.ct.0[0] ^= 0x01;
    send(&mut ws, &ServerMsg::Job { job }).await;
    let r = recv_result(&mut ws).await;
    assert_eq!(
        (r.job_id, r.outcome, r.error_class),
        (h.job_id, Outcome::Refused, Some(ErrorClass::BadSignature))
    );

    // Signed by a key the agent never pinned.
    let rogue = ServerSigningKey::generate().unwrap();
    let mut h2 = app.header(2);
    h2.key_id = rogue.fingerprint();
    let spec_job = {
        let spec = JobSpec {
            target: SiemTarget {
                connection_id: Uuid::now_v7(),
                name: "x".into(),
                settings: SiemSettings::Splunk(SplunkSettings {
                    base_url: app.siem_url.clone(),
                    app: "search".into(),
                    owner: "nobody".into(),
                    token: Credential::new("t".into()),
                    login: None,
                    hec: None,
                }),
            },
            action: JobAction::CheckConnection,
        };
        seal_job(&h2, &spec, &app.agent_x25519, &rogue).unwrap()
    };
    send(&mut ws, &ServerMsg::Job { job: spec_job }).await;
    let r = recv_result(&mut ws).await;
    assert_eq!(r.error_class, Some(ErrorClass::UnknownSigningKey));
    assert_eq!(r.outcome, Outcome::Refused);

    // Addressed to another agent.
    let mut h3 = app.header(3);
    h3.agent_id = Uuid::now_v7();
    send(&mut ws, &ServerMsg::Job { job: app.seal(&h3) }).await;
    let r = recv_result(&mut ws).await;
    assert_eq!(
        (r.job_id, r.outcome, r.error_class),
        (h3.job_id, Outcome::Refused, Some(ErrorClass::WrongAgent))
    );

    // Expired (beyond the 60 s skew) and issued in the future.
    let mut h4 = app.header(4);
    h4.issued_at -= 1000;
    h4.expires_at = h4.issued_at + 100;
    send(&mut ws, &ServerMsg::Job { job: app.seal(&h4) }).await;
    let r = recv_result(&mut ws).await;
    assert_eq!(
        (r.job_id, r.outcome, r.error_class),
        (h4.job_id, Outcome::Refused, Some(ErrorClass::Expired))
    );
    let mut h5 = app.header(5);
    h5.issued_at += 1000;
    h5.expires_at += 1000;
    send(&mut ws, &ServerMsg::Job { job: app.seal(&h5) }).await;
    assert_eq!(
        recv_result(&mut ws).await.error_class,
        Some(ErrorClass::Expired)
    );

    // None of these consumed a sequence number: seq 1 still runs.
    let ok = app.header(1);
    send(&mut ws, &ServerMsg::Job { job: app.seal(&ok) }).await;
    assert_eq!(recv(&mut ws).await, AgentMsg::JobAck { job_id: ok.job_id });
    assert_eq!(
        recv_result(&mut ws).await.error_class,
        Some(ErrorClass::SiemUnreachable)
    );

    app.stop().await.unwrap();
}

#[tokio::test]
async fn unacked_results_are_resent_after_reconnect() {
    let app = TestApp::start().await;
    let mut ws = app.accept().await;
    let (h1, h2) = (app.header(1), app.header(2));
    for h in [&h1, &h2] {
        send(&mut ws, &ServerMsg::Job { job: app.seal(h) }).await;
        assert_eq!(recv(&mut ws).await, AgentMsg::JobAck { job_id: h.job_id });
        recv_result(&mut ws).await;
    }
    // Only the first result is acknowledged before the server goes away.
    send(&mut ws, &ServerMsg::ResultAck { job_id: h1.job_id }).await;
    send(&mut ws, &ServerMsg::Ping { t: 1 }).await;
    assert_eq!(recv(&mut ws).await, AgentMsg::Pong { t: 1 });
    ws.close(None).await.unwrap();
    drop(ws);

    // The agent comes back (server-initiated close: ≤ 1 s + 5 s spread) and resends job 2 only.
    let mut ws = app.accept().await;
    let r = recv_result(&mut ws).await;
    assert_eq!(r.job_id, h2.job_id);
    assert_eq!(r.error_class, Some(ErrorClass::SiemUnreachable));
    send(&mut ws, &ServerMsg::Ping { t: 2 }).await;
    assert_eq!(
        recv(&mut ws).await,
        AgentMsg::Pong { t: 2 },
        "nothing else was resent"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn revoked_agent_stops_for_good() {
    let app = TestApp::start().await;
    // A revocation signed by anyone but the pinned server key (a TLS-inspecting
    // proxy, say) must not stop the agent: it drops that connection and comes back.
    let forger = ServerSigningKey::generate().unwrap();
    for (signer, nonce) in [(&forger, [7u8; 32]), (&app.signing, [8u8; 32])] {
        let mut ws = app.accept_raw().await;
        let server_key = app.signing.fingerprint();
        send(
            &mut ws,
            &ServerMsg::Challenge(Challenge {
                nonce: B64(nonce),
                server_key,
                key_chain: Vec::new(),
            }),
        )
        .await;
        assert!(matches!(recv(&mut ws).await, AgentMsg::Hello(_)));
        let bytes = picket_proto::revocation_signing_bytes(&nonce, &app.agent_id);
        send(
            &mut ws,
            &ServerMsg::Revoked {
                proof: B64(signer.sign(&bytes)),
            },
        )
        .await;
        if std::ptr::eq(signer, &forger) {
            assert!(
                StateDir::new(&app.state_dir).revoked_at().is_none(),
                "a forged revocation must not be recorded"
            );
        }
    }
    let h = tokio::time::timeout(WAIT, async {
        let mut app = app;
        let h = app.agent.take().unwrap();
        (h.await.unwrap(), app)
    })
    .await
    .expect("agent stops after revocation");
    let (res, app) = h;
    let err = res.unwrap_err();
    assert!(err.downcast_ref::<Revoked>().is_some(), "{err:#}");
    assert!(StateDir::new(&app.state_dir).revoked_at().is_some());

    // A restarted agent refuses to run.
    let toml = format!(
        "state_dir = {:?}\ndangerous_plaintext = true\n",
        app.state_dir.display().to_string()
    );
    let config = AgentConfig::from_sources(Some(&toml), &app.state_dir, &|_| None).unwrap();
    let err = run_agent(config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<Revoked>().is_some(), "{err:#}");
}

#[tokio::test]
async fn unpinned_server_key_is_refused() {
    let app = TestApp::start().await;
    let mut ws = app.accept_raw().await;
    let imposter = ServerSigningKey::generate().unwrap();
    send(
        &mut ws,
        &ServerMsg::Challenge(Challenge {
            nonce: B64([9; 32]),
            server_key: imposter.fingerprint(),
            key_chain: Vec::new(),
        }),
    )
    .await;
    // The agent closes without sending a hello.
    let frame = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    match frame {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 1008, "policy violation");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn job_interrupted_by_a_crash_is_not_run_again() {
    let job_id = Uuid::now_v7();
    // The previous agent process accepted job 1 and died before finishing it.
    let app = TestApp::start_with("", |dir| {
        Ledger::open(dir)
            .unwrap()
            .record_accepted(1, job_id, JobKind::CheckConnection)
            .unwrap();
    })
    .await;
    let mut ws = app.accept().await;
    let mut h = app.header(1);
    h.job_id = job_id;
    send(&mut ws, &ServerMsg::Job { job: app.seal(&h) }).await;
    let r = recv(&mut ws).await;
    let AgentMsg::JobResult(r) = r else {
        panic!("expected a result without a new ack, got {r:?}");
    };
    assert_eq!(
        (r.job_id, r.outcome, r.error_class),
        (job_id, Outcome::Failed, Some(ErrorClass::Interrupted))
    );
    // And that answer is stored: a redelivery gets the same.
    send(&mut ws, &ServerMsg::Job { job: app.seal(&h) }).await;
    assert_eq!(recv_result(&mut ws).await, r);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn local_policy_refuses_kinds_it_does_not_allow() {
    let app = TestApp::start_with("allow_kinds = [\"deploy_rule\"]\n", |_| {}).await;
    let mut ws = app.accept().await;
    let h = app.header(1);
    send(&mut ws, &ServerMsg::Job { job: app.seal(&h) }).await;
    assert_eq!(recv(&mut ws).await, AgentMsg::JobAck { job_id: h.job_id });
    let r = recv_result(&mut ws).await;
    assert_eq!(
        (r.outcome, r.error_class),
        (Outcome::Refused, Some(ErrorClass::PolicyDenied))
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn health_reports_cover_process_host_and_siem() {
    let app = TestApp::start().await;
    let connection_id = Uuid::now_v7();
    let mut ws = app
        .accept_with(
            5,
            vec![ConnectionInfo {
                connection_id,
                name: "prod-splunk".into(),
                kind: SiemKind::Splunk,
                base_url: app.siem_url.clone(),
            }],
        )
        .await;
    let report = loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = frame
            && let AgentMsg::Health(h) = decode_agent_msg(&t, 1 << 20).unwrap()
        {
            break h;
        }
    };
    report.validate().unwrap();
    assert!(report.rss_bytes > 0 && report.host_mem_total_bytes > 0);
    assert_eq!(report.siem.len(), 1);
    assert_eq!(report.siem[0].connection_id, connection_id);
    assert!(!report.siem[0].reachable);
    assert_eq!(
        report.siem[0].error_class,
        Some(ErrorClass::SiemUnreachable)
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn speaks_wss_with_a_ca_bundle() {
    let app = TestApp::start_full("", |_| {}, true).await;
    let mut ws = app.accept().await;
    let h = app.header(1);
    send(&mut ws, &ServerMsg::Job { job: app.seal(&h) }).await;
    assert_eq!(recv(&mut ws).await, AgentMsg::JobAck { job_id: h.job_id });
    assert_eq!(recv_result(&mut ws).await.job_id, h.job_id);
    app.stop().await.unwrap();
}

/// The next health report, skipping other frames.
async fn next_health(ws: &mut Ws, within: Duration) -> Option<picket_proto::HealthReport> {
    loop {
        let frame = tokio::time::timeout(within, ws.next()).await.ok()??.ok()?;
        if let Message::Text(t) = frame
            && let AgentMsg::Health(h) = decode_agent_msg(&t, 1 << 20).unwrap()
        {
            return Some(h);
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn health_reports_made_while_offline_are_sent_in_order_after_reconnect() {
    let app = TestApp::start().await;
    let mut ws = app.accept_with(5, vec![]).await;
    let first = next_health(&mut ws, WAIT).await.expect("a first report");
    // The server goes away for 12 s (every connection attempt is dropped at
    // once); the agent keeps measuring while it cannot send.
    drop(ws);
    let offline_until = tokio::time::Instant::now() + Duration::from_secs(12);
    while let Ok(Ok((tcp, _))) = tokio::time::timeout_at(offline_until, app.listener.accept()).await
    {
        drop(tcp);
    }
    // Back online with a long interval: whatever arrives now was buffered.
    let reconnected_at = unix_now();
    let mut ws = app.accept_with(3600, vec![]).await;
    let mut buffered = Vec::new();
    let mut taken = Vec::new();
    while let Some(h) = next_health(&mut ws, Duration::from_secs(2)).await {
        buffered.push(h.uptime_secs);
        taken.push(h.taken_at);
    }
    // Each buffered report keeps the time its figures were taken, not the
    // time it was finally sent: the oldest predates the reconnection.
    assert!(
        taken.windows(2).all(|w| w[0] <= w[1])
            && taken[0] >= first.taken_at
            && taken[0] < reconnected_at,
        "taken_at: first {} then {taken:?}, reconnected at {reconnected_at}",
        first.taken_at
    );
    assert!(
        buffered.len() >= 2,
        "reports made offline were sent on reconnect: {buffered:?}"
    );
    assert!(
        buffered.windows(2).all(|w| w[0] <= w[1]) && buffered[0] > first.uptime_secs,
        "oldest first, all after the last one sent: first {} then {buffered:?}",
        first.uptime_secs
    );
    app.stop().await.unwrap();
}

/// A signed checkpoint note of `leaves` for this agent's tenant log.
fn audit_note(app: &TestApp, leaves: &[[u8; 32]], key: &ServerSigningKey) -> String {
    picket_shared::checkpoint::sign_checkpoint(
        &picket_shared::checkpoint::Checkpoint {
            origin: picket_proto::audit::audit_origin(&app.tenant_id),
            size: leaves.len() as u64,
            root: picket_shared::merkle::root(leaves),
        },
        picket_proto::audit::AUDIT_KEY_NAME,
        key,
    )
    .unwrap()
}

fn leaves(prefix: &str, n: usize) -> Vec<[u8; 32]> {
    (0..n)
        .map(|i| picket_shared::merkle::leaf_hash(format!("{prefix}{i}").as_bytes()))
        .collect()
}

fn consistency(all: &[[u8; 32]], from: u64) -> ServerMsg {
    ServerMsg::AuditConsistency(picket_proto::AuditConsistency {
        from,
        to: all.len() as u64,
        proof: picket_shared::merkle::consistency_proof(all, from)
            .unwrap()
            .into_iter()
            .map(B64)
            .collect(),
    })
}

fn accepted_size(app: &TestApp) -> Option<u64> {
    let text = std::fs::read_to_string(app.state_dir.join("audit-witness.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["size"].as_u64()
}

/// The agent checks every audit checkpoint the server pushes: an honest
/// extension is accepted after a valid consistency proof; a forked history
/// (events rewritten under a re-signed checkpoint), a rollback and a
/// checkpoint signed by another key are refused, journaled, and reported as
/// the health report's audit alarm.
#[tokio::test]
async fn forked_audit_history_raises_the_alarm() {
    let app = TestApp::start().await;
    let mut ws = app.accept_with(5, vec![]).await;
    let honest = leaves("event-", 7);

    // First checkpoint: accepted on its signature (trust on first use).
    let note4 = audit_note(&app, &honest[..4], &app.signing);
    send(
        &mut ws,
        &ServerMsg::AuditCheckpoint(picket_proto::AuditCheckpoint {
            note: note4.clone(),
        }),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while accepted_size(&app) != Some(4) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "first checkpoint accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An honest extension: the agent asks for the proof and accepts.
    let note7 = audit_note(&app, &honest, &app.signing);
    send(
        &mut ws,
        &ServerMsg::AuditCheckpoint(picket_proto::AuditCheckpoint { note: note7 }),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        AgentMsg::AuditConsistencyRequest { from: 4, to: 7 }
    );
    send(&mut ws, &consistency(&honest, 4)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while accepted_size(&app) != Some(7) {
        assert!(tokio::time::Instant::now() < deadline, "extension accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A forked history: event #3 rewritten, more appended, re-signed with
    // the real key. The proof the server can offer does not link the trees.
    let mut forked = honest[..3].to_vec();
    forked.extend(leaves("rewritten-", 6));
    let note9 = audit_note(&app, &forked, &app.signing);
    send(
        &mut ws,
        &ServerMsg::AuditCheckpoint(picket_proto::AuditCheckpoint { note: note9 }),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        AgentMsg::AuditConsistencyRequest { from: 7, to: 9 }
    );
    send(&mut ws, &consistency(&forked, 7)).await;

    // A rollback and a checkpoint signed by another key are refused too.
    send(
        &mut ws,
        &ServerMsg::AuditCheckpoint(picket_proto::AuditCheckpoint { note: note4 }),
    )
    .await;
    let stranger = ServerSigningKey::generate().unwrap();
    let unsigned = audit_note(&app, &leaves("x", 12), &stranger);
    send(
        &mut ws,
        &ServerMsg::AuditCheckpoint(picket_proto::AuditCheckpoint { note: unsigned }),
    )
    .await;

    // The health report carries the alarm (the first one raised).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let h = next_health(&mut ws, left)
            .await
            .expect("health reports keep coming");
        if h.audit_alarm.is_some() {
            assert_eq!(h.audit_alarm, Some(picket_proto::AuditAlarm::Inconsistent));
            break;
        }
    }
    // The forked checkpoint was not accepted.
    assert_eq!(accepted_size(&app), Some(7));
    // Each refusal is in the customer's journal.
    let (entries, _) = picket_agent::journal::Journal::read_last(&app.state_dir, 100).unwrap();
    let alarms: Vec<_> = entries.iter().filter_map(|e| e.audit_alarm).collect();
    assert_eq!(
        alarms,
        vec![
            picket_proto::AuditAlarm::Inconsistent,
            picket_proto::AuditAlarm::Rollback,
            picket_proto::AuditAlarm::BadSignature
        ]
    );
    app.stop().await.unwrap();
}
