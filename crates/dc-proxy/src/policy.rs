//! What a Windows DC does where Samba does not, as pure rewrites of messages: the default LDAP
//! policies (KB 315071, "View and set LDAP policy in Active Directory by using Ntdsutil.exe":
//! MaxPageSize 1,000, MaxValRange 1,500, MaxQueryDuration 120 s), a 2012 R2 schema's missing
//! attributes, and Windows' result codes and extended error texts (the 8-hex Win32 code first;
//! facts-microsoft.md: parse the code, not the result code). The texts' DSIDs vary by build;
//! the Win32 codes are what a client can rely on.

use std::time::{Duration, Instant};

use lber::structure::{StructureTag, PL};

use crate::msg::{self, op, Message};

pub struct Policy {
    pub max_page_size: usize,
    pub max_val_range: usize,
    pub max_query: Duration,
    /// A slow DC, made deterministic for tests: an unpaged search runs out of MaxQueryDuration
    /// once it has returned this many entries (pages and small answers stay in time).
    pub slow_after: Option<usize>,
    /// Attributes the emulated schema lacks (lower case): a 2012 R2 schema has no
    /// msDS-ExternalDirectoryObjectId.
    pub hidden: Vec<String>,
    /// Attributes a write is refused for as unknown to the schema, while reads still show them
    /// (lower case): a DC that a schema extension made on another DC has not reached yet.
    pub refused: Vec<String>,
    /// rangeUpper per attribute (lower case), checked on every add and modify as Windows does
    /// (Samba checks some, and answers otherwise).
    pub range_upper: Vec<(String, usize)>,
}

/// Windows Server's rangeUpper for the attributes writeback writes (MS-ADA1/MS-ADA3; cn's
/// is checked through the RDN by writeback's naming and not here), in characters.
pub fn default_range_upper() -> Vec<(String, usize)> {
    [
        ("description", 1024),
        ("displayname", 256),
        ("samaccountname", 256),
        ("admindescription", 1024),
        ("info", 1024),
        ("mail", 256),
        ("mailnickname", 64),
        ("proxyaddresses", 1123),
        ("msds-externaldirectoryobjectid", 255),
    ]
    .into_iter()
    .map(|(a, n)| (a.to_string(), n))
    .collect()
}

/// A search in flight on one connection.
#[derive(Debug)]
pub struct Search {
    paged: bool,
    /// A base-scope search (one object).
    base: bool,
    sent: usize,
    cut: Option<Cut>,
    started: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// An unpaged search past MaxPageSize: sizeLimitExceeded (4).
    Size,
    /// A search past MaxQueryDuration: timeLimitExceeded (3).
    Time,
}

/// What the proxy did, for its log (the tests read it).
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    PageCut {
        asked: i64,
    },
    Ranged {
        attr: String,
        values: usize,
    },
    Cut(Cut),
    Hidden(String),
    Refused(String),
    /// The look-up behind a refusal could not be made (the refusal is skipped, and said).
    LookupFailed(String),
    Error {
        from: i64,
        to: i64,
        win32: String,
    },
}

/// Windows' refusals, as result code and diagnostic text (the Win32 code first).
pub mod windows {
    /// ERROR_DS_UNIVERSAL_CANT_HAVE_LOCAL_MEMBER (8518, 0x2146).
    pub const UNIVERSAL_LOCAL: (i64, &str) =
        (53, "00002146: SvcErr: DSID-031A1236, problem 5003 (WILL_NOT_PERFORM), data 0\n");
    /// ERROR_USER_EXISTS (1316, 0x524): a sAMAccountName already used in the domain.
    pub const ACCOUNT_EXISTS: (i64, &str) =
        (68, "00000524: UpdErr: DSID-031A11E0, problem 6005 (ENTRY_EXISTS), data 0\n");
    /// ERROR_DS_OBJ_STRING_NAME_EXISTS (8305, 0x2071): the DN is taken.
    pub const NAME_EXISTS: (i64, &str) = (68, "00002071: UpdErr: DSID-0305038D, problem 6005 (ENTRY_EXISTS), data 0\n");
    /// ERROR_MEMBER_IN_ALIAS (1378, 0x562): a member already there, entryAlreadyExists as
    /// reported from Windows DCs (not attributeOrValueExists).
    pub const MEMBER_IN_GROUP: (i64, &str) =
        (68, "00000562: UpdErr: DSID-031A11C4, problem 6005 (ENTRY_EXISTS), data 0\n");
    /// ERROR_MEMBER_NOT_IN_ALIAS (1377, 0x561): a member not there, unwillingToPerform.
    pub const MEMBER_NOT_IN_GROUP: (i64, &str) =
        (53, "00000561: SvcErr: DSID-031A124C, problem 5003 (WILL_NOT_PERFORM), data 0\n");
    /// ERROR_DS_RANGE_CONSTRAINT (8322, 0x2082): a value past the attribute's rangeUpper, with
    /// constraintViolation (MS-ADTS 3.1.1.5.2.2, as Microsoft's protocol test suite checks). AD
    /// names the attribute by its ATTRTYP and name; the ATTRTYP here is 0 (not emulated).
    pub fn range_constraint(attr: &str) -> (i64, String) {
        let dsid = "DSID-03151904";
        (
            19,
            format!(
                "00002082: AtrErr: {dsid}, #1:\n\t0: 00002082: {dsid}, problem 1005 (CONSTRAINT_ATT_TYPE), \
                 data 0, Att 0 ({attr})\n"
            ),
        )
    }
    /// An attribute the DC's schema does not have: Windows' LDAP front end cannot convert its name
    /// (Win32 0x57). The result code, 17 here, is UNCONFIRMED (16 in one report); writeback
    /// decides by the text.
    pub const NOT_IN_SCHEMA: (i64, &str) =
        (17, "00000057: LdapErr: DSID-0C090D8A, comment: Error in attribute conversion operation, data 0, v4563\n");
}

