//! Exchange-ready Microsoft 365 groups end to end (issue #22, part 6): on a DC with Exchange's
//! schema (the test DC is extended with it, scripts/samba-dc) a Microsoft 365 group is written
//! with mail, mailNickname and every SMTP and X500 proxy address Graph sends (not a cloud
//! service's own, such as SPO:), and no msExch* value (Microsoft documents none for groups
//! written back); on a DC without that schema (the layer hides it) mailNickname is left out.

mod common;

use common::windows::WindowsDc;
use common::*;
use serde_json::json;

fn team(fx: &Fixture) -> serde_json::Value {
    let mut g = m365_group(&fx.id(1), "Team Rocket", None, None, &[]);
    g["proxyAddresses"] = json!([
        "SMTP:team-rocket@contoso.com",
        "smtp:team-rocket@contoso.onmicrosoft.com",
        "X500:/o=ExchangeLabs/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=0b1d-team-rocket",
        "SPO:SPO_1c7a3a8e-0000-4000-8000-000000000001@SPO_0b1d0000-0000-4000-8000-000000000002",
    ]);
    g
}

/// Every attribute of the group as AD holds it ("*"): the names of the msExch* ones.
fn exchange_attributes(fx: &mut Fixture, id: &str) -> Vec<String> {
    let dn = fx.group(id).expect("written").dn;
    let (entries, _) =
        fx.ldap.search(&dn, ldap3::Scope::Base, "(objectClass=*)", vec!["*"]).expect("search").success().expect("read");
    let entry = ldap3::SearchEntry::construct(entries.into_iter().next().expect("the group"));
    assert!(entry.attrs.contains_key("mailNickname"), "a read of every attribute: {:?}", entry.attrs.keys());
    let mut names: Vec<String> = entry
        .attrs
        .keys()
        .chain(entry.bin_attrs.keys())
        .filter(|k| k.to_ascii_lowercase().starts_with("msexch"))
        .cloned()
        .collect();
    names.sort();
    names
}

#[test]
fn a_microsoft_365_group_is_written_ready_for_exchange_hybrid() {
    let mut fx = Fixture::new("exchange");
    let t = tenant(vec![], vec![team(&fx)]);
    fx.start_sim(&t);
    fx.write_config("");
    let check = fx.writeback(&["check"]);
    assert!(check.stdout.contains("Exchange") && check.stdout.contains("present"), "{}", check.stdout);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let id = fx.id(1);
    let g = fx.group(&id).expect("the group in AD");
    assert_eq!(g.group_type(), 8, "universal distribution (no onPremisesGroupType)");
    assert_eq!(g.one("mail"), Some("team-rocket@contoso.com"));
    assert_eq!(g.one("mailNickname"), Some("team-rocket"));
    let mut proxies = g.attrs.get("proxyaddresses").cloned().unwrap_or_default();
    proxies.sort();
    assert_eq!(proxies.len(), 3, "SMTP, smtp and X500, not SPO: {proxies:?}");
    assert!(proxies.iter().any(|p| p.starts_with("X500:/o=ExchangeLabs/")), "{proxies:?}");
    assert!(proxies.contains(&"SMTP:team-rocket@contoso.com".to_string()), "{proxies:?}");
    assert!(exchange_attributes(&mut fx, &id).is_empty(), "no msExch* value is guessed");
    // Steady.
    let (code, out) = fx.sync_json(&["--full"]);
    assert_eq!((code, out["updates"].clone()), (0, json!(0)), "{out}");
}

#[test]
fn without_exchange_schema_mail_and_proxy_addresses_are_written_but_not_mail_nickname() {
    let mut fx = Fixture::new("no-exchange");
    let hide = ["--hide-attribute", "mailNickname", "--hide-attribute", "msExchRecipientTypeDetails"];
    let layer = WindowsDc::start(&fx, &hide);
    fx.dc.url = layer.url.clone();
    let t = tenant(vec![], vec![team(&fx)]);
    fx.start_sim(&t);
    fx.write_config("");
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let g = fx.group(&fx.id(1)).expect("the group in AD");
    assert_eq!(g.one("mail"), Some("team-rocket@contoso.com"));
    assert_eq!(g.one("mailNickname"), None, "the schema has no mailNickname");
    assert_eq!(g.attrs.get("proxyaddresses").map(Vec::len), Some(3));
}
