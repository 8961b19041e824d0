//! LDAP messages (RFC 4511) as BER trees (lber's `StructureTag`): framing on the wire, and the
//! few fields the policies read and write. Anything else passes through as it came.

use bytes::BytesMut;
use lber::common::TagClass;
use lber::structure::{StructureTag, PL};

/// Protocol operations, by their APPLICATION tag.
pub mod op {
    pub const SEARCH_REQUEST: u64 = 3;
    pub const SEARCH_ENTRY: u64 = 4;
    pub const SEARCH_DONE: u64 = 5;
    pub const MODIFY_REQUEST: u64 = 6;
    pub const MODIFY_RESPONSE: u64 = 7;
    pub const ADD_REQUEST: u64 = 8;
    pub const ADD_RESPONSE: u64 = 9;
    pub const MODDN_RESPONSE: u64 = 13;
    pub const ABANDON_REQUEST: u64 = 16;
}

pub const PAGED_RESULTS: &str = "1.2.840.113556.1.4.319";

/// The length of the first BER element of `buf` when all of it has arrived (`Some(Err)` when
/// the header is not one LDAP uses: an indefinite or absurd length).
pub fn frame_len(buf: &[u8]) -> Option<Result<usize, String>> {
    let first = *buf.get(1)?;
    if first & 0x80 == 0 {
        return Some(Ok(2 + usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return Some(Err(format!("a BER length of {n} bytes")));
    }
    let bytes = buf.get(2..2 + n)?;
    Some(Ok(2 + n + bytes.iter().fold(0usize, |l, b| (l << 8) | usize::from(*b))))
}

/// One LDAPMessage: its id, its operation and its controls.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub id: i64,
    pub op: StructureTag,
    pub controls: Option<StructureTag>,
}

impl Message {
    pub fn parse(frame: &[u8]) -> Result<Message, String> {
        let (_, tag) = lber::parse::parse_tag(frame).map_err(|e| format!("not BER: {e:?}"))?;
        let mut parts = tag.expect_constructed().ok_or("an LDAPMessage is a SEQUENCE")?.into_iter();
        let id = parts.next().and_then(|t| t.expect_primitive()).map(|b| int(&b)).ok_or("no messageID")?;
        let op = parts.next().ok_or("no protocolOp")?;
        let controls = parts.next().filter(|c| c.class == TagClass::Context && c.id == 0);
        Ok(Message { id, op, controls })
    }

    pub fn encode(self) -> Vec<u8> {
        let mut parts = vec![integer(2, self.id)];
        parts.push(self.op);
        parts.extend(self.controls);
        let mut buf = BytesMut::new();
        let msg = StructureTag { class: TagClass::Universal, id: 16, payload: PL::C(parts) };
        // Writing into memory cannot fail.
        let _ = lber::write::encode_into(&mut buf, msg);
        buf.to_vec()
    }

    /// The operation's APPLICATION tag.
    pub fn kind(&self) -> Option<u64> {
        (self.op.class == TagClass::Application).then_some(self.op.id)
    }

    /// The parts of the operation (a constructed one).
    pub fn parts(&self) -> &[StructureTag] {
        match &self.op.payload {
            PL::C(parts) => parts,
            PL::P(_) => &[],
        }
    }

    pub fn parts_mut(&mut self) -> Option<&mut Vec<StructureTag>> {
        match &mut self.op.payload {
            PL::C(parts) => Some(parts),
            PL::P(_) => None,
        }
    }

    /// The control with this OID (a SEQUENCE of OID, criticality, value).
    pub fn control_mut(&mut self, oid: &str) -> Option<&mut StructureTag> {
        let PL::C(list) = &mut self.controls.as_mut()?.payload else { return None };
        list.iter_mut().find(|c| matches!(&c.payload, PL::C(p) if p.first().and_then(text).as_deref() == Some(oid)))
    }
}

/// A two's-complement big-endian INTEGER or ENUMERATED.
pub fn int(bytes: &[u8]) -> i64 {
    let neg = bytes.first().is_some_and(|b| b & 0x80 != 0);
    bytes.iter().fold(if neg { -1 } else { 0 }, |v, b| (v << 8) | i64::from(*b))
}

/// An INTEGER (universal 2) or ENUMERATED (universal 10) in its shortest form.
pub fn integer(id: u64, v: i64) -> StructureTag {
    let all = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (all[start], all[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    StructureTag { class: TagClass::Universal, id, payload: PL::P(all[start..].to_vec()) }
}

pub fn octets(bytes: impl Into<Vec<u8>>) -> StructureTag {
    StructureTag { class: TagClass::Universal, id: 4, payload: PL::P(bytes.into()) }
}

/// An OCTET STRING's text (LDAPString, LDAPDN, an attribute's description).
pub fn text(t: &StructureTag) -> Option<String> {
    match &t.payload {
        PL::P(b) => Some(String::from_utf8_lossy(b).into_owned()),
        PL::C(_) => None,
    }
}

/// An LDAPResult operation of `kind` (a response) with a code and Windows' diagnostic text.
pub fn result(kind: u64, code: i64, diagnostic: &str) -> StructureTag {
    StructureTag {
        class: TagClass::Application,
        id: kind,
        payload: PL::C(vec![integer(10, code), octets(Vec::new()), octets(diagnostic.as_bytes())]),
    }
}

/// The result code and diagnostic of an LDAPResult operation.
pub fn result_of(m: &Message) -> Option<(i64, String)> {
    let parts = m.parts();
    let code = match &parts.first()?.payload {
        PL::P(b) => int(b),
        PL::C(_) => return None,
    };
    Some((code, parts.get(2).and_then(text).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_in_their_shortest_form() {
        for v in [0, 1, 127, 128, 255, 256, 1000, 1500, -1, -128, -129, i64::from(i32::MAX)] {
            let t = integer(2, v);
            let PL::P(b) = &t.payload else { panic!("primitive") };
            assert_eq!(int(b), v, "{v}: {b:?}");
        }
        assert!(matches!(integer(2, 128).payload, PL::P(ref b) if b == &[0, 128]));
        assert!(matches!(integer(2, 1000).payload, PL::P(ref b) if b == &[3, 232]));
    }

    #[test]
    fn frames_are_cut_by_their_length() {
        assert_eq!(frame_len(&[0x30]), None);
        assert_eq!(frame_len(&[0x30, 5]), Some(Ok(7)));
        assert_eq!(frame_len(&[0x30, 0x82, 1]), None);
        assert_eq!(frame_len(&[0x30, 0x82, 1, 0]), Some(Ok(260)));
        assert!(frame_len(&[0x30, 0x80]).is_some_and(|r| r.is_err()));
        let done = Message { id: 7, op: result(op::SEARCH_DONE, 4, "x"), controls: None };
        let bytes = done.clone().encode();
        assert_eq!(frame_len(&bytes), Some(Ok(bytes.len())));
        assert_eq!(Message::parse(&bytes), Ok(done));
    }
}
