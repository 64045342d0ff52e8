//! Outbound networking: the one TLS configuration (TLS 1.2+, ring, web PKI
//! roots plus an optional CA bundle), the WebSocket connector with small
//! buffers (directly or through an HTTP CONNECT proxy, see [`crate::proxy`]),
//! and the HTTP clients for enrollment and the SIEM connectors.

use std::io::BufReader;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::Url;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::proxy::ProxyConfig;

/// Path of the agent gateway, relative to the server URL.
pub const CONNECT_PATH: &str = "v1/agent/connect";
/// Path of the enrollment endpoint, relative to the server URL.
pub const ENROLL_PATH: &str = "v1/agent/enroll";

/// Read and write buffer size of the agent's WebSocket (tungstenite's default is 128 KiB).
pub const WS_BUFFER_BYTES: usize = 4 * 1024;

/// The agent's WebSocket to the server.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Builds the TLS client configuration shared by the server connection and
/// the SIEM client: ring provider, TLS 1.3 and 1.2 only, web PKI roots plus
/// every certificate in `ca_bundle`.
///
/// # Errors
/// If the bundle cannot be read or holds no certificate.
pub fn tls_config(ca_bundle: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_bundle {
        let f = std::fs::File::open(path)
            .with_context(|| format!("cannot open ca_bundle {}", path.display()))?;
        let mut n = 0usize;
        for cert in rustls_pemfile::certs(&mut BufReader::new(f)) {
            let cert =
                cert.with_context(|| format!("ca_bundle {} is not valid PEM", path.display()))?;
            roots.add(cert).with_context(|| {
                format!("ca_bundle {} holds an invalid certificate", path.display())
            })?;
            n += 1;
        }
        if n == 0 {
            bail!("ca_bundle {} holds no certificate", path.display());
        }
        tracing::info!(path = %path.display(), certificates = n, "added CA bundle to the trust roots");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS provider does not support TLS 1.2/1.3")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The HTTP client the SIEM connectors use: same trust roots, the SIEM
/// deadline, no redirects (a redirect could carry the bearer token elsewhere),
/// and never a proxy: the SIEM is on the agent's local network, and its bearer
/// token has no business crossing a corporate egress proxy (`HTTPS_PROXY` and
/// `proxy_url` apply to the Picket server only).
///
/// # Errors
/// If reqwest refuses the configuration.
pub fn siem_http_client(
    tls: &rustls::ClientConfig,
    connect_timeout: Duration,
    siem_timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(connect_timeout)
        .timeout(siem_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("picket-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")
}

/// The HTTP client for enrollment: same trust roots, no redirects, and the
/// configured proxy when it applies to `server` (reqwest's own environment
/// lookup is off either way, so `proxy` is the only source of truth).
///
/// # Errors
/// If reqwest refuses the configuration.
pub fn server_http_client(
    tls: &rustls::ClientConfig,
    connect_timeout: Duration,
    proxy: Option<&ProxyConfig>,
    server: &Url,
) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(connect_timeout)
        .timeout(connect_timeout.saturating_mul(3))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("picket-agent/", env!("CARGO_PKG_VERSION")));
    let builder = match proxy.filter(|p| p.applies_to(server)) {
        Some(p) => {
            tracing::info!(proxy = %p.display(), source = p.source(), "reaching the server through a proxy");
            builder.proxy(p.to_reqwest()?)
        }
        None => builder.no_proxy(),
    };
    builder.build().context("cannot build the HTTP client")
}

/// `base` joined with a relative endpoint path, keeping any path prefix of `base`.
///
/// # Errors
/// If the result is not a valid URL.
pub fn endpoint(base: &Url, rel: &str) -> anyhow::Result<Url> {
    let mut b = base.clone();
    if !b.path().ends_with('/') {
        let p = format!("{}/", b.path());
        b.set_path(&p);
    }
    b.set_query(None);
    b.set_fragment(None);
    b.join(rel)
        .with_context(|| format!("cannot build the {rel} URL from {base}"))
}

/// Opens TCP (directly, or a tunnel through `proxy` when it applies to the
/// server), then TLS for `https`, then the WebSocket upgrade to
/// `{server}/v1/agent/connect`, with 4 KiB buffers and `max_frame_bytes` caps.
/// `deadline` bounds the proxy's answer (the caller bounds the whole).
///
/// # Errors
/// Any failure on the way, with context.
pub async fn connect_ws(
    server: &Url,
    tls: Arc<rustls::ClientConfig>,
    max_frame_bytes: usize,
    proxy: Option<&ProxyConfig>,
    deadline: Duration,
) -> anyhow::Result<Ws> {
    let http_url = endpoint(server, CONNECT_PATH)?;
    let port = http_url
        .port_or_known_default()
        .context("server URL has no port")?;
    let host = http_url.host_str().context("server URL has no host")?;
    // IPv6 literals come bracketed from the URL.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = match bare.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(bare.to_owned()).context("invalid server host name")?,
    };
    let tcp = match proxy.filter(|p| p.applies_to(&http_url)) {
        Some(p) => {
            tracing::debug!(proxy = %p.display(), "opening a tunnel through the proxy");
            p.connect(bare, port, deadline).await.with_context(|| {
                format!("cannot reach {} through the proxy", display_host(&http_url))
            })?
        }
        None => {
            let tcp = match bare.parse::<IpAddr>() {
                Ok(ip) => TcpStream::connect((ip, port)).await,
                Err(_) => TcpStream::connect((bare, port)).await,
            };
            tcp.with_context(|| format!("cannot connect to {}", display_host(&http_url)))?
        }
    };
    let _ = tcp.set_nodelay(true);
    let (stream, ws_scheme) = match http_url.scheme() {
        "https" => {
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .with_context(|| {
                    format!("TLS handshake with {} failed", display_host(&http_url))
                })?;
            (MaybeTlsStream::Rustls(tls), "wss")
        }
        "http" => (MaybeTlsStream::Plain(tcp), "ws"),
        other => bail!("unsupported scheme {other}"),
    };
    let mut ws_url = http_url.clone();
    ws_url
        .set_scheme(ws_scheme)
        .map_err(|()| anyhow::anyhow!("cannot derive the WebSocket URL"))?;
    let (ws, _resp) = tokio_tungstenite::client_async_with_config(
        ws_url.as_str(),
        stream,
        Some(ws_config(max_frame_bytes)),
    )
    .await
    .context("WebSocket upgrade failed")?;
    Ok(ws)
}

