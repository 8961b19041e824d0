//! What writeback reads: every group, the members of the groups in scope, the recycle bin.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize as _;
use serde_json::{json, Value};
use writeback_core::{naming, Check, CloudId, CloudObject, MemberRead};

use crate::client::{collect_page, retry_after};
use crate::{GraphClient, GraphError};

/// Group properties writeback needs (and no more). `writebackConfiguration` is beta-only.
pub const GROUP_SELECT: &str = "id,displayName,description,groupTypes,securityEnabled,mailEnabled,mail,mailNickname,\
                                 proxyAddresses,onPremisesSyncEnabled,onPremisesSecurityIdentifier,\
                                 writebackConfiguration";
/// Member properties: enough to resolve users and synced groups in AD and to decide the
/// scope of nested cloud groups.
pub const MEMBER_SELECT: &str = "id,displayName,groupTypes,securityEnabled,mailEnabled,onPremisesSyncEnabled,\
                                  onPremisesSecurityIdentifier,onPremisesImmutableId,writebackConfiguration,deviceId";
/// `$batch` holds at most 20 requests.
const BATCH: usize = 20;
/// Rounds of re-batching throttled requests before a group's read counts as incomplete.
const BATCH_ROUNDS: u32 = 8;
/// `$batch` requests in flight at once: Graph answers a batch in a few hundred milliseconds,
/// so reading 10,000 groups one batch at a time would take minutes. Graph's own limit is
/// per app and tenant, and throttled requests are retried after `Retry-After`.
const BATCHES_IN_FLIGHT: usize = 4;

/// Where each page of members goes once read (see `members_of_sharing`).
pub type PageSink = tokio::sync::mpsc::UnboundedSender<Vec<Arc<CloudObject>>>;

/// One sub-request's answer: the body, or (HTTP status, Graph's message).
type SubAnswer = Result<Value, (u16, String)>;

/// What one `$batch` gave: answers, requests to send again, and how long to wait first.
struct BatchAnswer {
    done: Vec<(String, SubAnswer)>,
    retry: Vec<(String, Value)>,
    wait: Duration,
}

/// Parses one Graph object; objects without a valid id or of the wrong shape are rejected.
pub(crate) fn parse_object(v: &Value) -> Result<CloudObject, (String, String)> {
    let id = v.get("id").and_then(Value::as_str).unwrap_or("").to_string();
    let label = if id.is_empty() { "(object without an id)".to_string() } else { id.chars().take(80).collect() };
    if !naming::is_guid(&id) {
        return Err((label, "Graph sent an object whose id is not a GUID; it is ignored".into()));
    }
    // The id is a CloudId: kept in lower case by its type.
    CloudObject::deserialize(v).map_err(|e| (label, format!("Graph sent a malformed object ({e}); it is ignored")))
}

impl GraphClient {
    /// What reads of groups `$select`: `GROUP_SELECT` and the properties rules and mappings
    /// read (for the delta query, without directory extensions).
    pub(crate) fn group_select(&self, for_delta: bool) -> String {
        let extra =
            writeback_core::properties::to_select(self.cfg.group_properties.iter().map(String::as_str), for_delta);
        let mut select = GROUP_SELECT.to_string();
        for p in extra {
            select.push(',');
            select.push_str(&p);
        }
        select
    }

    /// One group as Graph sent it, with the properties rules and mappings read kept aside.
    pub(crate) fn parse_group(&self, v: &Value) -> Result<CloudObject, (String, String)> {
        let mut g = parse_object(v)?;
        for p in &self.cfg.group_properties {
            if let Some(value) = v.get(p) {
                g.extra.insert(p.clone(), value.clone());
            }
        }
        Ok(g)
    }

    pub(crate) fn beta(&self, path: &str) -> String {
        format!("{}/beta{path}", self.cfg.graph_url)
    }

    /// Every group of the tenant. Malformed objects come back separately; a failed page fails
    /// the whole listing (a partial listing would look like deletions).
    pub async fn list_groups(&self) -> Result<(Vec<CloudObject>, Vec<(String, String)>), GraphError> {
        let select = self.group_select(false);
        let items = self.get_all(&self.beta(&format!("/groups?$select={select}&$top=999"))).await?;
        let mut groups = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        for v in &items {
            match self.parse_group(v) {
                Ok(g) => groups.push(g),
                Err(r) => rejected.push(r),
            }
        }
        Ok((groups, rejected))
    }