impl Policy {
    /// A request on its way to the DC: a page size past MaxPageSize is cut to it; a search is
    /// remembered until it is done. `Err` is Windows' answer instead of the DC's.
    pub fn request(&self, m: &mut Message, notes: &mut Vec<Note>) -> Result<Option<Search>, (i64, String)> {
        match m.kind() {
            Some(op::SEARCH_REQUEST) => {
                let paged = match m.control_mut(msg::PAGED_RESULTS) {
                    Some(c) => {
                        if let Some(asked) = cut_page_size(c, self.max_page_size) {
                            notes.push(Note::PageCut { asked });
                        }
                        true
                    }
                    None => false,
                };
                let base = matches!(m.parts().get(1).map(|s| &s.payload), Some(PL::P(b)) if msg::int(b) == 0);
                // SearchRequest: baseObject, scope, derefAliases, sizeLimit, timeLimit, typesOnly,
                // filter (the seventh).
                if let Some(filter) = m.parts_mut().and_then(|p| p.get_mut(6)) {
                    if hide_in_filter(filter, &self.hidden) {
                        notes.push(Note::Hidden("a filter".into()));
                    }
                }
                Ok(Some(Search { paged, base, sent: 0, cut: None, started: Instant::now() }))
            }
            Some(op::ADD_REQUEST | op::MODIFY_REQUEST) => {
                let written = written_attributes(m);
                let unknown = |a: &str| self.hidden.iter().chain(&self.refused).any(|h| *h == a.to_ascii_lowercase());
                if let Some((a, _)) = written.iter().find(|(a, _)| unknown(a)) {
                    notes.push(Note::Refused(format!("{a} is not in the schema")));
                    return Err((windows::NOT_IN_SCHEMA.0, windows::NOT_IN_SCHEMA.1.to_string()));
                }
                for (a, values) in &written {
                    let limit = self.range_upper.iter().find(|(r, _)| *r == a.to_ascii_lowercase()).map(|r| r.1);
                    let Some(limit) = limit else { continue };
                    if let Some(v) = values.iter().find(|v| v.encode_utf16().count() > limit) {
                        let chars = v.encode_utf16().count();
                        notes.push(Note::Refused(format!("{a}: {chars} characters, past its rangeUpper {limit}")));
                        return Err(windows::range_constraint(a));
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// A search entry on its way to the client; `None` drops it.
    pub fn entry(&self, mut m: Message, s: &mut Search, notes: &mut Vec<Note>) -> Option<Message> {
        self.check_time(s, notes);
        if s.cut.is_none() && !s.paged && s.sent >= self.max_page_size {
            s.cut = Some(Cut::Size);
            notes.push(Note::Cut(Cut::Size));
        }
        if s.cut.is_some() {
            return None;
        }
        let attrs = m.parts_mut().and_then(|p| p.get_mut(1)).and_then(|a| match &mut a.payload {
            PL::C(list) => Some(list),
            PL::P(_) => None,
        })?;
        if !self.hidden.is_empty() {
            if attrs.iter().any(|a| is_hidden_definition(a, &self.hidden)) {
                notes.push(Note::Hidden("a schema entry".into()));
                return None;
            }
            attrs
                .retain(|a| !description(a).is_some_and(|d| self.hidden.contains(&base_name(&d).to_ascii_lowercase())));
            for a in attrs.iter_mut() {
                if let Some(PL::C(vals)) = a.payload_values_mut() {
                    vals.retain(|v| !msg::text(v).is_some_and(|t| self.hidden.contains(&t.to_ascii_lowercase())));
                }
            }
        }
        for a in attrs.iter_mut() {
            if let Some((attr, values)) = range(a, self.max_val_range) {
                notes.push(Note::Ranged { attr, values });
            }
        }
        s.sent += 1;
        Some(m)
    }

    /// MaxQueryDuration: a search still running past it is cut.
    fn check_time(&self, s: &mut Search, notes: &mut Vec<Note>) {
        let late = match self.slow_after {
            Some(n) => !s.paged && !s.base && s.sent >= n,
            None => s.started.elapsed() > self.max_query,
        };
        if late && s.cut.is_none() {
            s.cut = Some(Cut::Time);
            notes.push(Note::Cut(Cut::Time));
        }
    }

    /// The end of a search: cut short as Windows would have cut it.
    pub fn done(&self, m: Message, s: &mut Search, notes: &mut Vec<Note>) -> Message {
        self.check_time(s, notes);
        match s.cut {
            Some(Cut::Size) => Message { op: msg::result(op::SEARCH_DONE, 4, ""), controls: None, ..m },
            Some(Cut::Time) => Message { op: msg::result(op::SEARCH_DONE, 3, ""), controls: None, ..m },
            None => m,
        }
    }

    /// A write's result: Samba's refusals in Windows' words (and codes where Windows differs).
    pub fn write_result(&self, m: Message, notes: &mut Vec<Note>) -> Message {
        let Some(kind @ (op::ADD_RESPONSE | op::MODIFY_RESPONSE | op::MODDN_RESPONSE)) = m.kind() else { return m };
        let Some((code, text)) = msg::result_of(&m) else { return m };
        let lower = text.to_ascii_lowercase();
        let windows = match code {
            68 if lower.contains("samaccountname") => windows::ACCOUNT_EXISTS,
            68 if lower.contains("attribute member already exists") => windows::MEMBER_IN_GROUP,
            68 => windows::NAME_EXISTS,
            53 if lower.contains("member")
                && (lower.contains("doesn't exist") || lower.contains("already deleted")) =>
            {
                windows::MEMBER_NOT_IN_GROUP
            }
            _ => return m,
        };
        notes.push(Note::Error { from: code, to: windows.0, win32: windows.1[..8].to_string() });
        Message { op: msg::result(kind, windows.0, windows.1), ..m }
    }
}

/// A filter item naming an attribute the schema lacks is Undefined on Windows, so it matches
/// nothing: it becomes `(!(objectClass=*))`. True when something was rewritten.
fn hide_in_filter(f: &mut StructureTag, hidden: &[String]) -> bool {
    use lber::common::TagClass;
    if hidden.is_empty() || f.class != TagClass::Context {
        return false;
    }
    let names = |t: &StructureTag| msg::text(t).is_some_and(|a| hidden.contains(&base_name(&a).to_ascii_lowercase()));
    let undefined = match (f.id, &mut f.payload) {
        // and, or, not: their parts.
        (0..=2, PL::C(parts)) => return parts.iter_mut().fold(false, |any, p| hide_in_filter(p, hidden) | any),
        // equality, substrings, >=, <=, approx: the attribute first.
        (3..=6 | 8, PL::C(parts)) => parts.first().is_some_and(names),
        // present: the attribute itself.
        (7, PL::P(_)) => names(f),
        // extensible match: its [2] type.
        (9, PL::C(parts)) => parts.iter().any(|p| p.id == 2 && names(p)),
        _ => false,
    };
    if undefined {
        let present = StructureTag { class: TagClass::Context, id: 7, payload: PL::P(b"objectClass".to_vec()) };
        *f = StructureTag { class: TagClass::Context, id: 2, payload: PL::C(vec![present]) };
    }
    undefined
}

/// Cuts a paged-results control's size to `max`; the size asked when it was larger.
fn cut_page_size(control: &mut StructureTag, max: usize) -> Option<i64> {
    // Control ::= SEQUENCE { controlType, criticality BOOLEAN DEFAULT FALSE, controlValue }:
    // the value is the last OCTET STRING after the OID.
    let PL::C(parts) = &mut control.payload else { return None };
    let value = parts.iter_mut().skip(1).rfind(|p| p.id == 4)?;
    let PL::P(bytes) = &value.payload else { return None };
    let (_, inner) = lber::parse::parse_tag(bytes).ok()?;
    let PL::C(mut fields) = inner.payload else { return None };
    let asked = match fields.first().map(|f| &f.payload) {
        Some(PL::P(b)) => msg::int(b),
        _ => return None,
    };
    if asked <= max as i64 {
        return None;
    }
    fields[0] = msg::integer(2, max as i64);
    let mut buf = bytes::BytesMut::new();
    let seq = StructureTag { class: lber::common::TagClass::Universal, id: 16, payload: PL::C(fields) };
    lber::write::encode_into(&mut buf, seq).ok()?;
    value.payload = PL::P(buf.to_vec());
    Some(asked)
}

/// The attributes an add or a modify writes, with the values it writes.
fn written_attributes(m: &Message) -> Vec<(String, Vec<String>)> {
    let parts = m.parts();
    let Some(list) = parts.get(1) else { return Vec::new() };
    let PL::C(items) = &list.payload else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| match (m.kind(), &item.payload) {
            // AddRequest: attributes are PartialAttribute { type, vals }.
            (Some(op::ADD_REQUEST), PL::C(_)) => Some(item),
            // ModifyRequest: change { operation, modification { type, vals } }.
            (_, PL::C(p)) => p.get(1),
            _ => None,
        })
        .filter_map(|a| {
            let PL::C(p) = &a.payload else { return None };
            let name = base_name(&msg::text(p.first()?)?).to_string();
            let values = match p.get(1).map(|v| &v.payload) {
                Some(PL::C(vals)) => vals.iter().filter_map(msg::text).collect(),
                _ => Vec::new(),
            };
            Some((name, values))
        })
        .collect()
}

/// An attribute's description (`member;range=0-1499`) from a PartialAttribute.
fn description(a: &StructureTag) -> Option<String> {
    match &a.payload {
        PL::C(p) => p.first().and_then(msg::text),
        PL::P(_) => None,
    }
}

fn base_name(description: &str) -> &str {
    description.split(';').next().unwrap_or(description)
}

/// The schema entry of an attribute the emulated schema lacks (its lDAPDisplayName).
fn is_hidden_definition(a: &StructureTag, hidden: &[String]) -> bool {
    let hidden_value = |v: &StructureTag| msg::text(v).is_some_and(|t| hidden.contains(&t.to_ascii_lowercase()));
    description(a).is_some_and(|d| d.eq_ignore_ascii_case("lDAPDisplayName"))
        && matches!(a.payload_values(), Some(PL::C(vals)) if vals.iter().any(hidden_value))
}

/// A multi-valued attribute past MaxValRange, cut to it and named as Windows names a range
/// (`member;range=0-1499`; from a range the client asked for, `member;range=1500-2999`).
fn range(a: &mut StructureTag, max: usize) -> Option<(String, usize)> {
    let PL::C(p) = &mut a.payload else { return None };
    let total = match p.get(1).map(|v| &v.payload) {
        Some(PL::C(vals)) if vals.len() > max => vals.len(),
        _ => return None,
    };
    let desc = p.first().and_then(msg::text)?;
    let mut options: Vec<&str> = desc.split(';').collect();
    let name = options.remove(0).to_string();
    let low: usize = options
        .iter()
        .find_map(|o| o.to_ascii_lowercase().strip_prefix("range=").and_then(|r| r.split('-').next()?.parse().ok()))
        .unwrap_or(0);
    options.retain(|o| !o.to_ascii_lowercase().starts_with("range="));
    let mut ranged = name.clone();
    for o in options {
        ranged.push(';');
        ranged.push_str(o);
    }
    ranged.push_str(&format!(";range={low}-{}", low + max - 1));
    p[0] = msg::octets(ranged.into_bytes());
    if let Some(PL::C(vals)) = p.get_mut(1).map(|v| &mut v.payload) {
        vals.truncate(max);
    }
    Some((name, total))
}

trait Values {
    fn payload_values(&self) -> Option<&PL>;
    fn payload_values_mut(&mut self) -> Option<&mut PL>;
}

impl Values for StructureTag {
    /// A PartialAttribute's SET of values.
    fn payload_values(&self) -> Option<&PL> {
        match &self.payload {
            PL::C(p) => p.get(1).map(|v| &v.payload),
            PL::P(_) => None,
        }
    }

    fn payload_values_mut(&mut self) -> Option<&mut PL> {
        match &mut self.payload {
            PL::C(p) => p.get_mut(1).map(|v| &mut v.payload),
            PL::P(_) => None,
        }
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
