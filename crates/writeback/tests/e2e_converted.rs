//! Groups moved to the cloud (issue #20, Source of Authority conversion): the real binary, the
//! real DC and the simulator, which converts and rolls back as Graph documents it
//! (onpremisessyncbehavior-update.md). A converted group's original AD group is taken over in
//! place, by SID, so that an ACL naming that SID keeps working.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::*;
use ldap3::Mod;
use serde_json::{json, Value};

/// The SDDL of an object's security descriptor (`samba-tool dsacl get` on the DC's database).
fn sddl(dn: &str) -> String {
    let out = Command::new("samba-tool")
        .args(["dsacl", "get", "-H", &env("WRITEBACK_TEST_SAM_LDB"), &format!("--objectdn={dn}")])
        .output()
        .expect("samba-tool");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Grants `sid` read and write on `dn`: a stand-in for the file share ACL that names the group.
fn grant(dn: &str, sid: &str) -> String {
    let ace = format!("(A;;RPWP;;;{sid})");
    let out = Command::new("samba-tool")
        .args(["dsacl", "set", "-H", &env("WRITEBACK_TEST_SAM_LDB"), &format!("--objectdn={dn}")])
        .arg(format!("--sddl={ace}"))
        .output()
        .expect("samba-tool");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ace
}

fn converted(id: &str, name: &str, sid: &str, members: &[&str]) -> Value {
    let mut g = security_group(id, name, Some(true), members);
    g["onPremisesSecurityIdentifier"] = sid.into();
    g["onPremisesSyncEnabled"] = true.into();
    g
}

fn set_cloud_managed(fx: &Fixture, id: &str, managed: bool) {
    let path = format!("/beta/groups/{id}/onPremisesSyncBehavior");
    let (status, body) = fx.graph_as(CLIENT_ID, SECRET, "PATCH", &path, &json!({ "isCloudManaged": managed }));
    assert_eq!(status, 204, "{body}");
}

#[test]
fn a_converted_group_is_taken_over_by_sid_keeps_its_acl_and_is_given_back_on_rollback() {
    let mut fx = Fixture::new("soa");
    let (users, uids, cloud) = fx.synced_users(3);
    let (legacy, elsewhere, share) =
        (format!("OU=legacy,{}", fx.ou), format!("OU=elsewhere,{}", fx.ou), format!("OU=share,{}", fx.ou));
    for ou in [&legacy, &elsewhere, &share] {
        fx.add_ou(ou);
    }
    // The AD groups Connect synced: one in an OU writeback may take over, one outside it.
    let finance = fx.create_group("Finance", UNIVERSAL_SECURITY, Some(&legacy));
    fx.modify(&finance.dn, vec![Mod::Add("member", HashSet::from([users[2].dn.as_str()]))]);
    let other = fx.create_group("Other", UNIVERSAL_SECURITY, Some(&elsewhere));
    // One nested into BUILTIN\Administrators: taken over, but the Tier-0 guard holds its new
    // members back as it does an owned group's.
    let ops = fx.create_group("Ops", UNIVERSAL_SECURITY, Some(&legacy));
    let admins = format!("CN=Administrators,CN=Builtin,{}", fx.dc.base_dn);
    fx.modify(&admins, vec![Mod::Add("member", HashSet::from([ops.dn.as_str()]))]);
    let sam_before = fx.read_view(&finance.dn).one("sAMAccountName").map(str::to_string);
    let ace = grant(&share, &finance.sid);
    let (g, h, o) = (fx.id(1), fx.id(2), fx.id(3));
    let t = tenant(
        cloud,
        vec![
            converted(&g, "SG-Finance", &finance.sid, &[&uids[0], &uids[1]]),
            converted(&h, "SG-Other", &other.sid, &[&uids[0]]),
            converted(&o, "SG-Ops", &ops.sid, &[&uids[0]]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config(&format!("converted_ous = [\"{legacy}\"]"));
    // Synced from AD: AD is its source, nothing is written.
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["adds"].as_u64(), out["updates"].as_u64()), (0, Some(0), Some(0)), "{out}");

    // Converted in Entra: taken over in place, shown as such before it happens.
    set_cloud_managed(&fx, &g, true);
    set_cloud_managed(&fx, &h, true);
    set_cloud_managed(&fx, &o, true);
    let plan = fx.writeback(&["plan"]).stdout;
    assert!(plan.contains(&format!("= adopt (converted) SG-Finance  {} (SID {})", finance.dn, finance.sid)), "{plan}");
    let show = fx.writeback(&["show", &g]).stdout;
    assert!(show.contains(&format!("adopt (converted from AD, SID {})", finance.sid)), "{show}");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["adds"].as_u64()), (3, Some(0)), "no new group; a removal held (exit 3): {out}");
    let taken = fx.group(&g).expect("the original carries the marker");
    assert_eq!(
        (taken.guid.as_str(), taken.sid.as_str(), taken.dn.as_str()),
        (finance.guid.as_str(), finance.sid.as_str(), finance.dn.as_str())
    );
    assert_eq!(taken.one("sAMAccountName").map(str::to_string), sam_before, "its sAMAccountName is kept");
    let want: HashSet<String> = [&users[0], &users[1]].iter().map(|u| u.guid.clone()).collect();
    let kept: HashSet<String> = users.iter().map(|u| u.guid.clone()).collect();
    let members = |v: &AdGroupView| v.members.iter().cloned().collect::<HashSet<_>>();
    assert_eq!(members(&taken), kept, "the cloud's members added; the one it lacks kept until approved");
    assert!(fx.error_message(&g).starts_with("taken over from AD: 1 of its 1 members"), "{}", fx.error_message(&g));
    assert!(sddl(&share).contains(&ace), "the ACL naming its SID is as it was");
    let said = fx.error_message(&h);
    assert!(said.starts_with("converted-outside-managed-ous"), "{said}");
    assert!(fx.group(&h).is_none(), "nothing written for it, no second group");
    assert!(fx.read_view(&other.dn).one("adminDescription").is_none());
    assert!(fx.group(&o).expect("taken over").members.is_empty(), "no member added under Administrators");
    let said = fx.error_message(&o);
    assert!(said.contains("CN=Administrators,CN=Builtin"), "{said}");
    let approved = fx.writeback(&["approve", "--removals", &g]);
    assert_eq!(approved.code, 0, "{}{}", approved.stdout, approved.stderr);
    assert_eq!(fx.sync_json(&[]).0, 1, "SG-Other's error remains");
    assert_eq!(members(&fx.group(&g).expect("taken over")), want, "its members follow the cloud once approved");
    let log = fx.writeback(&["--json", "log", "--group", &g]).json();
    assert!(log.to_string().contains("adopt-group"), "{log}");

    // What it costs in Graph: one onPremisesSyncBehavior read per group that carries an
    // on-premises SID without being synced (three here), in a full cycle; in a delta cycle, only
    // for those it plans: the two with open errors (SG-Other, SG-Ops), not SG-Finance.
    let behavior_reads = |fx: &Fixture| {
        let log = fx.sim_call("GET", "/_control/requests", None);
        log.as_array().into_iter().flatten().filter(|r| r["url"].to_string().contains("onPremisesSyncBehavior")).count()
    };
    fx.sim_call("DELETE", "/_control/requests", None);
    fx.sync_json(&[]);
    assert_eq!(behavior_reads(&fx), 2, "a delta cycle in which nothing changed");
    fx.sim_call("DELETE", "/_control/requests", None);
    fx.sync_json(&["--full"]);
    assert_eq!(behavior_reads(&fx), 3, "a full cycle");

    // Rolled back: the marker goes, the group and its members stay (a full cycle sees it:
    // nothing on the group itself changes, so Graph's delta may not say).
    set_cloud_managed(&fx, &g, false);
    let (code, out) = fx.sync_json(&["--full"]);
    assert_eq!((code, out["deletes"].as_u64()), (1, Some(0)), "{out}");
    let after = fx.read_view(&finance.dn);
    assert_eq!((after.guid.as_str(), after.one("adminDescription")), (finance.guid.as_str(), None));
    assert_eq!(members(&after), want);
    assert!(sddl(&share).contains(&ace));
    let log = fx.writeback(&["--json", "log", "--group", &g]).json();
    assert!(log.to_string().contains("release-group"), "{log}");
    let (_, out) = fx.sync_json(&["--full"]);
    assert_eq!(out["updates"].as_u64(), Some(0), "released once: {out}");
}

