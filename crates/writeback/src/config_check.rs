//! What the configuration can be checked for without a network, when it is read: URL schemes,
//! that the files it names can be read (and by whom), DN syntax, durations. Every problem is
//! named with its key and what to do; together they are one configuration error (exit 2).

use std::path::Path;

use writeback_core::naming;
use writeback_graph::Environment;

use crate::config::{AdAuthKind, Config};

/// Every problem of the settings themselves, one line each; empty when they can be used.
pub fn problems(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if Environment::parse(&cfg.cloud.environment).is_none() {
        out.push(format!(
            "[cloud] environment = \"{}\" is not one of global, usgov, usgov-dod, china",
            cfg.cloud.environment
        ));
    }
    for (key, url) in [("[cloud] graph_url", &cfg.cloud.graph_url), ("[cloud] login_url", &cfg.cloud.login_url)] {
        if let Some(u) = url {
            out.extend(https_url(key, u));
        }
    }
    for u in cfg.ad_urls() {
        out.extend(ldap_url(&u));
    }
    if let Some(url) = &cfg.state.url {
        if let Err(e) = writeback_store::PgTarget::new(url, None, None) {
            out.push(e.to_string());
        }
    }
    if let Some(gc) = &cfg.ad.gc_url {
        out.extend(ldap_url(gc).map(|e| e.replacen("[ad] url", "[ad] gc_url", 1)));
    }
    out.extend(cfg.alerts.problems());
    let mut mapped = std::collections::BTreeSet::new();
    for (i, m) in cfg.mappings.iter().enumerate() {
        if !mapped.insert(m.attribute.ldap_name()) {
            out.push(format!("[[mappings]] #{}: {} is mapped twice; keep one", i + 1, m.attribute.ldap_name()));
        }
    }
    for (i, r) in cfg.rules.iter().enumerate() {
        if let Err(e) = r.validate(i) {
            out.push(e);
        }
        if let Some(ou) = &r.target_ou {
            out.extend(dn(&format!("[[rules]] #{} target_ou", i + 1), ou));
        }
    }
    if let Some(Err(e)) = cfg.cloud.client_secret_expires.as_deref().map(crate::config::expiry_date) {
        out.push(e);
    }
    out.extend(dn("[ad] target_ou", &cfg.ad.target_ou));
    for ou in &cfg.ad.adopt_from {
        out.extend(dn("[ad] adopt_from", ou));
    }
    for ou in &cfg.writeback.converted_ous {
        out.extend(dn("[writeback] converted_ous", ou));
        // Groups in a converted OU keep their names and are never deleted (they were AD's): one
        // that writeback creates there would be too.
        let others = std::iter::once(&cfg.ad.target_ou)
            .chain(cfg.rules.iter().filter_map(|r| r.target_ou.as_ref()))
            .chain(&cfg.ad.adopt_from);
        for other in others {
            if naming::dn_is_within(ou, other) || naming::dn_is_within(other, ou) {
                out.push(format!(
                    "[writeback] converted_ous = \"{ou}\" overlaps \"{other}\", where writeback writes or adopts \
                     its own groups: give converted groups OUs of their own"
                ));
            }
        }
    }
    match cfg.ad.auth {
        AdAuthKind::Simple if cfg.ad.bind_dn.trim().is_empty() => out.push(
            "[ad] bind_dn is missing: the account to bind as (a DN or a UPN), or set auth = \"kerberos\" and keytab"
                .into(),
        ),
        AdAuthKind::Kerberos if cfg.ad.keytab.is_none() => out.push(
            "[ad] auth = \"kerberos\" needs keytab = \"/path/to/writeback.keytab\" (samba-tool domain exportkeytab \
             or ktpass)"
                .into(),
        ),
        _ => {}
    }
    if cfg.state.audit_days == 0 {
        out.push("[state] audit_days must be at least 1 (the audit trail keeps each change that many days)".into());
    }
    if cfg.writeback.member_removal_percent > 100 {
        out.push("[writeback] member_removal_percent must be between 0 and 100".into());
    }
    if cfg.ad.member_chunk == 0 || cfg.ad.member_chunk > 5000 {
        out.push("[ad] member_chunk must be between 1 and 5000".into());
    }
    for (key, d) in [("[daemon] interval", &cfg.daemon.interval), ("[daemon] full_interval", &cfg.daemon.full_interval)]
    {
        match humantime::parse_duration(d) {
            Ok(t) if t.is_zero() => out.push(format!("{key} = \"{d}\" must be longer than 0 (for example \"60s\")")),
            Ok(_) => {}
            Err(_) => out.push(format!("{key} = \"{d}\" is not a duration such as \"60s\" or \"24h\"")),
        }
    }
    out
}

