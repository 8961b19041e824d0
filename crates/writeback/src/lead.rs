//! The lead: what lets this process write to AD and to the state. With a SQLite state, the
//! file lock (`lock`), one host; with PostgreSQL, the advisory-lock lease
//! (`writeback_store::lead`), any number of hosts. Either way a new holder takes a new epoch,
//! every run records the host and epoch that ran it, and the holder checks the lead before
//! every batch of AD writes (`WriteGate`).
//!
//! Architecture invariant: only the holder of the current epoch writes to AD.

use std::sync::Arc;

use writeback_ad::WriteGate;
use writeback_store::lead::{Attempt, Lease, Me, Timing};
use writeback_store::{Fence, Leader, Store, Target};

use tokio::sync::Notify;

use crate::config::Config;
use crate::daemon::{Daemon, Role};
use crate::error::CycleError;
use crate::exit;
use crate::lock::{LockWatch, StateLock};

pub enum Lead {
    File {
        lock: StateLock,
        fence: Fence,
    },
    /// The lease, its heartbeat task (every beat, also while a cycle reads), and what that task
    /// tells when the lead is lost.
    Pg {
        lease: Arc<Lease>,
        beat: tokio::task::JoinHandle<()>,
        lost: Arc<Notify>,
    },
}

/// Why this process does not lead now.
pub enum NotLead {
    /// Another process holds the SQLite state's lock (its pid).
    File(String),
    /// Another instance leads the PostgreSQL deployment.
    Pg(Option<Leader>),
}

impl NotLead {
    pub fn describe(&self, cfg: &Config) -> String {
        match self {
            NotLead::File(pid) => format!(
                "another writeback (pid {pid}) holds the state lock {}: a daemon runs, or another sync; \
                 wait for it (or stop the daemon) and try again",
                crate::lock::lock_path(&cfg.state_path()).display()
            ),
            NotLead::Pg(Some(l)) => format!(
                "another instance leads this deployment (host {}, pid {}, epoch {}, since {}{}): \
                 run this there, or stop it first",
                l.host,
                l.pid,
                l.epoch,
                l.since,
                l.address.as_deref().map(|a| format!(", listening at {a}")).unwrap_or_default()
            ),
            NotLead::Pg(None) => "another instance holds the lead of this deployment".into(),
        }
    }
}

/// This host's name, as the state records it.
pub fn host() -> String {
    writeback_store::host()
}

/// This process, as the state records it: the host, and where its listener is (if any).
pub fn me(listen: Option<std::net::SocketAddr>) -> Me {
    let host = host();
    Me { address: listen.map(|a| format!("{host}:{}", a.port())), host }
}

/// The lead for one command (`sync`, `adopt --yes`): taken now or refused with who holds it
/// and `hint` (what to do instead).
pub async fn for_command(cfg: &Config, hint: &str) -> Result<Lead, CycleError> {
    let interval = crate::daemon::intervals(cfg).map(|(i, _)| i).unwrap_or(std::time::Duration::from_secs(60));
    match Lead::try_take(cfg, &me(None), Timing::for_interval(interval)).await? {
        Ok(lead) => Ok(lead),
        Err(not) => Err(CycleError::Lock(format!("{}. {hint}", not.describe(cfg)))),
    }
}

impl Lead {
    /// Takes the lead if it is free (never waits).
    pub async fn try_take(cfg: &Config, me: &Me, timing: Timing) -> Result<Result<Lead, NotLead>, CycleError> {
        let deployment = cfg.deployment();
        match cfg.state()? {
            Target::Sqlite(path) => {
                let lock = match StateLock::try_acquire(&path) {
                    Ok(Ok(l)) => l,
                    Ok(Err(holder)) => return Ok(Err(NotLead::File(holder))),
                    Err(e) => {
                        return Err(CycleError::Lock(format!(
                            "cannot lock {}: {e}",
                            crate::lock::lock_path(&path).display()
                        )))
                    }
                };
                Ok(Ok(Lead::file(lock, &path, &deployment, me).await?))
            }
            Target::Postgres(pg) => {
                // The tables first (a new database: the lead's own queries need them).
                Store::open(&Target::Postgres(pg.clone())).await?.close().await;
                match Lease::try_acquire(&pg, &deployment, me, timing).await? {
                    Attempt::Leading(lease) => Ok(Ok(Lead::pg(lease))),
                    Attempt::Standby(holder) => Ok(Err(NotLead::Pg(holder))),
                }
            }
        }
    }

