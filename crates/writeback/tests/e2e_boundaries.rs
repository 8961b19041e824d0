//! Trust boundaries (issue #15), end to end: cloud data that wants to choose AD objects,
//! where the Graph token may go, the files writeback keeps, and the safety limits that hold
//! over the whole lifecycle.

mod common;

use common::*;
use serde_json::{json, Value};

/// An app a cloud administrator uses (User.ReadWrite.All), not writeback's.
const ADMIN_APP: &str = "99999999-2222-3333-4444-555555555555";
const ADMIN_SECRET: &str = "admin-tool-secret";

/// objectGUID bytes (Data1..3 little-endian) of a GUID string.
fn guid_bytes(g: &str) -> Vec<u8> {
    let h: Vec<u8> = g
        .replace('-', "")
        .as_bytes()
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).expect("hex"), 16).expect("hex"))
        .collect();
    vec![h[3], h[2], h[1], h[0], h[5], h[4], h[7], h[6], h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn member_reasons(show: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = show["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (m["cloud_id"].as_str().unwrap_or("").to_string(), m["reason"].as_str().unwrap_or("written").to_string())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn cloud_data_cannot_choose_which_ad_objects_become_members() {
    let mut fx = Fixture::new("anchors");
    let (users, uids, mut cloud) = fx.synced_users(2);
    // Three AD objects no cloud user was synced from: a user, a computer and a security group.
    let unsynced = fx.create_user("unsynced");
    let computer = fx.create_computer("pc01");
    let group = fx.create_group("SG-OnPrem", UNIVERSAL_SECURITY, None);
    // Three cloud-only users in a group that is written back.
    let forged: Vec<String> = (0..3).map(|i| fx.id(500 + i)).collect();
    cloud.extend(forged.iter().map(|id| cloud_user(id)));
    // Two synced users whose sync-written anchors disagree with AD: a computer's SID, and a
    // SID and an immutable id of two different users.
    let (claims_pc, two_users) = (fx.id(600), fx.id(601));
    let mut u = synced_user(&claims_pc, &users[0]);
    u["onPremisesSecurityIdentifier"] = json!(computer.sid);
    u["onPremisesImmutableId"] = Value::Null;
    let mut v = synced_user(&two_users, &users[1]);
    v["onPremisesImmutableId"] = json!(unsynced.immutable_id());
    cloud.extend([u, v]);
    // A user moved from another forest: its immutable id is its mS-DS-ConsistencyGuid (Entra
    // Connect's source anchor), not its objectGUID. Written.
    let moved = fx.create_user("moved");
    let consistency = guid_bytes("0badc0de-1234-4abc-8def-00000000a001");
    let value = std::collections::HashSet::from([&consistency[..]]);
    let set = ldap3::Mod::Replace(&b"mS-DS-ConsistencyGuid"[..], value);
    fx.ldap.modify(&moved.dn, vec![set]).expect("modify").success().expect("consistency GUID set");
    let moved_id = fx.id(602);
    let mut m = synced_user(&moved_id, &moved);
    m["onPremisesImmutableId"] = json!(base64_of(&consistency));
    cloud.push(m);
    let g = fx.id(1);
    let members: Vec<&str> = [uids[0].as_str()]
        .into_iter()
        .chain(forged.iter().map(String::as_str))
        .chain([claims_pc.as_str(), two_users.as_str(), moved_id.as_str()])
        .collect();
    let mut t = tenant(cloud, vec![security_group(&g, "SG-Anchors", Some(true), &members)]);
    t["apps"].as_array_mut().expect("apps").push(json!({"client_id": ADMIN_APP, "client_secret": ADMIN_SECRET}));
    // The forged users hold a directory role and sit in an administrative unit: Graph lists both
    // in their memberOf, beside groups.
    let (role, unit) = (fx.id(700), fx.id(701));
    t["directoryRoles"] = json!([{"id": role, "displayName": "User Administrator", "members": [&forged[0]]}]);
    t["administrativeUnits"] = json!([{"id": unit, "displayName": "Paris", "members": [&forged[1]]}]);
    fx.start_sim(&t);
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["member_adds"].as_u64()), (1, Some(2)), "{out}");

    // A User Administrator points the cloud-only users at the three AD objects, through Graph.
    for (id, target) in forged.iter().zip([&unsynced, &computer, &group]) {
        let body = json!({"onPremisesImmutableId": target.immutable_id()});
        let (status, answer) = fx.graph_as(ADMIN_APP, ADMIN_SECRET, "PATCH", &format!("/v1.0/users/{id}"), &body);
        assert_eq!(status, 204, "Graph lets an administrator set it on a cloud-only user: {answer}");
    }
    let body = json!({"onPremisesImmutableId": unsynced.immutable_id()});
    let (status, _) = fx.graph_as(ADMIN_APP, ADMIN_SECRET, "PATCH", &format!("/v1.0/users/{}", uids[0]), &body);
    assert_eq!(status, 400, "but not on a user synced from AD");

    // A delta cycle (the users delta names them) and a full one: only the real members are written.
    fx.sim_call("DELETE", "/_control/requests", None);
    let mut real = vec![users[0].guid.clone(), moved.guid.clone()];
    real.sort();
    for args in [&[][..], &["--full"][..]] {
        let (code, out) = fx.sync_json(args);
        assert_eq!(
            (code, out["member_adds"].as_u64(), out["skipped_members"].as_u64()),
            (1, Some(0), Some(5)),
            "{out}"
        );
        let mut members = fx.group(&g).expect("written").members;
        members.sort();
        assert_eq!(members, real, "{args:?}");
    }
    let log = fx.sim_call("GET", "/_control/requests", None).to_string();
    assert!(log.contains("/memberOf"), "the delta cycle asked for the changed users' groups: {log}");
    for not_a_group in [&role, &unit] {
        assert!(
            !log.contains(&format!("/groups/{not_a_group}")),
            "a role or administrative unit is not read as a group"
        );
    }
    let show = fx.writeback(&["--json", "show", &g]).json();
    let mut want: Vec<(String, String)> = forged.iter().map(|id| (id.clone(), "cloud-only".to_string())).collect();
    want.extend([
        (uids[0].clone(), "written".to_string()),
        (moved_id.clone(), "written".to_string()),
        (claims_pc.clone(), "anchor-mismatch".to_string()),
        (two_users.clone(), "anchor-mismatch".to_string()),
    ]);
    want.sort();
    assert_eq!(member_reasons(&show), want, "{show}");
    let errors = fx.writeback(&["--json", "errors"]).json();
    let messages: Vec<&str> =
        errors["errors"].as_array().into_iter().flatten().filter_map(|e| e["message"].as_str()).collect();
    assert!(messages.iter().any(|m| m.contains(&computer.dn) && m.contains("a computer account")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("onPremisesImmutableId names another object")), "{messages:?}");
}

