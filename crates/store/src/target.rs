//! Where the state lives: a SQLite file (one host, the default) or a PostgreSQL database
//! (several hosts, one of them active: see `lead`).

use std::path::{Path, PathBuf};

/// A state database to open. Its `Display` never shows a password.
#[derive(Clone)]
pub enum Target {
    Sqlite(PathBuf),
    Postgres(PgTarget),
}

/// A PostgreSQL state: the URL as configured (no password in it), the password given apart,
/// and the CA that signs the server's certificate.
#[derive(Clone)]
pub struct PgTarget {
    url: url::Url,
    password: Option<String>,
    ca_file: Option<PathBuf>,
}

/// Why a `[state] url` cannot be used, in words for the administrator.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("[state] url is not a URL: {0}")]
    NotAUrl(String),
    #[error("[state] url must start with postgres:// (or postgresql://); a SQLite state is set with `path`")]
    Scheme,
    #[error(
        "[state] url carries a password: remove it, and put it in [state] password_file or \
         $WRITEBACK_STATE_PASSWORD (a URL ends up in logs and process lists)"
    )]
    PasswordInUrl,
    #[error(
        "[state] url asks for sslmode={0}, which does not verify the server's certificate: use \
         verify-full (the default) with [state] ca_file; only a PostgreSQL on this host (localhost, \
         127.0.0.1, ::1 or a socket) may be reached without TLS (sslmode=disable)"
    )]
    WeakTls(String),
}

impl PgTarget {
    /// Checks `url` (see `TargetError`) and completes it: `sslmode=verify-full` unless it says
    /// otherwise, `sslrootcert` from `ca_file`.
    pub fn new(url: &str, password: Option<String>, ca_file: Option<&Path>) -> Result<PgTarget, TargetError> {
        let mut parsed = url::Url::parse(url).map_err(|e| TargetError::NotAUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(TargetError::Scheme);
        }
        if parsed.password().is_some() {
            return Err(TargetError::PasswordInUrl);
        }
        let mode = parsed.query_pairs().find(|(k, _)| k == "sslmode").map(|(_, v)| v.into_owned());
        let loopback = match parsed.host() {
            None => true,
            // A postgres:// URL's host is opaque to `url`: an address comes as a domain.
            Some(url::Host::Domain(d)) => {
                d == "localhost"
                    || d.starts_with("%2F")
                    || d.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        };
        match mode.as_deref() {
            None => {
                parsed.query_pairs_mut().append_pair("sslmode", "verify-full");
            }
            Some("verify-full" | "verify-ca") => {}
            Some("disable") if loopback => {}
            Some(other) => return Err(TargetError::WeakTls(other.to_string())),
        }
        if let Some(ca) = ca_file {
            let keep: Vec<(String, String)> =
                parsed.query_pairs().filter(|(k, _)| k != "sslrootcert").map(|(k, v)| (k.into(), v.into())).collect();
            parsed.query_pairs_mut().clear().extend_pairs(keep).append_pair("sslrootcert", &ca.to_string_lossy());
        }
        Ok(PgTarget { url: parsed, password, ca_file: ca_file.map(Path::to_path_buf) })
    }

    /// The URL sqlx connects with (the password in it): never shown or logged. Its sessions
    /// carry this process's `application_name`.
    pub(crate) fn connect_url(&self) -> String {
        let mut u = self.url.clone();
        u.query_pairs_mut().append_pair("application_name", crate::application_name());
        if let Some(p) = &self.password {
            // Only fails for URLs that cannot have a password (no host): a socket URL then
            // relies on peer authentication, as psql does.
            let _ = u.set_password(Some(p));
        }
        u.to_string()
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Sqlite(p) => write!(f, "{}", p.display()),
            // Without the query (the CA path is in `ca_file`) and without any password.
            Target::Postgres(pg) => {
                let u = &pg.url;
                let user = if u.username().is_empty() { String::new() } else { format!("{}@", u.username()) };
                let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                write!(f, "{}://{user}{}{port}{}", u.scheme(), u.host_str().unwrap_or(""), u.path())
            }
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({self})")
    }
}

/// `sqlite://` URL of a file path: percent-encoded, created if missing unless read-only.
pub(crate) fn sqlite_url(path: &Path, read_only: bool) -> String {
    let text = path.to_string_lossy();
    let encoded: String = url::form_urlencoded::byte_serialize(text.as_bytes()).collect();
    // form encoding writes spaces as '+', which a path may hold literally.
    let encoded = encoded.replace('+', "%20").replace("%2F", "/");
    format!("sqlite://{encoded}?mode={}", if read_only { "ro" } else { "rwc" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_postgres_url_verifies_tls_and_never_shows_a_password() {
        let t =
            PgTarget::new("postgres://writeback@db.corp.test/writeback", Some("s3cr:t@".into()), None).expect("valid");
        assert!(t.connect_url().contains("sslmode=verify-full"), "{}", t.connect_url());
        let shown = Target::Postgres(t.clone()).to_string();
        assert_eq!(shown, "postgres://writeback@db.corp.test/writeback");
        assert!(!format!("{:?}", Target::Postgres(t)).contains("s3cr"));
        let with_ca =
            PgTarget::new("postgres://w@db/x?sslmode=verify-ca", None, Some(Path::new("/etc/ca.pem"))).expect("valid");
        assert!(with_ca.connect_url().contains("sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem"));
        assert!(matches!(PgTarget::new("postgres://w:pw@db/x", None, None), Err(TargetError::PasswordInUrl)));
        assert!(matches!(PgTarget::new("postgres://w@db/x?sslmode=require", None, None), Err(TargetError::WeakTls(_))));
        assert!(matches!(PgTarget::new("postgres://w@db/x?sslmode=disable", None, None), Err(TargetError::WeakTls(_))));
        assert!(PgTarget::new("postgres://w@127.0.0.1/x?sslmode=disable", None, None).is_ok());
        assert!(matches!(PgTarget::new("mysql://w@db/x", None, None), Err(TargetError::Scheme)));
    }

    #[test]
    fn a_sqlite_path_is_encoded() {
        assert_eq!(sqlite_url(Path::new("/var/lib/a b/x?.db"), true), "sqlite:///var/lib/a%20b/x%3F.db?mode=ro");
    }
}
