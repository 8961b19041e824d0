//! Request handling: the token endpoint, the Graph surface writeback uses, `$batch`, fault
//! injection, the request log, and the control API for tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::delta::{Coll, Journal};
use crate::tenant::{bad, encode_skiptoken, matches, project, ODataError, Query, Tenant};

/// User properties a PATCH may set here (a subset of Graph's "Update user").
const USER_WRITABLE: &[&str] = &["displayName", "onPremisesImmutableId", "department", "jobTitle"];

/// Graph's default page size for directory collections.
const DEFAULT_PAGE: usize = 100;

/// Reads that lag the changes (see `Sim::view`).
struct Lag {
    previous: Tenant,
    /// Groups the changes touched (lower-case ids).
    changed: std::collections::HashSet<String>,
}

fn id_lower(v: &Value) -> String {
    v.get("id").and_then(Value::as_str).unwrap_or("").to_ascii_lowercase()
}

/// The answer to an expired delta token (see `Sim::expired_reply`).
#[derive(Clone, Debug, Deserialize)]
pub struct Expiry {
    pub status: u16,
    pub code: String,
    #[serde(default)]
    pub inner: Option<String>,
    #[serde(default)]
    pub location: bool,
}

impl Default for Expiry {
    fn default() -> Self {
        Expiry { status: 410, code: "syncStateNotFound".into(), inner: None, location: true }
    }
}

/// Where a fault strikes: a Graph request (also each request inside a `$batch`), the outer
/// `$batch` POST as a whole, or the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    #[default]
    Request,
    Batch,
    Token,
}

/// An injected failure: after `skip` matching requests, the next `count` get `status`.
#[derive(Clone, Debug, Deserialize)]
pub struct Fault {
    pub status: u16,
    /// The `Retry-After` header: seconds as a number or a string ("2.128": throttling.md shows
    /// decimals), or `null` for none (the client must back off by itself).
    #[serde(default = "one_second")]
    pub retry_after: Value,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default = "one_usize")]
    pub count: usize,
    #[serde(default)]
    pub skip: usize,
    #[serde(default)]
    pub path_contains: Option<String>,
    /// Instead of the first `count` requests: each matching request with this probability
    /// (deterministic sequence), until `count` faults were given.
    #[serde(default)]
    pub probability: Option<f64>,
}

fn one_second() -> Value {
    json!(1)
}

