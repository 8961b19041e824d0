//! Members from the whole forest (issue #20): computers as members (`write_devices`), and the
//! Global Catalog. The test DC is a single-domain forest: what that cannot show is in
//! docs/testing.md.

mod common;

use std::collections::HashSet;

use common::*;
use serde_json::{json, Value};

fn device(id: &str, name: &str, synced: Option<&AdObj>) -> Value {
    let trust = if synced.is_some() { "ServerAd" } else { "AzureAd" };
    json!({"id": id, "displayName": name, "accountEnabled": true, "trustType": trust,
           "onPremisesSyncEnabled": synced.map(|_| true),
           "onPremisesSecurityIdentifier": synced.map(|c| c.sid.clone()),
           "deviceId": synced.map(|c| c.guid.clone()).unwrap_or_else(|| id.to_string())})
}

#[test]
fn hybrid_joined_devices_are_written_as_their_computer_accounts_and_cloud_only_ones_are_skipped() {
    let mut fx = Fixture::new("devices");
    let (users, uids, cloud) = fx.synced_users(1);
    let pc = fx.create_computer("PC-0001");
    let (g, hybrid, entra) = (fx.id(1), fx.id(501), fx.id(502));
    let mut t = tenant(cloud, vec![security_group(&g, "SG-Devices", Some(true), &[&uids[0], &hybrid, &entra])]);
    t["devices"] = json!([device(&hybrid, "PC-0001", Some(&pc)), device(&entra, "LAPTOP-CLOUD", None)]);
    fx.start_sim(&t);

    // Off by default: devices are not written (as Cloud Sync), said per member.
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    assert_eq!(fx.group(&g).expect("written").members, vec![users[0].guid.clone()]);
    let show = fx.writeback(&["--json", "show", &g]).json();
    let reason = |show: &Value, id: &str| {
        let members = show["members"].as_array().cloned().unwrap_or_default();
        members.iter().find(|m| m["cloud_id"] == id).map(|m| m["reason"].clone()).unwrap_or_default()
    };
    assert_eq!(reason(&show, &hybrid), "unsupported-member-type", "{show}");

    fx.write_config("write_devices = true");
    let (code, out) = fx.sync_json(&["--full"]);
    assert_eq!((code, out["member_adds"].as_u64()), (0, Some(1)), "{out}");
    let want: HashSet<String> = [users[0].guid.clone(), pc.guid.clone()].into();
    assert_eq!(fx.group(&g).expect("written").members.into_iter().collect::<HashSet<_>>(), want);
    let show = fx.writeback(&["--json", "show", &g]).json();
    assert_eq!(reason(&show, &entra), "cloud-only-device", "{show}");
    assert_eq!(reason(&show, &hybrid), Value::Null, "written: {show}");
}
