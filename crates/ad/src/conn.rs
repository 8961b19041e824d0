//! Connecting: TLS always (LDAPS or StartTLS), certificate verification always, a simple or a
//! Kerberos (SASL GSSAPI) bind, failover over a list of DCs, rootDSE and schema features.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use writeback_core::SchemaFeatures;

use crate::{AdError, Password};

#[derive(Clone, Debug)]
pub struct AdConfig {
    /// DCs in order of preference: `ldaps://host[:port]` or `ldap://host` (then StartTLS).
    pub urls: Vec<String>,
    pub auth: Auth,
    /// The CA that signs the DCs' certificates; the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Values per member modify.
    pub member_chunk: usize,
    pub timeout: Duration,
    /// A Global Catalog (`ldaps://dc:3269`, or `ldap://dc:3268` with StartTLS): members and
    /// parent groups of other domains of the forest are looked up there.
    pub gc_url: Option<String>,
    /// Attributes read with every owned group beyond the ones writeback always manages (what
    /// `[[mappings]]` set: `info`, `extensionAttributeN`).
    pub also_read: Vec<String>,
}

/// How the connection authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// A simple bind (over TLS only) with a DN or a UPN and its password.
    Simple { bind_dn: String, password: Password },
    /// SASL GSSAPI with the process's Kerberos credentials: the caller points the Kerberos
    /// library at a keytab (`KRB5_CLIENT_KTNAME`) before any thread starts. `spn_host` names
    /// the DC in its service principal `ldap/<host>` when the URL holds an address, not a name.
    Kerberos { spn_host: Option<String>, principal: String },
}

impl Auth {
    /// Who binds, for messages (never the password).
    pub fn describe(&self) -> String {
        match self {
            Auth::Simple { bind_dn, .. } => bind_dn.clone(),
            Auth::Kerberos { principal, .. } => format!("{principal} (Kerberos)"),
        }
    }
}

/// The host part of an LDAP URL: what the DC's service principal names.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    rest.split(':').next().unwrap_or(rest)
}

/// One bound connection.
pub struct AdConn {
    pub(crate) ldap: ldap3::Ldap,
    pub url: String,
    pub default_nc: String,
    pub schema_nc: String,
    pub dns_host_name: String,
    pub schema: SchemaFeatures,
    pub(crate) member_chunk: usize,
    /// LDAP requests sent since connecting (benchmarks and logs report them).
    pub(crate) ops: u64,
    /// The Global Catalog, when configured: searched from the forest's root (an empty base).
    pub(crate) gc: Option<Box<AdConn>>,
    /// The SIDs of the forest's domains (from the crossRefs of the configuration partition);
    /// empty when they could not be read.
    pub forest_domains: Vec<String>,
    /// Asked before every operation that writes: the caller's proof that it may still write
    /// (its lead); a refusal stops the run at once.
    pub(crate) gate: Option<Arc<dyn WriteGate>>,
    /// See [`AdConfig::also_read`].
    pub(crate) also_read: Vec<String>,
}

/// What a writer checks before each batch of AD writes (one planned operation): that it still
/// holds the lead (`Err` says why not).
pub trait WriteGate: Send + Sync {
    /// The full check (it may ask the state's server).
    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>>;

    /// A check without I/O, made before every LDAP write inside an operation (a large group's
    /// member changes are many writes): the lead's own deadline.
    fn still(&self) -> Result<(), String>;
}