impl Fault {
    /// The `Retry-After` header value, if the fault gives one.
    pub fn retry_after_header(&self) -> Option<String> {
        match &self.retry_after {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}
fn one_usize() -> usize {
    1
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct LogEntry {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub batch: bool,
}

pub struct Sim {
    pub tenant: Tenant,
    /// The server's largest page, whatever `$top` asks (tests set it to 2).
    pub page_size: usize,
    pub token_lifetime: u64,
    pub faults: Vec<Fault>,
    pub tokens: HashMap<String, Instant>,
    pub log: Vec<LogEntry>,
    pub journal: Journal,
    /// Where `@odata.nextLink` and `@odata.deltaLink` point instead of this server (a control
    /// switch): a hostile or broken answer, to prove the client keeps its token to itself.
    pub link_base: Option<String>,
    /// Object types the app "may not read": they come back with only type and id.
    pub limited_info: Vec<String>,
    /// How an expired delta token is answered.
    pub expiry: Expiry,
    /// Reads lag the changes made while this is on (a control switch).
    lag: bool,
    lagged: Option<Lag>,
    next_id: u64,
    rng: u64,
}

/// One Graph request as the simulator sees it; `path` starts after the version segment.
pub struct Request<'a> {
    pub method: &'a str,
    pub beta: bool,
    pub path: &'a str,
    pub query: &'a str,
    pub body: Option<Value>,
    /// `http://host:port`, for `@odata.nextLink` and `@odata.context`.
    pub base: &'a str,
    pub batch: bool,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply { status, headers: vec![], body: Some(body) }
    }
    fn empty(status: u16) -> Reply {
        Reply { status, headers: vec![], body: None }
    }
}

impl Sim {
    pub fn new(mut tenant: Tenant, page_size: usize) -> Sim {
        tenant.reindex();
        Sim {
            tenant,
            page_size,
            token_lifetime: 3599,
            faults: vec![],
            tokens: HashMap::new(),
            log: vec![],
            journal: Journal::new(),
            link_base: None,
            limited_info: Vec::new(),
            expiry: Expiry::default(),
            lag: false,
            lagged: None,
            next_id: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Replaces the tenant, recording the difference for delta queries.
    pub fn replace_tenant(&mut self, mut tenant: Tenant) {
        tenant.reindex();
        self.journal.record(&self.tenant, &tenant);
        if self.lag {
            // Every group the change touched: created, changed, deleted, moved to or out of the
            // recycle bin.
            let index = |t: &Tenant| -> std::collections::HashMap<String, Value> {
                t.groups.iter().chain(&t.deleted_groups).map(|g| (id_lower(g), g.clone())).collect()
            };
            let (old, new) = (index(&self.tenant), index(&tenant));
            let in_bin =
                |t: &Tenant| -> std::collections::HashSet<String> { t.deleted_groups.iter().map(id_lower).collect() };
            let (old_bin, new_bin) = (in_bin(&self.tenant), in_bin(&tenant));
            let mut changed: std::collections::HashSet<String> =
                new.iter().filter(|(id, g)| old.get(*id) != Some(g)).map(|(id, _)| id.clone()).collect();
            changed.extend(old.keys().filter(|id| !new.contains_key(*id)).cloned());
            changed.extend(old_bin.symmetric_difference(&new_bin).cloned());
            // Reads keep showing the tenant from before the first change of the lag.
            let previous = match self.lagged.take() {
                Some(mut l) => {
                    l.changed.extend(changed);
                    l
                }
                None => Lag { previous: std::mem::take(&mut self.tenant), changed },
            };
            self.lagged = Some(previous);
        }
        self.tenant = tenant;
    }

    /// The tenant a read of group `id` sees: the one before the changes made while the lag
    /// switch is on, for the groups they touched (a read right after a change "might have
    /// replication delays for groups that were recently created, updated, or deleted":
    /// group-get.md).
    fn view(&self, id: &str) -> &Tenant {
        match &self.lagged {
            Some(l) if l.changed.contains(&id.to_ascii_lowercase()) => &l.previous,
            _ => &self.tenant,
        }
    }

    /// Turns the lag on or off (off: reads catch up at once).
    pub fn set_lag(&mut self, on: bool) {
        self.lag = on;
        if !on {
            self.lagged = None;
        }
    }

    fn error(&mut self, e: ODataError) -> Reply {
        self.next_id += 1;
        let ODataError(status, code, message) = e;
        Reply::json(
            status,
            json!({"error": {"code": code, "message": message, "innerError": {
                "date": "2026-11-24T00:00:00", "request-id": format!("00000000-0000-0000-0000-{:012}", self.next_id),
                "client-request-id": format!("00000000-0000-0000-0000-{:012}", self.next_id)}}}),
        )
    }

    /// The token endpoint: client credentials with a client secret.
    /// The token endpoint, `endpoint` being the URL it was asked at: the tenant in its path must
    /// be this tenant's, and a client assertion's `aud` must be exactly it (the identity
    /// platform's certificate credentials page: aud is https://login.microsoftonline.com/{tenant}
    /// /oauth2/v2.0/token).
    pub fn token(&mut self, form: &HashMap<String, String>, endpoint: &str) -> Reply {
        let aad_error = |status: u16, error: &str, desc: &str| {
            Reply::json(
                status,
                json!({
                    "error": error,
                    "error_description": desc,
                    "error_codes": [7000215],
                    "timestamp": "2026-11-24 00:00:00Z"
                }),
            )
        };
        let tenant = endpoint.rsplit("/oauth2/").nth(1).and_then(|p| p.rsplit('/').next()).unwrap_or("");
        if !self.tenant.tenant_ids().iter().any(|t| t.eq_ignore_ascii_case(tenant)) {
            return aad_error(
                400,
                "invalid_request",
                &format!(
                    "AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have \
                    the correct tenant ID and are signing into the correct cloud."
                ),
            );
        }
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return aad_error(
                400,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
            );
        }
        if !form.get("scope").is_some_and(|s| s.ends_with("/.default")) {
            return aad_error(
                400,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid. Client \
                credential flows must have a scope value with /.default suffixed to the \
                resource identifier.",
            );
        }
        let client_id = form.get("client_id").cloned().unwrap_or_default();
        let Some(app) = self.tenant.apps.iter().find(|a| a.client_id == client_id) else {
            return aad_error(
                400,
                "unauthorized_client",
                &format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory."),
            );
        };
        if let Some(assertion) = form.get("client_assertion") {
            if form.get("client_assertion_type").map(String::as_str)
                != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            {
                return aad_error(
                    400,
                    "invalid_request",
                    "AADSTS50027: client_assertion_type must be \
                    urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
                );
            }
            let Some(pem) = &app.certificate_pem else {
                return aad_error(
                    401,
                    "invalid_client",
                    "AADSTS700027: The certificate with identifier used to sign the client \
                    assertion is not registered on application.",
                );
            };
            if let Err(why) = crate::assertion::verify(assertion, pem, &client_id, endpoint) {
                return aad_error(
                    401,
                    "invalid_client",
                    &format!("AADSTS700027: Client assertion failed signature validation. {why}"),
                );
            }
        } else if app.client_secret.is_empty() || form.get("client_secret") != Some(&app.client_secret) {
            return aad_error(
                401,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being \
                sent in the request is the client secret value, not the client secret \
                ID.",
            );
        }
        self.next_id += 1;
        let token = format!("sim-token-{}-{}", self.next_id, client_id.len());
        self.tokens.insert(token.clone(), Instant::now() + Duration::from_secs(self.token_lifetime));
        Reply::json(
            200,
            json!({
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token
            }),
        )
    }

    pub fn authorized(&self, header: Option<&str>) -> bool {
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        self.tokens.get(token).is_some_and(|exp| *exp > Instant::now())
    }

    pub fn take_fault(&mut self, scope: Scope, url: &str) -> Option<Fault> {
        let matching: Vec<usize> = (0..self.faults.len())
            .filter(|i| self.faults[*i].scope == scope)
            .filter(|i| self.faults[*i].path_contains.as_deref().is_none_or(|p| url.contains(p)))
            .collect();
        // Probabilistic faults each get their roll, in order; otherwise the first matching fault.
        let mut chosen = None;
        for i in matching {
            match self.faults[i].probability {
                Some(p) => {
                    // xorshift: the same run of faults every time.
                    self.rng ^= self.rng << 13;
                    self.rng ^= self.rng >> 7;
                    self.rng ^= self.rng << 17;
                    if ((self.rng % 10_000) as f64) < p * 10_000.0 {
                        chosen = Some(i);
                        break;
                    }
                }
                None => {
                    chosen = Some(i);
                    break;
                }
            }
        }
        let i = chosen?;
        let f = &mut self.faults[i];
        if f.skip > 0 {
            f.skip -= 1;
            return None;
        }
        f.count -= 1;
        let out = f.clone();
        if f.count == 0 {
            self.faults.remove(i);
        }
        Some(out)
    }

    /// An object as an app that may not read objects of its type sees it (a control switch):
    /// "limited information", only `@odata.type` and `id`, every other property null
    /// (permissions-overview.md).
    fn limited(&self, mut obj: Value, kind: &str) -> Value {
        if !self.limited_info.iter().any(|k| k == kind) {
            return obj;
        }
        if let Some(map) = obj.as_object_mut() {
            for (k, v) in map.iter_mut() {
                if k != "id" && k != "@odata.type" {
                    *v = Value::Null;
                }
            }
        }
        obj
    }

    /// How an expired delta token is answered (a control switch): Graph documents 410 Gone with
    /// a `Location` of the initial query, and "a 40X-series error with error codes such as
    /// syncStateNotFound" (delta-query-overview.md), resyncRequired among them (errors.md), the
    /// code sometimes nested as an inner error.
    fn expired_reply(&mut self, initial: &str) -> Reply {
        let Expiry { status, code, inner, location } = self.expiry.clone();
        self.next_id += 1;
        let mut inner_error = json!({
            "date": "2026-11-24T00:00:00",
            "request-id": format!("00000000-0000-0000-0000-{:012}", self.next_id)
        });
        if let Some(c) = inner {
            inner_error["code"] = json!(c);
        }
        let mut r = Reply::json(
            status,
            json!({
                "error": {
                    "code": code,
                    "message": "The delta token is expired or invalid: start a new round of delta \
                        queries without a token.",
                    "innerError": inner_error
                }
            }),
        );
        if location {
            r.headers.push(("Location".into(), format!("{initial}?$deltatoken=")));
        }
        r
    }

    /// The answer to an injected fault: Graph's error body, `Retry-After` if the fault has one.
    pub fn fault_reply(&mut self, f: &Fault) -> Reply {
        let code = match f.status {
            429 => "TooManyRequests",
            401 => "InvalidAuthenticationToken",
            424 => "FailedDependency",
            _ => "ServiceUnavailable",
        };
        let mut r = self.error(ODataError(f.status, code, "Please retry after the time given in Retry-After.".into()));
        if let Some(v) = f.retry_after_header() {
            r.headers.push(("Retry-After".into(), v));
        }
        r
    }

    /// One Graph request (also each request of a `$batch`).
    pub fn graph(&mut self, req: Request) -> Reply {
        let Request { method, beta, path, query: raw_query, body, base, batch } = req;
        let url = if raw_query.is_empty() { path.to_string() } else { format!("{path}?{raw_query}") };
        let reply = match self.take_fault(Scope::Request, &url) {
            Some(f) => self.fault_reply(&f),
            None => match self.route(
                method,
                beta,
                path,
                raw_query,
                body,
                &self.link_base.clone().unwrap_or(base.to_string()),
            ) {
                Ok(r) => r,
                Err(e) => self.error(e),
            },
        };
        self.log.push(LogEntry {
            method: method.to_string(),
            url: format!("/{}{url}", if beta { "beta" } else { "v1.0" }),
            status: reply.status,
            batch,
        });
        reply
    }

    fn route(
        &mut self,
        method: &str,
        beta: bool,
        path: &str,
        raw_query: &str,
        body: Option<Value>,
        base: &str,
    ) -> Result<Reply, ODataError> {
        let pairs: HashMap<String, String> =
            serde_urlencoded::from_str(raw_query).map_err(|e| bad(format!("Invalid query: {e}")))?;
        let ver = if beta { "beta" } else { "v1.0" };
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        if let Some(select) = pairs.get("$select") {
            use crate::schema::On;
            let on = match segs.as_slice() {
                ["groups", "delta"] => On::GroupsDelta,
                ["users", "delta"] => On::UsersDelta,
                ["groups"] | ["groups", _] => On::Groups,
                ["groups", _, "onPremisesSyncBehavior"] => On::SyncBehavior,
                ["users"] | ["users", _] => On::Users,
                _ => On::DirectoryObjects,
            };
            crate::schema::check(on, beta, select)?;
        }
        // Delta has its own tokens in `$skiptoken`: handled before the usual query options.
        if let ("GET", [coll @ ("groups" | "users"), "delta"]) = (method, segs.as_slice()) {
            let coll = if *coll == "groups" { Coll::Groups } else { Coll::Users };
            if !beta && pairs.get("$select").is_some_and(|s| s.contains("writebackConfiguration")) {
                return Err(ODataError(
                    400,
                    "BadRequest",
                    "Could not find a property named 'writebackConfiguration' on type 'microsoft.graph.group'.".into(),
                ));
            }
            let sorted = pairs.into_iter().collect();
            let body = crate::delta::page(
                &self.journal,
                coll,
                &self.tenant,
                &sorted,
                self.page_size,
                &format!("{base}/{ver}"),
            );
            return match body {
                Ok(body) => Ok(Reply::json(200, body)),
                Err(ODataError(410, ..)) => Ok(self.expired_reply(&format!("{base}/{ver}/{}/delta", segs[0]))),
                Err(e) => Err(e),
            };
        }
        let q = Query::parse(&pairs)?;
        let not_found = |what: &str, id: &str| {
            ODataError(
                404,
                "Request_ResourceNotFound",
                format!(
                    "Resource '{id}' does not exist or one of its queried reference-property \
                objects are not present. ({what})"
                ),
            )
        };
        let page = |items: Vec<(Option<&'static str>, &Value)>, ctx: &str| -> Result<Reply, ODataError> {
            self.page(items, &q, &pairs, beta, &format!("{base}/{ver}{path}"), &format!("{base}/{ver}/$metadata#{ctx}"))
        };
        match (method, segs.as_slice()) {
            ("GET", ["groups"]) => page(self.tenant.groups.iter().map(|g| (None, g)).collect(), "groups"),
            ("GET", ["users"]) => page(self.tenant.users.iter().map(|u| (None, u)).collect(), "users"),
            ("GET", ["groups", id]) => {
                let g = self.view(id).group(id).ok_or_else(|| not_found("group", id))?;
                let mut v = project(g, None, q.select.as_deref(), beta)?;
                v["@odata.context"] = json!(format!("{base}/{ver}/$metadata#groups/$entity"));
                Ok(Reply::json(200, v))
            }
            ("GET", ["users", id]) => {
                let (_, u) = self.tenant.find(id).filter(|(k, _)| *k == "user").ok_or_else(|| not_found("user", id))?;
                Ok(Reply::json(200, self.limited(project(u, None, q.select.as_deref(), beta)?, "user")))
            }
            ("GET", ["groups", id, nav @ ("members" | "owners"), rest @ ..]) => {
                let view = self.view(id);
                let g = view.group(id).ok_or_else(|| not_found("group", id))?;
                let cast = match rest {
                    [] => None,
                    [c] => Some(
                        c.strip_prefix("microsoft.graph.").ok_or_else(|| bad(format!("Unsupported segment {c}")))?,
                    ),
                    _ => return Err(bad("Unsupported path".into())),
                };
                let items = view
                    .linked(g, nav)
                    .into_iter()
                    .filter(|(k, _)| cast.is_none_or(|c| c == *k))
                    .map(|(k, v)| (Some(k), v))
                    .collect();
                page(items, "directoryObjects")
            }
            // onPremisesSyncBehavior (beta only: onpremisessyncbehavior-get.md / -update.md). Converting
            // (isCloudManaged true) sets onPremisesSyncEnabled to null; the SID is kept, which is
            // UNCONFIRMED (facts-2026.md §1.3). A rollback (false) changes nothing else on the group
            // "until the sync client takes over", so the groups delta is not told of it (the
            // strictest reading: writeback sees a rollback in a full cycle).
            ("GET" | "PATCH", ["groups", id, "onPremisesSyncBehavior"]) if beta => {
                let g = self.tenant.group_mut(id).ok_or_else(|| not_found("group", id))?;
                if method == "PATCH" {
                    let patch = body.ok_or_else(|| bad("A PATCH needs a JSON body".into()))?;
                    let managed = patch
                        .get("isCloudManaged")
                        .and_then(Value::as_bool)
                        .ok_or_else(|| bad("isCloudManaged must be a Boolean.".into()))?;
                    g["onPremisesSyncBehavior"] = json!({ "isCloudManaged": managed });
                    if managed {
                        g["onPremisesSyncEnabled"] = Value::Null;
                        self.journal.touch_group(id, &["onPremisesSyncEnabled"]);
                    }
                    return Ok(Reply::empty(204));
                }
                let managed = g["onPremisesSyncBehavior"]["isCloudManaged"].as_bool().unwrap_or(false);
                let context = format!("{base}/{ver}/$metadata#groups('{id}')/onPremisesSyncBehavior/$entity");
                Ok(Reply::json(200, json!({ "@odata.context": context, "id": id, "isCloudManaged": managed })))
            }
            // Graph "Update group" (api-reference/beta/api/group-update.md) does not say whether a
            // partial complex value (writebackConfiguration) is merged into the current one or
            // replaces it: the strictest reading, it replaces it (fields left out become null).
            ("PATCH", ["groups", id]) => {
                let patch = body.ok_or_else(|| bad("A PATCH needs a JSON body".into()))?;
                let g = self.tenant.group_mut(id).ok_or_else(|| not_found("group", id))?;
                replace_properties(g, &patch);
                let keys: Vec<&str> =
                    patch.as_object().into_iter().flat_map(|m| m.keys()).map(String::as_str).collect();
                self.journal.touch_group(id, &keys);
                Ok(Reply::empty(204))
            }
            // Graph "Update user" (api-reference/v1.0/api/user-update.md): onPremisesImmutableId
            // is updatable with User.ReadWrite.All, without `$` or `_`; a user synced from AD
            // refuses changes to what AD masters; the other onPremises* properties are read-only.
            // This is how a cloud administrator can point a cloud-only user at any AD object.
            ("PATCH", ["users", id]) => {
                let patch = body.ok_or_else(|| bad("A PATCH needs a JSON body".into()))?;
                let fields = patch.as_object().ok_or_else(|| bad("A PATCH body is a JSON object".into()))?;
                let user = self.tenant.user_mut(id).ok_or_else(|| not_found("user", id))?;
                for key in fields.keys() {
                    if key.starts_with("onPremises") && key != "onPremisesImmutableId" || key == "id" {
                        return Err(bad(format!("Property '{key}' is read-only and cannot be set.")));
                    }
                    if !USER_WRITABLE.contains(&key.as_str()) {
                        return Err(bad(format!("Property '{key}' is not part of the simulated surface.")));
                    }
                }
                if user["onPremisesSyncEnabled"] == true {
                    return Err(bad("Unable to update the specified properties for on-premises mastered \
                        Directory Sync objects or objects currently undergoing migration."
                        .into()));
                }
                if fields.get("onPremisesImmutableId").and_then(Value::as_str).is_some_and(|v| v.contains(['$', '_'])) {
                    return Err(bad(
                        "Invalid value specified for property 'onPremisesImmutableId' of resource 'User'.".into(),
                    ));
                }
                let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
                replace_properties(user, &patch);
                self.journal.touch_user(id, &keys);
                Ok(Reply::empty(204))
            }
            // Graph "List memberOf" (api-reference/v1.0/api/user-list-memberof.md): "groups,
            // directory roles, and administrative units that the user is a direct member of",
            // each with its @odata.type; an OData cast (`/memberOf/microsoft.graph.group`) keeps
            // one type.
            ("GET", [coll @ ("users" | "groups"), id, "memberOf", rest @ ..]) => {
                let want = if *coll == "users" { "user" } else { "group" };
                if self.tenant.find(id).is_none_or(|(k, _)| k != want) {
                    return Err(not_found(coll, id));
                }
                let cast = match rest {
                    [] => None,
                    [c] => Some(
                        c.strip_prefix("microsoft.graph.").ok_or_else(|| bad(format!("Unsupported segment {c}")))?,
                    ),
                    _ => return Err(bad("Unsupported path".into())),
                };
                let contains = |g: &Value| {
                    g.get("members")
                        .and_then(Value::as_array)
                        .is_some_and(|m| m.iter().any(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(id))))
                };
                let t = &self.tenant;
                let parents = t
                    .groups
                    .iter()
                    .map(|g| ("group", g))
                    .chain(t.directory_roles.iter().map(|r| ("directoryRole", r)))
                    .chain(t.administrative_units.iter().map(|a| ("administrativeUnit", a)))
                    .filter(|(k, o)| cast.is_none_or(|c| c == *k) && contains(o))
                    .map(|(k, o)| (Some(k), o))
                    .collect();
                page(parents, "directoryObjects")
            }
            ("GET", ["groupSettings"]) => Ok(Reply::json(
                200,
                json!({
                    "@odata.context": format!("{base}/{ver}/$metadata#groupSettings"),
                    "value": self.tenant.group_settings.clone()
                }),
            )),
            ("GET", ["groupSettings", id]) => {
                let s = self
                    .tenant
                    .group_settings
                    .iter()
                    .find(|s| s["id"].as_str() == Some(*id))
                    .ok_or_else(|| not_found("groupSetting", id))?;
                Ok(Reply::json(200, s.clone()))
            }
            ("GET", ["groupSettingTemplates", id])
                if id.eq_ignore_ascii_case(crate::tenant::GROUP_UNIFIED_TEMPLATE) =>
            {
                Ok(Reply::json(200, crate::tenant::group_unified_template()))
            }
            ("POST", ["groupSettings"]) => {
                let body = body.unwrap_or_default();
                if body["templateId"].as_str() != Some(crate::tenant::GROUP_UNIFIED_TEMPLATE) {
                    return Err(bad("Only the Group.Unified template is simulated".into()));
                }
                if self.tenant.group_settings.iter().any(|s| s["templateId"] == body["templateId"]) {
                    return Err(ODataError(
                        409,
                        "Request_BadRequest",
                        "A conflicting object with one or more of the specified property values \
                        is present in the directory."
                            .into(),
                    ));
                }
                let values = body["values"].as_array().cloned().unwrap_or_default();
                let missing: Vec<&str> =
                    crate::tenant::group_unified_names().filter(|n| !values.iter().any(|v| v["name"] == *n)).collect();
                if !missing.is_empty() {
                    return Err(bad(format!(
                        "All the template values must be specified; missing: {}",
                        missing.join(", ")
                    )));
                }
                self.next_id += 1;
                let created = json!({
                    "id": format!("00000000-0000-0000-5e77-{:012}", self.next_id),
                    "displayName": "Group.Unified",
                    "templateId": crate::tenant::GROUP_UNIFIED_TEMPLATE,
                    "values": values
                });
                self.tenant.group_settings.push(created.clone());
                Ok(Reply::json(201, created))
            }
            // Graph "Update groupSetting" (api-reference/v1.0/api/groupsetting-update.md): `values`
            // is "the updated set of values. You must include the entire collection set. You
            // cannot update a single set of values." The strictest reading: the list given
            // replaces the list held, so values left out are gone.
            ("PATCH", ["groupSettings", id]) => {
                let patch = body.ok_or_else(|| bad("A PATCH needs a JSON body".into()))?;
                let s = self
                    .tenant
                    .group_settings
                    .iter_mut()
                    .find(|s| s["id"].as_str() == Some(*id))
                    .ok_or_else(|| not_found("groupSetting", id))?;
                if let Some(values) = patch.get("values") {
                    let list = values.as_array().ok_or_else(|| bad("values must be a collection".into()))?;
                    if list.iter().any(|v| !v["name"].is_string() || !v["value"].is_string()) {
                        return Err(bad("Each settingValue needs a name and a string value".into()));
                    }
                    s["values"] = values.clone();
                }
                Ok(Reply::empty(204))
            }
            ("POST", ["directoryObjects", "getByIds"]) => {
                let body = body.unwrap_or_default();
                let ids: Vec<String> =
                    body["ids"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
                if ids.len() > 1000 {
                    return Err(bad("Too many ids: at most 1000".into()));
                }
                let types: Vec<String> = body["types"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect();
                let value: Vec<Value> = ids
                    .iter()
                    .filter_map(|id| self.tenant.find(id))
                    .filter(|(k, _)| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case(k)))
                    .map(|(k, v)| project(v, Some(k), q.select.as_deref(), beta).map(|o| self.limited(o, k)))
                    .collect::<Result<_, _>>()?;
                Ok(Reply::json(
                    200,
                    json!({"@odata.context": format!("{base}/{ver}/$metadata#directoryObjects"), "value": value}),
                ))
            }
            ("GET", ["directory", "deletedItems", "microsoft.graph.group"]) => {
                page(self.tenant.deleted_groups.iter().map(|g| (Some("group"), g)).collect(), "directoryObjects")
            }
            // Graph "Get deleted item" (directory-deleteditems-get.md): one item of the recycle bin.
            ("GET", ["directory", "deletedItems", id]) => {
                let g = self
                    .view(id)
                    .deleted_groups
                    .iter()
                    .find(|g| g.get("id").and_then(Value::as_str).is_some_and(|x| x.eq_ignore_ascii_case(id)))
                    .ok_or_else(|| not_found("deletedItem", id))?;
                Ok(Reply::json(200, project(g, Some("group"), q.select.as_deref(), beta)?))
            }
            _ => Err(ODataError(
                400,
                "BadRequest",
                format!("Invalid request: {method} /{ver}{path} is not part of the simulated surface"),
            )),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn page(
        &self,
        items: Vec<(Option<&'static str>, &Value)>,
        q: &Query,
        pairs: &HashMap<String, String>,
        beta: bool,
        self_url: &str,
        context: &str,
    ) -> Result<Reply, ODataError> {
        let mut kept = Vec::new();
        for (kind, v) in items {
            if let Some(f) = &q.filter {
                if !matches(v, f)? {
                    continue;
                }
            }
            kept.push((kind, v));
        }
        let size = q.top.unwrap_or(DEFAULT_PAGE).min(self.page_size).max(1);
        let end = (q.skip + size).min(kept.len());
        let value: Vec<Value> = kept[q.skip.min(end)..end]
            .iter()
            .map(|(k, v)| {
                project(v, *k, q.select.as_deref(), beta).map(|o| match k {
                    Some(k) => self.limited(o, k),
                    None => o,
                })
            })
            .collect::<Result<_, _>>()?;
        let mut body = json!({"@odata.context": context, "value": value});
        if end < kept.len() {
            let mut next: Vec<(String, String)> =
                pairs.iter().filter(|(k, _)| k.as_str() != "$skiptoken").map(|(k, v)| (k.clone(), v.clone())).collect();
            next.sort();
            next.push(("$skiptoken".into(), encode_skiptoken(end)));
            let qs = serde_urlencoded::to_string(&next).map_err(|e| bad(e.to_string()))?;
            body["@odata.nextLink"] = json!(format!("{self_url}?{qs}"));
        }
        Ok(Reply::json(200, body))
    }

    /// `POST /$batch`: at most 20 requests, each answered on its own (throttling included).
    pub fn batch(&mut self, beta: bool, body: Value, base: &str) -> Reply {
        let requests = body["requests"].as_array().cloned().unwrap_or_default();
        if requests.is_empty() || requests.len() > 20 {
            let n = requests.len();
            return self.error(ODataError(400, "BadRequest", format!("A batch needs 1 to 20 requests; it had {n}.")));
        }
        let mut responses = Vec::new();
        for r in requests {
            let id = r["id"].clone();
            // json-batching.md: "If a body is included with the request, the headers object must
            // contain a value for Content-Type."
            let typed =
                r["headers"].as_object().is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")));
            if r.get("body").is_some_and(|b| !b.is_null()) && !typed {
                let e = self.error(bad("A request with a body needs a Content-Type header.".into()));
                responses.push(json!({"id": id, "status": e.status, "headers": {}, "body": e.body}));
                continue;
            }
            let method = r["method"].as_str().unwrap_or("GET").to_uppercase();
            let url = r["url"].as_str().unwrap_or("").to_string();
            let (path, query) = url.split_once('?').unwrap_or((&url, ""));
            let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
            let reply = self.graph(Request {
                method: &method,
                beta,
                path: &path,
                query,
                body: r.get("body").cloned(),
                base,
                batch: true,
            });
            let headers: serde_json::Map<String, Value> =
                reply.headers.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let mut resp = json!({"id": id, "status": reply.status, "headers": headers});
            if let Some(b) = reply.body {
                resp["body"] = b;
            }
            responses.push(resp);
        }
        Reply::json(200, json!({"responses": responses}))
    }
}

/// A PATCH: each property given replaces the current value whole, a complex value included
/// (a complex value's fields left out become null, not kept).
fn replace_properties(target: &mut Value, patch: &Value) {
    if let (Value::Object(t), Value::Object(p)) = (target, patch) {
        for (k, v) in p {
            t.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: &str = "00000000-0000-0000-0000-000000000001";
    const U: &str = "00000000-0000-0000-0000-000000000002";

    fn sim() -> Sim {
        let tenant: Tenant = serde_json::from_value(json!({
            "apps": [{"client_id": "app", "client_secret": "s"}],
            "users": [{"id": U, "displayName": "U", "onPremisesSyncEnabled": true}],
            "groups": [{"id": G, "displayName": "G", "groupTypes": [], "writebackConfiguration": {"isEnabled": true},
                        "members": [U], "owners": [U]}],
            "devices": [{"id": "00000000-0000-0000-0000-000000000003", "displayName": "D"}]
        }))
        .expect("tenant");
        Sim::new(tenant, 999)
    }

    fn get(sim: &mut Sim, beta: bool, path: &str, query: &str) -> Reply {
        sim.graph(Request { method: "GET", beta, path, query, body: None, base: "http://sim", batch: false })
    }

    #[test]
    fn graph_shapes_for_the_surface() {
        let mut s = sim();
        let owners = get(&mut s, false, &format!("/groups/{G}/owners"), "").body.expect("body");
        assert_eq!(owners["value"][0]["@odata.type"], "#microsoft.graph.user");
        assert_eq!(owners["@odata.context"], "http://sim/v1.0/$metadata#directoryObjects");
        let users = get(&mut s, false, "/users", "$select=id,displayName").body.expect("body");
        assert_eq!(users["value"][0], json!({"id": U, "displayName": "U"}));
        let cast = get(&mut s, true, &format!("/groups/{G}/members/microsoft.graph.group"), "").body.expect("body");
        assert_eq!(cast["value"], json!([]));
        let by_ids = s.graph(Request {
            method: "POST",
            beta: false,
            path: "/directoryObjects/getByIds",
            query: "",
            body: Some(json!({"ids": [G, U, "00000000-0000-0000-0000-000000000003"], "types": ["user", "group"]})),
            base: "http://sim",
            batch: false,
        });
        let value = by_ids.body.expect("body")["value"].as_array().cloned().unwrap_or_default();
        assert_eq!(value.len(), 2, "the device is filtered out by types");
        // v1.0 has no writebackConfiguration; beta has it.
        let v1 = get(&mut s, false, &format!("/groups/{G}"), "").body.expect("body");
        assert!(v1.get("writebackConfiguration").is_none() && v1.get("members").is_none());
        let beta = get(&mut s, true, &format!("/groups/{G}"), "").body.expect("body");
        assert_eq!(beta["writebackConfiguration"]["isEnabled"], true);
    }

    #[test]
    fn a_cloud_only_users_immutable_id_can_be_set_a_synced_users_cannot() {
        let mut s = sim();
        let cloud_only = "00000000-0000-0000-0000-000000000004";
        s.tenant.users.push(json!({"id": cloud_only, "displayName": "C", "onPremisesSyncEnabled": null}));
        s.tenant.reindex();
        let patch = |s: &mut Sim, id: &str, body: Value| {
            let path = format!("/users/{id}");
            s.graph(Request {
                method: "PATCH",
                beta: false,
                path: &path,
                query: "",
                body: Some(body),
                base: "http://sim",
                batch: false,
            })
        };
        assert_eq!(patch(&mut s, cloud_only, json!({"onPremisesImmutableId": "4XGK8eR2sE6CsNjEUCz/Qg=="})).status, 204);
        let u =
            get(&mut s, false, &format!("/users/{cloud_only}"), "$select=onPremisesImmutableId").body.expect("body");
        assert_eq!(u["onPremisesImmutableId"], "4XGK8eR2sE6CsNjEUCz/Qg==");
        let r = patch(&mut s, U, json!({"onPremisesImmutableId": "4XGK8eR2sE6CsNjEUCz/Qg=="}));
        assert_eq!(r.status, 400, "a synced user's on-premises properties are mastered in AD");
        for ro in [json!({"onPremisesSecurityIdentifier": "S-1-5-21-1-2-3-4"}), json!({"onPremisesSyncEnabled": true})]
        {
            assert_eq!(patch(&mut s, cloud_only, ro).status, 400, "read-only");
        }
        assert_eq!(patch(&mut s, cloud_only, json!({"onPremisesImmutableId": "a_b"})).status, 400);
    }

    #[test]
    fn member_of_lists_roles_and_administrative_units_beside_groups() {
        let mut s = sim();
        let (role, unit) = ("00000000-0000-0000-0000-0000000000a1", "00000000-0000-0000-0000-0000000000a2");
        s.tenant.directory_roles.push(json!({"id": role, "displayName": "User Administrator", "members": [U]}));
        s.tenant.administrative_units.push(json!({"id": unit, "displayName": "Paris", "members": [U]}));
        let all = get(&mut s, false, &format!("/users/{U}/memberOf"), "$select=id").body.expect("body");
        let types: Vec<&str> =
            all["value"].as_array().into_iter().flatten().filter_map(|v| v["@odata.type"].as_str()).collect();
        assert_eq!(
            types,
            vec!["#microsoft.graph.group", "#microsoft.graph.directoryRole", "#microsoft.graph.administrativeUnit"]
        );
        let groups = get(&mut s, false, &format!("/users/{U}/memberOf/microsoft.graph.group"), "").body.expect("body");
        assert_eq!(groups["value"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn errors_look_like_graph() {
        let mut s = sim();
        let r = get(&mut s, false, "/groups", "$top=1000");
        assert_eq!(r.status, 400);
        let body = r.body.expect("body");
        assert_eq!(body["error"]["code"], "Request_UnsupportedQuery");
        assert!(body["error"]["innerError"]["request-id"].is_string());
        assert_eq!(get(&mut s, false, "/groups/00000000-0000-0000-0000-00000000ffff", "").status, 404);
        let too_many: Vec<Value> =
            (0..21).map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/groups"})).collect();
        assert_eq!(s.batch(false, json!({"requests": too_many}), "http://sim").status, 400);
        s.faults.push(Fault {
            status: 429,
            retry_after: json!(7),
            scope: Scope::Request,
            count: 1,
            skip: 0,
            path_contains: None,
            probability: None,
        });
        let r = get(&mut s, false, "/groups", "");
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("Retry-After".to_string(), "7".to_string())));
        assert_eq!(get(&mut s, false, "/groups", "").status, 200, "the fault is used up");
    }

    #[test]
    fn tokens_need_the_right_secret_and_expire() {
        let mut s = sim();
        let form = |secret: &str| -> HashMap<String, String> {
            [
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", secret),
                ("scope", "https://graph.microsoft.com/.default"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
        };
        let endpoint = "http://sim/contoso.onmicrosoft.com/oauth2/v2.0/token";
        assert_eq!(s.token(&form("s"), "http://sim/fabrikam.example/oauth2/v2.0/token").status, 400, "another tenant");
        let bad = s.token(&form("wrong"), endpoint);
        assert_eq!(bad.status, 401);
        assert!(bad.body.expect("body")["error_description"].as_str().unwrap_or("").starts_with("AADSTS7000215"));
        s.token_lifetime = 0;
        let ok = s.token(&form("s"), endpoint).body.expect("body");
        let token = ok["access_token"].as_str().unwrap_or("").to_string();
        assert!(!s.authorized(Some(&format!("Bearer {token}"))), "a token with no lifetime left is refused");
    }
}
