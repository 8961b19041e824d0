//! The planner alone (issue #6), run by `scripts/bench`: 100,000 groups and 1,000,000
//! memberships of 200,000 synced users, planned against an empty AD (the first run: every
//! group added) and against an AD that already matches (a steady full cycle: nothing to do).
//! Prints CPU time and peak RSS. Usage: bench_planner [groups memberships users]

#[path = "../../writeback/examples/support/report.rs"]
mod report;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use writeback_core::model::WritebackConfiguration;
use writeback_core::{
    plan, AdClass, AdGroup, AdObject, AdRef, AdSnapshot, Anchor, CloudId, CloudObject, CloudSnapshot, GroupTarget,
    Link, MemberRead, ObjectGuid, Operation, PlannerConfig, State,
};

// The writeback binary's allocator, so the figures are the binary's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// Process CPU seconds (user + system) and peak RSS in MiB, from /proc.
fn usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let cpu = (ticks(11) + ticks(12)) / 100.0; // utime, stime in clock ticks (USER_HZ = 100)
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap_or("0");
    let kb: f64 = hwm.trim().trim_end_matches("kB").trim().parse().unwrap_or(0.0);
    (cpu, kb / 1024.0)
}

/// System CPU seconds and minor page faults so far: on a VM, first touches of fresh memory
/// are a large part of the planner's cost, and they show here.
fn faults() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (num(12) / 100.0, num(7))
}

fn uuid(n: usize, kind: u32) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

fn ad_ref(m: &GroupTarget) -> AdRef {
    match m {
        GroupTarget::Existing { guid, dn } => AdRef { guid: (&**guid).into(), dn: dn.to_string(), sid: None },
        GroupTarget::New { dn, .. } => AdRef { guid: Default::default(), dn: dn.clone(), sid: None },
    }
}

fn main() {
    let (groups, memberships, users) = (arg(1, 100_000), arg(2, 1_000_000), arg(3, 200_000));
    let ou = "OU=Groups,DC=corp,DC=example,DC=com";
    // A first run of 100,000 groups is far past create_threshold: allowed, as `--allow-creates`.
    let mut cfg = PlannerConfig::with_target_ou(ou);
    cfg.allow.creates = true;
    let mut cloud = CloudSnapshot::default();
    let mut ad = AdSnapshot::default();
    // Shared, as the Graph reader shares them: one object per user, however many groups.
    let user_objs: Vec<Arc<CloudObject>> = (0..users)
        .map(|u| {
            Arc::new(CloudObject {
                odata_type: Some("#microsoft.graph.user".into()),
                id: uuid(u, 1).into(),
                on_premises_sync_enabled: Some(true),
                on_premises_security_identifier: Some(format!("S-1-5-21-1-2-3-{}", 10_000 + u)),
                ..Default::default()
            })
        })
        .collect();
    for (u, obj) in user_objs.iter().enumerate() {
        let sid = obj.on_premises_security_identifier.clone().unwrap_or_default();
        ad.directory.insert(
            Anchor::Sid(sid.clone()),
            AdObject {
                guid: uuid(u, 2).into(),
                sid: Some(sid),
                dn: format!("CN=u{u},OU=Users,DC=corp,DC=example,DC=com").into(),
                group_type: None,
                class: AdClass::User,
                source_anchor: None,
            },
        );
    }
    // Spread the memberships: group g gets `per` members starting at a stride through the users.
    let per = memberships / groups.max(1);
    for g in 0..groups {
        let id = CloudId::new(uuid(g, 3));
        cloud.groups.push(CloudObject {
            id: id.clone(),
            display_name: Some(format!("SG-Bench-{g:06}")),
            security_enabled: Some(true),
            mail_enabled: Some(false),
            writeback_configuration: Some(WritebackConfiguration {
                is_enabled: Some(true),
                on_premises_group_type: None,
            }),
            ..Default::default()
        });
        let members = (0..per).map(|k| user_objs[(g * 7919 + k * 31) % users].clone()).collect();
        cloud.members.insert(id, MemberRead::Complete(members));
    }
    let ((cpu0, rss0), f0) = (usage(), faults());
    println!("inputs built: {rss0:.0} MiB RSS");
    let t = Instant::now();
    let first = plan(&cloud, &ad, &State::default(), &cfg);
    let (wall1, (cpu1, rss1), f1) = (t.elapsed().as_secs_f64(), usage(), faults());
    let adds = first.operations.iter().filter(|o| matches!(o, Operation::Add { .. })).count();
    let values: usize =
        first.operations.iter().map(|o| if let Operation::Add { members, .. } = o { members.len() } else { 0 }).sum();
    println!(
        "planner, first run: {groups} groups, {values} memberships -> {adds} \
            adds: {wall1:.2} s wall, {:.2} s CPU ({:.2} s system, {:.0} page \
            faults), {rss1:.0} MiB peak RSS (inputs included)",
        cpu1 - cpu0,
        f1.0 - f0.0,
        f1.1 - f0.1
    );

    // AD as the first plan leaves it; the state links every group.
    let mut state = State { links: HashMap::new(), ..State::default() };
    for (n, op) in first.operations.iter().enumerate() {
        if let Operation::Add { cloud_id, dn, attrs, members } = op {
            let attrs: std::collections::BTreeMap<String, Vec<String>> =
                attrs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
            let group_type = attrs.get("grouptype").and_then(|v| v.first()).and_then(|v| v.parse().ok()).unwrap_or(0);
            let guid = ObjectGuid::new(uuid(n, 4));
            ad.groups.push(AdGroup {
                guid: guid.clone(),
                sid: None,
                dn: dn.as_str().into(),
                cloud_id: cloud_id.clone(),
                cn: attrs.get("cn").and_then(|v| v.first()).cloned().unwrap_or_default(),
                group_type,
                members: Some(members.iter().map(ad_ref).collect()),
                attrs,
                ..Default::default()
            });
            state.links.insert(cloud_id.clone(), Link { guid, dn: dn.as_str().into() });
        }
    }
    drop(first);
    let t = Instant::now();
    let ((cpu2, _), f2) = (usage(), faults());
    let steady = plan(&cloud, &ad, &state, &cfg);
    let (wall3, (cpu3, rss3), f3) = (t.elapsed().as_secs_f64(), usage(), faults());
    println!(
        "planner, steady full cycle (AD already right): {} operations: \
            {wall3:.2} s wall, {:.2} s CPU ({:.2} s system, {:.0} page faults), \
            {rss3:.0} MiB peak RSS",
        steady.operations.len(),
        cpu3 - cpu2,
        f3.0 - f2.0,
        f3.1 - f2.1
    );
    if let Some(op) = steady.operations.first() {
        println!("  first unexpected operation: {op:?}");
    }
    report::append_rows(&[
        (
            format!("planner alone, first run: {groups} groups, {values} memberships"),
            format!("{:.2} s CPU, {rss1:.0} MiB peak RSS (inputs included)", cpu1 - cpu0),
        ),
        (
            format!("planner alone, steady full cycle: {groups} groups, {values} memberships"),
            format!("{:.2} s CPU, {rss3:.0} MiB peak RSS, {} operations", cpu3 - cpu2, steady.operations.len()),
        ),
    ]);
}
