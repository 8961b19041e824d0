//! Alerts (`[alerts]`): one notification when an incident starts and one when it clears — never
//! one per cycle. Incidents: writing quarantined, a threshold or the Tier-0 guard stopping a
//! run, cycles failing for longer than `after`, a group in error for longer than `after`. Sent
//! to a webhook (JSON with a plain `text`, which Teams and Slack incoming webhooks show) and by
//! email (SMTP over TLS), each retried with back-off by a task of its own, so a slow mail server
//! never holds a cycle up.
//!
//! The webhook payload (docs: README, "Alerts"):
//! `{"source": "writeback", "event": "raised" | "cleared", "host", "at", "text",
//!   "incidents": [{"key", "kind", "title", "detail"}]}`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::config::AlertsConfig;
use crate::daemon::Status;

/// An incident: what is wrong, keyed so that the same incident is recognised next cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Incident {
    /// `quarantined`, `threshold`, `guard`, `failing`, or `group:<object id>`.
    pub key: String,
    pub kind: &'static str,
    pub title: String,
    pub detail: String,
}

/// Incidents named one by one at most in a message; the rest are counted.
const MAX_LISTED: usize = 30;

/// The incidents open now: from the daemon's status (quarantine, a stop, the guard, cycles
/// failing for longer than `after` — `since_ok` is how long since the last good cycle, or
/// since the lead was taken) and the errors recorded per group (each group whose oldest open
/// error is older than `after`).
pub fn incidents(
    s: &Status,
    errors: &[writeback_store::ErrorRecord],
    after: Duration,
    since_ok: Duration,
) -> Vec<Incident> {
    let line = |t: &str| printable_line(t);
    let mut out = Vec::new();
    if let Some(q) = &s.quarantined {
        out.push(Incident {
            key: "quarantined".into(),
            kind: "quarantined",
            title: "writing to AD is stopped (quarantined)".into(),
            detail: line(q),
        });
    } else if s.failures > 0 && since_ok >= after {
        out.push(Incident {
            key: "failing".into(),
            kind: "failing",
            title: format!("no cycle has succeeded for {} min", since_ok.as_secs() / 60),
            detail: line(s.backoff_reason.as_deref().unwrap_or("cycles fail")),
        });
    }
    if let Some(t) = &s.threshold {
        out.push(Incident {
            key: "threshold".into(),
            kind: "threshold",
            title: "a threshold stopped the last cycle".into(),
            detail: line(t),
        });
    }
    if !s.guarded.is_empty() {
        let names: Vec<String> =
            s.guarded.iter().take(20).map(|g| format!("{} ({})", short(&line(&g.display_name)), g.cloud_id)).collect();
        out.push(Incident {
            key: "guard".into(),
            kind: "guard",
            title: format!("the Tier-0 guard held back new members of {} groups", s.guarded.len()),
            detail: names.join(", "),
        });
    }
    let now = SystemTime::now();
    let mut by_group: BTreeMap<&str, (SystemTime, usize, &str)> = BTreeMap::new();
    for e in errors {
        let Ok(since) = humantime::parse_rfc3339_weak(&e.since) else { continue };
        let entry = by_group.entry(e.cloud_id.as_str()).or_insert((since, 0, e.message.as_str()));
        entry.1 += 1;
        if since < entry.0 {
            (entry.0, entry.2) = (since, e.message.as_str());
        }
    }
    for (id, (since, n, message)) in by_group {
        if now.duration_since(since).unwrap_or_default() < after {
            continue;
        }
        let name = writeback_core::CloudId::new(id);
        let name = s.reports.get(&name).map(|r| short(&line(&r.display_name))).unwrap_or_else(|| id.to_string());
        let at = humantime::format_rfc3339_seconds(since);
        let more = if n > 1 { format!(" (and {} more errors)", n - 1) } else { String::new() };
        out.push(Incident {
            key: format!("group:{id}"),
            kind: "group-error",
            title: format!("group {name} in error since {at}"),
            detail: format!("{}{more}", line(&message.chars().take(300).collect::<String>())),
        });
    }
    out
}

/// The incidents open now, to tell a new one (or one cleared) from one already sent.
#[derive(Default)]
pub struct Tracker {
    open: BTreeMap<String, Incident>,
}

