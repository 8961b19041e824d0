//! Attribute mappings (`[[mappings]]`): `description`, `info`, `extensionAttribute1..15`,
//! `sAMAccountName` or `cn` from a template over group properties — text with `{…}` holes
//! that hold a property name, a "string", a number or a call of the functions Cloud Sync's
//! expressions have: `Left(s, n)`, `Trim(s)`, `ToLower(s)`, `ToUpper(s)`, `Replace(s, old,
//! new)`, `Default(s, fallback)`. `{{` and `}}` are braces. A property with several values
//! gives its first; one Graph did not send gives "".

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::CloudObject;

/// What a mapping may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    Description,
    Info,
    /// 1..=15 (Exchange's schema: checked against the DC's at the start of a cycle).
    ExtensionAttribute(u8),
    SamAccountName,
    Cn,
}

const EXTENSION_ATTRIBUTES: [&str; 15] = [
    "extensionAttribute1",
    "extensionAttribute2",
    "extensionAttribute3",
    "extensionAttribute4",
    "extensionAttribute5",
    "extensionAttribute6",
    "extensionAttribute7",
    "extensionAttribute8",
    "extensionAttribute9",
    "extensionAttribute10",
    "extensionAttribute11",
    "extensionAttribute12",
    "extensionAttribute13",
    "extensionAttribute14",
    "extensionAttribute15",
];

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let lower = s.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "description" => Target::Description,
            "info" => Target::Info,
            "samaccountname" => Target::SamAccountName,
            "cn" => Target::Cn,
            _ => match lower.strip_prefix("extensionattribute").and_then(|n| n.parse::<u8>().ok()) {
                Some(n @ 1..=15) => Target::ExtensionAttribute(n),
                _ => {
                    return Err(format!(
                        "attribute \"{s}\" cannot be mapped: description, info, extensionAttribute1..15, \
                         sAMAccountName or cn"
                    ))
                }
            },
        })
    }

    /// The LDAP attribute name.
    pub fn ldap_name(self) -> &'static str {
        match self {
            Target::Description => "description",
            Target::Info => "info",
            Target::ExtensionAttribute(n) => EXTENSION_ATTRIBUTES[usize::from(n.clamp(1, 15)) - 1],
            Target::SamAccountName => "sAMAccountName",
            Target::Cn => "cn",
        }
    }

    /// The longest value AD holds (rangeUpper, in characters).
    pub fn max_len(self) -> usize {
        match self {
            Target::Description | Target::Info => 1024,
            Target::ExtensionAttribute(n) if n <= 10 => 1024,
            Target::ExtensionAttribute(_) => 2048,
            Target::SamAccountName | Target::Cn => 64,
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.ldap_name())
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Target, D::Error> {
        Target::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// One `[[mappings]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    pub attribute: Target,
    pub value: Template,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Expr {
    Property(String),
    Text(String),
    Number(usize),
    Call(Func, Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Func {
    Left,
    Trim,
    ToLower,
    ToUpper,
    Replace,
    Default,
}

impl Func {
    fn parse(name: &str) -> Option<(Func, usize)> {
        Some(match name {
            "Left" => (Func::Left, 2),
            "Trim" => (Func::Trim, 1),
            "ToLower" => (Func::ToLower, 1),
            "ToUpper" => (Func::ToUpper, 1),
            "Replace" => (Func::Replace, 3),
            "Default" => (Func::Default, 2),
            _ => return None,
        })
    }
}

/// A compiled template, compared and hashed by its text.
#[derive(Clone, Debug)]
pub struct Template {
    source: String,
    parts: Vec<Expr>,
}

impl PartialEq for Template {
    fn eq(&self, other: &Template) -> bool {
        self.source == other.source
    }
}

impl Eq for Template {}

impl std::hash::Hash for Template {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.source.hash(h)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Template, D::Error> {
        Template::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A cursor over a hole's text.
struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn skip_spaces(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, String> {
        if depth > 16 {
            return Err("functions nest too deep".into());
        }
        self.skip_spaces();
        match self.s.get(self.at) {
            Some(b'"') => {
                self.at += 1;
                let start = self.at;
                while self.s.get(self.at).is_some_and(|c| *c != b'"') {
                    self.at += 1;
                }
                if self.at >= self.s.len() {
                    return Err("a string has no closing \"".into());
                }
                let t = self.text[start..self.at].to_string();
                self.at += 1;
                Ok(Expr::Text(t))
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.s.get(self.at).is_some_and(u8::is_ascii_digit) {
                    self.at += 1;
                }
                self.text[start..self.at].parse().map(Expr::Number).map_err(|e| e.to_string())
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.at;
                while self.s.get(self.at).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
                    self.at += 1;
                }
                let name = &self.text[start..self.at];
                self.skip_spaces();
                if self.s.get(self.at) != Some(&b'(') {
                    crate::properties::classify(name)?;
                    return Ok(Expr::Property(name.to_string()));
                }
                let Some((func, arity)) = Func::parse(name) else {
                    return Err(format!("unknown function {name}: Left, Trim, ToLower, ToUpper, Replace or Default"));
                };
                self.at += 1;
                let mut args = Vec::new();
                loop {
                    args.push(self.expr(depth + 1)?);
                    self.skip_spaces();
                    match self.s.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b')') => {
                            self.at += 1;
                            break;
                        }
                        _ => return Err(format!("{name}( … needs a , or a )")),
                    }
                }
                if args.len() != arity {
                    return Err(format!("{name} takes {arity} arguments, not {}", args.len()));
                }
                if func == Func::Left && !matches!(args[1], Expr::Number(_)) {
                    return Err("Left's second argument is a number".into());
                }
                Ok(Expr::Call(func, args))
            }
            _ => Err("expected a property, a \"string\", a number or a function".into()),
        }
    }
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = source.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|x| x.1) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|x| x.1) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &source[i + 1..];
                    let end = hole_end(rest).ok_or_else(|| format!("template \"{source}\": a {{ has no }}"))?;
                    let hole = &rest[..end];
                    let mut p = Parser { s: hole.as_bytes(), at: 0, text: hole };
                    let e = p.expr(0).map_err(|e| format!("template \"{source}\": {e}"))?;
                    p.skip_spaces();
                    if p.at != hole.len() {
                        return Err(format!("template \"{source}\": unexpected text in {{{hole}}}"));
                    }
                    if !literal.is_empty() {
                        parts.push(Expr::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(e);
                    for _ in 0..=hole.chars().count() {
                        chars.next();
                    }
                }
                '}' => return Err(format!("template \"{source}\": a }} without {{ (write }}}} for a brace)")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Expr::Text(literal));
        }
        Ok(Template { source: source.to_string(), parts })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The value for group `g`.
    pub fn eval(&self, g: &CloudObject) -> String {
        self.parts.iter().map(|e| eval(e, g)).collect()
    }

    /// The properties it reads.
    pub fn properties(&self) -> Vec<&str> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
            match e {
                Expr::Property(p) => out.push(p),
                Expr::Call(_, args) => args.iter().for_each(|a| walk(a, out)),
                Expr::Text(_) | Expr::Number(_) => {}
            }
        }
        let mut out = Vec::new();
        self.parts.iter().for_each(|e| walk(e, &mut out));
        out
    }
}

