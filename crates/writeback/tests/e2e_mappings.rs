//! Attribute mappings end to end (issue #22, part 4): `[[mappings]]` write sAMAccountName,
//! info and extensionAttributeN from templates over group properties; `plan` shows them first;
//! a sAMAccountName another AD object holds is reported and never taken; a wrong mapping, or
//! one to an attribute the DC's schema lacks, stops at exit 2 naming it.

mod common;

use common::windows::WindowsDc;
use common::*;
use serde_json::json;

const MAPPINGS: &str = r#"
[[mappings]]
attribute = "sAMAccountName"
value = "grp-{ToLower(mailNickname)}"

[[mappings]]
attribute = "info"
value = "{Default(Trim(description), \"no description\")} ({classification})"

[[mappings]]
attribute = "extensionAttribute1"
value = "{ToUpper(Left(displayName, 3))}"
"#;

#[test]
fn mappings_write_their_attributes_and_never_take_a_name_in_use() {
    let mut fx = Fixture::new("mappings");
    let (_, uids, cloud) = fx.synced_users(1);
    // An AD user already holds the name group B would be mapped to.
    let nick = format!("taken{}", &fx.token[..6]);
    let taken = format!("grp-{nick}");
    let holder = format!("CN=holder,{}", fx.ou);
    let user =
        [("objectClass", std::collections::HashSet::from(["user"])), ("sAMAccountName", [taken.as_str()].into())];
    fx.ldap.add(&holder, user.to_vec()).expect("add").success().expect("the holder added");
    let (a, b) = (fx.id(1), fx.id(2));
    let mut ga = security_group(&a, "Sales Team", Some(true), &[&uids[0]]);
    ga["mailNickname"] = json!("Sales.Team");
    ga["description"] = json!("  sales share  ");
    ga["classification"] = json!("Internal");
    let mut gb = security_group(&b, "Taken", Some(true), &[]);
    gb["mailNickname"] = json!(nick.to_uppercase());
    let mut t = tenant(cloud, vec![ga, gb]);
    fx.start_sim(&t);
    fx.write_config(MAPPINGS);

    let plan = fx.writeback(&["plan"]);
    assert!(plan.stdout.contains("sAMAccountName = [\"grp-sales.team\"]"), "{}", plan.stdout);
    assert!(plan.stdout.contains("info = [\"sales share (Internal)\"]"), "{}", plan.stdout);

    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 1, "B's clash is an error for B: {out}");
    let ga = fx.group(&a).expect("A in AD");
    assert_eq!(ga.one("sAMAccountName"), Some("grp-sales.team"));
    assert_eq!(ga.one("info"), Some("sales share (Internal)"));
    assert_eq!(ga.one("extensionAttribute1"), Some("SAL"));
    let gb = fx.group(&b).expect("B written all the same");
    assert_eq!(gb.one("sAMAccountName"), Some(format!("Group_{b}").as_str()), "not the user's name");
    assert_eq!(gb.one("info"), Some("no description ()"), "an absent property gives \"\"");
    let error = fx.error_message(&b);
    assert!(error.contains(&format!("\"{taken}\"")) && error.contains("another AD object"), "{error}");

    // Steady: nothing to write; a cloud change flows through the mapping.
    let (code, out) = fx.sync_json(&["--full"]);
    assert_eq!((code, out["updates"].clone()), (1, json!(0)), "{out}");
    t["groups"][0]["classification"] = json!("Confidential");
    fx.set_tenant(&t);
    let (_, out) = fx.sync_json(&["--full"]);
    assert_eq!(out["updates"], 1, "{out}");
    assert_eq!(fx.group(&a).expect("A").one("info"), Some("sales share (Confidential)"));
}

#[test]
fn a_wrong_mapping_or_one_the_schema_lacks_stops_at_exit_2() {
    let mut fx = Fixture::new("mappings-bad");
    let (_, _, cloud) = fx.synced_users(1);
    fx.start_sim(&tenant(cloud, vec![]));
    for (mapping, says) in [
        ("attribute = \"mail\"\nvalue = \"x\"", "cannot be mapped"),
        ("attribute = \"info\"\nvalue = \"{mailNickame}\"", "'mailNickame' is not a group property"),
        ("attribute = \"info\"\nvalue = \"{Left(displayName)}\"", "takes 2 arguments"),
    ] {
        fx.write_config(&format!("\n[[mappings]]\n{mapping}\n"));
        let r = fx.writeback(&["plan"]);
        assert_eq!(r.code, 2, "{mapping}: {} {}", r.stdout, r.stderr);
        assert!(r.stderr.contains(says), "{mapping}: {}", r.stderr);
    }
    // A DC without Exchange's schema (the layer hides it): extensionAttribute1 is named.
    let layer = WindowsDc::start(&fx, &["--hide-attribute", "extensionAttribute1"]);
    fx.dc.url = layer.url.clone();
    fx.write_config("\n[[mappings]]\nattribute = \"extensionAttribute1\"\nvalue = \"{displayName}\"\n");
    let r = fx.writeback(&["plan"]);
    assert_eq!(r.code, 2, "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("extensionAttribute1 is not in this AD's schema"), "{}", r.stderr);
}
