//! Graph as Microsoft documents it (issue #16): what the simulator does because the Graph
//! reference allows it — throttled batches and token requests, decimal or missing Retry-After,
//! objects the app may not read, deletions seen in every group — and that writeback survives it.

mod common;

use common::*;
use serde_json::{json, Value};

fn fault(fx: &Fixture, f: Value) {
    fx.sim_call("POST", "/_control/faults", Some(&f));
}

fn settings(fx: &Fixture, s: Value) {
    fx.sim_call("POST", "/_control/settings", Some(&s));
}

#[test]
fn members_the_app_may_not_read_are_never_removed() {
    let mut fx = Fixture::new("limited");
    let (users, uids, cloud) = fx.synced_users(3);
    let g = fx.id(1);
    let mut t = tenant(cloud, vec![security_group(&g, "SG-Limited", Some(true), &[&uids[0], &uids[1]])]);
    fx.start_sim(&t);
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    let r = fx.writeback(&["check"]);
    assert!(r.stdout.contains("ok    Graph members' on-premises properties: readable"), "{}", r.stdout);

    // The app loses User.Read.All: users come back with type and id only. Meanwhile one member
    // leaves and one joins.
    settings(&fx, json!({"limited_info": ["user"]}));
    t["groups"][0]["members"] = json!([&uids[0], &uids[2]]);
    fx.set_tenant(&t);
    for args in [&[][..], &["--full"][..]] {
        let (code, out) = fx.sync_json(args);
        assert_eq!((code, out["member_removes"].as_u64()), (1, Some(0)), "nothing is removed on a guess: {out}");
    }
    let mut now = fx.group(&g).expect("g").members;
    now.sort();
    let mut was = vec![users[0].guid.clone(), users[1].guid.clone()];
    was.sort();
    assert_eq!(now, was);
    let show = fx.writeback(&["--json", "show", &g]).json();
    assert!(show["members"].as_array().into_iter().flatten().all(|m| m["reason"] == "unreadable"), "{show}");
    let errors = fx.writeback(&["--json", "errors"]).json().to_string();
    assert!(errors.contains("User.Read.All"), "{errors}");
    let r = fx.writeback(&["check"]);
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert!(
        r.stdout.contains("FAIL  Graph members' on-premises properties") && r.stdout.contains("User.Read.All"),
        "{}",
        r.stdout
    );

    // Readable again: the change goes through.
    settings(&fx, json!({"limited_info": []}));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["member_adds"].as_u64(), out["member_removes"].as_u64()), (0, Some(1), Some(1)), "{out}");
}

#[test]
fn throttled_batches_tokens_and_odd_retry_after_values_are_survived() {
    let mut fx = Fixture::new("throttle");
    let (users, uids, cloud) = fx.synced_users(2);
    let groups: Vec<Value> = (1..=45)
        .map(|i| security_group(&fx.id(i), &format!("SG-T{i}"), Some(true), &[&uids[(i % 2) as usize]]))
        .collect();
    fx.start_sim(&tenant(cloud, groups));
    fx.write_config("");
    // The token endpoint throttles, then fails once; whole $batch requests are throttled (429
    // with a decimal Retry-After) and fail (424 without one); single requests throttle without
    // a Retry-After.
    fault(&fx, json!({"scope": "token", "status": 429, "retry_after": "1.5", "count": 1}));
    fault(&fx, json!({"scope": "token", "status": 503, "retry_after": null, "count": 1, "skip": 0}));
    fault(&fx, json!({"scope": "batch", "status": 429, "retry_after": "0.25", "count": 2}));
    fault(&fx, json!({"scope": "batch", "status": 424, "retry_after": null, "count": 1}));
    fault(&fx, json!({"status": 429, "retry_after": null, "count": 2, "path_contains": "/members"}));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["adds"].as_u64(), out["errors"].as_u64()), (0, Some(45), Some(0)), "{out}");
    for i in 1..=45u32 {
        let want = users[(i % 2) as usize].guid.clone();
        assert_eq!(fx.group(&fx.id(i)).expect("written").members, vec![want], "group {i}");
    }
    let log = fx.sim_call("GET", "/_control/requests", None);
    let statuses: Vec<u64> = log.as_array().into_iter().flatten().filter_map(|e| e["status"].as_u64()).collect();
    for s in [429, 503, 424] {
        assert!(statuses.contains(&s), "the simulator answered {s} at least once: {statuses:?}");
    }
}

