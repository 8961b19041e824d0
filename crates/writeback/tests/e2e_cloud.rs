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
    assert_eq!(
        wb(&now, &m2),
        (Value::Bool(false), Value::String("universalMailEnabledSecurityGroup".into())),
        "the group type read before is sent back with the whole writebackConfiguration"
    );
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
    let text_args: Vec<&str> = args[1..].to_vec();
    let text = fx.writeback(&text_args);
    assert!(
        text.stdout.lines().filter(|l| l.starts_with("~ ") && l.contains(": changed: ")).count() == 2,
        "--yes lists the groups it changed: {}",
        text.stdout
    );
    let out = fx.writeback(&args).json();
    assert_eq!(out["unchanged"], 2, "{out}");
    let now = fx.sim_call("GET", "/_control/tenant", None);
    assert_eq!(wb(&now, &s1), (Value::Bool(true), Value::String("universalSecurityGroup".into())));

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

    // Tenant-wide: without --yes it only says what would change.
    let dry = fx.writeback(&["cloud", "new-group-default", "--disable"]);
    assert!(dry.stdout.contains("would change to false") && dry.stdout.contains("--yes"), "{}", dry.stdout);
    assert_eq!(read(&fx)["new_unified_group_writeback_default"], true, "nothing changed without --yes");
    let r = fx.writeback(&["cloud", "new-group-default", "--disable", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("created"), "{}", r.stdout);
    let off = read(&fx);
    assert_eq!(off["new_unified_group_writeback_default"], false);
    let settings = fx.sim_call("GET", "/_control/tenant", None)["groupSettings"].clone();
    assert_eq!(settings[0]["values"].as_array().map(Vec::len), Some(15), "every template value is set: {settings}");

    let r = fx.writeback(&["cloud", "new-group-default", "--enable", "--yes"]);
    assert!(r.stdout.contains("updated"), "{}", r.stdout);
    let on = read(&fx);
    assert_eq!(
        (on["new_unified_group_writeback_default"].as_bool(), &on["setting_id"]),
        (Some(true), &off["setting_id"])
    );
}

fn openssl_key_and_cert(dir: &std::path::Path, name: &str) -> (String, String) {
    let (key, cert) = (dir.join(format!("{name}.key")), dir.join(format!("{name}.crt")));
    let ok = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=writeback test app"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (installed by scripts/samba-dc)")
        .success();
    assert!(ok, "openssl made no certificate");
    (std::fs::read_to_string(&key).expect("key"), std::fs::read_to_string(&cert).expect("cert"))
}

#[test]
fn certificate_authentication_works_and_a_wrong_key_is_refused_clearly() {
    let mut fx = Fixture::new("cert");
    let (key, cert) = openssl_key_and_cert(&fx.dir, "app");
    let (other_key, _) = openssl_key_and_cert(&fx.dir, "other");
    let mut t = tenant(vec![], vec![m365_group(&fx.id(1), "Team", None, None, &[])]);
    t["apps"][0]["certificate_pem"] = serde_json::json!(cert);
    fx.start_sim(&t);
    fx.write_config("");
    let cfg_path = fx.dir.join("writeback.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    // The certificate replaces the secret: the secret file is gone.
    std::fs::remove_file(fx.dir.join("client-secret")).expect("remove secret");
    let cfg = cfg.replace("client_secret_file = \"client-secret\"", "client_certificate_file = \"app.pem\"");
    std::fs::write(&cfg_path, &cfg).expect("write");
    std::fs::write(fx.dir.join("app.pem"), format!("{cert}{key}")).expect("pem");

    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["adds"], 1);
    // The certificate expires in two days: check passes, with a warning that says what to do.
    let r = fx.writeback(&["check"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let warned = r.stdout.lines().find(|l| l.starts_with("WARN  Graph credential expiry: the client certificate"));
    assert!(warned.is_some_and(|l| l.contains("days: register a new certificate")), "{}", r.stdout);
    let log = fx.sim_call("GET", "/_control/requests", None);
    assert!(log
        .as_array()
        .expect("log")
        .iter()
        .any(|e| e["url"].as_str().unwrap_or("").ends_with("/token") && e["status"] == 200));

    // The registered certificate with another key: refused, clearly, exit status 4.
    std::fs::write(fx.dir.join("app.pem"), format!("{cert}{other_key}")).expect("pem");
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("AADSTS700027") && r.stderr.contains("client_certificate_file"), "{}", r.stderr);
    assert!(!r.stderr.contains("PRIVATE KEY") && !r.stdout.contains("PRIVATE KEY"), "the key never prints");
    // A file without a key is a configuration problem named as such.
    std::fs::write(fx.dir.join("app.pem"), &cert).expect("pem");
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 2, "a configuration error is exit status 2: {}", r.stderr);
    assert!(r.stderr.contains("holds no private key"), "{}", r.stderr);
}

