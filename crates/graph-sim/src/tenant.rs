//! The simulated tenant: directory objects as Graph JSON, and the OData query options
//! (`$select`, `$filter`, `$top`, paging) the engine uses.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The tenant file. Objects are stored exactly as Graph returns them; `members` and
/// `owners` of a group are lists of ids (navigation properties, never printed inline).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Tenant {
    /// The tenant's ids (its GUID, its domains) the token endpoint answers for; by default
    /// `contoso.onmicrosoft.com`, as the tests and the demo configure it.
    pub tenant_ids: Vec<String>,
    pub apps: Vec<App>,
    pub users: Vec<Value>,
    pub groups: Vec<Value>,
    pub devices: Vec<Value>,
    pub contacts: Vec<Value>,
    pub service_principals: Vec<Value>,
    pub deleted_groups: Vec<Value>,
    /// Directory settings objects (`groupSettings`), e.g. Group.Unified.
    pub group_settings: Vec<Value>,
    /// Directory roles and administrative units, with `members` (ids): `memberOf` lists them
    /// beside groups, as Graph does.
    pub directory_roles: Vec<Value>,
    pub administrative_units: Vec<Value>,
    /// Lower-case id → (collection, position): member lookups in large generated tenants
    /// must not scan every object. Rebuilt by `reindex` whenever objects come or go.
    #[serde(skip)]
    index: HashMap<String, (usize, usize)>,
}

/// An app registration allowed to get tokens.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    /// A registered certificate (PEM) for client assertions.
    #[serde(default)]
    pub certificate_pem: Option<String>,
}

/// The Group.Unified settings template (id as in Graph's documentation), with its defaults.
pub const GROUP_UNIFIED_TEMPLATE: &str = "62375ab9-6b52-47ed-826b-58e47e0e304b";
const GROUP_UNIFIED_DEFAULTS: &[(&str, &str, &str)] = &[
    ("CustomBlockedWordsList", "System.String", ""),
    ("EnableMSStandardBlockedWords", "System.Boolean", "false"),
    ("ClassificationDescriptions", "System.String", ""),
    ("DefaultClassification", "System.String", ""),
    ("PrefixSuffixNamingRequirement", "System.String", ""),
    ("AllowGuestsToBeGroupOwner", "System.Boolean", "false"),
    ("AllowGuestsToAccessGroups", "System.Boolean", "true"),
    ("GuestUsageGuidelinesUrl", "System.String", ""),
    ("GroupCreationAllowedGroupId", "System.Guid", ""),
    ("AllowToAddGuests", "System.Boolean", "true"),
    ("UsageGuidelinesUrl", "System.String", ""),
    ("ClassificationList", "System.String", ""),
    ("EnableGroupCreation", "System.Boolean", "true"),
    ("NewUnifiedGroupWritebackDefault", "System.Boolean", "true"),
    ("EnableMIPLabels", "System.Boolean", "false"),
];

/// `groupSettingTemplate` JSON for Group.Unified.
pub fn group_unified_template() -> Value {
    let values: Vec<Value> = GROUP_UNIFIED_DEFAULTS
        .iter()
        .map(|(n, t, d)| serde_json::json!({"name": n, "type": t, "defaultValue": d, "description": ""}))
        .collect();
    serde_json::json!({
        "id": GROUP_UNIFIED_TEMPLATE,
        "displayName": "Group.Unified",
        "description": "Setting templates define the different settings that can be used for \
            the associated ObjectSettings. This template defines settings that can \
            be used for Unified Groups.",
        "values": values
    })
}

/// Names every Group.Unified setting object must carry.
pub fn group_unified_names() -> impl Iterator<Item = &'static str> {
    GROUP_UNIFIED_DEFAULTS.iter().map(|(n, _, _)| *n)
}

/// Navigation properties kept in the tenant file but never printed as properties.
const NAVIGATION: &[&str] = &["members", "owners"];

const KINDS: [&str; 5] = ["user", "group", "device", "orgContact", "servicePrincipal"];

impl Tenant {
    pub fn tenant_ids(&self) -> Vec<String> {
        if self.tenant_ids.is_empty() {
            vec!["contoso.onmicrosoft.com".into()]
        } else {
            self.tenant_ids.clone()
        }
    }

    fn sets(&self) -> [&Vec<Value>; 5] {
        [&self.users, &self.groups, &self.devices, &self.contacts, &self.service_principals]
    }