/// The files the configuration names, each readable by this process (a secret given in the
/// environment needs no file).
pub fn files(cfg: &Config) -> Vec<String> {
    let env_set = |var: &str| std::env::var(var).is_ok_and(|v| !v.is_empty());
    let mut wanted: Vec<(&str, &Path)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    match (&cfg.cloud.client_certificate_file, &cfg.cloud.client_secret_file) {
        (Some(c), _) => wanted.push(("[cloud] client_certificate_file", c)),
        (None, Some(s)) if !env_set("WRITEBACK_CLIENT_SECRET") => wanted.push(("[cloud] client_secret_file", s)),
        (None, None) if !env_set("WRITEBACK_CLIENT_SECRET") => missing.push(
            "no client credential: set [cloud] client_secret_file or client_certificate_file (or \
             $WRITEBACK_CLIENT_SECRET)"
                .into(),
        ),
        _ => {}
    }
    match cfg.ad.auth {
        AdAuthKind::Simple if !env_set("WRITEBACK_BIND_PASSWORD") => match &cfg.ad.bind_password_file {
            Some(p) => wanted.push(("[ad] bind_password_file", p)),
            None => missing.push("no bind password: set [ad] bind_password_file (or $WRITEBACK_BIND_PASSWORD)".into()),
        },
        AdAuthKind::Kerberos => wanted.extend(cfg.ad.keytab.as_deref().map(|k| ("[ad] keytab", k))),
        _ => {}
    }
    wanted.extend(cfg.ad.ca_file.as_deref().map(|p| ("[ad] ca_file", p)));
    wanted.extend(cfg.ad.krb5_conf.as_deref().map(|p| ("[ad] krb5_conf", p)));
    wanted.extend(cfg.daemon.token_file.as_deref().map(|p| ("[daemon] token_file", p)));
    let unreadable = wanted.into_iter().filter_map(|(key, p)| {
        let path = cfg.resolve(p);
        std::fs::File::open(&path).err().map(|e| {
            let fix = match e.kind() {
                std::io::ErrorKind::PermissionDenied => {
                    format!("make it readable by {} (for the service: chown root:writeback, chmod 640)", current_user())
                }
                std::io::ErrorKind::NotFound => "create it, or point the key at the file".to_string(),
                _ => "check the path".to_string(),
            };
            format!("{key} {}: cannot be read by {} ({e}): {fix}", path.display(), current_user())
        })
    });
    missing.extend(unreadable);
    missing
}

/// Who this process runs as, for messages about files it cannot read: `name (uid N)`.
fn current_user() -> String {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2)).map(str::to_string)
    });
    let Some(uid) = uid else { return "this user".into() };
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        })
    });
    match name {
        Some(n) => format!("user {n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn dn(key: &str, value: &str) -> Option<String> {
    // RFC 4514: an attribute type is a name (a letter, then letters, digits, hyphens) or an OID.
    let name = |t: &str| {
        t.starts_with(|c: char| c.is_ascii_alphabetic()) && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let oid = |t: &str| t.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let types_ok = |rdns: &Vec<Vec<(String, Vec<u8>)>>| rdns.iter().flatten().all(|(t, _)| name(t) || oid(t));
    let parsed = naming::parse_dn(value).filter(|r| !r.is_empty() && types_ok(r));
    parsed
        .is_none()
        .then(|| format!("{key} = \"{value}\" is not a DN: write it as \"OU=Groups,DC=corp,DC=example,DC=com\""))
}

fn ldap_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("ldaps://").or_else(|| url.strip_prefix("ldap://"));
    let fix = "write it as ldaps://dc01.corp.example.com (port 636), or ldap://dc01.corp.example.com (389, \
               always upgraded with StartTLS)";
    match rest {
        None => Some(format!("[ad] url '{url}' must start with ldaps:// or ldap://: {fix}")),
        Some(hostport) => host_port(hostport).err().map(|why| format!("[ad] url '{url}': {why}: {fix}")),
    }
}

fn https_url(key: &str, url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        None => Some(format!("{key} '{url}' must start with https:// (http:// only to a loopback address)")),
        Some(hostport) => match host_port(hostport.split('/').next().unwrap_or("")) {
            Err(why) => Some(format!("{key} '{url}': {why}")),
            Ok(()) => writeback_graph::check_transport(url).err().map(|e| format!("{key}: {e}")),
        },
    }
}