/// A listener that takes requests and answers each with an empty Graph page, keeping what it
/// was sent: where a leaked token would go.
struct Thief {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Thief {
    fn start() -> Thief {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let mut buf = [0u8; 8192];
                let n = s.read(&mut buf).unwrap_or(0);
                log.lock().expect("log").push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let body = r#"{"value": []}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \
                    {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Thief { url, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("log").clone()
    }
}

#[test]
fn the_graph_token_goes_only_to_graph_url() {
    let mut fx = Fixture::new("links");
    let groups: Vec<Value> =
        (1..=3).map(|i| security_group(&fx.id(i), &format!("SG-Link-{i}"), Some(true), &[])).collect();
    fx.start_sim(&tenant(vec![], groups));
    fx.write_config("");
    let thief = Thief::start();

    // Graph's pages point at another host: the read fails, the token stays home.
    fx.sim_call("POST", "/_control/settings", Some(&json!({"page_size": 1, "link_base": thief.url})));
    let r = fx.writeback(&["sync", "--full"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("is not at [cloud] graph_url") && r.stderr.contains(&thief.url), "{}", r.stderr);
    assert!(thief.requests().is_empty(), "nothing was sent to the other host: {:?}", thief.requests());
    assert!(fx.group(&fx.id(1)).is_none(), "a partial listing wrote nothing");

    // Honest links again: the sync goes through.
    fx.sim_call("POST", "/_control/settings", Some(&json!({"link_base": null})));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["adds"].as_u64()), (0, Some(3)), "{out}");

    // A delta link in the state that names another host is not followed either.
    let db = fx.dir.join("state.db");
    let marks = common::sqlite(&db, "SELECT value FROM meta WHERE key = 'watermarks'");
    let mut marks: Value = serde_json::from_str(&marks).expect("json");
    marks["groups_link"] = json!(format!("{}/beta/groups/delta?$deltatoken=stolen", thief.url));
    let quoted = marks.to_string().replace('\'', "''");
    common::sqlite(&db, &format!("UPDATE meta SET value = '{quoted}' WHERE key = 'watermarks'"));
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("is not at [cloud] graph_url"), "{}", r.stderr);
    assert!(thief.requests().is_empty(), "{:?}", thief.requests());

