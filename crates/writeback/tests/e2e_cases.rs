//! End-to-end cases of issue #2: naming, drift, nesting, lifecycle, ownership, large groups,
//! hostile names, paging and throttling, exit statuses.

mod common;

use std::collections::HashSet;

use common::*;
use ldap3::Mod;
use serde_json::{json, Value};

/// A fixture with `n` AD users mirrored as synced cloud users; returns (fixture, AD users, cloud ids).
fn with_users(name: &str, n: usize) -> (Fixture, Vec<AdObj>, Vec<String>, Vec<Value>) {
    let mut fx = Fixture::new(name);
    let (users, ids, cloud) = fx.synced_users(n);
    (fx, users, ids, cloud)
}

fn refs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

#[test]
fn both_cn_formats_and_the_64_character_limit() {
    let (mut fx, _, ids, users) = with_users("cn", 1);
    let long = "Department of Very Long Names and Even Longer Descriptions Worldwide ".repeat(3);
    let (a, b) = (fx.id(1), fx.id(2));
    fx.start_sim(&tenant(
        users,
        vec![security_group(&a, "  Sales EMEA  ", Some(true), &refs(&ids)), m365_group(&b, &long, None, None, &[])],
    ));
    fx.write_config("cn_format = \"display-name\"");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let ga = fx.group(&a).expect("a written");
    assert_eq!(ga.one("cn"), Some(format!("Sales EMEA_{}", &a[a.len() - 12..]).as_str()));
    assert_eq!(ga.one("displayName"), Some("  Sales EMEA  "));
    let gb = fx.group(&b).expect("b written");
    let cn = gb.one("cn").expect("cn");
    assert_eq!(cn.chars().count(), 64);
    assert_eq!(cn, format!("{}_{}", long.trim().chars().take(51).collect::<String>(), &b[b.len() - 12..]));
    assert_eq!(gb.one("sAMAccountName"), Some(cn));
    assert_eq!(gb.group_type(), UNIVERSAL_DISTRIBUTION);

    // Switching the format renames in place: same objectGUID and SID.
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (out["renames"].as_u64(), out["adds"].as_u64(), out["deletes"].as_u64()),
        (Some(2), Some(0), Some(0)),
        "{out}"
    );
    let ga2 = fx.group(&a).expect("a");
    assert_eq!(ga2.one("cn"), Some(format!("Group_{a}").as_str()));
    assert_eq!((ga2.guid.as_str(), ga2.sid.as_str()), (ga.guid.as_str(), ga.sid.as_str()));
}

