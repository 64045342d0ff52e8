//! Outbound HTTP CONNECT proxies, as corporate networks require.
//!
//! Why the agent does this itself: the WebSocket to the control plane is the
//! one connection that must cross the corporate edge, and tungstenite has no
//! proxy support. So the agent opens TCP to the proxy, asks for a tunnel with
//! `CONNECT host:port`, checks the answer (bounded in size and time), then
//! runs TLS and the WebSocket over the tunnel. Enrollment (reqwest) uses the
//! same [`ProxyConfig`] through `reqwest::Proxy`, with reqwest's own
//! environment lookup switched off, so there is exactly one source of truth.
//!
//! Where the proxy comes from, first match wins:
//!
//! | source | notes |
//! |---|---|
//! | `proxy_url` in `agent.toml` / `PICKET_AGENT_PROXY_URL` | the agent's own setting |
//! | `HTTPS_PROXY`, `https_proxy` | the usual variables |
//! | `ALL_PROXY`, `all_proxy` | fallback |
//!
//! Exceptions come from `no_proxy` in `agent.toml` / `PICKET_AGENT_NO_PROXY`,
//! else `NO_PROXY` / `no_proxy`: a comma-separated list of host names (which
//! also match their subdomains; a leading `.` is allowed), IP addresses,
//! optionally with `:port`, or `*` for "never use the proxy".
//!
//! Only `http://` proxy URLs are accepted (the tunnel itself carries TLS).
//! Credentials come from the URL's userinfo and are sent as
//! `Proxy-Authorization: Basic`; they are kept out of `Debug` output and every
//! message (only the proxy's `host:port` is ever shown).
//!
//! The SIEM connectors never use the proxy: the SIEM sits next to the agent
//! on the customer's network, and sending its bearer token through a
//! corporate egress proxy would widen who can see it.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use reqwest::Url;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zeroize::Zeroizing;

/// Largest CONNECT response head the agent reads before giving up.
pub const MAX_CONNECT_RESPONSE_BYTES: usize = 8 * 1024;

/// A validated proxy setting: where the proxy is, how to log in, and which
/// destinations bypass it.
#[derive(Clone)]
pub struct ProxyConfig {
    /// `http://host:port` of the proxy, without credentials.
    url: Url,
    /// Basic credentials from the URL's userinfo (percent-decoded).
    auth: Option<(String, Zeroizing<String>)>,
    /// Destinations that bypass the proxy.
    no_proxy: NoProxy,
    /// The key or variable the proxy came from, for messages.
    source: String,
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        f.debug_struct("ProxyConfig")
            .field("proxy", &self.display())
            .field("auth", &self.auth.is_some())
            .field("no_proxy", &self.no_proxy)
            .field("source", &self.source)
            .finish()
    }
}

/// Why a proxy URL was refused (the caller adds the key name).
fn bad(reason: impl Into<String>) -> String {
    reason.into()
}