#[test]
fn a_client_secret_past_its_recorded_expiry_fails_check_and_a_bad_date_is_a_config_error() {
    let mut fx = Fixture::new("secretexpiry");
    fx.start_sim(&tenant(vec![], vec![]));
    fx.write_config("");
    let cfg_path = fx.dir.join("writeback.toml");
    let cfg = std::fs::read_to_string(&cfg_path).expect("config");
    let with = |date: &str| {
        let line = format!("client_secret_file = \"client-secret\"\nclient_secret_expires = \"{date}\"");
        std::fs::write(&cfg_path, cfg.replace("client_secret_file = \"client-secret\"", &line)).expect("write");
    };
    with("2021-01-31");
    let r = fx.writeback(&["--json", "check"]);
    assert_eq!(r.code, 4, "{}", r.stdout);
    let checks = r.json()["checks"].as_array().cloned().unwrap_or_default();
    let expiry = checks.iter().find(|c| c["check"] == "Graph credential expiry").expect("an expiry check");
    assert_eq!(expiry["ok"], false);
    assert!(expiry["detail"].as_str().is_some_and(|d| d.starts_with("the client secret expired")), "{expiry}");
    with("2099-01-31");
    let r = fx.writeback(&["check"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.stdout.contains("ok    Graph credential expiry: the client secret is valid for"), "{}", r.stdout);
    with("next tuesday");
    let r = fx.writeback(&["check"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("client_secret_expires = \"next tuesday\" is not a date"), "{}", r.stderr);
}

#[test]
fn new_group_default_changes_one_value_and_keeps_every_other_tenant_setting() {
    let mut fx = Fixture::new("cloudsettings");
    // A tenant whose Microsoft 365 group settings are not the defaults.
    let custom = [
        ("CustomBlockedWordsList", "contoso,fabrikam"),
        ("EnableMSStandardBlockedWords", "true"),
        ("ClassificationDescriptions", "Low:public,High:secret"),
        ("DefaultClassification", "Low"),
        ("PrefixSuffixNamingRequirement", "GRP_[GroupName]"),
        ("AllowGuestsToBeGroupOwner", "false"),
        ("AllowGuestsToAccessGroups", "false"),
        ("GuestUsageGuidelinesUrl", "https://contoso.example/guests"),
        ("GroupCreationAllowedGroupId", "62e90394-69f5-4237-9190-012177145e10"),
        ("AllowToAddGuests", "false"),
        ("UsageGuidelinesUrl", "https://contoso.example/groups"),
        ("ClassificationList", "Low,High"),
        ("EnableGroupCreation", "false"),
        ("NewUnifiedGroupWritebackDefault", "true"),
        ("EnableMIPLabels", "true"),
    ];
    let values: Vec<Value> = custom.iter().map(|(n, v)| serde_json::json!({"name": n, "value": v})).collect();
    let mut t = tenant(vec![], vec![]);
    t["groupSettings"] = serde_json::json!([{
        "id": "5e7a0000-0000-0000-0000-000000000001",
        "displayName": "Group.Unified",
        "templateId": writeback_graph::GROUP_UNIFIED_TEMPLATE,
        "values": values
    }]);
    fx.start_sim(&t);
    fx.write_config("");
    let held = |fx: &Fixture| -> Vec<(String, String)> {
        let s = fx.sim_call("GET", "/_control/tenant", None)["groupSettings"][0]["values"].clone();
        let mut v: Vec<(String, String)> = s
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| (x["name"].as_str().unwrap_or("").to_string(), x["value"].as_str().unwrap_or("").to_string()))
            .collect();
        v.sort();
        v
    };
    let expect = |writeback_default: &str| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = custom
            .iter()
            .map(|(n, v)| {
                let v = if *n == "NewUnifiedGroupWritebackDefault" { writeback_default } else { v };
                (n.to_string(), v.to_string())
            })
            .collect();
        v.sort();
        v
    };

    let r = fx.writeback(&["cloud", "new-group-default", "--disable", "--yes"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("the other 14 values are unchanged"), "{}", r.stdout);
    assert_eq!(held(&fx), expect("false"), "only the writeback default changed");

    let r = fx.writeback(&["cloud", "new-group-default", "--disable", "--yes"]);
    assert!(r.stdout.contains("already so"), "{}", r.stdout);
    let out = fx.writeback(&["--json", "cloud", "new-group-default", "--enable", "--yes"]).json();
    assert_eq!(
        (out["new_unified_group_writeback_default"].as_bool(), out["other_values_kept"].as_u64()),
        (Some(true), Some(14))
    );
    assert_eq!(held(&fx), expect("true"));
}
