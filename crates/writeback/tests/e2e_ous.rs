//! OUs that can change (issue #4): a new target OU moves every owned group with ModifyDN
//! (objectGUID and objectSid unchanged), and groups Azure AD Connect wrote are adopted in
//! place, then moved when configured — never deleted and recreated.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::*;
use ldap3::Mod;
use serde_json::Value;

fn ids_and_sids(fx: &mut Fixture, base: &str) -> BTreeMap<String, (String, String)> {
    fx.groups(base)
        .into_iter()
        .map(|g| (g.one("adminDescription").unwrap_or("").to_string(), (g.guid.clone(), g.sid.clone())))
        .collect()
}

#[test]
fn changing_the_target_ou_moves_every_owned_group_keeping_guid_and_sid() {
    let mut fx = Fixture::new("move");
    let (_, uids, cloud) = fx.synced_users(2);
    let groups: Vec<Value> =
        (1..=4).map(|i| security_group(&fx.id(i), &format!("SG-{i}"), Some(true), &[&uids[0], &uids[1]])).collect();
    fx.start_sim(&tenant(cloud, groups));
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let old_ou = fx.groups_ou.clone();
    let before = ids_and_sids(&mut fx, &old_ou);
    assert_eq!(before.len(), 4);

    // A new OU for the groups.
    let new_ou = format!("OU=Moved,{}", fx.ou);
    fx.add_ou(&new_ou);
    fx.edit_config(|cfg| cfg.replace(&format!("target_ou = \"{old_ou}\""), &format!("target_ou = \"{new_ou}\"")));
    let plan = fx.writeback(&["--json", "plan"]).json();
    assert_eq!(
        (plan["summary"]["moves"].as_u64(), plan["summary"]["adds"].as_u64(), plan["summary"]["deletes"].as_u64()),
        (Some(4), Some(0), Some(0)),
        "{plan}"
    );
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (out["kind"].as_str(), out["moves"].as_u64(), out["adds"].as_u64(), out["deletes"].as_u64()),
        (Some("full"), Some(4), Some(0), Some(0)),
        "{out}"
    );
    assert!(fx.groups(&old_ou).is_empty(), "nothing left behind");
    let after = ids_and_sids(&mut fx, &new_ou);
    assert_eq!(before, after, "same objectGUID and objectSid for every group");
    for g in fx.groups(&new_ou) {
        assert_eq!(g.members.len(), 2, "members kept through the move");
    }
    let (_, again) = fx.sync_json(&[]);
    assert_eq!((again["moves"].as_u64(), again["adds"].as_u64()), (Some(0), Some(0)), "{again}");
}

