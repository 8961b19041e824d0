//! Leadership on PostgreSQL: one active instance per deployment, across hosts.
//!
//! The active instance holds a session-level advisory lock keyed by the deployment, on a
//! connection kept for that purpose, and the deployment's epoch in the `leader` row, which
//! every takeover increments. Only the holder of the current epoch writes (see `Fence`):
//! - it heartbeats on the lock's connection (the row's `heartbeat`, by PostgreSQL's clock);
//! - before every batch of AD writes it checks on that connection that its session is alive and
//!   the epoch has not moved, and every state transaction checks the epoch;
//! - it stops on its own once no heartbeat succeeded for `stale` less a beat (by its own
//!   clock, which runs on while the process is paused), before a standby may judge it dead.
//!
//! A standby takes the lock when the leader's session ends (a killed process: PostgreSQL
//! releases the lock at once), or, when the heartbeat is older than `stale` (host gone, network
//! cut, a paused process), ends the leader's session itself (`pg_terminate_backend`, allowed
//! between sessions of the same role) and takes it then. Taking over, it ends every session of
//! the previous leader's process (they carry its `application_name`) before and after it moves
//! the epoch: a state transaction of the old leader that read the old epoch cannot commit after.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use tokio::sync::Mutex;

use crate::{Fence, Leader, PgTarget, Result, StoreError};

/// How long connecting to PostgreSQL may take.
const CONNECT: Duration = Duration::from_secs(10);

/// This instance, as the leader row and the instances show it.
#[derive(Clone, Debug)]
pub struct Me {
    pub host: String,
    pub address: Option<String>,
}

/// How long a leader may stay silent before a standby ends its session, and how often it
/// speaks (a third of that).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub stale: Duration,
}

impl Timing {
    /// From the daemon's interval: a dead leader is replaced within one interval (a standby
    /// looks every `beat`, and judges it dead after `stale`), 3 s at the least.
    pub fn for_interval(interval: Duration) -> Timing {
        Timing { stale: (interval / 2).clamp(Duration::from_secs(3), Duration::from_secs(30)) }
    }

    pub fn beat(&self) -> Duration {
        self.stale / 3
    }
}

/// The lead, held: `release` it (or drop it) to let a standby take over.
pub struct Lease {
    conn: Mutex<PgConnection>,
    fence: Fence,
    timing: Timing,
    /// When the last heartbeat succeeded (this process's clock).
    last_beat: std::sync::Mutex<Instant>,
    lost: AtomicBool,
}

/// The outcome of trying to lead.
pub enum Attempt {
    Leading(Lease),
    /// Another instance leads (its row, if it wrote one).
    Standby(Option<Leader>),
}

async fn connect(target: &PgTarget) -> Result<PgConnection> {
    let at = || crate::Target::Postgres(target.clone()).to_string();
    let opts = PgConnectOptions::from_str(&target.connect_url())
        .map_err(|e| StoreError::Unreachable { at: at(), message: e.to_string() })?;
    match tokio::time::timeout(CONNECT, opts.connect()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(StoreError::Unreachable { at: at(), message: e.to_string() }),
        Err(_) => Err(StoreError::Unreachable { at: at(), message: format!("no answer within {CONNECT:?}") }),
    }
}

const LEADER: &str =
    "SELECT deployment, epoch, host, pid, address, since, heartbeat, stale_ms FROM leader WHERE deployment = $1";

async fn leader(conn: &mut PgConnection, deployment: &str) -> Result<Option<(Leader, Option<i64>)>> {
    let row = sqlx::query(LEADER).bind(deployment).fetch_optional(&mut *conn).await?;
    Ok(match row {
        None => None,
        Some(r) => Some((
            Leader {
                deployment: r.try_get(0)?,
                epoch: r.try_get(1)?,
                host: r.try_get(2)?,
                pid: r.try_get(3)?,
                address: r.try_get(4)?,
                since: r.try_get(5)?,
                heartbeat: r.try_get(6)?,
            },
            r.try_get(7)?,
        )),
    })
}

async fn try_lock(conn: &mut PgConnection, deployment: &str) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(deployment)
        .fetch_one(&mut *conn)
        .await?)
}

