//! Full sync end to end: real Samba AD DC over LDAPS, the Graph simulator over HTTP, the
//! real `writeback` binary.

mod common;

use common::*;
use serde_json::{json, Value};

/// The sample rollout of the demo: what must be written, and how.
struct Rollout {
    fx: Fixture,
    finance: String,
    dynamic: String,
    team_off: String,
    team_default: String,
    team_mailsec: String,
    sg_no_wb: String,
    users: Vec<AdObj>,
}

fn rollout(name: &str) -> Rollout {
    let mut fx = Fixture::new(name);
    let users = fx.create_users("alice", 7);
    let uid = |i: u32| format!("{}-0000-4000-8000-{:012}", fx.token, 1000 + i);
    let mut tenant_users: Vec<Value> = users.iter().enumerate().map(|(i, u)| synced_user(&uid(i as u32), u)).collect();
    let c1 = fx.id(2001);
    let c2 = fx.id(2002);
    tenant_users.push(cloud_user(&c1));
    tenant_users.push(cloud_user(&c2));
    let (finance, dynamic, team_off, team_default, team_mailsec, sg_no_wb) =
        (fx.id(1), fx.id(2), fx.id(3), fx.id(4), fx.id(5), fx.id(6));
    let u: Vec<String> = (0..7).map(uid).collect();
    let mut dyn_group =
        security_group(&dynamic, "SG-Dynamic-Sales", Some(true), &[&u[2], &u[3], &u[4], &u[5], &c1, &c2]);
    dyn_group["groupTypes"] = json!(["DynamicMembership"]);
    dyn_group["membershipRule"] = json!("user.department -eq \"Sales\"");
    let groups = vec![
        security_group(&finance, "SG-Finance", Some(true), &[&u[0], &u[1]]),
        dyn_group,
        m365_group(&team_off, "Team Off", Some(false), None, &[&u[0]]),
        m365_group(&team_default, "Team Default", None, None, &[&u[0], &u[6]]),
        m365_group(&team_mailsec, "Team MailSec", Some(true), Some("universalMailEnabledSecurityGroup"), &[&u[1]]),
        security_group(&sg_no_wb, "SG-NoWriteback", None, &[&u[0]]),
    ];
    fx.start_sim(&tenant(tenant_users, groups));
    Rollout { fx, finance, dynamic, team_off, team_default, team_mailsec, sg_no_wb, users }
}

