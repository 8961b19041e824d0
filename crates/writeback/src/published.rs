//! What a running daemon publishes in the state database for `writeback status`, which runs
//! in another process: its pid and role, when its next cycle runs, and why it does not write
//! (as `/healthz` says it). Rewritten after every cycle by the active instance; the pid (on
//! this host) or the time of the last update (another host's) tells whether it still runs.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use writeback_store::Store;

use crate::daemon::Daemon;

const KEY: &str = "daemon";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Published {
    pub pid: u32,
    /// The host it runs on (none from writeback 0.1: this host).
    #[serde(default)]
    pub host: Option<String>,
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
pub async fn publish(daemon: &Daemon) {
    let (healthy, reason) = daemon.health();
    let record = {
        let s = daemon.status();
        let now = (Instant::now(), SystemTime::now());
        let started = now.1 - now.0.duration_since(daemon.started);
        if s.role == crate::daemon::Role::Standby {
            // The active instance publishes; a standby is listed among the instances.
            return;
        }
        Published {
            pid: std::process::id(),
            host: Some(crate::lead::host()),
            role: serde_json::to_value(s.role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            healthy,
            reason,
            started_at: unix(started),
            updated_at: unix(now.1),
            next_cycle_at: s.next_cycle.map(|n| unix(now.1 + n.saturating_duration_since(now.0))),
            interval_s: s.interval.as_secs(),
        }
    };
    let fence = daemon.status().fence.clone();
    let saved = async {
        let mut store = Store::open(&daemon.cfg().state()?).await?;
        // Fenced: an instance that lost the lead does not overwrite the new leader's report.
        if let Some(f) = fence {
            store.fenced(f, &crate::lead::host());
        }
        store.save_json(KEY, &record).await.map_err(Into::into)
    };
    if let Err(e) = saved.await as Result<(), crate::error::CycleError> {
        tracing::warn!(error = %e, "cannot publish the daemon's status in the state database");
    }
}

/// What the daemon last published, if it still runs: its pid is alive (on this host), or it
/// published within three intervals (on another host).
pub async fn running(store: &Store) -> Option<Published> {
    let p: Published = store.load_json(KEY).await.ok()??;
    match &p.host {
        Some(h) if *h != crate::lead::host() => {
            let fresh = unix(SystemTime::now()).saturating_sub(p.updated_at) <= 3 * p.interval_s.max(20);
            fresh.then_some(p)
        }
        _ => std::path::Path::new(&format!("/proc/{}", p.pid)).exists().then_some(p),
    }
}
