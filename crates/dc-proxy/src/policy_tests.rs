use lber::common::TagClass;

use super::*;
use crate::msg::{integer, octets};

fn policy() -> Policy {
    Policy {
        max_page_size: 3,
        max_val_range: 4,
        max_query: Duration::from_secs(120),
        slow_after: None,
        hidden: vec!["msds-externaldirectoryobjectid".into()],
        refused: vec!["info".into()],
        range_upper: vec![("description".into(), 10)],
    }
}

fn seq(id: u64, class: TagClass, parts: Vec<StructureTag>) -> StructureTag {
    StructureTag { class, id, payload: PL::C(parts) }
}

fn attribute(name: &str, values: &[&str]) -> StructureTag {
    seq(
        16,
        TagClass::Universal,
        vec![
            octets(name.as_bytes()),
            seq(17, TagClass::Universal, values.iter().map(|v| octets(v.as_bytes())).collect()),
        ],
    )
}

fn entry(attrs: Vec<StructureTag>) -> Message {
    let op =
        seq(op::SEARCH_ENTRY, TagClass::Application, vec![octets(&b"CN=g"[..]), seq(16, TagClass::Universal, attrs)]);
    Message { id: 2, op, controls: None }
}

fn search(paged: Option<i64>) -> Message {
    let op = seq(op::SEARCH_REQUEST, TagClass::Application, vec![octets(&b"DC=x"[..])]);
    let controls = paged.map(|size| {
        let mut value = bytes::BytesMut::new();
        let inner = seq(16, TagClass::Universal, vec![integer(2, size), octets(Vec::new())]);
        lber::write::encode_into(&mut value, inner).expect("encode");
        let control = seq(16, TagClass::Universal, vec![octets(msg::PAGED_RESULTS.as_bytes()), octets(value.to_vec())]);
        seq(0, TagClass::Context, vec![control])
    });
    Message { id: 2, op, controls }
}

fn values_of(m: &Message) -> Vec<(String, usize)> {
    let PL::C(attrs) = &m.parts()[1].payload else { return Vec::new() };
    attrs
        .iter()
        .filter_map(|a| {
            let n = match a.payload_values() {
                Some(PL::C(v)) => v.len(),
                _ => 0,
            };
            description(a).map(|d| (d, n))
        })
        .collect()
}

#[test]
fn an_unpaged_search_ends_with_size_limit_exceeded_after_max_page_size_entries() {
    let p = policy();
    let mut notes = Vec::new();
    let mut s = p.request(&mut search(None), &mut notes).expect("forwarded").expect("a search");
    let passed = (0..5).filter(|_| p.entry(entry(vec![]), &mut s, &mut notes).is_some()).count();
    assert_eq!(passed, 3);
    let done = p.done(Message { id: 2, op: msg::result(op::SEARCH_DONE, 0, ""), controls: None }, &mut s, &mut notes);
    assert_eq!(msg::result_of(&done), Some((4, String::new())));
    assert_eq!(notes, vec![Note::Cut(Cut::Size)]);
}

#[test]
fn a_page_larger_than_max_page_size_is_cut_to_it_and_a_paged_search_is_not_capped() {
    let p = policy();
    let mut notes = Vec::new();
    let mut m = search(Some(500));
    let mut s = p.request(&mut m, &mut notes).expect("forwarded").expect("a search");
    assert_eq!(notes, vec![Note::PageCut { asked: 500 }]);
    let again = Message::parse(&m.clone().encode()).expect("still an LDAP message");
    assert_eq!(again, m);
    let mut small = search(Some(2));
    p.request(&mut small, &mut notes).expect("forwarded");
    assert_eq!(small, search(Some(2)), "a page within the limit is left alone");
    assert_eq!((0..5).filter(|_| p.entry(entry(vec![]), &mut s, &mut notes).is_some()).count(), 5);
}

#[test]
fn member_is_ranged_at_max_val_range_whether_asked_or_not() {
    let p = policy();
    let mut notes = Vec::new();
    let mut s = p.request(&mut search(None), &mut notes).expect("forwarded").expect("a search");
    let vals = ["a", "b", "c", "d", "e", "f"];
    let m = p.entry(entry(vec![attribute("member", &vals), attribute("cn", &["g"])]), &mut s, &mut notes);
    assert_eq!(values_of(&m.expect("kept")), vec![("member;range=0-3".into(), 4), ("cn".into(), 1)]);
    let asked = p.entry(entry(vec![attribute("member;range=4-*", &vals)]), &mut s, &mut notes);
    assert_eq!(values_of(&asked.expect("kept")), vec![("member;range=4-7".into(), 4)]);
    let small = p.entry(entry(vec![attribute("member;range=8-*", &["x"])]), &mut s, &mut notes);
    assert_eq!(values_of(&small.expect("kept")), vec![("member;range=8-*".into(), 1)], "the last range is Samba's");
}

