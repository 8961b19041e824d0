//! Trust (issue #5): secrets never leave, and objects writeback does not own — decoys inside
//! and outside the managed OUs, a forged marker, privileged groups — are never modified, even
//! with a Domain Admin account.

mod common;

use std::collections::HashSet;

use common::*;
use ldap3::Mod;
use serde_json::json;

#[test]
fn secrets_never_appear_in_any_output() {
    let mut fx = Fixture::new("secrets");
    let (_, uids, cloud) = fx.synced_users(2);
    let t = tenant(
        cloud,
        vec![
            security_group(&fx.id(1), "SG-Secret", Some(true), &[&uids[0], &uids[1]]),
            security_group(&fx.id(2), &"z".repeat(300), Some(true), &[]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("[daemon]\ninterval = \"1s\"\n");
    let mut all = String::new();
    for args in [
        vec!["-vv", "check"],
        vec!["-vv", "--json", "plan"],
        vec!["-vv", "--log-format", "json", "sync", "--full"],
        vec!["-vv", "--json", "sync"],
        vec!["-vv", "show", "SG-Secret"],
        vec!["--json", "status"],
        vec!["--json", "errors"],
    ] {
        let r = fx.writeback(&args);
        all.push_str(&r.stdout);
        all.push_str(&r.stderr);
    }
    // The daemon's pages and metrics too.
    let d = Daemon::start(&fx);
    d.wait_for("a cycle", |h| h["reason"] == "ok");
    for path in ["/", "/metrics", "/healthz", "/api/status", "/?group=SG-Secret"] {
        all.push_str(&d.get(path).map(|(_, b)| b).unwrap_or_default());
    }
    drop(d);
    // A failing bind prints its error: still no password.
    let wrong = format!("{}-wrong", fx.bind_password());
    std::fs::write(fx.dir.join("bind-password"), &wrong).expect("write");
    let r = fx.writeback(&["-vv", "sync"]);
    all.push_str(&r.stdout);
    all.push_str(&r.stderr);
    assert!(all.len() > 2_000, "the run printed something to check");
    let password = fx.bind_password().to_string();
    for secret in [SECRET, password.as_str(), fx.dc.password.as_str(), wrong.as_str()] {
        assert!(!all.contains(secret), "a secret appeared in the output");
    }
    assert!(!all.contains("sim-token-"), "no access token in the output");

    // A secret file others can read: a warning.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let secret = fx.dir.join("client-secret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let r = fx.writeback(&["plan"]);
        assert!(r.stderr.contains("can be read by other users"), "{}", r.stderr);
        // The packaged layout, readable by the service user's group only: no warning.
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let r = fx.writeback(&["plan"]);
        assert!(!r.stderr.contains("can be read by other users"), "{}", r.stderr);
    }
}

#[test]
fn decoys_inside_and_outside_the_managed_ous_are_never_modified() {
    let mut fx = Fixture::new("decoys");
    let (users, uids, cloud) = fx.synced_users(2);
    let (g, h) = (fx.id(1), fx.id(2));
    let groups_ou = fx.groups_ou.clone();
    let users_ou = fx.users_ou.clone();
    // Inside the managed OU: unowned groups with names like ours, an unowned user.
    let look1 = fx.create_group(&format!("Group_{g} copy"), UNIVERSAL_SECURITY, Some(&groups_ou));
    let look2 = fx.create_group("SG-Decoy_000000000009", UNIVERSAL_SECURITY, Some(&groups_ou));
    fx.ldap
        .add(
            &format!("CN=decoy-user,{groups_ou}"),
            vec![
                ("objectClass", HashSet::from(["user"])),
                ("sAMAccountName", HashSet::from([format!("du{}", &fx.token[..6]).as_str()])),
            ],
        )
        .expect("add")
        .success()
        .expect("ok");
    let decoy_user = fx.read_obj(&format!("CN=decoy-user,{groups_ou}"));
    // Outside: a group carrying a forged marker for a group that is in scope.
    let forged = fx.create_group(&format!("Group_{g}"), UNIVERSAL_SECURITY, Some(&users_ou));
    let marker = format!("Group_{g}");
    fx.modify(
        &forged.dn,
        vec![
            Mod::Replace("adminDescription", HashSet::from([marker.as_str()])),
            Mod::Add("member", HashSet::from([users[1].dn.as_str()])),
        ],
    );
    // Privileged groups of the domain.
    let base = fx.dc.base_dn.clone();
    let privileged: Vec<String> =
        ["CN=Domain Admins,CN=Users", "CN=Enterprise Admins,CN=Users", "CN=Administrators,CN=Builtin"]
            .iter()
            .map(|p| format!("{p},{base}"))
            .collect();

    let decoys: Vec<String> = [look1.dn.clone(), look2.dn.clone(), decoy_user.dn.clone(), forged.dn.clone()]
        .into_iter()
        .chain(privileged.iter().cloned())
        .collect();
    let usn = |fx: &mut Fixture, dn: &str| -> String {
        let (e, _) = fx
            .ldap
            .search(dn, ldap3::Scope::Base, "(objectClass=*)", vec!["uSNChanged"])
            .expect("search")
            .success()
            .expect("ok");
        ldap3::SearchEntry::construct(e.into_iter().next().expect("entry")).attrs["uSNChanged"][0].clone()
    };
    let before: Vec<String> = decoys.iter().map(|d| usn(&mut fx, d)).collect();

    let mut t = tenant(
        cloud,
        vec![
            security_group(&g, "SG-Decoy", Some(true), &[&uids[0]]),
            security_group(&h, "SG-Other", Some(true), &[&uids[0]]),
        ],
    );
    fx.start_sim(&t);
    // Whatever rights the account has: here a Domain Admin.
    fx.as_administrator = true;
    fx.write_config("cn_format = \"display-name\"\ndelete_threshold = 100");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    // Then changes, deletes, a delta cycle and a full one: still nothing touches the decoys.
    t["groups"][0]["members"] = json!([&uids[1]]);
    t["groups"].as_array_mut().expect("groups").pop();
    fx.set_tenant(&t);
    assert_eq!(fx.sync_json(&[]).0, 0);
    assert_eq!(fx.sync_json(&["--full"]).0, 0);
    let after: Vec<String> = decoys.iter().map(|d| usn(&mut fx, d)).collect();
    for ((dn, b), a) in decoys.iter().zip(&before).zip(&after) {
        assert_eq!(a, b, "{dn} was modified");
    }
    // The group in scope was written in the managed OU; the forged one outside was not adopted.
    let ours = fx
        .groups(&groups_ou)
        .into_iter()
        .find(|x| x.one("adminDescription") == Some(marker.as_str()))
        .expect("written");
    assert!(ours.dn.ends_with(&groups_ou) && ours.guid != forged.guid, "{}", ours.dn);
    assert_eq!(ours.members, vec![users[1].guid.clone()]);
    assert!(fx.group(&h).is_none(), "the deleted cloud group's AD group is deleted");
}

#[test]
fn tier0_guard_holds_back_new_members_of_groups_nested_into_protected_groups() {
    let mut fx = Fixture::new("tier0");
    let (users, uids, cloud) = fx.synced_users(2);
    let (g, dns, schema) = (fx.id(1), fx.id(2), fx.id(3));
    let mut t = tenant(
        cloud,
        vec![
            security_group(&g, "SG-Helpdesk", Some(true), &[&uids[0]]),
            security_group(&dns, "SG-Dns", Some(true), &[]),
            security_group(&schema, "SG-Schema", Some(true), &[]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    let ours = fx.group(&g).expect("written");

    // Someone nests our group into BUILTIN\Administrators through another group, one into
    // DnsAdmins (no fixed RID: found by name; Samba's provisioning has none, so one is made),
    // and one into Schema Admins (a group of the forest root domain).
    let middle = fx.create_group("Server-Admins", UNIVERSAL_SECURITY, None);
    fx.modify(&middle.dn, vec![Mod::Add("member", HashSet::from([ours.dn.as_str()]))]);
    let base = fx.dc.base_dn.clone();
    let admins = format!("CN=Administrators,CN=Builtin,{base}");
    fx.modify(&admins, vec![Mod::Add("member", HashSet::from([middle.dn.as_str()]))]);
    let dns_admins = dns_admins(&mut fx);
    let dns_dn = fx.group(&dns).expect("written").dn;
    fx.modify(&dns_admins, vec![Mod::Add("member", HashSet::from([dns_dn.as_str()]))]);
    let schema_admins = format!("CN=Schema Admins,CN=Users,{base}");
    let schema_dn = fx.group(&schema).expect("written").dn;
    fx.modify(&schema_admins, vec![Mod::Add("member", HashSet::from([schema_dn.as_str()]))]);

    // The cloud swaps a member and adds members to the others: the additions are held back,
    // with the path named; the removal lowers privilege and goes through.
    t["groups"][0]["members"] = json!([&uids[1]]);
    t["groups"][1]["members"] = json!([&uids[0]]);
    t["groups"][2]["members"] = json!([&uids[0]]);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["member_adds"].as_u64(), out["member_removes"].as_u64()), (1, Some(0), Some(1)), "{out}");
    assert_eq!(fx.group(&g).expect("g").members, Vec::<String>::new(), "the removal applied, the addition did not");
    assert!(fx.group(&dns).expect("dns").members.is_empty() && fx.group(&schema).expect("schema").members.is_empty());
    let errors = fx.writeback(&["--json", "errors"]).json();
    let message = |id: &str| -> String {
        errors["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["cloud_id"] == id)
            .and_then(|e| e["message"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let msg = message(&g);
    assert!(
        msg.contains("Tier-0 guard")
            && msg.contains("CN=Server-Admins")
            && msg.contains("CN=Administrators")
            && msg.contains("removals still apply"),
        "{msg}"
    );
    assert!(message(&dns).contains("CN=DnsAdmins"), "{}", message(&dns));
    assert!(message(&schema).contains("CN=Schema Admins"), "{}", message(&schema));

    // status and approve say what the guard holds and what resolves it (no approval does).
    let status = fx.writeback(&["status"]).stdout;
    assert!(status.contains("held by the Tier-0 guard: 1 new members of SG-Helpdesk"), "{status}");
    assert!(status.contains(&format!("add \"{g}\" to [writeback] allow_protected_nesting")), "{status}");
    let approve = fx.writeback(&["approve"]).stdout;
    assert!(approve.contains("no approval goes past the guard"), "{approve}");
    // The daemon logs each hold at WARN, and /healthz gives the reason.
    let d = Daemon::start(&fx);
    let h = d.wait_for("a cycle", |h| h["reason"].as_str().is_some_and(|r| r.contains("Tier-0 guard")));
    assert!(h["reason"].as_str().is_some_and(|r| r.contains("new members of 3 groups")), "{h}");
    let log = std::fs::read_dir(&fx.dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    let warn = log.lines().find(|l| l.contains("WARN") && l.contains("the Tier-0 guard held back new members"));
    assert!(warn.is_some_and(|l| l.contains("SG-Helpdesk") && l.contains("count=1")), "{log}");
    drop(d);

    // An explicit override for this group lets the change through.
    fx.write_config(&format!("allow_protected_nesting = [\"{g}\"]"));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["member_adds"].as_u64()), (1, Some(1)), "the other two are still held: {out}");
    assert_eq!(fx.group(&g).expect("g").members, vec![users[1].guid.clone()]);
    fx.modify(&admins, vec![Mod::Delete("member", HashSet::from([middle.dn.as_str()]))]);
    fx.modify(&schema_admins, vec![Mod::Delete("member", HashSet::from([schema_dn.as_str()]))]);
}

/// The domain's DnsAdmins group; made in the fixture's OU (and removed with it) when the
/// domain has none, as a DC provisioned without DNS.
fn dns_admins(fx: &mut Fixture) -> String {
    let base = fx.dc.base_dn.clone();
    let (found, _) = fx
        .ldap
        .search(&base, ldap3::Scope::Subtree, "(&(objectClass=group)(sAMAccountName=DnsAdmins))", vec!["1.1"])
        .expect("search")
        .success()
        .expect("ok");
    if let Some(e) = found.into_iter().next() {
        return ldap3::SearchEntry::construct(e).dn;
    }
    let dn = format!("CN=DnsAdmins,{}", fx.users_ou);
    fx.ldap
        .add(
            &dn,
            vec![
                ("objectClass", HashSet::from(["group"])),
                ("sAMAccountName", HashSet::from(["DnsAdmins"])),
                ("groupType", HashSet::from(["-2147483644"])),
            ],
        )
        .expect("add")
        .success()
        .expect("DnsAdmins added");
    dn
}

#[test]
fn when_most_operations_fail_writing_stops_and_the_run_is_quarantined() {
    let mut fx = Fixture::new("breaker");
    let groups_ou = fx.groups_ou.clone();
    // 25 groups whose names are all taken by objects writeback does not own: every add fails.
    let ids: Vec<String> = (1..=25).map(|i| fx.id(i)).collect();
    let squatters: Vec<AdObj> =
        ids.iter().map(|id| fx.create_group(&format!("Group_{id}"), UNIVERSAL_SECURITY, Some(&groups_ou))).collect();
    let groups = ids.iter().map(|id| security_group(id, "SG", Some(true), &[])).collect();
    fx.start_sim(&tenant(vec![], groups));
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["status"].as_str()), (4, Some("quarantined")), "{out}");
    assert_eq!(out["errors"], 20, "writing stopped after 20 failures of 20, 5 left untried: {out}");
    let hist = fx.writeback(&["--json", "history"]).json();
    assert!(hist["runs"][0]["message"].as_str().unwrap_or("").contains("writing stopped"), "{hist}");

    // Fixed by hand: the next run does the whole job.
    for s in &squatters {
        fx.ldap.delete(&s.dn).expect("delete").success().expect("deleted");
    }
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["adds"].as_u64()), (0, Some(25)), "{out}");
}

#[test]
fn check_reads_the_accounts_effective_rights_and_says_what_is_missing() {
    let mut fx = Fixture::new("rights");
    let g = fx.id(1);
    fx.start_sim(&tenant(vec![], vec![security_group(&g, "SG-Rights", Some(true), &[])]));
    fx.write_config("");
    let r = fx.writeback(&["check"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(
        r.stdout.contains("the account may create groups in it") && r.stdout.contains("no group written yet"),
        "{}",
        r.stdout
    );
    assert_eq!(fx.sync_json(&[]).0, 0);
    let r = fx.writeback(&["check"]);
    assert!(r.stdout.contains("ok    rights on groups: may write every attribute writeback manages"), "{}", r.stdout);

    // An OU without the delegation: check says precisely what is missing, and fails.
    let bare = format!("OU=wb-no-rights-{},{}", fx.token, fx.dc.base_dn);
    fx.add_ou(&bare);
    let groups_ou = fx.groups_ou.clone();
    fx.edit_config(|cfg| cfg.replace(&format!("target_ou = \"{groups_ou}\""), &format!("target_ou = \"{bare}\"")));
    let r = fx.writeback(&["check"]);
    let _ = fx.ldap.delete(&bare);
    assert_eq!(r.code, 4, "{}", r.stdout);
    assert!(
        r.stdout.contains("FAIL  target OU")
            && r.stdout.contains("may not create groups")
            && r.stdout.contains("docs/permissions.md"),
        "{}",
        r.stdout
    );
}
