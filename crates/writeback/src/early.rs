//! Adds that start before the whole tenant is read. A full cycle into managed OUs that hold
//! no owned group yet (a first sync, a new OU) only adds: each part of groups whose members
//! are read and looked up is planned and its adds are written on a second connection while
//! Graph and AD answer for the next parts. The reads then cost no extra time beside the
//! writes (a 10,000-group first sync spent 12 s reading before its first write).
//!
//! The planner is the same one: a part is planned with every group it names as a nested
//! member (so a nested group is a `New` target, as in the whole plan), and only the part's
//! own adds are taken. The whole plan is still made at the end, from the whole snapshot; its
//! adds for the groups already written are not written again. With no owned group in AD,
//! no plan can delete or remove anything, so no threshold can stop a run that already wrote.

use std::collections::{HashMap, HashSet};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;
use writeback_ad::{AdConn, ApplyReport};
use writeback_core::plan::Operation;
use writeback_core::{
    member_anchors, AdObject, AdSnapshot, Anchor, CloudId, CloudObject, CloudSnapshot, MemberRead, ObjectError,
    OwnedMembers, Plan, PlannerConfig, SchemaFeatures, State,
};

/// The writer of early adds, and what it was sent.
pub struct Early {
    state: State,
    planner: PlannerConfig,
    schema: SchemaFeatures,
    tx: mpsc::UnboundedSender<Vec<Operation>>,
    task: JoinHandle<(AdConn, ApplyReport)>,
    /// The adds sent, in the order they are written.
    sent: Vec<Operation>,
}

impl Early {
    /// Starts the writer on `conn` (a connection of its own, whose write gate checks the lead
    /// before every operation: once it refuses, nothing more is written in this cycle).
    pub fn start(conn: AdConn, ous: Vec<String>, state: State, planner: PlannerConfig) -> Early {
        let schema = conn.schema;
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Operation>>();
        let task = tokio::spawn(
            async move {
                let mut conn = conn;
                let mut report = ApplyReport::default();
                while let Some(ops) = rx.recv().await {
                    conn.apply_ops(&ops, &ous, &mut report, &mut |_, _| ()).await;
                }
                (conn, report)
            }
            // The writer's lines carry the cycle's run id too.
            .instrument(tracing::Span::current()),
        );
        Early { state, planner, schema, tx, task, sent: Vec::new() }
    }

    /// Plans the groups `part` (members read completely or not, looked up in `found`) and
    /// sends their adds to the writer.
    pub fn part(
        &mut self,
        groups: &HashMap<CloudId, &CloudObject>,
        part: &[CloudId],
        members: &HashMap<CloudId, MemberRead>,
        found: &HashMap<Anchor, AdObject>,
    ) {
        let mut cloud = CloudSnapshot::default();
        for id in part {
            if let (Some(g), Some(read)) = (groups.get(id), members.get(id)) {
                cloud.groups.push((*g).clone());
                cloud.members.insert(id.clone(), read.clone());
            }
        }
        // Nested groups of the tenant: planned too (their adds are not taken), so that they are
        // `New` targets here as in the whole plan, not the stale link of an earlier run.
        let nested: HashSet<CloudId> = cloud
            .complete_members()
            .map(|m| m.id.clone())
            .filter(|id| groups.contains_key(id) && !cloud.members.contains_key(id))
            .collect();
        for id in nested {
            if let Some(g) = groups.get(&id) {
                cloud.groups.push((*g).clone());
                cloud.members.insert(id, MemberRead::Complete(Vec::new()));
            }
        }
        let directory = member_anchors(&cloud, &OwnedMembers::new(&[]).with_devices(self.planner.write_devices))
            .into_iter()
            .filter_map(|a| found.get(&a).map(|o| (a, o.clone())))
            .collect();
        let ad = AdSnapshot { schema: self.schema, directory, ..Default::default() };
        let plan = writeback_core::plan(&cloud, &ad, &self.state, &self.planner);
        let mine: HashSet<&CloudId> = part.iter().collect();
        let adds: Vec<Operation> = plan
            .operations
            .into_iter()
            .filter(|op| matches!(op, Operation::Add { .. }) && mine.contains(op.cloud_id()))
            .collect();
        if adds.is_empty() {
            return;
        }
        self.sent.extend(adds.iter().cloned());
        // A closed channel means the writer ended (panicked): `finish` reports it.
        let _ = self.tx.send(adds);
    }

    /// The read failed: waits for the adds already sent, and says how many were written (the
    /// next cycle finds them by their marker).
    pub async fn abandon(self) -> String {
        drop(self.tx);
        match self.task.await {
            Ok((conn, report)) => {
                conn.close().await;
                let ok = report.outcomes.iter().filter(|o| o.error.is_none()).count();
                format!("{ok} groups were added before that; the next cycle finds them by their marker")
            }
            Err(e) => format!("the writer of this cycle's first adds failed too: {e}"),
        }
    }

    /// Waits for the writer. Returns its connection and report, the whole `plan` with the
    /// adds already written first (so outcomes and operations line up), the operations
    /// still to write, and errors for adds that differ from the whole plan's.
    pub async fn finish(self, mut plan: Plan) -> Result<Finished, String> {
        drop(self.tx);
        let (conn, report) =
            self.task.await.map_err(|e| format!("the writer of this cycle's first adds failed: {e}"))?;
        let sent = self.sent;
        let mut rest: Vec<Operation> = Vec::with_capacity(plan.operations.len());
        let mut by_id: HashMap<&CloudId, &Operation> = sent.iter().map(|op| (op.cloud_id(), op)).collect();
        let mut errors = Vec::new();
        for op in std::mem::take(&mut plan.operations) {
            let early = matches!(op, Operation::Add { .. }).then(|| by_id.remove(op.cloud_id())).flatten();
            match early {
                Some(sent) if *sent == op => {}
                Some(_) => errors.push(ObjectError {
                    cloud_id: op.cloud_id().to_string(),
                    member_id: None,
                    message: "added before the whole tenant was read, differently from the whole \
                        plan; the next full cycle puts it right"
                        .into(),
                }),
                None => rest.push(op),
            }
        }
        // Ran before the rest; what ran is what is recorded.
        plan.operations = sent;
        let written = plan.operations.len();
        plan.operations.extend(rest);
        Ok(Finished { conn, report, plan, written, errors })
    }
}

pub struct Finished {
    pub conn: AdConn,
    pub report: ApplyReport,
    /// The whole plan, the early adds first.
    pub plan: Plan,
    /// How many operations of `plan` the writer was sent.
    pub written: usize,
    pub errors: Vec<ObjectError>,
}
