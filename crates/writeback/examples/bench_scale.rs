//! Scale benchmarks (issue #6), run by `scripts/bench` against its own throwaway Samba DC:
//! a full sync of a generated tenant (10,000 groups / 50,000 users / ~500,000 memberships) and of
//! one group of 100,000 members into empty OUs, each against the raw-LDAP baseline measured in
//! the same run (`ldapadd`/`ldapmodify` over one connection, the same objects and members:
//! members inline in the adds, and groups added empty then filled with 1,000-value modifies);
//! then delta syncs of 1, 100 and 10,000 changed memberships. Prints a table and appends rows
//! to BENCHMARKS.md. Usage: bench_scale [groups users memberships big-group]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/report.rs"]
mod report;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use serde_json::Value;

/// One measured step.
#[derive(Clone)]
struct Step {
    wall: f64,
    rss_mb: f64,
    graph: u64,
    ldap: u64,
    /// Member values added plus removed.
    member_changes: u64,
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default)
}

/// Rounds of a full-sync measurement: `var`, else `default` (a 10,000-group round takes
/// ~15 min, a 100,000-member group's ~3 min).
fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default).max(1)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An OpenLDAP tool bound to the DC as `who` (UPN, password file), over LDAPS, one connection.
fn ldap_tool(dc: &Dc, tool: &str, who: (&str, &Path)) -> Command {
    let mut c = Command::new(tool);
    c.env("LDAPTLS_CACERT", &dc.ca).args(["-x", "-H", &dc.url, "-D", who.0, "-y"]).arg(who.1);
    c
}

/// (groups, member values) below `ou`, read back with a paged search.
fn census(dc: &Dc, admin: (&str, &Path), ou: &str) -> (usize, usize) {
    let text = run(ldap_tool(dc, "ldapsearch", admin).args([
        "-LLL",
        "-E",
        "pr=1000/noprompt",
        "-b",
        ou,
        "(objectClass=group)",
        "member",
    ]));
    let groups = text.lines().filter(|l| l.starts_with("dn:")).count();
    let members = text.lines().filter(|l| l.starts_with("member:")).count();
    (groups, members)
}

fn add_ou(dc: &Dc, admin: (&str, &Path), dn: &str) {
    let mut c = ldap_tool(dc, "ldapadd", admin);
    c.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut child = c.spawn().expect("ldapadd");
    use std::io::Write as _;
    let _ = write!(child.stdin.take().expect("stdin"), "dn: {dn}\nobjectClass: organizationalUnit\n");
    let _ = child.wait();
}

/// `ldapadd`/`ldapmodify -f file` timed, with the final statistics of /usr/bin/time.
fn timed_ldap(dc: &Dc, tool: &str, who: (&str, &Path), file: &Path) -> f64 {
    let t = Instant::now();
    run(ldap_tool(dc, tool, who).arg("-f").arg(file).stdout(Stdio::null()));
    t.elapsed().as_secs_f64()
}

