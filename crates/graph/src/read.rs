//! What writeback reads: every group, the members of the groups in scope, the recycle bin.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use writeback_core::{naming, CloudObject, MemberRead};

use crate::client::{collect_page, retry_after};
use crate::{GraphClient, GraphError};

/// Group properties writeback needs (and no more). `writebackConfiguration` is beta-only.
pub const GROUP_SELECT: &str = "id,displayName,description,groupTypes,securityEnabled,mailEnabled,mail,mailNickname,proxyAddresses,onPremisesSyncEnabled,onPremisesSecurityIdentifier,writebackConfiguration";
/// Member properties: enough to resolve users and synced groups in AD and to decide the
/// scope of nested cloud groups.
pub const MEMBER_SELECT: &str = "id,displayName,groupTypes,securityEnabled,mailEnabled,onPremisesSyncEnabled,onPremisesSecurityIdentifier,onPremisesImmutableId,writebackConfiguration";
/// `$batch` holds at most 20 requests.
const BATCH: usize = 20;
/// Rounds of re-batching throttled requests before a group's read counts as incomplete.
const BATCH_ROUNDS: u32 = 8;

/// Parses one Graph object; objects without a valid id or of the wrong shape are rejected.
fn parse_object(v: &Value) -> Result<CloudObject, (String, String)> {
    let id = v.get("id").and_then(Value::as_str).unwrap_or("").to_string();
    let label = if id.is_empty() { "(object without an id)".to_string() } else { id.chars().take(80).collect() };
    if !naming::is_guid(&id) {
        return Err((label, "Graph sent an object whose id is not a GUID; it is ignored".into()));
    }
    serde_json::from_value::<CloudObject>(v.clone())
        .map(|mut o| {
            o.id = o.id.to_ascii_lowercase();
            o
        })
        .map_err(|e| (label, format!("Graph sent a malformed object ({e}); it is ignored")))
}

impl GraphClient {
    fn beta(&self, path: &str) -> String {
        format!("{}/beta{path}", self.cfg.graph_url)
    }

    /// Every group of the tenant. Malformed objects come back separately; a failed page fails
    /// the whole listing (a partial listing would look like deletions).
    pub async fn list_groups(&self) -> Result<(Vec<CloudObject>, Vec<(String, String)>), GraphError> {
        let items = self.get_all(&self.beta(&format!("/groups?$select={GROUP_SELECT}&$top=999"))).await?;
        let mut groups = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        for v in &items {
            match parse_object(v) {
                Ok(g) => groups.push(g),
                Err(r) => rejected.push(r),
            }
        }
        Ok((groups, rejected))
    }

