//! High availability on PostgreSQL (issue #21), end to end: daemons of the real binary sharing
//! one PostgreSQL state (scripts/postgres: TLS, a password) and the Samba DC. Exactly one
//! leads; a killed leader is replaced and the change it missed is applied within two
//! intervals; PostgreSQL stopped: the leader stops writing, then leads again; a paused leader
//! replaced meanwhile does not write when it resumes. History and the audit trail are checked
//! for overlapping cycles and for anything written twice.
//!
//! The tests stop PostgreSQL and pause processes: they run one at a time (`SERIAL`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::pg::{self, history, postgres_state, psql};
use common::*;
use serde_json::{json, Value};

static SERIAL: Mutex<()> = Mutex::new(());

const INTERVAL_S: u64 = 3;

fn setup(name: &str) -> (Fixture, Vec<AdObj>, Vec<String>, Value, String) {
    let mut fx = Fixture::new(name);
    let (users, uids, cloud) = fx.synced_users(4);
    let t = tenant(cloud, vec![security_group(&fx.id(1), "SG-HA", Some(true), &[&uids[0]])]);
    fx.start_sim(&t);
    fx.write_config(&format!("[daemon]\ninterval = \"{INTERVAL_S}s\"\nfull_interval = \"1h\"\n"));
    let db = postgres_state(&fx, name);
    (fx, users, uids, t, db)
}

/// No two cycles overlapped, and epochs never went back (`pg::overlaps`).
fn no_overlap(runs: &[Value]) {
    let problems = pg::overlaps(runs);
    assert!(problems.is_empty(), "{problems:#?}");
}

fn members_are(fx: &mut Fixture, g: &str, want: &[&AdObj]) -> bool {
    let mut want: Vec<String> = want.iter().map(|u| u.guid.clone()).collect();
    want.sort();
    fx.group(g).is_some_and(|x| {
        let mut m = x.members.clone();
        m.sort();
        m == want
    })
}

#[test]
fn one_leads_and_a_killed_leader_is_replaced_within_two_intervals() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (mut fx, users, uids, mut t, _) = setup("hakill");
    let g = fx.id(1);
    let mut a = Daemon::start(&fx);
    a.wait_for("a leads", |h| h["role"] == "active" && h["reason"] == "ok");
    let b = Daemon::start(&fx);
    b.wait_for("b waits", |h| h["role"] == "standby");
    assert_eq!(b.health().map(|(code, _)| code), Some(200), "a standby is healthy");
    assert!(members_are(&mut fx, &g, &[&users[0]]), "a wrote the group");

    // A standby says where the leader is instead of running a cycle.
    let own = b.url.trim_start_matches("http://").to_string();
    let headers = [("Host", own.as_str()), ("Content-Type", "application/json")];
    let (code, _, body) = http_exchange(&b.url, "POST", "/sync", &headers, b"{}").expect("b answers");
    assert_eq!(code, 409, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    let a_port = a.url.rsplit(':').next().unwrap_or("").to_string();
    assert!(body["leader"]["address"].as_str().is_some_and(|x| x.ends_with(&format!(":{a_port}"))), "{body}");
    // b's page shows the active instance and both instances, from the shared state.
    wait_until("both instances listed", || {
        let s = fx.writeback(&["--json", "status"]).json();
        s["instances"].as_array().is_some_and(|i| i.len() == 2)
    });
    let (_, page) = b.get("/").expect("page");
    assert!(page.contains("Active instance:") && page.contains(&format!(":{a_port}")), "{page}");

    // The leader dies (kill -9); a change made just after reaches AD through b.
    let epoch_a = fx.writeback(&["--json", "status"]).json()["leader"]["epoch"].as_i64().expect("epoch");
    a.kill();
    let killed = Instant::now();
    t["groups"][0]["members"] = json!([&uids[1]]);
    fx.set_tenant(&t);
    wait_until("b applies the change", || members_are(&mut fx, &g, &[&users[1]]));
    let took = killed.elapsed();
    println!("takeover: the change reached AD {took:?} after the leader was killed (interval {INTERVAL_S} s)");
    let b_log = std::fs::read_to_string(&b.log).unwrap_or_default();
    assert!(took <= Duration::from_secs(2 * INTERVAL_S), "took {took:?}; b's log:\n{b_log}");
    let hb = b.wait_for("b leads", |h| h["role"] == "active");
    assert_eq!(hb["healthy"], true, "{hb}");
    // `check` reaches the state over TLS with the password, and says who leads.
    let check = fx.writeback(&["check"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("ok    state: postgres://writeback@localhost") && check.stdout.contains("; lead: "),
        "{}",
        check.stdout
    );
    assert!(!check.stdout.contains(&env("WRITEBACK_STATE_PASSWORD")), "no password in the output");

    let runs = history(&fx);
    no_overlap(&runs);
    let after: Vec<&Value> = runs.iter().filter(|r| r["epoch"].as_i64() > Some(epoch_a)).collect();
    assert_eq!(after.first().map(|r| r["kind"].clone()), Some(json!("delta")), "a takeover goes on in delta: {runs:?}");
    assert!(after.iter().all(|r| r["host"].is_string()), "every run records its host");
    // Nothing written twice: one add and one removal in the audit trail for the change.
    let log = fx.writeback(&["--json", "log", "--group", &g]).json();
    let adds = log["entries"]
        .as_array()
        .map_or(0, |e| e.iter().filter(|x| x["op"] == "add-member" && x["member_id"] == json!(uids[1])).count());
    assert_eq!(adds, 1, "{log}");
}

/// `n` more groups in the cloud, one member each: a cycle that applies them takes seconds.
fn add_groups(fx: &Fixture, t: &mut Value, uid: &str, n: u32) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| fx.id(1000 + i)).collect();
    let groups = t["groups"].as_array_mut().expect("groups");
    for (i, id) in ids.iter().enumerate() {
        groups.push(security_group(id, &format!("SG-HA-{i}"), Some(true), &[uid]));
    }
    ids
}