/// Ends every session of the process that led before (its `application_name`), but this one.
async fn end_sessions_of(conn: &mut PgConnection, previous: &Leader) -> Result<usize> {
    let name = crate::application_name(&previous.host, previous.pid);
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ended.len())
}

impl Lease {
    /// Leads if the lock is free or its holder has gone silent for `stale` (the longer of
    /// this instance's and the leader's own); a new epoch is then taken. Otherwise says who
    /// leads.
    pub async fn try_acquire(target: &PgTarget, deployment: &str, me: &Me, timing: Timing) -> Result<Attempt> {
        let mut conn = connect(target).await?;
        let other: Option<String> =
            sqlx::query_scalar("SELECT deployment FROM leader WHERE deployment <> $1 ORDER BY deployment LIMIT 1")
                .bind(deployment)
                .fetch_optional(&mut conn)
                .await?;
        if let Some(theirs) = other {
            let at = crate::Target::Postgres(target.clone()).to_string();
            return Err(StoreError::OtherDeployment { at, theirs, ours: deployment.to_string() });
        }
        let mut got = try_lock(&mut conn, deployment).await?;
        if !got {
            let stale = match leader(&mut conn, deployment).await? {
                Some((_, Some(ms))) => timing.stale.max(Duration::from_millis(ms.max(0) as u64)),
                _ => timing.stale,
            };
            let silent: Option<bool> = sqlx::query_scalar(
                "SELECT (clock_timestamp() - heartbeat::timestamptz) > make_interval(secs => $2)
                 FROM leader WHERE deployment = $1",
            )
            .bind(deployment)
            .bind(stale.as_secs_f64())
            .fetch_optional(&mut conn)
            .await?;
            if silent == Some(true) {
                // End the silent holder's session (exactly the one holding this lock), then
                // wait for PostgreSQL to release its lock.
                let ended: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks
                     WHERE locktype = 'advisory' AND granted AND objsubid = 1
                       AND classid = ((hashtextextended($1, 0) >> 32) & 4294967295)::oid
                       AND objid = (hashtextextended($1, 0) & 4294967295)::oid",
                )
                .bind(deployment)
                .fetch_all(&mut conn)
                .await?;
                tracing::warn!(
                    deployment,
                    sessions = ended.len(),
                    "the active instance has been silent for over {stale:?}: its session was ended to take over"
                );
                for _ in 0..20 {
                    got = try_lock(&mut conn, deployment).await?;
                    if got {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if !got {
            let holder = leader(&mut conn, deployment).await?.map(|(l, _)| l);
            let _ = conn.close().await;
            return Ok(Attempt::Standby(holder));
        }
        let pid = i64::from(std::process::id());
        let previous = leader(&mut conn, deployment).await?.map(|(l, _)| l);
        let previous = previous.filter(|p| !(p.host == me.host && p.pid == pid));
        if let Some(p) = &previous {
            end_sessions_of(&mut conn, p).await?;
        }
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO leader (deployment, epoch, host, pid, backend_pid, address, since, heartbeat, stale_ms)
               VALUES ($1, 1, $2, $3, pg_backend_pid(), $4,
                       to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                       to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), $5)
             ON CONFLICT (deployment) DO UPDATE SET epoch = leader.epoch + 1, host = excluded.host,
               pid = excluded.pid, backend_pid = excluded.backend_pid, address = excluded.address,
               since = excluded.since, heartbeat = excluded.heartbeat, stale_ms = excluded.stale_ms
             RETURNING epoch",
        )
        .bind(deployment)
        .bind(&me.host)
        .bind(pid)
        .bind(&me.address)
        .bind(timing.stale.as_millis().min(i64::MAX as u128) as i64)
        .fetch_one(&mut conn)
        .await?;
        // Again: a session the old leader opened meanwhile read the old epoch.
        if let Some(p) = &previous {
            let ended = end_sessions_of(&mut conn, p).await?;
            let (previous, previous_pid) = (&p.host, p.pid);
            tracing::info!(%previous, previous_pid, sessions = ended, "the previous leader's sessions were ended");
        }
        tracing::info!(deployment, epoch, host = %me.host, "this instance leads");
        Ok(Attempt::Leading(Lease {
            conn: Mutex::new(conn),
            fence: Fence { deployment: deployment.to_string(), epoch },
            timing,
            last_beat: std::sync::Mutex::new(Instant::now()),
            lost: AtomicBool::new(false),
        }))
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// True once the lead is lost (never false again).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The check without I/O: not lost, and the last heartbeat recent enough that no standby
    /// may have judged this instance dead (`stale` less a beat, by this process's clock).
    pub fn still(&self) -> std::result::Result<(), String> {
        if self.lost() {
            return Err(self.why_lost("an earlier check failed"));
        }
        let silent_for = self.last_beat.lock().map(|t| t.elapsed()).unwrap_or(Duration::MAX);
        if silent_for.saturating_add(self.timing.beat()) >= self.timing.stale {
            return Err(self.lose(&format!("no heartbeat reached PostgreSQL for {silent_for:?}")));
        }
        Ok(())
    }

    /// Checks the lead before a batch of writes: `still`, then, on the lock's connection, that
    /// the session is alive (its lock with it) and the epoch is still this instance's. A
    /// failure loses the lead for good: the caller stops writing and becomes a standby.
    pub async fn check(&self) -> std::result::Result<(), String> {
        self.still()?;
        let current: std::result::Result<Option<i64>, String> = self
            .on_conn("SELECT epoch FROM leader WHERE deployment = $1 AND backend_pid = pg_backend_pid()", false)
            .await;
        match current {
            Ok(Some(e)) if e == self.fence.epoch => self.still(),
            Ok(_) => Err(self.lose("another instance took over (the leader epoch moved)")),
            Err(e) => Err(self.lose(&e)),
        }
    }

    /// The heartbeat (every `beat`, on its own task): only on this session and at this epoch.
    pub async fn beat(&self) -> std::result::Result<(), String> {
        self.still()?;
        match self.on_conn(BEAT, true).await {
            Ok(Some(1)) => {
                if let Ok(mut t) = self.last_beat.lock() {
                    *t = Instant::now();
                }
                Ok(())
            }
            Ok(_) => Err(self.lose("another instance took over (the leader epoch moved)")),
            Err(e) => Err(self.lose(&e)),
        }
    }

    /// Runs `sql` (deployment, epoch bound where it asks) on the lock's connection within a
    /// beat, not counting the wait for the connection: a scalar, or the rows it changed.
    async fn on_conn(&self, sql: &'static str, update: bool) -> std::result::Result<Option<i64>, String> {
        let beat = self.timing.beat();
        let mut conn = tokio::time::timeout(self.timing.stale, self.conn.lock())
            .await
            .map_err(|_| "the lead's connection was busy for too long".to_string())?;
        let run = async {
            if update {
                let r =
                    sqlx::query(sql).bind(&self.fence.deployment).bind(self.fence.epoch).execute(&mut *conn).await?;
                Ok::<_, sqlx::Error>(Some(r.rows_affected() as i64))
            } else {
                sqlx::query_scalar(sql).bind(&self.fence.deployment).fetch_optional(&mut *conn).await
            }
        };
        match tokio::time::timeout(beat, run).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("PostgreSQL: {e}")),
            Err(_) => Err(format!("PostgreSQL did not answer within {beat:?}")),
        }
    }

    fn lose(&self, why: &str) -> String {
        if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::error!(epoch = self.fence.epoch, "lost the lead: {why}; stopping writes");
        }
        self.why_lost(why)
    }

    fn why_lost(&self, why: &str) -> String {
        format!("this instance lost the lead (epoch {}): {why}; it stopped writing", self.fence.epoch)
    }

    /// Gives the lead up (a clean stop): a standby takes over at its next look.
    pub async fn release(self) {
        let mut conn = self.conn.into_inner();
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
            .bind(&self.fence.deployment)
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// The heartbeat: only on this session (its backend pid) and only at this epoch.
const BEAT: &str = "UPDATE leader SET heartbeat =
    to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
    WHERE deployment = $1 AND epoch = $2 AND backend_pid = pg_backend_pid()";

/// The key of a deployment: the tenant and the AD domain written to.
pub fn deployment(tenant_id: &str, domain: &str) -> String {
    format!("{}|{}", tenant_id.to_ascii_lowercase(), domain.to_ascii_lowercase())
}
