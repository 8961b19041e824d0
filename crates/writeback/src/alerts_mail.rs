//! Alert emails over SMTP with lettre: `smtps://host[:465]` (TLS from the first byte) or
//! `smtp://host[:587]` with STARTTLS required — never in clear text. The server's certificate
//! is verified against the system's roots and `[alerts] ca_file`.

use std::time::Duration;

use anyhow::{bail, Context};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::AlertsConfig;

pub struct Mail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `host:port`, for the logs.
    server: String,
}

impl Mail {
    pub fn new(cfg: &AlertsConfig) -> anyhow::Result<Mail> {
        let Some(url) = &cfg.smtp else { bail!("[alerts] smtp is not set") };
        let u = url::Url::parse(url).with_context(|| format!("[alerts] smtp \"{url}\" is not a URL"))?;
        let host = u.host_str().context("[alerts] smtp needs a host")?.to_string();
        let (wrapper, default_port) = match u.scheme() {
            "smtps" => (true, 465),
            "smtp" => (false, 587),
            other => bail!("[alerts] smtp: \"{other}://\" is not smtps:// (TLS) or smtp:// (STARTTLS)"),
        };
        let port = u.port().unwrap_or(default_port);
        let mut tls = TlsParameters::builder(host.clone());
        for der in cfg.extra_roots()? {
            tls = tls.add_root_certificate(Certificate::from_der(der)?);
        }
        let tls = tls.build_rustls().context("[alerts] smtp: setting up TLS")?;
        let tls = if wrapper { Tls::Wrapper(tls) } else { Tls::Required(tls) };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)));
        if let Some(user) = &cfg.smtp_user {
            b = b.credentials(Credentials::new(user.clone(), cfg.smtp_password()?.expose().to_string()));
        }
        let from: Mailbox = match &cfg.from {
            Some(f) => f.parse().with_context(|| format!("[alerts] from \"{f}\" is not an email address"))?,
            None => bail!("[alerts] smtp needs from = \"writeback@…\""),
        };
        if cfg.to.is_empty() {
            bail!("[alerts] smtp needs to = [\"…\"]: who the alerts go to");
        }
        let to = cfg
            .to
            .iter()
            .map(|t| t.parse().with_context(|| format!("[alerts] to \"{t}\" is not an email address")))
            .collect::<anyhow::Result<Vec<Mailbox>>>()?;
        Ok(Mail { transport: b.build(), from, to, server: format!("{host}:{port}") })
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub async fn send(&self, subject: &str, body: &str) -> Result<(), String> {
        let mut m = Message::builder().from(self.from.clone()).subject(subject).header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            m = m.to(to.clone());
        }
        let message = m.body(body.to_string()).map_err(|e| e.to_string())?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
