//! Enrollment against a minimal in-test HTTP server: the request proves key
//! possession, the server key pin is enforced before anything is written,
//! server errors are shown with their code and message, and an existing
//! enrollment is never replaced without `--force`.

// Test harness: a panic here is a test failure with a precise location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use picket_agent::AgentConfig;
use picket_agent::enroll::enroll;
use picket_agent::state::{ENROLLMENT_FILE, StateDir, X25519_KEY_FILE};
use picket_proto::{B64, EnrollRequest, EnrollResponse, EnrollmentToken};
use picket_shared::keys::{ServerSigningKey, verify_signature};
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Serves one HTTP request with `answer(request) -> (status, body)` and returns the request body.
async fn one_shot_server(
    answer: impl FnOnce(&EnrollRequest) -> (u16, String) + Send + 'static,
) -> (Url, JoinHandle<EnrollRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head_len, content_len) = loop {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                assert!(head.starts_with("post /v1/agent/enroll "), "{head}");
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse::<usize>().unwrap())
                    .unwrap();
                break (i + 4, len);
            }
        };
        while buf.len() < head_len + content_len {
            let n = tcp.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        let req: EnrollRequest = serde_json::from_slice(&buf[head_len..]).unwrap();
        let (status, body) = answer(&req);
        let resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(resp.as_bytes()).await.unwrap();
        tcp.shutdown().await.unwrap();
        req
    });
    (url, task)
}

fn config(state_dir: &Path) -> AgentConfig {
    let toml = format!(
        "state_dir = {:?}\ndangerous_plaintext = true\n",
        state_dir.display().to_string()
    );
    AgentConfig::from_sources(Some(&toml), state_dir, &|_| None).unwrap()
}

fn response(key: &ServerSigningKey, key_id_from: &ServerSigningKey) -> EnrollResponse {
    EnrollResponse {
        agent_id: Uuid::now_v7(),
        tenant_id: Uuid::now_v7(),
        server_signing_key: B64(key.verifying_key().to_bytes()),
        key_id: key_id_from.fingerprint(),
        key_chain: Vec::new(),
        chain_root: None,
    }
}

#[tokio::test]
async fn enrolls_with_proof_and_pins_the_server_key() {
    let server_key = ServerSigningKey::generate().unwrap();
    let token = EnrollmentToken {
        secret: [7; 32],
        fingerprint: server_key.fingerprint(),
    };
    let answer = response(&server_key, &server_key);
    let body = serde_json::to_string(&answer).unwrap();
    let (url, server) = one_shot_server(move |_| (200, body)).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");

    let e = enroll(&config(&dir), &url, token, false).await.unwrap();
    let req = server.await.unwrap();

    assert_eq!(req.token_secret.0, [7; 32]);
    let proof = EnrollRequest::proof_bytes(&[7; 32], &req.x25519_public.0, &req.ed25519_public.0);
    verify_signature(&req.ed25519_public.0, &proof, &req.proof.0).unwrap();

    assert_eq!(e.agent_id, answer.agent_id);
    assert_eq!(e.key_id, server_key.fingerprint());
    let sd = StateDir::new(&dir);
    assert_eq!(sd.load_enrollment().unwrap(), e);
    let keys = sd.load_keys().unwrap();
    assert_eq!(keys.ed25519_public(), req.ed25519_public.0);
    assert_eq!(keys.x25519_public(), req.x25519_public.0);

    // A second enrollment is refused before any request is made.
    let again = EnrollmentToken {
        secret: [8; 32],
        fingerprint: server_key.fingerprint(),
    };
    let err = enroll(&config(&dir), &url, again, false).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("already enrolled") && msg.contains("--force"),
        "{msg}"
    );
}

#[tokio::test]
async fn mismatched_server_key_aborts_without_writing_state() {
    let real = ServerSigningKey::generate().unwrap();
    let attacker = ServerSigningKey::generate().unwrap();
    let token = EnrollmentToken {
        secret: [1; 32],
        fingerprint: real.fingerprint(),
    };
    // An interceptor answers with its own key (and a consistent key_id for it).
    let body = serde_json::to_string(&response(&attacker, &attacker)).unwrap();
    let (url, _server) = one_shot_server(move |_| (200, body)).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let err = enroll(&config(&dir), &url, token, false).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(
            "server key does not match the fingerprint in the token: possible interception"
        ),
        "{msg}"
    );
    assert!(!dir.join(ENROLLMENT_FILE).exists());
    assert!(!dir.join(X25519_KEY_FILE).exists());

    // The real key with a key_id that disagrees is refused too.
    let token = EnrollmentToken {
        secret: [1; 32],
        fingerprint: real.fingerprint(),
    };
    let body = serde_json::to_string(&response(&real, &attacker)).unwrap();
    let (url, _server) = one_shot_server(move |_| (200, body)).await;
    let err = enroll(&config(&dir), &url, token, false).await.unwrap_err();
    assert!(format!("{err:#}").contains("possible interception"));
    assert!(!dir.join(ENROLLMENT_FILE).exists());
}

#[tokio::test]
async fn server_errors_show_code_and_message() {
    let key = ServerSigningKey::generate().unwrap();
    let token = EnrollmentToken {
        secret: [2; 32],
        fingerprint: key.fingerprint(),
    };
    let (url, _server) = one_shot_server(|_| {
        (
            401,
            r#"{"error":{"code":"token_expired","message":"This enrollment token has expired.\u001b[2J"}}"#
                .to_owned(),
        )
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let err = enroll(&config(tmp.path()), &url, token, false)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("token_expired") && msg.contains("This enrollment token has expired."),
        "{msg}"
    );
    assert!(
        !msg.contains('\u{1b}'),
        "control characters are stripped: {msg:?}"
    );
    assert!(!tmp.path().join(ENROLLMENT_FILE).exists());
}
