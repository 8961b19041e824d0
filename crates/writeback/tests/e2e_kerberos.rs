//! Kerberos (issue #5): writeback binds with SASL GSSAPI from a keytab, against the Samba KDC,
//! as the least-privilege account, and a wrong keytab is a clear error with exit status 4.
//! Built only with `--features kerberos` (it needs libkrb5); scripts/test builds it.
#![cfg(feature = "kerberos")]

mod common;

use common::*;

fn kerberos_config(fx: &Fixture, keytab: &str) {
    let (keytab, krb5, host) =
        (keytab.to_string(), common::env("WRITEBACK_TEST_KRB5_CONF"), common::env("WRITEBACK_TEST_KERBEROS_HOST"));
    let bind = format!("bind_dn = \"{}\"", fx.bind_upn());
    fx.edit_config(|cfg| {
        assert!(cfg.contains(&bind), "the fixture's config binds with a password");
        cfg.replace(
            &bind,
            &format!("auth = \"kerberos\"\nkeytab = \"{keytab}\"\nkrb5_conf = \"{krb5}\"\nkerberos_host = \"{host}\""),
        )
        .replace("bind_password_file = \"bind-password\"\n", "")
    });
}

#[test]
fn a_keytab_binds_with_kerberos_and_a_wrong_one_is_a_clear_error() {
    let mut fx = Fixture::new("krb");
    let (_, uids, cloud) = fx.synced_users(2);
    let g = fx.id(1);
    let members: Vec<&str> = uids.iter().map(String::as_str).collect();
    fx.start_sim(&tenant(cloud, vec![security_group(&g, "SG-Kerberos", Some(true), &members)]));
    fx.write_config("");
    // No password anywhere: the bind can only be Kerberos.
    std::fs::remove_file(fx.dir.join("bind-password")).expect("remove the password file");
    let keytab = common::env("WRITEBACK_TEST_KEYTAB");
    kerberos_config(&fx, &keytab);
    assert!(!std::fs::read_to_string(fx.dir.join("writeback.toml")).expect("config").contains("bind_password"));

    let r = fx.writeback(&["check"]);
    assert!(
        r.stdout.contains("bound as svc-writeback@CORP.EXAMPLE.TEST"),
        "check names the keytab's account: {}{}",
        r.stdout,
        r.stderr
    );

    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    let group = fx.group(&g).expect("the group written over a Kerberos bind");
    assert_eq!(group.members.len(), 2, "both members written");

    // The same principal with keys the KDC does not accept (a password changed since export).
    let bad = fx.dir.join("wrong.keytab");
    std::fs::write(&bad, with_wrong_keys(&std::fs::read(&keytab).expect("read keytab"))).expect("write keytab");
    fx.edit_config(|cfg| cfg.replace(&format!("keytab = \"{keytab}\""), &format!("keytab = \"{}\"", bad.display())));
    let r = fx.writeback(&["sync"]);
    assert_eq!(r.code, 4, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("Kerberos")
            && r.stderr.contains("Preauthentication failed")
            && r.stderr.contains("[ad] keytab"),
        "{}",
        r.stderr
    );
}

/// A copy of a keytab with every key's bytes inverted.
fn with_wrong_keys(keytab: &[u8]) -> Vec<u8> {
    let mut out = keytab.to_vec();
    for entry in writeback_core::keytab::entries(keytab).expect("a valid keytab") {
        for b in &mut out[entry.key] {
            *b = !*b;
        }
    }
    out
}
