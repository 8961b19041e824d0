//! The store against both engines: SQLite always, PostgreSQL where the test environment gives
//! one (`WRITEBACK_TEST_PG`, set by `scripts/test` from `scripts/postgres`; required there).

use super::*;
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("writeback-store-{}-{name}.db", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// A fresh PostgreSQL database for one test, when the environment has a server.
pub(crate) async fn pg(name: &str) -> Option<PgTarget> {
    let admin = std::env::var("WRITEBACK_TEST_PG").ok()?;
    let password = std::env::var("WRITEBACK_STATE_PASSWORD").ok();
    let ca = std::env::var("WRITEBACK_TEST_PG_CA").ok().map(PathBuf::from);
    let db = format!("wb_{}_{}", name, std::process::id());
    let target = PgTarget::new(&admin, password.clone(), ca.as_deref()).expect("WRITEBACK_TEST_PG");
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&target.connect_url()).await.expect("admin");
    for sql in [format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), format!("CREATE DATABASE {db}")] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("a test database");
    }
    let mut url = url::Url::parse(&admin).expect("url");
    url.set_path(&db);
    Some(PgTarget::new(url.as_str(), password, ca.as_deref()).expect("test url"))
}

/// SQLite, and PostgreSQL when there is one.
async fn engines(name: &str) -> Vec<Target> {
    let mut out = vec![Target::Sqlite(temp(name))];
    out.extend(pg(name).await.map(Target::Postgres));
    out
}

#[tokio::test]
async fn runs_links_and_errors_round_trip() {
    for target in engines("rt").await {
        let s = Store::open(&target).await.expect("open");
        let run = s.start_run(RunKind::Full).await.expect("run");
        s.save_links([("a", "guid-a", "CN=a"), ("b", "guid-b", "CN=b")], &[]).await.expect("links");
        s.save_links([("a", "guid-a2", "CN=a2")], &[CloudId::new("b")]).await.expect("links");
        assert_eq!(s.state().await.expect("state").links.get("a").map(|l| l.guid.as_str()), Some("guid-a2"));
        assert_eq!(s.link_count().await.expect("count"), 1);
        let e = |m: &str| ObjectError { cloud_id: "a".into(), member_id: None, message: m.into() };
        s.replace_errors(run, &[e("one"), e("two")]).await.expect("errors");
        let since = s.errors().await.expect("errors")[0].since.clone();
        let run2 = s.start_run(RunKind::Full).await.expect("run");
        s.replace_errors(run2, &[e("one")]).await.expect("errors");
        let now = s.errors().await.expect("errors");
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].since, since, "a persisting error keeps its first sighting");
        let summary = Summary { adds: 3, errors: 1, member_removes: 7, ..Summary::default() };
        s.finish_run(run2, RunKind::Full, RunStatus::CompletedWithErrors, &summary, 12, None).await.expect("finish");
        let runs = s.runs(10).await.expect("runs");
        assert_eq!(
            (runs[0].run_id, runs[0].counts.clone(), runs[0].status),
            (run2, summary, RunStatus::CompletedWithErrors)
        );
        assert_eq!(runs[1].status, RunStatus::Running);
        assert!(s.watermarks().await.expect("wm").is_none());
        let w = Watermarks {
            groups_link: "g".into(),
            users_link: "u".into(),
            taken_at: 1,
            ad_usn: 42,
            dc: "dc1".into(),
            settings: String::new(),
            recheck: vec!["a".into()],
            pending: Default::default(),
        };
        s.save_watermarks(&w).await.expect("save");
        assert_eq!(s.watermarks().await.expect("wm").map(|w| w.ad_usn), Some(42));
        s.save_usns(&[(CloudId::new("a"), 77)]).await.expect("usns");
        assert_eq!(s.usns().await.expect("usns").get("a"), Some(&77));
        let other = ObjectError { cloud_id: "b".into(), member_id: None, message: "b broke".into() };
        let run3 = s.start_run(RunKind::Delta).await.expect("run");
        s.merge_errors(run3, &[CloudId::new("b")], &[other]).await.expect("merge");
        assert_eq!(s.error_ids().await.expect("ids"), vec!["a".to_string(), "b".to_string()], "others stay");
        s.merge_errors(run3 + 1, &[CloudId::new("a")], &[]).await.expect("merge");
        assert_eq!(s.error_ids().await.expect("ids"), vec!["b".to_string()]);
        s.close().await;
        assert!(Store::open_read_only(&target).await.expect("ro").is_some(), "{target}");
    }
}