#[test]
fn drift_in_ad_is_put_back() {
    let (mut fx, users, ids, cloud) = with_users("drift", 3);
    let g = fx.id(1);
    fx.start_sim(&tenant(cloud, vec![security_group(&g, "SG-Drift", Some(true), &refs(&ids[..2]))]));
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    let dn = fx.group(&g).expect("written").dn;
    // By hand: scope to global, a member added, the description changed.
    let intruder = users[2].dn.clone();
    fx.modify(&dn, vec![Mod::Replace("groupType", HashSet::from(["-2147483646"]))]);
    fx.modify(
        &dn,
        vec![
            Mod::Add("member", HashSet::from([intruder.as_str()])),
            Mod::Replace("description", HashSet::from(["by hand"])),
        ],
    );
    assert_eq!(fx.group(&g).expect("g").group_type(), -2147483646);

    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!((out["updates"].as_u64(), out["member_removes"].as_u64()), (Some(1), Some(1)), "{out}");
    let after = fx.group(&g).expect("g");
    assert_eq!(after.group_type(), UNIVERSAL_SECURITY);
    assert_eq!(after.one("description"), None);
    let mut members = after.members.clone();
    members.sort();
    let mut want = vec![users[0].guid.clone(), users[1].guid.clone()];
    want.sort();
    assert_eq!(members, want);

    // Deleted by hand while in scope: created again (new SID), and said so. A least-privilege
    // account cannot see tombstones, so the next full cycle does it (docs/permissions.md).
    fx.ldap.delete(&after.dn).expect("delete").success().expect("deleted");
    let r = fx.writeback(&["--json", "sync", "--full"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["adds"], 1);
    assert!(r.stderr.contains("created again with a new SID"), "{}", r.stderr);
    let recreated = fx.group(&g).expect("recreated");
    assert_ne!(recreated.sid, after.sid);
    assert_eq!(recreated.members.len(), 2);
}

#[test]
fn a_domain_local_member_is_skipped_with_the_windows_error() {
    let (mut fx, users, ids, cloud) = with_users("dl", 2);
    let dl = fx.create_group("DL-FileShare", -2147483644, None);
    let global = fx.create_group("GG-Staff", -2147483646, None);
    let (dl_id, gg_id, g) = (fx.id(900), fx.id(901), fx.id(1));
    // Groups synced from AD, as Graph shows them: onPremisesSyncEnabled and the AD SID.
    let mut groups = Vec::new();
    for (id, obj, name) in [(&dl_id, &dl, "DL-FileShare"), (&gg_id, &global, "GG-Staff")] {
        let mut synced = security_group(id, name, None, &[]);
        synced["onPremisesSyncEnabled"] = json!(true);
        synced["onPremisesSecurityIdentifier"] = json!(obj.sid);
        groups.push(synced);
    }
    groups.push(security_group(&g, "SG-Nested", Some(true), &[&ids[0], &ids[1], &dl_id, &gg_id]));
    fx.start_sim(&tenant(cloud, groups));
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 1, "per-object errors give exit status 1: {out}");
    assert_eq!(out["status"], "completed-with-errors");
    assert_eq!(out["errors"], 1);
    let written = fx.group(&g).expect("the rest of the group is written");
    let got: HashSet<String> = written.members.iter().cloned().collect();
    let want: HashSet<String> = [users[0].guid.clone(), users[1].guid.clone(), global.guid.clone()].into();
    assert_eq!(got, want, "users and the global group are members; the domain-local group is not");

    let errors = fx.writeback(&["--json", "errors"]).json();
    let list = errors["errors"].as_array().expect("errors");
    assert_eq!(list.len(), 1);
    assert!(
        list[0]["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("A universal group cannot have a local group as a member"),
        "{errors}"
    );
    assert_eq!(list[0]["member_id"], json!(dl_id));
    let show = fx.writeback(&["--json", "show", &g]).json();
    assert!(show["members"].as_array().expect("m").iter().any(|m| m["reason"] == "domain-local-group"), "{show}");
}

#[test]
fn lifecycle_keeps_deletes_and_stops_at_the_threshold() {
    let (mut fx, _, ids, cloud) = with_users("life", 1);
    let (keep, gone, gone2, soft) = (fx.id(1), fx.id(2), fx.id(3), fx.id(4));
    let m = refs(&ids);
    let all = vec![
        security_group(&keep, "SG-Keep", Some(true), &m),
        security_group(&gone, "SG-Gone", Some(true), &m),
        security_group(&gone2, "SG-Gone-2", Some(true), &m),
        m365_group(&soft, "Team Soft", None, None, &m),
    ];
    fx.start_sim(&tenant(cloud.clone(), all.clone()));
    fx.write_config("delete_threshold = 1");
    assert_eq!(fx.sync_json(&[]).0, 0);

    // Writeback disabled on one, two deleted for good, one soft-deleted (in the recycle bin).
    let mut disabled = all[0].clone();
    disabled["writebackConfiguration"]["isEnabled"] = json!(false);
    let mut t = tenant(cloud, vec![disabled]);
    t["deletedGroups"] = json!([all[3].clone()]);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 3, "two deletes over a threshold of one: {out}");
    assert_eq!(out["status"], "stopped-delete-threshold");
    for id in [&keep, &gone, &gone2, &soft] {
        assert!(fx.group(id).is_some(), "nothing is deleted when the threshold stops the run");
    }
    let text = fx.writeback(&["sync"]);
    assert_eq!(text.code, 3);
    assert!(text.stderr.contains("--allow-deletes"), "{}", text.stderr);

    let (code, out) = fx.sync_json(&["--allow-deletes"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["deletes"], 2);
    assert!(fx.group(&keep).is_some(), "writeback disabled: the AD group is kept");
    assert!(fx.group(&soft).is_some(), "soft-deleted: the AD group is kept");
    assert!(fx.group(&gone).is_none() && fx.group(&gone2).is_none(), "permanently deleted: the AD group is deleted");
    let hist = fx.writeback(&["--json", "status"]).json();
    let statuses: Vec<&str> =
        hist["runs"].as_array().expect("runs").iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, vec!["success", "stopped-delete-threshold", "stopped-delete-threshold", "success"]);
}

