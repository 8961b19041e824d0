//! Active Directory as Windows behaves (issue #19): the same real binary and real DC, through a
//! layer (`writeback-dc-proxy`) that enforces what Windows' default LDAP policies and refusals
//! do where Samba does not. Each test reaches a path every Windows deployment takes and shows
//! it: writeback's log line and the layer's.

mod common;

use std::collections::HashSet;

use common::windows::WindowsDc;
use common::*;
use ldap3::Mod;
use serde_json::Value;

const FALLBACK: &str = "the DC cut an unpaged search short at its limit";

fn groups(fx: &Fixture, n: u32, members: &[&str]) -> Vec<Value> {
    (1..=n).map(|i| security_group(&fx.id(i), &format!("SG-Win-{i:04}"), Some(true), members)).collect()
}

#[test]
fn past_max_page_size_unpaged_searches_fall_back_to_paging_for_writes_reads_and_deltas() {
    let mut fx = Fixture::new("winpage");
    let layer = WindowsDc::start(&fx, &[]);
    fx.dc.url = layer.url.clone();
    // 1,200 groups in one OU: more than MaxPageSize (1,000) in one answer.
    fx.start_sim(&tenant(vec![], groups(&fx, 1200, &[])));
    fx.write_config("");
    let first = fx.writeback(&["-v", "--json", "sync", "--allow-creates"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.json()["adds"], 1200);
    assert!(first.stderr.contains(FALLBACK), "the GUIDs of 1,200 new groups are read paged: {}", first.stderr);
    assert!(layer.log().contains("Cut(Size)"), "{}", layer.log());

    // All 1,200 read back through the cap: nothing to do, nothing duplicated.
    let again = fx.writeback(&["-v", "--json", "sync", "--full"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    for k in ["adds", "updates", "deletes", "errors"] {
        assert_eq!(again.json()[k], 0, "{k}: {}", again.stdout);
    }
    let ou = fx.groups_ou.clone();
    assert_eq!(fx.groups(&ou).len(), 1200);

    // 1,200 changes in AD since the last cycle: the delta's search of changed groups is cut
    // too, read paged, and every drift reverted.
    for g in fx.groups(&ou) {
        fx.modify(&g.dn, vec![Mod::Replace("description", HashSet::from(["changed in AD"]))]);
    }
    let delta = fx.writeback(&["-v", "--json", "sync"]);
    assert_eq!(delta.code, 0, "{}", delta.stderr);
    assert_eq!((delta.json()["kind"].as_str(), delta.json()["updates"].as_u64()), (Some("delta"), Some(1200)));
    assert!(delta.stderr.contains(FALLBACK), "{}", delta.stderr);

    // A DC too slow for the delta's unpaged search of 1,200 changed groups within
    // MaxQueryDuration (made deterministic: out of time after 800 entries): asked again, paged
    // (each page a short search of its own), and the cycle goes through.
    let slow = WindowsDc::start(&fx, &["--slow-after-entries", "800", "--max-page-size", "5000"]);
    fx.dc.url = slow.url.clone();
    fx.write_config("");
    for g in fx.groups(&ou) {
        fx.modify(&g.dn, vec![Mod::Replace("description", HashSet::from(["changed again"]))]);
    }
    let r = fx.writeback(&["-v", "--json", "sync"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(FALLBACK) && r.stderr.contains("rc=3"), "{}", r.stderr);
    assert!(slow.log().contains("Cut(Time)") && !slow.log().contains("Cut(Size)"), "{}", slow.log());
    assert_eq!(r.json()["updates"], 1200, "{}", r.stdout);
}

#[test]
fn groups_of_1600_and_3100_members_are_read_through_max_val_range() {
    let mut fx = Fixture::new("winrange");
    let users = common::windows::user_pool(&mut fx, 3100);
    let uids: Vec<String> = (0..users.len()).map(|i| fx.id(10_000 + i as u32)).collect();
    let cloud: Vec<Value> = users.iter().zip(&uids).map(|(u, id)| synced_user(id, u)).collect();
    let layer = WindowsDc::start(&fx, &[]);
    fx.dc.url = layer.url.clone();
    let (big, mid) = (fx.id(1), fx.id(2));
    let all: Vec<&str> = uids.iter().map(String::as_str).collect();
    let t = tenant(
        cloud,
        vec![
            security_group(&big, "SG-3100", Some(true), &all),
            security_group(&mid, "SG-1600", Some(true), &all[..1600]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["member_adds"].as_u64()), (0, Some(4700)), "{out}");
    assert_eq!(fx.group(&big).expect("written").members.len(), 3100);
    assert_eq!(fx.group(&mid).expect("written").members.len(), 1600);

    // A full cycle reads both groups' members in ranges of 1,500 (Windows ranges every read,
    // also the rest writeback asks for as `member;range=1500-*`): each member is known,
    // nothing is added twice or removed. 3,100 crosses two range boundaries, as 5,000 would.
    let again = fx.writeback(&["-v", "--json", "sync", "--full"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    for k in ["member_adds", "member_removes", "errors"] {
        assert_eq!(again.json()[k], 0, "{k}: {}", again.stdout);
    }
    let log = layer.log();
    assert!(log.contains("Ranged { attr: \"member\", values: 1600 }"), "the range after the first: {log}");

    // A member removed in the cloud leaves AD from the 3,100-member group.
    let mut t = t;
    t["groups"][0]["members"] = serde_json::json!(all[1..].to_vec());
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&["--full"]);
    assert_eq!((code, out["member_removes"].as_u64(), out["member_adds"].as_u64()), (0, Some(1), Some(0)), "{out}");
    assert!(!fx.group(&big).expect("group").members.contains(&users[0].guid));
}

#[test]
fn windows_refusals_reach_the_per_object_errors_in_windows_words() {
    let mut fx = Fixture::new("winrefuse");
    let (_, uids, cloud) = fx.synced_users(1);
    let layer = WindowsDc::start(&fx, &[]);
    fx.dc.url = layer.url.clone();
    let (taken_sam, taken_cn) = (fx.id(1), fx.id(2));
    // Objects writeback does not own hold the sAMAccountName one group would get and the DN
    // the other would get.
    let other = fx.create_group("unrelated", UNIVERSAL_SECURITY, None);
    let sam = format!("Group_{taken_sam}");
    fx.modify(&other.dn, vec![Mod::Replace("sAMAccountName", HashSet::from([sam.as_str()]))]);
    let groups_ou = fx.groups_ou.clone();
    fx.create_group(&format!("Group_{taken_cn}"), UNIVERSAL_SECURITY, Some(&groups_ou));
    let t = tenant(
        cloud,
        vec![
            security_group(&taken_sam, "SG-Sam", Some(true), &[&uids[0]]),
            security_group(&taken_cn, "SG-Cn", Some(true), &[&uids[0]]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("");
    let (code, _) = fx.sync_json(&[]);
    assert_eq!(code, 1);
    let said = fx.error_message(&taken_sam);
    assert!(said.contains(&format!("the sAMAccountName {sam} is already used")), "{said}");
    let said = fx.error_message(&taken_cn);
    assert!(said.contains("already exists and writeback does not own it"), "{said}");
    let log = layer.log();
    assert!(log.contains("win32: \"00000524\"") && log.contains("win32: \"00002071\""), "Windows' codes: {log}");

    // A domain-local group in a universal group: Samba takes it, Windows (the layer) refuses
    // with ERROR_DS_UNIVERSAL_CANT_HAVE_LOCAL_MEMBER. (writeback skips such members before
    // writing: planner_tests.rs; this shows the refusal it would get, in AD's own words.)
    let local = fx.create_group("local", -2147483644, None);
    let universal = fx.create_group("universal", UNIVERSAL_SECURITY, None);
    let mut ldap = fx.dc.connect_to(&layer.url);
    let add = Mod::Add("member", HashSet::from([local.dn.as_str()]));
    let res = ldap.modify(&universal.dn, vec![add]).expect("an answer");
    assert_eq!(res.rc, 53, "{res:?}");
    assert!(res.text.starts_with("00002146:"), "{res:?}");
    fx.modify(&universal.dn, vec![Mod::Add("member", HashSet::from([local.dn.as_str()]))]);
}

#[test]
fn a_value_past_range_upper_and_an_attribute_this_dc_lacks_are_per_object_errors_that_say_what_to_do() {
    let mut fx = Fixture::new("winrange");
    let (_, uids, cloud) = fx.synced_users(1);
    let (long, short) = (fx.id(1), fx.id(2));
    let description = "twenty-nine characters, this.";
    let mut long_group = security_group(&long, "SG-Long", Some(true), &[&uids[0]]);
    long_group["description"] = description.into();
    let mut t = tenant(cloud, vec![long_group, security_group(&short, "SG-Short", Some(true), &[&uids[0]])]);
    fx.start_sim(&t);
    // Windows' description allows 1,024 characters and writeback sends at most 448 (every
    // layered test checks Windows' rangeUpper): a DC that allows 20 is what makes it refuse.
    let narrow = WindowsDc::start(&fx, &["--range-upper", "description=20"]);
    fx.dc.url = narrow.url.clone();
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["adds"].as_u64()), (1, Some(1)), "the other group is written: {out}");
    let said = fx.error_message(&long);
    assert!(said.contains("the DC refused a value of description as longer than its schema allows"), "{said}");
    assert!(said.contains("AD error 8322") && said.contains("shorten it in Entra"), "{said}");
    assert!(fx.group(&long).is_none() && fx.group(&short).is_some());
    assert!(narrow.log().contains("description: 29 characters, past its rangeUpper 20"), "{}", narrow.log());

    // A DC that a schema extension made on another DC has not reached yet (its reads show the
    // anchor, its writes refuse it): only where the anchor is written, on the 2016 schema.
    let lagging_schema = std::env::var("WRITEBACK_TEST_SCHEMA").as_deref() != Ok("2012r2");
    let late = fx.id(3);
    if lagging_schema {
        t["groups"].as_array_mut().expect("groups").push(security_group(&late, "SG-Late", Some(true), &[&uids[0]]));
        fx.set_tenant(&t);
        let lagging = WindowsDc::start(&fx, &["--refuse-attribute", "msDS-ExternalDirectoryObjectId"]);
        fx.dc.url = lagging.url.clone();
        fx.write_config("");
        assert_eq!(fx.sync_json(&[]).0, 1);
        let said = fx.error_message(&late);
        assert!(said.contains("the DC's schema lacks an attribute writeback wrote"), "{said}");
        assert!(said.contains("wait until the change has replicated"), "{said}");
        assert!(fx.group(&late).is_none());
    }

    // The DC as it is: what was refused is written by the next run; nothing was lost.
    fx.dc.url = fx.dc.upstream.clone();
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    assert_eq!(fx.group(&long).expect("written now").one("description"), Some(description));
    assert!(!lagging_schema || fx.group(&late).is_some());
    assert_eq!(fx.error_message(&long), "");
}

#[test]
fn a_2012_r2_schema_without_the_2016_anchor_and_a_search_past_max_query_duration() {
    let mut fx = Fixture::new("winschema");
    let (_, uids, cloud) = fx.synced_users(1);
    let g = fx.id(1);
    fx.start_sim(&tenant(cloud.clone(), vec![security_group(&g, "SG-Anchor", Some(true), &[&uids[0]])]));

    // The test DC has the 2016 schema (scripts/samba-dc; WRITEBACK_DC_SCHEMA=2012r2 makes one
    // without, and the env file says which): the anchor is written as Cloud Sync writes it.
    let has_2016 = std::env::var("WRITEBACK_TEST_SCHEMA").as_deref() != Ok("2012r2");
    fx.write_config("");
    let mut t = tenant(cloud.clone(), vec![security_group(&g, "SG-Anchor", Some(true), &[&uids[0]])]);
    if has_2016 {
        t = adopts_by_the_2016_anchor(&mut fx, &g, &uids, cloud);
    }
    // Through a 2012 R2 schema (the layer hides the attribute): no anchor written, and a
    // write of it would be refused as Windows refuses an attribute the schema lacks.
    let layer = WindowsDc::start(&fx, &["--hide-attribute", "msDS-ExternalDirectoryObjectId"]);
    fx.dc.url = layer.url.clone();
    fx.write_config("");
    assert!(fx.writeback(&["check"]).stdout.contains("msDS-ExternalDirectoryObjectId absent"));
    let n = fx.id(3);
    t["groups"].as_array_mut().expect("groups").push(security_group(&n, "SG-2012", Some(true), &[&uids[0]]));
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["adds"].as_u64()), (0, Some(1)), "{out}");
    assert_eq!(fx.group(&n).expect("written").one("msDS-ExternalDirectoryObjectId"), None);
    assert!(layer.log().contains("Hidden"), "{}", layer.log());

    // A DC that ends every search at MaxQueryDuration, the rootDSE's too: a clear error, not
    // a partial read. (A slow search of 1,200 groups: past_max_page_size_….)
    let slow = WindowsDc::start(&fx, &["--max-query-duration", "0s"]);
    fx.dc.url = slow.url.clone();
    fx.write_config("");
    let r = fx.writeback(&["sync", "--full"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("time limit exceeded (the DC's MaxQueryDuration"), "{}", r.stderr);
}

/// On a 2016 schema: the anchor written, and a group Cloud Sync wrote adopted by it.
fn adopts_by_the_2016_anchor(fx: &mut Fixture, g: &str, uids: &[String], cloud: Vec<Value>) -> Value {
    assert!(fx.writeback(&["check"]).stdout.contains("msDS-ExternalDirectoryObjectId present"));
    assert_eq!(fx.sync_json(&[]).0, 0);
    let anchor = format!("Group_{g}");
    assert_eq!(fx.group(g).expect("written").one("msDS-ExternalDirectoryObjectId"), Some(anchor.as_str()));

    // A group Cloud Sync wrote (its anchor only, no adminDescription) is adopted in place.
    let c = fx.id(2);
    let groups_ou = fx.groups_ou.clone();
    let cloud_sync = fx.create_group("From Cloud Sync", UNIVERSAL_SECURITY, Some(&groups_ou));
    let value = format!("Group_{c}");
    fx.modify(&cloud_sync.dn, vec![Mod::Replace("msDS-ExternalDirectoryObjectId", HashSet::from([value.as_str()]))]);
    let t = tenant(
        cloud,
        vec![
            security_group(g, "SG-Anchor", Some(true), &[&uids[0]]),
            security_group(&c, "SG-CloudSync", Some(true), &[&uids[0]]),
        ],
    );
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&["--full"]);
    assert_eq!((code, out["adds"].as_u64()), (0, Some(0)), "adopted, not created beside it: {out}");
    let adopted = fx.group(&c).expect("adopted: it carries the marker now");
    assert_eq!(adopted.guid, cloud_sync.guid, "the same object");

    t
}
