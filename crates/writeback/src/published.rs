//! What a running daemon publishes in the state database for `writeback status`, which runs
//! in another process: its pid and role, when its next cycle runs, and why it does not write
//! (as `/healthz` says it). Rewritten after every cycle; the pid tells whether it still runs.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use writeback_store::Store;

use crate::daemon::Daemon;

const KEY: &str = "daemon";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Published {
    pub pid: u32,
    /// active, standby or stopping (`daemon::Role`).
    pub role: String,
    pub healthy: bool,
    /// What `/healthz` says: "ok", or why not (quarantined, stopped by a threshold, …).
    pub reason: String,
    /// Unix seconds.
    pub started_at: u64,
    pub updated_at: u64,
    pub next_cycle_at: Option<u64>,
    pub interval_s: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Writes what `daemon` is doing now. A state that cannot be written is logged, not fatal:
/// the cycles matter more than the report of them.
pub fn publish(daemon: &Daemon) {
    let (healthy, reason) = daemon.health();
    let record = {
        let s = daemon.status();
        let now = (Instant::now(), SystemTime::now());
        let started = now.1 - now.0.duration_since(daemon.started);
        Published {
            pid: std::process::id(),
            role: serde_json::to_value(s.role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            healthy,
            reason,
            started_at: unix(started),
            updated_at: unix(now.1),
            next_cycle_at: s.next_cycle.map(|n| unix(now.1 + n.saturating_duration_since(now.0))),
            interval_s: s.interval.as_secs(),
        }
    };
    if let Err(e) = Store::open(&daemon.cfg().state_path()).and_then(|s| s.save_json(KEY, &record)) {
        tracing::warn!(error = %e, "cannot publish the daemon's status in the state database");
    }
}

/// What the daemon last published, if it still runs (its pid is alive).
pub fn running(state: &Path) -> Option<Published> {
    let store = Store::open_read_only(state).ok()??;
    let p: Published = store.load_json(KEY).ok()??;
    Path::new(&format!("/proc/{}", p.pid)).exists().then_some(p)
}
