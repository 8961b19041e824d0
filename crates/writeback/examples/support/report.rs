//! What the benchmark examples share: the machine line and rows appended to BENCHMARKS.md.

use std::io::Write as _;

/// The DC the AD benchmarks write to.
#[allow(dead_code)]
pub const DC: &str = "Samba 4.17 AD DC on loopback";

pub fn machine() -> String {
    format!(
        "{} cores, 24 GiB{}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if cfg!(debug_assertions) { ", debug build" } else { "" }
    )
}

pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Appends `(benchmark, result)` rows to BENCHMARKS.md, with today's date and the machine.
pub fn append_rows(rows: &[(String, String)]) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md");
    let new = !path.exists();
    let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) else {
        eprintln!("cannot append to {}", path.display());
        return;
    };
    if new {
        let _ = writeln!(
            f,
            "# Benchmarks\n\nRows appended by `scripts/bench`.\n\n| date | machine | \
            benchmark | result |\n|---|---|---|---|"
        );
    }
    let (date, machine) = (today(), machine());
    for (bench, result) in rows {
        let _ = writeln!(f, "| {date} | {machine} | {bench} | {result} |");
    }
}