impl Tracker {
    /// The group incidents open now (kept as they are while the errors cannot be read).
    pub fn open_groups(&self) -> Vec<Incident> {
        self.open.values().filter(|i| i.key.starts_with("group:")).cloned().collect()
    }

    /// The incidents that started and those that cleared since the last call.
    pub fn update(&mut self, now: Vec<Incident>) -> (Vec<Incident>, Vec<Incident>) {
        let now: BTreeMap<String, Incident> = now.into_iter().map(|i| (i.key.clone(), i)).collect();
        let raised = now.iter().filter(|(k, _)| !self.open.contains_key(*k)).map(|(_, i)| i.clone()).collect();
        let cleared = self.open.iter().filter(|(k, _)| !now.contains_key(*k)).map(|(_, i)| i.clone()).collect();
        self.open = now;
        (raised, cleared)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    Raised,
    Cleared,
}

/// One message: the incidents one evaluation raised (or cleared), together.
#[derive(Clone, Debug)]
pub struct Notice {
    pub event: Event,
    pub incidents: Vec<Incident>,
}

impl Notice {
    /// One line per incident, for people (the webhook's `text`, the email's body).
    pub fn text(&self, host: &str) -> String {
        let what = match self.event {
            Event::Raised => "PROBLEM",
            Event::Cleared => "RESOLVED",
        };
        let mut out = format!("writeback on {host}: {what}");
        for i in self.incidents.iter().take(MAX_LISTED) {
            out.push_str(&format!("\n- {}: {}", i.title, i.detail));
        }
        if self.incidents.len() > MAX_LISTED {
            out.push_str(&format!("\n… and {} more (the status page lists them)", self.incidents.len() - MAX_LISTED));
        }
        out
    }

    pub fn subject(&self, host: &str) -> String {
        let what = match self.event {
            Event::Raised => "PROBLEM",
            Event::Cleared => "RESOLVED",
        };
        let first = self.incidents.first().map(|i| i.title.as_str()).unwrap_or("");
        let more =
            if self.incidents.len() > 1 { format!(" (+{} more)", self.incidents.len() - 1) } else { String::new() };
        // The titles are clean already; a header still gets no line break whatever comes.
        format!("[writeback {host}] {what}: {first}{more}")
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }

    pub fn payload(&self, host: &str) -> serde_json::Value {
        let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        // As many as the text names: a chat's message size limit must not drop the notice.
        let listed: Vec<&Incident> = self.incidents.iter().take(MAX_LISTED).collect();
        json!({"source": "writeback", "event": self.event, "host": host, "at": at, "text": self.text(host),
            "incidents": listed, "more": self.incidents.len().saturating_sub(MAX_LISTED)})
    }
}

/// A name cut to 80 characters (a title, a subject).
fn short(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Cloud text on one line: no control characters (a display name cannot add a mail header), and
/// no chat markup (Slack's `<!channel>` and `<url|text>`, Markdown's `[text](url)` in Teams):
/// the brackets become look-alikes that nothing renders.
fn printable_line(s: &str) -> String {
    writeback_core::naming::printable(s)
        .chars()
        .map(|c| match c {
            c if c.is_control() => ' ',
            '<' => '‹',
            '>' => '›',
            '[' => '⟦',
            ']' => '⟧',
            c => c,
        })
        .collect()
}

/// Attempts per channel and message, with the waits between them.
const ATTEMPTS: u32 = 6;
const FIRST_WAIT: Duration = Duration::from_secs(1);
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The sender: notices queue here and are sent in order by one task.
#[derive(Clone)]
pub struct Alerter {
    tx: mpsc::UnboundedSender<Notice>,
}

impl Alerter {
    /// Starts the task, or `None` when no channel is configured.
    pub fn start(cfg: &AlertsConfig) -> anyhow::Result<Option<Alerter>> {
        let channels = Channels::new(cfg)?;
        if channels.is_empty() {
            return Ok(None);
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Notice>();
        tokio::spawn(async move {
            let host = writeback_store::host();
            while let Some(n) = rx.recv().await {
                channels.send(&n, &host).await;
            }
        });
        Ok(Some(Alerter { tx }))
    }

    /// Queues what `tracker` says changed.
    pub fn notify(&self, raised: Vec<Incident>, cleared: Vec<Incident>) {
        for (event, incidents) in [(Event::Raised, raised), (Event::Cleared, cleared)] {
            if !incidents.is_empty() {
                let _ = self.tx.send(Notice { event, incidents });
            }
        }
    }
}

/// Where notices go.
struct Channels {
    webhook: Option<(reqwest::Client, String, String)>,
    mail: Option<crate::alerts_mail::Mail>,
}

impl Channels {
    fn new(cfg: &AlertsConfig) -> anyhow::Result<Channels> {
        let webhook = match &cfg.webhook {
            Some(url) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut b = reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .redirect(reqwest::redirect::Policy::none());
                for cert in cfg.extra_roots()? {
                    b = b.add_root_certificate(reqwest::Certificate::from_der(&cert)?);
                }
                let shown = crate::config::url_origin(url);
                Some((b.build()?, url.clone(), shown))
            }
            None => None,
        };
        let mail = cfg.smtp.as_ref().map(|_| crate::alerts_mail::Mail::new(cfg)).transpose()?;
        Ok(Channels { webhook, mail })
    }

    fn is_empty(&self) -> bool {
        self.webhook.is_none() && self.mail.is_none()
    }

    async fn send(&self, n: &Notice, host: &str) {
        let event = match n.event {
            Event::Raised => "raised",
            Event::Cleared => "cleared",
        };
        if let Some((client, url, shown)) = &self.webhook {
            let body = n.payload(host);
            let sent = retry("webhook", shown, || async {
                let resp = client.post(url).json(&body).send().await.map_err(|e| e.without_url().to_string())?;
                match resp.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(format!("answered {s}")),
                }
            })
            .await;
            count("webhook", event, sent);
        }
        if let Some(mail) = &self.mail {
            let (subject, text) = (n.subject(host), n.text(host));
            let sent = retry("email", mail.server(), || mail.send(&subject, &text)).await;
            count("email", event, sent);
        }
    }
}

fn count(channel: &'static str, event: &'static str, sent: bool) {
    let name = if sent { "writeback_alerts_sent_total" } else { "writeback_alerts_failed_total" };
    metrics::counter!(name, "channel" => channel, "event" => event).increment(1);
}

/// Tries `f` up to [`ATTEMPTS`] times, waiting 1, 2, 4 … s (at most a minute) between.
async fn retry<F, Fut>(channel: &str, to: &str, f: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut wait = FIRST_WAIT;
    for attempt in 1..=ATTEMPTS {
        match f().await {
            Ok(()) => {
                tracing::info!(channel, to, "alert sent");
                return true;
            }
            Err(why) if attempt < ATTEMPTS => {
                tracing::warn!(channel, to, attempt, error = %why, retry_in_s = wait.as_secs(), "alert not sent");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
            }
            Err(why) => {
                tracing::error!(channel, to, error = %why, "alert not sent; given up after {ATTEMPTS} attempts")
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(key: &str) -> Incident {
        Incident { key: key.into(), kind: "group-error", title: format!("t {key}"), detail: "d".into() }
    }

    #[test]
    fn one_notice_per_incident_and_one_when_it_clears() {
        let mut t = Tracker::default();
        let (r, c) = t.update(vec![incident("a"), incident("b")]);
        assert_eq!((r.len(), c.len()), (2, 0));
        for _ in 0..5 {
            let (r, c) = t.update(vec![incident("a"), incident("b")]);
            assert!(r.is_empty() && c.is_empty(), "nothing new: nothing sent");
        }
        let (r, c) = t.update(vec![incident("b"), incident("c")]);
        assert_eq!(r.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["c"]);
        assert_eq!(c.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn the_payload_has_a_plain_text_and_a_subject_cannot_break_a_header() {
        let mut i = incident("group:x");
        i.title = "group Evil\r\nBcc: all@corp.example".into();
        let n = Notice { event: Event::Raised, incidents: vec![i, incident("b")] };
        let p = n.payload("h1");
        assert_eq!(p["event"], "raised");
        let chat = printable_line("<!channel> [login](https://evil.example) <https://evil|x>");
        assert!(!chat.contains(['<', '>', '[', ']']), "{chat}");
        assert!(p["text"].as_str().is_some_and(|t| t.starts_with("writeback on h1: PROBLEM\n- group Evil")));
        let s = n.subject("h1");
        assert!(!s.contains('\n') && !s.contains('\r') && s.ends_with("(+1 more)"), "{s}");
    }
}