impl ProxyConfig {
    /// Parses a proxy URL given by `source` (a key or variable name, used in
    /// messages). Accepts `http://[user[:password]@]host[:port]` (port 80 if
    /// none is given, as for any `http://` URL).
    ///
    /// # Errors
    /// A message saying what is wrong (without echoing credentials).
    pub fn parse(raw: &str, no_proxy: NoProxy, source: &str) -> Result<Self, String> {
        let mut url = Url::parse(raw.trim()).map_err(|e| bad(format!("not a valid URL ({e})")))?;
        if url.scheme() != "http" {
            return Err(bad(format!(
                "unsupported proxy scheme `{}` (expected http://; the tunnel itself carries TLS)",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("the proxy URL has no host"));
        }
        if (url.path() != "/" && !url.path().is_empty()) || url.query().is_some() {
            return Err(bad(
                "the proxy URL must be just http://[user:password@]host:port",
            ));
        }
        let auth = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = percent_decode(url.username())
                .ok_or_else(|| bad("the proxy user name is not valid percent-encoded UTF-8"))?;
            let pass = Zeroizing::new(
                percent_decode(url.password().unwrap_or_default())
                    .ok_or_else(|| bad("the proxy password is not valid percent-encoded UTF-8"))?,
            );
            Some((user, pass))
        };
        // Keep the credentials out of the URL from here on.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(ProxyConfig {
            url,
            auth,
            no_proxy,
            source: source.to_owned(),
        })
    }

    /// `host:port` of the proxy, for messages.
    pub fn display(&self) -> String {
        crate::net::display_host(&self.url)
    }

    /// The key or variable this proxy was configured by.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The bypass list.
    pub fn no_proxy(&self) -> &NoProxy {
        &self.no_proxy
    }

    /// Whether a connection to `target` goes through the proxy.
    pub fn applies_to(&self, target: &Url) -> bool {
        match (target.host_str(), target.port_or_known_default()) {
            (Some(h), port) => !self.no_proxy.matches(h, port),
            (None, _) => false,
        }
    }

    /// The `reqwest` proxy for this setting (credentials as basic auth).
    ///
    /// # Errors
    /// If reqwest refuses the URL.
    pub fn to_reqwest(&self) -> anyhow::Result<reqwest::Proxy> {
        let mut p = reqwest::Proxy::all(self.url.as_str())
            .with_context(|| format!("invalid proxy {} (from {})", self.display(), self.source))?;
        if let Some((user, pass)) = &self.auth {
            p = p.basic_auth(user, pass);
        }
        Ok(p)
    }

    /// `Proxy-Authorization` value, if credentials are configured.
    fn authorization(&self) -> Option<Zeroizing<String>> {
        self.auth.as_ref().map(|(user, pass)| {
            let raw = Zeroizing::new(format!("{user}:{}", pass.as_str()));
            Zeroizing::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())
            ))
        })
    }

    /// Opens TCP to the proxy and asks for a tunnel to `host:port`, within
    /// `deadline`. Returns the stream, ready for TLS or plain HTTP.
    ///
    /// # Errors
    /// Cannot reach the proxy, the proxy refuses (407 is reported as "proxy
    /// authentication required"), its answer is malformed, too large or late.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        deadline: Duration,
    ) -> anyhow::Result<TcpStream> {
        tokio::time::timeout(deadline, self.connect_inner(host, port))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the proxy {} did not open a tunnel within {} s",
                    self.display(),
                    deadline.as_secs()
                )
            })?
    }

    async fn connect_inner(&self, host: &str, port: u16) -> anyhow::Result<TcpStream> {
        let proxy_host = self.url.host_str().context("proxy URL has no host")?;
        let proxy_host = proxy_host.trim_start_matches('[').trim_end_matches(']');
        let proxy_port = self
            .url
            .port_or_known_default()
            .context("proxy URL has no port")?;
        let mut tcp = TcpStream::connect((proxy_host, proxy_port))
            .await
            .with_context(|| {
                format!(
                    "cannot connect to the proxy {} (from {})",
                    self.display(),
                    self.source
                )
            })?;
        let _ = tcp.set_nodelay(true);
        let authority = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            _ => format!(
                "{}:{port}",
                host.trim_start_matches('[').trim_end_matches(']')
            ),
        };
        let mut req = Zeroizing::new(format!(
            "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: picket-agent/{}\r\n",
            env!("CARGO_PKG_VERSION")
        ));
        if let Some(auth) = self.authorization() {
            req.push_str("Proxy-Authorization: ");
            req.push_str(&auth);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes())
            .await
            .with_context(|| format!("cannot write to the proxy {}", self.display()))?;
        drop(req);
        let head = read_head(&mut tcp)
            .await
            .with_context(|| format!("bad answer from the proxy {}", self.display()))?;
        let status = parse_status(&head)
            .with_context(|| format!("bad answer from the proxy {}", self.display()))?;
        match status {
            200..=299 => Ok(tcp),
            407 => bail!(
                "proxy authentication required (HTTP 407) by the proxy {}: check the user and \
                 password in {}",
                self.display(),
                self.source
            ),
            other => bail!(
                "the proxy {} refused the tunnel to {authority} with HTTP {other}",
                self.display()
            ),
        }
    }
}

/// Reads the response head byte by byte (so nothing after it is consumed),
/// up to [`MAX_CONNECT_RESPONSE_BYTES`].
async fn read_head(tcp: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    loop {
        let n = tcp.read(&mut byte).await.context("read failed")?;
        if n == 0 {
            bail!("the proxy closed the connection before answering");
        }
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() >= MAX_CONNECT_RESPONSE_BYTES {
            bail!("the answer head is larger than {MAX_CONNECT_RESPONSE_BYTES} bytes");
        }
    }
}

/// The status code of an HTTP/1.x response head.
fn parse_status(head: &[u8]) -> anyhow::Result<u16> {
    let line_end = head
        .windows(2)
        .position(|w| w == b"\r\n")
        .unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).context("status line is not UTF-8")?;
    let mut parts = line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x status line");
    }
    parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..=599).contains(c))
        .context("no valid status code")
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// One `NO_PROXY` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// `*`: nothing goes through the proxy.
    All,
    /// A host name (lower case, no leading dot): matches itself and its subdomains.
    Domain(String, Option<u16>),
    /// An IP address: matches exactly.
    Ip(IpAddr, Option<u16>),
}

/// The bypass list (`NO_PROXY`): destinations reached directly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

