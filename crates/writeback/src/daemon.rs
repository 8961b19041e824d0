//! `writeback run`: delta cycles every `[daemon] interval`, a full cycle every
//! `[daemon] full_interval`, a cycle on demand (`POST /sync` or SIGUSR1), the configuration read
//! again on SIGHUP (`reload`), one active instance per state database (a second waits as
//! standby and takes over), back-off while the DC or Graph is down, and a graceful stop on
//! SIGTERM/SIGINT after the current cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;
use writeback_core::{CloudId, GroupReport, Guarded, RunKind, RunStatus, SkipReason};

use crate::config::Config;
use crate::cycle::{self, RunResult};
use crate::error::Action;
use crate::lead::Lead;
use crate::{exit, web};

/// The longest wait between attempts while something is down.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Standby,
    Active,
    Stopping,
}

/// How the last cycle ended (`kind` unknown when it could not even start).
#[derive(Clone, Debug)]
pub struct LastCycle {
    pub kind: Option<RunKind>,
    pub status: RunStatus,
    pub at: SystemTime,
    pub message: Option<String>,
}

/// What the listener shows; updated by the cycle loop.
pub struct Status {
    pub role: Role,
    pub interval: Duration,
    pub last_success: Option<(Instant, SystemTime)>,
    pub last_cycle: Option<LastCycle>,
    pub running: Option<RunKind>,
    pub failures: u32,
    pub backoff_reason: Option<String>,
    pub next_cycle: Option<Instant>,
    pub lock_lost: bool,
    /// The active instance, as the state says (while this one is a standby).
    pub leader: Option<writeback_store::Leader>,
    /// This instance's epoch while it leads (what it publishes is fenced by it).
    pub fence: Option<writeback_store::Fence>,
    /// When this instance took the lead it holds.
    pub lead_since: Option<Instant>,
    /// Set while writing is stopped because most operations failed or the credentials or
    /// TLS trust are wrong; cleared by the next good cycle.
    pub quarantined: Option<String>,
    /// Set when the last cycle was stopped (or its removals held) by a threshold: what it
    /// said, with the command that goes past it.
    pub threshold: Option<String>,
    /// Groups whose new members the Tier-0 guard held back in the last cycle.
    pub guarded: Vec<Guarded>,
    /// Worst-case propagation of the last cycle: from the start of the cycle before it (a
    /// cloud change just after that read) to the end of this one's writes.
    pub propagation: Option<Duration>,
    /// When the last cycle that did its work started (its Graph read).
    pub last_done_start: Option<Instant>,
    /// The explanation of every group, as of the last cycle that planned it.
    pub reports: BTreeMap<CloudId, GroupReport>,
    /// When `POST /sync` last queued a cycle (at most one per interval).
    pub last_requested: Option<Instant>,
    /// Groups `POST /sync` asked for (`sync --group` while the daemon runs, the page's button):
    /// the next group cycle takes them all.
    pub queued_groups: BTreeSet<CloudId>,
    /// Group requests accepted so far, and the last one a group cycle has done (with its
    /// result, as `sync --json` prints it): `sync --group` waits for its number.
    pub group_requests: u64,
    pub groups_done: Option<(u64, serde_json::Value)>,
}

/// Groups queued at most: a request beyond it is refused (429), not dropped.
pub const MAX_QUEUED_GROUPS: usize = 500;

pub struct Daemon {
    /// The configuration cycles run with: replaced by a reload (SIGHUP).
    cfg: std::sync::RwLock<Arc<Config>>,
    /// Where it was read from, to read it again.
    pub config_path: std::path::PathBuf,
    pub status: Mutex<Status>,
    /// A cycle now, from a signal (the host's administrators): also ends a back-off.
    pub trigger: Notify,
    /// A cycle now, from `POST /sync`: never shortens a back-off or a quarantine.
    pub requested: Notify,
    /// A group cycle now, from `POST /sync` with groups (the same limits).
    pub groups_requested: Notify,
    pub started: Instant,
    pub metrics: PrometheusHandle,
    pub access: crate::access::Access,
    /// This process among all that ran (pid and start time): what `sync --group` checks its
    /// request numbers against (a pid alone repeats in a container).
    pub instance: String,
    /// Where incidents are sent (`[alerts]`), and which are open.
    pub alerts: Option<crate::alerts::Alerter>,
    pub incidents: Mutex<crate::alerts::Tracker>,
}

