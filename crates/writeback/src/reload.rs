//! SIGHUP: the daemon reads its configuration file again. The file is checked as at start; one
//! with errors, or one that changes what only a restart can apply (the state database, the
//! listener, its token and host names, Kerberos), leaves the running configuration in force
//! and the log says why. The next cycle runs with what was read.

use crate::config::Config;
use crate::daemon::{intervals, Daemon};

/// The settings a running daemon cannot take over: named when they differ.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.state_path() != new.state_path() {
        out.push("[state] path");
    }
    if old.daemon.listen != new.daemon.listen {
        out.push("[daemon] listen");
    }
    if old.daemon.token_file != new.daemon.token_file {
        out.push("[daemon] token_file");
    }
    if old.daemon.allowed_hosts != new.daemon.allowed_hosts {
        out.push("[daemon] allowed_hosts");
    }
    let alerts = |c: &Config| {
        let a = &c.alerts;
        (a.webhook.clone(), a.smtp.clone(), a.from.clone(), a.to.clone(), a.smtp_user.clone(), a.ca_file.clone())
    };
    if alerts(old) != alerts(new) {
        out.push("[alerts] channels");
    }
    if (old.ad.auth, &old.ad.keytab, &old.ad.krb5_conf) != (new.ad.auth, &new.ad.keytab, &new.ad.krb5_conf) {
        out.push("[ad] auth, keytab or krb5_conf");
    }
    out
}

pub fn reload(daemon: &Daemon) {
    let path = daemon.config_path.display().to_string();
    let new = match Config::load(&daemon.config_path) {
        Ok(c) => c,
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(
                config = %path,
                %error,
                "SIGHUP: the configuration has errors; the daemon goes on with the one it has"
            );
            return;
        }
    };
    let fixed = restart_only(&daemon.cfg(), &new);
    if !fixed.is_empty() {
        tracing::error!(
            config = %path,
            changed = %fixed.join(", "),
            "SIGHUP: these settings apply only at a restart; the daemon goes on with the configuration it has"
        );
        return;
    }
    let Ok((interval, _)) = intervals(&new) else { return };
    daemon.set_cfg(new);
    daemon.status().interval = interval;
    tracing::info!(config = %path, "SIGHUP: configuration reloaded; the next cycle runs with it");
}