#[test]
fn a_user_deleted_in_the_cloud_leaves_every_group_it_was_in() {
    let mut fx = Fixture::new("userdel");
    let (users, uids, cloud) = fx.synced_users(2);
    let (a, b) = (fx.id(1), fx.id(2));
    let mut t = tenant(
        cloud,
        vec![
            security_group(&a, "SG-A", Some(true), &[&uids[0], &uids[1]]),
            security_group(&b, "SG-B", Some(true), &[&uids[1]]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    // The user is deleted; the tenant file still lists it in both groups, as a stale copy might:
    // Graph drops it from every group and says so in each group's members@delta.
    t["users"].as_array_mut().expect("users").retain(|u| u["id"] != uids[1].as_str());
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["kind"].as_str(), out["member_removes"].as_u64()), (0, Some("delta"), Some(2)), "{out}");
    assert_eq!(fx.group(&a).expect("a").members, vec![users[0].guid.clone()]);
    assert!(fx.group(&b).expect("b").members.is_empty());
}

#[test]
fn every_documented_form_of_an_expired_delta_token_leads_to_a_full_cycle() {
    let (mut fx, users, uids, mut t, g) = one_group("expiry", 4, "");
    let variants = [
        json!({"status": 410, "code": "syncStateNotFound", "location": true}),
        json!({"status": 400, "code": "syncStateInvalid"}),
        json!({"status": 400, "code": "badRequest", "inner": "resyncRequired"}),
    ];
    for (i, v) in variants.iter().enumerate() {
        settings(&fx, json!({"delta_expiry": v}));
        fx.sim_call("POST", "/_control/expire-delta-tokens", None);
        t["groups"][0]["members"] = json!([&uids[i + 1]]);
        fx.set_tenant(&t);
        let (code, out) = fx.sync_json(&[]);
        assert_eq!((code, out["kind"].as_str()), (0, Some("full")), "{v}: {out}");
        assert_eq!(fx.group(&g).expect("g").members, vec![users[i + 1].guid.clone()], "{v}");
        let history = fx.writeback(&["--json", "history"]).json();
        assert!(history["runs"][0]["message"].as_str().unwrap_or("").contains("expired"), "{history}");
    }
}

/// A fixture with `users` synced users and one security group in scope holding the first,
/// written by a first sync: (fixture, AD users, their cloud ids, the tenant, the group's id).
fn one_group(name: &str, users: usize, config: &str) -> (Fixture, Vec<AdObj>, Vec<String>, Value, String) {
    let mut fx = Fixture::new(name);
    let (ad_users, uids, cloud) = fx.synced_users(users);
    let g = fx.id(1);
    let t = tenant(cloud, vec![security_group(&g, &format!("SG-{name}"), Some(true), &[&uids[0]])]);
    fx.start_sim(&t);
    fx.write_config(config);
    assert_eq!(fx.sync_json(&[]).0, 0);
    (fx, ad_users, uids, t, g)
}

/// The cloud's groups with one of them moved to the recycle bin (or back).
fn to_bin(t: &mut Value, id: &str) {
    let groups = t["groups"].as_array_mut().expect("groups");
    let i = groups.iter().position(|g| g["id"] == id).expect("group");
    let g = groups.remove(i);
    t["deletedGroups"] = json!([g]);
}

fn from_bin(t: &mut Value) {
    let g = t["deletedGroups"][0].clone();
    t["deletedGroups"] = json!([]);
    t["groups"].as_array_mut().expect("groups").push(g);
}

#[test]
fn a_restore_seen_before_its_delete_keeps_the_group() {
    let (mut fx, users, _, mut t, g) = one_group("shuffle", 1, "on_soft_delete = \"delete\"");
    let before = fx.group(&g).expect("written");
    // Out of order and replayed: the group's removal comes after its restore in the round.
    settings(&fx, json!({"delta_shuffle": true}));
    to_bin(&mut t, &g);
    fx.set_tenant(&t);
    from_bin(&mut t);
    fx.set_tenant(&t);
    for _ in 0..2 {
        let (code, out) = fx.sync_json(&[]);
        assert_eq!((code, out["kind"].as_str(), out["deletes"].as_u64()), (0, Some("delta"), Some(0)), "{out}");
        let now = fx.group(&g).expect("a live group keeps its AD group");
        assert_eq!((now.guid.as_str(), now.members.clone()), (before.guid.as_str(), vec![users[0].guid.clone()]));
    }
}

#[test]
fn a_removal_is_confirmed_before_a_group_is_deleted() {
    let (mut fx, _, _, mut t, g) = one_group("noreason", 1, "");
    // @removed without a reason, for a group in the recycle bin: kept (on_soft_delete = keep).
    settings(&fx, json!({"delta_removed_without_reason": true}));
    to_bin(&mut t, &g);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["deletes"].as_u64()), (0, Some(0)), "{out}");
    assert!(fx.group(&g).is_some(), "a soft-deleted group is kept");
    // Purged from the recycle bin, reported without a reason again: not deleted on one entry…
    t["deletedGroups"] = json!([]);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["deletes"].as_u64()), (0, Some(0)), "{out}");
    assert!(fx.group(&g).is_some());
    // …but once Graph still knows nothing of it a cycle later.
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["kind"].as_str(), out["deletes"].as_u64()), (0, Some("delta"), Some(1)), "{out}");
    assert!(fx.group(&g).is_none());
}

