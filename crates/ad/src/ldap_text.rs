//! LDAP's text forms that only the AD side needs: RFC 4515 filter escaping, and objectSid's
//! bytes (MS-DTYP 2.4.2.2). The GUID forms stay in the core: the planner compares a cloud
//! user's `onPremisesImmutableId` (base64 of objectGUID bytes) with AD's objectGUID.

/// RFC 4515 escaping of a filter assertion value.
pub fn escape_filter(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 4515 escaping of binary data: every byte as `\hh`.
pub fn escape_filter_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// objectSid bytes (MS-DTYP 2.4.2.2) to `S-1-5-…`.
pub fn sid_from_bytes(b: &[u8]) -> Option<String> {
    let count = *b.get(1)? as usize;
    if b.first() != Some(&1) || b.len() != 8 + 4 * count {
        return None;
    }
    let auth = b[2..8].iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
    let mut s = format!("S-1-{auth}");
    for chunk in b[8..].chunks_exact(4) {
        let sub = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        s.push_str(&format!("-{sub}"));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_cannot_break_out_of_their_assertion() {
        assert_eq!(escape_filter("a*(b)\\"), "a\\2a\\28b\\29\\5c");
        let nasty = ["*", "(", ")", "\\", "\0", ")(objectClass=*", "*)(|(cn=*", "é😀\u{202e}"];
        for s in nasty.iter().flat_map(|a| nasty.iter().map(move |b| format!("x{a}{b}y"))) {
            let e = escape_filter(&s);
            assert!(!e.contains(['*', '(', ')', '\0']), "{s:?} → {e:?}");
            // Every backslash starts a two-digit hex escape.
            assert!(e
                .match_indices('\\')
                .all(|(i, _)| e.get(i + 1..i + 3).is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))));
        }
        assert_eq!(escape_filter_bytes(&[0x00, 0x2a, 0xff]), "\\00\\2a\\ff");
    }

    #[test]
    fn sid_bytes_to_text() {
        let sid = [1u8, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 32, 2, 0, 0];
        assert_eq!(sid_from_bytes(&sid).as_deref(), Some("S-1-5-32-544"));
        assert_eq!(sid_from_bytes(&sid[..12]), None, "a count that does not match the length");
        assert_eq!(sid_from_bytes(&[]), None);
    }
}
