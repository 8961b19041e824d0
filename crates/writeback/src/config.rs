//! The configuration file (TOML). Unknown keys are errors; secrets come from the environment
//! or from files, never from the TOML itself, and never print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;
use writeback_core::{Allow, CnFormat, MappedAttribute, OnRemoval, PlannerConfig};
use writeback_graph::{Certificate, Credential, Environment, GraphConfig, Secret};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub cloud: CloudSection,
    pub ad: AdSection,
    #[serde(default)]
    pub writeback: WritebackSection,
    #[serde(default)]
    pub state: StateSection,
    #[serde(default)]
    pub daemon: DaemonSection,
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Attributes set from templates over group properties.
    #[serde(default)]
    pub mappings: Vec<writeback_core::Mapping>,
    /// Scoping rules, in order; the first that matches a group decides.
    #[serde(default)]
    pub rules: Vec<writeback_core::Rule>,
    /// The directory of the config file: relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSection {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub client_certificate_file: Option<PathBuf>,
    /// The date the client secret expires ("2027-06-30", as Entra showed it): `check` and
    /// `/metrics` warn ahead of it. A certificate's own expiry is read from the certificate.
    pub client_secret_expires: Option<String>,
    #[serde(default = "default_environment")]
    pub environment: String,
    pub graph_url: Option<String>,
    pub login_url: Option<String>,
}

/// Where a TOML error is and what it is, without the line itself: a secret pasted into the
/// file (an unknown key such as `client_secret = "…"`) must not reach the log or the journal.
fn where_(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_string(),
    }
}

/// `client_secret_expires` as seconds since 1970: a date (the end of that day, UTC) or a UTC time.
pub fn expiry_date(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let full = if t.len() == 10 { format!("{t}T23:59:59Z") } else { t.to_string() };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .ok_or_else(|| format!("[cloud] client_secret_expires = \"{text}\" is not a date: write it as \"2027-06-30\""))
}