    /// Rebuilds the id index; call after loading or replacing objects.
    pub fn reindex(&mut self) {
        let mut index = HashMap::new();
        for (set, objs) in self.sets().into_iter().enumerate() {
            for (i, o) in objs.iter().enumerate() {
                if let Some(id) = o.get("id").and_then(Value::as_str) {
                    index.entry(id.to_ascii_lowercase()).or_insert((set, i));
                }
            }
        }
        self.index = index;
    }

    pub fn find(&self, id: &str) -> Option<(&'static str, &Value)> {
        let &(set, i) = self.index.get(&id.to_ascii_lowercase())?;
        self.sets()[set].get(i).map(|v| (KINDS[set], v))
    }

    pub fn group(&self, id: &str) -> Option<&Value> {
        self.find(id).filter(|(k, _)| *k == "group").map(|(_, v)| v)
    }

    pub fn group_mut(&mut self, id: &str) -> Option<&mut Value> {
        let &(set, i) = self.index.get(&id.to_ascii_lowercase()).filter(|(set, _)| *set == 1)?;
        debug_assert_eq!(set, 1);
        self.groups.get_mut(i)
    }

    pub fn user_mut(&mut self, id: &str) -> Option<&mut Value> {
        let &(_, i) = self.index.get(&id.to_ascii_lowercase()).filter(|(set, _)| *set == 0)?;
        self.users.get_mut(i)
    }

    /// The objects a group's navigation property (`members`/`owners`) points at, with their kind.
    pub fn linked<'a>(&'a self, group: &'a Value, nav: &str) -> Vec<(&'static str, &'a Value)> {
        let ids = group.get(nav).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        ids.iter().filter_map(Value::as_str).filter_map(|id| self.find(id)).collect()
    }
}

