//! Opening a state and bringing its tables to this build's version: sqlx migrations, one set
//! per engine with the same version numbers. A SQLite file from before the migrations table
//! (`PRAGMA user_version` 1 to 4) is first brought to version 4 the way it always was.

use std::borrow::Cow;
use std::sync::Once;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

use crate::target::sqlite_url;
use crate::{private_file, Engine, Result, Store, StoreError, Target};

/// (version, description, SQLite, PostgreSQL)
const MIGRATIONS: [(i64, &str, &str, &str); 2] = [
    (
        1,
        "state",
        include_str!("../migrations/sqlite/0001_state.sql"),
        include_str!("../migrations/postgres/0001_state.sql"),
    ),
    (
        2,
        "leadership",
        include_str!("../migrations/sqlite/0002_leadership.sql"),
        include_str!("../migrations/postgres/0002_leadership.sql"),
    ),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

fn migrator(engine: Engine) -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(version, description, sqlite, pg)| {
            let sql = if engine == Engine::Sqlite { *sqlite } else { *pg };
            Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// The SQLite steps before the migrations table (writeback 0.1), up to `user_version` 4.
const LEGACY: [&str; 3] = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     ALTER TABLE links ADD COLUMN usn INTEGER; PRAGMA user_version = 2;",
    "CREATE TABLE approvals (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL,
       group_id TEXT, up_to INTEGER NOT NULL, who TEXT NOT NULL, created_at TEXT NOT NULL,
       used_run INTEGER, used_at TEXT); PRAGMA user_version = 3;",
    "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id INTEGER NOT NULL, at TEXT NOT NULL,
       group_id TEXT NOT NULL, group_name TEXT NOT NULL, group_dn TEXT NOT NULL, op TEXT NOT NULL,
       member_id TEXT, member_name TEXT, member_dn TEXT, why TEXT NOT NULL);
     CREATE INDEX audit_group ON audit (group_id); CREATE INDEX audit_at ON audit (at);
     PRAGMA user_version = 4;",
];

fn drivers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(sqlx::any::install_default_drivers);
}

async fn pool(target: &Target, read_only: bool) -> Result<(AnyPool, Engine)> {
    drivers();
    let (url, engine) = match target {
        Target::Sqlite(path) => (sqlite_url(path, read_only), Engine::Sqlite),
        Target::Postgres(pg) => (pg.connect_url(), Engine::Postgres),
    };
    let opts = AnyPoolOptions::new().max_connections(4).acquire_timeout(std::time::Duration::from_secs(5));
    let pool = opts.connect(&url).await.map_err(|e| {
        let (at, message) = (target.to_string(), e.to_string());
        match engine {
            Engine::Sqlite => StoreError::Open { at, message },
            Engine::Postgres => StoreError::Unreachable { at, message },
        }
    })?;
    Ok((pool, engine))
}

/// This process's PostgreSQL pools, one per state, migrated once: a daemon opens the state
/// for every cycle, and a TLS handshake and a SCRAM login each time would cost more than the
/// cycle's queries.
fn shared() -> &'static std::sync::Mutex<std::collections::HashMap<String, AnyPool>> {
    static POOLS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, AnyPool>>> =
        std::sync::OnceLock::new();
    POOLS.get_or_init(Default::default)
}

impl Store {
    /// Opens (creating if needed) and migrates the state.
    pub async fn open(target: &Target) -> Result<Store> {
        let at = target.to_string();
        if let Target::Postgres(pg) = target {
            let cached = shared().lock().ok().and_then(|p| p.get(&pg.connect_url()).cloned());
            if let Some(pool) = cached.filter(|p| !p.is_closed()) {
                return Ok(Store { pool, engine: Engine::Postgres, at, fence: None, runner: None });
            }
        }
        let open_err = |message: String| StoreError::Open { at: at.clone(), message };
        if let Target::Sqlite(path) = target {
            private_file(path).map_err(|e| open_err(e.to_string()))?;
        }
        let (pool, engine) = pool(target, false).await?;
        if engine == Engine::Sqlite {
            legacy(&pool).await.map_err(|e| open_err(e.to_string()))?;
        }
        migrator(engine).run(&pool).await.map_err(|e| match e {
            MigrateError::VersionMissing(v) => StoreError::TooNew(v, SCHEMA_VERSION),
            other => open_err(other.to_string()),
        })?;
        if let (Target::Postgres(pg), Ok(mut pools)) = (target, shared().lock()) {
            pools.insert(pg.connect_url(), pool.clone());
        }
        Ok(Store { pool, engine, at, fence: None, runner: None })
    }

    /// Opens an existing state without writing anything (for `plan`, `status`, the status
    /// page); `None` if there is none yet, or its tables are older than this build's (the next
    /// writer migrates them).
    pub async fn open_read_only(target: &Target) -> Result<Option<Store>> {
        let at = target.to_string();
        match target {
            Target::Sqlite(path) if !path.exists() => return Ok(None),
            Target::Sqlite(_) => {}
            Target::Postgres(pg) => {
                let cached = shared().lock().ok().and_then(|p| p.get(&pg.connect_url()).cloned());
                if let Some(pool) = cached.filter(|p| !p.is_closed()) {
                    return Ok(Some(Store { pool, engine: Engine::Postgres, at, fence: None, runner: None }));
                }
            }
        }
        let (pool, engine) = pool(target, true).await?;
        let version = applied_version(&pool, engine)
            .await
            .map_err(|e| StoreError::Open { at: at.clone(), message: e.to_string() })?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew(version, SCHEMA_VERSION));
        }
        if version < SCHEMA_VERSION {
            pool.close().await;
            return Ok(None);
        }
        if let (Target::Postgres(pg), Ok(mut pools)) = (target, shared().lock()) {
            pools.insert(pg.connect_url(), pool.clone());
        }
        Ok(Some(Store { pool, engine, at, fence: None, runner: None }))
    }
}

/// The latest migration applied (0 when none).
async fn applied_version(pool: &AnyPool, engine: Engine) -> std::result::Result<i64, sqlx::Error> {
    let exists = match engine {
        Engine::Sqlite => "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        Engine::Postgres => {
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '_sqlx_migrations' \
             AND table_schema = current_schema()"
        }
    };
    let n: i64 = sqlx::query_scalar(exists).fetch_one(pool).await?;
    if n == 0 {
        return Ok(0);
    }
    let v: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success = TRUE").fetch_one(pool).await?;
    Ok(v.unwrap_or(0))
}

/// Brings a SQLite file of writeback 0.1 (`user_version` 1 to 3) to version 4, which
/// migration 1 then finds in place.
async fn legacy(pool: &AnyPool) -> std::result::Result<(), sqlx::Error> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version").fetch_one(pool).await?;
    if version > 4 {
        return Err(sqlx::Error::Protocol(format!("unknown SQLite user_version {version}")));
    }
    for step in LEGACY.iter().skip(version.max(1) as usize - 1).filter(|_| version >= 1) {
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(*step).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    Ok(())
}
