//! Alerts end to end (issue #22, part 2): the daemon sends one notification when an incident
//! starts and one when it clears, never one per cycle, to a webhook (a local receiver that
//! refuses the first delivery, so the retry is exercised) and by email (a local SMTP server,
//! Debian's aiosmtpd, with STARTTLS required and a certificate from a test CA).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

/// Accepted webhook bodies; the first request of all is answered 500.
struct Hook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    refused: Arc<Mutex<usize>>,
}

impl Hook {
    fn start() -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url =
            format!("http://127.0.0.1:{}/hooks/secret-token-in-path", listener.local_addr().expect("addr").port());
        let (bodies, refused) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(0)));
        let (b, r) = (bodies.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let first = { *r.lock().expect("lock") == 0 && b.lock().expect("lock").is_empty() };
                let status = if first {
                    *r.lock().expect("lock") += 1;
                    "500 Internal Server Error"
                } else {
                    b.lock().expect("lock").push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    "200 OK"
                };
                let mut s = reader.into_inner();
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Hook { url, bodies, refused }
    }

    fn events(&self, kind: &str) -> Vec<String> {
        let bodies = self.bodies.lock().expect("lock");
        bodies
            .iter()
            .filter(|b| b["incidents"].as_array().is_some_and(|i| i.iter().any(|x| x["kind"] == kind)))
            .map(|b| b["event"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// A test CA and a certificate for localhost / 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl").args(args).current_dir(dir).stderr(Stdio::null()).status();
        assert!(ok.is_ok_and(|s| s.success()), "openssl {args:?}");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=alerts test CA"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", "smtp.key", "-out", "smtp.csr", "-subj", "/CN=localhost"]].concat());
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "smtp.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "smtp.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

const SMTP_SERVER: &str = r#"
import os, ssl, sys, time
from aiosmtpd.controller import Controller
port, out, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Save:
    async def handle_DATA(self, server, session, envelope):
        n = len(os.listdir(out))
        with open(os.path.join(out, "%04d.eml" % n), "wb") as f:
            f.write(envelope.original_content or envelope.content)
        return "250 OK"
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Save(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// aiosmtpd on 127.0.0.1 (Debian's python3-aiosmtpd, so /usr/bin/python3), killed when dropped.
struct Smtp {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Smtp {
    fn start(dir: &Path) -> Smtp {
        let port = free_port();
        let mail = dir.join("mail");
        std::fs::create_dir_all(&mail).expect("mail dir");
        std::fs::write(dir.join("smtp.py"), SMTP_SERVER).expect("script");
        let mut child = Command::new("/usr/bin/python3")
            .arg(dir.join("smtp.py"))
            .arg(port.to_string())
            .arg(&mail)
            .arg(dir.join("smtp.pem"))
            .arg(dir.join("smtp.key"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test installs python3-aiosmtpd)");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line);
        assert_eq!(line.trim(), "ready", "the SMTP server started");
        Smtp { child, port, dir: mail }
    }

    fn messages(&self) -> Vec<String> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir).expect("mail dir").flatten().map(|e| e.path()).collect();
        files.sort();
        files.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()).collect()
    }

    fn count(&self, needle: &str) -> usize {
        self.messages().iter().filter(|m| m.contains(needle)).count()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn one_alert_per_incident_and_one_when_it_clears_by_webhook_and_email() {
    let mut fx = Fixture::new("alerts");
    let (_, uids, cloud) = fx.synced_users(1);
    certificates(&fx.dir);
    let hook = Hook::start();
    let smtp = Smtp::start(&fx.dir);
    let (good, bad) = (fx.id(1), fx.id(2));
    let mut t = tenant(
        cloud,
        vec![
            security_group(&good, "SG-Good", Some(true), &[&uids[0]]),
            // A 300-character name: an error for this group on every cycle.
            security_group(&bad, &"x".repeat(300), Some(true), &[]),
        ],
    );
    fx.start_sim(&t);
    fx.write_config(&format!(
        "create_threshold = 2\n[daemon]\ninterval = \"1s\"\nfull_interval = \"1h\"\n\n[alerts]\nwebhook = \"{}\"\n\
         smtp = \"smtp://localhost:{}\"\nfrom = \"writeback@corp.example\"\nto = [\"ad-admins@corp.example\"]\n\
         ca_file = \"ca.pem\"\nafter = \"2s\"\n",
        hook.url, smtp.port
    ));
    let d = Daemon::start(&fx);
    d.wait_for("active", |h| h["role"] == "active");

    // The group in error for more than 2 s: one message per channel, however many cycles run.
    wait_until("the group error alert by webhook", || hook.events("group-error") == ["raised"]);
    wait_until("the group error alert by email", || smtp.count("PROBLEM") == 1);
    assert_eq!(*hook.refused.lock().expect("lock"), 1, "the first delivery was refused and retried");
    let cycles_before = d.metric("writeback_cycles_total{kind=\"delta\",status=\"completed-with-errors\"}");
    wait_until("four more cycles", || {
        d.metric("writeback_cycles_total{kind=\"delta\",status=\"completed-with-errors\"}").unwrap_or(0.0)
            >= cycles_before.unwrap_or(0.0) + 4.0
    });
    assert_eq!(hook.events("group-error"), ["raised"], "not one per cycle");
    assert_eq!(smtp.count("PROBLEM"), 1, "not one per cycle");
    let body = hook.bodies.lock().expect("lock")[0].clone();
    assert_eq!(body["incidents"][0]["key"], format!("group:{bad}"), "{body}");
    assert!(body["text"].as_str().is_some_and(|t| t.contains("PROBLEM") && t.contains("in error since")), "{body}");
    assert!(body["incidents"][0]["title"].as_str().is_some_and(|t| t.contains("xxx…") && t.len() < 200), "{body}");
    let mail = smtp.messages().join("\n");
    assert!(mail.contains("Subject: [writeback ") && mail.contains("To: ad-admins@corp.example"), "{mail}");

    // Fixed in the cloud: one message that it cleared.
    t["groups"][1]["displayName"] = json!("SG-Fixed");
    fx.set_tenant(&t);
    wait_until("the cleared alert by webhook", || hook.events("group-error") == ["raised", "cleared"]);
    wait_until("the cleared alert by email", || smtp.count("RESOLVED") == 1);

    // A threshold stops the cycles: one alert, then one when an approval lets them go ahead.
    let groups = t["groups"].as_array_mut().expect("groups");
    for n in 3..6 {
        groups.push(security_group(&fx.id(n), &format!("SG-New-{n}"), Some(true), &[]));
    }
    fx.set_tenant(&t);
    wait_until("the threshold alert", || hook.events("threshold") == ["raised"]);
    let r = fx.writeback(&["approve", "--creates", "3"]);
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    wait_until("the threshold cleared", || hook.events("threshold") == ["raised", "cleared"]);
    wait_until("both by email", || smtp.count("threshold stopped") == 2);
    assert_eq!(hook.events("group-error"), ["raised", "cleared"], "nothing more about the group");

    // The webhook's path (its secret) is never in the log.
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(log.contains("alert sent") && !log.contains("secret-token-in-path"), "{log}");
}
