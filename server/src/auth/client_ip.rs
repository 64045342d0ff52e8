//! The client's IP address, trusted-proxy aware: `X-Forwarded-For` is believed
//! only when the TCP peer is one of the configured `trusted_proxies`, and then
//! the client is the right-most address that is not itself a trusted proxy
//! (everything left of it could have been written by the client).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::AppState;
use crate::config::Cidr;

/// Longest `X-Forwarded-For` considered; a longer one is ignored (the peer is used).
const MAX_XFF_BYTES: usize = 2048;

/// Resolves the client IP from the peer address and the headers.
pub fn resolve(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer_ip = peer.map(|p| p.ip())?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer_ip) {
        return Some(peer_ip);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        let Ok(s) = v.to_str() else {
            return Some(peer_ip);
        };
        if s.len() > MAX_XFF_BYTES {
            return Some(peer_ip);
        }
        for part in s.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                // A garbled chain cannot be trusted past this proxy.
                Err(_) => return Some(peer_ip),
            }
        }
    }
    let mut client = peer_ip;
    for ip in hops.into_iter().rev() {
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// Extractor: the client IP as resolved by [`resolve`] with the configured proxies.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// As text, for the audit log.
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(ClientIp(resolve(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(xff: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        m
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let proxy: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        // A stranger cannot choose its IP.
        assert_eq!(
            resolve(Some(stranger), &h("198.51.100.1"), &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
        // Through the proxy: the right-most untrusted hop, not a spoofed left one.
        assert_eq!(
            resolve(Some(proxy), &h("1.1.1.1, 198.51.100.7, 10.0.0.9"), &trusted),
            Some("198.51.100.7".parse().unwrap())
        );
        // Garbage: the proxy itself.
        assert_eq!(
            resolve(Some(proxy), &h("nonsense"), &trusted),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            resolve(Some(proxy), &HeaderMap::new(), &trusted),
            Some("10.0.0.5".parse().unwrap())
        );
    }
}