impl Daemon {
    /// A daemon that has not started a cycle yet: standby until it holds the state lock.
    pub fn new(
        cfg: Config,
        config_path: std::path::PathBuf,
        interval: Duration,
        metrics: PrometheusHandle,
        access: crate::access::Access,
    ) -> Daemon {
        let status = Status {
            role: Role::Standby,
            interval,
            last_success: None,
            last_cycle: None,
            running: None,
            failures: 0,
            backoff_reason: None,
            next_cycle: None,
            lock_lost: false,
            leader: None,
            fence: None,
            lead_since: None,
            quarantined: None,
            threshold: None,
            guarded: Vec::new(),
            propagation: None,
            last_done_start: None,
            reports: BTreeMap::new(),
            last_requested: None,
            queued_groups: BTreeSet::new(),
            group_requests: 0,
            groups_done: None,
        };
        Daemon {
            cfg: std::sync::RwLock::new(Arc::new(cfg)),
            config_path,
            status: Mutex::new(status),
            trigger: Notify::new(),
            requested: Notify::new(),
            groups_requested: Notify::new(),
            started: Instant::now(),
            metrics,
            access,
            instance: format!(
                "{}-{}",
                std::process::id(),
                SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
            ),
            alerts: None,
            incidents: Mutex::new(crate::alerts::Tracker::default()),
        }
    }

    /// The configuration in force now.
    pub fn cfg(&self) -> Arc<Config> {
        self.cfg.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_cfg(&self, cfg: Config) {
        *self.cfg.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(cfg);
    }

    pub fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Healthy: active, lock held, and a successful cycle within 3 intervals (or still
    /// within the first 3 intervals after start).
    pub fn health(&self) -> (bool, String) {
        let s = self.status();
        let limit = s.interval * 3;
        match s.role {
            Role::Standby => (true, "standby: another instance is active".into()),
            Role::Stopping => (false, "stopping".into()),
            Role::Active if s.lock_lost => {
                (false, "the state lock file was removed or replaced: this instance stopped writing".into())
            }
            Role::Active if s.quarantined.is_some() => {
                (false, format!("quarantined: {}", s.quarantined.clone().unwrap_or_default()))
            }
            Role::Active if s.threshold.is_some() => (
                false,
                format!(
                    "stopped by a threshold: {} (the daemon goes past a threshold only with an \
                        approval; after `writeback approve`, its next cycle goes ahead: SIGUSR1 or \
                        POST /sync starts it now)",
                    s.threshold.clone().unwrap_or_default()
                ),
            ),
            Role::Active => match s.last_success {
                Some((t, _)) if t.elapsed() <= limit && !s.guarded.is_empty() => (true, guard_reason(&s.guarded)),
                Some((t, _)) if t.elapsed() <= limit => (true, "ok".into()),
                // The first intervals of a lead (at start, or after a takeover) are its start.
                None if s.lead_since.unwrap_or(self.started).elapsed() <= limit => (true, "starting".into()),
                _ => (
                    false,
                    format!(
                        "no successful cycle for over {} s ({})",
                        limit.as_secs(),
                        s.backoff_reason.clone().unwrap_or_else(|| "no reason recorded".into())
                    ),
                ),
            },
        }
    }
}

/// Healthy, and what the Tier-0 guard holds: the same words as the daemon's WARN.
fn guard_reason(guarded: &[Guarded]) -> String {
    let each: Vec<String> = guarded.iter().map(Guarded::describe).collect();
    format!("ok, but the Tier-0 guard holds back new members of {} groups: {}", guarded.len(), each.join(" | "))
}

/// `[daemon] interval` (at least a second) and `full_interval`.
pub fn intervals(cfg: &Config) -> Result<(Duration, Duration), String> {
    match (humantime::parse_duration(&cfg.daemon.interval), humantime::parse_duration(&cfg.daemon.full_interval)) {
        (Ok(i), Ok(f)) => Ok((i.max(Duration::from_secs(1)), f)),
        _ => Err("[daemon] interval and full_interval must be durations such as \"60s\" and \"24h\"".into()),
    }
}

pub async fn run(cfg: Config, config_path: std::path::PathBuf, listen: Option<String>) -> u8 {
    let (interval, full_interval) = match intervals(&cfg) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::CONFIG;
        }
    };
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot set up metrics: {e}");
            return exit::CANNOT_RUN;
        }
    };
    let listen = listen.unwrap_or_else(|| cfg.daemon.listen.clone());
    let token = match cfg.daemon_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::CONFIG;
        }
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen} ([daemon] listen): {e}");
            return exit::CANNOT_RUN;
        }
    };
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: cannot read the address of {listen}: {e}");
            return exit::CANNOT_RUN;
        }
    };
    // Beyond loopback anyone on the network could run cycles and read group and member names.
    if !local.ip().is_loopback() && token.is_none() {
        eprintln!(
            "error: [daemon] listen = \"{listen}\" is not a loopback address: set \
                [daemon] token_file to a file holding a token (openssl rand -hex 32 > \
                /etc/writeback/daemon-token; chmod 600 it), or listen on 127.0.0.1"
        );
        return exit::CONFIG;
    }
    let access = crate::access::Access::new(local, &cfg.daemon.allowed_hosts, token);
    let alerts = match crate::alerts::Alerter::start(&cfg.alerts) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return exit::CONFIG;
        }
    };
    let mut d = Daemon::new(cfg, config_path, interval, metrics, access);
    d.alerts = alerts;
    let daemon = Arc::new(d);
    tracing::info!(%listen, "listening: /healthz, /metrics, and the status page at /");
    let app = web::router(daemon.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the listener stopped");
        }
    });

    let stop = Arc::new(Notify::new());
    spawn_signals(daemon.clone(), stop.clone());
    let me = crate::lead::me(Some(local));
    // The state's tables are created or migrated once, before the tasks that open it start.
    if let Err(e) = open_state(&daemon).await {
        tracing::warn!(error = %e, "the state cannot be opened yet");
    }
    let seen = tokio::spawn(crate::lead::seen(daemon.clone(), me.clone()));
    let code = loop {
        let lead = match crate::lead::wait(&daemon, &me, &stop).await {
            Ok(Some(l)) => l,
            Ok(None) => break exit::OK,
            Err(code) => break code,
        };
        {
            // A new lead starts afresh: what stopped the last one is in the history.
            let mut s = daemon.status();
            (s.role, s.leader, s.lock_lost, s.fence) = (Role::Active, None, false, Some(lead.fence()));
            (s.failures, s.quarantined, s.backoff_reason, s.threshold) = (0, None, None, None);
            (s.guarded, s.last_success, s.lead_since) = (Vec::new(), None, Some(Instant::now()));
        }
        tracing::info!(
            interval_s = interval.as_secs_f64(),
            full_interval_s = full_interval.as_secs_f64(),
            epoch = lead.fence().epoch,
            "active: running cycles"
        );
        let lost = lead.lost_notify().unwrap_or_default();
        let code = cycles(&daemon, &lead, &stop, &lost).await;
        if lead.lost() {
            // The PostgreSQL lead is gone (another instance took over, or PostgreSQL did not
            // answer): back to standby, which leads again once it can.
            {
                let mut s = daemon.status();
                (s.role, s.fence, s.lead_since) = (Role::Standby, None, None);
            }
            lead.release().await;
            continue;
        }
        daemon.status().role = Role::Stopping;
        // Still fenced: if the lead was lost meanwhile, the new leader's report stays.
        crate::published::publish(&daemon).await;
        daemon.status().fence = None;
        lead.release().await;
        break code;
    };
    seen.abort();
    crate::lead::gone(&daemon, &me).await;
    tracing::info!("stopped");
    code
}

