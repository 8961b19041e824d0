//! The Windows-limits layer (`writeback-dc-proxy`, issue #19) between writeback and the test
//! DC: what a Windows DC's default LDAP policies and refusals do where Samba does not.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

pub struct WindowsDc {
    child: Child,
    /// `ldaps://127.0.0.1:PORT`: give it to writeback as `[ad] url`.
    pub url: String,
    log: PathBuf,
    /// It emulates a schema without some attribute: writeback must never name it in a filter.
    hides: bool,
}

impl WindowsDc {
    /// A layer with Windows' defaults (MaxPageSize 1,000, MaxValRange 1,500, MaxQueryDuration
    /// 120 s) and `extra` options (`--hide-attribute …`, `--max-query-duration 0s`).
    pub fn start(fx: &Fixture, extra: &[&str]) -> WindowsDc {
        let tls = fx.dc.ca.parent().expect("the DC's TLS directory").to_path_buf();
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let log = fx.dir.join(format!("windows-dc-{}.log", STARTED.fetch_add(1, Ordering::Relaxed)));
        let pw = fx.dir.join("proxy-admin-password");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&pw);
            f.as_mut().map(|f| f.write_all(fx.dc.password.as_bytes())).expect("password file").expect("written");
        }
        // Always the DC itself: a layer never stands in front of another one.
        let upstream = fx.dc.upstream.trim_start_matches("ldaps://").to_string();
        let mut child = Command::new(sibling_binary("writeback-dc-proxy"))
            .args(["--upstream", &upstream])
            .arg("--ca")
            .arg(&fx.dc.ca)
            .arg("--cert")
            .arg(tls.join("server.pem"))
            .arg("--key")
            .arg(tls.join("server.key"))
            .args(["--bind-dn", &fx.dc.bind_dn])
            .arg("--bind-password-file")
            .arg(&pw)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start writeback-dc-proxy");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        let _ = BufReader::new(out).read_line(&mut line);
        let Some(addr) = line.trim().strip_prefix("listening on ").map(str::to_string) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("writeback-dc-proxy did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
        };
        let hides = extra.contains(&"--hide-attribute");
        WindowsDc { child, url: format!("ldaps://{addr}"), log, hides }
    }

    /// What the layer did: one line per rule applied (`windows-limits: Cut(Size)`, …).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WindowsDc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Against a schema without the anchor, a filter naming it matches nothing on Windows:
        // writeback must have used only what its schema read found.
        if self.hides && !std::thread::panicking() {
            let log = self.log();
            assert!(!log.contains("Hidden(\"a filter\")"), "a filter named a hidden attribute: {log}");
        }
    }
}

/// `n` AD users kept between runs in `OU=user-pool-N` below the tests' OU: Samba creates a
/// user in about 10 ms and deletes one in about 45 ms, so thousands made and removed by every
/// run would cost minutes. Made once per test DC (the ones missing), read back in one search,
/// by name order. Only tests of large groups use it, and they only read the users.
pub fn user_pool(fx: &mut Fixture, n: usize) -> Vec<AdObj> {
    let ou = format!("OU=user-pool-{n},{}", fx.dc.tests_ou);
    let read = |fx: &mut Fixture| -> Vec<AdObj> {
        let found =
            fx.ldap.with_controls(vec![extended_dn()]).search(&ou, Scope::OneLevel, "(objectClass=user)", vec!["cn"]);
        let Ok(Ok((entries, _))) = found.map(|r| r.success()) else { return Vec::new() };
        let mut users: Vec<(String, AdObj)> = entries
            .into_iter()
            .map(SearchEntry::construct)
            .map(|e| {
                let cn = e.attrs.get("cn").and_then(|v| v.first()).cloned().unwrap_or_default();
                let (guid, sid, dn) = split_extended(&e.dn);
                (cn, AdObj { dn, guid, sid: sid.unwrap_or_default() })
            })
            .collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        users.into_iter().map(|(_, u)| u).collect()
    };
    let have = read(fx);
    if have.len() >= n {
        return have.into_iter().take(n).collect();
    }
    let _ = fx.ldap.add(&ou, vec![("objectClass", HashSet::from(["organizationalUnit"]))]);
    let names: HashSet<String> = have.iter().map(|u| u.dn.to_ascii_lowercase()).collect();
    for i in 0..n {
        let dn = format!("CN=pool{i:05},{ou}");
        if names.contains(&dn.to_ascii_lowercase()) {
            continue;
        }
        let sam = format!("pool{n}-{i:05}");
        let attrs = vec![("objectClass", HashSet::from(["user"])), ("sAMAccountName", HashSet::from([sam.as_str()]))];
        // 68: made meanwhile by another run on this DC.
        let rc = fx.ldap.add(&dn, attrs).expect("add user").rc;
        assert!(rc == 0 || rc == 68, "adding pool user {dn}: LDAP {rc}");
    }
    read(fx).into_iter().take(n).collect()
}
