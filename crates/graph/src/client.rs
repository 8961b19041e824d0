//! The HTTP side: tokens (client credentials), retries with `Retry-After`, paging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::{Credential, GraphConfig, GraphError};

/// Renew a token this long before it expires.
const RENEW_MARGIN: Duration = Duration::from_secs(300);
/// Never sleep longer than this for one `Retry-After`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Counters a run reports (and the daemon exports).
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub throttled: AtomicU64,
    pub token_requests: AtomicU64,
}

impl Stats {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

pub struct GraphClient {
    pub(crate) http: reqwest::Client,
    pub(crate) cfg: GraphConfig,
    token: Mutex<Option<(String, Instant)>>,
    pub stats: Stats,
}

impl GraphClient {
    pub fn new(cfg: GraphConfig) -> Result<Self, GraphError> {
        for url in [&cfg.graph_url, &cfg.login_url] {
            check_transport(url)?;
        }
        // One crypto provider for the whole process (ring); installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("writeback/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(100))
            // Graph does not redirect; a redirect would take the request (and the token) to a
            // URL `check_origin` never saw.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| GraphError::Connect(format!("could not set up HTTP: {e}")))?;
        Ok(GraphClient { http, cfg, token: Mutex::new(None), stats: Stats::default() })
    }

    pub fn graph_url(&self) -> &str {
        &self.cfg.graph_url
    }

    /// A valid access token, from the cache or the token endpoint.
    pub async fn token(&self) -> Result<String, GraphError> {
        let mut cached = self.token.lock().await;
        if let Some((t, exp)) = cached.as_ref() {
            if *exp > Instant::now() + RENEW_MARGIN {
                return Ok(t.clone());
            }
        }
        let url = format!("{}/{}/oauth2/v2.0/token", self.cfg.login_url, self.cfg.tenant_id);
        let scope = format!("{}/.default", self.cfg.graph_url);
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.cfg.client_id.clone()),
            ("scope", scope),
        ];
        let hint = match &self.cfg.credential {
            Credential::Secret(s) => {
                form.push(("client_secret", s.expose().to_string()));
                "check [cloud] tenant_id, client_id and the client secret"
            }
            Credential::Certificate(c) => {
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", c.assertion(&self.cfg.client_id, &url)?));
                "check [cloud] tenant_id, client_id, and that the certificate in \
                    client_certificate_file is registered on the app with its private key"
            }
        };
        // The token endpoint throttles and fails transiently too (429, 5xx, a lost connection):
        // retried with back-off like any Graph request; a refusal (4xx) is final.
        let mut attempt = 0u32;
        let (status, body) = loop {
            self.stats.token_requests.fetch_add(1, Ordering::Relaxed);
            let sent = self.http.post(&url).form(&form).send().await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) if attempt < self.cfg.max_retries && (e.is_timeout() || e.is_connect()) => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(transport_error(&e, format!("the token endpoint {url}"))),
            };
            let status = resp.status();
            if (status.as_u16() == 429 || status.is_server_error()) && attempt < self.cfg.max_retries {
                attempt += 1;
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                let wait = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()))
                    .unwrap_or_else(|| backoff(attempt));
                tracing::info!(
                    status = status.as_u16(),
                    wait_s = wait.as_secs_f64(),
                    "the token endpoint asked to retry later"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let body: Value = resp.json().await.unwrap_or_default();
            break (status, body);
        };
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(GraphError::Connect(format!(
                "the token endpoint {url} kept failing (HTTP {status}) after {attempt} retries"
            )));
        }
        if !status.is_success() {
            let desc = body["error_description"].as_str().or(body["error"].as_str()).unwrap_or("no error description");
            let first_line = desc.lines().next().unwrap_or(desc);
            return Err(GraphError::Auth(format!(
                "the token endpoint refused the app (HTTP {status}): {first_line} — {hint}"
            )));
        }
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| GraphError::Auth("the token endpoint answered without an access_token".into()))?;
        let lifetime = body["expires_in"].as_u64().unwrap_or(3599);
        let exp = Instant::now() + Duration::from_secs(lifetime);
        *cached = Some((token.to_string(), exp));
        Ok(token.to_string())
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    /// One request with Graph's retry rules: 429/503/504 wait for `Retry-After` (or back off),
    /// a 401 renews the token once; everything else is returned as an error.
    pub async fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, GraphError> {
        self.check_origin(url)?;
        let mut renewed = false;
        let mut attempt = 0u32;
        loop {
            let token = self.token().await?;
            let mut req = self.http.request(method.clone(), url).bearer_auth(&token);
            if let Some(b) = body {
                req = req.json(b);
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if attempt < self.cfg.max_retries && (e.is_timeout() || e.is_connect()) => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => return Err(transport_error(&e, format!("{method} {}", path_of(url)))),
            };
            let status = resp.status().as_u16();
            if matches!(status, 429 | 503 | 504) && attempt < self.cfg.max_retries {
                attempt += 1;
                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                let wait = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()))
                    .unwrap_or_else(|| backoff(attempt));
                tracing::info!(status, wait_s = wait.as_secs_f64(), url = %path_of(url), "Graph asked to retry later");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status == 401 && !renewed {
                renewed = true;
                self.forget_token().await;
                continue;
            }
            if status == 204 {
                return Ok(None);
            }
            let wait = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
            // Bytes, not text: serde_json checks the UTF-8 itself, and a lossy copy of every
            // page cost a tenth of a large read's CPU.
            let body = resp
                .bytes()
                .await
                .map_err(|e| GraphError::Connect(format!("reading {}: {}", path_of(url), without_url(&e))))?;
            if !(200..300).contains(&status) {
                let mut e = api_error(status, &String::from_utf8_lossy(&body), url);
                if let GraphError::Api { retry_after, .. } = &mut e {
                    *retry_after = wait;
                }
                return Err(e);
            }
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| GraphError::Invalid(format!("{} answered with invalid JSON: {e}", path_of(url))))?;
            return Ok(Some(v));
        }
    }

    /// The bearer token goes only where `graph_url` points: a URL Graph (or the state) hands
    /// over — `@odata.nextLink`, a stored delta link — is followed only when its scheme, host
    /// and port are `graph_url`'s, so a crafted link cannot send the token elsewhere, or over
    /// plain http.
    fn check_origin(&self, url: &str) -> Result<(), GraphError> {
        let origin = |u: &str| url::Url::parse(u).map(|p| p.origin());
        match (origin(url), origin(&self.cfg.graph_url)) {
            (Ok(link), Ok(graph)) if link == graph && link.is_tuple() => Ok(()),
            (Ok(link), _) => Err(GraphError::Invalid(format!(
                "a link to {} is not at [cloud] graph_url ({}): not followed, the access token is never sent elsewhere",
                link.ascii_serialization(),
                self.cfg.graph_url
            ))),
            (Err(e), _) => Err(GraphError::Invalid(format!("a link Graph sent is not a URL ({e}): not followed"))),
        }
    }

    pub async fn get(&self, url: &str) -> Result<Value, GraphError> {
        self.request(reqwest::Method::GET, url, None)
            .await?
            .ok_or_else(|| GraphError::Invalid(format!("{} answered with no body", path_of(url))))
    }

    /// Every item of a collection, following every `@odata.nextLink` as given.
    pub async fn get_all(&self, url: &str) -> Result<Vec<Value>, GraphError> {
        let mut items = Vec::new();
        let mut next = Some(url.to_string());
        while let Some(u) = next.take() {
            let page = self.get(&u).await?;
            collect_page(page, &u, &mut items, &mut next)?;
        }
        Ok(items)
    }
}