async fn open_state(daemon: &Daemon) -> Result<(), crate::error::CycleError> {
    writeback_store::Store::open(&daemon.cfg().state()?).await?.close().await;
    Ok(())
}

/// How long ago the last full cycle recorded in the state started, if it did its work: a new
/// leader (a takeover, a restart) goes on with delta cycles from the shared watermarks until
/// `full_interval` has passed since it.
async fn last_full_age(cfg: &Config) -> Option<Duration> {
    let store = writeback_store::Store::open_read_only(&cfg.state().ok()?).await.ok()??;
    store.watermarks().await.ok()??;
    let full = store.last_full_run().await.ok()??;
    let at = humantime::parse_rfc3339(&full.started_at).ok()?;
    SystemTime::now().duration_since(at).ok()
}

async fn cycles(daemon: &Daemon, lead: &Lead, stop: &Notify, lost: &Notify) -> u8 {
    let full_interval = intervals(&daemon.cfg()).map_or(Duration::MAX, |(_, f)| f);
    let mut last_full: Option<Instant> = match last_full_age(&daemon.cfg()).await {
        Some(age) if age < full_interval => Instant::now().checked_sub(age),
        _ => None,
    };
    let mut next = Instant::now();
    // Every gauge an alert rule compares exists from the start: a daemon whose first cycles
    // fail still raises WritebackCyclesFailing (docs/monitoring).
    for g in ["writeback_quarantined", "writeback_stopped", "writeback_guarded_groups"] {
        gauge!(g).set(0.0);
    }
    loop {
        // A reload (SIGHUP) may change them: read for every cycle.
        let cfg = daemon.cfg();
        let Ok((interval, full_interval)) = intervals(&cfg) else { return exit::CONFIG };
        gauge!("writeback_interval_seconds").set(interval.as_secs_f64());
        let backing_off = {
            let mut s = daemon.status();
            s.next_cycle = Some(next);
            s.failures > 0
        };
        crate::published::publish(daemon).await;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = daemon.trigger.notified() => tracing::info!("cycle requested by a signal"),
            // A request over HTTP waits out a back-off or a quarantine: a web page must not be
            // able to make the daemon retry a refused bind (and lock the account out).
            _ = daemon.requested.notified(), if !backing_off => tracing::info!("cycle requested (POST /sync)"),
            _ = daemon.groups_requested.notified(), if !backing_off => {
                group_cycle(daemon, &cfg, lead, interval, &mut next).await;
                watch(daemon, &cfg).await;
                if let Err(why) = lead.check().await {
                    tracing::error!(reason = %why, "stopping writes");
                    daemon.status().lock_lost = !lead.lost();
                    return exit::CANNOT_RUN;
                }
                continue;
            }
            _ = stop.notified() => return exit::OK,
            _ = lost.notified() => {}
        }
        if let Err(why) = lead.check().await {
            tracing::error!(reason = %why, "stopping writes");
            daemon.status().lock_lost = !lead.lost();
            return exit::CANNOT_RUN;
        }
        // Full at start (it explains every group for the status page) and every full_interval.
        let full = last_full.is_none_or(|t| t.elapsed() >= full_interval);
        let kind = if full { RunKind::Full } else { RunKind::Delta };
        daemon.status().running = Some(kind);
        let started = Instant::now();
        // The daemon never goes past a threshold: an administrator decides that.
        let result = cycle::sync(&cfg, writeback_core::Allow::default(), full, lead).await;
        // The status is updated in one go, and let go before the lead is checked.
        {
            let mut s = daemon.status();
            s.running = None;
            match result {
                Ok(r) if r.status == RunStatus::Quarantined => {
                    record(&mut s, &r, started);
                    let reason = r.message.clone().unwrap_or_else(|| "most operations failed".into());
                    let wait = failed(&mut s, &reason, true, interval);
                    tracing::error!(%reason, retry_in_s = wait.as_secs(), "quarantined: writing stopped");
                    next = Instant::now() + wait;
                }
                Ok(r) => {
                    if r.kind == RunKind::Full {
                        last_full = Some(Instant::now());
                    }
                    record(&mut s, &r, started);
                    s.threshold =
                        (r.status == RunStatus::StoppedDeleteThreshold).then(|| r.message.clone().unwrap_or_default());
                    if let Some(why) = &s.threshold {
                        let b = r.stopped.blocked.as_ref();
                        tracing::warn!(
                            run_id = r.run_id,
                            reason = %why,
                            threshold = b.map(|b| b.threshold.approve_option().trim_start_matches('-')),
                            count = b.map(|b| b.count),
                            held_groups = r.stopped.held.len(),
                            approve = %r.stopped.approve_commands().join(" ; "),
                            "stopped by a threshold: approve it, and the next cycle goes ahead"
                        );
                    }
                    for g in &r.stopped.guarded {
                        tracing::warn!(
                            run_id = r.run_id,
                            group = %g.cloud_id,
                            name = %g.display_name,
                            reason = %g.path,
                            count = g.held,
                            resolve = %g.resolution(),
                            "the Tier-0 guard held back new members"
                        );
                    }
                    s.guarded = r.stopped.guarded.clone();
                    gauge!("writeback_stopped").set(if s.threshold.is_some() { 1.0 } else { 0.0 });
                    gauge!("writeback_guarded_groups").set(s.guarded.len() as f64);
                    s.failures = 0;
                    s.backoff_reason = None;
                    s.quarantined = None;
                    gauge!("writeback_quarantined").set(0.0);
                    next = Instant::now() + interval;
                }
                Err(e) => {
                    let reason = e.to_string();
                    let wait = failed(&mut s, &reason, e.action() == Action::Quarantine, interval);
                    tracing::warn!(%reason, retry_in_s = wait.as_secs(), "cycle failed; backing off");
                    counter!("writeback_cycles_total", "kind" => kind.as_str(), "status" => RunStatus::Failed.as_str())
                        .increment(1);
                    s.last_cycle = Some(LastCycle {
                        kind: None,
                        status: RunStatus::Failed,
                        at: SystemTime::now(),
                        message: Some(reason.clone()),
                    });
                    next = Instant::now() + wait;
                }
            }
        }
        watch(daemon, &cfg).await;
        if let Err(why) = lead.check().await {
            tracing::error!(reason = %why, "stopping writes");
            daemon.status().lock_lost = !lead.lost();
            return exit::CANNOT_RUN;
        }
    }
}