#[test]
fn objects_writeback_does_not_own_are_never_changed() {
    let (mut fx, users, ids, mut cloud) = with_users("unowned", 2);
    let (g, h) = (fx.id(1), fx.id(2));
    let groups_ou = fx.groups_ou.clone();
    // An unowned group squatting the name writeback wants, one with a look-alike name, and an unowned user, in
    // the target OU.
    let squatter = fx.create_group(&format!("Group_{g}"), UNIVERSAL_SECURITY, Some(&groups_ou));
    let lookalike = fx.create_group(&format!("Group_{h} (old)"), UNIVERSAL_SECURITY, Some(&groups_ou));
    fx.modify(&lookalike.dn, vec![Mod::Replace("adminDescription", HashSet::from(["Group_not-a-guid"]))]);
    fx.ldap
        .add(
            &format!("CN=local-user,{groups_ou}"),
            vec![
                ("objectClass", HashSet::from(["user"])),
                ("sAMAccountName", HashSet::from([format!("lu{}", &fx.token[..6]).as_str()])),
            ],
        )
        .expect("add")
        .success()
        .expect("ok");
    let user_in_ou = fx.read_obj(&format!("CN=local-user,{groups_ou}"));
    let uid = fx.id(3000);
    cloud.push(synced_user(&uid, &user_in_ou));
    fx.start_sim(&tenant(
        cloud,
        vec![
            security_group(&g, "SG-Squatted", Some(true), &refs(&ids)),
            security_group(&h, "SG-Fine", Some(true), &[&ids[0], &uid]),
        ],
    ));
    fx.write_config("");
    let before = fx.groups(&groups_ou);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["adds"], 1, "{out}");
    let errors = fx.writeback(&["--json", "errors"]).json();
    assert!(errors["errors"][0]["message"].as_str().unwrap_or("").contains("does not own"), "{errors}");
    let after = fx.groups(&groups_ou);
    for obj in [&squatter, &lookalike] {
        let b = before.iter().find(|x| x.guid == obj.guid).expect("before");
        let a = after.iter().find(|x| x.guid == obj.guid).expect("after");
        assert_eq!(a.one("uSNChanged"), b.one("uSNChanged"), "{} was changed", obj.dn);
        assert!(a.members.is_empty());
    }
    let user_after = fx.read_obj(&user_in_ou.dn);
    assert_eq!(user_after.guid, user_in_ou.guid);
    let fine = fx.group(&h).expect("written");
    assert!(fine.members.contains(&users[0].guid) && fine.members.contains(&user_in_ou.guid));
    // A second run still leaves them alone (and keeps reporting the squatter).
    let (code, _) = fx.sync_json(&[]);
    assert_eq!(code, 1);
    let again = fx.groups(&groups_ou);
    for obj in [&squatter, &lookalike] {
        let b = before.iter().find(|x| x.guid == obj.guid).expect("before");
        let a = again.iter().find(|x| x.guid == obj.guid).expect("again");
        assert_eq!(a.one("uSNChanged"), b.one("uSNChanged"));
    }
}