#[test]
fn sample_rollout_writes_exactly_the_right_groups_and_converges() {
    let mut r = rollout("rollout");
    r.fx.write_config("");
    let (code, out) = r.fx.sync_json(&["--full"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["status"], "success");
    assert_eq!(out["kind"], "full");
    assert_eq!(out["adds"], 4, "{out}");
    assert_eq!(out["member_adds"], 2 + 4 + 2 + 1);
    assert_eq!(out["skipped_members"], 2);

    let groups_ou = r.fx.groups_ou.clone();
    let written = r.fx.groups(&groups_ou);
    assert_eq!(written.len(), 4);
    let user_guid = |i: usize| r.users[i].guid.clone();
    for (id, gt, mail, members) in [
        (&r.finance, UNIVERSAL_SECURITY, false, vec![0, 1]),
        (&r.dynamic, UNIVERSAL_SECURITY, false, vec![2, 3, 4, 5]),
        (&r.team_default, UNIVERSAL_DISTRIBUTION, true, vec![0, 6]),
        (&r.team_mailsec, UNIVERSAL_SECURITY, true, vec![1]),
    ] {
        let g = written
            .iter()
            .find(|g| g.one("adminDescription") == Some(format!("Group_{id}").as_str()))
            .unwrap_or_else(|| panic!("group {id} written"));
        assert_eq!(g.group_type(), gt, "{}", g.dn);
        assert_eq!(g.one("cn"), Some(format!("Group_{id}").as_str()));
        assert_eq!(g.dn, format!("CN=Group_{id},{groups_ou}"));
        assert_eq!(g.one("sAMAccountName"), Some(format!("Group_{id}").as_str()));
        assert_eq!(g.attrs.contains_key("mail"), mail, "{}", g.dn);
        let mut got = g.members.clone();
        got.sort();
        let mut want: Vec<String> = members.into_iter().map(user_guid).collect();
        want.sort();
        assert_eq!(got, want, "members of {}", g.dn);
    }
    let team = written
        .iter()
        .find(|g| g.one("adminDescription") == Some(format!("Group_{}", r.team_default).as_str()))
        .expect("team");
    assert_eq!(team.one("mail"), Some("team-default@contoso.com"));
    let mut proxies = team.attrs["proxyaddresses"].clone();
    proxies.sort();
    assert_eq!(proxies, vec!["SMTP:team-default@contoso.com", "smtp:team-default@contoso.onmicrosoft.com"]);
    for id in [&r.team_off, &r.sg_no_wb] {
        assert!(
            !written.iter().any(|g| g.one("adminDescription") == Some(format!("Group_{id}").as_str())),
            "{id} must not be written"
        );
    }

    // show: the dynamic group explains its two cloud-only members.
    let show = r.fx.writeback(&["--json", "show", &r.dynamic]);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let show = show.json();
    assert_eq!(show["in_scope"], true);
    let members = show["members"].as_array().expect("members");
    assert_eq!(members.len(), 6);
    let skipped: Vec<&Value> = members.iter().filter(|m| m["status"] == "skipped").collect();
    assert_eq!(skipped.len(), 2);
    assert!(skipped.iter().all(|m| m["reason"] == "cloud-only" && m["type"] == "user"));
    let by_name = r.fx.writeback(&["--json", "show", "SG-NoWriteback"]).json();
    assert_eq!(by_name["in_scope"], false);
    assert!(by_name["reason"].as_str().unwrap_or("").contains("isEnabled"), "{by_name}");

    // The second sync changes nothing.
    let before: Vec<String> =
        r.fx.groups(&groups_ou).iter().map(|g| g.one("uSNChanged").unwrap_or("").to_string()).collect();
    let (code, again) = r.fx.sync_json(&[]);
    assert_eq!(code, 0, "{again}");
    for k in ["adds", "updates", "renames", "moves", "deletes", "member_adds", "member_removes", "errors"] {
        assert_eq!(again[k], 0, "{k} in {again}");
    }
    let after: Vec<String> =
        r.fx.groups(&groups_ou).iter().map(|g| g.one("uSNChanged").unwrap_or("").to_string()).collect();
    assert_eq!(before, after, "nothing in AD may change on the second run");

    // History shows both runs.
    let hist = r.fx.writeback(&["--json", "history"]).json();
    let runs = hist["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["adds"], 4);
}

#[test]
fn plan_writes_nothing_and_a_lost_state_makes_no_duplicates() {
    let mut r = rollout("state");
    r.fx.write_config("");
    let plan = r.fx.writeback(&["--json", "plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan = plan.json();
    assert_eq!(plan["summary"]["adds"], 4);
    assert!(plan["operations"].as_array().expect("ops").iter().any(|o| o["op"] == "add"));
    assert!(!r.fx.dir.join("state.db").exists(), "plan must not create the state database");
    let groups_ou = r.fx.groups_ou.clone();
    assert!(r.fx.groups(&groups_ou).is_empty(), "plan must not write to AD");

    let (code, _) = r.fx.sync_json(&[]);
    assert_eq!(code, 0);
    let guids: Vec<String> = r.fx.groups(&groups_ou).into_iter().map(|g| g.guid).collect();
    std::fs::remove_file(r.fx.dir.join("state.db")).expect("remove state");
    let (code, again) = r.fx.sync_json(&[]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["adds"], 0, "the markers are matched: no duplicates");
    let after: Vec<String> = r.fx.groups(&groups_ou).into_iter().map(|g| g.guid).collect();
    assert_eq!(guids, after);
}

/// A first sync of more groups than one read part (500) adds the first part's groups while
/// the next part is read, on a second connection. Nesting across parts comes out as in one
/// plan: a group of the first part nests one of the last part and the other way round.
#[test]
fn a_first_sync_of_many_groups_adds_while_it_reads_and_nests_across_parts() {
    let mut fx = Fixture::new("early");
    let (users, uids, cloud_users) = fx.synced_users(3);
    let n = 520;
    // Ids sort as their numbers: groups 0..500 are the first part, 500..520 the second.
    let ids: Vec<String> = (0..n).map(|i| fx.id(i)).collect();
    let groups: Vec<Value> = (0..n as usize)
        .map(|i| {
            let mut members = vec![uids[i % 3].as_str()];
            match i {
                0 => members.push(&ids[n as usize - 1]),
                1 => members.push(&ids[2]),
                _ if i == n as usize - 1 => members.push(&ids[0]),
                _ => {}
            }
            security_group(&ids[i], &format!("Early {i}"), Some(true), &members)
        })
        .collect();
    fx.start_sim(&tenant(cloud_users, groups));
    fx.write_config("");

    // 520 new groups are more than create_threshold (500): the run stops before writing, and
    // starts no early add.
    let run = fx.writeback(&["--json", "-v", "sync"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(!run.stderr.contains("groups are added while the rest is read"), "{}", run.stderr);
    let out = run.json();
    assert_eq!(
        (out["status"].as_str(), out["adds"].as_u64()),
        (Some("stopped-delete-threshold"), Some(n as u64)),
        "{out}"
    );
    assert!(fx.groups(&fx.groups_ou.clone()).is_empty(), "nothing was written");
    let history = fx.writeback(&["--json", "history"]).json();
    let message = history["runs"][0]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("create_threshold = 500") && message.contains("--allow-creates"), "{message}");

    let run = fx.writeback(&["--json", "-v", "sync", "--allow-creates"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("groups are added while the rest is read"), "the early adds ran: {}", run.stderr);
    let out = run.json();
    assert_eq!(out["adds"], n, "{out}");
    assert_eq!(out["member_adds"], n + 3, "{out}");
    assert_eq!(out["errors"], 0, "{out}");

    let groups_ou = fx.groups_ou.clone();
    let written = fx.groups(&groups_ou);
    assert_eq!(written.len(), n as usize);
    let guid_of = |id: &str| {
        written
            .iter()
            .find(|g| g.one("adminDescription") == Some(format!("Group_{id}").as_str()))
            .map(|g| g.guid.clone())
            .unwrap_or_else(|| panic!("group {id} written"))
    };
    let members_of = |id: &str| {
        let mut m = written
            .iter()
            .find(|g| g.one("adminDescription") == Some(format!("Group_{id}").as_str()))
            .map(|g| g.members.clone())
            .unwrap_or_default();
        m.sort();
        m
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let last = &ids[n as usize - 1];
    assert_eq!(members_of(&ids[0]), sorted(vec![users[0].guid.clone(), guid_of(last)]));
    assert_eq!(members_of(&ids[1]), sorted(vec![users[1].guid.clone(), guid_of(&ids[2])]));
    assert_eq!(members_of(last), sorted(vec![users[(n as usize - 1) % 3].guid.clone(), guid_of(&ids[0])]));
    assert_eq!(members_of(&ids[7]), vec![users[1].guid.clone()]);

    // The run recorded every group it wrote: a full cycle finds nothing to do.
    let (code, again) = fx.sync_json(&["--full"]);
    assert_eq!(code, 0, "{again}");
    for k in ["adds", "updates", "member_adds", "member_removes", "deletes", "errors"] {
        assert_eq!(again[k], 0, "{k}: {again}");
    }
}