/// After a cycle: the incidents open now, against those already sent (`[alerts]`).
async fn watch(daemon: &Daemon, cfg: &Config) {
    let Some(alerter) = &daemon.alerts else { return };
    let Ok(after) = cfg.alerts.after() else { return };
    // Unreadable (the state's server down): the groups' incidents stay as they were, neither
    // cleared nor raised again.
    let errors = match cfg.state() {
        Ok(t) => match writeback_store::Store::open_read_only(&t).await {
            Ok(Some(store)) => store.errors().await.ok(),
            Ok(None) => Some(Vec::new()),
            Err(_) => None,
        },
        Err(_) => None,
    };
    let (raised, cleared) = {
        let s = daemon.status();
        let since_ok = match (s.last_success, s.lead_since) {
            (Some((at, _)), _) => at.elapsed(),
            (None, Some(lead)) => lead.elapsed(),
            (None, None) => daemon.started.elapsed(),
        };
        let mut now = crate::alerts::incidents(&s, errors.as_deref().unwrap_or_default(), after, since_ok);
        drop(s);
        let mut tracker = daemon.incidents.lock().unwrap_or_else(|p| p.into_inner());
        if errors.is_none() {
            now.extend(tracker.open_groups());
        }
        tracker.update(now)
    };
    alerter.notify(raised, cleared);
}

