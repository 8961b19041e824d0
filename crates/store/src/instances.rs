//! The instances that have the state open (daemons, active or standby) and the leader row:
//! what `writeback status` and the status page show of a deployment of several hosts.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{now, Result, Store};

/// What an instance does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Holds the lead: the only one that writes to AD.
    Active,
    /// Waits to take over; serves the status page, `/healthz` and `/metrics`.
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// One daemon that has the state open.
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    /// `host:pid`.
    pub id: String,
    pub host: String,
    pub pid: i64,
    pub role: String,
    /// Where its listener is (`[daemon] listen`, with this host's name).
    pub address: Option<String>,
    pub started_at: String,
    pub last_seen: String,
}

/// Who holds the lead of a deployment, since when, and its epoch (a takeover increments it).
#[derive(Clone, Debug, Serialize)]
pub struct Leader {
    pub deployment: String,
    pub epoch: i64,
    pub host: String,
    pub pid: i64,
    pub address: Option<String>,
    pub since: String,
    pub heartbeat: String,
}

pub(crate) fn leader_row(r: &AnyRow) -> std::result::Result<Leader, sqlx::Error> {
    Ok(Leader {
        deployment: r.try_get(0)?,
        epoch: r.try_get(1)?,
        host: r.try_get(2)?,
        pid: r.try_get(3)?,
        address: r.try_get(4)?,
        since: r.try_get(5)?,
        heartbeat: r.try_get(6)?,
    })
}

impl Store {
    /// Records that `id` has the state open in `role` (and is alive now). Not fenced: a
    /// standby says so too.
    pub async fn seen(&self, host: &str, pid: u32, role: Role, address: Option<&str>) -> Result<()> {
        let stamp = now();
        sqlx::query(
            "INSERT INTO instances (id, host, pid, role, address, started_at, last_seen)
               VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (id) DO UPDATE SET role = excluded.role, address = excluded.address,
               last_seen = excluded.last_seen",
        )
        .bind(format!("{host}:{pid}"))
        .bind(host)
        .bind(i64::from(pid))
        .bind(role.as_str())
        .bind(address)
        .bind(stamp)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An instance that stops says so (one that dies is shown until it is not seen for long).
    pub async fn gone(&self, host: &str, pid: u32) -> Result<()> {
        sqlx::query("DELETE FROM instances WHERE id = $1").bind(format!("{host}:{pid}")).execute(&self.pool).await?;
        Ok(())
    }

    /// The instances seen within `within`, most recently seen first; older ones are forgotten.
    pub async fn instances(&self, within: std::time::Duration) -> Result<Vec<Instance>> {
        let since = crate::ago(within);
        let rows = sqlx::query(
            "SELECT id, host, pid, role, address, started_at, last_seen FROM instances
             WHERE last_seen >= $1 ORDER BY last_seen DESC",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Instance {
                    id: r.try_get(0)?,
                    host: r.try_get(1)?,
                    pid: r.try_get(2)?,
                    role: r.try_get(3)?,
                    address: r.try_get(4)?,
                    started_at: r.try_get(5)?,
                    last_seen: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// The leader rows (one per deployment sharing this state; normally one).
    pub async fn leaders(&self) -> Result<Vec<Leader>> {
        let rows = sqlx::query(
            "SELECT deployment, epoch, host, pid, address, since, heartbeat FROM leader ORDER BY deployment",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(leader_row).collect::<std::result::Result<_, _>>()?)
    }

    /// A new epoch for `deployment`, taken by this process (the SQLite deployment's file lock
    /// holder; PostgreSQL's lead takes it in `lead`).
    pub async fn take_epoch(&self, deployment: &str, host: &str, address: Option<&str>) -> Result<i64> {
        let other: Option<String> =
            sqlx::query_scalar("SELECT deployment FROM leader WHERE deployment <> $1 ORDER BY deployment LIMIT 1")
                .bind(deployment)
                .fetch_optional(&self.pool)
                .await?;
        if let Some(theirs) = other {
            return Err(crate::StoreError::OtherDeployment { at: self.at.clone(), theirs, ours: deployment.into() });
        }
        let stamp = now();
        let epoch = sqlx::query_scalar(
            "INSERT INTO leader (deployment, epoch, host, pid, address, since, heartbeat)
               VALUES ($1, 1, $2, $3, $4, $5, $5)
             ON CONFLICT (deployment) DO UPDATE SET epoch = leader.epoch + 1, host = excluded.host,
               pid = excluded.pid, backend_pid = NULL, address = excluded.address, since = excluded.since,
               heartbeat = excluded.heartbeat
             RETURNING epoch",
        )
        .bind(deployment)
        .bind(host)
        .bind(i64::from(std::process::id()))
        .bind(address)
        .bind(stamp)
        .fetch_one(&self.pool)
        .await?;
        Ok(epoch)
    }
}