    fn pg(lease: Lease) -> Lead {
        let (lease, lost) = (Arc::new(lease), Arc::new(Notify::new()));
        let (task_lease, task_lost) = (lease.clone(), lost.clone());
        let beat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(task_lease.timing().beat()).await;
                if task_lease.beat().await.is_err() {
                    task_lost.notify_one();
                    return;
                }
            }
        });
        Lead::Pg { lease, beat, lost }
    }

    /// What the heartbeat task tells when the lead is lost (PostgreSQL only).
    pub fn lost_notify(&self) -> Option<Arc<Notify>> {
        match self {
            Lead::File { .. } => None,
            Lead::Pg { lost, .. } => Some(lost.clone()),
        }
    }

    /// The SQLite state's lock, held: a new epoch is recorded for it.
    pub async fn file(lock: StateLock, path: &std::path::Path, deployment: &str, me: &Me) -> Result<Lead, CycleError> {
        let store = Store::open(&Target::Sqlite(path.to_path_buf())).await?;
        let epoch = store.take_epoch(deployment, &me.host, me.address.as_deref()).await?;
        store.close().await;
        Ok(Lead::File { lock, fence: Fence { deployment: deployment.to_string(), epoch } })
    }

    pub fn fence(&self) -> Fence {
        match self {
            Lead::File { fence, .. } => fence.clone(),
            Lead::Pg { lease, .. } => lease.fence().clone(),
        }
    }

    /// Whether this process still leads (see `WriteGate`); `Err` says why not.
    pub async fn check(&self) -> Result<(), String> {
        match self {
            Lead::File { lock, .. } => lock.check(),
            Lead::Pg { lease, .. } => lease.check().await,
        }
    }

    /// What a task that writes for this holder asks before each write.
    pub fn gate(&self) -> Arc<dyn WriteGate> {
        match self {
            Lead::File { lock, .. } => Arc::new(lock.watch()),
            Lead::Pg { lease, .. } => Arc::new(LeaseGate(lease.clone())),
        }
    }

    /// True once the PostgreSQL lead is lost (a file lock is never lost this way: see
    /// `StateLock::intact`).
    pub fn lost(&self) -> bool {
        matches!(self, Lead::Pg { lease, .. } if lease.lost())
    }

    /// Gives the lead up.
    pub async fn release(self) {
        match self {
            Lead::File { lock, .. } => drop(lock),
            Lead::Pg { lease, beat, .. } => {
                beat.abort();
                let _ = beat.await;
                match Arc::try_unwrap(lease) {
                    Ok(lease) => lease.release().await,
                    // A gate still holds it: the session ends when its last holder drops it.
                    Err(_) => tracing::debug!("the lead is released when its last user ends"),
                }
            }
        }
    }
}

struct LeaseGate(Arc<Lease>);

impl WriteGate for LeaseGate {
    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(self.0.check())
    }

    fn still(&self) -> Result<(), String> {
        self.0.still()
    }
}

impl WriteGate for LockWatch {
    fn check(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move { self.still() })
    }

    fn still(&self) -> Result<(), String> {
        match self.intact() {
            true => Ok(()),
            false => Err(format!(
                "the state lock file {} was removed or replaced since this instance locked it: \
                 it stopped writing; restart it",
                self.path().display()
            )),
        }
    }
}

