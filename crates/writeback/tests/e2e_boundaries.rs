//! Trust boundaries (issue #15), end to end: cloud data that wants to choose AD objects,
//! where the Graph token may go, the files writeback keeps, and the safety limits that hold
//! over the whole lifecycle.

mod common;

use common::*;
use serde_json::{json, Value};

/// An app a cloud administrator uses (User.ReadWrite.All), not writeback's.
const ADMIN_APP: &str = "99999999-2222-3333-4444-555555555555";
const ADMIN_SECRET: &str = "admin-tool-secret";

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
    let g = fx.id(1);
    let members: Vec<&str> = [uids[0].as_str()]
        .into_iter()
        .chain(forged.iter().map(String::as_str))
        .chain([claims_pc.as_str(), two_users.as_str()])
        .collect();
    let mut t = tenant(cloud, vec![security_group(&g, "SG-Anchors", Some(true), &members)]);
    t["apps"].as_array_mut().expect("apps").push(json!({"client_id": ADMIN_APP, "client_secret": ADMIN_SECRET}));
    fx.start_sim(&t);
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["member_adds"].as_u64()), (1, Some(1)), "{out}");

    // A User Administrator points the cloud-only users at the three AD objects, through Graph.
    for (id, target) in forged.iter().zip([&unsynced, &computer, &group]) {
        let body = json!({"onPremisesImmutableId": target.immutable_id()});
        let (status, answer) = fx.graph_as(ADMIN_APP, ADMIN_SECRET, "PATCH", &format!("/v1.0/users/{id}"), &body);
        assert_eq!(status, 204, "Graph lets an administrator set it on a cloud-only user: {answer}");
    }
    let body = json!({"onPremisesImmutableId": unsynced.immutable_id()});
    let (status, _) = fx.graph_as(ADMIN_APP, ADMIN_SECRET, "PATCH", &format!("/v1.0/users/{}", uids[0]), &body);
    assert_eq!(status, 400, "but not on a user synced from AD");

    // A delta cycle (the users delta names them) and a full one: only the real member is written.
    for args in [&[][..], &["--full"][..]] {
        let (code, out) = fx.sync_json(args);
        assert_eq!(
            (code, out["member_adds"].as_u64(), out["skipped_members"].as_u64()),
            (1, Some(0), Some(5)),
            "{out}"
        );
        assert_eq!(fx.group(&g).expect("written").members, vec![users[0].guid.clone()], "{args:?}");
    }
    let show = fx.writeback(&["--json", "show", &g]).json();
    let mut want: Vec<(String, String)> = forged.iter().map(|id| (id.clone(), "cloud-only".to_string())).collect();
    want.extend([
        (uids[0].clone(), "written".to_string()),
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
