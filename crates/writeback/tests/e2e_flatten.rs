//! `nested = "flatten"` end to end (issue #22, part 5): a nested cloud group that is not written
//! back gives way to its transitive members that exist in AD; `show` says `via` which group;
//! cycles end; a change deep in the nesting reaches AD through a delta cycle; the flattened
//! members count as members (switching back to "link" removes them, counted as removals).

mod common;

use common::*;
use serde_json::json;

#[test]
fn nested_groups_not_written_back_are_flattened_into_their_transitive_members() {
    let mut fx = Fixture::new("flatten");
    let (users, uids, cloud) = fx.synced_users(4);
    let (top, n, m) = (fx.id(1), fx.id(2), fx.id(3));
    let mut t = tenant(
        cloud,
        vec![
            security_group(&top, "SG-Top", Some(true), &[&uids[0], &n]),
            // Not written back (security groups need isEnabled = true): flattened.
            security_group(&n, "SG-Nested", None, &[&uids[1], &m]),
            // Deeper, and nesting its parent again: a cycle.
            security_group(&m, "SG-Deeper", None, &[&uids[2], &n]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("nested = \"flatten\"\n");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let mut want: Vec<String> = users[..3].iter().map(|u| u.guid.clone()).collect();
    want.sort();
    let members = |fx: &mut Fixture| {
        let mut got = fx.group(&top).expect("Top in AD").members;
        got.sort();
        got
    };
    assert_eq!(members(&mut fx), want);
    assert!(fx.group(&n).is_none() && fx.group(&m).is_none(), "the nested groups are not written");

    let shown = fx.writeback(&["show", "SG-Top"]);
    assert!(shown.stdout.contains("via SG-Nested") && shown.stdout.contains("via SG-Deeper"), "{}", shown.stdout);
    let json = fx.writeback(&["--json", "show", &top]).json();
    let via: Vec<&str> = json["members"].as_array().into_iter().flatten().filter_map(|m| m["via"].as_str()).collect();
    assert!(via.contains(&"SG-Nested") && via.contains(&"SG-Deeper"), "{json}");

    // A user added two levels down reaches Top through a delta cycle.
    t["groups"][2]["members"] = json!([&uids[2], &n, &uids[3]]);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["kind"].clone(), out["member_adds"].clone()), (0, json!("delta"), json!(1)), "{out}");
    assert!(members(&mut fx).contains(&users[3].guid));

    // Back to "link": the flattened members are removals like any other (and counted so).
    fx.write_config("nested = \"link\"\n");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["member_removes"].clone()), (0, json!(3)), "{out}");
    assert_eq!(members(&mut fx), vec![users[0].guid.clone()]);
}
