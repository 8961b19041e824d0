//! Delta sync end to end (issue #3): each kind of cloud change reaches AD with one
//! `writeback sync` through the delta endpoints; idle cycles are cheap; expiry falls back to a
//! full sync; hand edits in AD are put back between full syncs.

mod common;

use std::collections::HashSet;

use common::*;
use ldap3::Mod;
use serde_json::{json, Value};

struct World {
    fx: Fixture,
    users: Vec<AdObj>,
    uids: Vec<String>,
    tenant: Value,
}

impl World {
    fn new(name: &str, n_users: usize) -> World {
        let mut fx = Fixture::new(name);
        let (users, uids, cloud) = fx.synced_users(n_users);
        World { fx, users, uids, tenant: tenant(cloud, vec![]) }
    }

    fn groups(&mut self) -> &mut Vec<Value> {
        self.tenant["groups"].as_array_mut().expect("groups")
    }

    fn group(&mut self, id: &str) -> &mut Value {
        self.groups().iter_mut().find(|g| g["id"] == id).expect("group in tenant")
    }

    fn push(&self) {
        self.fx.set_tenant(&self.tenant);
    }

    fn requests(&self) -> Vec<String> {
        let log = self.fx.sim_call("GET", "/_control/requests", None);
        log.as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|e| e["url"].as_str().map(String::from))
                    .filter(|u| !u.ends_with("/token"))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn clear_requests(&self) {
        self.fx.sim_call("DELETE", "/_control/requests", None);
    }

    fn sync(&self) -> Value {
        let (code, out) = self.fx.sync_json(&[]);
        assert!(code == 0, "sync failed: {out}");
        out
    }

    fn members(&mut self, id: &str) -> HashSet<String> {
        self.fx.group(id).unwrap_or_else(|| panic!("{id} in AD")).members.into_iter().collect()
    }
}

fn refs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

#[test]
fn each_cloud_change_reaches_ad_through_the_delta_endpoints() {
    let mut w = World::new("delta", 4);
    let (a, b, c, d, e) = (w.fx.id(1), w.fx.id(2), w.fx.id(3), w.fx.id(4), w.fx.id(5));
    let u = w.uids.clone();
    *w.groups() = vec![
        security_group(&a, "SG-A", Some(true), &[&u[0], &u[1]]),
        security_group(&b, "SG-B", Some(true), &[&u[0]]),
        security_group(&c, "SG-C", None, &[&u[2]]),
        m365_group(&d, "Team D", None, None, &[&u[3]]),
        security_group(&e, "SG-E", Some(true), &[&u[3]]),
    ];
    w.fx.start_sim(&w.tenant);
    w.fx.write_config("cn_format = \"display-name\"");
    let first = w.sync();
    assert_eq!((first["kind"].as_str(), first["adds"].as_u64()), (Some("full"), Some(4)), "{first}");
    let b_guid = w.fx.group(&b).expect("b").guid;

    // All at once in the cloud: a member added (A), a member removed (A), B renamed, C newly
    // enabled, D soft-deleted, E permanently deleted.
    w.group(&a)["members"] = json!([&u[1], &u[2]]);
    w.group(&b)["displayName"] = json!("SG-B renamed");
    w.group(&c)["writebackConfiguration"]["isEnabled"] = json!(true);
    let team_d = w.group(&d).clone();
    w.groups().retain(|g| g["id"] != d && g["id"] != e);
    w.tenant["deletedGroups"] = json!([team_d]);
    w.push();
    w.clear_requests();

    let out = w.sync();
    assert_eq!(out["kind"], "delta", "{out}");
    assert_eq!(
        (out["adds"].as_u64(), out["renames"].as_u64(), out["deletes"].as_u64()),
        (Some(1), Some(1), Some(1)),
        "{out}"
    );
    assert_eq!(
        (out["member_adds"].as_u64(), out["member_removes"].as_u64()),
        (Some(1 + 1), Some(1)),
        "A +1 -1, C +1: {out}"
    );
    let want_a: HashSet<String> = [w.users[1].guid.clone(), w.users[2].guid.clone()].into();
    assert_eq!(w.members(&a), want_a);
    let gb = w.fx.group(&b).expect("b");
    assert_eq!(
        (gb.guid.as_str(), gb.one("cn")),
        (b_guid.as_str(), Some(format!("SG-B renamed_{}", &b[b.len() - 12..]).as_str()))
    );
    assert!(w.fx.group(&c).is_some(), "newly enabled: written");
    assert!(w.fx.group(&d).is_some(), "soft-deleted: kept");
    assert!(w.fx.group(&e).is_none(), "permanently deleted: deleted");

    let reqs = w.requests();
    assert!(
        reqs.iter().any(|r| r.contains("/groups/delta")) && reqs.iter().any(|r| r.contains("/users/delta")),
        "{reqs:?}"
    );
    assert!(
        !reqs.iter().any(|r| r.starts_with("/beta/groups?") || r.starts_with("/v1.0/groups?")),
        "no full group listing: {reqs:?}"
    );

    // The next cycle sees nothing new: two requests, nothing written.
    w.clear_requests();
    let idle = w.sync();
    assert_eq!(idle["kind"], "delta");
    for k in ["adds", "updates", "renames", "deletes", "member_adds", "member_removes"] {
        assert_eq!(idle[k], 0, "{k}: {idle}");
    }
    let reqs = w.requests();
    assert!(reqs.len() <= 2, "an idle delta cycle makes at most 2 Graph requests: {reqs:?}");
}