#[test]
fn a_group_over_1500_members_is_written_and_read_back_completely() {
    // Users from the pool kept per test DC (making and removing 1,600 costs Samba a minute),
    // and through the Windows-limits layer: it reads more than MaxValRange values (issue #19).
    let mut fx = Fixture::new("big");
    let users: Vec<AdObj> = common::windows::user_pool(&mut fx, 3100).into_iter().take(1600).collect();
    let ids: Vec<String> = (0..users.len()).map(|i| fx.id(10_000 + i as u32)).collect();
    let cloud: Vec<Value> = users.iter().zip(&ids).map(|(u, id)| synced_user(id, u)).collect();
    let layer = (std::env::var("WRITEBACK_TEST_LAYER").is_err()).then(|| common::windows::WindowsDc::start(&fx, &[]));
    if let Some(l) = &layer {
        fx.dc.url = l.url.clone();
    }
    let g = fx.id(1);
    fx.start_sim(&tenant(cloud.clone(), vec![security_group(&g, "SG-Big", Some(true), &refs(&ids))]));
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["member_adds"], 1600);
    let written = fx.group(&g).expect("written");
    assert_eq!(written.members.len(), 1600);
    let want: HashSet<&str> = users.iter().map(|u| u.guid.as_str()).collect();
    assert!(written.members.iter().all(|m| want.contains(m.as_str())));

    // Reading it back must see all 1,600 (ranged): a partial read would plan adds or removals.
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!((out["member_adds"].as_u64(), out["member_removes"].as_u64()), (Some(0), Some(0)), "{out}");

    // One member leaves in the cloud: exactly one removal.
    fx.set_tenant(&tenant(cloud, vec![security_group(&g, "SG-Big", Some(true), &refs(&ids[1..]))]));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!((out["member_adds"].as_u64(), out["member_removes"].as_u64()), (Some(0), Some(1)), "{out}");
    assert_eq!(fx.group(&g).expect("g").members.len(), 1599);
}

#[test]
fn hostile_display_names_get_valid_escaped_dns_or_a_per_object_error() {
    let (mut fx, _, ids, cloud) = with_users("hostile", 1);
    let names = [
        ",+\"\\<>;=#",
        "  leading and trailing  ",
        "#starts with hash",
        "Équipe Ünïcödé 日本語 ☃ 😀",
        "ctrl\u{1}\u{7}\ttab\nnewline",
        "trailing dot.",
        "a=b,c=d",
        "(*)&|!",
    ];
    let too_long = "y".repeat(300);
    let mut groups: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| security_group(&fx.id(i as u32 + 1), n, Some(true), &refs(&ids)))
        .collect();
    groups.push(security_group(&fx.id(99), &too_long, Some(true), &refs(&ids)));
    fx.start_sim(&tenant(cloud, groups));
    fx.write_config("cn_format = \"display-name\"");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["adds"].as_u64(), Some(names.len() as u64), "{out}");
    assert_eq!(out["errors"], 1, "the 300-character name is an error for that group only: {out}");
    for (i, name) in names.iter().enumerate() {
        let id = fx.id(i as u32 + 1);
        let g = fx.group(&id).unwrap_or_else(|| panic!("{name:?} written"));
        let cn = g.one("cn").expect("cn").to_string();
        let expect: String = name.trim().chars().map(|c| if c.is_control() { '_' } else { c }).collect();
        assert_eq!(cn, format!("{expect}_{}", &id[id.len() - 12..]), "{name:?}");
        assert!(cn.encode_utf16().count() <= 64);
        let sam = g.one("sAMAccountName").expect("sam");
        assert!(!sam.chars().any(|c| "\"/\\[]:;|=,+*?<>".contains(c) || c.is_control()), "{sam:?}");
        assert_eq!(g.members.len(), 1);
    }
    let errors = fx.writeback(&["--json", "errors"]).json();
    assert!(errors["errors"][0]["message"].as_str().unwrap_or("").contains("300 characters"), "{errors}");
    // And the second run changes nothing: the names round-trip exactly.
    let (_, again) = fx.sync_json(&[]);
    for k in ["adds", "updates", "renames", "member_adds", "member_removes"] {
        assert_eq!(again[k], 0, "{k}: {again}");
    }
}

