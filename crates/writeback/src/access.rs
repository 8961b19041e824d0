//! Who may talk to the daemon's listener. A web page open on the host can make the browser send
//! requests to 127.0.0.1 (cross-site POSTs), and a DNS name rebound to 127.0.0.1 lets a page
//! read the answers; so the listener answers only requests addressed to a host name it knows,
//! takes commands only from same-origin JSON requests, and, when it listens beyond loopback,
//! only from holders of its token.

use std::net::SocketAddr;

use base64::Engine;
use writeback_core::Secret;

/// The listener's rules, fixed at start.
pub struct Access {
    /// Host names and addresses (lower case, no port) requests may be addressed to, each with
    /// the port a browser page of this listener has (its own, or the one `allowed_hosts` names:
    /// a reverse proxy's).
    hosts: Vec<(String, u16)>,
    token: Option<Secret>,
}

/// The host part of a `Host` header or an authority: without the port, brackets kept off
/// IPv6 addresses, lower case.
fn host_part(authority: &str) -> String {
    split_port(authority).0
}

/// (host, port) of `host[:port]` or `[v6][:port]`.
fn split_port(authority: &str) -> (String, Option<u16>) {
    let a = authority.trim();
    let (host, port) = if let Some(v6) = a.strip_prefix('[') {
        let (h, rest) = v6.split_once(']').unwrap_or((v6, ""));
        (h, rest.strip_prefix(':'))
    } else if a.matches(':').count() > 1 {
        (a, None) // a bare IPv6 address
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    (host.trim_end_matches('.').to_ascii_lowercase(), port.and_then(|p| p.parse().ok()))
}

impl Access {
    /// `listen` is the bound address; `allowed_hosts` are `[daemon] allowed_hosts` (names, or
    /// `name:port` when pages come through a proxy on another port).
    pub fn new(listen: SocketAddr, allowed_hosts: &[String], token: Option<Secret>) -> Access {
        let own = listen.port();
        let mut hosts: Vec<(String, u16)> =
            ["localhost", "127.0.0.1", "::1"].iter().map(|h| (h.to_string(), own)).collect();
        if !listen.ip().is_unspecified() {
            hosts.push((listen.ip().to_string(), own));
        }
        for h in allowed_hosts {
            let (host, port) = split_port(h);
            if !host.is_empty() {
                hosts.push((host, port.unwrap_or(own)));
            }
        }
        Access { hosts, token }
    }

    /// True when the request names a host the listener knows (a rebound DNS name is another;
    /// the port is not checked: the connection came to the listener's).
    pub fn host_allowed(&self, host: Option<&str>) -> bool {
        host.map(host_part).is_some_and(|h| self.hosts.iter().any(|(known, _)| *known == h))
    }

    /// True when a browser's `Origin` is this listener's own page (scheme aside: a proxy may
    /// add TLS), or no browser sent one.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        match url::Url::parse(origin) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                let (Some(host), Some(port)) = (u.host_str(), u.port_or_known_default()) else { return false };
                let host = host_part(host);
                self.hosts.iter().any(|(h, p)| *h == host && *p == port)
            }
            _ => false, // "null" (a sandboxed frame, a file) and anything else
        }
    }

    /// True when no token is set, or `Authorization` carries it: `Bearer <token>` (Prometheus,
    /// scripts), or Basic with any user name and the token as password (a browser's prompt).
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(token) = &self.token else { return true };
        let Some(given) = authorization.map(str::trim) else { return false };
        let presented = if let Some(b) = given.strip_prefix("Bearer ") {
            b.trim().as_bytes().to_vec()
        } else if let Some(b) = given.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(b.trim()).unwrap_or_default();
            match decoded.iter().position(|c| *c == b':') {
                Some(i) => decoded[i + 1..].to_vec(),
                None => return false,
            }
        } else {
            return false;
        };
        same(&presented, token.expose().as_bytes())
    }
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(listen: &str, token: Option<&str>) -> Access {
        let listen: SocketAddr = listen.parse().expect("address");
        Access::new(
            listen,
            &["writeback.corp.example:443".into(), "monitor.corp.example".into()],
            token.map(Secret::new),
        )
    }

    #[test]
    fn only_known_host_names_are_answered() {
        let a = access("127.0.0.1:9464", None);
        for ok in
            ["127.0.0.1:9464", "localhost:9464", "LOCALHOST", "[::1]:9464", "writeback.corp.example", "localhost."]
        {
            assert!(a.host_allowed(Some(ok)), "{ok}");
        }
        for bad in ["evil.example:9464", "127.0.0.1.evil.example", "localhost.evil.example", "", "10.0.0.5:9464"] {
            assert!(!a.host_allowed(Some(bad)), "{bad}");
        }
        assert!(!a.host_allowed(None), "HTTP/1.0 without Host");
        assert!(access("10.0.0.5:9464", None).host_allowed(Some("10.0.0.5:9464")), "the listen address");
        assert!(!access("0.0.0.0:9464", None).host_allowed(Some("0.0.0.0:9464")));
    }

    #[test]
    fn only_same_origin_browsers_may_post() {
        let a = access("127.0.0.1:9464", None);
        assert!(a.origin_allowed(None), "curl sends no Origin");
        assert!(a.origin_allowed(Some("http://127.0.0.1:9464")));
        assert!(a.origin_allowed(Some("http://[::1]:9464")));
        assert!(a.origin_allowed(Some("https://writeback.corp.example")), "through a proxy on 443");
        assert!(a.origin_allowed(Some("http://monitor.corp.example:9464")));
        for bad in [
            "https://evil.example",
            "null",
            "file://",
            "http://127.0.0.1.evil.example:9464",
            "http://127.0.0.1:8080",
            "http://localhost",
            "http://monitor.corp.example",
        ] {
            assert!(!a.origin_allowed(Some(bad)), "{bad}");
        }
    }

    #[test]
    fn the_token_is_needed_when_set() {
        assert!(access("127.0.0.1:1", None).authorized(None));
        let a = access("0.0.0.0:1", Some("s3cret-token-0123456789"));
        assert!(!a.authorized(None));
        assert!(a.authorized(Some("Bearer s3cret-token-0123456789")));
        assert!(!a.authorized(Some("Bearer s3cret-token-012345678")));
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret-token-0123456789");
        assert!(a.authorized(Some(&format!("Basic {basic}"))));
        let wrong = base64::engine::general_purpose::STANDARD.encode("s3cret-token-0123456789");
        assert!(!a.authorized(Some(&format!("Basic {wrong}"))), "no user:password form");
        assert!(!a.authorized(Some("s3cret-token-0123456789")));
    }
}
