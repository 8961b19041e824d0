//! Groups moved to the cloud: Source of Authority (SOA) conversion (facts-2026.md §1).
//!
//! An administrator marks an AD-synced group as cloud-managed; Entra then manages it, and the
//! group written back must be the original AD group, matched by its SID, so that every ACL
//! naming that SID keeps working (Cloud Sync does the same). The SID is cloud data, read-only
//! in Graph (only the sync writes `onPremisesSecurityIdentifier`), yet it chooses an AD
//! object, so the object found is taken over only when every check here passes:
//! - it is a group, and its objectSid is the SID the cloud group carries;
//! - it is inside `[writeback] converted_ous` (else `converted-outside-managed-ous`);
//! - it carries no marker of another cloud group, and no other `adminDescription` (ours would
//!   overwrite an administrator's text);
//! - it is not protected (adminCount, a critical system object: Domain Admins and its kind);
//! - its scope is universal (Microsoft requires that before conversion).
//!
//! Recognised: a group that carries an on-premises SID while `onPremisesSyncEnabled` is not
//! true ("set to null" after conversion, how-to-group-source-of-authority-configure.md), and
//! whose `onPremisesSyncBehavior.isCloudManaged` is not false. Given back (rollback): the same
//! with `isCloudManaged = false`, or synced from AD again.

use crate::config::PlannerConfig;
use crate::model::{group_type, AdGroup, CloudObject, CloudSnapshot, Original, SchemaFeatures};
use crate::naming;

/// Where a cloud group stands in a conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion<'a> {
    /// A cloud group as any other (no on-premises SID).
    None,
    /// Managed in the cloud since its conversion; the SID of its original AD group.
    Converted(&'a str),
    /// Given back to AD (rollback); the SID of its AD group.
    GivenBack(&'a str),
    /// Whether it is converted could not be read this cycle: nothing changes hands.
    Unknown(&'a str),
}

/// The conversion state of one cloud group.
pub fn conversion<'a>(g: &'a CloudObject, cloud: &CloudSnapshot) -> Conversion<'a> {
    let Some(sid) = g.on_premises_security_identifier.as_deref().map(str::trim).filter(|s| is_domain_sid(s)) else {
        return Conversion::None;
    };
    if g.is_synced() {
        return Conversion::GivenBack(sid);
    }
    match cloud.cloud_managed.get(&g.id) {
        Some(Some(false)) => Conversion::GivenBack(sid),
        Some(None) => Conversion::Unknown(sid),
        // Not readable (no Group-OnPremisesSyncBehavior.Read.All): the SID without the sync
        // is the sign of a conversion the issue names; a rollback is then seen once AD syncs it.
        Some(Some(true)) | None => Conversion::Converted(sid),
    }
}

/// The SID of a domain account, `S-1-5-21-a-b-c-rid`: the only SIDs a converted group can have.
fn is_domain_sid(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("S-1-5-21-") else { return false };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() == 4 && parts.iter().all(|p| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The attributes that carry the ownership marker on this schema: `adminDescription`, and the
/// 2016 anchor where the schema has it (as Cloud Sync writes both).
pub fn marker_attributes(schema: &SchemaFeatures) -> &'static [&'static str] {
    if schema.external_directory_object_id {
        &["adminDescription", "msDS-ExternalDirectoryObjectId"]
    } else {
        &["adminDescription"]
    }
}

/// The marker of `id` in each of [`marker_attributes`], as an `Adopt` stamps it.
pub fn marker_values(id: &str, schema: &SchemaFeatures) -> Vec<(String, Vec<String>)> {
    marker_attributes(schema).iter().map(|a| (a.to_string(), vec![naming::marker(id)])).collect()
}

/// True when an AD group is the one a converted (or given-back) cloud group names.
pub fn same_sid(group: &AdGroup, sid: &str) -> bool {
    group.sid.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(sid))
}

