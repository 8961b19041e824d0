//! What a delta round says is checked before it is acted on. Graph's documentation warns that
//! the same object can come more than once and in any order, that `@removed` "might include" a
//! reason, and that reads right after a change can lag it (delta-query-overview.md, "processing
//! delays"; group-get.md: "replication delays for groups that were recently created, updated, or
//! deleted"). So a delta cycle reads every group the round names; a removal counts only once
//! Graph cannot find the group and its recycle bin says where it went; a group not found yet, or
//! whose members are older than what the round said, is looked at again by the next cycles
//! (`Watermarks::pending`, bounded); and a delete in AD never follows from one unconfirmed entry.

use std::collections::{BTreeMap, BTreeSet};

use writeback_core::{CloudObject, MemberRead};
use writeback_graph::{DeltaRound, GraphClient, Removed};
use writeback_store::Pending;

/// Cycles a group is put off at most; after that it waits for the next full cycle.
pub const MAX_ATTEMPTS: u32 = 10;
/// Cycles a read whose members disagree with the delta is put off at most; then it is taken
/// as it is (a replayed entry can say something no read will ever show).
const MAX_STALE: u32 = 3;

/// What became of a group Graph no longer finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// In the recycle bin: soft-deleted.
    Soft,
    /// Neither found nor in the recycle bin, and confirmed: deleted for good.
    Gone,
    /// Not settled: looked at again next cycle.
    Later,
}

/// The verdict on a group `GET` did not find. `in_bin`: whether the recycle bin has it (`None`:
/// that read failed). `reasons`: what this round's delta said of it; `before`: what earlier
/// cycles noted. Permanent deletion needs Graph's word: a "deleted" reason and nothing else,
/// or a removal reported and the group missing on two cycles.
pub fn verdict(in_bin: Option<bool>, reasons: Option<&BTreeSet<Removed>>, before: Option<&Pending>) -> Verdict {
    match in_bin {
        Some(true) => Verdict::Soft,
        None => Verdict::Later,
        Some(false) => {
            let only_deleted = reasons.is_some_and(|r| r.iter().all(|x| *x == Removed::Permanent));
            let reported = reasons.is_some() || before.is_some_and(|p| p.removal_reported);
            let seen_missing_before = before.is_some_and(|p| p.attempts > 0);
            if only_deleted || (reported && seen_missing_before) {
                Verdict::Gone
            } else {
                Verdict::Later
            }
        }
    }
}

/// Whether a complete member read is older than what the delta said of the group: a member
/// said added is not there, or one said removed still is.
pub fn stale(read: &MemberRead, added: &BTreeSet<String>, gone: &BTreeSet<String>) -> bool {
    let MemberRead::Complete(members) = read else { return false };
    if added.is_empty() && gone.is_empty() {
        return false;
    }
    let ids: BTreeSet<String> = members.iter().map(|m| m.id.to_ascii_lowercase()).collect();
    added.iter().any(|a| !ids.contains(a)) || gone.iter().any(|g| ids.contains(g))
}

/// The groups of a delta cycle, as settled.
#[derive(Debug, Default)]
pub struct Settled {
    /// Found: to be planned.
    pub found: Vec<CloudObject>,
    /// Confirmed in the recycle bin, and confirmed deleted for good.
    pub soft: BTreeSet<String>,
    pub gone: BTreeSet<String>,
    /// Reads that failed (per-object errors).
    pub failed: Vec<(String, String)>,
    /// To look at again next cycle.
    pub pending: BTreeMap<String, Pending>,
}

impl Settled {
    fn later(&mut self, id: &str, round: &DeltaRound, before: Option<&Pending>) {
        let mut p = before.cloned().unwrap_or_default();
        p.attempts += 1;
        p.removal_reported |= round.removed.contains_key(id);
        if let Some((added, gone)) = round.member_hints.get(id) {
            p.added = added.iter().cloned().collect();
            p.gone = gone.iter().cloned().collect();
        }
        if p.attempts > MAX_ATTEMPTS {
            tracing::warn!(group = %id, attempts = MAX_ATTEMPTS, "Graph's reads still disagree with its delta: left for the next full cycle");
        } else {
            self.pending.insert(id.to_string(), p);
        }
    }
}