#[test]
fn small_pages_and_throttling_mid_run_are_survived() {
    let (mut fx, _, ids, cloud) = with_users("paging", 5);
    let groups: Vec<Value> =
        (1..=5).map(|i| security_group(&fx.id(i), &format!("SG-{i}"), Some(true), &refs(&ids))).collect();
    fx.start_sim(&tenant(cloud, groups));
    fx.sim_call("POST", "/_control/settings", Some(&json!({"page_size": 2})));
    // Two 429s on the group listing's second page, then two on member pages.
    fx.sim_call(
        "POST",
        "/_control/faults",
        Some(&json!({"status": 429, "retry_after": 1, "count": 2, "path_contains": "skiptoken", "skip": 0})),
    );
    fx.sim_call(
        "POST",
        "/_control/faults",
        Some(&json!({"status": 503, "retry_after": 1, "count": 1, "path_contains": "/members", "skip": 2})),
    );
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["adds"], 5);
    assert_eq!(out["member_adds"], 25);
    let log = fx.sim_call("GET", "/_control/requests", None);
    let log = log.as_array().expect("log");
    let statuses: Vec<u64> = log.iter().filter_map(|e| e["status"].as_u64()).collect();
    assert!(statuses.iter().filter(|s| **s == 429).count() >= 2, "{statuses:?}");
    assert!(statuses.contains(&503));
    assert!(
        log.iter().filter(|e| e["url"].as_str().unwrap_or("").contains("skiptoken")).count() >= 3,
        "page size 2 means several pages"
    );
    let graph_reads = log.iter().filter_map(|e| e["url"].as_str()).filter(|u| !u.ends_with("/oauth2/v2.0/token"));
    assert!(
        graph_reads.clone().all(|u| u.contains("$select") || u.contains("skiptoken") || u.ends_with("$batch")),
        "every read selects its properties"
    );
    for i in 1..=5 {
        assert_eq!(fx.group(&fx.id(i)).expect("g").members.len(), 5);
    }
    let tokens = |log: &Value| {
        log.as_array()
            .map(|l| l.iter().filter(|e| e["url"].as_str().unwrap_or("").ends_with("/oauth2/v2.0/token")).count())
            .unwrap_or(0)
    };
    assert_eq!(tokens(&fx.sim_call("GET", "/_control/requests", None)), 1, "one token for the whole run: it is cached");

    // A token refused mid-run (401) is renewed once and the run goes on.
    fx.sim_call("DELETE", "/_control/requests", None);
    fx.sim_call("POST", "/_control/faults", Some(&json!({"status": 401, "count": 1, "skip": 1})));
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(tokens(&fx.sim_call("GET", "/_control/requests", None)), 2);
}

#[test]
fn exit_statuses_for_configuration_and_authentication_problems() {
    let (mut fx, _, _, cloud) = with_users("exit", 1);
    fx.start_sim(&tenant(cloud, vec![]));
    fx.write_config("delete_treshold = 3");
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("delete_treshold"), "the unknown key is named: {}", r.stderr);

    fx.write_config("");
    std::fs::write(fx.dir.join("client-secret"), "wrong-secret").expect("write");
    let r = fx.writeback(&["--json", "sync"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("AADSTS7000215"), "{}", r.stderr);
    assert!(!r.stderr.contains("wrong-secret") && !r.stdout.contains("wrong-secret"), "secrets never print");
    assert_eq!(r.json()["status"], "failed");

    std::fs::write(fx.dir.join("client-secret"), SECRET).expect("write");
    std::fs::write(fx.dir.join("bind-password"), "not-the-password").expect("write");
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("invalid credentials"), "{}", r.stderr);
    assert!(!r.stderr.contains("not-the-password"));

    std::fs::write(fx.dir.join("bind-password"), fx.bind_password()).expect("write");
    let r = fx.writeback(&["check"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("ok    AD bind over TLS"), "{}", r.stdout);
    assert!(!r.stdout.contains(fx.bind_password()) && !r.stdout.contains(SECRET));
}