    /// The groups whose display name is exactly `name`: `$filter=displayName eq '…'` (group
    /// resource, "displayName … Supports $filter (eq, ne, not, ge, le, in, startsWith)"; a quote
    /// is doubled as OData requires). Graph may compare without case; the caller does not rely
    /// on either.
    pub async fn groups_named(&self, name: &str) -> Result<Vec<CloudObject>, GraphError> {
        let filter = format!("displayName eq '{}'", name.replace('\'', "''"));
        // Spaces as %20: a `+` is not a space everywhere.
        let filter = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect::<String>().replace('+', "%20");
        let select = self.group_select(false);
        let items = self.get_all(&self.beta(&format!("/groups?$filter={filter}&$select={select}"))).await?;
        Ok(items.iter().filter_map(|v| self.parse_group(v).ok()).collect())
    }

    /// Members of each group, read in `$batch`es of 20 (later pages one by one).
    /// A group whose read fails is `Incomplete`, never a short list.
    pub async fn members_of(&self, ids: &[CloudId]) -> HashMap<CloudId, MemberRead> {
        self.related(ids, "members", &mut HashMap::new(), None).await
    }

    /// `members_of` in parts: members met in an earlier part (`shared`) are shared, not copied.
    /// The members of each later page of a large group also go to `pages` as soon as it is
    /// read, so that they can be looked up while the next pages are read.
    pub async fn members_of_sharing(
        &self,
        ids: &[CloudId],
        shared: &mut HashMap<CloudId, Arc<CloudObject>>,
        pages: Option<&PageSink>,
    ) -> HashMap<CloudId, MemberRead> {
        self.related(ids, "members", shared, pages).await
    }

    /// Owners of each group, read like members.
    pub async fn owners_of(&self, ids: &[CloudId]) -> HashMap<CloudId, MemberRead> {
        self.related(ids, "owners", &mut HashMap::new(), None).await
    }

    async fn related(
        &self,
        ids: &[CloudId],
        relation: &str,
        shared: &mut HashMap<CloudId, Arc<CloudObject>>,
        pages: Option<&PageSink>,
    ) -> HashMap<CloudId, MemberRead> {
        let reqs: Vec<(String, String)> = ids
            .iter()
            .map(|id| (id.to_string(), format!("/groups/{id}/{relation}?$select={MEMBER_SELECT}&$top=999")))
            .collect();
        let mut out = HashMap::new();
        for (id, res) in self.batch_get(&reqs).await {
            let read = match res {
                Ok(body) => self.rest_of_members(body, &id, shared, pages).await,
                Err((status, msg)) => {
                    MemberRead::Incomplete(format!("Graph answered {status} for the {relation}: {msg}"))
                }
            };
            out.insert(CloudId::new(id), read);
        }
        out
    }

    /// GETs sent in `$batch`es of 20 (relative URLs under /beta); throttled requests are retried
    /// after the longest `Retry-After`. Every key gets its first-page body or (status, message).
    pub(crate) async fn batch_get(&self, reqs: &[(String, String)]) -> HashMap<String, Result<Value, (u16, String)>> {
        let reqs: Vec<(String, Value)> =
            reqs.iter().map(|(k, url)| (k.clone(), json!({"method": "GET", "url": url}))).collect();
        self.batch(&reqs).await
    }

    /// Requests (each `{"method", "url", …}` without an id) sent in `$batch`es of 20, a few
    /// batches in flight at once; throttled requests are batched again after `Retry-After`.
    pub(crate) async fn batch(&self, reqs: &[(String, Value)]) -> HashMap<String, Result<Value, (u16, String)>> {
        use futures_util::stream::{self, StreamExt};
        let mut out = HashMap::new();
        let mut pending: Vec<(String, Value)> = reqs.to_vec();
        let mut round = 0;
        while !pending.is_empty() {
            round += 1;
            let mut retry = Vec::new();
            let mut wait = Duration::ZERO;
            {
                let mut answers = stream::iter(pending.chunks(BATCH))
                    .map(|chunk| self.send_batch(chunk, round))
                    .buffer_unordered(BATCHES_IN_FLIGHT);
                while let Some(answer) = answers.next().await {
                    out.extend(answer.done);
                    retry.extend(answer.retry);
                    wait = wait.max(answer.wait);
                }
            }
            if !retry.is_empty() {
                tracing::info!(
                    requests = retry.len(),
                    wait_s = wait.as_secs_f64(),
                    "Graph throttled part of a batch; retrying those"
                );
                tokio::time::sleep(wait).await;
            }
            pending = retry;
        }
        out
    }