/// `host[:port]` with a host and, if given, a port number.
fn host_port(s: &str) -> Result<(), String> {
    let s = s.trim_end_matches('/');
    let (host, port) = match s.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (s, None), // a bare IPv6 address
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if host.is_empty() || host.contains('/') {
        return Err("no host name".into());
    }
    match port {
        Some(p) if p.parse::<u16>().is_err() => Err(format!("'{p}' is not a port number")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str, dir: &Path) -> Config {
        let text = format!("{}\n{extra}", crate::config::tests::MIN);
        Config::parse(&text, dir.to_path_buf()).expect("parses")
    }

    #[test]
    fn each_problem_names_its_key_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("wb-config-check-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        std::fs::write(dir.join("secret"), "s3cret").expect("secret");
        std::fs::write(dir.join("pw"), "pw").expect("pw");
        let base = config("", &dir);
        let good_files = |c: &mut Config| {
            c.cloud.client_secret_file = Some("secret".into());
            c.ad.bind_password_file = Some("pw".into());
        };
        let mut c = base;
        good_files(&mut c);
        assert_eq!(problems(&c).into_iter().chain(files(&c)).collect::<Vec<_>>(), Vec::<String>::new());

        c.ad.target_ou = "Groups".into();
        c.ad.adopt_from = vec!["OU=Old,DC=corp,DC=example,DC=com".into(), "CN=x,".into()];
        c.writeback.converted_ous = vec!["Legacy".into(), "OU=Sub,OU=Old,DC=corp,DC=example,DC=com".into()];
        c.ad.url =
            crate::config::OneOrMany::Many(vec!["ldaps://dc1:636".into(), "https://dc2".into(), "ldap://dc3:x".into()]);
        c.daemon.interval = "0s".into();
        c.ad.ca_file = Some("missing-ca.pem".into());
        let p: Vec<String> = problems(&c).into_iter().chain(files(&c)).collect();
        let has = |key: &str, fix: &str| p.iter().any(|l| l.starts_with(key) && l.contains(fix));
        assert!(has("[ad] target_ou", "OU=Groups,DC=corp"), "{p:#?}");
        assert!(has("[ad] adopt_from", "is not a DN"), "{p:#?}");
        assert!(has("[writeback] converted_ous", "is not a DN"), "{p:#?}");
        assert!(has("[writeback] converted_ous = \"OU=Sub", "overlaps \"OU=Old"), "{p:#?}");
        assert!(has("[ad] url 'https://dc2'", "must start with ldaps://"), "{p:#?}");
        assert!(has("[ad] url 'ldap://dc3:x'", "not a port number"), "{p:#?}");
        assert!(has("[daemon] interval", "longer than 0"), "{p:#?}");
        assert!(has("[ad] ca_file", "cannot be read by"), "{p:#?}");
        assert_eq!(p.len(), 8, "{p:#?}");

        // No credential and no bind password: both said, with the rest.
        let mut c = config("", &dir);
        c.state.audit_days = 0;
        let p: Vec<String> = problems(&c).into_iter().chain(files(&c)).collect();
        let has = |key: &str| p.iter().any(|l| l.contains(key));
        assert!(has("no client credential") && has("no bind password") && has("[state] audit_days"), "{p:#?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn urls_and_dns() {
        assert!(ldap_url("ldaps://[::1]:636").is_none());
        assert!(ldap_url("ldaps://dc01.corp.example.com").is_none());
        assert!(ldap_url("ldaps://").is_some());
        assert!(https_url("k", "https://graph.microsoft.com").is_none());
        assert!(https_url("k", "graph.microsoft.com").is_some());
        assert!(https_url("k", "http://127.0.0.1:8080").is_none(), "the simulator");
        assert!(https_url("k", "http://graph.example.com").is_some_and(|e| e.contains("loopback")));
        assert!(dn("k", "OU=a\\,b,DC=x").is_none());
        assert!(dn("k", "").is_some());
        assert!(dn("k", "Groups;OU=x,DC=y").is_some(), "not an attribute type");
        assert!(dn("k", "2.5.4.11=x,DC=y").is_none(), "an OID is one");
    }
}
