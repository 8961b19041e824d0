//! Groups converted from AD (Source of Authority), read before every plan: whether Graph says
//! they are cloud-managed, and the original AD group each one names by its SID. Only groups
//! that carry an on-premises SID without being synced cost anything: one Graph request each
//! (in `$batch`es of 20) and, for those in scope and not owned yet, one LDAP search each.

use std::collections::HashSet;

use writeback_ad::AdConn;
use writeback_core::convert::{self, Conversion};
use writeback_core::scope::decide_with;
use writeback_core::{CloudId, Original};
use writeback_graph::GraphClient;

use crate::config::Config;
use crate::engine::Snapshot;
use crate::error::CycleError;

pub(crate) async fn read(
    graph: &GraphClient,
    ad: &mut AdConn,
    snap: &mut Snapshot,
    cfg: &Config,
) -> Result<(), CycleError> {
    let candidates: Vec<CloudId> = snap
        .cloud
        .groups
        .iter()
        .filter(|g| !g.is_synced() && g.on_premises_security_identifier.as_deref().is_some_and(|s| !s.is_empty()))
        .map(|g| g.id.clone())
        .collect();
    if candidates.is_empty() {
        return Ok(());
    }
    snap.cloud.cloud_managed = graph.cloud_managed(&candidates).await;
    let owned: HashSet<String> = snap.ad.groups.iter().map(|g| g.cloud_id.to_ascii_lowercase()).collect();
    let lookups: Vec<(CloudId, String)> = snap
        .cloud
        .groups
        .iter()
        .filter(|g| !owned.contains(&g.id.to_ascii_lowercase()) && decide_with(g, &cfg.rules).in_scope)
        .filter_map(|g| match convert::conversion(g, &snap.cloud) {
            Conversion::Converted(sid) => Some((CloudId::new(g.id.to_ascii_lowercase()), sid.to_string())),
            _ => None,
        })
        .collect();
    snap.ad.originals = ad.originals_by_sid(&lookups).await?;
    // An original about to be taken over gets members only if the Tier-0 guard lets it: its
    // nesting is walked as an owned group's is (it is in no owned list yet).
    let found: Vec<writeback_core::AdGroup> = snap
        .ad
        .originals
        .values()
        .filter_map(|o| match o {
            Original::Found { group, .. } => Some(group.clone()),
            _ => None,
        })
        .collect();
    if !found.is_empty() {
        snap.ad.protected.extend(ad.protected_nesting(&found).await?);
    }
    tracing::info!(
        candidates = candidates.len(),
        cloud_managed_read = snap.cloud.cloud_managed.len(),
        originals_looked_up = lookups.len(),
        "groups converted from AD"
    );
    Ok(())
}