fn default_environment() -> String {
    "global".into()
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdSection {
    pub url: OneOrMany,
    #[serde(default)]
    pub auth: AdAuthKind,
    /// With `auth = "simple"`: a DN or a UPN.
    #[serde(default)]
    pub bind_dn: String,
    pub bind_password_file: Option<PathBuf>,
    /// With `auth = "kerberos"`: the keytab holding the service account's keys.
    pub keytab: Option<PathBuf>,
    /// With `auth = "kerberos"`: a krb5.conf other than the system's.
    pub krb5_conf: Option<PathBuf>,
    /// With `auth = "kerberos"`: the DC's host name in its SPN `ldap/<host>`, when `url` holds an address.
    pub kerberos_host: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub target_ou: String,
    /// OUs where groups written earlier (with the marker, e.g. by Azure AD Connect) are found
    /// and adopted; they stay there unless `[writeback] move_adopted = true`.
    #[serde(default)]
    pub adopt_from: Vec<String>,
    /// Member values per LDAP modify.
    #[serde(default = "default_member_chunk")]
    pub member_chunk: usize,
    /// A Global Catalog (`ldaps://dc:3269`, or `ldap://dc:3268` with StartTLS; the TLS rules of
    /// `url`): members and parent groups from the forest's other domains are looked up there.
    #[serde(default)]
    pub gc_url: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdAuthKind {
    #[default]
    Simple,
    Kerberos,
}

fn default_member_chunk() -> usize {
    500
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WritebackSection {
    pub cn_format: CnFormat,
    pub delete_threshold: usize,
    pub member_removal_threshold: usize,
    /// A run creating more groups stops before writing (`sync --allow-creates` goes past it).
    pub create_threshold: usize,
    /// A group losing more than this percentage (and more than 100) of its members in one run
    /// keeps them; the rest of the run is applied.
    pub member_removal_percent: usize,
    pub on_out_of_scope: OnRemoval,
    pub on_soft_delete: OnRemoval,
    pub write_owners: bool,
    /// Move groups adopted from `[ad] adopt_from` into the target OU (same objectGUID and SID).
    pub move_adopted: bool,
    /// Cloud ids whose members may change although the AD group is nested into a protected group.
    pub allow_protected_nesting: Vec<writeback_core::CloudId>,
    /// OUs in which the original AD groups of cloud groups converted from AD (Source of
    /// Authority) are taken over in place, by SID. Empty: none is.
    pub converted_ous: Vec<String>,
    /// Groups taken over in converted_ous get writeback's cn and sAMAccountName instead of
    /// keeping AD's (they stay in their OU either way).
    pub rename_converted: bool,
    /// Write device members synced from AD (hybrid joined) as their computer accounts.
    pub write_devices: bool,
    /// "link" (a nested group is a member only when written back itself) or "flatten" (its
    /// transitive members that exist in AD are written instead).
    pub nested: writeback_core::Nested,
}

impl Default for WritebackSection {
    fn default() -> Self {
        let d = PlannerConfig::with_target_ou("");
        WritebackSection {
            cn_format: d.cn_format,
            delete_threshold: d.delete_threshold,
            member_removal_threshold: d.member_removal_threshold,
            create_threshold: d.create_threshold,
            member_removal_percent: d.member_removal_percent,
            on_out_of_scope: d.on_out_of_scope,
            on_soft_delete: d.on_soft_delete,
            write_owners: false,
            move_adopted: false,
            allow_protected_nesting: Vec::new(),
            converted_ous: Vec::new(),
            rename_converted: false,
            write_devices: false,
            nested: d.nested,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// The SQLite file (one host); unused when `url` is set.
    pub path: PathBuf,
    /// `postgres://user@host/db`: the state in PostgreSQL, for instances on several hosts
    /// (docs/high-availability.md). No password in it: `password_file` or
    /// `$WRITEBACK_STATE_PASSWORD`.
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The CA that signs the PostgreSQL server's certificate (`sslmode=verify-full`).
    pub ca_file: Option<PathBuf>,
    /// Days the audit trail keeps each change (`writeback log`).
    pub audit_days: u32,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection { path: "writeback.db".into(), url: None, password_file: None, ca_file: None, audit_days: 90 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    pub interval: String,
    pub full_interval: String,
    pub listen: String,
    /// Host names (beyond the listen address, localhost, 127.0.0.1 and ::1) that requests to
    /// the listener may be addressed to: the names Prometheus or a browser use for this host.
    pub allowed_hosts: Vec<String>,
    /// A file whose first line is the token every request but `/healthz` must carry; required
    /// when `listen` is not a loopback address.
    pub token_file: Option<PathBuf>,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            interval: "60s".into(),
            full_interval: "24h".into(),
            listen: "127.0.0.1:9464".into(),
            allowed_hosts: Vec::new(),
            token_file: None,
        }
    }
}

/// `[alerts]`: where the daemon says that an incident started or cleared.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A JSON POST per notice (https://, or http:// to loopback). Its path often holds the
    /// hook's secret (Teams, Slack): only its scheme, host and port are ever shown.
    pub webhook: Option<String>,
    /// `smtps://host[:465]` or `smtp://host[:587]` (STARTTLS required).
    pub smtp: Option<String>,
    pub from: Option<String>,
    pub to: Vec<String>,
    /// The SMTP user; its password from $WRITEBACK_SMTP_PASSWORD or `smtp_password_file`.
    pub smtp_user: Option<String>,
    pub smtp_password_file: Option<PathBuf>,
    /// Certificates (PEM) trusted for the webhook and the SMTP server besides the system's.
    pub ca_file: Option<PathBuf>,
    /// How long a group stays in error, or cycles keep failing, before it is an incident.
    pub after: String,
    /// Where relative paths are resolved (the config file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook: None,
            smtp: None,
            from: None,
            to: Vec::new(),
            smtp_user: None,
            smtp_password_file: None,
            ca_file: None,
            after: "1h".into(),
            base_dir: PathBuf::new(),
        }
    }
}

impl AlertsConfig {
    pub fn after(&self) -> anyhow::Result<Duration> {
        humantime::parse_duration(&self.after).with_context(|| format!("[alerts] after = \"{}\"", self.after))
    }

    pub fn smtp_password(&self) -> anyhow::Result<Secret> {
        let file = self.smtp_password_file.as_ref().map(|p| self.base_dir.join(p));
        Ok(Secret::new(secret("WRITEBACK_SMTP_PASSWORD", file, "[alerts] smtp_password_file")?))
    }

    /// The certificates of `ca_file` (DER), none without it.
    pub fn extra_roots(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        use rustls_pki_types::pem::PemObject;
        let Some(file) = &self.ca_file else { return Ok(Vec::new()) };
        let file = self.base_dir.join(file);
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow::anyhow!("[alerts] ca_file {}: {e}", file.display()))?;
        if certs.is_empty() {
            bail!("[alerts] ca_file {} holds no certificate", file.display());
        }
        Ok(certs.into_iter().map(|c| c.to_vec()).collect())
    }

    /// What is wrong in the section (the webhook shown by its origin only).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(w) = &self.webhook {
            if let Err(e) = writeback_graph::check_transport(w) {
                let shown = url_origin(w);
                out.push(match e {
                    _ if url::Url::parse(w).is_err() => "[alerts] webhook is not a URL".to_string(),
                    _ => format!("[alerts] webhook {shown}… must use https:// (http:// only to a loopback address)"),
                });
            }
        }
        if let Some(s) = &self.smtp {
            // Never echoed: a password pasted into the URL must not reach the log.
            match url::Url::parse(s) {
                Ok(u) if !u.username().is_empty() || u.password().is_some() => out.push(
                    "[alerts] smtp must not hold a user or password: use smtp_user and smtp_password_file".into(),
                ),
                Ok(u) if matches!(u.scheme(), "smtps" | "smtp") && u.host_str().is_some() => {}
                _ => out.push("[alerts] smtp must be smtps://host[:465] (TLS) or smtp://host[:587] (STARTTLS)".into()),
            }
            if self.from.is_none() || self.to.is_empty() {
                out.push("[alerts] smtp needs from = \"…\" and to = [\"…\"]".into());
            }
            if self.smtp_user.is_some() && self.smtp_password().is_err() {
                out.push("[alerts] smtp_user needs a password: $WRITEBACK_SMTP_PASSWORD or smtp_password_file".into());
            }
        }
        if let Err(e) = self.after() {
            out.push(format!("{e:#}"));
        }
        if let Err(e) = self.extra_roots() {
            out.push(format!("{e:#}"));
        }
        out
    }
}

