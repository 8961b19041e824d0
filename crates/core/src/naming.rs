//! Names and identifiers as AD wants them: the `cn`, the `sAMAccountName`, RFC 4514 DN
//! escaping, RFC 4515 filter escaping, and the binary forms of objectGUID and objectSid.

use crate::config::CnFormat;

/// AD's `cn` rangeUpper, counted in UTF-16 code units as AD counts.
pub const CN_MAX: usize = 64;
/// Cloud Sync's display-name prefix length in the display-name cn format.
pub const CN_NAME_PREFIX: usize = 51;
/// `displayName` rangeUpper.
pub const DISPLAY_NAME_MAX: usize = 256;
/// Microsoft's truncation of `description`.
pub const DESCRIPTION_MAX: usize = 448;
/// Our cap on `sAMAccountName` (AD allows 256 for groups; 64 keeps tools happy).
pub const SAM_MAX: usize = 64;

/// The ownership marker value for a cloud group id.
pub fn marker(cloud_id: &str) -> String {
    format!("Group_{cloud_id}")
}

/// The cloud id inside a marker value, if it is one.
pub fn parse_marker(value: &str) -> Option<crate::CloudId> {
    let id = value.strip_prefix("Group_")?;
    is_guid(id).then(|| crate::CloudId::new(id))
}

/// True for the 8-4-4-4-12 hex form Graph uses for object ids.
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// The first `max` UTF-16 units of `s`, never splitting a character.
pub fn left_utf16(s: &str, max: usize) -> String {
    let mut n = 0;
    s.chars()
        .take_while(|c| {
            n += c.len_utf16();
            n <= max
        })
        .collect()
}

/// Replaces characters AD cannot hold in a string value (control characters) by `_`.
pub fn replace_controls(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '_' } else { c }).collect()
}

/// Text from the cloud made safe to print on a terminal: control characters (escape
/// sequences could rewrite the screen) and bidirectional overrides (they reorder what is
/// shown) become `�`.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if s.chars().any(bad) {
        std::borrow::Cow::Owned(s.chars().map(|c| if bad(c) { '\u{fffd}' } else { c }).collect())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// The `cn` for a group, per `[writeback] cn_format`. Always 1..=64 UTF-16 units.
pub fn cn_for(format: CnFormat, cloud_id: &str, display_name: &str) -> String {
    match format {
        CnFormat::ObjectId => marker(cloud_id),
        CnFormat::DisplayName => {
            let name = left_utf16(&replace_controls(display_name.trim()), CN_NAME_PREFIX);
            let tail_start = cloud_id.len().saturating_sub(12);
            let suffix = cloud_id.get(tail_start..).unwrap_or(cloud_id);
            let cn = format!("{name}_{suffix}");
            debug_assert!(utf16_len(&cn) <= CN_MAX);
            cn
        }
    }
}

/// A `cn` a mapping gives: trimmed, controls replaced; empty or over 64 units is refused.
pub fn mapped_cn(value: &str) -> Result<String, String> {
    let cn = replace_controls(value.trim());
    match utf16_len(&cn) {
        0 => Err("the mapping gives an empty cn".into()),
        n if n > CN_MAX => Err(format!("the mapping gives a cn of {n} characters; AD holds at most {CN_MAX}")),
        _ => Ok(cn),
    }
}

/// `sAMAccountName` from the cn: forbidden characters, controls and a trailing period become `_`.
pub fn sam_account_name(cn: &str) -> String {
    const FORBIDDEN: &[char] = &['"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>'];
    let mut s: String =
        cn.trim().chars().map(|c| if c.is_control() || FORBIDDEN.contains(&c) { '_' } else { c }).collect();
    s = left_utf16(&s, SAM_MAX);
    if s.ends_with('.') {
        s.pop();
        s.push('_');
    }
    s
}

/// `displayName` as written: controls replaced; over 256 units is an error for the object.
pub fn display_name(name: &str) -> Result<String, String> {
    let n = utf16_len(name);
    if n > DISPLAY_NAME_MAX {
        return Err(format!(
            "displayName is {n} characters long; AD holds at most {DISPLAY_NAME_MAX} \
                (Graph should never send this: check the group in Entra)"
        ));
    }
    Ok(replace_controls(name))
}

/// `description` as written: `Left(Trim(description), 448)`, controls replaced; `None` when empty.
pub fn description(desc: Option<&str>) -> Option<String> {
    let d = left_utf16(&replace_controls(desc?.trim()), DESCRIPTION_MAX);
    let d = d.trim_end().to_string();
    (!d.is_empty()).then_some(d)
}

