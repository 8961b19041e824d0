//! The demo (`scripts/demo`): a sample tenant modelled on a real rollout, written back into a
//! throwaway Samba AD DC by the real binary. Leaves everything in place to explore.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn run(fx: &Fixture, args: &[&str]) -> i32 {
    let cfg = fx.dir.join("writeback.toml");
    println!("$ writeback -c {} {}", cfg.display(), args.join(" "));
    let r = fx.writeback(args);
    print!("{}", r.stdout);
    if !r.stderr.trim().is_empty() {
        eprint!("{}", r.stderr);
    }
    r.code
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.demo");
    let mut fx = Fixture::persistent("Writeback Demo", &dir);

    step("AD: users that Entra Connect syncs to the cloud (created in the demo OU)");
    let people = ["Alice Adams", "Bob Brown", "Carol Clark", "Dan Davis", "Erin Evans", "Frank Ford", "Grace Green"];
    let users: Vec<AdObj> = people.iter().map(|p| fx.create_user(p)).collect();
    for u in &users {
        println!("  {}  {}", u.sid, u.dn);
    }

    step("Cloud: a tenant modelled on a real rollout (served by the Graph simulator)");
    let uid = |i: usize| fx.id(100 + i as u32);
    let mut tenant_users: Vec<Value> = users.iter().enumerate().map(|(i, u)| synced_user(&uid(i), u)).collect();
    let (c1, c2) = (fx.id(201), fx.id(202));
    tenant_users.push(cloud_user(&c1));
    tenant_users.push(cloud_user(&c2));
    let u: Vec<String> = (0..users.len()).map(uid).collect();
    let mut dynamic =
        security_group(&fx.id(2), "SG-Dynamic-Sales", Some(true), &[&u[1], &u[2], &u[3], &u[4], &c1, &c2]);
    dynamic["groupTypes"] = json!(["DynamicMembership"]);
    dynamic["membershipRule"] = json!("user.department -eq \"Sales\"");
    let groups = vec![
        security_group(&fx.id(1), "SG-FileShare-Finance", Some(true), &[&u[0], &u[5]]),
        dynamic,
        m365_group(&fx.id(3), "Project Apollo", Some(false), None, &[&u[0]]),
        m365_group(&fx.id(4), "Marketing Team", None, None, &[&u[0], &u[6]]),
        m365_group(&fx.id(5), "Helpdesk", Some(true), Some("universalMailEnabledSecurityGroup"), &[&u[5], &u[6]]),
        security_group(&fx.id(6), "SG-Cloud-Only-App", None, &[&u[2]]),
    ];
    for g in &groups {
        let wb = &g["writebackConfiguration"];
        println!(
            "  {:<22} groupTypes={:<24} isEnabled={:<5} onPremisesGroupType={}",
            g["displayName"].as_str().unwrap_or(""),
            g["groupTypes"].to_string(),
            wb["isEnabled"].to_string(),
            wb["onPremisesGroupType"]
        );
    }
    fx.start_sim(&tenant(tenant_users, groups));
    fx.write_config("cn_format = \"display-name\"");
    println!("  simulator at {} (pid {})", fx.sim_url(), fx.sim_pid().unwrap_or(0));

    step("Preflight");
    run(&fx, &["check"]);
    step("What a sync would do (writes nothing)");
    run(&fx, &["plan"]);
    step("The real sync");
    let code = run(&fx, &["sync", "--full"]);

    step("The result in AD (read back over LDAPS)");
    let groups_ou = fx.groups_ou.clone();
    let users_by_guid: std::collections::HashMap<String, String> =
        users.iter().map(|u| (u.guid.clone(), u.dn.split(',').next().unwrap_or("").to_string())).collect();
    for g in fx.groups(&groups_ou) {
        let kind = match g.group_type() {
            UNIVERSAL_SECURITY => "universal security",
            UNIVERSAL_DISTRIBUTION => "universal distribution",
            _ => "other",
        };
        println!(
            "  {}\n      {kind}; adminDescription={}; mail={}",
            g.dn,
            g.one("adminDescription").unwrap_or(""),
            g.one("mail").unwrap_or("-")
        );
        let names: Vec<&str> =
            g.members.iter().map(|m| users_by_guid.get(m).map(String::as_str).unwrap_or(m)).collect();
        println!("      members: {}", names.join(", "));
    }

    step("Why 4 of 6 members? (writeback show)");
    run(&fx, &["show", "SG-Dynamic-Sales"]);
    step("A second sync has nothing to do");
    run(&fx, &["sync"]);
    run(&fx, &["history"]);

    let cfg = fx.dir.join("writeback.toml");
    let pid = fx.sim_pid().unwrap_or(0);
    println!(
        "\nDone. Everything is still running, so you can explore:\n  \
            target/debug/writeback -c {cfg} show \"Marketing Team\"\n  \
            target/debug/writeback -c {cfg} --json plan\n  curl -s \
            {url}/_control/tenant   # the simulated tenant (PUT it back changed, \
            then sync)\nStop: kill {pid}; scripts/samba-dc stop",
        cfg = cfg.display(),
        url = fx.sim_url(),
    );
    let _ = std::fs::write(fx.dir.join("simulator.pid"), pid.to_string());
    std::process::exit(if code == 0 { 0 } else { 1 });
}