#[test]
fn adopt_takes_over_a_group_by_hand_with_the_same_checks() {
    let mut fx = Fixture::new("adopt");
    let (users, uids, cloud) = fx.synced_users(2);
    let (legacy, elsewhere) = (format!("OU=legacy,{}", fx.ou), format!("OU=elsewhere,{}", fx.ou));
    fx.add_ou(&legacy);
    fx.add_ou(&elsewhere);
    let payroll = fx.create_group("Payroll", UNIVERSAL_SECURITY, Some(&legacy));
    let global = fx.create_group("Payroll-Global", -2147483646, Some(&legacy));
    let outside = fx.create_group("Payroll-Outside", UNIVERSAL_SECURITY, Some(&elsewhere));
    let sam_before = fx.read_view(&payroll.dn).one("sAMAccountName").map(str::to_string);
    // A computer in it, which the cloud group cannot express (no write_devices).
    let pc = fx.create_computer("PC-PAYROLL");
    fx.modify(&payroll.dn, vec![Mod::Add("member", HashSet::from([pc.dn.as_str()]))]);
    // Converted, but Graph gives no SID (UNCONFIRMED whether it keeps it): a cloud group as any.
    let (g, h) = (fx.id(1), fx.id(2));
    let named = converted(&h, "SG-Named", &outside.sid, &[]);
    let t = tenant(cloud, vec![security_group(&g, "SG-Payroll", Some(true), &[&uids[0], &uids[1]]), named]);
    fx.start_sim(&t);
    set_cloud_managed(&fx, &h, true);
    fx.write_config(&format!("converted_ous = [\"{legacy}\"]"));

    let adopt = |fx: &Fixture, id: &str, dn: &str, yes: bool| {
        let mut args = vec!["adopt", "--group", id, "--dn", dn];
        if yes {
            args.push("--yes");
        }
        fx.writeback(&args)
    };
    for (dn, why) in [
        (&global.dn, "is not universal"),
        (&outside.dn, "converted-outside-managed-ous"),
        (&format!("CN=nobody,{legacy}"), "no object at"),
    ] {
        let r = adopt(&fx, &g, dn, true);
        assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
        assert!(r.stdout.contains(why), "{why}: {}", r.stdout);
    }
    // The cloud's SID names another group than the DN given.
    let r = adopt(&fx, &h, &payroll.dn, true);
    assert!(r.code == 1 && r.stdout.contains("names the AD group with SID"), "{}", r.stdout);

    let shown = adopt(&fx, &g, &payroll.dn, false);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("= adopt (converted)") && shown.stdout.contains("Nothing was changed"));
    assert!(shown.stdout.contains("+ members"), "the members that follow: {}", shown.stdout);
    assert!(fx.read_view(&payroll.dn).one("adminDescription").is_none());

    let done = adopt(&fx, &g, &payroll.dn, true);
    assert_eq!(done.code, 0, "{}{}", done.stdout, done.stderr);
    let marker = format!("Group_{g}");
    assert_eq!(fx.read_view(&payroll.dn).one("adminDescription"), Some(marker.as_str()));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["adds"].as_u64(), out["renames"].as_u64()), (3, Some(0), Some(0)), "{out}");
    let taken = fx.group(&g).expect("managed");
    assert_eq!((taken.guid.as_str(), taken.dn.as_str()), (payroll.guid.as_str(), payroll.dn.as_str()));
    assert_eq!(taken.one("sAMAccountName").map(str::to_string), sam_before);
    let mut want: HashSet<String> = users.iter().map(|u| u.guid.clone()).collect();
    want.insert(pc.guid.clone());
    assert_eq!(taken.members.iter().cloned().collect::<HashSet<_>>(), want, "the computer kept until approved");
    // Still held by the next cycle, and by --allow-deletes.
    assert_eq!(fx.sync_json(&["--allow-deletes"]).0, 3);
    assert!(fx.group(&g).expect("managed").members.contains(&pc.guid));
    assert!(adopt(&fx, &g, &payroll.dn, true).stdout.contains("is already managed"));
}