/// A URL's scheme, host and port (not its path or query, which may hold a secret).
pub fn url_origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "(not a URL)".into(),
    }
}

/// The shortest token the listener accepts: a guessable one protects nothing.
const MIN_TOKEN: usize = 16;

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the config file {} (set it with -c or $WRITEBACK_CONFIG)", path.display())
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let cfg =
            Config::parse(&text, base_dir).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), where_(&text, &e)))?;
        let mut problems = crate::config_check::problems(&cfg);
        problems.extend(crate::config_check::files(&cfg));
        if !problems.is_empty() {
            bail!("{}: {}", path.display(), problems.join("\n  "));
        }
        Ok(cfg)
    }

    /// The settings in `text`, with relative paths taken from `base_dir`; not validated.
    /// (A parse error quotes the line it is on: shown through [`where_`], never as it is.)
    pub fn parse(text: &str, base_dir: PathBuf) -> Result<Config, toml::de::Error> {
        let mut cfg: Config = toml::from_str(text)?;
        cfg.alerts.base_dir = base_dir.clone();
        cfg.base_dir = base_dir;
        Ok(cfg)
    }

    /// The settings can be used (`config_check::problems`): all problems in one error.
    #[cfg(test)]
    fn validate(&self) -> anyhow::Result<()> {
        let problems = crate::config_check::problems(self);
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("\n"))
        }
    }

    /// The environment the Kerberos library reads: the keytab to get tickets from (MIT's
    /// client keytab initiation, renewed by the library as tickets expire), a ticket cache private
    /// to this process, and krb5.conf. Set once, before any thread starts.
    pub fn kerberos_env(&self) -> Vec<(&'static str, String)> {
        if self.ad.auth != AdAuthKind::Kerberos {
            return Vec::new();
        }
        let mut env = vec![("KRB5CCNAME", format!("MEMORY:writeback-{}", std::process::id()))];
        if let Some(k) = &self.ad.keytab {
            let keytab = self.resolve(k);
            warn_if_readable_by_others(&keytab);
            env.push(("KRB5_CLIENT_KTNAME", format!("FILE:{}", keytab.display())));
        }
        if let Some(c) = &self.ad.krb5_conf {
            env.push(("KRB5_CONFIG", self.resolve(c).display().to_string()));
        }
        env
    }

    /// The principal writeback binds as with Kerberos: the keytab's first, as MIT's client
    /// keytab initiation picks it.
    fn keytab_principal(&self) -> anyhow::Result<String> {
        let path = self.resolve(self.ad.keytab.as_deref().context("[ad] keytab is missing")?);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read [ad] keytab {}", path.display()))?;
        let entries = writeback_core::keytab::entries(&bytes)
            .map_err(|e| anyhow::anyhow!("[ad] keytab {}: {e}", path.display()))?;
        match entries.first() {
            Some(e) => Ok(e.principal.clone()),
            None => bail!("[ad] keytab {} holds no keys: export the service account's keys into it", path.display()),
        }
    }

    /// The listener's token (`[daemon] token_file`), if one is configured.
    pub fn daemon_token(&self) -> anyhow::Result<Option<Secret>> {
        let Some(file) = &self.daemon.token_file else { return Ok(None) };
        let file = self.resolve(file);
        warn_if_readable_by_others(&file);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read [daemon] token_file {}", file.display()))?;
        let token = text.lines().next().unwrap_or("").trim().to_string();
        if token.chars().count() < MIN_TOKEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!(
                "[daemon] token_file {} must hold a token of at least {MIN_TOKEN} \
                    characters without spaces on its first line (for example: openssl rand \
                    -hex 32)",
                file.display()
            );
        }
        Ok(Some(Secret::new(token)))
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.resolve(&self.state.path)
    }

    /// The state database: `[state] url` (PostgreSQL, its password read now) or `path`.
    pub fn state(&self) -> Result<writeback_store::Target, crate::error::CycleError> {
        use crate::error::CycleError;
        let Some(url) = &self.state.url else { return Ok(writeback_store::Target::Sqlite(self.state_path())) };
        let password = match (std::env::var("WRITEBACK_STATE_PASSWORD").ok(), &self.state.password_file) {
            (Some(p), _) => Some(p),
            (None, Some(file)) => {
                let file = self.resolve(file);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    CycleError::Config(format!("cannot read [state] password_file {}: {e}", file.display()))
                })?;
                Some(text.lines().next().unwrap_or("").to_string())
            }
            (None, None) => None,
        };
        let ca = self.state.ca_file.as_ref().map(|f| self.resolve(f));
        writeback_store::PgTarget::new(url, password, ca.as_deref())
            .map(writeback_store::Target::Postgres)
            .map_err(|e| CycleError::Config(e.to_string()))
    }

    /// What one lead is for: this tenant written to this AD domain.
    pub fn deployment(&self) -> String {
        let domain: Vec<&str> = self
            .ad
            .target_ou
            .split(',')
            .map(str::trim)
            .filter(|rdn| rdn.len() > 3 && rdn[..3].eq_ignore_ascii_case("dc="))
            .collect();
        writeback_store::lead::deployment(&self.cloud.tenant_id, &domain.join(","))
    }

    pub fn ad_urls(&self) -> Vec<String> {
        match &self.ad.url {
            OneOrMany::One(u) => vec![u.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }

    /// The OUs this configuration names: the target OU, the rules' OUs, the adoption OUs and the
    /// OUs of converted groups.
    pub fn configured_ous(&self) -> Vec<String> {
        let mut ous: Vec<String> = vec![self.ad.target_ou.clone()];
        ous.extend(self.rules.iter().filter_map(|r| r.target_ou.clone()));
        ous.extend(self.ad.adopt_from.iter().cloned());
        ous.extend(self.writeback.converted_ous.iter().cloned());
        ous
    }

    /// The OUs writeback reads and writes in: the configured ones, and the ones an earlier
    /// configuration named that still hold owned groups (so a changed target OU moves them).
    /// Never an OU taken from where a group happens to be: that is data, not configuration.
    pub fn managed_ous(&self, state: &writeback_core::State) -> Vec<String> {
        let mut ous = self.configured_ous();
        ous.extend(state.former_ous.iter().cloned());
        // One OU once; an OU inside another is covered by the outer one's subtree search.
        let mut out: Vec<String> = Vec::new();
        for ou in ous {
            if !out.iter().any(|o| writeback_core::naming::dn_is_within(&ou, o)) {
                out.retain(|o| !writeback_core::naming::dn_is_within(o, &ou));
                out.push(ou);
            }
        }
        out
    }

    /// What to remember as managed after a cycle: the configured OUs, and the earlier ones in
    /// which an owned group still is. `dns`: where every owned group is after a full cycle;
    /// `None` after a delta cycle, which did not see them all (every earlier OU is kept).
    pub fn ous_to_keep(&self, state: &writeback_core::State, dns: Option<Vec<&str>>) -> Vec<String> {
        use writeback_core::naming::dn_is_within;
        use writeback_core::Dn;
        let configured = self.configured_ous();
        let in_configured = |dn: &str| configured.iter().any(|c| dn_is_within(dn, c));
        let mut keep = configured.clone();
        for ou in &state.former_ous {
            let known = keep.iter().any(|k| Dn::new(k.as_str()) == **ou);
            // A group inside a configured OU keeps nothing else managed (a target moved into a
            // child OU of the old one must not keep the old one for ever).
            let holds = dns.as_ref().is_none_or(|dns| dns.iter().any(|dn| dn_is_within(dn, ou) && !in_configured(dn)));
            if !known && holds {
                keep.push(ou.clone());
            }
        }
        keep
    }

    /// What a delta cycle must run with to be valid: the planner's settings (all of them: the
    /// hash of the `PlannerConfig` it takes), and what decides where the cycle reads (the OUs,
    /// Graph's endpoint, the DCs). `links=2`: delta links select owners with write_owners (issue
    /// #16); links of an older version are replaced by one full cycle.
    pub fn settings_fingerprint(&self) -> String {
        let mut ous = self.configured_ous();
        ous.sort();
        format!(
            "links=2;planner={:016x};ous={};graph={};ad_urls={}",
            self.planner(Allow::default()).fingerprint(),
            ous.join("|").to_ascii_lowercase(),
            self.cloud.graph_url.clone().unwrap_or_else(|| self.cloud.environment.clone()),
            self.ad_urls().join("|")
        )
    }

    pub fn planner(&self, allow: Allow) -> PlannerConfig {
        PlannerConfig {
            target_ou: self.ad.target_ou.clone(),
            cn_format: self.writeback.cn_format,
            delete_threshold: self.writeback.delete_threshold,
            member_removal_threshold: self.writeback.member_removal_threshold,
            create_threshold: self.writeback.create_threshold,
            member_removal_percent: self.writeback.member_removal_percent,
            on_out_of_scope: self.writeback.on_out_of_scope,
            on_soft_delete: self.writeback.on_soft_delete,
            allow,
            stay_in: if self.writeback.move_adopted { Vec::new() } else { self.ad.adopt_from.clone() },
            rules: self.rules.clone(),
            write_owners: self.writeback.write_owners,
            allow_protected_nesting: self.writeback.allow_protected_nesting.clone(),
            converted_ous: self.writeback.converted_ous.clone(),
            rename_converted: self.writeback.rename_converted,
            write_devices: self.writeback.write_devices,
            mappings: self.mappings.clone(),
            nested: self.writeback.nested,
        }
    }

    /// The group properties the rules and mappings read beyond what every read selects.
    pub fn group_properties(&self) -> Vec<String> {
        let mut props: Vec<String> = Vec::new();
        let mapped = self.mappings.iter().flat_map(|m| m.value.properties());
        for p in self.rules.iter().flat_map(|r| r.properties()).chain(mapped) {
            if !props.iter().any(|q| q == p) {
                props.push(p.to_string());
            }
        }
        props
    }

    pub fn graph(&self) -> anyhow::Result<GraphConfig> {
        let env = Environment::parse(&self.cloud.environment).unwrap_or(Environment::Global);
        let (login, graph) = env.endpoints();
        // A certificate, when configured, is used instead of a secret.
        let credential = match &self.cloud.client_certificate_file {
            Some(p) => {
                let path = self.resolve(p);
                warn_if_readable_by_others(&path);
                Credential::Certificate(std::sync::Arc::new(Certificate::from_pem_file(&path)?))
            }
            None => Credential::Secret(Secret::new(secret(
                "WRITEBACK_CLIENT_SECRET",
                self.cloud.client_secret_file.as_deref().map(|p| self.resolve(p)),
                "[cloud] client_secret_file",
            )?)),
        };
        Ok(GraphConfig {
            group_properties: self.group_properties(),
            secret_expires: self.cloud.client_secret_expires.as_deref().and_then(|d| expiry_date(d).ok()),
            tenant_id: self.cloud.tenant_id.clone(),
            client_id: self.cloud.client_id.clone(),
            credential,
            login_url: self
                .cloud
                .login_url
                .clone()
                .unwrap_or_else(|| login.to_string())
                .trim_end_matches('/')
                .to_string(),
            graph_url: self
                .cloud
                .graph_url
                .clone()
                .unwrap_or_else(|| graph.to_string())
                .trim_end_matches('/')
                .to_string(),
            max_retries: 6,
        })
    }

    pub fn ad(&self) -> anyhow::Result<writeback_ad::AdConfig> {
        let auth = match self.ad.auth {
            AdAuthKind::Simple => {
                let pw = secret(
                    "WRITEBACK_BIND_PASSWORD",
                    self.ad.bind_password_file.as_deref().map(|p| self.resolve(p)),
                    "[ad] bind_password_file",
                )?;
                writeback_ad::Auth::Simple {
                    bind_dn: self.ad.bind_dn.clone(),
                    password: writeback_ad::Password::new(pw),
                }
            }
            AdAuthKind::Kerberos => writeback_ad::Auth::Kerberos {
                spn_host: self.ad.kerberos_host.clone(),
                principal: self.keytab_principal()?,
            },
        };
        Ok(writeback_ad::AdConfig {
            urls: self.ad_urls(),
            auth,
            ca_file: self.ad.ca_file.as_deref().map(|p| self.resolve(p)),
            member_chunk: self.ad.member_chunk,
            timeout: Duration::from_secs(60),
            gc_url: self.ad.gc_url.clone(),
            also_read: self
                .mappings
                .iter()
                .filter(|m| !matches!(m.attribute, MappedAttribute::Cn | MappedAttribute::SamAccountName))
                .map(|m| m.attribute.ldap_name().to_string())
                .collect(),
        })
    }
}

/// A secret from the environment, else from a file (whose first line is the secret).
fn secret(var: &str, file: Option<PathBuf>, key: &str) -> anyhow::Result<String> {
    if let Ok(v) = std::env::var(var) {
        if !v.is_empty() {
            return Ok(v);
        }
    }
    let Some(file) = file else {
        bail!("no secret: set ${var} or {key}");
    };
    warn_if_readable_by_others(&file);
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {key} {}", file.display()))?;
    let s = text.lines().next().unwrap_or("").trim().to_string();
    if s.is_empty() {
        bail!("{key} {} is empty", file.display());
    }
    Ok(s)
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        // Group-readable is the packaged layout (root:writeback 640); others, or a group that
        // may write it, are not.
        if meta.permissions().mode() & 0o027 != 0 {
            tracing::warn!(
                file = %file.display(),
                "this secret file can be read by other users: chmod 640 it (group writeback) or 600"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_file: &Path) {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_parse_error_names_its_place_but_never_quotes_the_line() {
        let text = "[cloud]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"hunter2-pasted\"\n";
        let e = Config::parse(text, "/etc/writeback".into()).expect_err("an unknown key");
        let shown = where_(text, &e);
        assert!(shown.starts_with("line 4, column 1: unknown field `client_secret`"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    fn parse(s: &str) -> anyhow::Result<Config> {
        let c = Config::parse(s, "/etc/writeback".into()).map_err(|e| anyhow::anyhow!("{e}"))?;
        c.validate()?;
        Ok(c)
    }

    /// The shortest valid configuration (also the listener tests' one).
    pub(crate) const MIN: &str = r#"
[cloud]
tenant_id = "contoso.onmicrosoft.com"
client_id = "00000000-0000-0000-0000-000000000000"
[ad]
url = "ldaps://dc01.corp.example.com"
bind_dn = "svc@corp.example.com"
target_ou = "OU=Groups,DC=corp,DC=example,DC=com"
"#;

    #[test]
    fn defaults_and_relative_paths() {
        let c = parse(MIN).expect("valid");
        assert_eq!(c.writeback.delete_threshold, 500);
        assert_eq!(c.writeback.member_removal_threshold, 10_000);
        assert_eq!(c.state_path(), PathBuf::from("/etc/writeback/writeback.db"));
        assert_eq!(c.ad_urls(), vec!["ldaps://dc01.corp.example.com"]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse(&format!("{MIN}\n[writeback]\ndelete_treshold = 5\n")).expect_err("must fail").to_string();
        assert!(err.contains("delete_treshold"), "{err}");
        let err = parse(&MIN.replace("[cloud]", "[cloud]\nsecret = \"x\"")).expect_err("must fail").to_string();
        assert!(err.contains("secret"), "{err}");
    }

    #[test]
    fn earlier_ous_stay_managed_only_while_they_hold_groups_outside_the_configured_ones() {
        let c = parse(&MIN.replace("OU=Groups,DC=corp", "OU=New,OU=Groups,DC=corp")).expect("valid");
        let state = writeback_core::State {
            former_ous: vec!["OU=Groups,DC=corp,DC=example,DC=com".into(), "OU=Old,DC=corp,DC=example,DC=com".into()],
            ..Default::default()
        };
        let managed = c.managed_ous(&state);
        assert_eq!(managed.len(), 2, "the new target lies in an earlier OU: {managed:?}");
        // Every group is in the new target OU (inside the old one): only the configuration stays.
        let moved = vec!["CN=g,OU=New,OU=Groups,DC=corp,DC=example,DC=com"];
        assert_eq!(c.ous_to_keep(&state, Some(moved)), c.configured_ous());
        // A group still in the old OU keeps it.
        let left = vec!["CN=g,OU=Old,DC=corp,DC=example,DC=com"];
        assert_eq!(c.ous_to_keep(&state, Some(left)).len(), 2);
        // A delta cycle, which did not see every group, keeps them all.
        assert_eq!(c.ous_to_keep(&state, None).len(), 3);
    }

    #[test]
    fn every_planning_setting_is_in_the_fingerprint() {
        let base = parse(MIN).expect("valid").settings_fingerprint();
        for extra in [
            "[writeback]\nallow_protected_nesting = [\"3a5c3221-c465-48c0-95b8-e9305786a271\"]",
            "[writeback]\ncreate_threshold = 7",
            "[writeback]\nmember_removal_percent = 10",
            "[writeback]\ndelete_threshold = 7",
            "[writeback]\nwrite_owners = true",
            "[writeback]\ncn_format = \"display-name\"",
            "[ad]\nadopt_from = [\"OU=Old,DC=corp,DC=example,DC=com\"]",
        ] {
            let (section, key) = extra.split_once('\n').expect("section");
            let text = MIN.replace(&format!("{section}\n"), &format!("{section}\n{key}\n"));
            let text = if text == MIN { format!("{MIN}\n{extra}\n") } else { text };
            let other = parse(&text).expect("valid").settings_fingerprint();
            assert_ne!(other, base, "{extra} must force a full cycle");
        }
        assert_eq!(parse(MIN).expect("valid").settings_fingerprint(), base, "stable");
    }

    #[test]
    fn bad_values_are_explained() {
        assert!(parse(&MIN.replace("[cloud]", "[cloud]\nenvironment = \"mars\"")).is_err());
        assert!(parse(&format!("{MIN}\n[writeback]\ncn_format = \"guid\"\n")).is_err());
        assert!(parse(&format!("{MIN}\n[daemon]\ninterval = \"soon\"\n")).is_err());
    }
}

#[cfg(test)]
mod example_tests {
    #[test]
    fn the_reference_config_parses() {
        let mut c: super::Config =
            toml::from_str(include_str!("../../../writeback.example.toml")).expect("example parses");
        c.base_dir = "/etc/writeback".into();
        c.validate().expect("example is valid");
        assert_eq!(c.ad_urls().len(), 2);
    }
}
