//! writeback-graph: reads what writeback needs from Microsoft Graph.
//!
//! Architecture invariant: this crate is the only one that speaks HTTP to Graph. It returns
//! the core's model types; a listing that did not complete is an error, never a short list.

mod assertion;
mod client;
mod cloud;
mod delta;
mod read;

pub use assertion::Certificate;
pub use client::{check_transport, GraphClient, Stats};
pub use cloud::{DefaultChange, NewGroupDefault, GROUP_UNIFIED_TEMPLATE};
pub use delta::{is_expired, Collection, DeltaRound, Removed, USER_DELTA_SELECT};
pub use read::{PageSink, GROUP_SELECT, MEMBER_SELECT};

pub use writeback_core::Secret;
use writeback_core::{expiry_check, Check};

/// The cloud environments and their endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Global,
    UsGov,
    UsGovDod,
    China,
}

impl Environment {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "global" => Environment::Global,
            "usgov" => Environment::UsGov,
            "usgov-dod" => Environment::UsGovDod,
            "china" => Environment::China,
            _ => return None,
        })
    }

    /// (login authority, Graph endpoint).
    pub fn endpoints(self) -> (&'static str, &'static str) {
        match self {
            Environment::Global => ("https://login.microsoftonline.com", "https://graph.microsoft.com"),
            Environment::UsGov => ("https://login.microsoftonline.us", "https://graph.microsoft.us"),
            Environment::UsGovDod => ("https://login.microsoftonline.us", "https://dod-graph.microsoft.us"),
            Environment::China => ("https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
        }
    }
}

/// How the app proves who it is to the token endpoint.
#[derive(Clone, Debug)]
pub enum Credential {
    Secret(Secret),
    /// A client assertion signed with this certificate's key.
    Certificate(std::sync::Arc<Certificate>),
}

#[derive(Clone, Debug)]
pub struct GraphConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub credential: Credential,
    pub login_url: String,
    pub graph_url: String,
    /// Retries of one request on throttling or a lost connection.
    pub max_retries: u32,
    /// When the client secret expires (seconds since 1970), as the admin recorded it: Entra
    /// shows it when the secret is made, and an app cannot read its own registration without
    /// Application.Read.All, a permission writeback does not ask for.
    pub secret_expires: Option<i64>,
    /// Group properties beyond `GROUP_SELECT` that rules and mappings read (checked names:
    /// `writeback_core::properties`); `$select`ed and kept in `CloudObject::extra`.
    pub group_properties: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("Graph authentication failed: {0}")]
    Auth(String),
    #[error("could not reach Graph: {0}")]
    Connect(String),
    /// Graph's (or the token endpoint's) certificate is not trusted: retrying does not help.
    #[error("Graph's TLS certificate is not trusted: {0}")]
    Tls(String),
    #[error("Graph answered {status} {code} for {path}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        path: String,
        /// The nested `innerError` codes, outer to inner (errors.md: use the most detailed one
        /// understood).
        inner: Vec<String>,
        /// The answer's `Retry-After`, if it gave one.
        retry_after: Option<std::time::Duration>,
    },
    #[error("Graph sent something writeback cannot use: {0}")]
    Invalid(String),
    #[error("Graph configuration: {0}")]
    Config(String),
}

impl GraphConfig {
    /// Whether the credential is still good for a while (`writeback check`): the certificate's
    /// notAfter, or the client secret's expiry as recorded in the configuration.
    pub fn expiry_check(&self, now: i64) -> Check {
        const ROTATE_CERT: &str = "register a new certificate on the app, point client_certificate_file at it, \
            and reload (docs/setup.md, Rotating)";
        const ROTATE_SECRET: &str = "add a new client secret to the app, write it to client_secret_file, set \
            client_secret_expires, and reload (docs/setup.md, Rotating)";
        match (&self.credential, self.secret_expires) {
            (Credential::Certificate(c), _) => expiry_check("the client certificate", c.not_after(), now, ROTATE_CERT),
            (Credential::Secret(_), Some(t)) => expiry_check("the client secret", t, now, ROTATE_SECRET),
            (Credential::Secret(_), None) => Check::new(
                "Graph credential expiry",
                Ok("unknown for a client secret: set [cloud] client_secret_expires (the date Entra showed) and \
                    check warns before it expires"
                    .into()),
            ),
        }
    }

    /// When the credential expires (seconds since 1970), when that is known (`/metrics`).
    pub fn expires_at(&self) -> Option<i64> {
        match &self.credential {
            Credential::Certificate(c) => Some(c.not_after()),
            Credential::Secret(_) => self.secret_expires,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let cfg = GraphConfig {
            group_properties: Vec::new(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: Credential::Secret(s),
            login_url: "https://login.microsoftonline.com".into(),
            graph_url: "https://graph.microsoft.com".into(),
            max_retries: 3,
            secret_expires: None,
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[test]
    fn plain_http_only_to_loopback() {
        let mk = |g: &str| GraphConfig {
            group_properties: Vec::new(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            credential: Credential::Secret(Secret::new("x")),
            login_url: g.into(),
            graph_url: g.into(),
            max_retries: 0,
            secret_expires: None,
        };
        assert!(GraphClient::new(mk("http://127.0.0.1:8080")).is_ok());
        assert!(GraphClient::new(mk("http://graph.example.com")).is_err());
        assert!(GraphClient::new(mk("https://graph.microsoft.com")).is_ok());
    }
}
