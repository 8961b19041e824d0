//! The test PostgreSQL (`scripts/postgres`: TLS, a password): a database per fixture, the
//! server stopped and started, and the checks of a shared history.

use std::process::Command;

use serde_json::Value;

use super::*;

/// A new database on the test server, and the fixture's `[state]` pointing at it.
pub fn postgres_state(fx: &Fixture, name: &str) -> String {
    let db = format!("wb_e2e_{name}_{}", std::process::id());
    for sql in [format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), format!("CREATE DATABASE {db}")] {
        let out = psql("postgres", &sql);
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let admin = env("WRITEBACK_TEST_PG");
    let url = format!("{}/{db}", admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base));
    let config = format!("url = \"{url}\"\nca_file = \"{}\"", env("WRITEBACK_TEST_PG_CA"));
    fx.edit_config(|c| c.replace("path = \"state.db\"", &config));
    db
}

pub fn psql(db: &str, sql: &str) -> std::process::Output {
    let admin = env("WRITEBACK_TEST_PG");
    let port = admin.rsplit_once(':').and_then(|(_, rest)| rest.split('/').next()).unwrap_or("5433").to_string();
    let conn = format!(
        "host=localhost port={port} user=writeback dbname={db} sslmode=verify-full sslrootcert={}",
        env("WRITEBACK_TEST_PG_CA")
    );
    Command::new("psql")
        .args([conn.as_str(), "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", env("WRITEBACK_STATE_PASSWORD"))
        .output()
        .expect("psql (scripts/postgres installs it)")
}

/// `pg_ctlcluster <version> <cluster> stop|start`, as scripts/postgres made it (stop: -m
/// immediate, a crash).
pub fn cluster(action: &str) {
    assert!(cluster_done(action), "pg_ctlcluster {action} failed");
}

fn cluster_done(action: &str) -> bool {
    let which = std::env::var("WRITEBACK_TEST_PG_CLUSTER").unwrap_or_default();
    let mut args: Vec<&str> = which.split_whitespace().collect();
    args.push(action);
    if action == "stop" {
        args.extend(["-m", "immediate"]);
    }
    Command::new("pg_ctlcluster").args(&args).status().is_ok_and(|s| s.success())
}

/// PostgreSQL stopped (a crash) until the guard is dropped: it is started again even when the
/// test fails meanwhile, so the tests after it find it running.
pub struct Stopped;

pub fn stopped() -> Stopped {
    cluster("stop");
    Stopped
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // No panic here: this may run while a failed test unwinds.
        if !cluster_done("start") {
            eprintln!("PostgreSQL could not be started again: scripts/postgres start");
        }
    }
}

/// The runs of the shared history, oldest first.
pub fn history(fx: &Fixture) -> Vec<Value> {
    let r = fx.writeback(&["--json", "history", "--limit", "100000"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut runs = r.json()["runs"].as_array().cloned().unwrap_or_default();
    runs.reverse();
    runs
}

/// Problems with a shared history: two cycles that overlapped (one started before the one
/// before it ended), or an older epoch that ran after a newer one. A run without an end is
/// one whose instance was killed or lost the lead mid-cycle: only the last of its epoch may be.
pub fn overlaps(runs: &[Value]) -> Vec<String> {
    let epoch = |r: &Value| r["epoch"].as_i64().unwrap_or(0);
    let mut out = Vec::new();
    for pair in runs.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if epoch(a) > epoch(b) {
            out.push(format!("an older epoch ran after a newer one: {a} then {b}"));
        }
        match a["finished_at"].as_str() {
            Some(end) if end > b["started_at"].as_str().unwrap_or("") => {
                out.push(format!("overlapping runs: {a} and {b}"))
            }
            None if epoch(a) >= epoch(b) => out.push(format!("a run without an end, not the last of its epoch: {a}")),
            _ => {}
        }
    }
    out
}
