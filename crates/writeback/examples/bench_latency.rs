//! Propagation latency (issue #3), run by `scripts/bench`: the daemon at a 5 s interval,
//! 50 membership changes made in the simulator at random moments; for each, the time from
//! the change to the member being visible in AD. Also the Graph requests and wall time of an
//! idle delta cycle, with a full cycle of the same tenant measured in the same run as the
//! baseline. Prints a table and appends rows to BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/report.rs"]
mod report;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CHANGES: usize = 50;
const INTERVAL_S: u64 = 5;
const GROUPS: u32 = 200;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A small xorshift: a fixed seed gives the same change moments every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// (HTTP requests to Graph, logical requests counting each `$batch` member), tokens excluded.
fn graph_requests(fx: &Fixture) -> (usize, usize) {
    let log = fx.sim_call("GET", "/_control/requests", None);
    let entries: Vec<&Value> = log
        .as_array()
        .map(|l| l.iter().filter(|e| !e["url"].as_str().unwrap_or("").ends_with("/token")).collect())
        .unwrap_or_default();
    let http = entries.iter().filter(|e| e["batch"] != true).count();
    let logical = entries.iter().filter(|e| !e["url"].as_str().unwrap_or("").ends_with("/$batch")).count();
    (http, logical)
}

fn main() {
    let mut fx = Fixture::new("bench");
    let users = fx.create_users("b", CHANGES + 20);
    let uids: Vec<String> = (0..users.len()).map(|i| fx.id(100_000 + i as u32)).collect();
    let cloud: Vec<Value> = users.iter().zip(&uids).map(|(u, id)| synced_user(id, u)).collect();
    let target = fx.id(1);
    let mut groups = vec![security_group(&target, "SG-Latency", Some(true), &[])];
    for g in 2..=GROUPS {
        let m: Vec<&str> = (0..5).map(|k| uids[(g as usize * 7 + k) % uids.len()].as_str()).collect();
        groups.push(security_group(&fx.id(g), &format!("SG-Bench-{g}"), Some(true), &m));
    }
    let mut tenant = tenant(cloud, groups);
    fx.start_sim(&tenant);
    fx.write_config(&format!("[daemon]\ninterval = \"{INTERVAL_S}s\"\nfull_interval = \"24h\"\n"));

    // Baseline in the same run: a full cycle of this tenant.
    let t = Instant::now();
    let (code, full) = fx.sync_json(&["--full"]);
    assert!(code == 0, "full sync failed: {full}");
    let full_wall = t.elapsed().as_secs_f64();
    let target_dn = fx.group(&target).expect("the target group is written").dn;
    let full_requests = graph_requests(&fx);

    // Idle delta cycles, one-shot, 5 times.
    let mut idle = Vec::new();
    for _ in 0..5 {
        fx.sim_call("DELETE", "/_control/requests", None);
        let t = Instant::now();
        let (_, out) = fx.sync_json(&[]);
        assert_eq!(out["kind"], "delta", "{out}");
        idle.push((t.elapsed().as_secs_f64(), graph_requests(&fx)));
    }
    idle.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (idle_wall, (idle_requests, _)) = idle[idle.len() / 2];

    // Latency with the daemon.
    let mut d = Daemon::start(&fx);
    d.wait_for("active", |h| h["role"] == "active" && h["reason"] == "ok");
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let mut pending: BTreeMap<String, Instant> = BTreeMap::new();
    let mut latencies = Vec::new();
    let mut members: Vec<String> = Vec::new();
    let mut next_change = Instant::now();
    let mut made = 0;
    let deadline = Instant::now() + Duration::from_secs(CHANGES as u64 * 2 + 60);
    while latencies.len() < CHANGES {
        assert!(Instant::now() < deadline, "changes did not all arrive: {} of {CHANGES}", latencies.len());
        if made < CHANGES && Instant::now() >= next_change {
            members.push(uids[made].clone());
            tenant["groups"][0]["members"] = json!(members);
            fx.set_tenant(&tenant);
            pending.insert(users[made].guid.clone(), Instant::now());
            made += 1;
            // Changes land at random moments of the cycle: 0.2–1.8 s apart.
            next_change = Instant::now() + Duration::from_millis(200 + rng.next() % 1600);
        }
        let seen: HashSet<String> = fx.members(&target_dn).into_iter().collect();
        let arrived: Vec<String> = pending.keys().filter(|g| seen.contains(*g)).cloned().collect();
        for g in arrived {
            if let Some(t) = pending.remove(&g) {
                latencies.push(t.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop();
    latencies.sort_by(f64::total_cmp);
    let (p50, p95, max) = (percentile(&latencies, 0.5), percentile(&latencies, 0.95), percentile(&latencies, 1.0));

    println!(
        "\npropagation latency, daemon interval {INTERVAL_S} s, {CHANGES} \
        membership changes ({GROUPS} groups in scope)"
    );
    println!(
        "  p50 {p50:.2} s   p95 {p95:.2} s   max {max:.2} s   goal p95 <= {} s: {}",
        INTERVAL_S + 2,
        if p95 <= (INTERVAL_S + 2) as f64 { "met" } else { "MISSED" }
    );
    println!("idle delta cycle (median of 5, one-shot process): {idle_wall:.3} s wall, {idle_requests} Graph requests");
    println!(
        "baseline, full cycle of the same tenant: {full_wall:.3} s wall, {} \
        Graph HTTP requests ({} with each $batch member counted)",
        full_requests.0, full_requests.1
    );

    report::append_rows(&[
        (
            format!("latency ({}), interval {INTERVAL_S} s, {CHANGES} changes", report::DC),
            format!("p50 {p50:.2} s, p95 {p95:.2} s, max {max:.2} s"),
        ),
        (
            format!("idle delta cycle ({GROUPS} groups)"),
            format!("{idle_wall:.3} s wall, {idle_requests} Graph requests"),
        ),
        (
            format!("baseline: full cycle ({GROUPS} groups)"),
            format!("{full_wall:.3} s wall, {} Graph HTTP requests ({} logical)", full_requests.0, full_requests.1),
        ),
    ]);
}