    /// One `$batch` of at most 20 requests.
    async fn send_batch(&self, chunk: &[(String, Value)], round: u32) -> BatchAnswer {
        let mut answer = BatchAnswer { done: Vec::new(), retry: Vec::new(), wait: Duration::ZERO };
        let requests: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, (_, req))| {
                let mut r = req.clone();
                r["id"] = json!(i.to_string());
                r
            })
            .collect();
        let resp = match self
            .request(reqwest::Method::POST, &self.beta("/$batch"), Some(&json!({ "requests": requests })))
            .await
        {
            Ok(r) => r,
            // A throttled batch can fail as a whole with 424 (throttling.md up to 2024: "The batch
            // itself fails with a status code of 424"): all of it is sent again in the next round,
            // after its Retry-After, as throttled requests are. (429, 503 and 504 were already
            // retried by `request`; this adds no second layer of waits to those.)
            Err(GraphError::Api { status: 424 | 500 | 502, retry_after, .. }) if round < BATCH_ROUNDS => {
                self.stats.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                answer.retry = chunk.to_vec();
                answer.wait = retry_after.unwrap_or_else(|| crate::client::backoff(round));
                return answer;
            }
            Err(e) => {
                answer.done = chunk.iter().map(|(key, _)| (key.clone(), Err((0, e.to_string())))).collect();
                return answer;
            }
        };
        // Moved out of the response, not copied: a batch of member pages is megabytes.
        let responses = match resp.and_then(|mut r| r.get_mut("responses").map(Value::take)) {
            Some(Value::Array(responses)) => responses,
            _ => Vec::new(),
        };
        let mut answered = BTreeSet::new();
        for mut r in responses {
            let Some(i) = r["id"].as_str().and_then(|s| s.parse::<usize>().ok()).filter(|i| *i < chunk.len()) else {
                continue;
            };
            answered.insert(i);
            let status = r["status"].as_u64().unwrap_or(0) as u16;
            if matches!(status, 429 | 503 | 504) && round < BATCH_ROUNDS {
                self.stats.throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let header = r["headers"]["Retry-After"].as_str().or(r["headers"]["retry-after"].as_str());
                // No Retry-After: back off (throttling.md), with jitter.
                answer.wait = answer.wait.max(retry_after(header).unwrap_or_else(|| crate::client::backoff(round)));
                answer.retry.push(chunk[i].clone());
            } else if (200..300).contains(&status) {
                answer.done.push((chunk[i].0.clone(), Ok(r.get_mut("body").map(Value::take).unwrap_or_default())));
            } else {
                let msg = r["body"]["error"]["message"].as_str().unwrap_or("no message").to_string();
                answer.done.push((chunk[i].0.clone(), Err((status, msg))));
            }
        }
        for (i, (key, _)) in chunk.iter().enumerate() {
            if !answered.contains(&i) {
                answer.done.push((key.clone(), Err((0, "the batch response had no answer for this request".into()))));
            }
        }
        answer
    }

    /// The first page came in a batch; follow the next links and parse every member. A member
    /// seen before (in another group, identical) is shared, not copied.
    async fn rest_of_members(
        &self,
        first: Value,
        id: &str,
        shared: &mut HashMap<CloudId, Arc<CloudObject>>,
        pages: Option<&PageSink>,
    ) -> MemberRead {
        let mut members: Vec<Arc<CloudObject>> = Vec::new();
        let (mut page, mut url) = (first, "$batch".to_string());
        loop {
            let (mut items, mut next) = (Vec::new(), None);
            if let Err(e) = collect_page(page, &url, &mut items, &mut next) {
                return MemberRead::Incomplete(e.to_string());
            }
            let start = members.len();
            for v in &items {
                match parse_object(v) {
                    Ok(m) => match shared.get(&m.id) {
                        Some(seen) if **seen == m => members.push(Arc::clone(seen)),
                        _ => {
                            let m = Arc::new(m);
                            shared.insert(m.id.clone(), Arc::clone(&m));
                            members.push(m);
                        }
                    },
                    Err((mid, why)) => return MemberRead::Incomplete(format!("member {mid} of group {id}: {why}")),
                }
            }
            // First pages come in `$batch`es for many groups at once; later pages of a large
            // group one by one, so those are worth looking up while the next is read.
            if let Some(sink) = pages.filter(|_| start > 0) {
                // The receiver only looks members up; if it is gone, nobody needs the page.
                let _ = sink.send(members[start..].to_vec());
            }
            let Some(next) = next else {
                return MemberRead::Complete(members);
            };
            page = match self.get(&next).await {
                Ok(p) => p,
                Err(e) => return MemberRead::Incomplete(e.to_string()),
            };
            url = next;
        }
    }

    /// Ids of the groups in the recycle bin.
    pub async fn soft_deleted_groups(&self) -> Result<BTreeSet<CloudId>, GraphError> {
        let items = self
            .get_all(&format!(
                "{}/v1.0/directory/deletedItems/microsoft.graph.group?$select=id&$top=999",
                self.cfg.graph_url
            ))
            .await?;
        Ok(items.iter().filter_map(|v| v["id"].as_str()).map(CloudId::new).collect())
    }

    /// Preflight: a token, then one read of groups (beta, with writebackConfiguration) and users.
    pub async fn check(&self) -> Vec<Check> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut out = vec![self.cfg.expiry_check(now)];
        match self.token().await {
            Ok(_) => {
                let accepted = format!("client credentials accepted by {}", self.cfg.login_url);
                out.push(Check::new("Graph token", Ok(accepted)));
            }
            Err(e) => {
                out.push(Check::new("Graph token", Err(e.to_string())));
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
            out.push(Check::new(name, res));
        }
        out.push(Check::new("Graph members' on-premises properties", self.check_members_readable().await));
        // delta-query-overview.md: delta queries are available on the public cloud, the US
        // Government clouds and the one operated by 21Vianet (group-delta.md: all four national
        // deployments): every environment writeback knows.
        let delta = format!(
            "available at {} (groups and users): a change reaches AD within one [daemon] interval",
            self.cfg.graph_url
        );
        out.push(Check::new("Graph delta queries", Ok(delta)));
        out
    }

    /// Reads one user member of the first groups that have one: an app that may list members
    /// but not read users gets them with their type and id only (permissions-overview.md,
    /// "limited information"), and writeback would not know who is synced.
    async fn check_members_readable(&self) -> Result<String, String> {
        let groups = self.get(&self.beta("/groups?$select=id&$top=20")).await.map_err(|e| e.to_string())?;
        for id in groups["value"].as_array().into_iter().flatten().filter_map(|g| g["id"].as_str()) {
            // No OData cast: Graph wants ConsistencyLevel and $count with one (advanced queries).
            let url = self.beta(&format!("/groups/{id}/members?$select={MEMBER_SELECT}&$top=10"));
            let Ok(page) = self.get(&url).await else { continue };
            let users = page["value"].as_array().into_iter().flatten();
            let Some(user) = users.into_iter().find(|m| m["@odata.type"] == "#microsoft.graph.user") else { continue };
            return match parse_object(user) {
                Ok(u) if u.unreadable() => Err(format!(
                    "user {} comes back with its id only (limited information): grant \
                        User.Read.All, or members cannot be told synced from cloud-only and \
                        their removals are held back",
                    u.id
                )),
                Ok(_) => Ok("readable (checked on one user member)".to_string()),
                Err((_, why)) => Err(why),
            };
        }
        Ok("no group with a user member to check yet".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_objects_are_rejected_one_by_one() {
        assert!(parse_object(&json!({"id": "not-a-guid"})).is_err());
        assert!(parse_object(&json!({"displayName": "no id"})).is_err());
        assert!(parse_object(&json!({
            "id": "3a5c3221-c465-48c0-95b8-e9305786a271",
            "securityEnabled": "yes"
        }))
        .is_err());
        let ok =
            parse_object(&json!({"id": "3A5C3221-C465-48C0-95B8-E9305786A271", "displayName": "x".repeat(100_000)}))
                .expect("valid");
        assert_eq!(ok.id, "3a5c3221-c465-48c0-95b8-e9305786a271");
    }
}
