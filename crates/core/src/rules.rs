//! Scoping rules (`[[rules]]`): ordered, the first that matches decides. They select groups
//! by kind, display-name pattern, id, or conditions on any group property (`all` / `any` of
//! `equals`, `glob`, `regex`), and include them (with a group type and an optional OU) or
//! exclude them, so thousands of groups can be written back without touching them.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
    /// Conditions that must all hold.
    #[serde(default)]
    pub all: Vec<Condition>,
    /// Conditions of which one must hold (when any are given).
    #[serde(default)]
    pub any: Vec<Condition>,
}

/// A condition on one group property (`property` with one of `equals`, `glob`, `regex`), or a
/// combination (`all` or `any` of conditions). A property with several values (proxyAddresses,
/// groupTypes) matches when one value does; one Graph did not send matches only `equals = ""`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub property: Option<String>,
    /// The whole value, without regard to case.
    #[serde(default)]
    pub equals: Option<String>,
    /// `*` any run of characters, `?` one; without regard to case.
    #[serde(default)]
    pub glob: Option<String>,
    /// A regular expression (the `regex` crate: linear time, no look-around), anywhere in the
    /// value unless anchored; `(?i)` for no regard to case.
    #[serde(default)]
    pub regex: Option<Pattern>,
    #[serde(default)]
    pub all: Vec<Condition>,
    #[serde(default)]
    pub any: Vec<Condition>,
}

/// A compiled regular expression, compared and hashed by its text.
#[derive(Clone, Debug)]
pub struct Pattern(Arc<regex::Regex>);

impl Pattern {
    pub fn new(source: &str) -> Result<Pattern, String> {
        regex::RegexBuilder::new(source)
            .size_limit(1 << 20)
            .build()
            .map(|r| Pattern(Arc::new(r)))
            .map_err(|e| format!("regex \"{source}\" is not valid: {e}"))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Pattern, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::new(&text).map_err(serde::de::Error::custom)
    }
}

/// Conditions nest at most this deep.
const MAX_DEPTH: usize = 8;

impl Condition {
    /// Why it holds for `g` (the property and the value that matched), or `None`.
    pub fn holds(&self, g: &CloudObject) -> Option<String> {
        if let Some(p) = &self.property {
            let values = g.property(p);
            let test = |v: &str| match (&self.equals, &self.glob, &self.regex) {
                (Some(e), _, _) => v.to_lowercase() == e.to_lowercase(),
                (_, Some(pattern), _) => glob(pattern, v),
                (_, _, Some(re)) => re.0.is_match(v),
                _ => false,
            };
            let hit = values.iter().find(|v| test(v));
            return match hit {
                Some(v) => Some(format!("{p} = \"{}\" {}", crate::naming::printable(v), self.test_text())),
                None if values.is_empty() && self.equals.as_deref() == Some("") => {
                    Some(format!("{p} is not set {}", self.test_text()))
                }
                None => None,
            };
        }
        if !self.all.is_empty() {
            let why: Option<Vec<String>> = self.all.iter().map(|c| c.holds(g)).collect();
            return why.map(|w| w.join(" and "));
        }
        self.any.iter().find_map(|c| c.holds(g))
    }

    fn test_text(&self) -> String {
        match (&self.equals, &self.glob, &self.regex) {
            (Some(e), _, _) => format!("(equals \"{e}\")"),
            (_, Some(g), _) => format!("(glob \"{g}\")"),
            (_, _, Some(r)) => format!("(regex \"{}\")", r.as_str()),
            _ => String::new(),
        }
    }