#[test]
fn starttls_failover_dn_bind_certificate_checks_and_members_found_by_guid() {
    let (mut fx, users, ids, mut cloud) = with_users("tls", 2);
    // A synced user known only by onPremisesImmutableId (objectGUID), no SID.
    let guid_only = fx.create_user("guid-only");
    let gid = fx.id(3000);
    let mut u = synced_user(&gid, &guid_only);
    u["onPremisesSecurityIdentifier"] = json!(null);
    cloud.push(u);
    // One whose SID is of no domain of this forest: other-forest (issue #20). Its immutable id
    // names a user of this domain, but the SID comes first and is the anchor only the sync
    // writes (issue #15).
    let migrated = fx.create_user("migrated");
    let mid = fx.id(3001);
    let mut u = synced_user(&mid, &migrated);
    u["onPremisesSecurityIdentifier"] = json!("S-1-5-21-1-2-3-4242");
    cloud.push(u);
    let g = fx.id(1);
    fx.start_sim(&tenant(cloud, vec![security_group(&g, "SG-TLS", Some(true), &[&ids[0], &ids[1], &gid, &mid])]));
    let config = fx.write_config("");
    let text = std::fs::read_to_string(&config).expect("config");
    // The delegated account, by DN this time.
    let account_dn = format!("CN=svc-writeback,CN=Users,{}", fx.dc.base_dn);
    // ldap:// means StartTLS; the first DC of the list does not answer; bind by DN.
    let starttls = text
        .replace(&format!("url = \"{}\"", fx.dc.url), "url = [\"ldaps://127.0.0.1:1\", \"ldap://127.0.0.1:389\"]")
        .replace(&format!("bind_dn = \"{}\"", fx.bind_upn()), &format!("bind_dn = \"{account_dn}\""));
    assert_ne!(starttls, text);
    std::fs::write(&config, &starttls).expect("write");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let members: HashSet<String> = fx.group(&g).expect("written").members.into_iter().collect();
    assert_eq!(members, HashSet::from([users[0].guid.clone(), users[1].guid.clone(), guid_only.guid.clone()]));
    assert!(!members.contains(&migrated.guid));
    let show = fx.writeback(&["--json", "show", &g]).json();
    let reason = show["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["cloud_id"] == mid.as_str()))
        .map(|m| m["reason"].clone());
    assert_eq!(reason, Some(json!("other-forest")), "{show}");

    // Without the CA the DC's certificate is not trusted: no connection, exit status 4.
    let no_ca: String = starttls.lines().filter(|l| !l.starts_with("ca_file")).collect::<Vec<_>>().join("\n");
    std::fs::write(&config, no_ca.replace("\"ldaps://127.0.0.1:1\", ", "")).expect("write");
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.to_lowercase().contains("certificate"), "{}", r.stderr);

    // Plain ldaps:// with the CA, to the DC's name-less IP: fine; a URL scheme that is not LDAP: a config error.
    std::fs::write(&config, text.replace("ldaps://", "http://")).expect("write");
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 2, "a configuration error is exit status 2: {}", r.stderr);
    assert!(r.stderr.contains("must start with ldaps:// or ldap://"), "{}", r.stderr);
}