/// Where a hole's `}` is (not one inside a "string").
fn hole_end(rest: &str) -> Option<usize> {
    let mut quoted = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn eval(e: &Expr, g: &CloudObject) -> String {
    match e {
        Expr::Text(t) => t.clone(),
        Expr::Number(n) => n.to_string(),
        Expr::Property(p) => g.property(p).into_iter().next().unwrap_or_default(),
        Expr::Call(f, args) => {
            let arg = |i: usize| args.get(i).map(|a| eval(a, g)).unwrap_or_default();
            match f {
                Func::Left => {
                    let n = match args.get(1) {
                        Some(Expr::Number(n)) => *n,
                        _ => 0,
                    };
                    arg(0).chars().take(n).collect()
                }
                Func::Trim => arg(0).trim().to_string(),
                Func::ToLower => arg(0).to_lowercase(),
                Func::ToUpper => arg(0).to_uppercase(),
                Func::Replace => {
                    let (s, old) = (arg(0), arg(1));
                    if old.is_empty() {
                        s
                    } else {
                        s.replace(&old, &arg(2))
                    }
                }
                Func::Default => {
                    let v = arg(0);
                    if v.trim().is_empty() {
                        arg(1)
                    } else {
                        v
                    }
                }
            }
        }
    }
}

/// The sAMAccountName the mappings give `g`: its own mapping's, else the one made from a
/// mapped cn; `None` when neither is mapped (or the value is empty or not a valid cn).
pub fn mapped_sam(g: &CloudObject, mappings: &[Mapping]) -> Option<String> {
    let of = |t: Target| mappings.iter().find(|m| m.attribute == t).map(|m| m.value.eval(g));
    // As the planner does: a mapping that gives an empty name leaves the one made from the cn.
    let own = of(Target::SamAccountName).map(|v| crate::naming::sam_account_name(&v)).filter(|s| !s.is_empty());
    own.or_else(|| Some(crate::naming::sam_account_name(&crate::naming::mapped_cn(&of(Target::Cn)?).ok()?)))
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_evaluate_with_the_cloud_sync_functions() {
        let mut g = crate::test_world::security(1, "  Finance Team  ", None);
        g.mail_nickname = Some("Finance.Team".into());
        g.extra.insert("classification".into(), serde_json::json!("Confidential"));
        for (t, want) in [
            ("grp-{ToLower(mailNickname)}", "grp-finance.team"),
            ("{Left(Trim(displayName), 7)}", "Finance"),
            ("{Replace(Trim(displayName), \" \", \"-\")}", "Finance-Team"),
            ("{Default(description, \"none\")} / {classification}", "none / Confidential"),
            ("{{literal}} {ToUpper(\"x}y\")}", "{literal} X}Y"),
            ("{ Default( theme , \"-\" ) }", "-"),
        ] {
            assert_eq!(Template::parse(t).expect(t).eval(&g), want, "{t}");
        }
        let t = Template::parse("{Left(displayName, 3)}-{ToLower(classification)}").expect("ok");
        assert_eq!(t.properties(), vec!["displayName", "classification"]);
    }

    #[test]
    fn wrong_templates_and_targets_say_what_is_wrong() {
        for (t, says) in [
            ("{mailNickame}", "mailNickame"),
            ("{Lefty(displayName, 2)}", "unknown function Lefty"),
            ("{Left(displayName)}", "takes 2 arguments"),
            ("{Left(displayName, \"2\")}", "a number"),
            ("grp-{mailNickname", "has no }"),
            ("a } b", "without {"),
            ("{\"open}", "has no }"),
            ("{onPremisesExtensionAttributes}", "only users and devices"),
        ] {
            let e = Template::parse(t).expect_err(t);
            assert!(e.contains(says), "{t}: {e}");
        }
        assert_eq!(Target::parse("ExtensionAttribute7"), Ok(Target::ExtensionAttribute(7)));
        assert_eq!(Target::parse("extensionAttribute15").map(Target::ldap_name), Ok("extensionAttribute15"));
        assert!(Target::parse("extensionAttribute16").is_err() && Target::parse("mail").is_err());
    }
}