/// The baseline's two ways to reach the objects of `plan` (moved to `ou`, sAMAccountNames
/// made distinct by their first letter): members inline; groups empty, then 1,000-value modifies.
/// Member values are `<GUID=…>`, as writeback writes them: a DN found a minute before can name
/// someone else after a rename, so writeback keeps GUID values (the maintainers' decision on
/// issue #6), and the floor it is measured against pays for them too.
fn baseline_ldif(plan: &Value, from_ou: &str, ou: &str, tag: char) -> (String, String, String) {
    let (mut inline, mut empty, mut fill) = (String::new(), String::new(), String::new());
    for op in plan["operations"].as_array().into_iter().flatten().filter(|o| o["op"] == "add") {
        let dn = op["dn"].as_str().unwrap_or_default().replace(from_ou, ou);
        let mut head = format!("dn: {dn}\nobjectClass: group\n");
        for pair in op["attrs"].as_array().into_iter().flatten() {
            let name = pair[0].as_str().unwrap_or_default();
            if name.eq_ignore_ascii_case("objectClass") {
                continue;
            }
            for v in pair[1].as_array().into_iter().flatten().filter_map(Value::as_str) {
                let v = if name == "sAMAccountName" { format!("{tag}{}", &v[1..]) } else { v.to_string() };
                let _ = writeln!(head, "{name}: {v}");
            }
        }
        let members: Vec<String> = op["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["guid"].as_str())
            .map(|g| format!("<GUID={g}>"))
            .collect();
        inline.push_str(&head);
        for m in &members {
            let _ = writeln!(inline, "member: {m}");
        }
        inline.push('\n');
        empty.push_str(&head);
        empty.push('\n');
        for chunk in members.chunks(1000) {
            let _ = writeln!(fill, "dn: {dn}\nchangetype: modify\nadd: member");
            for m in chunk {
                let _ = writeln!(fill, "member: {m}");
            }
            fill.push_str("-\n\n");
        }
    }
    (inline, empty, fill)
}

/// `writeback <args>` under /usr/bin/time: wall, peak RSS, and the counts it prints.
fn writeback(fx: &Fixture, args: &[&str]) -> Step {
    let cfg = fx.dir.join("writeback.toml");
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %M"])
        .arg(sibling_binary("writeback"))
        .arg("-c")
        .arg(&cfg)
        .args(args)
        .env("WRITEBACK_LOG", std::env::var("WRITEBACK_LOG").unwrap_or_else(|_| "info".into()))
        .output()
        .expect("run writeback under /usr/bin/time (apt-get install time)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Kept for reading the phases' timestamps afterwards.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::write(fx.dir.join(format!("writeback-{n}-{}.log", args.join("_"))), &*stderr);
    assert!(out.status.success(), "writeback {args:?}: {stdout}{stderr}");
    let time = stderr.lines().rev().find_map(|l| l.strip_prefix("TIME ")).expect("time's line");
    let mut t = time.split_whitespace().map(|x| x.parse::<f64>().unwrap_or(0.0));
    let (wall, rss_kb) = (t.next().unwrap_or(0.0), t.next().unwrap_or(0.0));
    // "run N (kind): status — counts (x s, G Graph requests, L LDAP operations)"
    let count = |what: &str| -> u64 {
        let line = stdout.lines().find(|l| l.starts_with("run ")).unwrap_or_default();
        let before = line.split(what).next().unwrap_or_default();
        before.rsplit([' ', '(']).find(|w| !w.is_empty()).and_then(|w| w.parse().ok()).unwrap_or(0)
    };
    Step {
        wall,
        rss_mb: rss_kb / 1024.0,
        graph: count(" Graph requests"),
        ldap: count(" LDAP operations"),
        member_changes: count(" members added") + count(" removed,"),
    }
}

struct Bench {
    dc: Dc,
    admin: (String, PathBuf),
    svc: (String, PathBuf),
    sim_bin: PathBuf,
    work: PathBuf,
    seed: String,
    rows: Vec<(String, String)>,
}

impl Bench {
    fn admin(&self) -> (&str, &Path) {
        (&self.admin.0, &self.admin.1)
    }
    fn svc(&self) -> (&str, &Path) {
        (&self.svc.0, &self.svc.1)
    }

    /// The copy of the bench DC holding only its users, kept by scripts/bench.
    fn pristine(&self) -> Option<PathBuf> {
        let dir = std::env::var("WRITEBACK_DC_DIR").ok()?;
        let copy = PathBuf::from(format!("{dir}.pristine"));
        copy.is_dir().then_some(copy)
    }

    /// Puts the bench DC back to its users-only copy (~10 s); false when there is none.
    fn restore_dc(&self) -> bool {
        let (Some(copy), Ok(dir)) = (self.pristine(), std::env::var("WRITEBACK_DC_DIR")) else {
            return false;
        };
        run(Command::new("scripts/samba-dc").arg("stop"));
        // A DC still running would keep its files open and answer from them: no restore.
        assert!(std::net::TcpStream::connect("127.0.0.1:636").is_err(), "the bench DC did not stop");
        run(Command::new("rm").args(["-rf", &dir]));
        run(Command::new("cp").args(["-a", "--sparse=always"]).arg(&copy).arg(&dir));
        // The copy's dirty pages written back during a measurement slowed it by up to half.
        run(&mut Command::new("sync"));
        run(Command::new("scripts/samba-dc").arg("start"));
        true
    }

    /// The synced users, created once per bench DC (users are what a tenant's members point at).
    fn ensure_users(&self, ou: &str, count: usize) -> PathBuf {
        add_ou(&self.dc, self.admin(), ou);
        let have = run(ldap_tool(&self.dc, "ldapsearch", self.admin()).args([
            "-LLL",
            "-E",
            "pr=1000/noprompt",
            "-b",
            ou,
            "(objectClass=user)",
            "1.1",
        ]))
        .lines()
        .filter(|l| l.starts_with("dn:"))
        .count();
        if have < count {
            let ldif = self.work.join("users.ldif");
            run(Command::new(&self.sim_bin)
                .args([
                    "generate",
                    "--users",
                    &count.to_string(),
                    "--groups",
                    "0",
                    "--memberships",
                    "0",
                    "--users-ou",
                    ou,
                    // Users are added in order: the first ones of an interrupted run exist.
                    "--users-ldif-skip",
                    &have.saturating_sub(100).to_string(),
                    "--users-ldif",
                ])
                .arg(&ldif));
            eprintln!("creating {} users (once per bench DC)…", count - have);
            let t = Instant::now();
            // -c: users made by an earlier, interrupted run are already there.
            let _ = ldap_tool(&self.dc, "ldapadd", self.admin())
                .arg("-c")
                .arg("-f")
                .arg(&ldif)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            eprintln!("  {} s", t.elapsed().as_secs());
        }
        let sids = self.work.join("sids.ldif");
        let text = run(ldap_tool(&self.dc, "ldapsearch", self.admin()).args([
            "-LLL",
            "-o",
            "ldif-wrap=no",
            "-E",
            "pr=1000/noprompt",
            "-b",
            ou,
            "(objectClass=user)",
            "sAMAccountName",
            "objectSid",
        ]));
        std::fs::write(&sids, text).expect("write sids");
        sids
    }

    fn tenant(&self, name: &str, sids: &Path, args: &[String]) -> Value {
        let out = self.work.join(format!("{name}.json"));
        run(Command::new(&self.sim_bin)
            .arg("generate")
            .args(args)
            .arg("--client-secret")
            .arg(SECRET)
            // A new seed per run: new group ids, so no sAMAccountName of an earlier run collides.
            .arg("--seed")
            .arg(&self.seed)
            .arg("--sids")
            .arg(sids)
            .arg("--out")
            .arg(&out));
        serde_json::from_slice(&std::fs::read(&out).expect("read tenant")).expect("tenant json")
    }

    /// Full sync of `tenant` into an empty OU, and the raw-LDAP baseline of the same objects.
    fn full(&mut self, label: &str, run_tag: &str, tenant: &Value, rounds: usize) -> Fixture {
        let mut fx = Fixture::persistent(&format!("bench-{run_tag}-{label}"), &self.work.join(label));
        fx.start_sim(tenant);
        // A first sync of the whole tenant is the point: past create_threshold (plan and
        // the baselines' LDIF read the same plan).
        fx.write_config("create_threshold = 1000000");
        let plan_out = run(Command::new(sibling_binary("writeback"))
            .arg("-c")
            .arg(fx.dir.join("writeback.toml"))
            .args(["plan", "--json"]));
        let plan: Value = serde_json::from_str(&plan_out).expect("plan json");
        let want = (
            plan["operations"].as_array().map_or(0, |o| o.iter().filter(|o| o["op"] == "add").count()),
            plan["operations"].as_array().map_or(0, |o| {
                o.iter().filter(|o| o["op"] == "add").map(|o| o["members"].as_array().map_or(0, Vec::len)).sum()
            }),
        );
        let (inline, empty, fill) = baseline_ldif(&plan, &fx.groups_ou, "OU=B", 'X');
        // Every measurement starts from the same directory: writes slow down as the directory
        // grows (each member's record gains a back-link), so a baseline measured after
        // writeback's groups exist, or before, would not be comparable.
        let restored = |b: &Self| {
            if b.restore_dc() {
                for ou in [&fx.ou, &fx.groups_ou, &fx.users_ou] {
                    add_ou(&b.dc, b.admin(), ou);
                }
            }
        };
        let baseline = |i: usize, files: Vec<(&str, &String)>| -> f64 {
            restored(self);
            let ou = format!("OU=base{i},{}", fx.ou);
            add_ou(&self.dc, self.admin(), &ou);
            let tag = char::from(b'V' + i as u8);
            let mut wall = 0.0;
            for (tool, text) in files {
                let file = fx.dir.join(format!("base{i}-{tool}.ldif"));
                std::fs::write(
                    &file,
                    text.replace("OU=B", &ou).replace("\nsAMAccountName: X", &format!("\nsAMAccountName: {tag}")),
                )
                .expect("ldif");
                wall += timed_ldap(&self.dc, tool, self.svc(), &file);
            }
            assert_eq!(census(&self.dc, self.admin(), &ou), want, "baseline {i} wrote what the plan says");
            println!("  {label}: baseline {i} ({} LDIF) {wall:.1} s", if i == 1 { "empty+modify" } else { "inline" });
            wall
        };
        // Rounds of the three measurements, each from the restored DC: this VM's CPU time
        // for the same add varied by up to a third between runs, so the best of each is
        // compared (more rounds only on a DC that can be restored).
        let rounds = if self.pristine().is_some() { rounds } else { 1 };
        let (mut inline_walls, mut modify_walls, mut steps) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            inline_walls.push(baseline(0, vec![("ldapadd", &inline)]));
            // BENCH_ONE_BASELINE: only the inline baseline (for runs too long to repeat).
            if std::env::var_os("BENCH_ONE_BASELINE").is_none() {
                modify_walls.push(baseline(1, vec![("ldapadd", &empty), ("ldapmodify", &fill)]));
            }
            restored(self);
            // A first sync each round: no state left by the last round's groups.
            for f in ["state.db", "state.db-wal", "state.db-shm"] {
                let _ = std::fs::remove_file(fx.dir.join(f));
            }
            fx.sim_call("DELETE", "/_control/requests", None);
            // A first sync of thousands of groups: past create_threshold on purpose.
            let s = writeback(&fx, &["sync", "--full", "--allow-creates"]);
            assert_eq!(census(&self.dc, self.admin(), &fx.groups_ou), want, "writeback wrote every group and member");
            println!(
                "  {label}: writeback {:.1} s, {:.0} MB, {} Graph requests, {} LDAP ops",
                s.wall, s.rss_mb, s.graph, s.ldap
            );
            steps.push(s);
        }
        let s = steps.iter().min_by(|a, b| a.wall.total_cmp(&b.wall)).cloned().expect("one round at least");
        let walls = |w: &[f64]| {
            let all: Vec<String> = w.iter().map(|x| format!("{x:.1}")).collect();
            let best = w.iter().copied().fold(f64::INFINITY, f64::min);
            if w.len() > 1 {
                format!("{} s (best {best:.1})", all.join(", "))
            } else {
                format!("{best:.1} s")
            }
        };
        let mut base = vec![("inline", &inline_walls)];
        if !modify_walls.is_empty() {
            base.push(("empty+modify", &modify_walls));
        }
        let mut base_text = vec![if self.pristine().is_some() {
            format!(
                "each measured from the same restored DC{}",
                if rounds > 1 { format!(", best of {rounds} rounds:") } else { ":".into() }
            )
        } else {
            "measured one after the other on a growing DC (no pristine copy to restore)".to_string()
        }];
        let best = base.iter().flat_map(|b| b.1.iter().copied()).fold(f64::INFINITY, f64::min);
        base_text.extend(base.iter().map(|(n, w)| format!("{n} {}", walls(w))));
        let wb_walls: Vec<f64> = steps.iter().map(|s| s.wall).collect();
        let result = format!(
            "writeback {}, {:.0} MB peak RSS, {} Graph requests, {} LDAP ops; raw LDAP baseline {}; \
             **ratio {:.2}**",
            walls(&wb_walls),
            s.rss_mb,
            s.graph,
            s.ldap,
            base_text.join(" "),
            s.wall / best
        );
        println!("full sync {label}: {} groups, {} members: {result}", want.0, want.1);
        let what = format!("full sync ({}), {label}: {} groups, {} memberships", report::DC, want.0, want.1);
        self.rows.push((what, result));
        fx
    }

    /// A second full sync of the big group: writeback reads its members back (ranged retrieval,
    /// 1,500 values a time on Windows, as asked on Samba) and must find nothing to change.
    fn read_back(&mut self, fx: &Fixture, members: usize) {
        let s = writeback(fx, &["sync", "--full"]);
        assert_eq!(s.member_changes, 0, "the {members}-member group read back exactly as written");
        println!("read back: full sync of the {members}-member group again: {:.1} s, 0 member changes", s.wall);
        self.rows.push((
            format!("full sync again ({}), the {members}-member group above (ranged read-back)", report::DC),
            format!("{:.1} s wall, {} Graph requests, {} LDAP ops, 0 member changes", s.wall, s.graph, s.ldap),
        ));
    }

    /// Changes `n` memberships in the simulator (half removals, half additions), then times
    /// one delta `writeback sync` and checks AD holds exactly the new members.
    fn delta(&mut self, fx: &Fixture, tenant: &mut Value, n: usize, seed: u64) {
        let s = self.delta_step(fx, tenant, n, seed);
        println!(
            "delta sync, {n} changed memberships: {:.2} s, {} Graph requests, {} LDAP operations",
            s.wall, s.graph, s.ldap
        );
        self.rows.push((
            format!("delta sync ({}), {n} changed memberships in the tenant above", report::DC),
            format!("{:.2} s wall, {} Graph requests, {} LDAP ops", s.wall, s.graph, s.ldap),
        ));
    }

    /// The 1-change delta cycle with the state in SQLite, then with the same state moved to
    /// PostgreSQL (`state export` / `state import`, TLS and a password, on loopback), median of
    /// `STATE_ROUNDS` each, in the same run (issue #21: within 0.1 s).
    fn state_engines(&mut self, fx: &Fixture, tenant: &mut Value) {
        const STATE_ROUNDS: usize = 5;
        let Ok(admin) = std::env::var("WRITEBACK_TEST_PG") else {
            println!("no PostgreSQL ($WRITEBACK_TEST_PG): the state engines are not compared");
            return;
        };
        let mut median = |b: &mut Bench, seed: u64| {
            let mut walls: Vec<f64> =
                (0..STATE_ROUNDS).map(|i| b.delta_step(fx, tenant, 1, seed + i as u64).wall).collect();
            walls.sort_by(f64::total_cmp);
            (walls[STATE_ROUNDS / 2], walls)
        };
        let (sqlite, sqlite_all) = median(self, 0x51_17e0);
        let export = fx.dir.join("state-export.json");
        writeback(fx, &["state", "export", &export.to_string_lossy()]);
        let db = format!("wb_bench_{}", std::process::id());
        for sql in [format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"), format!("CREATE DATABASE {db}")] {
            psql(&admin, &sql);
        }
        let url = format!("{}/{db}", admin.rsplit_once('/').map_or(admin.as_str(), |(base, _)| base));
        let ca = std::env::var("WRITEBACK_TEST_PG_CA").unwrap_or_default();
        fx.edit_config(|c| c.replace("path = \"state.db\"", &format!("url = \"{url}\"\nca_file = \"{ca}\"")));
        writeback(fx, &["state", "import", &export.to_string_lossy()]);
        let (pg, pg_all) = median(self, 0x9_9e5);
        println!("1-change delta: SQLite state {sqlite:.3} s {sqlite_all:?}, PostgreSQL state {pg:.3} s {pg_all:?}");
        self.rows.push((
            format!(
                "delta sync ({}), 1 changed membership in the tenant above, state in SQLite vs \
                 PostgreSQL (15, loopback, TLS + password; the same state moved with state \
                 export/import), median of {STATE_ROUNDS}",
                report::DC
            ),
            format!("SQLite {sqlite:.3} s, PostgreSQL {pg:.3} s: difference {:+.3} s", pg - sqlite),
        ));
    }

    /// One delta step of `delta`: the change, the timed sync, the check; the sync's figures.
    fn delta_step(&mut self, fx: &Fixture, tenant: &mut Value, n: usize, seed: u64) -> Step {
        let users: Vec<String> = tenant["users"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["id"].as_str().map(String::from))
            .collect();
        let groups = tenant["groups"].as_array_mut().expect("groups");
        let mut r = seed;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r as usize
        };
        for i in 0..n {
            let g = next() % groups.len();
            let members = groups[g]["members"].as_array_mut().expect("members");
            if i % 2 == 0 && !members.is_empty() {
                let k = next() % members.len();
                members.remove(k);
            } else {
                let have: HashSet<&str> = members.iter().filter_map(Value::as_str).collect();
                if let Some(u) =
                    (0..users.len()).map(|k| &users[(next() + k) % users.len()]).find(|u| !have.contains(u.as_str()))
                {
                    members.push(Value::String(u.clone()));
                }
            }
        }
        let total: usize = groups.iter().map(|g| g["members"].as_array().map_or(0, Vec::len)).sum();
        fx.set_tenant(tenant);
        let s = writeback(fx, &["sync"]);
        let (_, members) = census(&self.dc, self.admin(), &fx.groups_ou);
        assert_eq!(members, total, "AD holds exactly the cloud's memberships after the delta");
        s
    }
}

