//! `writeback approve`: lets the next cycle — the daemon's too, while it runs — go past a
//! threshold that stopped it, up to a count. Recorded in the state database (who, when, how
//! much), used by one cycle, then gone. Without options it says what is stopped and how to
//! approve it.

use serde_json::json;
use writeback_core::naming::printable;
use writeback_core::{CloudId, Stopped, Threshold};
use writeback_store::{Approval, Approve, Store};

use crate::config::Config;
use crate::error::CycleError;
use crate::exit;

pub struct Args {
    pub deletes: Option<usize>,
    pub creates: Option<usize>,
    pub member_removals: Option<usize>,
    pub removals: Vec<String>,
}

impl Args {
    fn is_empty(&self) -> bool {
        self.deletes.is_none() && self.creates.is_none() && self.member_removals.is_none() && self.removals.is_empty()
    }
}

/// Who runs this command, for the record: the uid (which the caller cannot choose), with the
/// login name its environment gives (behind sudo, the one sudo names).
fn approver() -> String {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)).map(str::to_string)
    });
    let names: &[&str] =
        if uid.as_deref() == Some("0") { &["SUDO_USER", "USER", "LOGNAME"] } else { &["USER", "LOGNAME"] };
    let user = names.iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    match (user, uid) {
        (Some(u), Some(id)) => format!("{u} (uid {id})"),
        (Some(u), None) => u,
        (None, Some(id)) => format!("uid {id}"),
        (None, None) => "unknown".into(),
    }
}

/// The approvals `args` asks for. A group's removals are approved as far as the last cycle
/// held them (by cloud id or display name); a group it did not hold is an error.
fn wanted(args: &Args, stopped: &Stopped) -> Result<Vec<Approve>, String> {
    let mut out = Vec::new();
    for (threshold, n) in [
        (Threshold::Deletes, args.deletes),
        (Threshold::Creates, args.creates),
        (Threshold::MemberRemovals, args.member_removals),
    ] {
        match n {
            Some(0) => return Err(format!("{} needs a count of at least 1", threshold.approve_option())),
            Some(up_to) => out.push(Approve::Past { threshold, up_to }),
            None => {}
        }
    }
    for g in &args.removals {
        let id = CloudId::new(g.trim());
        let by_id: Vec<_> = stopped.held.iter().filter(|h| h.cloud_id == id).collect();
        let held = if by_id.is_empty() {
            stopped.held.iter().filter(|h| h.display_name.eq_ignore_ascii_case(g.trim())).collect()
        } else {
            by_id
        };
        match held.as_slice() {
            [h] => out.push(Approve::Removals { group: h.cloud_id.clone(), up_to: h.removals }),
            // Display names are not unique (and a group's owner chooses them): the id decides.
            [_, _, ..] => {
                let ids: Vec<String> = held.iter().map(|h| h.cloud_id.to_string()).collect();
                return Err(format!(
                    "{} names {} groups whose removals were held: approve one by its id ({})",
                    printable(g),
                    held.len(),
                    ids.join(", ")
                ));
            }
            [] => {
                let now: Vec<String> =
                    stopped.held.iter().map(|h| format!("{} ({})", h.display_name, h.cloud_id)).collect();
                return Err(format!(
                    "the last cycle held no member removals of {}; {}",
                    printable(g),
                    if now.is_empty() {
                        "it held none".to_string()
                    } else {
                        format!("it held those of {}", now.join(", "))
                    }
                ));
            }
        }
    }
    Ok(out)
}