#[test]
fn managed_by_is_set_and_cleared_as_owners_change() {
    let (mut fx, users, ids, cloud) = with_users("owners", 2);
    let g = fx.id(1);
    let cloud_owner = fx.id(3000);
    let mut cloud = cloud;
    cloud.push(cloud_user(&cloud_owner));
    let mut group = security_group(&g, "SG-Owned", Some(true), &[&ids[0]]);
    group["owners"] = json!([&cloud_owner, &ids[1]]);
    let mut t = tenant(cloud, vec![group]);
    fx.start_sim(&t);
    fx.write_config("write_owners = true");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let managed_by = |fx: &mut Fixture| {
        let dn = fx.group(&g).expect("g").dn;
        let (entries, _) = fx
            .ldap
            .search(&dn, ldap3::Scope::Base, "(objectClass=*)", vec!["managedBy"])
            .expect("search")
            .success()
            .expect("ok");
        ldap3::SearchEntry::construct(entries.into_iter().next().expect("entry"))
            .attrs
            .get("managedBy")
            .and_then(|v| v.first())
            .cloned()
    };
    assert_eq!(managed_by(&mut fx), Some(users[1].dn.clone()), "the first owner that is an AD user");
    // Owner changes alone reach AD in a delta cycle: owners are selected in the group delta,
    // which tracks only what is selected.
    t["groups"][0]["owners"] = json!([&ids[0]]);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["kind"].as_str(), out["updates"].as_u64()), (0, Some("delta"), Some(1)), "{out}");
    assert_eq!(managed_by(&mut fx), Some(users[0].dn.clone()));
    t["groups"][0]["owners"] = json!([&cloud_owner]);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!((code, out["kind"].as_str()), (0, Some("delta")), "{out}");
    assert_eq!(managed_by(&mut fx), None, "no owner in AD: managedBy cleared");
}

