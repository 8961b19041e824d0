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

use common::pg::{cluster, history, postgres_state, psql};
use common::*;
use serde_json::{json, Value};

static SERIAL: Mutex<()> = Mutex::new(());

const INTERVAL_S: u64 = 2;

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
    assert!(took <= Duration::from_secs(2 * INTERVAL_S + 1), "took {took:?}");
    let hb = b.wait_for("b leads", |h| h["role"] == "active");
    assert_eq!(hb["healthy"], true, "{hb}");

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

#[test]
fn without_postgres_the_leader_stops_writing_then_leads_again() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (mut fx, users, uids, mut t, db) = setup("hadown");
    let g = fx.id(1);
    let a = Daemon::start(&fx);
    a.wait_for("a leads", |h| h["role"] == "active" && h["reason"] == "ok");
    // PostgreSQL goes away while the daemon cycles every 2 s.
    cluster("stop");
    t["groups"][0]["members"] = json!([&uids[2]]);
    fx.set_tenant(&t);
    let h = a.wait_for("a stops leading", |h| h["role"] == "standby");
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_S));
    let unchanged = members_are(&mut fx, &g, &[&users[0]]);
    cluster("start");
    assert!(unchanged, "nothing was written while the state could not record it ({h})");
    wait_until("a leads again and applies the change", || members_are(&mut fx, &g, &[&users[2]]));
    a.wait_for("a leads", |h| h["role"] == "active" && h["reason"] == "ok");
    let runs = history(&fx);
    no_overlap(&runs);
    let epochs: std::collections::BTreeSet<i64> = runs.iter().filter_map(|r| r["epoch"].as_i64()).collect();
    assert!(epochs.len() >= 2, "a new epoch after PostgreSQL came back: {runs:?}");
    let trail = psql(&db, "SELECT count(*) FROM audit WHERE op = 'add-member'");
    assert_eq!(String::from_utf8_lossy(&trail.stdout).trim(), "2", "one add per member, none twice");
}

#[test]
fn a_paused_leader_replaced_meanwhile_does_not_write_when_it_resumes() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (mut fx, users, uids, mut t, _) = setup("hapause");
    let g = fx.id(1);
    let a = Daemon::start(&fx);
    a.wait_for("a leads", |h| h["role"] == "active" && h["reason"] == "ok");
    let b = Daemon::start(&fx);
    b.wait_for("b waits", |h| h["role"] == "standby");
    let epoch_a = fx.writeback(&["--json", "status"]).json()["leader"]["epoch"].as_i64().expect("epoch");
    // a is paused (a VM frozen, a process stopped): silent for longer than a standby waits.
    a.signal("STOP");
    let paused = Instant::now();
    t["groups"][0]["members"] = json!([&uids[1]]);
    fx.set_tenant(&t);
    wait_until("b takes over and applies the change", || members_are(&mut fx, &g, &[&users[1]]));
    println!("takeover of a paused leader: {:?}", paused.elapsed());
    // A change a would have written from its stale view: the cloud moves on again.
    t["groups"][0]["members"] = json!([&uids[3]]);
    fx.set_tenant(&t);
    a.signal("CONT");
    a.wait_for("a resumes as a standby", |h| h["role"] == "standby");
    wait_until("b applies the next change", || members_are(&mut fx, &g, &[&users[3]]));
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_S));
    assert!(members_are(&mut fx, &g, &[&users[3]]), "only b writes");
    let runs = history(&fx);
    no_overlap(&runs);
    let first_b = runs.iter().position(|r| r["epoch"].as_i64() > Some(epoch_a)).expect("b ran");
    assert!(
        runs[first_b..].iter().all(|r| r["epoch"].as_i64() > Some(epoch_a)),
        "no run of a's epoch after b's took over: {runs:?}"
    );
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(log.contains("lost the lead"), "a says why it stopped: {log}");
}

/// `scripts/chaos`'s HA trials, reduced: one of each fault at a random moment, 50 groups.
#[test]
fn each_fault_at_a_random_moment_converges_without_overlap_or_duplicates() {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let f = common::chaos::ha_failover(3, 50, 0x5eed_0a11_u64);
    assert_eq!((f.trials, f.failures, f.duplicates), (5, 0, 0), "{:#?}", f.notes);
}