/// The daemon's wait for the lead: at once if free; as a standby otherwise (the SQLite lock is
/// waited on; PostgreSQL's is tried every beat, and a silent leader replaced). `None` when
/// stopped meanwhile; `Err` with the exit code when it cannot wait.
pub async fn wait(daemon: &Daemon, me: &Me, stop: &Notify) -> Result<Option<Lead>, u8> {
    let cfg = daemon.cfg();
    let timing = Timing::for_interval(daemon.status().interval);
    let mut said: Option<String> = None;
    loop {
        let attempt = tokio::select! {
            a = Lead::try_take(&cfg, me, timing) => a,
            _ = stop.notified() => return Ok(None),
        };
        match (attempt, cfg.state()) {
            (Ok(Ok(lead)), _) => return Ok(Some(lead)),
            (Ok(Err(NotLead::File(holder))), Ok(Target::Sqlite(path))) => {
                daemon.status().role = Role::Standby;
                tracing::warn!(
                    holder,
                    lock = %crate::lock::lock_path(&path).display(),
                    "standby: another writeback is active on this state database; waiting to take over"
                );
                return tokio::select! {
                    l = StateLock::acquire_waiting(&path) => match l {
                        Ok(l) => Lead::file(l, &path, &cfg.deployment(), me).await.map(Some).map_err(|e| {
                            eprintln!("error: {e}");
                            exit::CANNOT_RUN
                        }),
                        Err(e) => {
                            eprintln!("error: cannot lock the state database: {e}");
                            Err(exit::CANNOT_RUN)
                        }
                    },
                    _ = stop.notified() => Ok(None),
                };
            }
            (Ok(Err(NotLead::Pg(holder))), _) => {
                let who = holder.as_ref().map(|l| format!("{} (pid {}, epoch {})", l.host, l.pid, l.epoch));
                if said != who {
                    tracing::info!(leader = who.as_deref().unwrap_or("unknown"), "standby: another instance leads");
                    said = who;
                }
                let mut s = daemon.status();
                (s.role, s.leader) = (Role::Standby, holder);
            }
            (Err(e @ CycleError::Store(writeback_store::StoreError::OtherDeployment { .. })), _) => {
                eprintln!("error: {e}");
                return Err(exit::CONFIG);
            }
            (Err(e), Ok(Target::Postgres(_))) => {
                tracing::warn!(error = %e, "cannot take the lead now (PostgreSQL); trying again");
                daemon.status().role = Role::Standby;
            }
            (Err(e), _) | (Ok(Err(_)), Err(e)) => {
                eprintln!("error: {e}");
                return Err(e.exit_code());
            }
            (Ok(Err(NotLead::File(_))), Ok(Target::Postgres(_))) => return Err(exit::CANNOT_RUN),
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.beat()) => {}
            _ = stop.notified() => return Ok(None),
        }
    }
}

/// Says in the state, every few seconds, that this daemon has it open and in which role
/// (`writeback status`, the status page). Failures are logged once and retried.
pub async fn seen(daemon: Arc<Daemon>, me: Me) {
    let mut store: Option<Store> = None;
    let mut failing = false;
    loop {
        let role = match daemon.status().role {
            Role::Active => writeback_store::Role::Active,
            Role::Standby => writeback_store::Role::Standby,
            Role::Stopping => return,
        };
        if store.is_none() {
            store = match daemon.cfg().state() {
                Ok(t) => Store::open(&t).await.ok(),
                Err(_) => None,
            };
        }
        let said = match &store {
            Some(s) => {
                s.seen(&me.host, std::process::id(), role, me.address.as_deref()).await.map_err(|e| e.to_string())
            }
            None => Err("the state cannot be opened".into()),
        };
        match said {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot record this instance in the state");
                }
                failing = true;
                store = None;
            }
        }
        tokio::time::sleep(SEEN_EVERY).await;
    }
}

const SEEN_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The daemon stops: it is no longer listed.
pub async fn gone(daemon: &Daemon, me: &Me) {
    if let Ok(t) = daemon.cfg().state() {
        if let Ok(s) = Store::open(&t).await {
            let _ = s.gone(&me.host, std::process::id()).await;
            s.close().await;
        }
    }
}
