//! Hostile input, by property: whatever Graph sends as names, descriptions, mail addresses and
//! ids, the planner yields valid AD values (RFC 4514 DNs, RFC 4515 filters, sAMAccountName
//! rules, length limits) or a per-object error — and never panics.

use proptest::prelude::*;

use crate::model::{MemberRead, WritebackConfiguration};
use crate::naming::{self, escape_rdn_value, unescape_rdn_value};
use crate::plan::Operation;
use crate::*;

/// Any text, weighted towards what breaks DNs and filters.
fn nasty() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        ",", "+", "\"", "\\", "<", ">", ";", "=", "#", " ", "\0", "\n", "\t", "*", "(", ")", "/", "[", "]", ":", "|",
        "?", ".", "😀", "é", "\u{7f}", "\u{202e}",
    ]);
    prop::collection::vec(
        prop_oneof![3 => any::<char>().prop_map(|c| c.to_string()), 2 => special.prop_map(str::to_string)],
        0..320,
    )
    .prop_map(|parts| parts.concat())
}

fn is_valid_rdn_value(escaped: &str) -> bool {
    // Every special character is escaped; no raw control characters remain.
    let mut chars = escaped.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return false,
            '\\' => {}
            ',' | '+' | '"' | '<' | '>' | ';' | '=' => return false,
            '#' | ' ' if first => return false,
            c if c.is_control() => return false,
            _ => {}
        }
        first = false;
    }
    !escaped.ends_with(' ') || escaped.ends_with("\\ ")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn rdn_escaping_is_valid_and_reversible(s in nasty()) {
        let e = escape_rdn_value(&s);
        prop_assert!(is_valid_rdn_value(&e), "{e:?}");
        prop_assert_eq!(unescape_rdn_value(&e), s);
    }

    #[test]
    fn any_group_gives_valid_values_or_an_error(
        name in nasty(),
        desc in nasty(),
        mail in nasty(),
        nick in nasty(),
        id_tail in "[0-9a-f]{12}",
        raw_id in nasty(),
        display_format in any::<bool>()
    ) {
        let id = format!("3a5c3221-c465-48c0-95b8-{id_tail}");
        let group = |gid: &str| CloudObject {
            id: gid.into(),
            display_name: Some(name.clone()),
            description: Some(desc.clone()),
            group_types: vec!["Unified".into()],
            mail_enabled: Some(true),
            security_enabled: Some(false),
            mail: Some(mail.clone()),
            mail_nickname: Some(nick.clone()),
            proxy_addresses: vec![format!("SMTP:{mail}"), mail.clone()],
            writeback_configuration: Some(WritebackConfiguration { is_enabled: None, on_premises_group_type: None }),
            ..Default::default()
        };
        // A member with a hostile id and broken anchors must not break the group either.
        let member = CloudObject { odata_type: Some("#microsoft.graph.user".into()), id: raw_id.as_str().into(),
            on_premises_sync_enabled: Some(true), on_premises_security_identifier: Some(raw_id.clone()),
            on_premises_immutable_id: Some(raw_id.clone()), ..Default::default() };
        let mut cloud = CloudSnapshot { groups: vec![group(&id), group(&raw_id)], ..Default::default() };
        cloud.members.insert(id.as_str().into(), MemberRead::complete(vec![member]));
        let mut cfg = PlannerConfig::with_target_ou("OU=Groups,DC=corp,DC=test");
        if display_format { cfg.cn_format = CnFormat::DisplayName; }
        let p = plan(&cloud, &AdSnapshot::default(), &State::default(), &cfg);
        for op in &p.operations {
            let Operation::Add { dn, attrs, .. } = op else { continue };
            let (rdn, parent) = naming::split_dn(dn);
            prop_assert_eq!(parent, "OU=Groups,DC=corp,DC=test");
            prop_assert!(is_valid_rdn_value(&rdn[3..]), "{rdn:?}");
            for (k, values) in attrs {
                for v in values {
                    prop_assert!(!v.contains('\0'), "{k} holds NUL");
                    match k.as_str() {
                        "cn" => prop_assert!(v.encode_utf16().count() <= 64 && !v.chars().any(char::is_control)),
                        "sAMAccountName" => prop_assert!(
                            v.encode_utf16().count() <= 64
                                && !v.ends_with('.')
                                && !v.chars().any(|c| c.is_control() || "\"/\\[]:;|=,+*?<>".contains(c))
                        ),
                        "displayName" => prop_assert!(
                            v.encode_utf16().count() <= 256 && !v.chars().any(char::is_control)
                        ),
                        "description" => prop_assert!(v.encode_utf16().count() <= 448),
                        _ => {}
                    }
                }
            }
        }
        // The group with a hostile id is never written; the valid one is written or explained.
        prop_assert!(p.operations.iter().all(|o| *o.cloud_id() == id));
        prop_assert!(p.report(&id).len() == 1 && (p.summary.adds == 1 || p.errors.iter().any(|e| e.cloud_id == id)));
    }
}
