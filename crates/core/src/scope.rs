//! Selection: is a cloud group written back, as which AD group type, and why.

use serde::Serialize;

use crate::model::{group_type, CloudObject};
use crate::rules::{Rule, RuleAction};

/// The scope decision for one cloud group, always with a reason a person can read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub in_scope: bool,
    pub reason: String,
    /// The AD `groupType` to write, when in scope.
    pub group_type: Option<i32>,
    /// Whether mail attributes are written.
    pub mail: bool,
    /// The cloud configuration is invalid (reported as an error, never written).
    pub invalid: bool,
    /// The OU a scoping rule placed the group in (default: the target OU).
    pub target_ou: Option<String>,
}

impl Decision {
    fn out(reason: impl Into<String>) -> Self {
        Decision {
            in_scope: false,
            reason: reason.into(),
            group_type: None,
            mail: false,
            invalid: false,
            target_ou: None,
        }
    }
    fn invalid(reason: impl Into<String>) -> Self {
        Decision { invalid: true, ..Decision::out(reason) }
    }
    fn write(group_type: i32, mail: bool, reason: String) -> Self {
        Decision { in_scope: true, reason, group_type: Some(group_type), mail, invalid: false, target_ou: None }
    }
}

/// The kind of cloud group, for selection and for scoping rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKind {
    Microsoft365,
    Security,
    MailEnabledSecurity,
    Distribution,
    Unknown,
}

pub fn group_kind(g: &CloudObject) -> GroupKind {
    let security = g.security_enabled == Some(true);
    let mail = g.mail_enabled == Some(true);
    if g.group_types.iter().any(|t| t.eq_ignore_ascii_case("Unified")) {
        GroupKind::Microsoft365
    } else if security && !mail {
        GroupKind::Security
    } else if security && mail {
        GroupKind::MailEnabledSecurity
    } else if mail {
        GroupKind::Distribution
    } else {
        GroupKind::Unknown
    }
}

fn show(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "true",
        Some(false) => "false",
        None => "null",
    }
}

/// Section 1 of the product spec, without scoping rules.
pub fn decide(g: &CloudObject) -> Decision {
    decide_with(g, &[])
}

/// The AD type for a kind and a requested `onPremisesGroupType` (section 1's table).
fn typed(kind: GroupKind, requested: Option<&str>, how: String) -> Decision {
    match (kind, requested) {
        (GroupKind::Microsoft365, None | Some("universalDistributionGroup")) => Decision::write(
            group_type::UNIVERSAL_DISTRIBUTION,
            true,
            format!("{how}, as a universal distribution group"),
        ),
        (GroupKind::Microsoft365, Some("universalMailEnabledSecurityGroup")) => Decision::write(
            group_type::UNIVERSAL_SECURITY,
            true,
            format!("{how}, as a mail-enabled universal security group"),
        ),
        (GroupKind::Microsoft365 | GroupKind::Security, Some("universalSecurityGroup"))
        | (GroupKind::Security, None) => {
            Decision::write(group_type::UNIVERSAL_SECURITY, false, format!("{how}, as a universal security group"))
        }
        (GroupKind::Security, Some(other)) => Decision::invalid(format!(
            "invalid configuration: a security group can only be written back as universalSecurityGroup, not '{other}'"
        )),
        (_, Some(other)) => Decision::invalid(format!(
            "invalid configuration: onPremisesGroupType '{other}' is not one of \
                universalDistributionGroup, universalSecurityGroup, \
                universalMailEnabledSecurityGroup"
        )),
        (_, None) => Decision::out("not supported for group writeback"),
    }
}