/// An owned group that was AD's before writeback took it over: the original of a converted
/// group (its SID), or any owned group in `converted_ous` (taken over by hand with `adopt`).
pub fn is_taken_over(group: &AdGroup, conversion: Conversion, cfg: &PlannerConfig) -> bool {
    matches!(conversion, Conversion::Converted(sid) | Conversion::Unknown(sid) if same_sid(group, sid))
        || cfg.converted_ous.iter().any(|ou| naming::dn_is_within(&group.dn, ou))
}

/// Whether the original AD group of a converted group may be taken over: `Ok` with it, or why not
/// (the error every report and `show` give).
pub fn may_take_over<'a>(
    id: &str,
    sid: &str,
    original: Option<&'a Original>,
    cfg: &PlannerConfig,
) -> Result<Option<&'a AdGroup>, String> {
    let group = match original {
        None => {
            return Err(format!(
                "converted from AD (SID {sid}) but its AD group was not looked up this run; nothing is written"
            ))
        }
        // Cloud Sync writes a new group when the original is gone; so does writeback.
        Some(Original::NotFound) => return Ok(None),
        Some(Original::OtherDomain) => {
            return Err(format!(
                "converted from AD, but its SID {sid} is of another domain than the one writeback writes to: \
                 it is not taken over and nothing is written"
            ))
        }
        Some(Original::NotAGroup(class)) => {
            return Err(format!("converted from AD, but its SID {sid} names {class}, not a group; nothing is written"))
        }
        Some(Original::Found { group, critical }) => {
            if !same_sid(group, sid) {
                return Err(format!("converted from AD, but the object found for SID {sid} has another SID"));
            }
            if *critical || group.admin_count {
                return Err(format!(
                    "converted from AD, but its AD group {} is protected (adminCount or a critical system object): \
                     it is never taken over; nothing is written",
                    group.dn
                ));
            }
            group
        }
    };
    if !cfg.converted_ous.iter().any(|ou| naming::dn_is_within(&group.dn, ou)) {
        return Err(format!(
            "converted-outside-managed-ous: its AD group {} (SID {sid}) is outside [writeback] converted_ous; \
             nothing is written, and no second group is made (add its OU to converted_ous to take it over)",
            group.dn
        ));
    }
    // The 2016 anchor names its group as the marker does (Cloud Sync writes it): another's, refused.
    let anchor = group.attrs.get("msds-externaldirectoryobjectid").and_then(|v| v.first());
    if let Some(a) = anchor.filter(|a| naming::parse_marker(a).is_none_or(|other| !other.eq_ignore_ascii_case(id))) {
        return Err(format!(
            "converted from AD, but its AD group {} has msDS-ExternalDirectoryObjectId {a:?}, another object's \
             anchor; nothing is written",
            group.dn
        ));
    }
    let description = group.attrs.get("admindescription").and_then(|v| v.first());
    match description.map(|d| (d, naming::parse_marker(d))) {
        Some((_, Some(other))) if !other.eq_ignore_ascii_case(id) => {
            return Err(format!(
                "converted from AD, but its AD group {} carries the marker of another cloud group ({other}); \
                 nothing is written",
                group.dn
            ))
        }
        Some((text, None)) => {
            let text: String = text.chars().take(60).collect();
            return Err(format!(
                "converted from AD, but its AD group {} has adminDescription {text:?}, which writeback would \
                 overwrite with its marker: clear it to let writeback take the group over",
                group.dn
            ));
        }
        _ => {}
    }
    if group.group_type & group_type::UNIVERSAL_BIT == 0 {
        return Err(format!(
            "converted from AD, but its AD group {} is not universal: change its scope to universal in AD \
             (Microsoft requires it before conversion); nothing is written",
            group.dn
        ));
    }
    Ok(Some(group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CloudId, Dn};

    const SID: &str = "S-1-5-21-1-2-3-1105";

    fn cloud_group(sid: Option<&str>, synced: Option<bool>) -> CloudObject {
        CloudObject {
            id: CloudId::from("c0ffee00-0000-0000-0000-000000000001"),
            on_premises_security_identifier: sid.map(str::to_string),
            on_premises_sync_enabled: synced,
            ..Default::default()
        }
    }

    fn original(dn: &str, group_type: i32, admin_description: Option<&str>) -> Original {
        let mut group = AdGroup { sid: Some(SID.into()), dn: Dn::new(dn), group_type, ..Default::default() };
        if let Some(d) = admin_description {
            group.attrs.insert("admindescription".into(), vec![d.into()]);
        }
        Original::Found { group, critical: false }
    }

    #[test]
    fn a_converted_group_is_one_with_a_sid_that_is_not_synced_and_not_given_back() {
        let mut cloud = CloudSnapshot::default();
        let g = cloud_group(Some(SID), None);
        assert_eq!(conversion(&g, &cloud), Conversion::Converted(SID));
        cloud.cloud_managed.insert(g.id.clone(), Some(false));
        assert_eq!(conversion(&g, &cloud), Conversion::GivenBack(SID));
        // A read that failed is not taken as either.
        cloud.cloud_managed.insert(g.id.clone(), None);
        assert_eq!(conversion(&g, &cloud), Conversion::Unknown(SID));
        assert_eq!(conversion(&cloud_group(Some(SID), Some(true)), &cloud), Conversion::GivenBack(SID));
        assert_eq!(conversion(&cloud_group(None, None), &cloud), Conversion::None);
        // Not a domain account's SID: nothing to look up.
        for bad in ["S-1-5-32-544", "S-1-12-1-2-3-4-5", "S-1-5-21-1-2-3", "(objectClass=*)", ""] {
            assert_eq!(conversion(&cloud_group(Some(bad), None), &CloudSnapshot::default()), Conversion::None, "{bad}");
        }
    }

    #[test]
    fn the_original_is_taken_over_only_when_every_check_passes() {
        let id = "c0ffee00-0000-0000-0000-000000000001";
        let mut cfg = PlannerConfig::with_target_ou("OU=Target,DC=x");
        cfg.converted_ous = vec!["OU=Groups,DC=x".into()];
        let universal = group_type::UNIVERSAL_SECURITY;
        let ok = original("CN=Finance,OU=Groups,DC=x", universal, None);
        assert!(matches!(may_take_over(id, SID, Some(&ok), &cfg), Ok(Some(_))));
        let ours = original("CN=Finance,OU=Groups,DC=x", universal, Some(&naming::marker(id)));
        assert!(matches!(may_take_over(id, SID, Some(&ours), &cfg), Ok(Some(_))));
        assert_eq!(may_take_over(id, SID, Some(&Original::NotFound), &cfg), Ok(None));

        let refused = |o: &Original| may_take_over(id, SID, Some(o), &cfg).expect_err("refused");
        let outside = original("CN=Finance,OU=Other,DC=x", universal, None);
        assert!(refused(&outside).starts_with("converted-outside-managed-ous"));
        let global = original("CN=Finance,OU=Groups,DC=x", -2147483646, None);
        assert!(refused(&global).contains("is not universal"));
        let other =
            original("CN=Finance,OU=Groups,DC=x", universal, Some("Group_c0ffee00-0000-0000-0000-000000000009"));
        assert!(refused(&other).contains("marker of another cloud group"));
        let text = original("CN=Finance,OU=Groups,DC=x", universal, Some("owned by the finance team"));
        assert!(refused(&text).contains("clear it"));
        let Original::Found { group, .. } = ok.clone() else { unreachable!() };
        let protected = Original::Found { group: AdGroup { admin_count: true, ..group.clone() }, critical: false };
        assert!(refused(&protected).contains("is protected"));
        let critical = Original::Found { group: group.clone(), critical: true };
        assert!(refused(&critical).contains("is protected"));
        let other_sid =
            Original::Found { group: AdGroup { sid: Some("S-1-5-21-1-2-3-9".into()), ..group }, critical: false };
        assert!(refused(&other_sid).contains("another SID"));
        assert!(refused(&Original::NotAGroup("a user account".into())).contains("not a group"));
        assert!(refused(&Original::OtherDomain).contains("another domain"));
        assert!(may_take_over(id, SID, None, &cfg).expect_err("not looked up").contains("not looked up"));
    }
}
