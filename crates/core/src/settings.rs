//! `writeback cloud set-writeback`: which groups get which `writebackConfiguration`, checked
//! against section 1 (security groups are written back only as universalSecurityGroup).

use serde::Serialize;

use crate::ids::CloudId;
use crate::model::CloudObject;
use crate::scope::{group_kind, GroupKind};

/// The group types `onPremisesGroupType` can hold.
pub const GROUP_TYPES: [&str; 3] =
    ["universalSecurityGroup", "universalDistributionGroup", "universalMailEnabledSecurityGroup"];

/// What to set: enable (with an optional type) or disable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    Enable(Option<String>),
    Disable,
}

/// One group's change, or why it is left alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SettingChange {
    pub id: CloudId,
    pub display_name: String,
    /// `None`: nothing to do (already so) — see `note`.
    pub patch: Option<serde_json::Value>,
    pub note: String,
}

/// The changes for `groups` (already selected by id or kind). Errors are per group.
pub fn setting_changes(groups: &[CloudObject], setting: &Setting) -> Vec<Result<SettingChange, (String, String)>> {
    groups
        .iter()
        .map(|g| {
            let kind = group_kind(g);
            if g.is_synced() || !matches!(kind, GroupKind::Microsoft365 | GroupKind::Security) {
                return Err((
                    g.id.to_string(),
                    format!("{}: only cloud Microsoft 365 and security groups can be written back", g.name()),
                ));
            }
            let current = g.writeback_configuration.clone().unwrap_or_default();
            let (enabled, ty) = match setting {
                Setting::Disable => (false, None),
                Setting::Enable(t) => (true, t.clone()),
            };
            if let Some(t) = &ty {
                if kind == GroupKind::Security && t != "universalSecurityGroup" {
                    return Err((
                        g.id.to_string(),
                        format!(
                            "{}: a security group can only be written back as universalSecurityGroup, not {t}",
                            g.name()
                        ),
                    ));
                }
            }
            let same_type = ty.is_none() || current.on_premises_group_type == ty;
            let change = if current.is_enabled == Some(enabled) && same_type {
                SettingChange {
                    id: g.id.clone(),
                    display_name: g.name().to_string(),
                    patch: None,
                    note: "already so".into(),
                }
            } else {
                // The whole complex value, both fields: whether Graph merges a partial one or
                // replaces the whole is not documented, so the type read from the group is sent
                // back unchanged rather than left out (and perhaps cleared).
                let keep = ty.clone().or_else(|| current.on_premises_group_type.clone());
                let wb = serde_json::json!({ "isEnabled": enabled, "onPremisesGroupType": keep });
                let note = format!(
                    "isEnabled {} -> {enabled}{}",
                    current.is_enabled.map(|b| b.to_string()).unwrap_or_else(|| "null".into()),
                    ty.as_ref().map(|t| format!(", onPremisesGroupType -> {t}")).unwrap_or_default()
                );
                SettingChange {
                    id: g.id.clone(),
                    display_name: g.name().to_string(),
                    patch: Some(serde_json::json!({ "writebackConfiguration": wb })),
                    note,
                }
            };
            Ok(change)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WritebackConfiguration;

    fn g(id: &str, unified: bool, enabled: Option<bool>) -> CloudObject {
        CloudObject {
            id: id.into(),
            display_name: Some(id.into()),
            group_types: if unified { vec!["Unified".into()] } else { vec![] },
            security_enabled: Some(!unified),
            mail_enabled: Some(unified),
            writeback_configuration: Some(WritebackConfiguration { is_enabled: enabled, on_premises_group_type: None }),
            ..Default::default()
        }
    }

    #[test]
    fn changes_are_checked_against_section_1() {
        let groups = [g("m1", true, None), g("m2", true, Some(false)), g("s1", false, None)];
        let off = setting_changes(&groups, &Setting::Disable);
        let patched: Vec<&str> =
            off.iter().filter_map(|r| r.as_ref().ok()).filter(|c| c.patch.is_some()).map(|c| c.id.as_str()).collect();
        assert_eq!(patched, vec!["m1", "s1"], "m2 is already disabled");
        let m1 = off[0].as_ref().expect("ok").patch.clone().expect("patch");
        assert_eq!(
            m1,
            serde_json::json!({"writebackConfiguration": {"isEnabled": false, "onPremisesGroupType": null}})
        );
        let mut typed = g("t", true, Some(true));
        typed.writeback_configuration.as_mut().expect("wb").on_premises_group_type =
            Some("universalSecurityGroup".into());
        let kept = setting_changes(&[typed], &Setting::Disable)[0].as_ref().expect("ok").patch.clone().expect("patch");
        assert_eq!(
            kept,
            serde_json::json!({
                "writebackConfiguration": {"isEnabled": false, "onPremisesGroupType": "universalSecurityGroup"}
            }),
            "the whole complex value is sent, the type as read"
        );
        let dist = setting_changes(&groups, &Setting::Enable(Some("universalDistributionGroup".into())));
        assert!(dist[2].is_err(), "a security group cannot be a distribution group");
        let sec = setting_changes(&groups[2..], &Setting::Enable(Some("universalSecurityGroup".into())));
        let patch = sec[0].as_ref().expect("ok").patch.clone().expect("patch");
        assert_eq!(
            patch,
            serde_json::json!({
                "writebackConfiguration": {"isEnabled": true, "onPremisesGroupType": "universalSecurityGroup"}
            })
        );
        let mut synced = g("x", false, None);
        synced.on_premises_sync_enabled = Some(true);
        assert!(setting_changes(&[synced], &Setting::Disable)[0].is_err());
    }
}
