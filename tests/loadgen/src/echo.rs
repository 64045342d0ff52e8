//! The memory floor: a bare tokio-tungstenite echo server (the same 4 KiB
//! read buffer and unbuffered writes as the Picket gateway, one task per
//! connection, nothing else), and idle clients that hold N connections to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpSocket};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Serves echo on `listen` for ever (behind TLS when given an acceptor);
/// prints `echo listening on ADDR` first.
///
/// # Errors
/// If it cannot bind.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("echo listening on {}", listener.local_addr()?);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        echo(s).await;
                    }
                }
                None => echo(stream).await,
            }
        });
    }
}

async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config())).await
    else {
        return;
    };
    while let Some(Ok(m)) = ws.next().await {
        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
            return;
        }
    }
}

/// Opens `n` idle connections to the echo server (each one echo round trip
/// to prove it live), spread over `sources` loopback addresses; they stay
/// open until `stop`. Returns how many are open.
pub async fn hold(
    server: SocketAddr,
    n: usize,
    sources: u8,
    tls: Option<&crate::tls::Pki>,
    stop: CancellationToken,
) -> Arc<AtomicU64> {
    let open = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    for i in 0..n {
        let open = open.clone();
        let stop = stop.clone();
        let connector = tls.map(crate::tls::Pki::connector);
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        tokio::spawn(async move {
            let ws = async {
                let sock = TcpSocket::new_v4().ok()?;
                sock.bind(crate::source_addr(i, sources)).ok()?;
                let stream = sock.connect(server).await.ok()?;
                let scheme = if connector.is_some() { "wss" } else { "ws" };
                let (mut ws, _) = tokio_tungstenite::client_async_tls_with_config(
                    format!("{scheme}://{server}/"),
                    stream,
                    Some(config()),
                    connector,
                )
                .await
                .ok()?;
                ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
                    .await
                    .ok()?;
                ws.next().await?.ok()?;
                Some(ws)
            }
            .await;
            drop(permit);
            let Some(mut ws) = ws else { return };
            open.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = ws.next() => {}
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    open
}
