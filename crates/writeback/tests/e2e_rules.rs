//! Scoping on any group property end to end (issue #22, part 3): rules with `all` / `any` of
//! `equals`, glob and `regex` on classification, description, directory extensions and the
//! membership kind; only the properties the rules read are `$select`ed (directory extensions not
//! on the delta query); `show` names the rule and the property that matched; a wrong property
//! name stops at the configuration.

mod common;

use common::*;
use serde_json::{json, Value};

const EXT: &str = "extension_0123456789abcdef0123456789abcdef_costCenter";

fn requests(fx: &Fixture) -> Vec<String> {
    let log = fx.sim_call("GET", "/_control/requests", None);
    log.as_array().into_iter().flatten().filter_map(|e| e["url"].as_str().map(String::from)).collect()
}

#[test]
fn rules_match_any_property_and_show_says_which() {
    let mut fx = Fixture::new("rules-any");
    let (users, uids, cloud) = fx.synced_users(2);
    let (a, b, c, d) = (fx.id(1), fx.id(2), fx.id(3), fx.id(4));
    let mut ga = security_group(&a, "Finance share", None, &[&uids[0]]);
    ga["classification"] = json!("Confidential");
    let mut gb = security_group(&b, "Cost center 4021", None, &[&uids[1]]);
    gb[EXT] = json!("4021");
    let mut gc = security_group(&c, "Cost center 5000", None, &[&uids[1]]);
    gc[EXT] = json!("5000");
    gc["description"] = json!("FS-77 legacy share");
    let mut gd = security_group(&d, "Dynamic sales", None, &[&uids[0]]);
    gd["groupTypes"] = json!(["DynamicMembership"]);
    gd["membershipRule"] = json!("user.department -eq \"Sales\"");
    let t = tenant(cloud, vec![ga, gb, gc, gd]);
    fx.start_sim(&t);
    let rules = format!(
        r#"
[[rules]]
action = "exclude"
all = [{{ property = "description", glob = "*legacy*" }}]

[[rules]]
action = "include"
any = [
  {{ property = "classification", equals = "confidential" }},
  {{ property = "{EXT}", regex = "^40\\d\\d$" }},
  {{ all = [{{ property = "membership", equals = "dynamic" }}, {{ property = "membershipRule", glob = "*Sales*" }}] }},
]
"#
    );
    fx.write_config(&rules);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["adds"], 3, "A, B and D are included: {out}");
    assert!(fx.group(&a).is_some_and(|g| g.members == vec![users[0].guid.clone()]));
    assert!(fx.group(&b).is_some() && fx.group(&d).is_some());
    assert!(fx.group(&c).is_none(), "C is excluded by its description");

    // Only what the rules read is selected; the delta query has no directory extension.
    let urls = requests(&fx);
    let listing = urls.iter().find(|u| u.contains("/groups?") && u.contains("top=999")).expect("a group listing");
    assert!(listing.contains("classification") && listing.contains(EXT), "{listing}");
    let delta = urls.iter().find(|u| u.contains("/groups/delta")).expect("a delta link taken");
    assert!(delta.contains("classification") && !delta.contains(EXT), "{delta}");
    assert!(!listing.contains("visibility"), "nothing the rules do not read: {listing}");

    // show names the rule and the property that matched.
    let shown = fx.writeback(&["--json", "show", &b]).json();
    let reason = shown["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("rule 2") && reason.contains(&format!("{EXT} = \"4021\"")), "{reason}");
    let shown = fx.writeback(&["--json", "show", &c]).json();
    let reason = shown["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("rule 1") && reason.contains("description = \"FS-77 legacy share\""), "{reason}");
    let shown = fx.writeback(&["show", &d]);
    assert!(
        shown.stdout.contains("membership = \"dynamic\"") && shown.stdout.contains("membershipRule"),
        "{}",
        shown.stdout
    );

    // A change of a property a rule reads is seen by the next delta cycle: A leaves scope (and
    // its AD group is kept, the default).
    let mut t2: Value = t.clone();
    t2["groups"][0]["classification"] = json!("Public");
    fx.set_tenant(&t2);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["kind"].clone()), (0, json!("delta")), "{out}");
    let shown = fx.writeback(&["--json", "show", &a]).json();
    assert_eq!(shown["in_scope"], false, "{shown}");
    assert!(fx.group(&a).is_some(), "kept");
}

#[test]
fn a_rule_on_a_property_graph_groups_do_not_have_stops_at_the_configuration() {
    let mut fx = Fixture::new("rules-bad");
    let (_, _, cloud) = fx.synced_users(1);
    fx.start_sim(&tenant(cloud, vec![]));
    for (rule, says) in [
        ("{ property = \"clasification\", equals = \"x\" }", "'clasification' is not a group property"),
        (
            "{ property = \"onPremisesExtensionAttributes.extensionAttribute1\", equals = \"x\" }",
            "only users and devices",
        ),
        ("{ property = \"classification\", regex = \"(\" }", "is not valid"),
        ("{ property = \"classification\" }", "exactly one of equals, glob or regex"),
    ] {
        fx.write_config(&format!("\n[[rules]]\naction = \"include\"\nall = [{rule}]\n"));
        let r = fx.writeback(&["plan"]);
        assert_eq!(r.code, 2, "{rule}: {} {}", r.stdout, r.stderr);
        assert!(r.stderr.contains(says), "{rule}: {}", r.stderr);
    }
}
