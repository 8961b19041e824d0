//! writeback-ad: Active Directory over LDAP with TLS.
//!
//! Architecture invariants: this crate is the only one that speaks LDAP. It never binds
//! without TLS (ldaps://, or ldap:// with StartTLS), never turns certificate checks off,
//! and refuses to write outside the managed OUs or to delete an object without our marker.

mod apply;
mod changes;
mod conn;
mod guard;
mod ldap_text;
mod preflight;
mod read;
mod search;

pub use apply::{ApplyReport, OpOutcome};
pub use changes::AdChanges;
pub use conn::{AdConfig, AdConn, Auth, WriteGate};
pub use preflight::{preflight, Preflight};

use writeback_core::ObjectGuid;

/// The bind password.
pub type Password = writeback_core::Secret;

#[derive(Debug, thiserror::Error)]
pub enum AdError {
    #[error("AD configuration: {0}")]
    Config(String),
    #[error("could not connect to AD: {0}")]
    Connect(String),
    #[error("AD refused the bind: {0}")]
    Bind(String),
    /// The DC's certificate is not trusted (or names another host): retrying will not help.
    #[error("the DC's certificate is not trusted: {0}")]
    Tls(String),
    #[error("AD {op} failed: {message}")]
    Ldap { op: String, rc: u32, message: String },
}

impl AdError {
    pub(crate) fn ldap(op: impl Into<String>, e: ldap3::LdapError) -> AdError {
        match e {
            ldap3::LdapError::LdapResult { result } => {
                AdError::Ldap { op: op.into(), rc: result.rc, message: describe(result.rc, &result.text) }
            }
            other => AdError::Connect(format!("{}: {other}", op.into())),
        }
    }
}

/// A search under a managed OU failed; "no such object" means the OU is missing.
pub(crate) fn missing_ou(ou: &str, e: ldap3::LdapError) -> AdError {
    match e {
        ldap3::LdapError::LdapResult { result } if result.rc == 32 => {
            AdError::Config(format!("the OU {ou} does not exist: create it, or correct [ad] target_ou"))
        }
        other => AdError::ldap(format!("searching {ou}"), other),
    }
}

/// The Win32 error code AD puts first in its diagnostic text (`00002146: SvcErr: …`): what a
/// client can rely on, where result codes differ between Windows and Samba
/// (facts-microsoft.md). Samba writes some without the colon (`00002071 samldb: …`).
pub(crate) fn win32_code(text: &str) -> Option<u32> {
    let hex = text.trim_start().get(..8)?;
    hex.bytes().all(|b| b.is_ascii_hexdigit()).then(|| u32::from_str_radix(hex, 16).ok()).flatten()
}

/// ERROR_DS_UNIVERSAL_CANT_HAVE_LOCAL_MEMBER, 8518.
pub(crate) const WIN32_UNIVERSAL_LOCAL: u32 = 0x2146;
/// ERROR_USER_EXISTS, 1316: Windows' answer to a sAMAccountName already in use.
pub(crate) const WIN32_ACCOUNT_EXISTS: u32 = 0x524;

/// ERROR_DS_RANGE_CONSTRAINT, 8322: a value past the attribute's rangeUpper, with
/// constraintViolation (MS-ADTS 3.1.1.5.2.2; Microsoft's protocol test suite checks it).
pub(crate) const WIN32_RANGE_CONSTRAINT: u32 = 0x2082;
/// Windows' LDAP front end cannot map a name or value to the schema ("Error in attribute
/// conversion operation", Win32 0x57): an attribute this DC's schema does not have. The result code
/// it comes with (17, or 16 in one report) is UNCONFIRMED, so the text decides.
const ATTRIBUTE_CONVERSION: &str = "error in attribute conversion operation";

/// An LDAP result code and AD's diagnostic text as a sentence.
pub(crate) fn describe(rc: u32, text: &str) -> String {
    let text = text.trim_end_matches('\0').trim();
    if win32_code(text) == Some(WIN32_UNIVERSAL_LOCAL) {
        return format!(
            "{} (AD error 8518): the member is a domain-local group; change its scope in AD or remove it from \
             the cloud group",
            writeback_core::planner::UNIVERSAL_CANT_HAVE_LOCAL
        );
    }
    if rc == 19 && win32_code(text) == Some(WIN32_RANGE_CONSTRAINT) {
        let attr = problem_attribute(text).unwrap_or("an attribute");
        return format!(
            "the DC refused a value of {attr} as longer than its schema allows (AD error 8322, rangeUpper): \
             shorten it in Entra, or compare {attr}'s rangeUpper in this DC's schema with Windows' default \
             (LDAP 19: {text})"
        );
    }
    if rc == 17 || (rc == 16 && text.to_ascii_lowercase().contains(ATTRIBUTE_CONVERSION)) {
        return format!(
            "the DC's schema lacks an attribute writeback wrote (LDAP {rc}: {text}); if the schema was extended \
             recently, wait until the change has replicated to this DC; `writeback check` shows the schema \
             writeback found"
        );
    }
    let name = match rc {
        3 => "time limit exceeded (the DC's MaxQueryDuration, 120 s by default)",
        4 => "size limit exceeded (the DC's MaxPageSize)",
        16 => "no such attribute",
        19 => "constraint violation (a value longer or larger than the attribute allows)",
        20 => "attribute or value exists",
        21 => "invalid attribute syntax",
        32 => "no such object",
        34 => "invalid DN syntax",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        53 => "unwilling to perform",
        64 => "naming violation",
        65 => "object class violation",
        68 => "entry already exists",
        _ => "LDAP error",
    };
    if text.is_empty() {
        format!("{name} (LDAP {rc})")
    } else {
        format!("{name} (LDAP {rc}): {text}")
    }
}

