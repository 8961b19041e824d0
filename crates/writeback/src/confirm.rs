//! What a delta round says is checked before it is acted on. Graph's documentation warns that
//! the same object can come more than once and in any order, that `@removed` "might include" a
//! reason, and that reads right after a change can lag it (delta-query-overview.md, "processing
//! delays"; group-get.md: "replication delays for groups that were recently created, updated, or
//! deleted"). So a delta cycle reads every group the round names; a removal counts only once
//! Graph cannot find the group and its recycle bin says where it went; a group not found yet, or
//! whose members are older than what the round said, is looked at again by the next cycles
//! (`Watermarks::pending`, bounded); and a delete in AD never follows from one unconfirmed entry.

use std::collections::{BTreeMap, BTreeSet};

use writeback_core::{CloudId, CloudObject, MemberRead};
use writeback_graph::{DeltaRound, GraphClient, Removed};
use writeback_store::Pending;

/// Cycles a group is put off at most; after that it waits for the next full cycle (and says so).
pub const MAX_ATTEMPTS: u32 = 10;
/// Cycles a read whose members disagree with the delta is put off at most; then it is taken
/// as it is (a replayed entry can say something no read will ever show).
const MAX_STALE: u32 = 3;
/// Cycles a group reported removed yet found is put off at most; then it is taken as live
/// (found every time: a restore, and the removal replayed).
const MAX_UNSURE: u32 = 3;

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

/// Why a group is looked at again (each counts on its own in [`Pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Again {
    /// Not found, nor in the recycle bin.
    Missing,
    /// Not found, in the recycle bin, not yet confirmed.
    InBin,
    /// Found, although the round reported it removed.
    Unsure,
    /// Found, with members older than the round said.
    Stale,
    /// The read failed.
    Failed,
}

/// The verdict on a group `GET` did not find. `in_bin`: whether the recycle bin has it (`None`:
/// that read failed). `reasons`: what this round's delta said of it (`None`: nothing);
/// `seen_live`: the round also had a live entry for it; `before`: what earlier cycles noted.
///
/// A soft delete needs the round to report a removal and no live entry, or the recycle bin to
/// hold the group on two cycles. A permanent delete needs Graph's word: a `deleted` reason and
/// nothing else, or a removal reported and the group missing from Graph and its recycle bin on
/// an earlier cycle as well (a found group resets that count).
pub fn verdict(
    in_bin: Option<bool>,
    reasons: Option<&BTreeSet<Removed>>,
    seen_live: bool,
    before: Option<&Pending>,
) -> Verdict {
    let reported = reasons.is_some() || before.is_some_and(|p| p.removal_reported);
    match in_bin {
        None => Verdict::Later,
        Some(true) => {
            let clean_report = reasons.is_some() && !seen_live;
            if clean_report || before.is_some_and(|p| p.soft_seen > 0) {
                Verdict::Soft
            } else {
                Verdict::Later
            }
        }
        Some(false) => {
            let only_deleted = !seen_live && reasons.is_some_and(|r| r.iter().all(|x| *x == Removed::Permanent));
            if only_deleted || (reported && before.is_some_and(|p| p.missing_seen > 0)) {
                Verdict::Gone
            } else {
                Verdict::Later
            }
        }
    }
}

/// Whether a complete member read is older than what the delta said of the group: a member
/// said added is not there, or one said removed still is.
pub fn stale(read: &MemberRead, added: &BTreeSet<CloudId>, gone: &BTreeSet<CloudId>) -> bool {
    let MemberRead::Complete(members) = read else { return false };
    if added.is_empty() && gone.is_empty() {
        return false;
    }
    let ids: BTreeSet<&CloudId> = members.iter().map(|m| &m.id).collect();
    added.iter().any(|a| !ids.contains(a)) || gone.iter().any(|g| ids.contains(g))
}

/// The groups of a delta cycle, as settled.
#[derive(Debug, Default)]
pub struct Settled {
    /// Found: to be planned.
    pub found: Vec<CloudObject>,
    /// Confirmed in the recycle bin, and confirmed deleted for good.
    pub soft: BTreeSet<CloudId>,
    pub gone: BTreeSet<CloudId>,
    /// Per-object errors: reads that failed, groups put off too long.
    pub failed: Vec<(String, String)>,
    /// To look at again next cycle.
    pub pending: BTreeMap<CloudId, Pending>,
}