impl NoProxy {
    /// Parses a comma-separated list; empty items are ignored.
    pub fn parse(list: &str) -> Self {
        let entries = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                if item == "*" {
                    return Entry::All;
                }
                let (host, port) = split_port(item);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                match host.parse::<IpAddr>() {
                    Ok(ip) => Entry::Ip(ip, port),
                    Err(_) => Entry::Domain(
                        host.trim_start_matches("*.")
                            .trim_start_matches('.')
                            .to_ascii_lowercase(),
                        port,
                    ),
                }
            })
            .collect();
        NoProxy { entries }
    }

    /// Whether `host` (a name or IP literal, IPv6 possibly bracketed) at
    /// `port` bypasses the proxy.
    pub fn matches(&self, host: &str, port: Option<u16>) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        let port_ok = |p: &Option<u16>| p.is_none() || *p == port;
        self.entries.iter().any(|e| match e {
            Entry::All => true,
            Entry::Ip(want, p) => ip == Some(*want) && port_ok(p),
            Entry::Domain(d, p) => {
                !d.is_empty()
                    && ip.is_none()
                    && port_ok(p)
                    && (host == *d
                        || (host.len() > d.len()
                            && host.ends_with(d.as_str())
                            && host.as_bytes()[host.len() - d.len() - 1] == b'.'))
            }
        })
    }
}

/// `host:port` → (`host`, `Some(port)`); a bare host or IPv6 literal → (`host`, `None`).
fn split_port(item: &str) -> (&str, Option<u16>) {
    if let Some(rest) = item.strip_prefix('[') {
        // [v6]:port
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    match item.rsplit_once(':') {
        // More than one colon: a bare IPv6 address.
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (item, None),
        },
        _ => (item, None),
    }
}