#[test]
fn members_spread_over_several_delta_pages_are_merged() {
    let mut w = World::new("deltapages", 30);
    let g = w.fx.id(1);
    let u = w.uids.clone();
    *w.groups() = vec![security_group(&g, "SG-Wide", Some(true), &refs(&u[..5]))];
    w.fx.start_sim(&w.tenant);
    w.fx.write_config("");
    w.sync();
    // 25 members arrive at once, 3 per entry and 2 entries per page.
    w.fx.sim_call("POST", "/_control/settings", Some(&json!({"page_size": 2, "delta_member_chunk": 3})));
    w.group(&g)["members"] = json!(refs(&u[2..]));
    w.push();
    let out = w.sync();
    assert_eq!(out["kind"], "delta");
    assert_eq!((out["member_adds"].as_u64(), out["member_removes"].as_u64()), (Some(25), Some(2)), "{out}");
    let want: HashSet<String> = w.users[2..].iter().map(|x| x.guid.clone()).collect();
    assert_eq!(w.members(&g), want);
}

#[test]
fn an_expired_delta_token_leads_to_a_correct_full_sync() {
    let mut w = World::new("deltaexp", 3);
    let g = w.fx.id(1);
    let u = w.uids.clone();
    *w.groups() = vec![security_group(&g, "SG-X", Some(true), &[&u[0]])];
    w.fx.start_sim(&w.tenant);
    w.fx.write_config("");
    w.sync();
    w.group(&g)["members"] = json!([&u[1], &u[2]]);
    w.push();
    w.fx.sim_call("POST", "/_control/expire-delta-tokens", None);
    let r = w.fx.writeback(&["--json", "sync"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    assert_eq!(out["kind"], "full", "{out}");
    assert!(r.stderr.contains("expired"), "the fallback is reported: {}", r.stderr);
    let want: HashSet<String> = [w.users[1].guid.clone(), w.users[2].guid.clone()].into();
    assert_eq!(w.members(&g), want);
    let hist = w.fx.writeback(&["--json", "history"]).json();
    assert!(hist["runs"][0]["message"].as_str().unwrap_or("").contains("full sync ran instead"), "{hist}");
    // And delta works again afterwards.
    assert_eq!(w.sync()["kind"], "delta");
}

#[test]
fn hand_edits_in_ad_are_put_back_by_the_next_delta_cycle() {
    let mut w = World::new("deltadrift", 3);
    let g = w.fx.id(1);
    let u = w.uids.clone();
    *w.groups() = vec![security_group(&g, "SG-Drift", Some(true), &[&u[0], &u[1]])];
    w.fx.start_sim(&w.tenant);
    w.fx.write_config("");
    w.sync();
    // Our own writes are not drift: the first delta cycle after a full one is idle.
    w.clear_requests();
    let idle = w.sync();
    assert_eq!((idle["kind"].as_str(), idle["updates"].as_u64()), (Some("delta"), Some(0)));
    assert!(w.requests().len() <= 2, "{:?}", w.requests());

    let dn = w.fx.group(&g).expect("g").dn;
    let intruder = w.users[2].dn.clone();
    w.fx.modify(&dn, vec![Mod::Add("member", HashSet::from([intruder.as_str()]))]);
    let out = w.sync();
    assert_eq!((out["kind"].as_str(), out["member_removes"].as_u64()), (Some("delta"), Some(1)), "{out}");
    let want: HashSet<String> = [w.users[0].guid.clone(), w.users[1].guid.clone()].into();
    assert_eq!(w.members(&g), want);

    // A user whose anchor appears later (newly synced) is added to the groups it is in.
    let late = w.fx.create_user("late");
    let late_id = w.fx.id(20_000);
    let mut cloud_only = cloud_user(&late_id);
    w.tenant["users"].as_array_mut().expect("users").push(cloud_only.clone());
    w.group(&g)["members"] = json!([&u[0], &u[1], &late_id]);
    w.push();
    let out = w.sync();
    assert_eq!(out["skipped_members"], 1, "cloud-only for now: {out}");
    cloud_only = synced_user(&late_id, &late);
    let users = w.tenant["users"].as_array_mut().expect("users");
    users.retain(|x| x["id"] != late_id);
    users.push(cloud_only);
    w.push();
    let out = w.sync();
    assert_eq!((out["kind"].as_str(), out["member_adds"].as_u64()), (Some("delta"), Some(1)), "{out}");
    assert!(w.members(&g).contains(&late.guid));
}

#[test]
fn hand_edits_made_while_a_cycle_runs_are_put_back_by_the_next_delta_cycle() {
    let mut w = World::new("deltarace", 3);
    let (g1, g2) = (w.fx.id(1), w.fx.id(2));
    let u = w.uids.clone();
    *w.groups() = vec![
        security_group(&g1, "SG-Race-1", Some(true), &[&u[0]]),
        security_group(&g2, "SG-Race-2", Some(true), &[&u[0], &u[1]]),
    ];
    w.fx.start_sim(&w.tenant);
    w.fx.write_config("");
    w.sync();

    // A full cycle that writes (SG-Race-1 gains a member) is held up after its AD read: Graph
    // throttles its first member read for 3 s. Meanwhile an administrator adds a member to
    // SG-Race-2, which that cycle will not write.
    w.group(&g1)["members"] = json!([&u[0], &u[1]]);
    w.push();
    let fault = json!({"status": 429, "retry_after": 3, "count": 1, "path_contains": "/members"});
    w.fx.sim_call("POST", "/_control/faults", Some(&fault));
    w.fx.sim_call("DELETE", "/_control/requests", None);
    let running = w.fx.spawn_writeback(&["--json", "sync", "--full"]);
    // The cycle has read AD (with the group lists, before any member) once Graph throttled its
    // first member read: then, not after a guessed sleep, the administrator's edit lands.
    wait_until("the cycle is held up in its member reads", || {
        let log = w.fx.sim_call("GET", "/_control/requests", None);
        log.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["status"] == 429 && e["url"].as_str().is_some_and(|u| u.contains("/members")))
    });
    let dn = w.fx.group(&g2).expect("g2").dn;
    let intruder = w.users[2].dn.clone();
    w.fx.modify(&dn, vec![Mod::Add("member", HashSet::from([intruder.as_str()]))]);
    let done = running.wait_with_output().expect("full cycle");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let raced: Value = serde_json::from_slice(&done.stdout).expect("sync --json");
    assert_eq!(raced["member_removes"], 0, "the race happened: that cycle did not see the edit: {raced}");

    // That cycle moved its AD watermark past its own writes, and named the group it saw
    // someone else change: the next delta cycle puts it back.
    let out = w.sync();
    assert_eq!(out["kind"], "delta", "{out}");
    let want: HashSet<String> = [w.users[0].guid.clone(), w.users[1].guid.clone()].into();
    assert_eq!(w.members(&g2), want);
    assert_eq!(w.members(&g1), want);
    // Nothing is left to look at afterwards.
    let idle = w.sync();
    assert_eq!((idle["member_adds"].as_u64(), idle["member_removes"].as_u64()), (Some(0), Some(0)), "{idle}");
}