impl Settled {
    fn again(&mut self, id: &CloudId, why: Again, round: &DeltaRound, before: Option<&Pending>) {
        let mut p = before.cloned().unwrap_or_default();
        p.attempts += 1;
        p.removal_reported |= round.removed.contains_key(id);
        match why {
            Again::Missing => p.missing_seen += 1,
            Again::InBin => p.soft_seen += 1,
            Again::Unsure => p.unsure_seen += 1,
            Again::Stale => p.stale_seen += 1,
            Again::Failed => {}
        }
        if matches!(why, Again::Unsure | Again::Stale) {
            // Found: whatever was missing before is not gone.
            p.missing_seen = 0;
            p.soft_seen = 0;
        }
        if let Some((added, gone)) = round.member_hints.get(id) {
            p.added = added.iter().cloned().collect();
            p.gone = gone.iter().cloned().collect();
        }
        if p.attempts > MAX_ATTEMPTS {
            let why = format!(
                "Graph's reads of this group disagreed with its delta queries on \
                    {MAX_ATTEMPTS} cycles in a row; it waits for the next full cycle"
            );
            tracing::warn!(group = %id, "{why}");
            self.failed.push((id.to_string(), why));
        } else {
            self.pending.insert(id.clone(), p);
        }
    }
}

/// Reads `ids` (the dirty groups) and settles each: found, soft-deleted, gone for good, failed,
/// or put off. `before` is what earlier cycles left pending.
pub async fn settle(
    graph: &GraphClient,
    ids: &[CloudId],
    round: &DeltaRound,
    before: &BTreeMap<CloudId, Pending>,
) -> Settled {
    let mut out = Settled::default();
    let (found, missing, failed) = graph.groups_by_id(ids).await;
    // Reported removed yet found: restored after the removal, or a read that lags it. Looked
    // at again (a few times) before it is taken as live.
    let (found, unsure): (Vec<CloudObject>, Vec<CloudObject>) = found.into_iter().partition(|g| {
        let earlier = before.get(&g.id);
        let reported = round.removed.contains_key(&g.id) || earlier.is_some_and(|p| p.removal_reported);
        !reported || earlier.is_some_and(|p| p.unsure_seen >= MAX_UNSURE)
    });
    out.found = found;
    for g in unsure {
        tracing::info!(group = %g.id, "reported removed but found: looked at again next cycle");
        out.again(&g.id, Again::Unsure, round, before.get(&g.id));
    }
    for (id, why) in failed {
        let cloud_id = CloudId::new(id.as_str());
        out.again(&cloud_id, Again::Failed, round, before.get(&cloud_id));
        out.failed.push((id, why));
    }
    let missing: Vec<CloudId> = missing.into_iter().collect();
    let (bin, not_in_bin, bin_failed) = graph.in_recycle_bin(&missing).await;
    let bin_failed: BTreeSet<CloudId> = bin_failed.into_iter().map(|(id, _)| CloudId::new(id)).collect();
    for id in missing {
        let in_bin = if bin.contains(&id) {
            Some(true)
        } else if not_in_bin.contains(&id) && !bin_failed.contains(&id) {
            Some(false)
        } else {
            None
        };
        match verdict(in_bin, round.removed.get(&id), round.live.contains(&id), before.get(&id)) {
            Verdict::Soft => {
                out.soft.insert(id);
            }
            Verdict::Gone => {
                out.gone.insert(id);
            }
            Verdict::Later => {
                tracing::info!(group = %id, "Graph does not find it yet, or its removal is not confirmed: looked at \
                    again next cycle");
                let why = match in_bin {
                    Some(true) => Again::InBin,
                    Some(false) => Again::Missing,
                    None => Again::Failed,
                };
                out.again(&id, why, round, before.get(&id));
            }
        }
    }
    out
}

