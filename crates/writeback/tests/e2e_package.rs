//! The Debian package (issue #18), built from the tests' own binary, installed on this machine
//! and run as the service runs it: `writeback check`, then the unit's command line as the
//! `writeback` user until its first cycle, after the administrator's first sync as root
//! (systemd is not running here; the unit is verified by systemd-analyze). Needs root and
//! dpkg: CI runs as root on Debian 12.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

use common::*;

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// As the service user, with the unit's configuration.
fn as_service(args: &[&str]) -> (i32, String, String) {
    run(Command::new("runuser")
        .args(["-u", "writeback", "--", "/usr/bin/writeback", "--config", "/etc/writeback/writeback.toml"])
        .args(args))
}

/// The service's process, killed if the test fails before it stops it.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn install_secret(from: &Path, name: &str, mode: &str) {
    let to = format!("/etc/writeback/{name}");
    std::fs::copy(from, &to).expect("copy");
    run(Command::new("chown").args(["root:writeback", &to]));
    run(Command::new("chmod").args([mode, &to]));
}

#[test]
fn the_package_installs_a_hardened_service_that_runs_as_its_own_user() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")));
    assert_eq!(uid, Some(true), "installing the package needs root (CI runs as root; so does scripts/test there)");
    let mut fx = Fixture::new("package");
    let (_, uids, cloud) = fx.synced_users(1);
    let g = fx.id(1);
    fx.start_sim(&tenant(cloud, vec![security_group(&g, "SG-Packaged", Some(true), &[&uids[0]])]));
    let port = free_port();
    fx.write_config(&format!("[daemon]\nlisten = \"127.0.0.1:{port}\"\n"));

    let bin = env!("CARGO_BIN_EXE_writeback");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = fx.dir.join("deb");
    let (code, deb, err) = run(Command::new(repo.join("scripts/package")).args(["--bin", bin, "--out"]).arg(&out));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(Command::new("dpkg").args(["-i", deb.trim()]));
    assert_eq!(code, 0, "dpkg -i: {err}");

    // What the package put in place.
    let (code, passwd, _) = run(Command::new("getent").args(["passwd", "writeback"]));
    assert_eq!(code, 0, "the writeback system user");
    assert!(passwd.contains("/usr/sbin/nologin"), "{passwd}");
    for file in [
        "/lib/systemd/system/writeback.service",
        "/usr/share/man/man1/writeback.1.gz",
        "/usr/share/bash-completion/completions/writeback",
        "/usr/share/zsh/vendor-completions/_writeback",
        "/var/lib/writeback",
    ] {
        assert!(Path::new(file).exists(), "{file}");
    }
    let (_, stat, _) = run(Command::new("stat").args(["-c", "%U:%G %a", "/etc/writeback/writeback.toml"]));
    assert_eq!(stat.trim(), "root:writeback 640", "the conffile is readable by the service, not by others");
    let unit = std::fs::read_to_string("/lib/systemd/system/writeback.service").expect("unit");
    for line in
        ["User=writeback", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "StateDirectory=writeback"]
    {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let (code, _, err) = run(Command::new("systemd-analyze").args(["verify", "/lib/systemd/system/writeback.service"]));
    assert_eq!(code, 0, "systemd-analyze verify: {err}");

    // Configured as an administrator does: the secrets readable by the service user only.
    let config = std::fs::read_to_string(fx.dir.join("writeback.toml")).expect("config");
    let ca = config.lines().find_map(|l| l.strip_prefix("ca_file = \"")).map(|l| l.trim_end_matches('"')).expect("ca");
    install_secret(Path::new(ca), "ca.pem", "640");
    install_secret(&fx.dir.join("bind-password"), "bind-password", "640");
    install_secret(&fx.dir.join("client-secret"), "client-secret", "600");
    let state = format!("/var/lib/writeback/{}.db", fx.id(0));
    let config =
        config.replace(ca, "/etc/writeback/ca.pem").replace("path = \"state.db\"", &format!("path = \"{state}\""));
    std::fs::write("/etc/writeback/writeback.toml", &config).expect("config");

    // A secret the service cannot read is a configuration error that says whose.
    let (code, _, err) = as_service(&["check"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("[cloud] client_secret_file") && err.contains("user writeback"), "{err}");
    run(Command::new("chmod").args(["640", "/etc/writeback/client-secret"]));

    // The unit's command line, as its user: check, then one cycle, in journald's format.
    assert!(exec.starts_with("/usr/bin/writeback --config /etc/writeback/writeback.toml --log-format syslog run"));
    let (code, out, err) = as_service(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    // The administrator's first run is as root (README): the state and its lock file go to the
    // service user, who owns the state directory, or the service could not open them.
    let (code, _, err) = run(Command::new("/usr/bin/writeback").arg("sync"));
    assert_eq!(code, 0, "{err}");
    assert!(fx.group(&g).is_some(), "root's first cycle wrote the group");
    let (_, owners, _) = run(Command::new("sh").arg("-c").arg(format!("stat -c '%U %a' {state} {state}.lock 2>&1")));
    assert!(owners.lines().all(|l| l == "writeback 600"), "{owners}");

    // The unit's command line as its user: the daemon runs a cycle, in journald's format.
    let log = fx.dir.join("service.log");
    let ids: Vec<u32> = passwd.split(':').skip(2).take(2).filter_map(|n| n.parse().ok()).collect();
    let mut words = exec.split_whitespace();
    let daemon = Command::new(words.next().expect("a program"))
        .args(words)
        .uid(ids[0])
        .gid(ids[1])
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the service's command line");
    let mut daemon = Reap(daemon);
    let url = format!("http://127.0.0.1:{port}");
    wait_until("the service's first cycle", || {
        http_raw(&url, "GET", "/healthz", None).is_some_and(|(code, _)| code == 200)
            && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("cycle finished"))
    });
    let (_, status, _) = as_service(&["--json", "status"]);
    let pid = serde_json::from_str::<serde_json::Value>(&status).ok().and_then(|s| s["daemon"]["pid"].as_u64());
    assert_eq!(pid, Some(u64::from(daemon.0.id())), "writeback status names the service's pid: {status}");
    run(Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]));
    assert!(daemon.0.wait().expect("wait").success(), "stopped by SIGTERM, exit 0");
    let err = std::fs::read_to_string(&log).expect("log");
    assert!(err.contains("cycle finished") && err.lines().all(|l| l.starts_with('<')), "syslog priorities: {err}");
    let (code, man, _) = run(Command::new("sh").arg("-c").arg("zcat /usr/share/man/man1/writeback.1.gz"));
    assert!(code == 0 && man.contains("approve"), "the man page lists the commands");

    let (code, _, err) = run(Command::new("dpkg").args(["--purge", "writeback"]));
    assert_eq!(code, 0, "{err}");
    assert!(!Path::new("/usr/bin/writeback").exists());
    // What the administrator added (secrets) is not the package's: removed by hand, as here.
    let _ = std::fs::remove_dir_all("/etc/writeback");
}