/// How many AD groups carry each cloud id's marker.
fn groups_in_ad(fx: &mut Fixture) -> std::collections::BTreeMap<String, usize> {
    let ou = fx.groups_ou.clone();
    let mut seen = std::collections::BTreeMap::new();
    for g in fx.groups(&ou) {
        if let Some(id) = g.one("adminDescription").and_then(|m| m.strip_prefix("Group_")) {
            *seen.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    seen
}

/// Waits until the daemon's log says it is applying a plan (the moment to strike).
fn applying(d: &Daemon) {
    wait_until("the daemon applies its plan", || {
        std::fs::read_to_string(&d.log)
            .is_ok_and(|l| l.lines().any(|x| x.contains("applying the plan") && x.contains("operations=")))
    });
}

#[test]
fn without_postgres_the_leader_stops_writing_then_leads_again() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (mut fx, _, uids, mut t, db) = setup("hadown");
    let a = Daemon::start(&fx);
    a.wait_for("a leads", |h| h["role"] == "active" && h["reason"] == "ok");
    std::fs::write(&a.log, b"").expect("clear the log");
    // 300 groups to add: PostgreSQL goes away while the daemon is writing them.
    let ids = add_groups(&fx, &mut t, &uids[0], 300);
    fx.set_tenant(&t);
    applying(&a);
    let down = pg::stopped();
    let h = a.wait_for("a stops leading", |h| h["role"] == "standby");
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    let written = groups_in_ad(&mut fx).len();
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_S));
    let later = groups_in_ad(&mut fx).len();
    drop(down);
    assert!(log.contains("writing stopped: this instance may no longer write"), "stopped mid-apply ({h}): {log}");
    assert!(written < ids.len() + 1, "PostgreSQL stopped before the last add ({written} groups)");
    assert_eq!(later, written, "nothing was written while the state could not record it");
    wait_until("a leads again and writes the rest", || {
        let seen = groups_in_ad(&mut fx);
        ids.iter().all(|id| seen.get(id) == Some(&1))
    });
    a.wait_for("a leads", |h| h["role"] == "active" && h["reason"] == "ok");
    let seen = groups_in_ad(&mut fx);
    assert!(seen.values().all(|n| *n == 1), "a group twice: {seen:?}");
    let runs = history(&fx);
    no_overlap(&runs);
    let epochs: std::collections::BTreeSet<i64> = runs.iter().filter_map(|r| r["epoch"].as_i64()).collect();
    assert!(epochs.len() >= 2, "a new epoch after PostgreSQL came back: {runs:?}");
    // Nothing recorded twice: each group's add at most once in the audit trail.
    let twice = psql(
        &db,
        "SELECT count(*) FROM (SELECT group_id FROM audit WHERE op = 'add-group' GROUP BY group_id \
         HAVING count(*) > 1) x",
    );
    assert_eq!(String::from_utf8_lossy(&twice.stdout).trim(), "0");
}

