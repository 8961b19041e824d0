//! The `writeback` command line.

mod access;
mod adopt_cmd;
mod alerts;
mod alerts_mail;
mod approve_cmd;
mod audit;
mod charts;
mod cloud_cmd;
mod config;
mod config_check;
mod confirm;
mod converted;
mod cycle;
mod daemon;
mod early;
mod engine;
mod error;
mod group_cmd;
mod lead;
mod lock;
mod log_cmd;
mod logs;
mod output;
mod page;
mod progress;
mod published;
mod reload;
mod state_cmd;
mod status_cmd;
mod web;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;

use config::Config;
use error::CycleError;
use writeback_core::Allow;

// A planner of a million memberships spent a quarter of its time in glibc malloc's
// consolidation; mimalloc cut a plan's CPU time by ~25% (BENCHMARKS.md, planner rows).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit statuses of the spec.
mod exit {
    pub const OK: u8 = 0;
    pub const OBJECT_ERRORS: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const THRESHOLD: u8 = 3;
    pub const CANNOT_RUN: u8 = 4;
}

const AFTER_HELP: &str = "\
Environment:
  WRITEBACK_CONFIG         the configuration file (as -c)
  WRITEBACK_CLIENT_SECRET  the app's client secret, instead of [cloud] client_secret_file
  WRITEBACK_BIND_PASSWORD  the AD bind password, instead of [ad] bind_password_file
  WRITEBACK_LOG            which logs to write (tracing's filter syntax: \"info\", \"writeback=debug\")
  HTTPS_PROXY, NO_PROXY    the proxy to Graph, and the hosts reached without it

Exit status:
  0  done, no errors
  1  done, but some objects had errors (writeback errors)
  2  usage or configuration error
  3  stopped by a threshold (plan: a sync would stop); writeback approve goes ahead
  4  could not run: authentication, connection, TLS trust, the state lock held";

#[derive(Parser)]
#[command(
    name = "writeback",
    version,
    about = "Writes Microsoft Entra ID groups back into on-premises Active Directory",
    after_help = AFTER_HELP
)]
struct Cli {
    /// The configuration file [default: ./writeback.toml if it exists, else
    /// /etc/writeback/writeback.toml].
    #[arg(short, long, global = true, env = "WRITEBACK_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// More log output on stderr (-v, -vv).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: logs::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: delta cycles every [daemon] interval, a full cycle every full_interval,
    /// HTTP /healthz, /metrics and a status page on [daemon] listen.
    Run {
        /// Listen here instead of [daemon] listen.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Preflight: config, Graph token and permissions, AD bind over TLS, the target OU, schema.
    Check,
    /// Show what a sync would do; writes nothing anywhere. Exits 3 when a sync would stop at
    /// a threshold (to gate a change in a pipeline).
    Plan {
        /// Read everything (the only mode in this version).
        #[arg(long)]
        full: bool,
        /// Only this group's part of the plan: its object id or display name (any case).
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Only the counts (and whether a sync would stop).
        #[arg(long)]
        summary: bool,
    },
    /// Run one cycle: read, plan, apply, record.
    Sync {
        /// Read everything from Graph and the whole managed OU, instead of the changes since
        /// the last cycle (a delta cycle is the default once a full one has run).
        #[arg(long)]
        full: bool,
        /// Let this run go past the delete and member removal thresholds (also per group).
        #[arg(long)]
        allow_deletes: bool,
        /// Let this run create more groups than [writeback] create_threshold.
        #[arg(long)]
        allow_creates: bool,
        /// Only this group, now: its object id or display name (repeat for several). Its members
        /// and nested groups are written as a full cycle would; recorded as a run of kind group.
        /// While a daemon runs, it is asked to do it (and this waits for it).
        #[arg(long, value_name = "GROUP", conflicts_with = "full")]
        group: Vec<String>,
    },
    /// One group: why it is (not) written back, its AD DN, and its members with the reason.
    /// Reads only that group (and finds nested groups by their links); a partial name lists
    /// the groups that have it.
    Show {
        /// The group's object id or display name (any case).
        group: String,
        /// At most this many member lines (0: all; default 100, and all with --json).
        #[arg(long, value_name = "N")]
        members: Option<usize>,
        /// Only members written to AD, or only those skipped.
        #[arg(long, value_enum)]
        status: Option<output::MemberFilter>,
    },
    /// Is a daemon running and writing, when does it run next, why did the last cycle fail or
    /// stop, what is approved — then the last runs.
    Status {
        /// Runs shown at most.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// The run history, newest first.
    History {
        /// Runs shown at most.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only runs that ended so (success, completed-with-errors, stopped-delete-threshold,
        /// quarantined, failed).
        #[arg(long, value_parser = status_cmd::parse_status)]
        status: Option<writeback_core::RunStatus>,
    },
    /// Current errors: the last run's, when it did not do its work, then per object.
    Errors,
    /// The audit trail: every change writeback made in AD (group, member, why), newest first.
    Log {
        /// Only this group: its object id or display name.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Only this member: its object id, display name or DN.
        #[arg(long, value_name = "MEMBER")]
        member: Option<String>,
        /// Only changes since: a date (2026-12-01), a UTC time (2026-12-01T10:00:00Z) or an
        /// age (90m, 24h, 7d).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// At most this many lines (0: all).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Takes over one AD group for a cloud group by hand (a group converted from AD when Graph
    /// gives no SID): the checks of a takeover by SID, inside [writeback] converted_ous. Without
    /// --yes it shows what would happen.
    Adopt {
        /// The cloud group's object id.
        #[arg(long)]
        group: String,
        /// The AD group to take over.
        #[arg(long)]
        dn: String,
        /// Take it over (stamp the marker); the next cycle writes its members and attributes.
        #[arg(long)]
        yes: bool,
    },
    /// Lets the next cycle — the daemon's too, while it runs — go past a threshold that stopped
    /// it, up to a count; recorded (who, when) and used by one cycle. Without options: what is
    /// stopped, and the commands that approve it.
    Approve {
        /// Up to N group deletes past [writeback] delete_threshold.
        #[arg(long, value_name = "N")]
        deletes: Option<usize>,
        /// Up to N group creations past [writeback] create_threshold.
        #[arg(long, value_name = "N")]
        creates: Option<usize>,
        /// Up to N member removals in the run past [writeback] member_removal_threshold.
        #[arg(long, value_name = "N")]
        member_removals: Option<usize>,
        /// The member removals the last cycle held back for this group (object id or display
        /// name), as many as it held. Repeat for several groups.
        #[arg(long, value_name = "GROUP")]
        removals: Vec<String>,
    },
    /// Writes the man page or a shell's completion script to stdout (for packaging).
    #[command(hide = true)]
    Generate {
        /// man, bash, zsh or fish.
        #[arg(value_enum)]
        what: Generated,
    },
    /// Bulk changes in the cloud through Graph (needs Group.ReadWrite.All, Directory.ReadWrite.All).
    Cloud {
        #[command(subcommand)]
        command: CloudCommand,
    },
    /// Move the state between SQLite and PostgreSQL (links, watermarks, history) without a resync.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Write the whole state (of [state] path or url) as JSON to a file, or to stdout with `-`.
    Export {
        /// The file to write (created private, mode 0600), or `-` for stdout.
        file: PathBuf,
    },
    /// Load a `state export` into the configured state, which must be new (no links, no runs).
    Import {
        /// The file `state export` wrote, or `-` for stdin.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum CloudCommand {
    /// Sets writebackConfiguration for the given groups or every group of a kind; without
    /// --yes it only shows what it would change.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["group", "kind"])))]
    #[command(group(clap::ArgGroup::new("mode").required(true).args(["enable", "disable"])))]
    SetWriteback {
        /// A group object id (repeat for several).
        #[arg(long)]
        group: Vec<String>,
        /// Every cloud group of this kind.
        #[arg(long, value_enum)]
        kind: Option<cloud_cmd::KindArg>,
        /// Write the groups back.
        #[arg(long)]
        enable: bool,
        /// Stop writing the groups back (their AD groups stay; see [writeback] on_out_of_scope).
        #[arg(long)]
        disable: bool,
        /// With --enable: universalSecurityGroup, universalDistributionGroup or universalMailEnabledSecurityGroup.
        #[arg(long = "type", requires = "enable")]
        ty: Option<String>,
        /// Apply the change (otherwise only show it).
        #[arg(long)]
        yes: bool,
    },
    /// Reads (no flag) or sets the tenant's NewUnifiedGroupWritebackDefault: whether new
    /// Microsoft 365 groups are written back. Setting it needs --yes (without: what would
    /// change).
    NewGroupDefault {
        /// New Microsoft 365 groups are written back unless their own setting says otherwise.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// New Microsoft 365 groups are not written back unless enabled one by one.
        #[arg(long)]
        disable: bool,
        /// Apply the change (otherwise only show it).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
}

/// The man page or a completion script, from the CLI's own definition.
fn generate(what: Generated) -> ExitCode {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let shell = match what {
        Generated::Man => {
            let written = clap_mangen::Man::new(cmd).render(&mut std::io::stdout());
            return ExitCode::from(if written.is_ok() { exit::OK } else { exit::CANNOT_RUN });
        }
        Generated::Bash => clap_complete::Shell::Bash,
        Generated::Zsh => clap_complete::Shell::Zsh,
        Generated::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "writeback", &mut std::io::stdout());
    ExitCode::from(exit::OK)
}

/// `-c`, else `./writeback.toml` where it exists, else the packaged service's file.
fn config_path(given: &Option<PathBuf>) -> PathBuf {
    match given {
        Some(p) => p.clone(),
        None if std::path::Path::new("writeback.toml").exists() => "writeback.toml".into(),
        None => "/etc/writeback/writeback.toml".into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Generate { what } = cli.command {
        return generate(what);
    }
    let config = config_path(&cli.config);
    let daemon = matches!(cli.command, Command::Run { .. });
    logs::init(cli.verbose, cli.quiet, cli.log_format, daemon);
    if !daemon && !cli.json && !cli.quiet {
        progress::enable_if_interactive();
    }
    let cfg = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            if cli.json {
                println!("{}", json!({"status": "failed", "error": format!("{e:#}")}));
            }
            logs::fatal(cli.log_format, &format!("{e:#}"), exit::CONFIG);
            return ExitCode::from(exit::CONFIG);
        }
    };
    // The Kerberos library reads its keytab and cache from the environment; changing the
    // environment is only sound while this process has a single thread, so it happens here.
    for (k, v) in cfg.kerberos_env() {
        std::env::set_var(k, v);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::CANNOT_RUN);
        }
    };
    ExitCode::from(runtime.block_on(run(cli, cfg)))
}

async fn run(cli: Cli, cfg: Config) -> u8 {
    let log_format = cli.log_format;
    let result = match cli.command {
        Command::Check => return output::check(&cfg, cli.json).await,
        Command::Run { listen } => return daemon::run(cfg, config_path(&cli.config), listen).await,
        Command::Generate { .. } => return exit::OK, // answered before the configuration is read
        Command::Plan { group, summary, .. } => engine::plan(&cfg, Allow::default()).await.map(|(p, _)| {
            let p = match &group {
                Some(g) => p.only(g),
                None => p,
            };
            output::plan(&p, summary, cli.json)
        }),
        Command::Sync { allow_deletes, allow_creates, full, group } => {
            let allow = Allow { deletes: allow_deletes, creates: allow_creates, ..Allow::default() };
            if group.is_empty() {
                sync_locked(&cfg, allow, full).await.map(|r| output::sync(&r, cli.json))
            } else {
                group_cmd::sync_groups(&cfg, allow, &group, cli.json).await
            }
        }
        Command::Show { group, members, status } => engine::plan_groups(&cfg, &group).await.map(|shown| {
            let limit = members.unwrap_or(if cli.json { 0 } else { 100 });
            let shown_as = output::ShowAs { limit, status, as_json: cli.json };
            output::show(&shown, &group, &shown_as)
        }),
        Command::Status { limit } => status_cmd::status(&cfg, limit, cli.json).await,
        Command::History { limit, status } => status_cmd::history(&cfg, limit, status, cli.json).await,
        Command::Errors => status_cmd::errors(&cfg, cli.json).await,
        Command::Log { group, member, since, limit } => {
            let q = writeback_store::AuditQuery { group, member, since: None, limit };
            log_cmd::log(&cfg, q, since.as_deref(), cli.json).await
        }
        Command::Adopt { group, dn, yes } => adopt_cmd::adopt(&cfg, &group, &dn, yes, cli.json).await,
        Command::Approve { deletes, creates, member_removals, removals } => {
            let args = approve_cmd::Args { deletes, creates, member_removals, removals };
            approve_cmd::approve(&cfg, &args, cli.json).await
        }
        Command::State { command: StateCommand::Export { file } } => state_cmd::export(&cfg, &file).await,
        Command::State { command: StateCommand::Import { file } } => state_cmd::import(&cfg, &file).await,
        Command::Cloud { command: CloudCommand::SetWriteback { group, kind, enable, disable: _, ty, yes } } => {
            cloud_cmd::set_writeback(&cfg, cloud_cmd::SetWriteback { groups: group, kind, enable, ty, yes }, cli.json)
                .await
        }
        Command::Cloud { command: CloudCommand::NewGroupDefault { enable, disable, yes } } => {
            let set = if enable {
                Some(true)
            } else if disable {
                Some(false)
            } else {
                None
            };
            cloud_cmd::new_group_default(&cfg, set, yes, cli.json).await
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let message = e.to_string();
            if cli.json {
                println!("{}", json!({"status": "failed", "error": message}));
            }
            logs::fatal(log_format, &message, e.exit_code());
            e.exit_code()
        }
    }
}

/// One cycle, holding the lead so that it never races a daemon or another sync.
async fn sync_locked(cfg: &Config, allow: Allow, full: bool) -> Result<cycle::RunResult, CycleError> {
    let lead = lead::for_command(
        cfg,
        "To let a run stopped by a threshold go ahead while the daemon runs, use `writeback approve` \
         (it says what is stopped and how)",
    )
    .await?;
    let r = cycle::sync(cfg, allow, full, &lead).await;
    lead.release().await;
    r
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for in --help.
    #[test]
    fn every_option_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments().filter(|a| !matches!(a.get_id().as_str(), "help" | "version")) {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "writeback", &mut missing);
        assert!(missing.is_empty(), "without a description: {missing:#?}");
    }
}