fn tls_config(ca_file: &PathBuf) -> Result<Arc<rustls::ClientConfig>, AdError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| AdError::Config(format!("cannot read ca_file {}: {e}", ca_file.display())))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| AdError::Config(format!("ca_file {} has a bad certificate: {e}", ca_file.display())))?;
        roots.add(cert).map_err(|e| AdError::Config(format!("ca_file {}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(AdError::Config(format!("ca_file {} holds no PEM certificate", ca_file.display())));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AdError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// A connection error as the kind it is: a certificate rustls would not accept (told by its
/// type, not its wording) is a TLS trust problem, with what to do about it.
fn connect_error(url: &str, e: &ldap3::LdapError) -> AdError {
    let rustls_error = match e {
        ldap3::LdapError::Rustls { source } => Some(source),
        ldap3::LdapError::Io { source } => source.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match rustls_error {
        // A plain-LDAP answer to a TLS hello is not a TLS record.
        Some(rustls::Error::InvalidMessage(_)) => AdError::Connect(format!(
            "{url}: {e} — the server did not answer in TLS: is this a plain LDAP port (389)? Use \
             ldaps://host (636), or ldap://host (389, upgraded with StartTLS)"
        )),
        Some(rustls::Error::InvalidCertificate(_)) => AdError::Tls(format!(
            "{url}: {e} — set [ad] ca_file to the CA that issued the DC's \
                certificate, and use a host name the certificate names"
        )),
        // A DC's plain LDAP port may also drop a TLS hello it cannot parse (Samba resets it).
        _ if url.starts_with("ldaps://") && dropped_at_hello(e) => AdError::Connect(format!(
            "{url}: {e} — the server closed the connection at the TLS hello: is this a plain LDAP \
             port (389)? Use ldaps://host (636), or ldap://host (389, upgraded with StartTLS)"
        )),
        _ => AdError::Connect(format!("{url}: {e}")),
    }
}

/// The connection was reset or closed before TLS was up (told by the I/O error's kind).
fn dropped_at_hello(e: &ldap3::LdapError) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    let ldap3::LdapError::Io { source } = e else { return false };
    matches!(source.kind(), ConnectionReset | ConnectionAborted | UnexpectedEof)
}

async fn bind(ldap: &mut ldap3::Ldap, auth: &Auth, url: &str) -> Result<(), AdError> {
    match auth {
        Auth::Simple { bind_dn, password } => {
            ldap.simple_bind(bind_dn, password.expose()).await.and_then(|r| r.success()).map(|_| ()).map_err(
                |e| match e {
                    ldap3::LdapError::LdapResult { result } => AdError::Bind(format!(
                        "{} as {bind_dn} — check [ad] bind_dn and the password",
                        crate::describe(result.rc, &result.text),
                    )),
                    other => connect_error(url, &other),
                },
            )
        }
        Auth::Kerberos { spn_host, .. } => {
            let host = spn_host.as_deref().unwrap_or_else(|| url_host(url));
            kerberos_bind(ldap, host).await
        }
    }
}

#[cfg(feature = "kerberos")]
async fn kerberos_bind(ldap: &mut ldap3::Ldap, host: &str) -> Result<(), AdError> {
    let hint = format!(
        "check [ad] keytab (klist -k shows its principal), that krb5.conf names a KDC for the realm, \
         and that the DC's service principal is ldap/{host} (set [ad] kerberos_host when [ad] url holds an address)"
    );
    ldap.sasl_gssapi_bind(host).await.and_then(|r| r.success()).map(|_| ()).map_err(|e| match e {
        ldap3::LdapError::LdapResult { result } => {
            AdError::Bind(format!("Kerberos: {} — {hint}", crate::describe(result.rc, &result.text)))
        }
        ldap3::LdapError::GssapiOperationError(m) => AdError::Bind(format!("Kerberos: {m} — {hint}")),
        other => AdError::Connect(format!("Kerberos bind to {host}: {other}")),
    })
}

#[cfg(not(feature = "kerberos"))]
async fn kerberos_bind(_: &mut ldap3::Ldap, _: &str) -> Result<(), AdError> {
    Err(AdError::Config(
        "[ad] auth = \"kerberos\" needs a writeback built with Kerberos support (cargo build --features kerberos, \
         with libkrb5-dev installed)"
            .into(),
    ))
}

impl AdConn {
    /// Every write from now on first asks `gate` (see `WriteGate`).
    pub fn set_gate(&mut self, gate: Arc<dyn WriteGate>) {
        self.gate = Some(gate);
    }

    /// `WriteGate::still` of the gate, if any.
    pub(crate) fn may_write(&self) -> Result<(), String> {
        self.gate.as_ref().map_or(Ok(()), |g| g.still())
    }

    /// The connection, for one more LDAP request.
    pub(crate) fn op(&mut self) -> &mut ldap3::Ldap {
        self.ops += 1;
        &mut self.ldap
    }

    /// LDAP requests sent on this connection so far.
    pub fn operations(&self) -> u64 {
        self.ops
    }

    /// Counts the requests of another connection of the same cycle as this one's.
    pub fn add_operations(&mut self, n: u64) {
        self.ops += n;
    }

    /// Who this connection is bound as, as the DC sees it (LDAP "Who am I?", RFC 4532; Windows
    /// DCs answer it, Samba does not).
    pub async fn whoami(&mut self) -> Result<String, AdError> {
        let (exop, _) = self
            .op()
            .extended(ldap3::exop::WhoAmI)
            .await
            .and_then(|r| r.success())
            .map_err(|e| AdError::ldap("who am I", e))?;
        let id = exop.val.map(|v| String::from_utf8_lossy(&v).into_owned()).unwrap_or_default();
        Ok(id.strip_prefix("u:").or_else(|| id.strip_prefix("dn:")).unwrap_or(&id).to_string())
    }

    /// Connects to the first DC that answers and binds.
    pub async fn connect(cfg: &AdConfig) -> Result<AdConn, AdError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if cfg.urls.is_empty() {
            return Err(AdError::Config("[ad] url is empty".into()));
        }
        let tls = cfg.ca_file.as_ref().map(tls_config).transpose()?;
        let (mut failures, mut untrusted) = (Vec::new(), false);
        for url in &cfg.urls {
            match Self::connect_one(cfg, url, tls.clone()).await {
                Ok(mut conn) => {
                    conn.forest_domains = conn.forest_domain_sids().await;
                    if let Some(gc_url) = &cfg.gc_url {
                        // A GC that cannot be reached fails the connection: without it, members
                        // of other domains would read as gone (a partial read is not the truth).
                        let mut gc = Self::connect_one(cfg, gc_url, tls.clone()).await.map_err(|e| match e {
                            AdError::Connect(m) => AdError::Connect(format!("the Global Catalog [ad] gc_url: {m}")),
                            AdError::Tls(m) => AdError::Tls(format!("the Global Catalog [ad] gc_url: {m}")),
                            other => other,
                        })?;
                        gc.default_nc = String::new();
                        conn.gc = Some(Box::new(gc));
                    }
                    return Ok(conn);
                }
                Err(e @ (AdError::Bind(_) | AdError::Config(_))) => return Err(e),
                Err(e) => {
                    tracing::warn!(%url, error = %e, "DC not reachable, trying the next");
                    untrusted |= matches!(e, AdError::Tls(_));
                    failures.push(match e {
                        AdError::Connect(m) | AdError::Tls(m) => m,
                        other => other.to_string(),
                    });
                }
            }
        }
        // No DC answered; if one was refused for its certificate, that is what must be fixed.
        let all = failures.join("; ");
        Err(if untrusted { AdError::Tls(all) } else { AdError::Connect(all) })
    }

    async fn connect_one(cfg: &AdConfig, url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<AdConn, AdError> {
        let starttls = if url.starts_with("ldaps://") {
            false
        } else if url.starts_with("ldap://") {
            true
        } else {
            return Err(AdError::Config(format!(
                "'{url}' must start with ldaps:// or ldap:// (ldap:// is always upgraded with StartTLS)"
            )));
        };
        let mut settings = LdapConnSettings::new().set_conn_timeout(cfg.timeout).set_starttls(starttls);
        if let Some(tls) = tls {
            settings = settings.set_config(tls);
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url).await.map_err(|e| connect_error(url, &e))?;
        ldap3::drive!(conn);
        ldap.with_timeout(cfg.timeout);
        bind(&mut ldap, &cfg.auth, url).await?;
        let mut me = AdConn {
            ldap,
            url: url.to_string(),
            default_nc: String::new(),
            schema_nc: String::new(),
            dns_host_name: String::new(),
            schema: SchemaFeatures::default(),
            member_chunk: cfg.member_chunk.max(1),
            ops: 0,
            gc: None,
            forest_domains: Vec::new(),
            gate: None,
            also_read: cfg.also_read.clone(),
        };
        me.read_root_dse().await?;
        me.schema = me.detect_schema().await?;
        Ok(me)
    }

    /// The SIDs of the forest's domains: the `nCName` of each domain's crossRef (systemFlags
    /// FLAG_CR_NTDS_DOMAIN, 2) carries the domain's SID in its extended DN form.
    async fn forest_domain_sids(&mut self) -> Vec<String> {
        let Ok(dse) = self.root_dse(vec!["configurationNamingContext"]).await else { return Vec::new() };
        let Some(config) = dse.attrs.get("configurationNamingContext").and_then(|v| v.first()).cloned() else {
            return Vec::new();
        };
        let filter = "(&(objectClass=crossRef)(systemFlags:1.2.840.113556.1.4.803:=2))";
        let found = self
            .op()
            .with_controls(vec![crate::read::extended_dn()])
            .search(&format!("CN=Partitions,{config}"), ldap3::Scope::OneLevel, filter, vec!["nCName"])
            .await
            .and_then(|r| r.success());
        let Ok((entries, _)) = found else { return Vec::new() };
        let mut sids: Vec<String> = entries
            .into_iter()
            .map(SearchEntry::construct)
            .filter_map(|e| e.attrs.get("nCName").and_then(|v| v.first()).and_then(|v| crate::parse_extended_dn(v).1))
            .collect();
        sids.sort();
        sids
    }

    /// The Global Catalog's URL, when one is connected.
    pub fn gc_url(&self) -> Option<&str> {
        self.gc.as_deref().map(|g| g.url.as_str())
    }

    /// The rootDSE with the given attributes.
    pub(crate) async fn root_dse(&mut self, attrs: Vec<&str>) -> Result<SearchEntry, AdError> {
        let (entries, _) = self
            .op()
            .search("", Scope::Base, "(objectClass=*)", attrs)
            .await
            .and_then(|r| r.success())
            .map_err(|e| AdError::ldap("reading the rootDSE", e))?;
        entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| AdError::Connect("the DC returned no rootDSE".into()))
    }

    async fn read_root_dse(&mut self) -> Result<(), AdError> {
        let e = self.root_dse(vec!["defaultNamingContext", "schemaNamingContext", "dnsHostName"]).await?;
        let first = |k: &str| e.attrs.get(k).and_then(|v| v.first()).cloned().unwrap_or_default();
        self.default_nc = first("defaultNamingContext");
        self.schema_nc = first("schemaNamingContext");
        self.dns_host_name = first("dnsHostName");
        if self.default_nc.is_empty() {
            return Err(AdError::Connect(
                "the rootDSE has no defaultNamingContext: is this an Active Directory DC?".into(),
            ));
        }
        Ok(())
    }

    async fn detect_schema(&mut self) -> Result<SchemaFeatures, AdError> {
        let filter = "(|(lDAPDisplayName=msDS-ExternalDirectoryObjectId)(lDAPDisplayName=mailNickname)\
                      (lDAPDisplayName=msExchRecipientTypeDetails)(lDAPDisplayName=extensionAttribute1))";
        let base = self.schema_nc.clone();
        let (entries, _) = self
            .op()
            .search(&base, Scope::OneLevel, filter, vec!["lDAPDisplayName"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| AdError::ldap("reading the schema", e))?;
        let names: Vec<String> = entries
            .into_iter()
            .map(SearchEntry::construct)
            .filter_map(|e| e.attrs.get("lDAPDisplayName").and_then(|v| v.first()).cloned())
            .map(|n| n.to_ascii_lowercase())
            .collect();
        let has = |n: &str| names.iter().any(|x| x == n);
        Ok(SchemaFeatures {
            external_directory_object_id: has("msds-externaldirectoryobjectid"),
            exchange: has("mailnickname") && has("msexchrecipienttypedetails"),
            extension_attributes: has("extensionattribute1"),
        })
    }

    /// Preflight: the OU exists (else an error), and whether the account may create groups in it.
    pub async fn can_create_groups_in(&mut self, ou: &str) -> Result<bool, AdError> {
        let (entries, _) = self
            .op()
            .search(
                ou,
                Scope::Base,
                "(objectClass=*)",
                vec!["allowedChildClassesEffective", "allowedAttributesEffective"],
            )
            .await
            .and_then(|r| r.success())
            .map_err(|e| crate::missing_ou(ou, e))?;
        let e = entries
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .ok_or_else(|| AdError::Config(format!("{ou} does not exist")))?;
        let can_create = e
            .attrs
            .get("allowedChildClassesEffective")
            .is_some_and(|v| v.iter().any(|c| c.eq_ignore_ascii_case("group")));
        Ok(can_create)
    }

    /// What the account may not write on owned groups (`allowedAttributesEffective` of the
    /// first owned group found): (that group's DN, missing attributes). `None` when no owned
    /// group exists yet to ask about.
    pub async fn missing_group_rights(
        &mut self,
        ous: &[String],
        needed: &[&str],
    ) -> Result<Option<(String, Vec<String>)>, AdError> {
        for ou in ous {
            let opts = ldap3::SearchOptions::new().sizelimit(1);
            let res = self
                .op()
                .with_search_options(opts)
                .search(
                    ou,
                    Scope::Subtree,
                    "(&(objectClass=group)(adminDescription=Group_*))",
                    vec!["allowedAttributesEffective"],
                )
                .await
                .map_err(|e| AdError::ldap(format!("reading rights in {ou}"), e))?;
            // 4 = sizeLimitExceeded: one entry is all we asked for.
            if res.1.rc != 0 && res.1.rc != 4 {
                continue;
            }
            let Some(e) = res.0.into_iter().find(|e| !e.is_ref()).map(SearchEntry::construct) else { continue };
            let have: Vec<String> = e
                .attrs
                .get("allowedAttributesEffective")
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| a.to_ascii_lowercase())
                .collect();
            let missing =
                needed.iter().filter(|n| !have.contains(&n.to_ascii_lowercase())).map(|n| n.to_string()).collect();
            return Ok(Some((e.dn, missing)));
        }
        Ok(None)
    }

    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn spn_host_from_url() {
        assert_eq!(url_host("ldaps://dc1.corp.example.com:636"), "dc1.corp.example.com");
        assert_eq!(url_host("ldap://dc1.corp.example.com"), "dc1.corp.example.com");
        assert_eq!(url_host("ldaps://[::1]:636/"), "::1");
        assert_eq!(url_host("ldaps://10.0.0.1"), "10.0.0.1");
    }
}