#[test]
fn a_paused_leader_replaced_meanwhile_does_not_write_when_it_resumes() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (mut fx, _, uids, mut t, _) = setup("hapause");
    let a = Daemon::start(&fx);
    a.wait_for("a leads", |h| h["role"] == "active" && h["reason"] == "ok");
    let b = Daemon::start(&fx);
    b.wait_for("b waits", |h| h["role"] == "standby");
    let epoch_a = fx.writeback(&["--json", "status"]).json()["leader"]["epoch"].as_i64().expect("epoch");
    std::fs::write(&a.log, b"").expect("clear the log");
    // a is paused (a VM frozen) while it writes 300 groups: silent for longer than b waits.
    let ids = add_groups(&fx, &mut t, &uids[0], 300);
    fx.set_tenant(&t);
    applying(&a);
    a.signal("STOP");
    let paused = Instant::now();
    wait_until("b takes over and writes them all", || {
        let seen = groups_in_ad(&mut fx);
        ids.iter().all(|id| seen.contains_key(id))
    });
    println!("takeover of a paused leader: AD complete {:?} after the pause", paused.elapsed());
    a.signal("CONT");
    a.wait_for("a resumes as a standby", |h| h["role"] == "standby");
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(
        log.contains("writing stopped: this instance may no longer write") && log.contains("lost the lead"),
        "a, resumed mid-apply, stopped at its next write: {log}"
    );
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_S));
    let seen = groups_in_ad(&mut fx);
    assert!(seen.values().all(|n| *n == 1) && seen.len() == ids.len() + 1, "each group once: {seen:?}");
    let runs = history(&fx);
    no_overlap(&runs);
    let first_b = runs.iter().position(|r| r["epoch"].as_i64() > Some(epoch_a)).expect("b ran");
    assert!(
        runs[first_b..].iter().all(|r| r["epoch"].as_i64() > Some(epoch_a)),
        "no run of a's epoch after b's took over: {runs:?}"
    );
    drop(b);
}

/// `scripts/chaos`'s HA trials, reduced: one of each fault at a random moment, 50 groups.
#[test]
fn each_fault_at_a_random_moment_converges_without_overlap_or_duplicates() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let f = common::chaos::ha_failover(3, 50, 0x5eed_0a11_u64);
    assert_eq!((f.trials, f.failures, f.duplicates), (5, 0, 0), "{:#?}", f.notes);
}

/// An installation on SQLite moves to PostgreSQL without a resync: `state export`, then
/// `state import` into the new state; the next sync is a delta cycle with nothing to do, and
/// the history came along.
#[test]
fn a_sqlite_state_moves_to_postgres_and_goes_on_in_delta() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut fx = Fixture::new("hamove");
    let (_, uids, cloud) = fx.synced_users(2);
    fx.start_sim(&tenant(cloud, vec![security_group(&fx.id(1), "SG-Move", Some(true), &[&uids[0], &uids[1]])]));
    fx.write_config("");
    assert_eq!(fx.sync_json(&[]).0, 0);
    let export = fx.dir.join("state.json");
    let r = fx.writeback(&["state", "export", &export.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("1 links, 1 runs") && r.stderr.contains("watermarks included"), "{}", r.stderr);
    postgres_state(&fx, "hamove");
    let r = fx.writeback(&["state", "import", &export.to_string_lossy()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (code, out) = fx.sync_json(&[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["kind"], "delta", "no resync after the move: {out}");
    for k in ["adds", "updates", "deletes", "member_adds", "member_removes"] {
        assert_eq!(out[k], 0, "nothing to do: {out}");
    }
    let runs = history(&fx);
    assert_eq!(runs.len(), 2, "the SQLite run came along: {runs:?}");
    no_overlap(&runs);
    // Into a state that has runs: refused, nothing changed.
    let again = fx.writeback(&["state", "import", &export.to_string_lossy()]);
    assert_eq!(again.code, 4, "{}", again.stderr);
    assert!(again.stderr.contains("not empty"), "{}", again.stderr);
    assert_eq!(history(&fx).len(), 2);
}