#[test]
fn reads_that_lag_the_delta_are_looked_at_again() {
    let (mut fx, users, uids, mut t, g) = one_group("lag", 2, "");
    let h = fx.id(2);
    // From now on reads of the groups a change touches show them as before it, until the
    // lag ends (a control switch, not a clock: the test must not race the cycle).
    settings(&fx, json!({"lag": true}));
    t["groups"][0]["members"] = json!([&uids[0], &uids[1]]);
    t["groups"].as_array_mut().expect("groups").push(security_group(&h, "SG-New", Some(true), &[&uids[0]]));
    fx.set_tenant(&t);
    for _ in 0..2 {
        let (code, out) = fx.sync_json(&[]);
        assert_eq!(
            (code, out["adds"].as_u64(), out["member_adds"].as_u64()),
            (0, Some(0), Some(0)),
            "nothing from old data: {out}"
        );
    }
    settings(&fx, json!({"lag": false}));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(
        (code, out["kind"].as_str(), out["adds"].as_u64(), out["member_adds"].as_u64()),
        (0, Some("delta"), Some(1), Some(2)),
        "{out}"
    );
    let mut members = fx.group(&g).expect("g").members;
    members.sort();
    let mut want = vec![users[0].guid.clone(), users[1].guid.clone()];
    want.sort();
    assert_eq!(members, want);
    assert_eq!(fx.group(&h).expect("h is written").members, vec![users[0].guid.clone()]);
}

#[test]
fn a_soft_delete_seen_through_lagging_reads_is_acted_on_only_once_graph_agrees() {
    let (mut fx, _, _, mut t, g) = one_group("lagbin", 1, "on_soft_delete = \"delete\"");
    // The group goes to the recycle bin; reads still show it live, and the bin without it.
    settings(&fx, json!({"lag": true}));
    to_bin(&mut t, &g);
    fx.set_tenant(&t);
    for _ in 0..2 {
        let (code, out) = fx.sync_json(&[]);
        assert_eq!((code, out["deletes"].as_u64()), (0, Some(0)), "reported removed, read live: {out}");
        assert!(fx.group(&g).is_some());
    }
    // Reads catch up: the recycle bin has it. Acted on once Graph has said so twice.
    settings(&fx, json!({"lag": false}));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["deletes"].as_u64()), (0, Some(0)), "{out}");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["deletes"].as_u64()), (0, Some(1)), "on_soft_delete = delete, confirmed: {out}");
    assert!(fx.group(&g).is_none());
}