#[test]
fn lifecycle_options_delete_on_request_and_the_member_removal_threshold() {
    let (mut fx, _, ids, cloud) = with_users("lifeopts", 4);
    let (out_of_scope, soft) = (fx.id(1), fx.id(2));
    let big = fx.id(3);
    let all = vec![
        security_group(&out_of_scope, "SG-Leaves", Some(true), &refs(&ids[..1])),
        m365_group(&soft, "Team Soft", None, None, &refs(&ids[..1])),
        security_group(&big, "SG-Shrinks", Some(true), &refs(&ids)),
    ];
    fx.start_sim(&tenant(cloud.clone(), all.clone()));
    fx.write_config("on_out_of_scope = \"delete\"\non_soft_delete = \"delete\"\nmember_removal_threshold = 2");
    assert_eq!(fx.sync_json(&[]).0, 0);

    let mut leaves = all[0].clone();
    leaves["writebackConfiguration"]["isEnabled"] = json!(false);
    let mut shrinks = all[2].clone();
    shrinks["members"] = json!([]);
    let mut t = tenant(cloud, vec![leaves, shrinks]);
    t["deletedGroups"] = json!([all[1].clone()]);
    fx.set_tenant(&t);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 3, "4 member removals over a threshold of 2 stop the run: {out}");
    assert!(fx.group(&out_of_scope).is_some() && fx.group(&soft).is_some());
    assert_eq!(fx.group(&big).expect("big").members.len(), 4, "nothing was removed");

    let (code, out) = fx.sync_json(&["--allow-deletes"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!((out["deletes"].as_u64(), out["member_removes"].as_u64()), (Some(2), Some(4)), "{out}");
    assert!(fx.group(&out_of_scope).is_none(), "on_out_of_scope = delete");
    assert!(fx.group(&soft).is_none(), "on_soft_delete = delete");
    assert!(fx.group(&big).expect("big").members.is_empty());
}

/// 120+ nasty display names, deterministic: specials in every position, unicode, controls, lengths.
fn nasty_corpus() -> Vec<String> {
    let specials = [
        ",", "+", "\"", "\\", "<", ">", ";", "=", "#", " ", "*", "(", ")", "/", "[", "]", ":", "|", "?", ".", "\t",
        "\u{1}", "\u{7f}", "é", "日本", "😀", "\u{202e}", "&", "%", "'",
    ];
    let mut names = Vec::new();
    for (i, s) in specials.iter().enumerate() {
        names.push(format!("{s}lead {i}"));
        names.push(format!("trail {i}{s}"));
        names.push(format!("mid{s}dle {i}"));
        names.push(format!("{s}{s}{s} {i}"));
    }
    names.push("#".into());
    names.push(" ".repeat(3) + "spaces");
    names.push("x".repeat(256));
    names.push("é".repeat(60));
    names.push("😀".repeat(40));
    names
}

#[test]
fn a_corpus_of_nasty_names_and_malformed_graph_objects() {
    let (mut fx, users, ids, cloud) = with_users("corpus", 1);
    let names = nasty_corpus();
    assert!(names.len() >= 100);
    let mut groups: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| security_group(&fx.id(i as u32 + 1), n, Some(true), &refs(&ids)))
        .collect();
    // Malformed objects from Graph: no id, an id that is not a GUID, wrong types, a huge string.
    groups
        .push(json!({"displayName": "no id", "securityEnabled": true, "writebackConfiguration": {"isEnabled": true}}));
    groups.push(json!({
        "id": "not-a-guid",
        "displayName": "bad id",
        "securityEnabled": true,
        "writebackConfiguration": {"isEnabled": true}
    }));
    groups.push(json!({"id": fx.id(900), "displayName": "wrong type", "securityEnabled": "yes", "groupTypes": 5}));
    groups.push(json!({
        "id": fx.id(901),
        "displayName": "x".repeat(1_000_000),
        "securityEnabled": true,
        "mailEnabled": false,
        "groupTypes": [],
        "writebackConfiguration": {"isEnabled": true}
    }));
    fx.start_sim(&tenant(cloud, groups));
    fx.write_config("cn_format = \"display-name\"");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["adds"].as_u64(), Some(names.len() as u64), "every nasty name is written: {out}");
    assert_eq!(out["errors"], 4, "the four malformed objects are errors, one each: {out}");
    let groups_ou = fx.groups_ou.clone();
    let written = fx.groups(&groups_ou);
    assert_eq!(written.len(), names.len());
    for g in &written {
        let cn = g.one("cn").expect("cn");
        assert!(cn.encode_utf16().count() <= 64 && !cn.chars().any(char::is_control), "{cn:?}");
        assert_eq!(g.members, vec![users[0].guid.clone()]);
    }
    let (_, again) = fx.sync_json(&[]);
    for k in ["adds", "updates", "renames", "member_adds", "member_removes"] {
        assert_eq!(again[k], 0, "names round-trip exactly; {k}: {again}");
    }
}

#[test]
fn a_taken_sam_account_name_is_named_as_such() {
    let (mut fx, _, ids, cloud) = with_users("samtaken", 1);
    let g = fx.id(1);
    // Elsewhere in the domain, an object already uses the sAMAccountName writeback would give.
    let other = fx.create_group("unrelated", UNIVERSAL_SECURITY, None);
    let sam = format!("Group_{g}");
    fx.modify(&other.dn, vec![Mod::Replace("sAMAccountName", HashSet::from([sam.as_str()]))]);
    fx.start_sim(&tenant(cloud, vec![security_group(&g, "SG", Some(true), &refs(&ids))]));
    fx.write_config("");
    let (code, _) = fx.sync_json(&[]);
    assert_eq!(code, 1);
    let errors = fx.writeback(&["--json", "errors"]).json();
    let msg = errors["errors"][0]["message"].as_str().unwrap_or("");
    assert!(msg.contains(&format!("the sAMAccountName {sam} is already used")), "{msg}");
}