pub async fn approve(cfg: &Config, args: &Args, as_json: bool) -> Result<u8, CycleError> {
    let store = Store::open(&cfg.state()?).await?;
    let stopped = store.stopped().await?;
    if args.is_empty() {
        show(&stopped, &store.open_approvals().await?, as_json);
        return Ok(exit::OK);
    }
    let approvals = match wanted(args, &stopped) {
        Ok(a) => a,
        Err(why) => {
            if as_json {
                println!("{}", json!({"status": "failed", "error": why}));
            }
            eprintln!("error: {why}");
            return Ok(exit::CONFIG);
        }
    };
    let who = approver();
    let mut recorded = Vec::new();
    for a in &approvals {
        let id = store.approve(a, &who).await?;
        tracing::info!(approval = id, %who, what = %a.describe(), "approval recorded for the next cycle");
        recorded.push(json!({"id": id, "approve": a, "who": who}));
        if !as_json {
            println!("approval #{id}: {} for the next cycle (by {who})", a.describe());
        }
    }
    if as_json {
        println!("{}", json!({"approvals": recorded}));
    } else {
        if stopped.blocked.is_none() && args.removals.is_empty() {
            println!("Nothing is stopped now: the approval waits for the next cycle (a day at most).");
        }
        println!(
            "The next cycle uses it once, then it is gone; a cycle that would go further still stops. \
             A running daemon starts its next cycle on SIGUSR1 or POST /sync, or at its interval. \
             State: {}",
            cfg.state_path().display()
        );
    }
    Ok(exit::OK)
}

/// What is stopped, the commands that approve it, and the approvals waiting for a cycle.
fn show(stopped: &Stopped, open: &[Approval], as_json: bool) {
    if as_json {
        let doc = json!({"stopped": stopped, "approve": stopped.approve_commands(), "open_approvals": open});
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return;
    }
    if stopped.is_empty() {
        println!("Nothing is stopped: the last cycle went past no threshold.");
    }
    for g in &stopped.guarded {
        println!("held by the Tier-0 guard: {}\n  no approval goes past the guard", printable(&g.describe()));
    }
    if let Some(b) = &stopped.blocked {
        println!("stopped: {}\n  approve: {}", printable(&b.message), b.approve_command());
    }
    for h in &stopped.held {
        println!(
            "held: {} member removals of {} ({})\n  approve: {}",
            h.removals,
            printable(&h.display_name),
            h.cloud_id,
            h.approve_command()
        );
    }
    for a in open {
        println!(
            "waiting for the next cycle: approval #{} by {} at {}: {}",
            a.id,
            a.who,
            a.created_at,
            a.approve.describe()
        );
    }
}

#[cfg(test)]
mod tests {
    use writeback_core::{Blocked, Held};

    use super::*;

    #[test]
    fn a_group_is_approved_as_far_as_it_was_held_and_only_if_it_was() {
        let g = CloudId::new("3a5c3221-c465-48c0-95b8-e9305786a271");
        let held = Held {
            cloud_id: g.clone(),
            display_name: "SG-Finance".into(),
            removals: 140,
            message: "m".into(),
            taken_over: false,
        };
        let blocked = Blocked { threshold: Threshold::Deletes, count: 12, message: "m".into() };
        let stopped = Stopped { blocked: Some(blocked), held: vec![held], ..Stopped::default() };
        let args = |removals: &[&str], deletes| Args {
            deletes,
            creates: None,
            member_removals: None,
            removals: removals.iter().map(|s| s.to_string()).collect(),
        };
        let by_name = wanted(&args(&["sg-finance"], Some(12)), &stopped).expect("held");
        assert_eq!(
            by_name,
            vec![
                Approve::Past { threshold: Threshold::Deletes, up_to: 12 },
                Approve::Removals { group: g.clone(), up_to: 140 }
            ]
        );
        let by_id = wanted(&args(&["3A5C3221-C465-48C0-95B8-E9305786A271"], None), &stopped).expect("held");
        assert_eq!(by_id, vec![Approve::Removals { group: g, up_to: 140 }]);
        let e = wanted(&args(&["SG-Other"], None), &stopped).expect_err("not held");
        assert!(e.contains("SG-Finance"), "{e}");
        assert!(wanted(&args(&[], Some(0)), &stopped).is_err(), "a count of 0 approves nothing");
    }
}