/// The groups `POST /sync` queued, in one group cycle. Its result is kept for the requests it
/// answers; it leaves the tenant's cycles, their schedule, stops and reports as they were,
/// but a failure backs off as theirs do (a request must not make the daemon retry a refused
/// bind).
async fn group_cycle(daemon: &Daemon, cfg: &Config, lead: &Lead, interval: Duration, next: &mut Instant) {
    let (ids, through) = {
        let mut s = daemon.status();
        let ids: Vec<CloudId> = std::mem::take(&mut s.queued_groups).into_iter().collect();
        s.running = Some(RunKind::Group);
        (ids, s.group_requests)
    };
    if ids.is_empty() {
        daemon.status().running = None;
        return;
    }
    tracing::info!(groups = ids.len(), "group cycle requested (POST /sync)");
    let result = cycle::sync_groups(cfg, writeback_core::Allow::default(), &ids, lead).await;
    let mut s = daemon.status();
    s.running = None;
    match result {
        // Most operations failed: writing stops and backs off, as after a tenant cycle.
        Ok(r) if r.status == RunStatus::Quarantined => {
            let reason = r.message.clone().unwrap_or_else(|| "most operations failed".into());
            let wait = failed(&mut s, &reason, true, interval);
            tracing::error!(%reason, retry_in_s = wait.as_secs(), "quarantined by a group cycle: writing stopped");
            counter!("writeback_cycles_total", "kind" => "group", "status" => r.status.as_str()).increment(1);
            let mut doc = crate::output::sync_doc(&r);
            doc["message"] = serde_json::json!(r.message);
            s.groups_done = Some((through, doc));
            *next = Instant::now() + wait;
        }
        Ok(r) => {
            for g in &r.reports {
                s.reports.insert(g.cloud_id.clone(), g.clone());
            }
            counter!("writeback_cycles_total", "kind" => r.kind.as_str(), "status" => r.status.as_str()).increment(1);
            let mut doc = crate::output::sync_doc(&r);
            doc["message"] = serde_json::json!(r.message);
            s.groups_done = Some((through, doc));
        }
        Err(e) => {
            let reason = e.to_string();
            let wait = failed(&mut s, &reason, e.action() == Action::Quarantine, interval);
            tracing::warn!(%reason, retry_in_s = wait.as_secs(), "group cycle failed; backing off");
            counter!("writeback_cycles_total", "kind" => "group", "status" => RunStatus::Failed.as_str()).increment(1);
            s.groups_done = Some((through, serde_json::json!({"kind": "group", "status": "failed", "error": reason})));
            *next = Instant::now() + wait;
        }
    }
}

