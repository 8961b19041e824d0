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
                (id.clone(), json!({"method": "PATCH", "url": format!("/groups/{id}"), "body": body, "headers": {"Content-Type": "application/json"}}))
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
    /// changed) when the tenant has none. Returns what was done.
    pub async fn set_new_group_default(&self, enabled: bool) -> Result<&'static str, GraphError> {
        let value = if enabled { "true" } else { "false" };
        if let Some(s) = self.group_unified().await? {
            let id = s["id"].as_str().unwrap_or_default();
            let url = format!("{}/v1.0/groupSettings/{id}", self.cfg.graph_url);
            self.request(reqwest::Method::PATCH, &url, Some(&json!({"values": [{"name": SETTING, "value": value}]})))
                .await?;
            return Ok("updated the tenant's Group.Unified setting");
        }
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
        self.request(
            reqwest::Method::POST,
            &url,
            Some(&json!({"templateId": GROUP_UNIFIED_TEMPLATE, "values": values})),
        )
        .await?;
        Ok("created the tenant's Group.Unified setting from its template")
    }
}
