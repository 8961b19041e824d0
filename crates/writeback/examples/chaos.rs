//! `scripts/chaos`: failure and recovery with the full counts of issue #5 — kill -9 at 20
//! random moments of a 2,000-group full sync, the DC stopped for 30 s mid-run, Graph answering
//! 30% 429/503, the state lost and corrupted. Prints the figures; exits 1 if any trial failed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::chaos;

fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (trials, groups, outage) = (arg(1, 20) as usize, arg(2, 2000) as u32, arg(3, 30));
    let mut failed = false;
    for (name, f) in [
        (
            format!("kill -9 during a full sync ({trials} trials, {groups} groups)"),
            chaos::kill_loop(trials, groups, 0x5eed_c4a5),
        ),
        (format!("Graph answering 30% 429/503 ({groups} groups)"), chaos::throttled(groups, 0.3)),
        (format!("state deleted, then corrupted ({groups} groups)"), chaos::lost_state(groups)),
        (
            format!("DC stopped {outage} s mid-run ({groups} groups)"),
            chaos::dc_outage(groups, Duration::from_secs(outage)),
        ),
    ] {
        println!("{name}: {} trials, {} failed, {} duplicates found", f.trials, f.failures, f.duplicates);
        for n in &f.notes {
            println!("    {n}");
        }
        failed |= f.failures > 0;
    }
    std::process::exit(i32::from(failed));
}