#[test]
fn groups_written_by_azure_ad_connect_are_adopted_in_place_then_moved_when_configured() {
    let mut fx = Fixture::new("adopt");
    let (users, uids, cloud) = fx.synced_users(3);
    let connect_ou = format!("OU=AADConnect Writeback,{}", fx.ou);
    fx.add_ou(&connect_ou);
    // What Azure AD Connect leaves: CN=Group_<id>, adminDescription=Group_<id>, universal, members.
    let (a, b) = (fx.id(1), fx.id(2));
    let mut pre = BTreeMap::new();
    for id in [&a, &b] {
        let g = fx.create_group(&format!("Group_{id}"), UNIVERSAL_SECURITY, Some(&connect_ou));
        let marker = format!("Group_{id}");
        fx.modify(
            &g.dn,
            vec![
                Mod::Replace("adminDescription", HashSet::from([marker.as_str()])),
                Mod::Add("member", HashSet::from([users[2].dn.as_str()])),
            ],
        );
        pre.insert(id.clone(), g);
    }
    fx.start_sim(&tenant(
        cloud,
        vec![security_group(&a, "SG-A", Some(true), &[&uids[0]]), security_group(&b, "SG-B", Some(true), &[&uids[1]])],
    ));
    fx.write_config("");
    let cfg = std::fs::read_to_string(fx.dir.join("writeback.toml")).expect("config");
    let cfg = cfg.replacen("ca_file =", &format!("adopt_from = [\"{connect_ou}\"]\nca_file ="), 1);
    std::fs::write(fx.dir.join("writeback.toml"), &cfg).expect("write");
    let r = fx.writeback(&["check"]);
    assert!(r.stdout.contains("ok    adoption OU"), "{}", r.stdout);

    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (out["adds"].as_u64(), out["moves"].as_u64()),
        (Some(0), Some(0)),
        "adopted in place, no duplicates: {out}"
    );
    for (id, user) in [(&a, 0usize), (&b, 1)] {
        let g = fx.group(id).expect("adopted");
        assert_eq!((g.guid.as_str(), g.sid.as_str()), (pre[id].guid.as_str(), pre[id].sid.as_str()));
        assert!(g.dn.ends_with(&connect_ou), "{}", g.dn);
        assert_eq!(g.members, vec![users[user].guid.clone()], "members put right: the cloud wins");
    }
    let groups_ou = fx.groups_ou.clone();
    assert!(fx.groups(&groups_ou).is_empty(), "no duplicate in the target OU");

    // Now move them into the target OU: same SID.
    std::fs::write(fx.dir.join("writeback.toml"), cfg.replace("[writeback]\n", "[writeback]\nmove_adopted = true\n"))
        .expect("write");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (out["moves"].as_u64(), out["adds"].as_u64(), out["deletes"].as_u64()),
        (Some(2), Some(0), Some(0)),
        "{out}"
    );
    for id in [&a, &b] {
        let g = fx.group(id).expect("moved");
        assert!(g.dn.ends_with(&groups_ou), "{}", g.dn);
        assert_eq!(g.sid, pre[id].sid);
    }
    let left: Vec<String> = fx.groups(&connect_ou).into_iter().map(|g| g.dn).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn rules_include_every_sg_group_an_earlier_exclude_wins_and_rule_ous_place_groups() {
    let mut fx = Fixture::new("rules");
    let users = fx.create_users("user", 1);
    let uid = fx.id(10_000);
    let cloud = vec![synced_user(&uid, &users[0])];
    let tier0 = format!("OU=Tier0,{}", fx.ou);
    fx.add_ou(&tier0);
    // isEnabled is unset on all of them: without rules no security group would be written.
    let names = ["SG-Finance", "SG-HR", "SG-Sales", "SG-Test-Lab", "SG-Tier0-Admins", "Not-SG"];
    let groups: Vec<Value> =
        names.iter().enumerate().map(|(i, n)| security_group(&fx.id(i as u32 + 1), n, None, &[&uid])).collect();
    fx.start_sim(&tenant(cloud, groups));
    fx.write_config(&format!(
        "[[rules]]\nname = \"SG-Test-*\"\naction = \
            \"exclude\"\n\n[[rules]]\nkind = \"security\"\nname = \
            \"SG-Tier0-*\"\naction = \"include\"\ntarget_ou = \
            \"{tier0}\"\n\n[[rules]]\nkind = \"security\"\nname = \"sg-*\"\naction \
            = \"include\"\ngroup_type = \"universalSecurityGroup\"\n"
    ));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["adds"], 4, "{out}");
    let groups_ou = fx.groups_ou.clone();
    for (i, name) in names.iter().enumerate() {
        let g = fx.group(&fx.id(i as u32 + 1));
        match *name {
            "SG-Test-Lab" | "Not-SG" => assert!(g.is_none(), "{name} must not be written"),
            "SG-Tier0-Admins" => assert!(g.expect("tier0").dn.ends_with(&tier0)),
            _ => {
                let g = g.unwrap_or_else(|| panic!("{name} written"));
                assert!(g.dn.ends_with(&groups_ou), "{}", g.dn);
                assert_eq!(g.group_type(), UNIVERSAL_SECURITY);
            }
        }
    }
    let show = fx.writeback(&["--json", "show", "SG-Test-Lab"]).json();
    assert!(show["reason"].as_str().unwrap_or("").starts_with("excluded by rule 1"), "{show}");
    let show = fx.writeback(&["--json", "show", "SG-HR"]).json();
    assert!(show["reason"].as_str().unwrap_or("").contains("rule 3"), "{show}");

    // A rule that makes no sense is a configuration error that names it.
    fx.write_config(
        "[[rules]]\nkind = \"security\"\naction = \"include\"\ngroup_type = \"universalDistributionGroup\"\n",
    );
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("[[rules]] #1"), "{}", r.stderr);
}

#[test]
fn an_owned_group_filed_by_hand_in_a_child_ou_is_still_found_and_put_back() {
    let mut fx = Fixture::new("child");
    let (users, uids, cloud) = fx.synced_users(2);
    let g = fx.id(1);
    fx.start_sim(&tenant(cloud, vec![security_group(&g, "SG-Child", Some(true), &[&uids[0]])]));
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let before = fx.group(&g).expect("written");

    // An administrator files the group in an OU below the target OU and adds a member by hand.
    // Owned groups are searched one container at a time: the child OU must be among them.
    let child = format!("OU=Child,{}", fx.groups_ou);
    fx.add_ou(&child);
    let rdn = before.dn.split(",OU=").next().expect("rdn").to_string();
    fx.ldap.modifydn(&before.dn, &rdn, true, Some(&child)).expect("modifydn").success().expect("moved");
    let filed = format!("{rdn},{child}");
    fx.modify(&filed, vec![Mod::Add("member", HashSet::from([users[1].dn.as_str()]))]);

    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (out["kind"].as_str(), out["moves"].as_u64(), out["adds"].as_u64(), out["member_removes"].as_u64()),
        (Some("delta"), Some(1), Some(0), Some(1)),
        "the delta cycle saw the group in the child OU and its hand-made change: {out}"
    );
    let after = fx.group(&g).expect("still there");
    assert_eq!(
        (after.guid.as_str(), after.dn.as_str()),
        (before.guid.as_str(), before.dn.as_str()),
        "the same object, back in the target OU"
    );
    assert_eq!(after.members, vec![users[0].guid.clone()], "the hand-added member is gone");
    assert_eq!(fx.groups(&fx.ou.clone()).len(), 1, "no second group was created");
    let (_, full) = fx.sync_json(&["--full"]);
    assert_eq!((full["moves"].as_u64(), full["adds"].as_u64()), (Some(0), Some(0)), "{full}");
}