/// Takes the items and the next link out of one page (moved, not copied).
pub(crate) fn collect_page(
    mut page: Value,
    url: &str,
    items: &mut Vec<Value>,
    next: &mut Option<String>,
) -> Result<(), GraphError> {
    match page.get_mut("value").map(Value::take) {
        Some(Value::Array(value)) => items.extend(value),
        _ => return Err(GraphError::Invalid(format!("{} answered without a value array", path_of(url)))),
    }
    *next = page["@odata.nextLink"].as_str().map(str::to_string);
    Ok(())
}

/// Refuses plain HTTP except to loopback (the simulator).
/// A Graph or login URL is HTTPS, or plain HTTP to a loopback address (the simulator): the one
/// rule, also for the configuration check.
pub fn check_transport(url: &str) -> Result<(), GraphError> {
    let parsed = url::Url::parse(url).map_err(|e| GraphError::Config(format!("'{url}' is not a URL: {e}")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(GraphError::Config(format!(
            "'{url}' must use https:// (plain http is allowed only to a loopback address, for the simulator)"
        ))),
    }
}

/// `Retry-After` in seconds, which Graph may give as a decimal ("2.128", throttling.md); `None`
/// when absent or unreadable (the caller backs off instead).
pub(crate) fn retry_after(header: Option<&str>) -> Option<Duration> {
    let secs: f64 = header?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

/// Exponential back-off with jitter (throttling.md: without Retry-After, back off
/// exponentially): 0.5 s × 2^attempt, ±25%, at most [`MAX_RETRY_AFTER`]. The jitter keeps
/// concurrent requests that were throttled together from coming back together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = Duration::from_millis(500u64 << attempt.min(7)).min(MAX_RETRY_AFTER);
    // A random number from the standard library: a fresh RandomState is seeded per instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let spread = (h.finish() % 501) as f64 / 1000.0; // 0.0..=0.5
    base.mul_f64(0.75 + spread).min(MAX_RETRY_AFTER)
}

/// The path of a URL, for messages (query strings can be long; tokens are never in URLs).
pub(crate) fn path_of(url: &str) -> String {
    url::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_else(|_| url.to_string())
}

/// A request that got no answer, as the kind it is: a certificate rustls would not accept (told
/// by its type, found in the error's causes, not by its wording) is a TLS trust problem.
fn transport_error(e: &reqwest::Error, what: String) -> GraphError {
    if untrusted_certificate(e) {
        GraphError::Tls(format!(
            "{what}: {} — the system's CA roots must include the CA of Graph's certificate (or of the \
             TLS-inspecting proxy in between)",
            without_url(e)
        ))
    } else if let Some(hint) = network_hint(e) {
        GraphError::Connect(format!("{what}: {} — {hint}", without_url(e)))
    } else if what.starts_with("the token endpoint") {
        GraphError::Connect(format!("could not reach {what}: {}", without_url(e)))
    } else {
        GraphError::Connect(format!("{what}: {}", without_url(e)))
    }
}

/// What to check when Graph could not be reached: a name that does not resolve, or a proxy
/// (reqwest takes HTTPS_PROXY and NO_PROXY from the environment). hyper's connect errors are
/// not public types, so the resolver's failure is told by its words: this only adds a hint to
/// the message, it decides nothing.
fn network_hint(e: &reqwest::Error) -> Option<String> {
    let text = without_url(e).to_ascii_lowercase();
    let proxy = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"].iter().find_map(|v| std::env::var(v).ok());
    if text.contains("dns error") || text.contains("failed to lookup address") {
        return Some(match proxy {
            Some(_) => "the name does not resolve: check DNS, or the proxy in $HTTPS_PROXY".into(),
            None => "the name does not resolve: check DNS; if Graph is reached through a proxy, set \
                     HTTPS_PROXY (and NO_PROXY for the DC)"
                .into(),
        });
    }
    // The proxy's URL can hold a password: it is named, never printed.
    (e.is_connect() && proxy.is_some())
        .then(|| "the connection went through the proxy in $HTTPS_PROXY: check it".into())
}

/// Whether a rustls certificate error is among the causes of `e`. An `io::Error` hides the
/// error it wraps from `source()`, so it is opened with `get_ref`.
fn untrusted_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if untrusted_certificate(inner) {
                return true;
            }
        }
        next = err.source();
    }
    false
}

fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

pub(crate) fn api_error(status: u16, body: &str, url: &str) -> GraphError {
    let v: Value = serde_json::from_str(body).unwrap_or_default();
    let mut inner = Vec::new();
    let mut e = &v["error"];
    for _ in 0..8 {
        e = match (e.get("innerError"), e.get("innererror")) {
            (Some(i), _) | (None, Some(i)) => i,
            _ => break,
        };
        if let Some(c) = e["code"].as_str() {
            inner.push(c.to_string());
        }
    }
    GraphError::Api {
        status,
        code: v["error"]["code"].as_str().unwrap_or("unknown").to_string(),
        message: v["error"]["message"].as_str().unwrap_or(body).chars().take(500).collect(),
        path: path_of(url),
        inner,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_certificate_error_wrapped_in_io_errors_is_found_by_its_type() {
        let bad = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::other(std::io::Error::other(bad));
        assert!(super::untrusted_certificate(&wrapped));
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!super::untrusted_certificate(&refused));
        let other = std::io::Error::other(rustls::Error::General("certificate".into()));
        assert!(!super::untrusted_certificate(&other), "the wording does not count");
    }

    use super::*;
    use crate::{Credential, Secret};

    fn client(graph: &str) -> GraphClient {
        GraphClient::new(GraphConfig {
            group_properties: Vec::new(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: Credential::Secret(Secret::new("x")),
            login_url: "https://login.microsoftonline.com".into(),
            graph_url: graph.into(),
            max_retries: 0,
            secret_expires: None,
        })
        .expect("client")
    }

    #[test]
    fn retry_after_takes_decimal_seconds_and_backoff_has_jitter() {
        assert_eq!(retry_after(Some("2.128")), Some(Duration::from_millis(2128)));
        assert_eq!(retry_after(Some(" 7 ")), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(Some("9999")), Some(MAX_RETRY_AFTER));
        for bad in [None, Some(""), Some("soon"), Some("-1"), Some("NaN")] {
            assert_eq!(retry_after(bad), None, "{bad:?}");
        }
        let waits: Vec<Duration> = (0..20).map(|_| backoff(3)).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_secs(3) && *w <= Duration::from_secs(5)), "{waits:?}");
        assert!(waits.iter().any(|w| *w != waits[0]), "jitter: {waits:?}");
    }

    #[test]
    fn links_are_followed_only_to_graph_url() {
        let c = client("https://graph.microsoft.com");
        assert!(c.check_origin("https://graph.microsoft.com/v1.0/groups?$skiptoken=x").is_ok());
        assert!(c.check_origin("https://GRAPH.microsoft.com:443/beta/groups/delta?$deltatoken=y").is_ok());
        for bad in [
            "https://evil.example/v1.0/groups",
            "http://graph.microsoft.com/v1.0/groups",
            "https://graph.microsoft.com:8443/v1.0/groups",
            "https://graph.microsoft.com.evil.example/v1.0/groups",
            "https://graph.microsoft.com@evil.example/v1.0/groups",
            "not a url",
        ] {
            assert!(c.check_origin(bad).is_err(), "{bad}");
        }
        let sim = client("http://127.0.0.1:8080");
        assert!(sim.check_origin("http://127.0.0.1:8080/v1.0/groups").is_ok());
        assert!(sim.check_origin("http://localhost:8080/v1.0/groups").is_err(), "another host name, even for loopback");
    }
}