#[test]
fn the_counts_are_bound_in_the_order_of_the_summary() {
    let named: Vec<String> =
        Summary::default().columns().iter().enumerate().map(|(i, (n, _))| format!("{n} = ${}", i + 7)).collect();
    assert!(FINISH_RUN.contains(&named.join(", ")), "{FINISH_RUN}");
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_and_its_journal_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp("mode");
    std::fs::write(&path, b"").expect("create");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let s = Store::open(&Target::Sqlite(path.clone())).await.expect("open");
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "an existing database is made private");
    let mut tx = s.pool.begin().await.expect("tx");
    sqlx::query("INSERT INTO meta (key, value) VALUES ('k', 'v')").execute(&mut *tx).await.expect("write");
    let journal = path.with_file_name(format!("{}-journal", path.file_name().and_then(|n| n.to_str()).unwrap_or("")));
    assert_eq!(mode(&journal), 0o600, "the journal SQLite creates takes the database's mode");
    tx.commit().await.expect("commit");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_damaged_file_is_a_clear_error() {
    let path = temp("bad");
    std::fs::write(&path, b"this is not a database, just some bytes that are long enough to look like a header..")
        .expect("write");
    let Err(err) = Store::open(&Target::Sqlite(path.clone())).await else { panic!("a damaged file must not open") };
    let err = err.to_string();
    assert!(err.contains("move it away"), "{err}");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_state_of_writeback_0_1_is_migrated_in_place() {
    let path = temp("legacy");
    let target = Target::Sqlite(path.clone());
    {
        let (pool, _) = schema_pool(&target).await;
        sqlx::raw_sql(include_str!("../migrations/sqlite/0001_state.sql")).execute(&pool).await.expect("v4");
        sqlx::raw_sql(
            "PRAGMA user_version = 4;
             INSERT INTO links (cloud_id, object_guid, dn, updated_at) VALUES ('a', 'g', 'CN=a', 'x');",
        )
        .execute(&pool)
        .await
        .expect("v4 data");
        pool.close().await;
    }
    assert!(Store::open_read_only(&target).await.expect("ro").is_none(), "not migrated yet: nothing to show");
    let s = Store::open(&target).await.expect("migrate");
    assert_eq!(s.link_count().await.expect("links"), 1, "links kept");
    let id = s.start_run(RunKind::Full).await.expect("run");
    assert_eq!(s.runs(1).await.expect("runs")[0].run_id, id);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_state_of_writeback_0_1_at_its_first_version_is_migrated_in_place() {
    let path = temp("legacy1");
    let target = Target::Sqlite(path.clone());
    {
        // writeback 0.1's first schema (`user_version` 1), as it created it.
        let (pool, _) = schema_pool(&target).await;
        sqlx::raw_sql(
            "CREATE TABLE links (cloud_id TEXT PRIMARY KEY, object_guid TEXT NOT NULL, dn TEXT NOT NULL,
               updated_at TEXT NOT NULL);
             CREATE TABLE runs (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, status TEXT NOT NULL,
               started_at TEXT NOT NULL, finished_at TEXT, adds INTEGER NOT NULL DEFAULT 0,
               updates INTEGER NOT NULL DEFAULT 0, renames INTEGER NOT NULL DEFAULT 0,
               moves INTEGER NOT NULL DEFAULT 0, deletes INTEGER NOT NULL DEFAULT 0,
               member_adds INTEGER NOT NULL DEFAULT 0, member_removes INTEGER NOT NULL DEFAULT 0,
               skipped_members INTEGER NOT NULL DEFAULT 0, errors INTEGER NOT NULL DEFAULT 0,
               duration_ms INTEGER NOT NULL DEFAULT 0, message TEXT);
             CREATE TABLE errors (cloud_id TEXT NOT NULL, member_id TEXT NOT NULL DEFAULT '', message TEXT NOT NULL,
               since TEXT NOT NULL, last_seen TEXT NOT NULL, run_id INTEGER NOT NULL,
               PRIMARY KEY (cloud_id, member_id, message));
             PRAGMA user_version = 1;
             INSERT INTO links (cloud_id, object_guid, dn, updated_at) VALUES ('a', 'g', 'CN=a', 'x');
             INSERT INTO runs (kind, status, started_at) VALUES ('full', 'success', 'x');",
        )
        .execute(&pool)
        .await
        .expect("v1");
        pool.close().await;
    }
    let s = Store::open(&target).await.expect("migrated from version 1");
    s.save_usns(&[(CloudId::new("a"), 9)]).await.expect("version 2's column");
    assert_eq!(s.usns().await.expect("usns").get("a"), Some(&9));
    s.approve(&Approve::Past { threshold: writeback_core::Threshold::Deletes, up_to: 1 }, "x").await.expect("v3");
    assert!(s.audit(&AuditQuery::default()).await.expect("version 4's table").is_empty());
    assert_eq!(s.runs(5).await.expect("runs")[0].run_id, 1, "history kept");
    let _ = std::fs::remove_file(&path);
}

async fn schema_pool(target: &Target) -> (sqlx::AnyPool, Engine) {
    sqlx::any::install_default_drivers();
    if let Target::Sqlite(p) = target {
        private_file(p).expect("file");
    }
    let url = match target {
        Target::Sqlite(p) => target::sqlite_url(p, false),
        Target::Postgres(pg) => pg.connect_url(),
    };
    (sqlx::AnyPool::connect(&url).await.expect("pool"), Engine::Sqlite)
}

#[tokio::test]
async fn an_export_moves_the_state_to_another_engine() {
    let from = Target::Sqlite(temp("export"));
    let s = Store::open(&from).await.expect("open");
    let run = s.start_run(RunKind::Full).await.expect("run");
    s.save_links([("a", "guid-a", "CN=a")], &[]).await.expect("links");
    s.replace_errors(run, &[ObjectError { cloud_id: "a".into(), member_id: Some("m".into()), message: "x".into() }])
        .await
        .expect("errors");
    s.save_json("watermarks", &serde_json::json!({"ad_usn": 5})).await.expect("meta");
    s.approve(&Approve::Past { threshold: writeback_core::Threshold::Deletes, up_to: 3 }, "alice").await.expect("ok");
    s.finish_run(run, RunKind::Full, RunStatus::Success, &Summary::default(), 3, None).await.expect("finish");
    let data = s.export().await.expect("export");
    let text = serde_json::to_string(&data).expect("json");
    let back: Export = serde_json::from_str(&text).expect("parse");
    let mut into = vec![Target::Sqlite(temp("import"))];
    into.extend(pg("import").await.map(Target::Postgres));
    for target in into {
        let t = Store::open(&target).await.expect("open");
        t.import(&back).await.expect("import");
        assert_eq!(t.link_count().await.expect("links"), 1);
        assert_eq!(t.runs(5).await.expect("runs")[0].run_id, run);
        assert_eq!(t.errors().await.expect("errors").len(), 1);
        assert_eq!(t.open_approvals().await.expect("approvals").len(), 1);
        assert_eq!(t.export().await.expect("again").describe(), data.describe(), "{target}");
        // Runs continue after the imported ids.
        assert!(t.start_run(RunKind::Delta).await.expect("next") > run);
        let again = t.import(&back).await.expect_err("not into a state that has runs");
        assert!(again.to_string().contains("not empty"), "{again}");
    }
}

#[tokio::test]
async fn one_instance_leads_and_a_silent_one_is_replaced() {
    let Some(target) = pg("lead").await else {
        // SQLite deployments lead by a file lock (tested in the writeback crate).
        assert!(std::env::var("WRITEBACK_TEST_PG").is_err());
        return;
    };
    let timing = lead::Timing { stale: std::time::Duration::from_secs(3) };
    let me = |h: &str| lead::Me { host: h.into(), address: Some(format!("http://{h}:8080")) };
    let state = Target::Postgres(target.clone());
    let mut store = Store::open(&state).await.expect("migrated");
    let lead::Attempt::Leading(a) = lead::Lease::try_acquire(&target, "t|corp", &me("a"), timing).await.expect("a")
    else {
        panic!("the lock is free")
    };
    a.check().await.expect("a leads");
    let lead::Attempt::Standby(Some(holder)) =
        lead::Lease::try_acquire(&target, "t|corp", &me("b"), timing).await.expect("b")
    else {
        panic!("a holds it")
    };
    assert_eq!((holder.host.as_str(), holder.epoch), ("a", a.fence().epoch));
    store.fenced(a.fence().clone(), "a");
    store.save_json("k", &1).await.expect("the leader writes");
    // `a` goes silent (a paused process): `b` ends its session and leads at a new epoch.
    tokio::time::sleep(timing.stale + std::time::Duration::from_millis(500)).await;
    let lead::Attempt::Leading(b) = lead::Lease::try_acquire(&target, "t|corp", &me("b"), timing).await.expect("b")
    else {
        panic!("a was silent for longer than `stale`")
    };
    assert_eq!(b.fence().epoch, a.fence().epoch + 1);
    assert!(a.check().await.is_err(), "the old leader notices");
    let refused = store.save_json("k", &2).await.expect_err("an old leader's state write fails");
    assert!(matches!(refused, StoreError::NotLeader { .. }), "{refused}");
    b.check().await.expect("b leads");
    // A clean stop frees the lock at once.
    b.release().await;
    let lead::Attempt::Leading(c) = lead::Lease::try_acquire(&target, "t|corp", &me("c"), timing).await.expect("c")
    else {
        panic!("released")
    };
    assert_eq!(c.fence().epoch, a.fence().epoch + 2);
}
