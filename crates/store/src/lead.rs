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
//! between sessions of the same role) and takes it then. Taking over, it ends the previous
//! leader's sessions (they carry its `application_name`, kept in the leader row) and moves the
//! epoch only once it holds the leader row `FOR UPDATE`: every state transaction of the old
//! leader read the epoch `FOR KEY SHARE`, so it has committed by then or will fail. A session
//! that still holds the row (a paused process in a transaction) is ended after `lock_timeout`.

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

const LEADER: &str = "SELECT deployment, epoch, host, pid, address, since, heartbeat, stale_ms, session \
    FROM leader WHERE deployment = $1";

/// The leader row: who, its `stale`, and its sessions' `application_name`.
type Row3 = (Leader, Option<i64>, Option<String>);

async fn leader(conn: &mut PgConnection, deployment: &str) -> Result<Option<Row3>> {
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
            r.try_get(8)?,
        )),
    })
}

async fn try_lock(conn: &mut PgConnection, deployment: &str) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(deployment)
        .fetch_one(&mut *conn)
        .await?)
}

/// Ends the sessions named `application_name` (the previous leader's process), but this one,
/// and waits up to 5 s for each to be gone (`pg_terminate_backend` with a timeout: PostgreSQL
/// 14 or later). Returns how many.
async fn end_sessions_named(conn: &mut PgConnection, application_name: &str) -> Result<usize> {
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
         WHERE application_name = $1 AND pid <> pg_backend_pid()",
    )
    .bind(application_name)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ended.len())
}

/// Ends the sessions with a transaction open on the leader table (a fenced state write that
/// holds the row), but this one, waiting for each to be gone.
async fn end_row_holders(conn: &mut PgConnection) -> Result<usize> {
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks
         WHERE locktype = 'relation' AND relation = 'leader'::regclass AND mode = 'RowShareLock'
           AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(ended.len())
}

/// Moves the epoch to this session: once it holds the leader row `FOR UPDATE` (waiting for the
/// old leader's state transactions, at most `wait`, then ending them, three times).
async fn take_epoch(conn: &mut PgConnection, deployment: &str, me: &Me, timing: Timing) -> Result<i64> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(format!("{}ms", timing.stale.as_millis()))
            .execute(&mut *tx)
            .await?;
        let held = sqlx::query("SELECT epoch FROM leader WHERE deployment = $1 FOR UPDATE")
            .bind(deployment)
            .execute(&mut *tx)
            .await;
        match held {
            Ok(_) => {}
            // 55P03 lock_not_available: a session holds the row (a paused old leader).
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") && tries < 3 => {
                drop(tx);
                let ended = end_row_holders(conn).await?;
                tracing::warn!(sessions = ended, "state transactions of the old leader held the lead: ended");
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO leader (deployment, epoch, host, pid, backend_pid, address, since, heartbeat, stale_ms,
                 session)
               VALUES ($1, 1, $2, $3, pg_backend_pid(), $4,
                       to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                       to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), $5, $6)
             ON CONFLICT (deployment) DO UPDATE SET epoch = leader.epoch + 1, host = excluded.host,
               pid = excluded.pid, backend_pid = excluded.backend_pid, address = excluded.address,
               since = excluded.since, heartbeat = excluded.heartbeat, stale_ms = excluded.stale_ms,
               session = excluded.session
             RETURNING epoch",
        )
        .bind(deployment)
        .bind(&me.host)
        .bind(i64::from(std::process::id()))
        .bind(&me.address)
        .bind(timing.stale.as_millis().min(i64::MAX as u128) as i64)
        .bind(crate::application_name())
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(epoch);
    }
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
                Some((_, Some(ms), _)) => timing.stale.max(Duration::from_millis(ms.max(0) as u64)),
                _ => timing.stale,
            };
            // In one statement: the session holding this deployment's lock is ended only if it
            // is the leader row's and its heartbeat is older than `stale` (two standbys that
            // look at once do not end the one that has just taken over).
            let ended: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(l.pid, 5000) FROM pg_locks l JOIN leader r ON r.backend_pid = l.pid
                 WHERE r.deployment = $1
                   AND (clock_timestamp() - r.heartbeat::timestamptz) > make_interval(secs => $2)
                   AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.classid = ((hashtextextended($1, 0) >> 32) & 4294967295)::oid
                   AND l.objid = (hashtextextended($1, 0) & 4294967295)::oid",
            )
            .bind(deployment)
            .bind(stale.as_secs_f64())
            .fetch_all(&mut conn)
            .await?;
            if !ended.is_empty() {
                tracing::warn!(deployment, "the active instance was silent for over {stale:?}: its session was ended");
                got = try_lock(&mut conn, deployment).await?;
            }
        }
        if !got {
            let holder = leader(&mut conn, deployment).await?.map(|(l, _, _)| l);
            let _ = conn.close().await;
            return Ok(Attempt::Standby(holder));
        }
        // The previous leader's other sessions (its pool), if it was another process.
        let previous = leader(&mut conn, deployment).await?.and_then(|(_, _, session)| session);
        if let Some(name) = previous.filter(|n| n != crate::application_name()) {
            let ended = end_sessions_named(&mut conn, &name).await?;
            tracing::info!(sessions = ended, "the previous leader's sessions were ended");
        }
        let epoch = take_epoch(&mut conn, deployment, me, timing).await?;
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
        // The time it was sent, not answered: the row's heartbeat is at least this recent.
        let sent = Instant::now();
        match self.on_conn(BEAT, true).await {
            Ok(Some(1)) => {
                if let Ok(mut t) = self.last_beat.lock() {
                    *t = sent;
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
