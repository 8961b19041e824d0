//! Logs on stderr, as the place they go needs them: plain text with colour only on a terminal,
//! one JSON object per line for a SIEM (`--log-format json`), or syslog priority prefixes for
//! journald (`--log-format syslog`: `<3>` … `<7>`, no timestamp, journald adds its own). Fatal
//! errors go the same way, so a JSON log has no plain-text line in it.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text; colour only on a terminal.
    Human,
    /// One JSON object per line.
    Json,
    /// Text with a syslog priority prefix per line (journald reads it), no timestamp.
    Syslog,
}

pub fn init(verbose: u8, quiet: bool, format: LogFormat, daemon: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        // A daemon says what it does; a one-shot command keeps stderr for problems.
        (_, 0) if daemon => "info",
        (_, 0) => "warn",
        (_, 1) => "info",
        _ => "debug",
    };
    // PostgreSQL's notices ("relation … already exists, skipping" from the migrations) and
    // sqlx's slow-statement lines are not writeback's to say, unless asked for by name.
    let filter = tracing_subscriber::EnvFilter::try_from_env("WRITEBACK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},sqlx=warn")));
    let ansi = format == LogFormat::Human && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_writer(|| OneLine(std::io::stderr()))
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
        LogFormat::Syslog => builder.event_format(Syslog).init(),
    }
}

/// One event, one line: a line break inside a value (a display name from the cloud) is written
/// as `\n`, so it cannot start a log line of its own (a forged journald priority or entry).
/// The formatter hands over each event in one write.
struct OneLine<W>(W);

impl<W: std::io::Write> std::io::Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.iter().any(|b| *b == b'\n' || *b == b'\r') {
            return self.0.write_all(buf).map(|()| buf.len());
        }
        let mut out = Vec::with_capacity(buf.len() + 8);
        for b in body {
            match b {
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b => out.push(*b),
            }
        }
        out.extend_from_slice(&buf[body.len()..]);
        self.0.write_all(&out).map(|()| buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A command that could not run: on stderr as `error: …` for a person, or as an ERROR event
/// where logs are read by machines.
pub fn fatal(format: LogFormat, message: &str, exit: u8) {
    match format {
        LogFormat::Human => eprintln!("error: {message}"),
        LogFormat::Json | LogFormat::Syslog => tracing::error!(exit, "{message}"),
    }
}

/// sd-daemon(3) priorities: 3 error, 4 warning, 6 info, 7 debug.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

struct Syslog;

impl<S, N> FormatEvent<S, N> for Syslog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}", span.name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>().filter(|f| !f.is_empty()) {
                    write!(writer, "{{{fields}}}")?;
                }
                write!(writer, ": ")?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_break_in_a_value_does_not_start_a_log_line() {
        use std::io::Write;
        let mut w = super::OneLine(Vec::new());
        w.write_all(b"<4>guard held name=SG\n<2>forged\r\n").expect("write");
        w.write_all(b"<6>plain\n").expect("write");
        assert_eq!(String::from_utf8_lossy(&w.0), "<4>guard held name=SG\\n<2>forged\\r\n<6>plain\n");
    }

    #[test]
    fn priorities_are_sd_daemons() {
        use tracing::Level;
        let p: Vec<u8> = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG].iter().map(super::priority).collect();
        assert_eq!(p, vec![3, 4, 6, 7]);
    }
}
