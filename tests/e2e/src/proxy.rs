//! A WebSocket relay between agent and server that can tamper with jobs in
//! flight, standing in for an attacker on the network path (or a
//! TLS-inspecting middlebox). Frames other than jobs pass through unchanged.
//!
//! It also records every text frame the agent sends (for leak tests: what
//! leaves the agent is exactly what a network observer would see).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpListener;
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
}

/// A running relay.
pub struct TamperProxy {
    /// Address agents should connect to.
    pub addr: SocketAddr,
    mode: Arc<Mutex<Tamper>>,
    jobs_seen: Arc<Mutex<u32>>,
    agent_frames: Arc<Mutex<Vec<String>>>,
}

impl TamperProxy {
    /// Starts a relay to the server at `upstream` (`ws://host:port`).
    ///
    /// # Errors
    /// If the listener cannot bind.
    pub async fn start(upstream: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(Mutex::new(Tamper::None));
        let jobs_seen = Arc::new(Mutex::new(0));
        let agent_frames = Arc::new(Mutex::new(Vec::new()));
        let (m, j, f) = (mode.clone(), jobs_seen.clone(), agent_frames.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (m, j, f, up) = (m.clone(), j.clone(), f.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = relay(tcp, up, m, j, f).await;
                });
            }
        });
        Ok(TamperProxy {
            addr,
            mode,
            jobs_seen,
            agent_frames,
        })
    }

    /// Sets what happens to the next job frames.
    pub fn set(&self, t: Tamper) {
        if let Ok(mut g) = self.mode.lock() {
            *g = t;
        }
    }

    /// Job frames relayed so far.
    pub fn jobs_seen(&self) -> u32 {
        self.jobs_seen.lock().map(|g| *g).unwrap_or(0)
    }

    /// Every text frame the agent sent so far, in order, over all connections.
    pub fn agent_frames(&self) -> Vec<String> {
        self.agent_frames
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
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
        Tamper::None | Tamper::Duplicate => {}
    }
    v.to_string()
}

async fn relay(
    tcp: tokio::net::TcpStream,
    upstream: String,
    mode: Arc<Mutex<Tamper>>,
    jobs_seen: Arc<Mutex<u32>>,
    agent_frames: Arc<Mutex<Vec<String>>>,
) -> anyhow::Result<()> {
    let agent = tokio_tungstenite::accept_async(tcp).await?;
    let (server, _) =
        tokio_tungstenite::connect_async(format!("{upstream}/v1/agent/connect")).await?;
    let (mut agent_tx, mut agent_rx) = agent.split();
    let (mut server_tx, mut server_rx) = server.split();
    let up = async {
        while let Some(Ok(m)) = agent_rx.next().await {
            if let Message::Text(t) = &m
                && let Ok(mut g) = agent_frames.lock()
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
        while let Some(Ok(m)) = server_rx.next().await {
            let mut out = vec![m.clone()];
            if let Message::Text(t) = &m
                && t.contains("\"type\":\"job\"")
            {
                if let Ok(mut g) = jobs_seen.lock() {
                    *g += 1;
                }
                let t_mode = mode.lock().map(|g| *g).unwrap_or(Tamper::None);
                out = match t_mode {
                    Tamper::None => out,
                    Tamper::Duplicate => vec![m.clone(), m.clone()],
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
