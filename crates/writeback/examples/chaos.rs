//! `scripts/chaos`: failure and recovery with the full counts of issue #5 — kill -9 at 20
//! random moments of a 2,000-group full sync, the DC stopped for 30 s mid-run, Graph answering
//! 30% 429/503, the state lost and corrupted; and of issue #21 — two daemons on one
//! PostgreSQL state, the leader killed, paused, PostgreSQL stopped, at random moments. Prints
//! the figures; exits 1 if any trial failed. `CHAOS_ONLY=kill|throttled|state|dc|ha` runs one.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::chaos::{self, Figures};

fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (trials, groups, outage) = (arg(1, 20) as usize, arg(2, 2000) as u32, arg(3, 30));
    let ha_trials = arg(4, 30) as usize;
    let only = std::env::var("CHAOS_ONLY").ok();
    type Trial = Box<dyn FnOnce() -> Figures>;
    let all: Vec<(&str, String, Trial)> = vec![
        (
            "kill",
            format!("kill -9 during a full sync ({trials} trials, {groups} groups)"),
            Box::new(move || chaos::kill_loop(trials, groups, 0x5eed_c4a5)),
        ),
        (
            "throttled",
            format!("Graph answering 30% 429/503 ({groups} groups)"),
            Box::new(move || chaos::throttled(groups, 0.3)),
        ),
        (
            "state",
            format!("state deleted, then corrupted ({groups} groups)"),
            Box::new(move || chaos::lost_state(groups)),
        ),
        (
            "dc",
            format!("DC stopped {outage} s mid-run ({groups} groups)"),
            Box::new(move || chaos::dc_outage(groups, Duration::from_secs(outage))),
        ),
        (
            "ha",
            format!(
                "two daemons on one PostgreSQL state: the leader killed, paused, PostgreSQL stopped, in turn \
                 ({ha_trials} trials, 200 groups)"
            ),
            Box::new(move || chaos::ha_failover(ha_trials, 200, 0x4a_f00d)),
        ),
    ];
    let mut failed = false;
    for (key, name, run) in all {
        if only.as_deref().is_some_and(|o| o != key) {
            continue;
        }
        let f = run();
        println!("{name}: {} trials, {} failed, {} duplicates found", f.trials, f.failures, f.duplicates);
        for n in &f.notes {
            println!("    {n}");
        }
        failed |= f.failures > 0;
    }
    std::process::exit(i32::from(failed));
}