/// The groups whose member read is older than the delta said (see [`stale`]), put off (at
/// most [`MAX_STALE`] times) and taken out of `members`: planned next cycle, not now.
pub fn put_off_stale(
    members: &mut std::collections::HashMap<CloudId, MemberRead>,
    round: &DeltaRound,
    before: &BTreeMap<CloudId, Pending>,
    settled: &mut Settled,
) -> BTreeSet<CloudId> {
    let mut stale_ids = BTreeSet::new();
    for (id, read) in members.iter() {
        let (added, gone): (BTreeSet<CloudId>, BTreeSet<CloudId>) = match (round.member_hints.get(id), before.get(id)) {
            (Some((a, g)), _) => (a.clone(), g.clone()),
            (None, Some(p)) => (p.added.iter().cloned().collect(), p.gone.iter().cloned().collect()),
            (None, None) => continue,
        };
        let seen = before.get(id).map_or(0, |p| p.stale_seen);
        if seen < MAX_STALE && stale(read, &added, &gone) {
            stale_ids.insert(id.clone());
        }
    }
    for id in &stale_ids {
        tracing::info!(group = %id, "Graph's member read is older than its delta: looked at again next cycle");
        members.remove(id);
        settled.again(id, Again::Stale, round, before.get(id));
    }
    stale_ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(missing: u32, soft: u32, reported: bool) -> Pending {
        Pending {
            attempts: missing + soft,
            removal_reported: reported,
            missing_seen: missing,
            soft_seen: soft,
            ..Default::default()
        }
    }

    #[test]
    fn a_delete_needs_graphs_word_and_a_confirmation() {
        let deleted = BTreeSet::from([Removed::Permanent]);
        let soft = BTreeSet::from([Removed::Soft]);
        let unknown = BTreeSet::from([Removed::Unknown]);
        let both = BTreeSet::from([Removed::Soft, Removed::Permanent]);
        // In the recycle bin, reported removed and not also live in the round: soft-deleted.
        assert_eq!(verdict(Some(true), Some(&deleted), false, None), Verdict::Soft);
        assert_eq!(verdict(Some(true), Some(&soft), true, None), Verdict::Later, "also live in the round: once more");
        assert_eq!(verdict(Some(true), None, false, None), Verdict::Later, "not reported: once more");
        assert_eq!(verdict(Some(true), None, false, Some(&seen(0, 1, false))), Verdict::Soft, "in the bin twice");
        assert_eq!(verdict(None, Some(&deleted), false, None), Verdict::Later, "the bin could not be read");
        assert_eq!(verdict(Some(false), Some(&deleted), false, None), Verdict::Gone);
        assert_eq!(verdict(Some(false), Some(&deleted), true, None), Verdict::Later, "also live in the round");
        for unsure in [&soft, &unknown, &both] {
            assert_eq!(verdict(Some(false), Some(unsure), false, None), Verdict::Later, "{unsure:?}: looked at again");
            assert_eq!(
                verdict(Some(false), Some(unsure), false, Some(&seen(1, 0, true))),
                Verdict::Gone,
                "missing twice"
            );
        }
        assert_eq!(
            verdict(Some(false), None, false, None),
            Verdict::Later,
            "not reported removed: never deleted from a delta"
        );
        assert_eq!(verdict(Some(false), None, false, Some(&seen(3, 0, false))), Verdict::Later);
        assert_eq!(
            verdict(Some(false), None, false, Some(&seen(1, 0, true))),
            Verdict::Gone,
            "reported in an earlier round"
        );
        // Put off for another reason (found although reported removed): that is no missing.
        let found_once = Pending { attempts: 1, removal_reported: true, unsure_seen: 1, ..Default::default() };
        assert_eq!(
            verdict(Some(false), None, false, Some(&found_once)),
            Verdict::Later,
            "one 404 after a read that found it"
        );
    }

    #[test]
    fn each_reason_to_look_again_counts_on_its_own() {
        let round = DeltaRound::default();
        let mut s = Settled::default();
        let (g, h) = (CloudId::new("g"), CloudId::new("h"));
        s.again(&g, Again::Missing, &round, None);
        let missing = s.pending["g"].clone();
        assert_eq!((missing.attempts, missing.missing_seen), (1, 1));
        // Found next time (stale): what was missing before is not gone.
        s.again(&g, Again::Stale, &round, Some(&missing));
        let p = &s.pending["g"];
        assert_eq!((p.attempts, p.missing_seen, p.stale_seen), (2, 0, 1));
        // Bounded, and said so.
        let worn = Pending { attempts: MAX_ATTEMPTS, ..Default::default() };
        let mut s = Settled::default();
        s.again(&h, Again::Missing, &round, Some(&worn));
        assert!(!s.pending.contains_key("h") && s.failed[0].1.contains("full cycle"));
    }

    #[test]
    fn a_read_older_than_the_delta_is_stale() {
        let member = |id: &str| CloudObject { id: id.into(), ..Default::default() };
        let read = MemberRead::complete(vec![member("u1"), member("u2")]);
        let set = |ids: &[&str]| ids.iter().map(|s| CloudId::new(*s)).collect::<BTreeSet<CloudId>>();
        assert!(!stale(&read, &set(&["u1"]), &set(&["u3"])));
        assert!(stale(&read, &set(&["u4"]), &set(&[])), "an added member is not there yet");
        assert!(stale(&read, &set(&[]), &set(&["u2"])), "a removed member is still there");
        assert!(!stale(&MemberRead::Incomplete("x".into()), &set(&["u4"]), &set(&[])));
    }
}
