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

/// Samba's Global Catalog port over TLS (its certificate is the DC's).
const GC: &str = "ldaps://127.0.0.1:3269";

#[test]
fn the_global_catalog_is_asked_for_what_this_domain_lacks_and_a_member_of_another_forest_is_said() {
    let mut fx = Fixture::new("gc");
    let (users, uids, mut cloud) = fx.synced_users(1);
    let foreign = fx.id(20_001);
    cloud.push(json!({"id": foreign, "displayName": "From Fabrikam", "onPremisesSyncEnabled": true,
                      "onPremisesSecurityIdentifier": "S-1-5-21-111-222-333-1104"}));
    let g = fx.id(1);
    fx.start_sim(&tenant(cloud, vec![security_group(&g, "SG-Forest", Some(true), &[&uids[0], &foreign])]));
    let with_gc = |fx: &Fixture, url: &str| {
        fx.write_config("");
        fx.edit_config(|c| c.replacen("\n[writeback]", &format!("gc_url = \"{url}\"\n\n[writeback]"), 1));
    };
    with_gc(&fx, GC);
    let check = fx.writeback(&["check"]);
    assert!(
        check.stdout.contains(&format!("Global Catalog: reachable at {GC}; a single-domain forest")),
        "{}",
        check.stdout
    );

    let r = fx.writeback(&["-v", "--json", "sync"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("not in this domain: looked up in the Global Catalog"), "{}", r.stderr);
    assert_eq!(fx.group(&g).expect("written").members, vec![users[0].guid.clone()]);
    let show = fx.writeback(&["--json", "show", &g]).json();
    let members = show["members"].as_array().cloned().unwrap_or_default();
    let said = members.iter().find(|m| m["cloud_id"] == foreign.as_str()).map(|m| m["reason"].clone());
    assert_eq!(said, Some("other-forest".into()), "{show}");

    // A Global Catalog that cannot be reached: the run does not go on without it (members of
    // other domains would read as gone).
    with_gc(&fx, "ldaps://127.0.0.1:1");
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("the Global Catalog [ad] gc_url"), "{}", r.stderr);
}
