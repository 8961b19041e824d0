//! Scoping rules (`[[rules]]`): ordered, the first that matches decides. They select groups
//! by kind, display-name pattern or id, and include them (with a group type and an optional
//! OU) or exclude them, so thousands of groups can be written back without touching them.

use serde::{Deserialize, Serialize};

use crate::model::CloudObject;
use crate::scope::{group_kind, GroupKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    Microsoft365,
    Security,
    /// Dynamic membership, Microsoft 365 or security.
    Dynamic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleAction {
    Include,
    Exclude,
}

/// One `[[rules]]` entry. Every condition given must hold; a rule with none matches all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub kind: Option<RuleKind>,
    /// A display-name pattern: `*` any run of characters, `?` one; case-insensitive.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub ids: Vec<crate::CloudId>,
    pub action: RuleAction,
    /// For `include`: universalSecurityGroup, universalDistributionGroup or
    /// universalMailEnabledSecurityGroup (checked against the group's kind).
    #[serde(default)]
    pub group_type: Option<String>,
    /// Where the groups of this rule live (default: `[ad] target_ou`).
    #[serde(default)]
    pub target_ou: Option<String>,
}

impl Rule {
    pub fn matches(&self, g: &CloudObject) -> bool {
        let kind_ok = match self.kind {
            None => true,
            Some(RuleKind::Microsoft365) => group_kind(g) == GroupKind::Microsoft365,
            Some(RuleKind::Security) => group_kind(g) == GroupKind::Security,
            Some(RuleKind::Dynamic) => g.group_types.iter().any(|t| t.eq_ignore_ascii_case("DynamicMembership")),
        };
        let name_ok = self.name.as_deref().is_none_or(|p| glob(p, g.name()));
        let id_ok = self.ids.is_empty() || self.ids.contains(&g.id);
        kind_ok && name_ok && id_ok
    }

    /// The rule in a few words, for `show`.
    pub fn describe(&self, index: usize) -> String {
        let mut parts = Vec::new();
        if let Some(k) = self.kind {
            parts.push(format!("kind = {}", serde_kebab(k)));
        }
        if let Some(n) = &self.name {
            parts.push(format!("name = \"{n}\""));
        }
        if !self.ids.is_empty() {
            parts.push(format!("{} listed ids", self.ids.len()));
        }
        let what = if parts.is_empty() { "every group".to_string() } else { parts.join(", ") };
        format!("rule {} ({what})", index + 1)
    }

    /// Problems a person must fix in the config.
    pub fn validate(&self, index: usize) -> Result<(), String> {
        let at = format!("[[rules]] #{}", index + 1);
        match (self.action, &self.group_type) {
            (RuleAction::Exclude, Some(_)) => {
                return Err(format!("{at}: group_type only goes with action = \"include\""))
            }
            (_, Some(t))
                if !["universalSecurityGroup", "universalDistributionGroup", "universalMailEnabledSecurityGroup"]
                    .contains(&t.as_str()) =>
            {
                return Err(format!(
                    "{at}: group_type \"{t}\" is not universalSecurityGroup, \
                    universalDistributionGroup or universalMailEnabledSecurityGroup"
                ));
            }
            (RuleAction::Include, Some(t))
                if self.kind == Some(RuleKind::Security) && t != "universalSecurityGroup" =>
            {
                return Err(format!(
                    "{at}: security groups can only be written back as universalSecurityGroup, not {t}"
                ));
            }
            _ => {}
        }
        if self.action == RuleAction::Exclude && self.target_ou.is_some() {
            return Err(format!("{at}: target_ou only goes with action = \"include\""));
        }
        if self.target_ou.as_deref().is_some_and(|ou| !ou.contains('=')) {
            return Err(format!("{at}: target_ou must be a DN such as \"OU=Groups,DC=corp,DC=example,DC=com\""));
        }
        Ok(())
    }
}

fn serde_kebab(k: RuleKind) -> &'static str {
    match k {
        RuleKind::Microsoft365 => "microsoft365",
        RuleKind::Security => "security",
        RuleKind::Dynamic => "dynamic",
    }
}

/// Case-insensitive glob with `*` and `?` (iterative, no backtracking blow-up).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, t, want) in [
            ("SG-*", "sg-finance", true),
            ("SG-*", "XSG-finance", false),
            ("*-Admins", "Tier1-Admins", true),
            ("Team ?", "Team A", true),
            ("Team ?", "Team AB", false),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn validation_names_the_rule() {
        let r = Rule {
            kind: Some(RuleKind::Security),
            name: None,
            ids: vec![],
            action: RuleAction::Include,
            group_type: Some("universalDistributionGroup".into()),
            target_ou: None,
        };
        assert!(r.validate(1).expect_err("invalid").starts_with("[[rules]] #2"));
    }
}
