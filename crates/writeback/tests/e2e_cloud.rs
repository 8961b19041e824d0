//! `writeback cloud …` (issue #4) against the Graph simulator: bulk writebackConfiguration
//! changes and the tenant's NewUnifiedGroupWritebackDefault.

mod common;

use common::*;
use serde_json::Value;

fn wb(t: &Value, id: &str) -> (Value, Value) {
    let g = t["groups"].as_array().and_then(|gs| gs.iter().find(|g| g["id"] == id)).cloned().unwrap_or(Value::Null);
    (g["writebackConfiguration"]["isEnabled"].clone(), g["writebackConfiguration"]["onPremisesGroupType"].clone())
}

#[test]
fn set_writeback_for_all_microsoft_365_groups_and_for_a_list() {
    let mut fx = Fixture::new("cloudset");
    let (m1, m2, s1, s2) = (fx.id(1), fx.id(2), fx.id(3), fx.id(4));
    let t = tenant(
        vec![],
        vec![
            m365_group(&m1, "Team One", None, None, &[]),
            m365_group(&m2, "Team Two", Some(true), Some("universalMailEnabledSecurityGroup"), &[]),
            security_group(&s1, "SG-One", None, &[]),
            security_group(&s2, "SG-Two", None, &[]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("");

    // Without --yes: shown, not changed.
    let r = fx.writeback(&["cloud", "set-writeback", "--kind", "microsoft365", "--disable"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("2 would change") && r.stdout.contains("add --yes"), "{}", r.stdout);
    assert_eq!(wb(&fx.sim_call("GET", "/_control/tenant", None), &m1).0, Value::Null);

    let r = fx.writeback(&["--json", "cloud", "set-writeback", "--kind", "microsoft365", "--disable", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = r.json();
    assert_eq!(
        (out["selected"].as_u64(), out["changed"].as_u64(), out["failed"].as_u64()),
        (Some(2), Some(2), Some(0)),
        "{out}"
    );
    let now = fx.sim_call("GET", "/_control/tenant", None);
    assert_eq!(wb(&now, &m1).0, Value::Bool(false));
    assert_eq!(wb(&now, &m2).0, Value::Bool(false));
    assert_eq!(wb(&now, &s1).0, Value::Null, "security groups are not touched");
    assert_eq!(wb(&now, &s2).0, Value::Null);

    // A list of security groups, enabled as universalSecurityGroup; running it twice changes nothing more.
    let args = [
        "--json",
        "cloud",
        "set-writeback",
        "--group",
        s1.as_str(),
        "--group",
        s2.as_str(),
        "--enable",
        "--type",
        "universalSecurityGroup",
        "--yes",
    ];
    let out = fx.writeback(&args).json();
    assert_eq!(out["changed"], 2, "{out}");
    let now = fx.sim_call("GET", "/_control/tenant", None);
    assert_eq!(wb(&now, &s1), (Value::Bool(true), Value::String("universalSecurityGroup".into())));
    assert_eq!(fx.writeback(&args).json()["unchanged"], 2);

    // And the groups are then written back by a sync.
    let (code, sync) = fx.sync_json(&[]);
    assert_eq!((code, sync["adds"].as_u64()), (0, Some(2)), "{sync}");

    // Section 1 holds: a security group is never a distribution group.
    let r = fx.writeback(&[
        "cloud",
        "set-writeback",
        "--kind",
        "security",
        "--enable",
        "--type",
        "universalDistributionGroup",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = fx.writeback(&["cloud", "set-writeback", "--group", &fx.id(99), "--disable"]);
    assert_eq!(r.code, 2, "an unknown group is named: {}", r.stderr);
}

#[test]
fn new_group_default_round_trips_and_creates_the_setting_from_its_template() {
    let mut fx = Fixture::new("clouddefault");
    fx.start_sim(&tenant(vec![], vec![]));
    fx.write_config("");
    let read = |fx: &Fixture| fx.writeback(&["--json", "cloud", "new-group-default"]).json();
    let first = read(&fx);
    assert_eq!(
        (first["new_unified_group_writeback_default"].as_bool(), first["setting_id"].is_null()),
        (Some(true), true),
        "{first}"
    );

    let r = fx.writeback(&["cloud", "new-group-default", "--disable"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("created"), "{}", r.stdout);
    let off = read(&fx);
    assert_eq!(off["new_unified_group_writeback_default"], false);
    let settings = fx.sim_call("GET", "/_control/tenant", None)["groupSettings"].clone();
    assert_eq!(settings[0]["values"].as_array().map(Vec::len), Some(15), "every template value is set: {settings}");

    let r = fx.writeback(&["cloud", "new-group-default", "--enable"]);
    assert!(r.stdout.contains("updated"), "{}", r.stdout);
    let on = read(&fx);
    assert_eq!(
        (on["new_unified_group_writeback_default"].as_bool(), &on["setting_id"]),
        (Some(true), &off["setting_id"])
    );
}