    // What writeback keeps on disk is its owner's alone.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in ["state.db", "state.db.lock"] {
            let mode = std::fs::metadata(fx.dir.join(f)).expect(f).permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
}

#[test]
fn a_dn_in_the_state_never_widens_the_managed_ous() {
    let mut fx = Fixture::new("stateous");
    let (g, h) = (fx.id(1), fx.id(2));
    fx.start_sim(&tenant(vec![], vec![security_group(&g, "SG-G", Some(true), &[])]));
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    // An OU writeback was never configured for, holding a group with the marker of a cloud
    // group about to come into scope.
    let outside = format!("OU=Outside,{}", fx.ou);
    fx.add_ou(&outside);
    let planted = fx.create_group("planted", UNIVERSAL_SECURITY, Some(&outside));
    let marker = format!("Group_{h}");
    fx.modify(
        &planted.dn,
        vec![ldap3::Mod::Replace("adminDescription", std::collections::HashSet::from([marker.as_str()]))],
    );
    let before = fx.groups(&outside);
    // The state says an owned group lives there (a damaged or altered state file).
    let db = fx.dir.join("state.db");
    let n = common::sqlite(
        &db,
        &format!("UPDATE links SET dn = 'CN=Group_{g},{outside}' WHERE cloud_id = '{g}'; SELECT changes();"),
    );
    assert_eq!(n, "1");

    fx.set_tenant(&tenant(
        vec![],
        vec![security_group(&g, "SG-G", Some(true), &[]), security_group(&h, "SG-H", Some(true), &[])],
    ));
    let (code, out) = fx.sync_json(&["--full"]);
    assert_eq!((code, out["adds"].as_u64(), out["moves"].as_u64()), (0, Some(1), Some(0)), "{out}");
    let after = fx.groups(&outside);
    assert_eq!(
        after.iter().map(|x| (&x.dn, x.one("uSNChanged"))).collect::<Vec<_>>(),
        before.iter().map(|x| (&x.dn, x.one("uSNChanged"))).collect::<Vec<_>>(),
        "the planted group is neither moved nor changed"
    );
    let written = fx.group(&h).expect("H is written in the target OU");
    assert!(written.dn.ends_with(&fx.groups_ou) && written.guid != planted.guid, "{}", written.dn);
}

#[test]
fn a_group_about_to_lose_most_of_its_members_keeps_them_until_allowed() {
    let mut fx = Fixture::new("percent");
    let (users, uids, cloud) = fx.synced_users(150);
    let (a, b, c) = (fx.id(1), fx.id(2), fx.id(3));
    let all: Vec<&str> = uids.iter().map(String::as_str).collect();
    let mut t = tenant(
        cloud,
        vec![
            security_group(&a, "SG-A", Some(true), &all),
            security_group(&b, "SG-B", Some(true), &all),
            security_group(&c, "SG-C", Some(true), &all[..1]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);

    // The cloud takes 120 of A's 150 members (80%), 60 of B's (fewer than 100), adds one to C.
    t["groups"][0]["members"] = json!(all[120..]);
    t["groups"][1]["members"] = json!(all[60..]);
    t["groups"][2]["members"] = json!(all[..2]);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(
        (code, out["status"].as_str(), out["member_removes"].as_u64(), out["member_adds"].as_u64()),
        (3, Some("stopped-delete-threshold"), Some(60), Some(1)),
        "A's removals held, the rest applied: {out}"
    );
    assert_eq!(fx.group(&a).expect("a").members.len(), 150);
    assert_eq!(fx.group(&b).expect("b").members.len(), 90);
    assert_eq!(fx.group(&c).expect("c").members.len(), 2);
    let errors = fx.writeback(&["--json", "errors"]).json();
    let held = errors["errors"].as_array().into_iter().flatten().find(|e| e["cloud_id"] == a.as_str()).cloned();
    let msg = held.as_ref().and_then(|e| e["message"].as_str()).unwrap_or("").to_string();
    assert!(
        msg.contains("120 of its 150 members")
            && msg.contains("member_removal_percent")
            && msg.contains("--allow-deletes"),
        "{errors}"
    );
    // Asked again without the override: still held (the group stays dirty through its error).
    assert_eq!(fx.sync_json(&[]).0, 3);
    assert_eq!(fx.group(&a).expect("a").members.len(), 150);

    let (code, out) = fx.sync_json(&["--allow-deletes"]);
    assert_eq!((code, out["member_removes"].as_u64()), (0, Some(120)), "{out}");
    let mut left = fx.group(&a).expect("a").members;
    left.sort();
    let mut want: Vec<String> = users[120..].iter().map(|u| u.guid.clone()).collect();
    want.sort();
    assert_eq!(left, want);
}

#[test]
fn a_daemon_whose_lock_file_is_replaced_stops_writing() {
    let mut fx = Fixture::new("lockid");
    fx.start_sim(&tenant(vec![], vec![security_group(&fx.id(1), "SG-Lock", Some(true), &[])]));
    fx.write_config("[daemon]\ninterval = \"1s\"\nfull_interval = \"1h\"\n");
    let mut d = Daemon::start(&fx);
    d.wait_for("a cycle", |h| h["reason"] == "ok");
    // Another file under the lock's name: a second instance could lock it.
    let lock = fx.dir.join("state.db.lock");
    std::fs::remove_file(&lock).expect("rm");
    std::fs::write(&lock, b"").expect("new lock file");
    assert_eq!(d.wait_exit(), Some(4), "the daemon stops writing and exits");
    let port = d.url.rsplit(':').next().unwrap_or("").to_string();
    let log = std::fs::read_to_string(fx.dir.join(format!("daemon-{port}.log"))).unwrap_or_default();
    assert!(log.contains("removed or replaced"), "{log}");
    // The new file is a lock like any other: a sync takes it.
    assert_eq!(fx.sync_json(&[]).0, 0);
}

#[test]
fn a_group_moved_out_of_the_managed_ous_is_reported_not_duplicated() {
    let mut fx = Fixture::new("outside");
    let (users, uids, cloud) = fx.synced_users(2);
    let (g, h) = (fx.id(1), fx.id(2));
    fx.start_sim(&tenant(
        cloud,
        vec![
            security_group(&g, "SG-Moved", Some(true), &[&uids[0]]),
            security_group(&h, "SG-Nests", Some(true), &[&uids[1]]),
        ],
    ));
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    let before = fx.group(&g).expect("written");
    // Someone moves it out of the managed OU.
    let elsewhere = format!("OU=Elsewhere,{}", fx.ou);
    fx.add_ou(&elsewhere);
    let rdn = before.dn.split(",OU=").next().expect("rdn").to_string();
    fx.ldap.modifydn(&before.dn, &rdn, true, Some(&elsewhere)).expect("move").success().expect("moved");

    for args in [&["--full"][..], &[][..]] {
        let (code, out) = fx.sync_json(args);
        assert_eq!((code, out["adds"].as_u64()), (1, Some(0)), "no second group beside the moved one: {out}");
    }
    let copies: Vec<_> = fx
        .groups(&fx.ou.clone())
        .into_iter()
        .filter(|x| x.one("adminDescription") == Some(format!("Group_{g}").as_str()))
        .collect();
    assert_eq!(copies.len(), 1, "one group carries the marker");
    assert_eq!(
        (copies[0].guid.as_str(), copies[0].members.clone()),
        (before.guid.as_str(), vec![users[0].guid.clone()])
    );
    let errors = fx.writeback(&["--json", "errors"]).json().to_string();
    assert!(errors.contains("outside the managed OUs") && errors.contains("OU=Elsewhere"), "{errors}");

    // Moved back: managed again, nothing else to do.
    let moved = copies[0].dn.clone();
    let groups_ou = fx.groups_ou.clone();
    fx.ldap.modifydn(&moved, &rdn, true, Some(&groups_ou)).expect("move").success().expect("moved back");
    let (code, out) = fx.sync_json(&["--full"]);
    assert_eq!((code, out["adds"].as_u64()), (0, Some(0)), "{out}");
}
