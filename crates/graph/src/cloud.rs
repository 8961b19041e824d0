//! The few writes: `writebackConfiguration` on groups, and the tenant's
//! `NewUnifiedGroupWritebackDefault` (Group.Unified directory setting). They need
//! Group.ReadWrite.All and Directory.ReadWrite.All; the reader never calls them.

use serde_json::{json, Value};

use crate::{GraphClient, GraphError};

/// The Group.Unified setting template (Graph documentation).
pub const GROUP_UNIFIED_TEMPLATE: &str = "62375ab9-6b52-47ed-826b-58e47e0e304b";
const SETTING: &str = "NewUnifiedGroupWritebackDefault";

/// The tenant's default for new Microsoft 365 groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroupDefault {
    pub enabled: bool,
    /// The Group.Unified settings object, if the tenant has one (else the template default applies).
    pub setting_id: Option<String>,
}

impl GraphClient {
    /// PATCHes groups in `$batch`es; every id gets Ok or the error Graph gave.
    pub async fn patch_groups(&self, patches: &[(String, Value)]) -> Vec<(String, Result<(), String>)> {
        let reqs: Vec<(String, Value)> = patches
            .iter()
            .map(|(id, body)| {
                (
                    id.clone(),
                    json!({
                        "method": "PATCH",
                        "url": format!("/groups/{id}"),
                        "body": body,
                        "headers": {"Content-Type": "application/json"}
                    }),
                )
            })
            .collect();
        let mut out: Vec<(String, Result<(), String>)> = self
            .batch(&reqs)
            .await
            .into_iter()
            .map(|(id, r)| (id, r.map(|_| ()).map_err(|(status, msg)| format!("Graph answered {status}: {msg}"))))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    async fn group_unified(&self) -> Result<Option<Value>, GraphError> {
        let all = self.get_all(&format!("{}/v1.0/groupSettings", self.cfg.graph_url)).await?;
        Ok(all.into_iter().find(|s| {
            s["templateId"].as_str().is_some_and(|t| t.eq_ignore_ascii_case(GROUP_UNIFIED_TEMPLATE))
                || s["displayName"] == "Group.Unified"
        }))
    }

    /// Reads `NewUnifiedGroupWritebackDefault`; without a Group.Unified object the template
    /// default (true) applies.
    pub async fn new_group_default(&self) -> Result<NewGroupDefault, GraphError> {
        let Some(s) = self.group_unified().await? else {
            return Ok(NewGroupDefault { enabled: true, setting_id: None });
        };
        let value = s["values"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == SETTING)
            .and_then(|v| v["value"].as_str())
            .unwrap_or("true");
        Ok(NewGroupDefault {
            enabled: !value.eq_ignore_ascii_case("false"),
            setting_id: s["id"].as_str().map(String::from),
        })
    }

    /// Sets it, creating the Group.Unified object from its template (all its defaults, this one
    /// changed) when the tenant has none. An existing object is read, PATCHed with its whole
    /// `values` list with only this value changed (Graph "Update groupSetting",
    /// api-reference/v1.0/api/groupsetting-update.md: "You must include the entire collection
    /// set. You cannot update a single set of values." — a PATCH of one value would drop the
    /// tenant's other Group.Unified settings), then read back to prove nothing else moved.
    pub async fn set_new_group_default(&self, enabled: bool) -> Result<DefaultChange, GraphError> {
        let value = if enabled { "true" } else { "false" };
        let Some(before) = self.group_unified().await? else { return self.create_group_unified(value).await };
        let id = before["id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| GraphError::Invalid("the tenant's Group.Unified setting has no id".into()))?;
        let old = setting_values(&before)?;
        let current = old.iter().find(|(n, _)| n == SETTING).map(|(_, v)| v.clone());
        if current.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(value)) {
            return Ok(DefaultChange::Unchanged { setting_id: id.to_string() });
        }
        let mut values: Vec<Value> = old.iter().map(|(n, v)| json!({"name": n, "value": v})).collect();
        match values.iter_mut().find(|v| v["name"] == SETTING) {
            Some(v) => v["value"] = json!(value),
            None => values.push(json!({"name": SETTING, "value": value})),
        }
        let url = format!("{}/v1.0/groupSettings/{id}", self.cfg.graph_url);
        self.request(reqwest::Method::PATCH, &url, Some(&json!({ "values": values }))).await?;
        let after = setting_values(&self.get(&url).await?)?;
        let lost = changed_besides(&old, &after, value);
        if !lost.is_empty() {
            return Err(GraphError::Invalid(format!(
                "after the update Graph reports other Group.Unified values changed too \
                    ({}); set them back in the Entra admin center (Groups → Settings) or \
                    with Graph",
                lost.join("; ")
            )));
        }
        let kept = old.iter().filter(|(n, _)| n != SETTING).count();
        Ok(DefaultChange::Updated { setting_id: id.to_string(), from: current, kept })
    }

    async fn create_group_unified(&self, value: &str) -> Result<DefaultChange, GraphError> {
        let template =
            self.get(&format!("{}/v1.0/groupSettingTemplates/{GROUP_UNIFIED_TEMPLATE}", self.cfg.graph_url)).await?;
        let values: Vec<Value> = template["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(|n| (n, v["defaultValue"].as_str().unwrap_or(""))))
            .map(|(n, d)| json!({"name": n, "value": if n == SETTING { value } else { d }}))
            .collect();
        let url = format!("{}/v1.0/groupSettings", self.cfg.graph_url);
        let created = self
            .request(
                reqwest::Method::POST,
                &url,
                Some(&json!({"templateId": GROUP_UNIFIED_TEMPLATE, "values": values})),
            )
            .await?;
        let setting_id = created.as_ref().and_then(|c| c["id"].as_str()).unwrap_or_default().to_string();
        Ok(DefaultChange::Created { setting_id, values: values.len() })
    }
}

/// What `set_new_group_default` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultChange {
    /// The value was already so: nothing was sent.
    Unchanged { setting_id: String },
    /// The tenant had no Group.Unified setting: one was created from the template.
    Created { setting_id: String, values: usize },
    /// Changed from `from` (absent: not in the list before); `kept` other values read back unchanged.
    Updated { setting_id: String, from: Option<String>, kept: usize },
}

/// A setting object's `values` as (name, value) pairs; a value that is not a string is an error
/// (sending it back as something else would change it).
fn setting_values(setting: &Value) -> Result<Vec<(String, String)>, GraphError> {
    let values = setting["values"]
        .as_array()
        .ok_or_else(|| GraphError::Invalid("the Group.Unified setting has no values list".into()))?;
    values
        .iter()
        .map(|v| match (v["name"].as_str(), v["value"].as_str()) {
            (Some(n), Some(val)) => Ok((n.to_string(), val.to_string())),
            _ => Err(GraphError::Invalid(format!("the Group.Unified setting has a value writeback cannot read: {v}"))),
        })
        .collect()
}

/// The values other than NewUnifiedGroupWritebackDefault that differ between `before` and
/// `after` (or that one, when it is not `wanted`), as "name: 'old' → 'new'".
fn changed_besides(before: &[(String, String)], after: &[(String, String)], wanted: &str) -> Vec<String> {
    let get = |list: &[(String, String)], name: &str| list.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut names: Vec<&str> = before.iter().chain(after).map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, a) = (get(before, name), get(after, name));
            let ok =
                if name == SETTING { a.as_deref().is_some_and(|a| a.eq_ignore_ascii_case(wanted)) } else { a == b };
            let show = |v: Option<String>| v.map(|v| format!("'{v}'")).unwrap_or_else(|| "(absent)".into());
            (!ok).then(|| format!("{name}: {} → {}", show(b), show(a)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_the_writeback_default_may_change() {
        let before = pairs(&[("EnableGroupCreation", "false"), (SETTING, "true"), ("UsageGuidelinesUrl", "https://x")]);
        let good = pairs(&[("EnableGroupCreation", "false"), (SETTING, "false"), ("UsageGuidelinesUrl", "https://x")]);
        assert!(changed_besides(&before, &good, "false").is_empty());
        let lost = pairs(&[(SETTING, "false")]);
        assert_eq!(
            changed_besides(&before, &lost, "false"),
            vec!["EnableGroupCreation: 'false' → (absent)", "UsageGuidelinesUrl: 'https://x' → (absent)"]
        );
        assert_eq!(
            changed_besides(&before, &before, "false"),
            vec!["NewUnifiedGroupWritebackDefault: 'true' → 'true'"]
        );
        assert!(setting_values(&json!({"values": [{"name": "A", "value": 1}]})).is_err());
    }
}
