//! A WebSocket relay between agent and server that can tamper with jobs in
//! flight, standing in for an attacker on the network path (or a
//! TLS-inspecting middlebox). Frames other than jobs pass through unchanged.
//!
//! It also records every text frame the agent sends (for leak tests: what
//! leaves the agent is exactly what a network observer would see) and every
//! job frame the server sends, and can hold jobs back and inject frames
//! later (a recorded job replayed, a job held past its expiry, a job taken
//! from another agent's session).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt as _, StreamExt as _};
use picket_proto::SealedJob;
use picket_shared::keys::ServerSigningKey;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What to do to each job frame from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Pass it through.
    None,
    /// Flip one byte of the HPKE ciphertext.
    Ciphertext,
    /// Rewrite the signed header (a later expiry).
    Header,
    /// Flip one byte of the signature.
    Signature,
    /// Deliver every job twice.
    Duplicate,
    /// Do not deliver jobs: keep them for [`TamperProxy::release_held`].
    Hold,
    /// Re-sign every job with a key the agent does not trust (the header's
    /// `key_id` names the attacker's key, the signature verifies under it).
    Resign,
}

/// A running relay.
pub struct TamperProxy {
    /// Address agents should connect to.
    pub addr: SocketAddr,
    shared: Shared,
}

/// State shared with the relay tasks.
#[derive(Clone, Default)]
struct Shared {
    mode: Arc<Mutex<Option<Tamper>>>,
    jobs_seen: Arc<Mutex<u32>>,
    agent_frames: Arc<Mutex<Vec<String>>>,
    /// Every job frame the server sent, as received (before tampering).
    server_jobs: Arc<Mutex<Vec<String>>>,
    /// Job frames held back by [`Tamper::Hold`].
    held: Arc<Mutex<Vec<String>>>,
    /// Sender into the newest agent connection, for injected frames.
    inject: Arc<Mutex<Option<mpsc::UnboundedSender<Message>>>>,
    /// Number of agent connections relayed so far.
    connections: Arc<Mutex<u32>>,
}

/// The attacker's signing key for [`Tamper::Resign`] (fixed: the tests only
/// need it to be a key no agent pins).
fn attacker_key() -> ServerSigningKey {
    ServerSigningKey::from_seed(&[0xA7; 32])
}

impl TamperProxy {
    /// Starts a relay to the server at `upstream` (`ws://host:port`).
    ///
    /// # Errors
    /// If the listener cannot bind.
    pub async fn start(upstream: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared::default();
        let sh = shared.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (sh, up) = (sh.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = relay(tcp, up, sh).await;
                });
            }
        });
        Ok(TamperProxy { addr, shared })
    }

    /// Sets what happens to the next job frames.
    pub fn set(&self, t: Tamper) {
        if let Ok(mut g) = self.shared.mode.lock() {
            *g = Some(t);
        }
    }

    /// Job frames relayed so far.
    pub fn jobs_seen(&self) -> u32 {
        self.shared.jobs_seen.lock().map(|g| *g).unwrap_or(0)
    }

    /// Agent connections relayed so far.
    pub fn connections(&self) -> u32 {
        self.shared.connections.lock().map(|g| *g).unwrap_or(0)
    }

    /// Every text frame the agent sent so far, in order, over all connections.
    pub fn agent_frames(&self) -> Vec<String> {
        self.shared
            .agent_frames
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// Every job frame the server sent so far (as sent, before tampering).
    pub fn server_jobs(&self) -> Vec<String> {
        self.shared
            .server_jobs
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// Number of job frames held back by [`Tamper::Hold`].
    pub fn held(&self) -> usize {
        self.shared.held.lock().map(|g| g.len()).unwrap_or(0)
    }

    /// Delivers the held job frames, in order, on the newest agent connection.
    ///
    /// # Errors
    /// If no agent connection is open.
    pub fn release_held(&self) -> anyhow::Result<usize> {
        let held: Vec<String> = self
            .shared
            .held
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        for f in &held {
            self.inject(f)?;
        }
        Ok(held.len())
    }

    /// Sends a text frame to the agent on its newest connection, as if the
    /// server had sent it.
    ///
    /// # Errors
    /// If no agent connection is open.
    pub fn inject(&self, text: &str) -> anyhow::Result<()> {
        let tx = self
            .shared
            .inject
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .ok_or_else(|| anyhow::anyhow!("no agent connection to inject into"))?;
        tx.send(Message::Text(text.to_owned().into()))
            .map_err(|_| anyhow::anyhow!("the agent connection is closed"))
    }

    /// Base URL for agents.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn flip_b64(v: &mut serde_json::Value) {
    if let Some(s) = v.as_str()
        && let Ok(mut bytes) = STANDARD.decode(s)
        && !bytes.is_empty()
    {
        let i = bytes.len() / 2;
        bytes[i] ^= 0x01;
        *v = serde_json::Value::String(STANDARD.encode(bytes));
    }
}

fn tamper(text: &str, t: Tamper) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
        return text.to_owned();
    };
    match t {
        Tamper::Ciphertext => flip_b64(&mut v["job"]["ct"]),
        Tamper::Signature => flip_b64(&mut v["job"]["sig"]),
        Tamper::Header => {
            if let Some(s) = v["job"]["header"].as_str()
                && let Ok(bytes) = STANDARD.decode(s)
                && let Ok(mut h) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                h["expires_at"] = serde_json::json!(h["expires_at"].as_i64().unwrap_or(0) + 86_400);
                v["job"]["header"] = serde_json::Value::String(STANDARD.encode(h.to_string()));
            }
        }
        Tamper::Resign => resign(&mut v["job"]),
        Tamper::None | Tamper::Duplicate | Tamper::Hold => {}
    }
    v.to_string()
}