/// Section 1, with the scoping rules of section 6: the first rule that matches decides.
/// Rules never override what cannot be written (synced groups, distribution lists, mail-enabled
/// security groups) nor a group's own `isEnabled = false`.
pub fn decide_with(g: &CloudObject, rules: &[Rule]) -> Decision {
    if g.is_synced() {
        return Decision::out("synced from on-premises AD (onPremisesSyncEnabled = true): AD is already its source");
    }
    let wb = g.writeback_configuration.clone().unwrap_or_default();
    let enabled = wb.is_enabled;
    let requested = wb.on_premises_group_type.as_deref();
    let kind = group_kind(g);
    match kind {
        GroupKind::MailEnabledSecurity => {
            return Decision::out("cloud mail-enabled security groups are not supported for group writeback")
        }
        GroupKind::Distribution => {
            return Decision::out("cloud distribution groups are not supported for group writeback")
        }
        GroupKind::Unknown => {
            return Decision::out(
                "neither a Microsoft 365 group nor a security group: not supported for group writeback",
            )
        }
        GroupKind::Microsoft365 | GroupKind::Security => {}
    }
    if let Some((i, rule)) = rules.iter().enumerate().find(|(_, r)| r.matches(g)) {
        let by = rule.explain(i, g);
        return match rule.action {
            RuleAction::Exclude => Decision::out(format!("excluded by {by}")),
            RuleAction::Include if enabled == Some(false) => Decision::out(format!(
                "{by} includes it, but writeback is turned off on the group itself \
                    (writebackConfiguration.isEnabled = false)"
            )),
            RuleAction::Include => {
                let mut d = typed(kind, rule.group_type.as_deref().or(requested), format!("included by {by}"));
                d.target_ou = rule.target_ou.clone();
                d
            }
        };
    }
    match kind {
        GroupKind::Microsoft365 if enabled == Some(false) => Decision::out(
            "writeback is disabled for this Microsoft 365 group \
                (writebackConfiguration.isEnabled = false)",
        ),
        GroupKind::Microsoft365 => typed(
            kind,
            requested,
            format!(
                "Microsoft 365 group, writeback on (isEnabled = {}; Microsoft 365 groups \
                are written back unless it is false)",
                show(enabled)
            ),
        ),
        _ if enabled != Some(true) => Decision::out(format!(
            "writeback is not enabled for this security group \
                (writebackConfiguration.isEnabled = {}; security groups are written \
                back only when it is true)",
            show(enabled)
        )),
        _ => typed(kind, requested, "security group with writeback enabled (isEnabled = true)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WritebackConfiguration;

    fn group(unified: bool, security: bool, mail: bool, enabled: Option<bool>, ty: Option<&str>) -> CloudObject {
        CloudObject {
            id: "g".into(),
            group_types: if unified { vec!["Unified".into()] } else { vec![] },
            security_enabled: Some(security),
            mail_enabled: Some(mail),
            writeback_configuration: Some(WritebackConfiguration {
                is_enabled: enabled,
                on_premises_group_type: ty.map(str::to_string),
            }),
            ..Default::default()
        }
    }

    /// The table of section 1, row by row: (group, in scope, groupType, mail, invalid).
    #[test]
    fn selection_table() {
        let us = Some(group_type::UNIVERSAL_SECURITY);
        let ud = Some(group_type::UNIVERSAL_DISTRIBUTION);
        let cases = [
            (group(true, false, true, None, None), true, ud, true, false),
            (group(true, false, true, Some(true), Some("universalDistributionGroup")), true, ud, true, false),
            (group(true, false, true, None, Some("universalMailEnabledSecurityGroup")), true, us, true, false),
            (group(true, false, true, Some(true), Some("universalSecurityGroup")), true, us, false, false),
            (group(true, false, true, Some(false), None), false, None, false, false),
            (group(true, false, true, None, Some("globalSecurityGroup")), false, None, false, true),
            (group(false, true, false, None, None), false, None, false, false),
            (group(false, true, false, Some(false), None), false, None, false, false),
            (group(false, true, false, Some(true), None), true, us, false, false),
            (group(false, true, false, Some(true), Some("universalSecurityGroup")), true, us, false, false),
            (group(false, true, false, Some(true), Some("universalDistributionGroup")), false, None, false, true),
            (group(false, true, true, Some(true), None), false, None, false, false),
            (group(false, false, true, Some(true), None), false, None, false, false),
        ];
        for (i, (g, scope, gt, mail, invalid)) in cases.into_iter().enumerate() {
            let d = decide(&g);
            assert_eq!(
                (d.in_scope, d.group_type, d.mail, d.invalid),
                (scope, gt, mail, invalid),
                "row {i}: {}",
                d.reason
            );
        }
        let mut synced = group(false, true, false, Some(true), None);
        synced.on_premises_sync_enabled = Some(true);
        assert!(!decide(&synced).in_scope);
    }
}