/// An OData error: HTTP status, Graph error code, message.
#[derive(Debug)]
pub struct ODataError(pub u16, pub &'static str, pub String);

/// The query options of one request.
#[derive(Debug, Default)]
pub struct Query {
    pub select: Option<Vec<String>>,
    pub filter: Option<String>,
    pub top: Option<usize>,
    pub skip: usize,
}

impl Query {
    pub fn parse(pairs: &HashMap<String, String>) -> Result<Query, ODataError> {
        let mut q = Query::default();
        for (k, v) in pairs {
            match k.as_str() {
                "$select" => {
                    q.select = Some(v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                }
                "$filter" => q.filter = Some(v.clone()),
                "$top" => {
                    let top: usize = v.parse().map_err(|_| bad(format!("Invalid value '{v}' for $top")))?;
                    if !(1..=999).contains(&top) {
                        return Err(bad(format!(
                            "Invalid page size specified: '{top}'. Must be between 1 and 999 inclusive."
                        )));
                    }
                    q.top = Some(top);
                }
                "$skiptoken" => q.skip = decode_skiptoken(v).ok_or_else(|| bad("Invalid $skiptoken".into()))?,
                "$count" | "$orderby" | "$expand" | "$search" => {
                    return Err(bad(format!("The query option '{k}' is not supported by this simulator")));
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

pub fn bad(message: String) -> ODataError {
    ODataError(400, "Request_UnsupportedQuery", message)
}

pub fn encode_skiptoken(offset: usize) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("RFNwdAIAAQAAAB:{offset}"))
}

fn decode_skiptoken(token: &str) -> Option<usize> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(raw).ok()?.rsplit(':').next()?.parse().ok()
}

/// Applies `$select` (and the v1.0/beta difference) to one object.
pub fn project(obj: &Value, kind: Option<&str>, select: Option<&[String]>, beta: bool) -> Result<Value, ODataError> {
    let Some(map) = obj.as_object() else {
        return Ok(obj.clone());
    };
    let mut out = Map::new();
    if let Some(kind) = kind {
        out.insert("@odata.type".into(), Value::String(format!("#microsoft.graph.{kind}")));
    }
    let visible = |k: &str| !NAVIGATION.contains(&k) && (beta || k != "writebackConfiguration");
    match select {
        Some(props) => {
            out.insert("id".into(), map.get("id").cloned().unwrap_or(Value::Null));
            for p in props {
                if !beta && p == "writebackConfiguration" {
                    return Err(ODataError(
                        400,
                        "BadRequest",
                        "Could not find a property named 'writebackConfiguration' on type 'microsoft.graph.group'."
                            .into(),
                    ));
                }
                if p.starts_with("extension_") {
                    // A directory extension without a value is left out, not null.
                    if let Some(v) = map.get(p) {
                        out.insert(p.clone(), v.clone());
                    }
                } else if visible(p) {
                    // Graph returns null for a selected property the object type does not carry.
                    out.insert(p.clone(), map.get(p).cloned().unwrap_or(Value::Null));
                }
            }
        }
        None => {
            for (k, v) in map {
                // Directory extensions are returned only when selected.
                if visible(k) && !k.starts_with("extension_") {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// A `$filter` as the engine uses it: clauses joined by `and`.
pub fn matches(obj: &Value, filter: &str) -> Result<bool, ODataError> {
    for clause in split_and(filter) {
        if !clause_matches(obj, clause.trim())? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn split_and(filter: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    let b = filter.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b' ' if !quoted && depth == 0 && filter[i..].to_ascii_lowercase().starts_with(" and ") => {
                parts.push(&filter[start..i]);
                i += 5;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&filter[start..]);
    parts
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    s.strip_prefix('\'')?.strip_suffix('\'').map(|x| x.replace("''", "'"))
}

fn clause_matches(obj: &Value, clause: &str) -> Result<bool, ODataError> {
    let str_prop = |p: &str| obj.get(p).and_then(Value::as_str).map(str::to_string);
    if let Some(rest) = clause.strip_prefix("groupTypes/any(c:c eq ").and_then(|r| r.strip_suffix(')')) {
        let want = unquote(rest).ok_or_else(|| bad(format!("Invalid filter clause: {clause}")))?;
        let types = obj.get("groupTypes").and_then(Value::as_array).cloned().unwrap_or_default();
        return Ok(types.iter().any(|t| t.as_str() == Some(want.as_str())));
    }
    if let Some(rest) = clause.strip_prefix("startswith(").and_then(|r| r.strip_suffix(')')) {
        let (prop, val) = rest.split_once(',').ok_or_else(|| bad(format!("Invalid filter clause: {clause}")))?;
        let val = unquote(val).ok_or_else(|| bad(format!("Invalid filter clause: {clause}")))?;
        return Ok(str_prop(prop.trim()).is_some_and(|v| v.to_lowercase().starts_with(&val.to_lowercase())));
    }
    if let Some((prop, list)) = clause.split_once(" in ") {
        let list = list.trim().trim_start_matches('(').trim_end_matches(')');
        let want: Vec<String> = list.split(',').filter_map(unquote).collect();
        return Ok(str_prop(prop.trim()).is_some_and(|v| want.iter().any(|w| w.eq_ignore_ascii_case(&v))));
    }
    if let Some((prop, val)) = clause.split_once(" eq ") {
        let prop = prop.trim();
        let val = val.trim();
        return Ok(match val {
            "true" | "false" => obj.get(prop).and_then(Value::as_bool) == Some(val == "true"),
            "null" => obj.get(prop).is_none_or(Value::is_null),
            _ => {
                let want = unquote(val).ok_or_else(|| bad(format!("Invalid filter clause: {clause}")))?;
                str_prop(prop).is_some_and(|v| if prop == "id" { v.eq_ignore_ascii_case(&want) } else { v == want })
            }
        });
    }
    Err(bad(format!("Unsupported or invalid query filter clause specified: '{clause}'")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_the_engine_uses() {
        let g = json!({"id": "A", "displayName": "SG-Sales", "groupTypes": ["Unified"], "securityEnabled": false});
        for (f, want) in [
            ("groupTypes/any(c:c eq 'Unified')", true),
            ("securityEnabled eq true", false),
            ("startswith(displayName,'sg-') and securityEnabled eq false", true),
            ("id in ('b','a')", true),
            ("displayName eq 'SG-Sales'", true),
        ] {
            assert_eq!(matches(&g, f).expect(f), want, "{f}");
        }
        assert!(matches(&g, "displayName ne 'x'").is_err());
    }

    #[test]
    fn skiptoken_round_trips_and_select_projects() {
        assert_eq!(decode_skiptoken(&encode_skiptoken(42)), Some(42));
        let g = json!({"id": "A", "displayName": "x", "members": ["u"], "writebackConfiguration": {"isEnabled": true}});
        let sel = vec!["displayName".to_string(), "mail".to_string()];
        let p = project(&g, None, Some(&sel), true).expect("ok");
        assert_eq!(p, json!({"id": "A", "displayName": "x", "mail": null}));
        let full = project(&g, Some("group"), None, false).expect("ok");
        assert!(full.get("members").is_none() && full.get("writebackConfiguration").is_none());
        assert!(project(&g, None, Some(&["writebackConfiguration".to_string()]), false).is_err());
    }
}