/// Rewrites the header's `key_id` to the attacker's key and signs the job
/// with it: a well-formed job signed by a key the agent does not trust.
fn resign(job: &mut serde_json::Value) {
    let key = attacker_key();
    let decode = |v: &serde_json::Value| v.as_str().and_then(|s| STANDARD.decode(s).ok());
    let (Some(header), Some(enc), Some(ct)) = (
        decode(&job["header"]),
        decode(&job["enc"]),
        decode(&job["ct"]),
    ) else {
        return;
    };
    let Ok(mut h) = serde_json::from_slice::<serde_json::Value>(&header) else {
        return;
    };
    h["key_id"] = serde_json::Value::String(key.fingerprint().to_hex());
    let header = h.to_string().into_bytes();
    let sig = key.sign(&SealedJob::signed_bytes(&header, &enc, &ct));
    job["header"] = serde_json::Value::String(STANDARD.encode(&header));
    job["sig"] = serde_json::Value::String(STANDARD.encode(sig));
}

async fn relay(tcp: tokio::net::TcpStream, upstream: String, sh: Shared) -> anyhow::Result<()> {
    let agent = tokio_tungstenite::accept_async(tcp).await?;
    let (server, _) =
        tokio_tungstenite::connect_async(format!("{upstream}/v1/agent/connect")).await?;
    let (mut agent_tx, mut agent_rx) = agent.split();
    let (mut server_tx, mut server_rx) = server.split();
    let (inject_tx, mut inject_rx) = mpsc::unbounded_channel::<Message>();
    if let Ok(mut g) = sh.inject.lock() {
        *g = Some(inject_tx);
    }
    if let Ok(mut g) = sh.connections.lock() {
        *g += 1;
    }
    let up = async {
        while let Some(Ok(m)) = agent_rx.next().await {
            if let Message::Text(t) = &m
                && let Ok(mut g) = sh.agent_frames.lock()
            {
                g.push(t.to_string());
            }
            if server_tx.send(m).await.is_err() {
                break;
            }
        }
        let _ = server_tx.close().await;
    };
    let down = async {
        loop {
            let (m, injected) = tokio::select! {
                m = server_rx.next() => match m {
                    Some(Ok(m)) => (m, false),
                    _ => break,
                },
                Some(m) = inject_rx.recv() => (m, true),
            };
            let mut out = vec![m.clone()];
            // Injected frames go to the agent exactly as given.
            if !injected
                && let Message::Text(t) = &m
                && t.contains("\"type\":\"job\"")
            {
                if let Ok(mut g) = sh.jobs_seen.lock() {
                    *g += 1;
                }
                if let Ok(mut g) = sh.server_jobs.lock() {
                    g.push(t.to_string());
                }
                let t_mode = sh.mode.lock().ok().and_then(|g| *g).unwrap_or(Tamper::None);
                out = match t_mode {
                    Tamper::None => out,
                    Tamper::Duplicate => vec![m.clone(), m.clone()],
                    Tamper::Hold => {
                        if let Ok(mut g) = sh.held.lock() {
                            g.push(t.to_string());
                        }
                        Vec::new()
                    }
                    other => vec![Message::Text(tamper(t, other).into())],
                };
            }
            for o in out {
                if agent_tx.send(o).await.is_err() {
                    return;
                }
            }
        }
        let _ = agent_tx.close().await;
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    Ok(())
}
