//! What changed in the managed OUs since a USN, and which of it someone other than writeback
//! did: the AD side of a delta cycle's dirty set. Reading is here with the rule that reads it,
//! the rule itself is pure.

use std::collections::{BTreeSet, HashMap, HashSet};

use writeback_core::{CloudId, ObjectGuid};

use crate::{AdConn, AdError};

/// Owned groups changed (cloud id, `uSNChanged`) or deleted (tombstone objectGUID) at or after
/// a USN, on one DC.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdChanges {
    pub changed: Vec<(CloudId, u64)>,
    pub deleted: Vec<ObjectGuid>,
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
        ours: &HashMap<CloudId, u64>,
        links: impl Iterator<Item = (&'a CloudId, &'a ObjectGuid)>,
    ) -> BTreeSet<CloudId> {
        let deleted: HashSet<&ObjectGuid> = self.deleted.iter().collect();
        let mut out: BTreeSet<CloudId> =
            self.changed.iter().filter(|(id, u)| ours.get(id) != Some(u)).map(|(id, _)| id.clone()).collect();
        out.extend(links.filter(|(_, guid)| deleted.contains(guid)).map(|(id, _)| id.clone()));
        out
    }

    /// The changes writeback made itself, of the groups it wrote this cycle (`written`).
    pub fn ours(&self, written: &BTreeSet<&CloudId>) -> Vec<(CloudId, u64)> {
        self.changed.iter().filter(|(id, _)| written.contains(id)).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_someone_else_did_is_drift() {
        let id = CloudId::new;
        let changes = AdChanges {
            changed: vec![(id("a"), 10), (id("b"), 11), (id("c"), 12)],
            deleted: vec!["guid-d".into(), "guid-unknown".into()],
        };
        // writeback's last write left a at 10 and b at 9 (someone wrote b since); c is new to it.
        let ours: HashMap<CloudId, u64> = [(id("a"), 10), (id("b"), 9)].into();
        let (d, e) = (id("d"), id("e"));
        let (gd, ge) = (ObjectGuid::new("GUID-D"), ObjectGuid::new("guid-e"));
        let links = [(&d, &gd), (&e, &ge)];
        let drift = changes.by_others(&ours, links.into_iter());
        assert_eq!(drift, BTreeSet::from([id("b"), id("c"), id("d")]), "GUIDs compare without regard to case");
        let (a, z) = (id("a"), id("z"));
        assert_eq!(changes.ours(&BTreeSet::from([&a, &z])), vec![(id("a"), 10)]);
    }
}
