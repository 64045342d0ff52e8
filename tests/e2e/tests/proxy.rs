//! The proxy path: a real agent process enrolls and runs through an HTTP
//! CONNECT proxy that requires Basic authentication (configured with the
//! agent's `proxy_url`), a deployment succeeds over the tunnel, and a wrong
//! proxy password gives a clear error from `picket-agent enroll`.
//!
//! The proxy is written here (tokio, 127.0.0.1:0): it records every CONNECT
//! target and refuses a missing or wrong `Proxy-Authorization` with 407.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use picket_e2e::procs::{AgentOpts, AgentProc};
use picket_e2e::stack::{Stack, StackOpts};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USER: &str = "picket";
const PASSWORD: &str = "pr0xy-pa55-7c1d";

/// A CONNECT-only proxy that requires `Proxy-Authorization: Basic`.
struct ConnectProxy {
    addr: std::net::SocketAddr,
    /// CONNECT targets that were let through.
    tunnels: Arc<Mutex<Vec<String>>>,
    /// Requests refused with 407.
    refused: Arc<Mutex<u32>>,
}

impl ConnectProxy {
    async fn start(user: &str, password: &str) -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (t, r) = (tunnels.clone(), refused.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (t, r, expected) = (t.clone(), r.clone(), expected.clone());
                tokio::spawn(async move {
                    let _ = serve(tcp, &expected, &t, &r).await;
                });
            }
        });
        ConnectProxy {
            addr,
            tunnels,
            refused,
        }
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }
}

async fn serve(
    mut tcp: TcpStream,
    expected_auth: &str,
    tunnels: &Mutex<Vec<String>>,
    refused: &Mutex<u32>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await? == 0 || head.len() > 8192 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_owned());
    if method != "CONNECT" {
        tcp.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await?;
        return Ok(());
    }
    if auth.as_deref() != Some(expected_auth) {
        *refused.lock().unwrap() += 1;
        tcp.write_all(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\
              Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
        )
        .await?;
        return Ok(());
    }
    let mut upstream = match TcpStream::connect(target).await {
        Ok(u) => u,
        Err(_) => {
            tcp.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    tunnels.lock().unwrap().push(target.to_owned());
    tcp.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_enrolls_and_runs_through_an_authenticating_connect_proxy() {
    let proxy = ConnectProxy::start(USER, PASSWORD).await;
    let s = Stack::start(StackOpts {
        tls: true,
        agent_proxy_url: Some(proxy.url(USER, PASSWORD)),
        ..StackOpts::default()
    })
    .await
    .unwrap();
    let server_target = s.server.addr.to_string();
    let tunnels = proxy.tunnels();
    assert!(
        tunnels.len() >= 2 && tunnels.iter().all(|t| *t == server_target),
        "enrollment and the WebSocket both tunnel to the server {server_target}: {tunnels:?}"
    );

    let (rule_id, _) = s
        .create_rule("Proxy path", "index=proxy sourcetype=squid status=407")
        .await
        .unwrap();
    let dep = s.request_deploy(&rule_id, 1).await.unwrap();
    s.approve(&dep).await.unwrap();
    let done = s.wait_final(&dep, Duration::from_secs(60)).await.unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(s.sim.saved_search(&format!("picket-{rule_id}")).is_some());
    // The SIEM is reached directly, never through the proxy.
    let sim_target = s.sim.addr().to_string();
    assert!(
        !proxy.tunnels().contains(&sim_target),
        "{:?}",
        proxy.tunnels()
    );
    let log = s.agent.log();
    assert!(log.contains("through an HTTP CONNECT proxy"), "{log}");
    assert!(!log.contains(PASSWORD), "the proxy password was logged");

    // A wrong password: enrollment fails with a clear error, naming the key.
    let token = s
        .admin
        .post_ok(
            "/v1/enrollment-tokens",
            json!({ "label": "wrong-proxy-pw" }),
        )
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = *proxy.refused.lock().unwrap();
    let err = AgentProc::enroll(
        &s.root.join("agent-wrong-proxy"),
        &s.server.url,
        &token,
        &AgentOpts {
            ca_bundle: s.pki.as_ref().map(|p| p.ca_cert.clone()),
            proxy_url: Some(proxy.url(USER, "wrong-password-9")),
            ..AgentOpts::default()
        },
    )
    .await
    .map(|_| ())
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("proxy authentication required"), "{msg}");
    assert!(msg.contains("proxy_url"), "{msg}");
    assert!(!msg.contains("wrong-password-9"), "{msg}");
    assert!(*proxy.refused.lock().unwrap() > before);
    // Nothing was written for the failed enrollment.
    assert!(
        !s.root
            .join("agent-wrong-proxy/state/enrollment.json")
            .exists()
    );
}