    /// Problems a person must fix in the config; `at` says where the condition is.
    pub fn validate(&self, at: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("{at}: conditions nest more than {MAX_DEPTH} deep"));
        }
        let tests = [self.equals.is_some(), self.glob.is_some(), self.regex.is_some()].iter().filter(|t| **t).count();
        let combos = [!self.all.is_empty(), !self.any.is_empty()].iter().filter(|t| **t).count();
        match (&self.property, tests, combos) {
            (Some(p), 1, 0) => crate::properties::classify(p).map(|_| ()).map_err(|e| format!("{at}: {e}")),
            (Some(p), _, 0) => Err(format!("{at}: property \"{p}\" needs exactly one of equals, glob or regex")),
            (None, 0, 1) => {
                for (i, c) in self.all.iter().chain(&self.any).enumerate() {
                    c.validate(&format!("{at}, condition {}", i + 1), depth + 1)?;
                }
                Ok(())
            }
            _ => Err(format!(
                "{at}: a condition is either property with one of equals, glob or regex, or all = [...] or \
                 any = [...] of conditions"
            )),
        }
    }

    /// The properties it reads.
    pub fn properties(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.property.as_deref().into_iter().collect();
        for c in self.all.iter().chain(&self.any) {
            out.extend(c.properties());
        }
        out
    }
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
        kind_ok && name_ok && id_ok && self.conditions_hold(g).is_some()
    }

    /// Why the rule's `all` and `any` conditions hold for `g` ("" when it has none), or `None`.
    pub fn conditions_hold(&self, g: &CloudObject) -> Option<String> {
        let all: Option<Vec<String>> = self.all.iter().map(|c| c.holds(g)).collect();
        let mut why = all?;
        if !self.any.is_empty() {
            why.push(self.any.iter().find_map(|c| c.holds(g))?);
        }
        Some(why.join(" and "))
    }

    /// The rule and why it matched `g`, for `show`: "rule 2 (kind = security): classification =
    /// \"Confidential\" (equals \"confidential\")".
    pub fn explain(&self, index: usize, g: &CloudObject) -> String {
        match self.conditions_hold(g).filter(|w| !w.is_empty()) {
            Some(why) => format!("{}: {why}", self.describe(index)),
            None => self.describe(index),
        }
    }

    /// The properties its conditions read.
    pub fn properties(&self) -> Vec<&str> {
        self.all.iter().chain(&self.any).flat_map(Condition::properties).collect()
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
        let conditions = self.all.len() + self.any.len();
        if conditions > 0 {
            parts.push(format!("{conditions} conditions"));
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
        for (i, c) in self.all.iter().enumerate() {
            c.validate(&format!("{at}, all condition {}", i + 1), 1)?;
        }
        for (i, c) in self.any.iter().enumerate() {
            c.validate(&format!("{at}, any condition {}", i + 1), 1)?;
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
            all: vec![],
            any: vec![],
        };
        assert!(r.validate(1).expect_err("invalid").starts_with("[[rules]] #2"));
    }

    fn rule(text: &str) -> Rule {
        let r: Rule = serde_json::from_str(text).expect("a rule");
        r.validate(0).expect("valid");
        r
    }

    #[test]
    fn conditions_on_any_property_with_all_and_any() {
        let ext = "extension_0123456789abcdef0123456789abcdef_costCenter";
        let mut g = crate::test_world::security(1, "SG-Finance", None);
        g.description = Some("FS-4711 finance share".into());
        g.extra.insert("classification".into(), serde_json::json!("Confidential"));
        g.extra.insert(ext.into(), serde_json::json!("4021"));
        g.proxy_addresses = vec!["SMTP:fin@contoso.com".into(), "smtp:finance@contoso.com".into()];
        let r = rule(&format!(
            r#"{{"action": "include", "all": [
                {{"property": "classification", "equals": "confidential"}},
                {{"any": [{{"property": "{ext}", "regex": "^40\\d\\d$"}}, {{"property": "mail", "equals": "x"}}]}}
            ], "any": [{{"property": "proxyAddresses", "glob": "smtp:finance@*"}}]}}"#
        ));
        assert!(r.matches(&g));
        let why = r.explain(0, &g);
        assert!(why.contains("classification = \"Confidential\" (equals \"confidential\")"), "{why}");
        assert!(why.contains(&format!("{ext} = \"4021\"")) && why.contains("smtp:finance@contoso.com"), "{why}");
        g.extra.insert(ext.into(), serde_json::json!("5021"));
        assert!(!r.matches(&g), "neither alternative of the nested any holds");
        // Absent: only equals "" matches it.
        let unset = rule(r#"{"action": "exclude", "all": [{"property": "theme", "equals": ""}]}"#);
        assert!(unset.matches(&g) && unset.explain(0, &g).contains("theme is not set"));
        let dynamic = rule(r#"{"action": "include", "all": [{"property": "membership", "equals": "dynamic"}]}"#);
        assert!(!dynamic.matches(&g));
        g.group_types.push("DynamicMembership".into());
        assert!(dynamic.matches(&g));
    }

    #[test]
    fn bad_conditions_are_named() {
        for (text, says) in [
            (r#"{"action": "include", "all": [{"property": "clasification", "equals": "x"}]}"#, "clasification"),
            (r#"{"action": "include", "all": [{"property": "mail"}]}"#, "exactly one of"),
            (r#"{"action": "include", "all": [{"property": "mail", "equals": "a", "glob": "b"}]}"#, "exactly one"),
            (r#"{"action": "include", "any": [{"all": [], "any": []}]}"#, "either property"),
            (
                r#"{"action": "include", "all": [{"property": "onPremisesExtensionAttributes.extensionAttribute1",
                    "equals": "x"}]}"#,
                "only users and devices",
            ),
        ] {
            let r: Rule = serde_json::from_str(text).expect("parses");
            let e = r.validate(2).expect_err(text);
            assert!(e.starts_with("[[rules]] #3") && e.contains(says), "{e}");
        }
        let bad = serde_json::from_str::<Rule>(r#"{"action": "include", "all": [{"property": "mail", "regex": "("}]}"#);
        assert!(bad.expect_err("invalid regex").to_string().contains("is not valid"));
    }
}