/// A cycle failed (or was quarantined, `quarantine`): one more failure, the back-off it earns
/// (returned) and why, in the status.
fn failed(s: &mut Status, reason: &str, quarantine: bool, interval: Duration) -> Duration {
    s.failures += 1;
    let wait = backoff(interval, s.failures);
    if quarantine {
        s.quarantined = Some(reason.to_string());
        gauge!("writeback_quarantined").set(1.0);
    }
    s.backoff_reason = Some(format!("{reason} (attempt {}, next in {} s)", s.failures, wait.as_secs()));
    wait
}

/// interval × 2^(failures-1), at most [`MAX_BACKOFF`] (and never below the interval).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(10);
    (interval * factor).min(MAX_BACKOFF.max(interval))
}

fn record(s: &mut Status, r: &RunResult, started: Instant) {
    let took = started.elapsed();
    let now = (Instant::now(), SystemTime::now());
    if r.status.done() {
        // A change made in the cloud just after the last done cycle read reached AD now.
        if let Some(prev) = s.last_done_start.replace(started) {
            let p = prev.elapsed();
            s.propagation = Some(p);
            gauge!("writeback_propagation_seconds").set(p.as_secs_f64());
        }
        s.last_success = Some(now);
        let unix = now.1.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        gauge!("writeback_last_success_timestamp_seconds").set(unix);
    }
    s.last_cycle = Some(LastCycle { kind: Some(r.kind), status: r.status, at: now.1, message: r.message.clone() });
    if r.kind == RunKind::Full {
        s.reports.clear();
    }
    for g in &r.reports {
        s.reports.insert(g.cloud_id.clone(), g.clone());
    }
    counter!("writeback_cycles_total", "kind" => r.kind.as_str(), "status" => r.status.as_str()).increment(1);
    histogram!("writeback_cycle_duration_seconds", "kind" => r.kind.as_str()).record(took.as_secs_f64());
    let c = &r.summary;
    for (op, n) in [
        ("add", c.adds),
        ("update", c.updates),
        ("rename", c.renames),
        ("move", c.moves),
        ("delete", c.deletes),
        ("member-add", c.member_adds),
        ("member-remove", c.member_removes),
    ] {
        counter!("writeback_operations_total", "op" => op).increment(n as u64);
    }
    counter!("writeback_graph_requests_total").increment(r.graph_requests);
    counter!("writeback_ldap_operations_total").increment(r.ldap_operations);
    counter!("writeback_graph_throttled_total").increment(r.graph_throttled);
    gauge!("writeback_cycle_errors").set(c.errors as f64);
    let in_scope = s.reports.values().filter(|g| g.in_scope).count();
    gauge!("writeback_groups_in_scope").set(in_scope as f64);
    let mut by_reason: BTreeMap<SkipReason, usize> = SkipReason::ALL.iter().map(|r| (*r, 0)).collect();
    let skipped = s.reports.values().filter(|g| g.in_scope).flat_map(|g| &g.members).filter_map(|m| m.reason);
    for reason in skipped {
        *by_reason.entry(reason).or_default() += 1;
    }
    for (reason, n) in by_reason {
        gauge!("writeback_skipped_members", "reason" => reason.as_str()).set(n as f64);
    }
}

fn spawn_signals(daemon: Arc<Daemon>, stop: Arc<Notify>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mk = |k: SignalKind| signal(k).map_err(|e| tracing::error!(error = %e, "cannot listen for signals"));
    let (Ok(mut term), Ok(mut int), Ok(mut hup), Ok(mut usr1)) = (
        mk(SignalKind::terminate()),
        mk(SignalKind::interrupt()),
        mk(SignalKind::hangup()),
        mk(SignalKind::user_defined1()),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
                _ = hup.recv() => { crate::reload::reload(&daemon); continue; }
                _ = usr1.recv() => { daemon.trigger.notify_one(); continue; }
            }
            if stopping {
                tracing::warn!("second stop signal: leaving now; the interrupted cycle is repeated at the next start");
                std::process::exit(i32::from(exit::CANNOT_RUN));
            }
            stopping = true;
            tracing::info!("stopping after the current cycle (send the signal again to leave at once)");
            stop.notify_one();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_secs(60);
        assert_eq!(backoff(i, 1), i);
        assert_eq!(backoff(i, 2), i * 2);
        assert_eq!(backoff(i, 4), i * 8);
        assert_eq!(backoff(i, 30), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(3600), 3), Duration::from_secs(3600), "never below the interval");
    }
}
