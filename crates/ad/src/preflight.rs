//! `writeback check`'s questions to AD: can the account bind over TLS, create groups in the
//! target OU and write every attribute writeback manages, and what does the schema hold. The
//! CLI renders the answers.

use writeback_core::Check;

use crate::{AdConfig, AdConn};

/// What the checks need from the configuration.
pub struct Preflight<'a> {
    pub target_ou: &'a str,
    pub adopt_from: &'a [String],
    pub write_owners: bool,
}

/// The attributes writeback writes on the groups it owns (`name`/`cn` change through ModifyDN
/// and are not listed as writable attributes).
fn managed_attributes(write_owners: bool) -> Vec<&'static str> {
    let mut out = vec!["member", "groupType", "description", "displayName", "sAMAccountName", "adminDescription"];
    if write_owners {
        out.push("managedBy");
    }
    out
}

/// Binds with `cfg` and runs every AD check; a failed bind is the only check then.
pub async fn preflight(cfg: &AdConfig, p: &Preflight<'_>) -> Vec<Check> {
    let mut ad = match AdConn::connect(cfg).await {
        Ok(ad) => ad,
        Err(e) => return vec![Check::new("AD bind over TLS", Err(e.to_string()))],
    };
    let who = ad.whoami().await.unwrap_or_else(|_| cfg.auth.describe());
    let bound = format!("bound as {who} to {} ({})", ad.url, ad.dns_host_name);
    let mut out = vec![Check::new("AD bind over TLS", Ok(bound))];
    let ou = p.target_ou;
    let target = match ad.can_create_groups_in(ou).await {
        Ok(true) => Ok(format!("{ou} exists; the account may create groups in it")),
        Ok(false) => Err(format!(
            "{ou} exists, but the account may not create groups in it: delegate Create/Delete Group \
             objects on this OU — see docs/permissions.md"
        )),
        Err(e) => Err(e.to_string()),
    };
    out.push(Check::new("target OU", target));
    let rights = match ad.missing_group_rights(&[ou.to_string()], &managed_attributes(p.write_owners)).await {
        Ok(Some((dn, missing))) if missing.is_empty() => {
            Ok(format!("may write every attribute writeback manages (checked on {dn})"))
        }
        Ok(Some((dn, missing))) => Err(format!(
            "may not write {} (checked on {dn}): grant Read/Write all properties on descendant Group \
             objects of the OU — see docs/permissions.md",
            missing.join(", ")
        )),
        Ok(None) => {
            Ok("no group written yet to check attribute rights on; run check again after the first sync".into())
        }
        Err(e) => Err(e.to_string()),
    };
    out.push(Check::new("rights on groups", rights));
    for ou in p.adopt_from {
        let exists = ad.can_create_groups_in(ou).await.map(|_| format!("{ou} exists")).map_err(|e| e.to_string());
        out.push(Check::new("adoption OU", exists));
    }
    let s = ad.schema;
    let schema = format!(
        "msDS-ExternalDirectoryObjectId {}; Exchange attributes {}",
        if s.external_directory_object_id { "present" } else { "absent (adminDescription alone marks ownership)" },
        if s.exchange { "present" } else { "absent (mailNickname is not written)" }
    );
    out.push(Check::new("AD schema", Ok(schema)));
    out.push(forest_check(&ad));
    ad.close().await;
    out
}

/// The forest's domains and the Global Catalog: members from the other domains are found only
/// through it (`connect` fails when a configured one cannot be reached).
fn forest_check(ad: &AdConn) -> Check {
    let domains = match ad.forest_domains.len() {
        0 => "the forest's domains could not be read".to_string(),
        1 => "a single-domain forest".to_string(),
        n => format!("a forest of {n} domains"),
    };
    match ad.gc_url() {
        Some(url) => Check::new("Global Catalog", Ok(format!("reachable at {url}; {domains}"))),
        None if ad.forest_domains.len() > 1 => Check {
            name: "Global Catalog",
            result: Ok(format!(
                "not configured, in {domains}: members from the other domains are not found (skipped as \
                 not-found-in-ad); set [ad] gc_url = \"ldaps://<a GC>:3269\""
            )),
            warning: true,
        },
        None => Check::new("Global Catalog", Ok(format!("not configured; {domains}"))),
    }
}