    /// Members of each group, read in `$batch`es of 20 (later pages one by one).
    /// A group whose read fails is `Incomplete`, never a short list.
    pub async fn members_of(&self, ids: &[String]) -> HashMap<String, MemberRead> {
        let mut out = HashMap::new();
        let mut pending: Vec<String> = ids.to_vec();
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            let mut retry = Vec::new();
            let mut wait = Duration::ZERO;
            for chunk in pending.chunks(BATCH) {
                match self.member_batch(chunk, &mut out).await {
                    Ok((throttled, w)) => {
                        retry.extend(throttled);
                        wait = wait.max(w);
                    }
                    Err(e) => {
                        for id in chunk {
                            out.insert(id.clone(), MemberRead::Incomplete(e.to_string()));
                        }
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            if round >= BATCH_ROUNDS {
                for id in retry {
                    out.insert(id, MemberRead::Incomplete("Graph kept throttling the member read".into()));
                }
                break;
            }
            tracing::info!(
                groups = retry.len(),
                wait_s = wait.as_secs_f64(),
                "Graph throttled part of a batch; retrying those"
            );
            tokio::time::sleep(wait).await;
            pending = retry;
        }
        out
    }

    /// One `$batch`; returns the ids to retry (throttled) and how long to wait.
    async fn member_batch(
        &self,
        ids: &[String],
        out: &mut HashMap<String, MemberRead>,
    ) -> Result<(Vec<String>, Duration), GraphError> {
        let requests: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| json!({"id": i.to_string(), "method": "GET", "url": format!("/groups/{id}/members?$select={MEMBER_SELECT}&$top=999")}))
            .collect();
        let resp =
            self.request(reqwest::Method::POST, &self.beta("/$batch"), Some(&json!({ "requests": requests }))).await?;
        let responses = resp.as_ref().and_then(|r| r["responses"].as_array()).cloned().unwrap_or_default();
        let mut retry = Vec::new();
        let mut wait = Duration::ZERO;
        let mut answered = BTreeSet::new();
        for r in responses {
            let Some(i) = r["id"].as_str().and_then(|s| s.parse::<usize>().ok()).filter(|i| *i < ids.len()) else {
                continue;
            };
            answered.insert(i);
            let id = &ids[i];
            let status = r["status"].as_u64().unwrap_or(0);
            if matches!(status, 429 | 503 | 504) {
                self.stats.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let header = r["headers"]["Retry-After"].as_str().or(r["headers"]["retry-after"].as_str());
                wait = wait.max(retry_after(header).unwrap_or(Duration::from_secs(2)));
                retry.push(id.clone());
                continue;
            }
            if status != 200 {
                let msg = r["body"]["error"]["message"].as_str().unwrap_or("no message");
                out.insert(
                    id.clone(),
                    MemberRead::Incomplete(format!("Graph answered {status} for the members: {msg}")),
                );
                continue;
            }
            let read = self.rest_of_members(&r["body"], id).await;
            out.insert(id.clone(), read);
        }
        for (i, id) in ids.iter().enumerate() {
            if !answered.contains(&i) {
                out.insert(
                    id.clone(),
                    MemberRead::Incomplete("the batch response had no answer for this group".into()),
                );
            }
        }
        Ok((retry, wait))
    }

    /// The first page came in a batch; follow the next links and parse every member.
    async fn rest_of_members(&self, first: &Value, id: &str) -> MemberRead {
        let mut items = Vec::new();
        let mut next = None;
        if let Err(e) = collect_page(first, "$batch", &mut items, &mut next) {
            return MemberRead::Incomplete(e.to_string());
        }
        if let Some(url) = next {
            match self.get_all(&url).await {
                Ok(more) => items.extend(more),
                Err(e) => return MemberRead::Incomplete(e.to_string()),
            }
        }
        let mut members = Vec::with_capacity(items.len());
        for v in &items {
            match parse_object(v) {
                Ok(m) => members.push(m),
                Err((mid, why)) => return MemberRead::Incomplete(format!("member {mid} of group {id}: {why}")),
            }
        }
        MemberRead::Complete(members)
    }

    /// Ids of the groups in the recycle bin.
    pub async fn soft_deleted_groups(&self) -> Result<BTreeSet<String>, GraphError> {
        let items = self
            .get_all(&format!(
                "{}/v1.0/directory/deletedItems/microsoft.graph.group?$select=id&$top=999",
                self.cfg.graph_url
            ))
            .await?;
        Ok(items.iter().filter_map(|v| v["id"].as_str()).map(str::to_ascii_lowercase).collect())
    }

    /// Preflight: a token, then one read of groups (beta, with writebackConfiguration) and users.
    pub async fn check(&self) -> Vec<(String, Result<String, String>)> {
        let mut out = Vec::new();
        match self.token().await {
            Ok(_) => out.push((
                "Graph token".to_string(),
                Ok(format!("client credentials accepted by {}", self.cfg.login_url)),
            )),
            Err(e) => {
                out.push(("Graph token".to_string(), Err(e.to_string())));
                return out;
            }
        }
        let probes = [
            ("Graph groups (Group.Read.All)", self.beta(&format!("/groups?$select={GROUP_SELECT}&$top=1"))),
            ("Graph users (User.Read.All)", format!("{}/v1.0/users?$select=id&$top=1", self.cfg.graph_url)),
        ];
        for (name, url) in probes {
            let res = match self.get(&url).await {
                Ok(_) => Ok("readable".to_string()),
                Err(GraphError::Api { status: 403, .. }) => {
                    Err("forbidden: grant the application permission and admin consent".to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            out.push((name.to_string(), res));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_objects_are_rejected_one_by_one() {
        assert!(parse_object(&json!({"id": "not-a-guid"})).is_err());
        assert!(parse_object(&json!({"displayName": "no id"})).is_err());
        assert!(parse_object(&json!({"id": "3a5c3221-c465-48c0-95b8-e9305786a271", "securityEnabled": "yes"})).is_err());
        let ok =
            parse_object(&json!({"id": "3A5C3221-C465-48C0-95B8-E9305786A271", "displayName": "x".repeat(100_000)}))
                .expect("valid");
        assert_eq!(ok.id, "3a5c3221-c465-48c0-95b8-e9305786a271");
    }
}