/// The attribute AD names in an attribute error: `…, Att 2000d (displayName)`.
fn problem_attribute(text: &str) -> Option<&str> {
    let rest = &text[text.find(", Att ")? + 6..];
    let name = &rest[rest.find('(')? + 1..];
    Some(&name[..name.find(')')?]).filter(|n| !n.is_empty())
}

/// Splits a value in extended DN form, `<GUID=…>;<SID=…>;DN`, into (guid, sid, dn).
pub(crate) fn parse_extended_dn(v: &str) -> (Option<ObjectGuid>, Option<String>, String) {
    let mut rest = v;
    let (mut guid, mut sid) = (None, None);
    while let Some(stripped) = rest.strip_prefix('<') {
        let Some(end) = stripped.find('>') else { break };
        let part = &stripped[..end];
        if let Some(g) = part.strip_prefix("GUID=") {
            guid = Some(ObjectGuid::new(g));
        } else if let Some(s) = part.strip_prefix("SID=") {
            sid = Some(s.to_string());
        }
        rest = stripped[end + 1..].strip_prefix(';').unwrap_or(&stripped[end + 1..]);
    }
    (guid, sid, rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win32_codes_are_read_from_windows_and_samba_texts() {
        assert_eq!(
            win32_code("00002146: SvcErr: DSID-031A1236, problem 5003 (WILL_NOT_PERFORM), data 0\n"),
            Some(0x2146)
        );
        assert_eq!(win32_code("00000524: UpdErr: DSID-031A11E0, problem 6005 (ENTRY_EXISTS), data 0"), Some(0x524));
        assert_eq!(win32_code("00002071 samldb: samAccountName 'x' already in use"), Some(0x2071));
        assert_eq!(win32_code("Entry CN=x already exists"), None);
        assert!(describe(53, "00002146: SvcErr: DSID-031A1236").starts_with("A universal group cannot have a local"));
    }

    #[test]
    fn extended_dn_forms() {
        let (g, s, dn) = parse_extended_dn(
            "<GUID=F18A71E1-76e4-4eb0-82b0-d8c4502cff42>;<SID=S-1-5-21-1-2-3-1102>;CN=u1,OU=probe,DC=corp",
        );
        assert_eq!(g.as_deref(), Some("f18a71e1-76e4-4eb0-82b0-d8c4502cff42"));
        assert_eq!(s.as_deref(), Some("S-1-5-21-1-2-3-1102"));
        assert_eq!(dn, "CN=u1,OU=probe,DC=corp");
        let (g, s, dn) = parse_extended_dn("<GUID=abc>;CN=contact,DC=x");
        assert_eq!((g.as_deref(), s, dn.as_str()), (Some("abc"), None, "CN=contact,DC=x"));
        assert_eq!(parse_extended_dn("CN=plain,DC=x").2, "CN=plain,DC=x");
    }

    #[test]
    fn windows_nesting_error_is_named() {
        let said = describe(53, "00002146: SvcErr: DSID-031A1254");
        assert!(
            said.starts_with(writeback_core::planner::UNIVERSAL_CANT_HAVE_LOCAL) && said.contains("change its scope")
        );
        assert!(describe(68, "").contains("already exists"));
    }

    #[test]
    fn windows_schema_refusals_say_what_to_do() {
        let long = describe(
            19,
            "00002082: AtrErr: DSID-03151904, #1:\n\t0: 00002082: DSID-03151904, problem 1005 \
             (CONSTRAINT_ATT_TYPE), data 0, Att d (description)\n",
        );
        assert!(long.starts_with("the DC refused a value of description as longer"), "{long}");
        assert!(long.contains("shorten it in Entra"), "{long}");
        let missing = "00000057: LdapErr: DSID-0C090D8A, comment: Error in attribute conversion operation, data 0";
        for rc in [16, 17] {
            assert!(describe(rc, missing).starts_with("the DC's schema lacks an attribute"), "{rc}");
        }
        // A value AD could not convert is not a missing attribute.
        assert!(describe(21, missing).starts_with("invalid attribute syntax"));
        assert!(describe(16, "").starts_with("no such attribute"));
    }
}