/// Reads `ids` (the dirty groups) and settles each: found, soft-deleted, gone for good, failed,
/// or put off. `before` is what earlier cycles left pending.
pub async fn settle(
    graph: &GraphClient,
    ids: &[String],
    round: &DeltaRound,
    before: &BTreeMap<String, Pending>,
) -> Settled {
    let mut out = Settled::default();
    let (found, missing, failed) = graph.groups_by_id(ids).await;
    // Reported removed yet found: restored after the removal, or a read that lags it. Looked
    // at once more before it is taken as live.
    let (found, unsure): (Vec<CloudObject>, Vec<CloudObject>) = found
        .into_iter()
        .partition(|g| !round.removed.contains_key(&g.id) || before.get(&g.id).is_some_and(|p| p.removal_reported));
    out.found = found;
    for g in unsure {
        tracing::info!(group = %g.id, "reported removed but found: looked at again next cycle");
        out.later(&g.id, round, before.get(&g.id));
    }
    for (id, why) in failed {
        out.later(&id, round, before.get(&id));
        out.failed.push((id, why));
    }
    let missing: Vec<String> = missing.into_iter().collect();
    let (bin, not_in_bin, bin_failed) = graph.in_recycle_bin(&missing).await;
    let bin_failed: BTreeSet<String> = bin_failed.into_iter().map(|(id, _)| id).collect();
    for id in missing {
        let in_bin = if bin.contains(&id) {
            Some(true)
        } else if not_in_bin.contains(&id) && !bin_failed.contains(&id) {
            Some(false)
        } else {
            None
        };
        match verdict(in_bin, round.removed.get(&id), before.get(&id)) {
            Verdict::Soft => {
                out.soft.insert(id);
            }
            Verdict::Gone => {
                out.gone.insert(id);
            }
            Verdict::Later => {
                tracing::info!(group = %id, "Graph does not find it yet, or its removal is not confirmed: looked at again next cycle");
                out.later(&id, round, before.get(&id));
            }
        }
    }
    out
}

/// The groups whose member read is older than the delta said (see [`stale`]), put off (at
/// most [`MAX_STALE`] times) and taken out of `members`: planned next cycle, not now.
pub fn put_off_stale(
    members: &mut std::collections::HashMap<String, MemberRead>,
    round: &DeltaRound,
    before: &BTreeMap<String, Pending>,
    settled: &mut Settled,
) -> BTreeSet<String> {
    let mut stale_ids = BTreeSet::new();
    for (id, read) in members.iter() {
        let (added, gone): (BTreeSet<String>, BTreeSet<String>) = match (round.member_hints.get(id), before.get(id)) {
            (Some((a, g)), _) => (a.clone(), g.clone()),
            (None, Some(p)) => (p.added.iter().cloned().collect(), p.gone.iter().cloned().collect()),
            (None, None) => continue,
        };
        let attempts = before.get(id).map_or(0, |p| p.attempts);
        if attempts < MAX_STALE && stale(read, &added, &gone) {
            stale_ids.insert(id.clone());
        }
    }
    for id in &stale_ids {
        tracing::info!(group = %id, "Graph's member read is older than its delta: looked at again next cycle");
        members.remove(id);
        settled.later(id, round, before.get(id));
    }
    stale_ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(attempts: u32, reported: bool) -> Pending {
        Pending { attempts, removal_reported: reported, ..Default::default() }
    }

    #[test]
    fn a_delete_needs_graphs_word_and_a_confirmation() {
        let deleted = BTreeSet::from([Removed::Permanent]);
        let soft = BTreeSet::from([Removed::Soft]);
        let unknown = BTreeSet::from([Removed::Unknown]);
        let both = BTreeSet::from([Removed::Soft, Removed::Permanent]);
        assert_eq!(verdict(Some(true), Some(&deleted), None), Verdict::Soft, "the recycle bin wins");
        assert_eq!(verdict(None, Some(&deleted), None), Verdict::Later, "the bin could not be read");
        assert_eq!(verdict(Some(false), Some(&deleted), None), Verdict::Gone);
        for unsure in [&soft, &unknown, &both] {
            assert_eq!(verdict(Some(false), Some(unsure), None), Verdict::Later, "{unsure:?}: looked at again");
            assert_eq!(verdict(Some(false), Some(unsure), Some(&pending(1, true))), Verdict::Gone, "missing twice");
        }
        assert_eq!(
            verdict(Some(false), None, None),
            Verdict::Later,
            "not reported removed: never deleted from a delta"
        );
        assert_eq!(verdict(Some(false), None, Some(&pending(3, false))), Verdict::Later);
        assert_eq!(verdict(Some(false), None, Some(&pending(1, true))), Verdict::Gone, "reported in an earlier round");
    }

    #[test]
    fn a_read_older_than_the_delta_is_stale() {
        let member = |id: &str| CloudObject { id: id.into(), ..Default::default() };
        let read = MemberRead::complete(vec![member("u1"), member("u2")]);
        let set = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
        assert!(!stale(&read, &set(&["u1"]), &set(&["u3"])));
        assert!(stale(&read, &set(&["u4"]), &set(&[])), "an added member is not there yet");
        assert!(stale(&read, &set(&[]), &set(&["u2"])), "a removed member is still there");
        assert!(!stale(&MemberRead::Incomplete("x".into()), &set(&["u4"]), &set(&[])));
    }
}