/// RFC 4514 escaping of an attribute value for use in an RDN.
pub fn escape_rdn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape_rdn_value`] (and any RFC 4514 `\hh` escapes a server may use).
pub fn unescape_rdn_value(value: &str) -> String {
    let mut bytes = Vec::with_capacity(value.len());
    let raw = value.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            // Exactly two hex digits (from_str_radix alone would take "+0").
            let hex = raw
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                bytes.push(b);
                i += 3;
            } else {
                bytes.push(raw[i + 1]);
                i += 2;
            }
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A mail address AD can hold in `mail`: no controls or spaces, one `@`, at most 256 characters.
pub fn valid_mail(s: &str) -> bool {
    s.len() <= 256
        && s.matches('@').count() == 1
        && !s.starts_with('@')
        && !s.ends_with('@')
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// A `proxyAddresses` value: `type:address`, no controls, at most 1123 characters (rangeUpper).
pub fn valid_proxy_address(s: &str) -> bool {
    s.encode_utf16().count() <= 1123
        && !s.chars().any(char::is_control)
        && s.split_once(':').is_some_and(|(t, a)| !t.is_empty() && !a.trim().is_empty())
}

/// A proxy address's type (`SMTP`, `smtp`, `X500`, `SPO` …): what is before the first colon.
pub fn proxy_type(s: &str) -> Option<&str> {
    s.split_once(':').map(|(t, _)| t.trim()).filter(|t| !t.is_empty())
}

/// A `mailNickname`: no controls or spaces, at most 64 characters.
pub fn valid_nickname(s: &str) -> bool {
    !s.is_empty() && s.encode_utf16().count() <= 64 && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// The DN of a group with this `cn` under `parent`.
pub fn group_dn(cn: &str, parent: &str) -> String {
    format!("CN={},{}", escape_rdn_value(cn), parent)
}

/// Splits a DN into its first RDN and the parent DN, honouring escapes.
pub fn split_dn(dn: &str) -> (&str, &str) {
    let b = dn.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b',' => return (&dn[..i], dn[i + 1..].trim_start()),
            _ => i += 1,
        }
    }
    (dn, "")
}

/// One RDN of a parsed DN: its (attribute type, value) pairs, both case-folded, values
/// unescaped (bytes: an escape may name any), sorted (a multi-valued RDN is a set).
type Rdn = Vec<(String, Vec<u8>)>;

/// A DN parsed per RFC 4514 into its RDNs, most specific first; `None` when it is malformed.
/// Escapes (`\,`, `\2C`, …) are resolved, so an escaped comma is part of a value and never a
/// separator, and two spellings of one DN parse the same.
pub fn parse_dn(dn: &str) -> Option<Vec<Rdn>> {
    let mut rdns = Vec::new();
    if dn.trim().is_empty() {
        return Some(rdns);
    }
    let mut rdn: Rdn = Vec::new();
    let (mut ty, mut value): (String, Vec<u8>) = (String::new(), Vec::new());
    let mut in_value = false;
    // Spaces at the end of a value are dropped unless escaped: how many of the value's last
    // bytes are unescaped spaces.
    let mut trailing = 0usize;
    let b = dn.as_bytes();
    let mut i = 0;
    let finish = |ty: &mut String, value: &mut Vec<u8>, trailing: &mut usize, rdn: &mut Rdn| -> Option<()> {
        value.truncate(value.len() - *trailing);
        let t = ty.trim().to_ascii_lowercase();
        if t.is_empty() {
            return None;
        }
        // Case-folded when it is text; bytes that are not UTF-8 are kept as they are (they can
        // equal no text, and stay apart from each other).
        let v = match std::str::from_utf8(value) {
            Ok(text) => text.to_lowercase().into_bytes(),
            Err(_) => value.clone(),
        };
        rdn.push((t, v));
        ty.clear();
        value.clear();
        *trailing = 0;
        Some(())
    };
    while i < b.len() {
        let c = b[i];
        if !in_value {
            match c {
                b'=' => in_value = true,
                b',' | b'+' | b'\\' => return None,
                _ => ty.push(c as char),
            }
            i += 1;
            continue;
        }
        match c {
            b'\\' => {
                let hex = b.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
                match hex.and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        value.push(byte);
                        i += 3;
                    }
                    None => {
                        value.push(*b.get(i + 1)?);
                        i += 2;
                    }
                }
                trailing = 0;
            }
            b',' | b';' | b'+' => {
                finish(&mut ty, &mut value, &mut trailing, &mut rdn)?;
                in_value = false;
                if c != b'+' {
                    rdn.sort();
                    rdns.push(std::mem::take(&mut rdn));
                }
                i += 1;
            }
            b' ' if value.is_empty() => i += 1, // spaces after '='
            b' ' => {
                value.push(c);
                trailing += 1;
                i += 1;
            }
            _ => {
                value.push(c);
                trailing = 0;
                i += 1;
            }
        }
    }
    if !in_value {
        return None;
    }
    finish(&mut ty, &mut value, &mut trailing, &mut rdn)?;
    rdn.sort();
    rdns.push(rdn);
    Some(rdns)
}

/// A DN in a form fit for comparison: parsed and written out again, case-folded, escaped one
/// way. A DN that does not parse is only case-folded (it then equals nothing well-formed).
pub fn normalize_dn(dn: &str) -> String {
    match parse_dn(dn) {
        Some(rdns) => rdns
            .iter()
            .map(|rdn| rdn.iter().map(|(t, v)| format!("{t}={}", rdn_text(v))).collect::<Vec<_>>().join("+"))
            .collect::<Vec<_>>()
            .join(","),
        None => dn.to_lowercase(),
    }
}

/// A parsed RDN value written out: escaped text, or every byte as `\hh` when it is not UTF-8.
fn rdn_text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(text) => escape_rdn_value(text),
        Err(_) => v.iter().map(|b| format!("\\{b:02x}")).collect(),
    }
}

/// True when `dn` is `ou` or lies beneath it, comparing parsed RDNs (an escaped comma in a
/// value cannot fake a parent). A DN that does not parse is within nothing.
pub fn dn_is_within(dn: &str, ou: &str) -> bool {
    match (parse_dn(dn), parse_dn(ou)) {
        (Some(d), Some(o)) => !o.is_empty() && d.len() >= o.len() && d[d.len() - o.len()..] == o[..],
        _ => false,
    }
}

/// The objectGUID in an extended-DN value (`<GUID=…>;<SID=…>;DN`), lower-case.
pub fn extended_dn_guid(v: &str) -> Option<String> {
    let rest = v.strip_prefix("<GUID=")?;
    rest.split_once('>').map(|(g, _)| g.to_ascii_lowercase())
}

/// objectGUID bytes (Data1..3 little-endian) to the usual string form, lowercase.
pub fn guid_from_bytes(b: &[u8]) -> Option<String> {
    if b.len() != 16 {
        return None;
    }
    Some(format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    ))
}

/// The string form of a GUID back to objectGUID bytes.
pub fn guid_to_bytes(s: &str) -> Option<[u8; 16]> {
    if !is_guid(s) {
        return None;
    }
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut raw = [0u8; 16];
    for (i, slot) in raw.iter_mut().enumerate() {
        *slot = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    let mut b = raw;
    b[..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    b[4..6].copy_from_slice(&[raw[5], raw[4]]);
    b[6..8].copy_from_slice(&[raw[7], raw[6]]);
    Some(b)
}

/// Graph's `onPremisesImmutableId` (base64 of the objectGUID bytes) to the GUID string.
pub fn guid_from_immutable_id(immutable_id: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(immutable_id.trim()).ok()?;
    guid_from_bytes(&bytes)
}

/// True for a well-formed string SID.
pub fn is_sid(s: &str) -> bool {
    let mut parts = s.split('-');
    parts.next() == Some("S") && parts.next() == Some("1") && {
        let rest: Vec<&str> = parts.collect();
        !rest.is_empty() && rest.len() <= 16 && rest.iter().all(|p| !p.is_empty() && p.parse::<u64>().is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdn_escaping_covers_rfc4514_specials() {
        let cases = [
            (",+\"\\<>;=", "\\,\\+\\\"\\\\\\<\\>\\;\\="),
            ("#lead", "\\#lead"),
            ("mid#dle", "mid#dle"),
            (" lead and trail ", "\\ lead and trail\\ "),
            ("a\u{1}b", "a\\01b"),
            ("Équipe ☃", "Équipe ☃"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_rdn_value(input), want, "{input:?}");
            assert_eq!(unescape_rdn_value(&escape_rdn_value(input)), input);
        }
    }

    #[test]
    fn cn_formats() {
        let id = "3a5c3221-c465-48c0-95b8-e9305786a271";
        assert_eq!(cn_for(CnFormat::ObjectId, id, "Sales"), "Group_3a5c3221-c465-48c0-95b8-e9305786a271");
        assert_eq!(cn_for(CnFormat::DisplayName, id, "  Sales  "), "Sales_e9305786a271");
        let long = "x".repeat(300);
        let cn = cn_for(CnFormat::DisplayName, id, &long);
        assert_eq!(cn.chars().count(), 64);
        // Characters outside the BMP count twice and are never split.
        let emoji = "😀".repeat(40);
        let cn = cn_for(CnFormat::DisplayName, id, &emoji);
        assert!(utf16_len(&cn) <= 64);
        assert_eq!(cn, format!("{}_e9305786a271", "😀".repeat(25)));
    }

    #[test]
    fn sam_account_name_replaces_forbidden_characters() {
        assert_eq!(sam_account_name("a\"/\\[]:;|=,+*?<>b"), "a_______________b");
        assert_eq!(sam_account_name("ends."), "ends_");
        assert_eq!(sam_account_name("tab\there"), "tab_here");
        assert_eq!(sam_account_name(&"y".repeat(80)).len(), 64);
    }

    #[test]
    fn guid_round_trip_and_sid_form() {
        let g = "3a5c3221-c465-48c0-95b8-e9305786a271";
        let b = guid_to_bytes(g).expect("valid guid");
        assert_eq!(b[0], 0x21);
        assert_eq!(guid_from_bytes(&b).as_deref(), Some(g));
        use base64::Engine;
        let imm = base64::engine::general_purpose::STANDARD.encode(b);
        assert_eq!(guid_from_immutable_id(&imm).as_deref(), Some(g));
        assert!(is_sid("S-1-5-21-1-2-3-1104"));
        assert!(!is_sid("S-1-5-x"));
    }

    #[test]
    fn dns_compare_by_parsed_rdns() {
        let ou = "OU=Groups,DC=corp,DC=test";
        assert!(dn_is_within("CN=g,OU=Groups, DC=corp,DC=test", "ou=groups,dc=corp,dc=test"));
        assert!(dn_is_within(ou, ou));
        // An escaped comma is part of a value: this object sits in DC=corp,DC=test, not in the OU.
        for fake in [
            "CN=evil\\,OU=Groups,DC=corp,DC=test",
            "CN=evil\\2cOU=Groups,DC=corp,DC=test",
            "CN=evil\\2C OU=Groups,DC=corp,DC=test",
        ] {
            assert_eq!(parse_dn(fake).map(|r| r.len()), Some(3), "{fake}");
            assert!(!dn_is_within(fake, ou), "{fake}");
        }
        assert!(!dn_is_within("CN=g,OU=NotGroups,DC=corp,DC=test", ou));
        assert!(!dn_is_within("CN=g,OU=Groups2,DC=corp,DC=test", ou));
        assert!(dn_is_within("CN=a\\,b,OU=Groups,DC=corp,DC=test", ou), "an escaped comma in the leaf");
        // Spellings of one DN: hex escapes, case, spaces around separators, RDN order of a multi-valued RDN.
        assert_eq!(normalize_dn("CN=A\\2Cb , OU=Groups"), normalize_dn("cn=a\\,B,ou=groups"));
        assert_eq!(normalize_dn("CN=x+UID=y,DC=t"), normalize_dn("uid=y+cn=x,dc=t"));
        assert_ne!(normalize_dn("CN=x\\ ,DC=t"), normalize_dn("CN=x,DC=t"), "an escaped trailing space counts");
        for bad in ["CN", "=x", "CN=x,", "CN=x\\"] {
            assert!(parse_dn(bad).is_none(), "{bad}");
            assert!(!dn_is_within(bad, ou));
        }
        assert!(!dn_is_within(ou, ""), "within no OU");
        assert_ne!(normalize_dn("OU=\\FE,DC=t"), normalize_dn("OU=\\FF,DC=t"), "bytes that are not UTF-8 stay apart");
    }

    #[test]
    fn dn_helpers() {
        assert_eq!(split_dn("CN=a\\,b,OU=x,DC=y"), ("CN=a\\,b", "OU=x,DC=y"));
        assert!(dn_is_within("CN=g,OU=Groups, DC=corp,DC=test", "ou=groups,dc=corp,dc=test"));
        assert!(!dn_is_within("CN=g,OU=Other,DC=corp,DC=test", "OU=Groups,DC=corp,DC=test"));
        assert_eq!(
            parse_marker("Group_3A5C3221-C465-48C0-95B8-E9305786A271").as_deref(),
            Some("3a5c3221-c465-48c0-95b8-e9305786a271")
        );
        assert_eq!(parse_marker("Group_nope"), None);
    }
}
