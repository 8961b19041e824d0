//! `writeback sync --group`: the named groups now. Run here when nothing else leads; while a
//! daemon leads, asked of it (`POST /sync` with the groups' ids) and waited for, so that the
//! command works the same whether the daemon runs or not.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use writeback_core::{Allow, CloudId};
use writeback_store::{Store, Target};

use crate::config::Config;
use crate::error::CycleError;
use crate::lead::{self, Lead, NotLead};
use crate::{cycle, engine, exit, output};

/// How long `sync --group` waits for the daemon's group cycle (it may be in a long full cycle).
const WAIT_FOR_DAEMON: Duration = Duration::from_secs(30 * 60);

pub async fn sync_groups(cfg: &Config, allow: Allow, needles: &[String], as_json: bool) -> Result<u8, CycleError> {
    let ids = engine::ids_named(cfg, needles).await?;
    let interval = crate::daemon::intervals(cfg).map(|(i, _)| i).unwrap_or(Duration::from_secs(60));
    match Lead::try_take(cfg, &lead::me(None), writeback_store::lead::Timing::for_interval(interval)).await? {
        Ok(lead) => {
            let r = cycle::sync_groups(cfg, allow, &ids, &lead).await;
            lead.release().await;
            Ok(output::sync(&r?, as_json))
        }
        Err(not) => {
            if allow.deletes || allow.creates {
                return Err(CycleError::Lock(format!(
                    "{}. A daemon never goes past a threshold for a request: approve it with `writeback approve`, \
                     or stop the daemon and run this again",
                    not.describe(cfg)
                )));
            }
            let url = match daemon_url(cfg, &not).await {
                Ok(url) => url,
                Err(why) => return Err(CycleError::Lock(format!("{}; {why}", not.describe(cfg)))),
            };
            tracing::info!(%url, groups = ids.len(), "a daemon leads: the groups are handed to it");
            let doc = ask_daemon(cfg, &url, &ids).await?;
            Ok(print_daemon_run(&doc, as_json))
        }
    }
}

/// The leading daemon's listener on this host: its recorded port, on the configured listen
/// address (a loopback or wildcard listener is reached on 127.0.0.1). A leader on another host
/// is not asked: its listener is plain HTTP, and the token must not cross the network in clear.
async fn daemon_url(cfg: &Config, not: &NotLead) -> Result<String, String> {
    let unknown = || "its listener is not known, so the groups cannot be handed to it".to_string();
    let leader = match not {
        NotLead::Pg(Some(l)) => l.clone(),
        _ => {
            let target: Target = cfg.state().map_err(|e| e.to_string())?;
            let store = Store::open_read_only(&target).await.ok().flatten().ok_or_else(unknown)?;
            store.leaders().await.ok().and_then(|l| l.into_iter().next()).ok_or_else(unknown)?
        }
    };
    let address = leader.address.ok_or_else(unknown)?;
    if leader.host != lead::host() {
        return Err(format!(
            "the active instance runs on {}: run `writeback sync --group` there (its listener is plain HTTP: \
             the token is not sent across the network)",
            leader.host
        ));
    }
    let port = address.rsplit_once(':').ok_or_else(unknown)?.1;
    let ip = match cfg.daemon.listen.parse::<std::net::SocketAddr>() {
        Ok(a) if !a.ip().is_unspecified() => a.ip(),
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    let host = match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    Ok(format!("http://{host}:{port}"))
}

/// Queues the groups with the daemon and waits for the group cycle that did them: its run, as
/// `sync --json` prints it (with its message).
async fn ask_daemon(cfg: &Config, url: &str, ids: &[CloudId]) -> Result<Value, CycleError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = cfg.daemon_token().map_err(|e| CycleError::Config(format!("{e:#}")))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| CycleError::Other(format!("cannot make an HTTP client: {e}")))?;
    let authorize = |r: reqwest::RequestBuilder| match &token {
        Some(t) => r.bearer_auth(t.expose()),
        None => r,
    };
    let cannot = |e: reqwest::Error| CycleError::Lock(format!("the daemon's listener at {url} did not answer: {e}"));
    let body = json!({"groups": ids.iter().map(CloudId::as_str).collect::<Vec<_>>()});
    let resp = authorize(client.post(format!("{url}/sync")).json(&body)).send().await.map_err(cannot)?;
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if status != reqwest::StatusCode::ACCEPTED {
        let why = answer["reason"].as_str().or(answer["error"].as_str()).unwrap_or("no reason given");
        return Err(CycleError::Lock(format!("the daemon at {url} refused the groups ({status}): {why}")));
    }
    let request = answer["request"].as_u64().unwrap_or(u64::MAX);
    // Request numbers are the daemon process's own: a restarted one counts again.
    let instance = answer["instance"].clone();
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s: Value = authorize(client.get(format!("{url}/api/status")))
            .send()
            .await
            .map_err(cannot)?
            .json()
            .await
            .map_err(cannot)?;
        let done = &s["group_requests"];
        if done["instance"] != instance {
            return Err(CycleError::Lock(format!(
                "the daemon at {url} restarted (or another took over) before it ran the groups: run the command again"
            )));
        }
        if done["done"].as_u64().is_some_and(|n| n >= request) {
            return Ok(done["last"].clone());
        }
        if started.elapsed() > WAIT_FOR_DAEMON {
            return Err(CycleError::Lock(format!(
                "the daemon at {url} queued the groups but has not run them in {} minutes (a long cycle, or a \
                 back-off): they run with its next group cycle; see its status page",
                WAIT_FOR_DAEMON.as_secs() / 60
            )));
        }
    }
}

/// The daemon's group run, printed as `sync` prints a run; the exit status is the run's.
fn print_daemon_run(doc: &Value, as_json: bool) -> u8 {
    let status = doc["status"].as_str().unwrap_or("failed");
    if as_json {
        println!("{doc}");
    } else {
        let counts: Vec<String> = ["adds", "updates", "renames", "moves", "deletes", "member_adds", "member_removes"]
            .iter()
            .filter_map(|k| doc[*k].as_u64().filter(|n| *n > 0).map(|n| format!("{n} {}", k.replace('_', " "))))
            .collect();
        let run = doc["run_id"].as_i64().map(|r| format!("run {r} ")).unwrap_or_default();
        let counts = if counts.is_empty() { "no change".to_string() } else { counts.join(", ") };
        println!("{run}(group, by the daemon): {status} — {counts}, {} errors", doc["errors"].as_u64().unwrap_or(0));
        for m in [&doc["message"], &doc["error"]].into_iter().filter_map(Value::as_str) {
            println!("{}", writeback_core::naming::printable(m));
        }
    }
    match status {
        "success" => exit::OK,
        "completed-with-errors" => exit::OBJECT_ERRORS,
        "stopped-delete-threshold" => exit::THRESHOLD,
        _ => exit::CANNOT_RUN,
    }
}
