//! What changed in the managed OUs since a USN, and which of it someone other than writeback
//! did: the AD side of a delta cycle's dirty set. Reading is here with the rule that reads it,
//! the rule itself is pure.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::{AdConn, AdError};

/// Owned groups changed (cloud id, `uSNChanged`) or deleted (tombstone objectGUID) at or after
/// a USN, on one DC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdChanges {
    pub changed: Vec<(String, u64)>,
    pub deleted: Vec<String>,
}

impl AdConn {
    /// The owned groups in `ous` changed, and the groups deleted anywhere, at or after `usn`.
    pub async fn changes_since(&mut self, ous: &[String], usn: u64) -> Result<AdChanges, AdError> {
        Ok(AdChanges {
            changed: self.owned_changed_since(ous, usn).await?,
            deleted: self.deleted_groups_since(usn).await?,
        })
    }
}

impl AdChanges {
    /// The owned groups someone else changed or deleted: changed ones whose `uSNChanged` is not
    /// the one writeback's last write left (`ours`), and deleted ones whose tombstone carries the
    /// objectGUID of a group writeback links (`links`: cloud id → objectGUID).
    pub fn by_others<'a>(
        &self,
        ours: &HashMap<String, u64>,
        links: impl Iterator<Item = (&'a String, &'a str)>,
    ) -> BTreeSet<String> {
        let deleted: HashSet<&str> = self.deleted.iter().map(String::as_str).collect();
        let mut out: BTreeSet<String> =
            self.changed.iter().filter(|(id, u)| ours.get(id) != Some(u)).map(|(id, _)| id.clone()).collect();
        out.extend(links.filter(|(_, guid)| deleted.contains(guid)).map(|(id, _)| id.clone()));
        out
    }

    /// The changes writeback made itself, of the groups it wrote this cycle (`written`).
    pub fn ours(&self, written: &BTreeSet<&str>) -> Vec<(String, u64)> {
        self.changed.iter().filter(|(id, _)| written.contains(id.as_str())).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_someone_else_did_is_drift() {
        let changes = AdChanges {
            changed: vec![("a".into(), 10), ("b".into(), 11), ("c".into(), 12)],
            deleted: vec!["guid-d".into(), "guid-unknown".into()],
        };
        // writeback's last write left a at 10 and b at 9 (someone wrote b since); c is new to it.
        let ours: HashMap<String, u64> = [("a".to_string(), 10), ("b".to_string(), 9)].into();
        let (d, e) = ("d".to_string(), "e".to_string());
        let links = [(&d, "guid-d"), (&e, "guid-e")];
        let drift = changes.by_others(&ours, links.into_iter());
        assert_eq!(drift, BTreeSet::from(["b".to_string(), "c".to_string(), "d".to_string()]));
        assert_eq!(changes.ours(&BTreeSet::from(["a", "z"])), vec![("a".to_string(), 10)]);
    }
}