/// The WebSocket configuration: small buffers for a mostly idle connection,
/// messages and frames capped at `max_frame_bytes`.
pub fn ws_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_write_buffer_size(max_frame_bytes.saturating_mul(2).max(WS_BUFFER_BYTES * 2))
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// `host:port` of a URL, for messages (never its path or query).
pub fn display_host(u: &Url) -> String {
    match (u.host_str(), u.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => "<no host>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_path_prefix() {
        let u = Url::parse("https://p.example/picket").unwrap();
        assert_eq!(
            endpoint(&u, ENROLL_PATH).unwrap().as_str(),
            "https://p.example/picket/v1/agent/enroll"
        );
        let u = Url::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            endpoint(&u, CONNECT_PATH).unwrap().as_str(),
            "http://127.0.0.1:8080/v1/agent/connect"
        );
    }

    #[test]
    fn ca_bundle_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "nothing here\n").unwrap();
        let e = format!("{:#}", tls_config(Some(&p)).unwrap_err());
        assert!(e.contains("holds no certificate"), "{e}");
        let e = format!(
            "{:#}",
            tls_config(Some(&dir.path().join("missing.pem"))).unwrap_err()
        );
        assert!(e.contains("cannot open ca_bundle"), "{e}");
        assert!(tls_config(None).is_ok());
    }

    #[test]
    fn ws_buffers_are_small() {
        let c = ws_config(1 << 20);
        assert_eq!(c.read_buffer_size, 4096);
        assert_eq!(c.write_buffer_size, 4096);
        assert_eq!(c.max_message_size, Some(1 << 20));
        assert_eq!(c.max_frame_size, Some(1 << 20));
    }
}
