//! Why a cycle, or a command, could not run at all — as a type. What the daemon does about it
//! ([`CycleError::action`]) and the exit status ([`CycleError::exit_code`]) follow from the kind
//! of failure, never from the wording of its message. Per-object problems are not errors here:
//! they are `ObjectError`s of a run that went on.

use writeback_ad::AdError;
use writeback_graph::GraphError;
use writeback_store::StoreError;

use crate::exit;

#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// The configuration cannot work as it is (a secret file that cannot be read, a bad value).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Ad(#[from] AdError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The state lock: another instance holds it, or this one lost it.
    #[error("{0}")]
    Lock(String),
    /// A check that must never fail did: nothing more is written (a bug to report).
    #[error("{0}")]
    Invariant(String),
    /// Another failure, with what it means for the run.
    #[error("{0}")]
    Other(String),
    /// One of the above, with what else the run did before it (kept for the policy).
    #[error("{source}; {note}")]
    Noted { source: Box<CycleError>, note: String },
}

/// What the daemon does after a failed cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Try again after a growing wait: the DC or Graph may come back.
    BackOff,
    /// Stop writing and say so: credentials, TLS trust or the configuration are wrong, and
    /// only an administrator can put them right; retrying soon only adds refused logins (and
    /// can lock the service account out).
    Quarantine,
}

impl CycleError {
    pub fn action(&self) -> Action {
        match self {
            CycleError::Graph(GraphError::Auth(_) | GraphError::Tls(_) | GraphError::Config(_))
            | CycleError::Ad(AdError::Bind(_) | AdError::Tls(_) | AdError::Config(_))
            | CycleError::Config(_) => Action::Quarantine,
            CycleError::Noted { source, .. } => source.action(),
            _ => Action::BackOff,
        }
    }

    /// The exit status of a command that failed this way (the spec's: 2 configuration, 4 could
    /// not run).
    pub fn exit_code(&self) -> u8 {
        match self {
            CycleError::Config(_) | CycleError::Ad(AdError::Config(_)) | CycleError::Graph(GraphError::Config(_)) => {
                exit::CONFIG
            }
            CycleError::Noted { source, .. } => source.exit_code(),
            _ => exit::CANNOT_RUN,
        }
    }

    /// This error, with what the run did before it.
    pub fn noted(self, note: impl Into<String>) -> CycleError {
        CycleError::Noted { source: Box::new(self), note: note.into() }
    }
}

/// Errors of the configuration file and of reading its secrets.
impl From<anyhow::Error> for CycleError {
    fn from(e: anyhow::Error) -> Self {
        CycleError::Config(format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_follows_the_kind_not_the_words() {
        let bind = CycleError::Ad(AdError::Bind("invalid credentials".into()));
        let tls = CycleError::Ad(AdError::Tls("the certificate is not trusted".into()));
        let auth = CycleError::Graph(GraphError::Auth("AADSTS7000215".into()));
        let graph_tls = CycleError::Graph(GraphError::Tls("UnknownIssuer".into()));
        for q in [&bind, &tls, &auth, &graph_tls] {
            assert_eq!(q.action(), Action::Quarantine, "{q}");
            assert_eq!(q.exit_code(), exit::CANNOT_RUN);
        }
        // A message that mentions a certificate is not a TLS failure.
        let down = CycleError::Ad(AdError::Connect("ldaps://dc1: connection refused (certificate store fine)".into()));
        assert_eq!(down.action(), Action::BackOff);
        let noted = CycleError::Graph(GraphError::Auth("x".into())).noted("12 groups were added before that");
        assert_eq!((noted.action(), noted.to_string().contains("12 groups")), (Action::Quarantine, true));
        let config = CycleError::Config("client_certificate_file holds no private key".into());
        assert_eq!((config.action(), config.exit_code()), (Action::Quarantine, exit::CONFIG));
        let lock = CycleError::Lock("another writeback holds the state lock".into());
        assert_eq!((lock.action(), lock.exit_code()), (Action::BackOff, exit::CANNOT_RUN));
    }
}