/// One statement on the test PostgreSQL (scripts/postgres), as its `writeback` role.
fn psql(admin_url: &str, sql: &str) {
    let port = admin_url.rsplit_once(':').and_then(|(_, r)| r.split('/').next()).unwrap_or("5433").to_string();
    let ca = std::env::var("WRITEBACK_TEST_PG_CA").unwrap_or_default();
    let conn =
        format!("host=localhost port={port} user=writeback dbname=postgres sslmode=verify-full sslrootcert={ca}");
    let ok = Command::new("psql")
        .args([conn.as_str(), "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", std::env::var("WRITEBACK_STATE_PASSWORD").unwrap_or_default())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "psql: {sql}");
}

fn main() {
    let (groups, users, memberships, big) = (arg(1, 10_000), arg(2, 50_000), arg(3, 500_000), arg(4, 100_000));
    let dc = Dc::from_env();
    let admin_pw = PathBuf::from(std::env::var("WRITEBACK_TEST_BIND_PASSWORD_FILE").expect("DC env"));
    let svc_pw = PathBuf::from(std::env::var("WRITEBACK_TEST_DELEGATED_PASSWORD_FILE").expect("DC env"));
    let work = std::env::temp_dir().join("writeback-bench-scale");
    std::fs::create_dir_all(&work).expect("work dir");
    let mut b = Bench {
        admin: (dc.bind_dn.clone(), admin_pw),
        svc: (dc.delegated.0.clone(), svc_pw),
        sim_bin: sibling_binary("writeback-graph-sim"),
        work,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
        rows: Vec::new(),
        dc,
    };
    let users_ou = format!("OU=bench-users,{}", b.dc.base_dn);
    let sids = b.ensure_users(&users_ou, users.max(big));
    if std::env::var_os("BENCH_USERS_ONLY").is_some() {
        // scripts/bench keeps a copy of the DC as it is now (users, no groups) for later runs.
        println!("{} users in {users_ou}", users.max(big));
        return;
    }
    let run_tag = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    );

    let s = |n: usize| n.to_string();
    // groups = 0: only the one-big-group case.
    if groups > 0 {
        let mut tenant = b.tenant(
            "scale",
            &sids,
            &["--groups".into(), s(groups), "--users".into(), s(users), "--memberships".into(), s(memberships)],
        );
        let mut fx = b.full("tenant", &run_tag, &tenant, rounds("BENCH_ROUNDS_TENANT", 1));
        for (i, n) in [1, 100, 10_000].into_iter().enumerate() {
            b.delta(&fx, &mut tenant, n, 0x9e37_79b9 + i as u64);
        }
        b.state_engines(&fx, &mut tenant);
        // The fixture keeps its files and OU for a look afterwards, not its simulator.
        fx.stop_sim();
    }
    if big > 0 {
        let tenant = b.tenant(
            "big",
            &sids,
            &[
                "--groups".into(),
                s(0),
                "--users".into(),
                s(big),
                "--big-group".into(),
                s(big),
                "--memberships".into(),
                s(0),
            ],
        );
        let mut fx = b.full("one-big-group", &run_tag, &tenant, rounds("BENCH_ROUNDS_BIG", 3));
        b.read_back(&fx, big);
        fx.stop_sim();
    }
    report::append_rows(&b.rows);
}
