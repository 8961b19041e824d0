//! Progress for people watching a long run in a terminal: one line on stderr, rewritten in
//! place. Silent when stderr is not a terminal, with `--json` or `-q`, and in the daemon.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns progress on when stderr is a terminal.
pub fn enable_if_interactive() {
    ENABLED.store(std::io::stderr().is_terminal(), Ordering::Relaxed);
}

/// A step of the run ("reading groups", ...).
pub fn phase(what: &str) {
    if ENABLED.load(Ordering::Relaxed) {
        let mut e = std::io::stderr();
        let _ = write!(e, "\r\x1b[2K{what}…");
        let _ = e.flush();
    }
}

/// Clears the progress line (before the result is printed).
pub fn done() {
    if ENABLED.load(Ordering::Relaxed) {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

/// A counter for one step, redrawn at most every 200 ms.
pub fn counter(what: &'static str) -> impl FnMut(usize, usize) + Send {
    let mut last = Instant::now() - Duration::from_secs(1);
    move |done, total| {
        if ENABLED.load(Ordering::Relaxed) && (last.elapsed() >= Duration::from_millis(200) || done == total) {
            last = Instant::now();
            let mut e = std::io::stderr();
            let _ = write!(e, "\r\x1b[2K{what}: {done}/{total}");
            let _ = e.flush();
        }
    }
}