/// Picks the proxy from the agent's own key (given as `(value, key name)`)
/// and the standard variables read through `env`, and the bypass list from
/// `no_proxy_key` or `NO_PROXY` / `no_proxy`.
///
/// # Errors
/// The name of the key or variable whose value is invalid, and why.
pub fn resolve(
    own: Option<(String, String)>,
    no_proxy_key: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProxyConfig>, (String, String)> {
    let get = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let no_proxy = no_proxy_key
        .or_else(|| get("NO_PROXY"))
        .or_else(|| get("no_proxy"))
        .map(|l| NoProxy::parse(&l))
        .unwrap_or_default();
    let chosen = own.or_else(|| {
        ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .find_map(|k| get(k).map(|v| (v, (*k).to_owned())))
    });
    match chosen {
        None => Ok(None),
        Some((value, key)) => ProxyConfig::parse(&value, no_proxy, &key)
            .map(Some)
            .map_err(|reason| (key, reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(s: &str) -> NoProxy {
        NoProxy::parse(s)
    }

    #[test]
    fn no_proxy_matches_hosts_suffixes_ips_and_star() {
        let n = np(" example.com, .corp.local ,10.1.2.3, [::1], siem:8089 ,");
        assert!(n.matches("example.com", Some(443)));
        assert!(n.matches("API.Example.com", Some(443)));
        assert!(!n.matches("notexample.com", Some(443)));
        assert!(n.matches("corp.local", None));
        assert!(n.matches("a.b.corp.local", None));
        assert!(!n.matches("corp.localhost", None));
        assert!(n.matches("10.1.2.3", Some(1)));
        assert!(!n.matches("10.1.2.4", Some(1)));
        assert!(n.matches("[::1]", Some(8443)));
        assert!(n.matches("siem", Some(8089)));
        assert!(!n.matches("siem", Some(443)));
        assert!(np("*").matches("anything", None));
        assert!(!np("").matches("anything", None));
        assert!(np("*.example.org").matches("x.example.org", None));
        // An IP literal is not a "domain" match for a name entry.
        assert!(!np("1.2.3").matches("4.1.2.3", None));
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.clone())
    }

    #[test]
    fn resolution_order_and_bypass() {
        let env = env_of(&[
            ("HTTPS_PROXY", "http://envproxy:3128"),
            ("ALL_PROXY", "http://allproxy:1"),
            ("NO_PROXY", "internal.example"),
        ]);
        let p = resolve(None, None, &env).unwrap().unwrap();
        assert_eq!(p.display(), "envproxy:3128");
        assert_eq!(p.source(), "HTTPS_PROXY");
        let target = Url::parse("https://picket.internal.example/").unwrap();
        assert!(!p.applies_to(&target));
        assert!(p.applies_to(&Url::parse("https://picket.example.com/").unwrap()));

        let own = Some((
            "http://u:p%40ss@own:8080".to_owned(),
            "proxy_url".to_owned(),
        ));
        let p = resolve(own, Some("*".into()), &env).unwrap().unwrap();
        assert_eq!(p.source(), "proxy_url");
        assert_eq!(p.display(), "own:8080");
        assert!(!p.applies_to(&target));
        let (u, pw) = p.auth.as_ref().unwrap();
        assert_eq!((u.as_str(), pw.as_str()), ("u", "p@ss"));
        assert!(!format!("{p:?}").contains("p@ss"));
        assert!(!p.url.as_str().contains("p%40ss"));

        let env = env_of(&[("all_proxy", "http://lower:9")]);
        assert_eq!(
            resolve(None, None, &env).unwrap().unwrap().source(),
            "all_proxy"
        );
        assert!(resolve(None, None, &env_of(&[])).unwrap().is_none());
    }

    #[test]
    fn bad_proxy_urls_name_the_key() {
        let env = env_of(&[("HTTPS_PROXY", "socks5://x:1")]);
        let (key, reason) = resolve(None, None, &env).unwrap_err();
        assert_eq!(key, "HTTPS_PROXY");
        assert!(reason.contains("socks5"), "{reason}");
        let (key, _) = resolve(
            Some(("not a url".into(), "proxy_url".into())),
            None,
            &env_of(&[]),
        )
        .unwrap_err();
        assert_eq!(key, "proxy_url");
        // The message never echoes a password.
        let (_, reason) = resolve(
            Some(("http://u:secretpw@h:1/path".into(), "proxy_url".into())),
            None,
            &env_of(&[]),
        )
        .unwrap_err();
        assert!(!reason.contains("secretpw"), "{reason}");
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status(b"HTTP/1.1 200 Connection established\r\n\r\n").unwrap(),
            200
        );
        assert_eq!(parse_status(b"HTTP/1.0 407 Auth\r\n\r\n").unwrap(), 407);
        assert!(parse_status(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_status(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    /// A one-shot fake proxy answering `answer` to the first request, returning what it read.
    async fn fake_proxy(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (port, h)
    }

    #[tokio::test]
    async fn connect_sends_auth_and_maps_407() {
        let (port, h) = fake_proxy(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let p = ProxyConfig::parse(
            &format!("http://alice:s3cret@127.0.0.1:{port}"),
            NoProxy::default(),
            "proxy_url",
        )
        .unwrap();
        let e = format!(
            "{:#}",
            p.connect("picket.example", 443, Duration::from_secs(5))
                .await
                .unwrap_err()
        );
        assert!(e.contains("proxy authentication required"), "{e}");
        assert!(e.contains("proxy_url") && !e.contains("s3cret"), "{e}");
        let req = h.await.unwrap();
        assert!(
            req.starts_with("CONNECT picket.example:443 HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.contains("Host: picket.example:443\r\n"), "{req}");
        // base64("alice:s3cret")
        assert!(
            req.contains("Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"),
            "{req}"
        );

        let (port, _h) = fake_proxy(b"HTTP/1.1 200 OK\r\n\r\n").await;
        let p = ProxyConfig::parse(
            &format!("http://127.0.0.1:{port}"),
            NoProxy::default(),
            "HTTPS_PROXY",
        )
        .unwrap();
        assert!(p.connect("::1", 8443, Duration::from_secs(5)).await.is_ok());

        let (port, _h) = fake_proxy(b"HTTP/1.1 403 Forbidden\r\n\r\n").await;
        let p = ProxyConfig::parse(
            &format!("http://127.0.0.1:{port}"),
            NoProxy::default(),
            "HTTPS_PROXY",
        )
        .unwrap();
        let e = format!(
            "{:#}",
            p.connect("h", 1, Duration::from_secs(5)).await.unwrap_err()
        );
        assert!(e.contains("HTTP 403"), "{e}");
    }

    #[tokio::test]
    async fn oversized_or_silent_answers_are_bounded() {
        static BIG: [u8; 9000] = [b'a'; 9000];
        let (port, _h) = fake_proxy(&BIG).await;
        let p = ProxyConfig::parse(
            &format!("http://127.0.0.1:{port}"),
            NoProxy::default(),
            "proxy_url",
        )
        .unwrap();
        let e = format!(
            "{:#}",
            p.connect("h", 1, Duration::from_secs(5)).await.unwrap_err()
        );
        assert!(e.contains("larger than 8192"), "{e}");

        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let _keep = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let p = ProxyConfig::parse(
            &format!("http://127.0.0.1:{port}"),
            NoProxy::default(),
            "proxy_url",
        )
        .unwrap();
        let e = format!(
            "{:#}",
            p.connect("h", 1, Duration::from_millis(300))
                .await
                .unwrap_err()
        );
        assert!(e.contains("did not open a tunnel"), "{e}");
    }
}
