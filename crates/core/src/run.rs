//! What a run is and how it ended: closed vocabularies, written as the spec's JSON contract
//! spells them (`"kind": "full"|"delta"`, `"status": "success"|…`), used by the engine, the
//! state, the CLI, the metrics and the status page alike.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// Everything read from Graph and the managed OUs.
    Full,
    /// Only what changed since the last cycle.
    Delta,
    /// Only the groups named by `sync --group` (or `POST /sync` with groups).
    Group,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Full => "full",
            RunKind::Delta => "delta",
            RunKind::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<RunKind> {
        [RunKind::Full, RunKind::Delta, RunKind::Group].into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// Recorded at its start, not finished (yet, or ever: the process died).
    Running,
    Success,
    /// Done, with per-object errors.
    CompletedWithErrors,
    /// A threshold stopped it before writing, or held back part of it (the spec's one name for
    /// every threshold stop).
    StoppedDeleteThreshold,
    /// Most operations failed: writing stopped.
    Quarantined,
    /// It could not run.
    Failed,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Running,
        RunStatus::Success,
        RunStatus::CompletedWithErrors,
        RunStatus::StoppedDeleteThreshold,
        RunStatus::Quarantined,
        RunStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::CompletedWithErrors => "completed-with-errors",
            RunStatus::StoppedDeleteThreshold => "stopped-delete-threshold",
            RunStatus::Quarantined => "quarantined",
            RunStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The run did its work (with or without per-object errors).
    pub fn done(self) -> bool {
        matches!(self, RunStatus::Success | RunStatus::CompletedWithErrors)
    }
}

// `pad`, so that tables can align them with `{:<25}`.
impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One preflight check of `writeback check`: what was checked, and what was found or why it
/// failed (with what to do). The Graph and AD crates run their own; the CLI renders them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub result: Result<String, String>,
    /// Passed, but needs the admin soon (a credential that expires within [`EXPIRY_WARNING_DAYS`]).
    pub warning: bool,
}

impl Check {
    pub fn new(name: &'static str, result: Result<String, String>) -> Self {
        Check { name, result, warning: false }
    }

    pub fn warning(name: &'static str, message: String) -> Self {
        Check { name, result: Ok(message), warning: true }
    }
}

/// How long before a credential expires `check` warns (and the alert rule fires).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The check of a credential that expires at `not_after` (seconds since 1970): failed once it
/// has expired, a warning within [`EXPIRY_WARNING_DAYS`], passed before. `what` names it and
/// `rotate` says how to replace it.
pub fn expiry_check(what: &str, not_after: i64, now: i64, rotate: &str) -> Check {
    const NAME: &str = "Graph credential expiry";
    let days = (not_after - now).div_euclid(86_400);
    if not_after <= now {
        let ago = (now - not_after) / 86_400;
        return Check::new(NAME, Err(format!("{what} expired {ago} days ago: Entra refuses it; {rotate}")));
    }
    if days < EXPIRY_WARNING_DAYS {
        return Check::warning(NAME, format!("{what} expires in {days} days: {rotate}"));
    }
    Check::new(NAME, Ok(format!("{what} is valid for {days} more days")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_are_spelled_as_the_spec_says() {
        for s in RunStatus::ALL {
            assert_eq!(serde_json::to_value(s).expect("json"), serde_json::json!(s.as_str()));
            assert_eq!(RunStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(serde_json::to_value(RunKind::Delta).expect("json"), serde_json::json!("delta"));
        assert_eq!(RunKind::parse("full"), Some(RunKind::Full));
        assert_eq!(RunStatus::parse("stopped"), None);
    }

    #[test]
    fn credentials_warn_thirty_days_ahead_and_fail_once_expired() {
        let day = 86_400;
        let now = 1_800_000_000;
        let ok = expiry_check("the certificate", now + 31 * day, now, "rotate it");
        assert!(ok.result.is_ok() && !ok.warning, "{ok:?}");
        let soon = expiry_check("the certificate", now + 29 * day + 5, now, "rotate it");
        assert!(soon.warning && soon.result.as_ref().is_ok_and(|m| m.contains("in 29 days: rotate it")), "{soon:?}");
        let gone = expiry_check("the secret", now - 2 * day, now, "rotate it");
        assert!(gone.result.as_ref().is_err_and(|m| m.contains("expired 2 days ago")), "{gone:?}");
    }
}
