//! Reading an MIT keytab (format 0x0502, as `ktutil`, `samba-tool domain exportkeytab` and
//! `ktpass` write it) far enough to name its principals: `check` says who writeback binds as,
//! and a keytab that holds nothing is a configuration error, not a puzzling Kerberos failure.

use std::ops::Range;

/// One key of a keytab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeytabEntry {
    /// `name/instance@REALM`.
    pub principal: String,
    pub enctype: u16,
    /// Where the key's bytes are in the file.
    pub key: Range<usize>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<Range<usize>, String> {
        let start = self.pos;
        let end = start.checked_add(n).filter(|&e| e <= self.end).ok_or("the keytab is truncated")?;
        self.pos = end;
        Ok(start..end)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let r = self.take(2)?;
        Ok(u16::from_be_bytes([self.bytes[r.start], self.bytes[r.start + 1]]))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = usize::from(self.u16()?);
        Ok(String::from_utf8_lossy(&self.bytes[self.take(n)?]).into_owned())
    }
}

/// The entries of a keytab file's bytes, or what is wrong with it.
pub fn entries(bytes: &[u8]) -> Result<Vec<KeytabEntry>, String> {
    if bytes.get(..2) != Some(&[5, 2]) {
        return Err("not an MIT keytab (version 0x0502)".into());
    }
    let mut out = Vec::new();
    let mut pos = 2;
    while pos + 4 <= bytes.len() {
        let size = i32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
        let start = pos + 4;
        let end = start.checked_add(size.unsigned_abs() as usize).filter(|&e| e <= bytes.len());
        let end = end.ok_or("the keytab is truncated")?;
        pos = end;
        if size <= 0 {
            continue; // a hole where an entry was removed
        }
        let mut r = Reader { bytes, pos: start, end };
        let components = r.u16()?;
        let realm = r.string()?;
        let names = (0..components).map(|_| r.string()).collect::<Result<Vec<_>, _>>()?;
        r.take(4 + 4 + 1)?; // name type, timestamp, key version
        let enctype = r.u16()?;
        let len = usize::from(r.u16()?);
        let key = r.take(len)?;
        out.push(KeytabEntry { principal: format!("{}@{realm}", names.join("/")), enctype, key });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str], realm: &str, enctype: u16, key: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend((names.len() as u16).to_be_bytes());
        for s in std::iter::once(&realm).chain(names) {
            e.extend((s.len() as u16).to_be_bytes());
            e.extend(s.as_bytes());
        }
        e.extend(1u32.to_be_bytes()); // KRB5_NT_PRINCIPAL
        e.extend(0u32.to_be_bytes());
        e.push(2);
        e.extend(enctype.to_be_bytes());
        e.extend((key.len() as u16).to_be_bytes());
        e.extend(key);
        e.extend(2u32.to_be_bytes()); // the 32-bit key version MIT appends
        let mut out = (e.len() as i32).to_be_bytes().to_vec();
        out.extend(e);
        out
    }

    #[test]
    fn names_every_principal_and_finds_the_keys() {
        let mut kt = vec![5, 2];
        kt.extend(entry(&["svc-writeback"], "CORP.EXAMPLE.COM", 18, &[7; 32]));
        kt.extend((-12i32).to_be_bytes());
        kt.extend([0; 12]);
        kt.extend(entry(&["ldap", "dc1.corp.example.com"], "CORP.EXAMPLE.COM", 17, &[9; 16]));
        let e = entries(&kt).expect("valid");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].principal, "svc-writeback@CORP.EXAMPLE.COM");
        assert_eq!(e[1].principal, "ldap/dc1.corp.example.com@CORP.EXAMPLE.COM");
        assert_eq!((e[0].enctype, e[1].enctype), (18, 17));
        assert_eq!(&kt[e[0].key.clone()], &[7; 32]);
        assert_eq!(&kt[e[1].key.clone()], &[9; 16]);
    }

    #[test]
    fn damaged_files_are_errors() {
        assert!(entries(b"").is_err());
        assert!(entries(b"\x05\x01").is_err());
        let mut kt = vec![5, 2];
        kt.extend(entry(&["svc"], "R", 18, &[1; 32]));
        kt.truncate(kt.len() - 10);
        assert!(entries(&kt).is_err());
        let mut lying = vec![5, 2];
        lying.extend(100i32.to_be_bytes());
        lying.extend([0, 9, 0, 200]);
        assert!(entries(&lying).is_err());
    }
}