#[test]
fn a_2012_r2_schema_has_no_external_directory_object_id() {
    let p = policy();
    let mut notes = Vec::new();
    let mut s = p.request(&mut search(None), &mut notes).expect("forwarded").expect("a search");
    let definition = entry(vec![attribute("lDAPDisplayName", &["msDS-ExternalDirectoryObjectId"])]);
    assert!(p.entry(definition, &mut s, &mut notes).is_none());
    let class = entry(vec![attribute("mayContain", &["msDS-ExternalDirectoryObjectId", "mail"])]);
    let class = p.entry(class, &mut s, &mut notes).expect("kept");
    assert_eq!(values_of(&class), vec![("mayContain".into(), 1)]);
    let op = seq(
        op::ADD_REQUEST,
        TagClass::Application,
        vec![
            octets(&b"CN=g"[..]),
            seq(16, TagClass::Universal, vec![attribute("msDS-ExternalDirectoryObjectId", &["x"])]),
        ],
    );
    let refused = p.request(&mut Message { id: 3, op, controls: None }, &mut notes);
    assert_eq!(refused.err(), Some((17, windows::NOT_IN_SCHEMA.1.to_string())));
}

fn add(attrs: Vec<StructureTag>) -> Message {
    let op =
        seq(op::ADD_REQUEST, TagClass::Application, vec![octets(&b"CN=g"[..]), seq(16, TagClass::Universal, attrs)]);
    Message { id: 7, op, controls: None }
}

#[test]
fn a_value_past_range_upper_and_an_attribute_this_dc_lacks_are_refused_before_the_dc() {
    let p = policy();
    let mut notes = Vec::new();
    // Ten characters in UTF-16 (AD counts so): taken; eleven: refused, naming the attribute.
    let ten = "é".repeat(10);
    assert!(p.request(&mut add(vec![attribute("description", &[&ten])]), &mut notes).is_ok());
    let eleven = format!("{ten}x");
    let (code, text) =
        p.request(&mut add(vec![attribute("Description", &[&eleven])]), &mut notes).expect_err("refused");
    assert_eq!(code, 19);
    assert!(text.starts_with("00002082: AtrErr") && text.contains("(Description)"), "{text}");
    assert_eq!(notes, vec![Note::Refused("Description: 11 characters, past its rangeUpper 10".into())]);
    // A modify's replace is checked as an add is.
    let change = seq(16, TagClass::Universal, vec![integer(10, 2), attribute("description", &[&eleven])]);
    let op = seq(
        op::MODIFY_REQUEST,
        TagClass::Application,
        vec![octets(&b"CN=g"[..]), seq(16, TagClass::Universal, vec![change])],
    );
    assert_eq!(p.request(&mut Message { id: 8, op, controls: None }, &mut notes).err().map(|e| e.0), Some(19));
    // An attribute refused on write, though reads show it.
    let refused = p.request(&mut add(vec![attribute("info", &["x"])]), &mut notes);
    assert_eq!(refused.err().map(|e| e.0), Some(17));
}

#[test]
fn samba_refusals_are_answered_in_windows_words() {
    let p = policy();
    let mut notes = Vec::new();
    let samba = |kind, code, text: &str| Message { id: 4, op: msg::result(kind, code, text), controls: None };
    let cases = [
        (op::ADD_RESPONSE, 68, "samldb: Account name (sAMAccountName) 'x' already in use!", windows::ACCOUNT_EXISTS),
        (op::ADD_RESPONSE, 68, "Entry CN=x already exists", windows::NAME_EXISTS),
        (op::MODIFY_RESPONSE, 68, "Attribute member already exists for target GUID x", windows::MEMBER_IN_GROUP),
        (op::MODIFY_RESPONSE, 53, "Attribute member doesn't exist for target GUID x", windows::MEMBER_NOT_IN_GROUP),
    ];
    for (kind, code, text, (want_code, want_text)) in cases {
        let out = p.write_result(samba(kind, code, text), &mut notes);
        assert_eq!(msg::result_of(&out), Some((want_code, want_text.to_string())), "{text}");
    }
    let ok = p.write_result(samba(op::MODIFY_RESPONSE, 0, ""), &mut notes);
    assert_eq!(msg::result_of(&ok), Some((0, String::new())));
}

#[test]
fn a_filter_naming_an_attribute_the_schema_lacks_matches_nothing() {
    let p = policy();
    let mut notes = Vec::new();
    let equality = |attr: &str, v: &str| seq(3, TagClass::Context, vec![octets(attr.as_bytes()), octets(v.as_bytes())]);
    let filter = seq(
        1,
        TagClass::Context,
        vec![equality("adminDescription", "Group_x"), equality("msDS-ExternalDirectoryObjectId", "Group_x")],
    );
    let mut parts: Vec<StructureTag> = (0..6).map(|i| integer(2, i)).collect();
    parts.push(filter);
    let mut m = Message { id: 5, op: seq(op::SEARCH_REQUEST, TagClass::Application, parts), controls: None };
    p.request(&mut m, &mut notes).expect("forwarded");
    assert_eq!(notes, vec![Note::Hidden("a filter".into())]);
    let PL::C(or) = &m.parts()[6].payload else { panic!("an or") };
    assert_eq!(or[0], equality("adminDescription", "Group_x"), "the other item stays");
    assert_eq!((or[1].id, or[1].class), (2, TagClass::Context), "a not");
    // The value lDAPDisplayName=msDS-ExternalDirectoryObjectId names no hidden attribute.
    let mut notes = Vec::new();
    let mut parts: Vec<StructureTag> = (0..6).map(|i| integer(2, i)).collect();
    parts.push(equality("lDAPDisplayName", "msDS-ExternalDirectoryObjectId"));
    let mut m = Message { id: 6, op: seq(op::SEARCH_REQUEST, TagClass::Application, parts), controls: None };
    p.request(&mut m, &mut notes).expect("forwarded");
    assert!(notes.is_empty(), "{notes:?}");
}
