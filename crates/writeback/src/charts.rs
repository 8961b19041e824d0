//! The status page's two charts, drawn on the server as small SVGs (no script, no external
//! asset): how long each cycle of the last day took, and how long a cloud change could have
//! waited to reach AD (propagation).

use maud::{html, Markup};
use writeback_core::RunStatus;
use writeback_store::RunRecord;

/// The window the charts show.
pub const DAY: i64 = 86_400;

/// One cycle on a chart: when it ended (seconds since 1970), a value in seconds, and whether it
/// did its work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub at: i64,
    pub secs: f64,
    pub ok: bool,
}

/// A time the state wrote (RFC 3339, UTC) in seconds since 1970.
pub fn unix(rfc3339: &str) -> Option<i64> {
    let t = humantime::parse_rfc3339_weak(rfc3339).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs() as i64)
}

/// Cycle durations of the runs that ended in the day before `now` (runs in any order).
pub fn durations(runs: &[RunRecord], now: i64) -> Vec<Point> {
    let mut out: Vec<Point> = runs
        .iter()
        .filter(|r| r.status != RunStatus::Running)
        .filter_map(|r| {
            let at = unix(&r.started_at)? + r.duration_ms / 1000;
            let secs = r.duration_ms as f64 / 1000.0;
            Some(Point { at, secs, ok: r.status.done() })
        })
        .filter(|p| p.at > now - DAY && p.at <= now)
        .collect();
    out.sort_by_key(|p| p.at);
    out
}

/// Worst-case propagation of each cycle that did its work: a change made in the cloud just
/// after the previous such cycle read Graph reached AD when this one ended. The daemon's
/// `writeback_propagation_seconds` is the same measure for the last cycle.
pub fn propagation(runs: &[RunRecord], now: i64) -> Vec<Point> {
    let mut done: Vec<(i64, i64)> = runs
        .iter()
        .filter(|r| r.status.done())
        .filter_map(|r| unix(&r.started_at).map(|s| (s, s + r.duration_ms / 1000)))
        .collect();
    done.sort_unstable();
    done.windows(2)
        .map(|w| Point { at: w[1].1, secs: (w[1].1 - w[0].0) as f64, ok: true })
        .filter(|p| p.at > now - DAY && p.at <= now)
        .collect()
}

const W: f64 = 640.0;
const H: f64 = 130.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 14.0;

/// A round upper bound for the y axis: 1, 2 or 5 × a power of ten.
fn nice_max(v: f64) -> f64 {
    let v = v.max(1.0);
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|m| *m >= v).unwrap_or(10.0 * p)
}

fn seconds(v: f64) -> String {
    match v {
        v if v >= 3600.0 => format!("{:.1} h", v / 3600.0),
        v if v >= 120.0 => format!("{:.0} min", v / 60.0),
        v if v >= 10.0 => format!("{v:.0} s"),
        v => format!("{v:.1} s"),
    }
}

fn clock(at: i64) -> String {
    let s = at.rem_euclid(DAY);
    format!("{:02}:{:02} UTC", s / 3600, s % 3600 / 60)
}

/// A chart of `points` over the day before `now`, with a dashed line at `mark` (the interval).
pub fn chart(id: &str, title: &str, points: &[Point], now: i64, mark: Option<(f64, &str)>) -> Markup {
    let top = nice_max(points.iter().map(|p| p.secs).chain(mark.map(|m| m.0)).fold(0.0, f64::max));
    let x = |at: i64| LEFT + (W - LEFT - 4.0) * ((at - (now - DAY)) as f64 / DAY as f64);
    let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / top);
    let line: Vec<String> =
        points.iter().filter(|p| p.ok).map(|p| format!("{:.1},{:.1}", x(p.at), y(p.secs))).collect();
    let mut sorted: Vec<f64> = points.iter().map(|p| p.secs).collect();
    sorted.sort_by(f64::total_cmp);
    let summary = match (sorted.get(sorted.len() / 2), sorted.last()) {
        (Some(median), Some(max)) => {
            let n = points.len();
            format!(
                "{n} cycle{}; median {}, longest {}",
                if n == 1 { "" } else { "s" },
                seconds(*median),
                seconds(*max)
            )
        }
        _ => "no cycles in the last 24 hours".to_string(),
    };
    html! {
        figure.chart id=(id) {
            figcaption { b { (title) } " — " span.muted { (summary) } }
            svg width=(W) height=(H) viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(H - BOTTOM) {}
                line.axis x1=(LEFT) y1=(H - BOTTOM) x2=(W - 4.0) y2=(H - BOTTOM) {}
                text x=(LEFT - 4.0) y=(TOP + 8.0) text-anchor="end" { (seconds(top)) }
                text x=(LEFT - 4.0) y=(H - BOTTOM) text-anchor="end" { "0" }
                text x=(LEFT) y=(H - 4.0) { "24 h ago" }
                text x=(x(now - DAY / 2)) y=(H - 4.0) text-anchor="middle" { "12 h ago" }
                text x=(W - 4.0) y=(H - 4.0) text-anchor="end" { "now" }
                @if let Some((v, label)) = mark {
                    line.mark x1=(LEFT) y1=(y(v)) x2=(W - 4.0) y2=(y(v)) {}
                    text.mark x=(W - 6.0) y=(y(v) - 3.0) text-anchor="end" { (label) }
                }
                @if line.len() > 1 {
                    polyline.series points=(line.join(" ")) {}
                }
                @for p in points {
                    circle class=(if p.ok { "pt ok" } else { "pt bad" }) cx=(format!("{:.1}", x(p.at)))
                        cy=(format!("{:.1}", y(p.secs))) r="2.5" {
                        title { (clock(p.at)) ": " (seconds(p.secs)) @if !p.ok { " (did not do its work)" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use writeback_core::{RunKind, Summary};

    fn run(id: i64, started: &str, ms: i64, status: RunStatus) -> RunRecord {
        RunRecord {
            run_id: id,
            kind: RunKind::Delta,
            status,
            started_at: started.into(),
            finished_at: None,
            counts: Summary::default(),
            duration_ms: ms,
            message: None,
            host: None,
            epoch: None,
        }
    }

    #[test]
    fn propagation_runs_from_the_previous_good_read_to_the_end_of_the_writes() {
        let now = unix("2026-12-02T12:00:00Z").expect("time");
        let runs = vec![
            run(4, "2026-12-02T11:03:00Z", 2_000, RunStatus::Success),
            run(3, "2026-12-02T11:02:00Z", 500, RunStatus::Failed),
            run(2, "2026-12-02T11:01:00Z", 1_000, RunStatus::CompletedWithErrors),
            run(1, "2026-12-01T10:00:00Z", 1_000, RunStatus::Success),
        ];
        let d = durations(&runs, now);
        assert_eq!(d.len(), 3, "the run of yesterday morning is outside the day: {d:?}");
        assert_eq!((d[1].secs, d[1].ok), (0.5, false));
        let p = propagation(&runs, now);
        // 11:01:00 → 11:03:02, and the one from yesterday to 11:01:01 (in the day: it ended in it).
        assert_eq!(p.iter().map(|p| p.secs).collect::<Vec<_>>(), vec![90_061.0, 122.0]);
    }

    #[test]
    fn a_chart_draws_every_point_with_its_time_and_scales_to_a_round_number() {
        let now = unix("2026-12-02T12:00:00Z").expect("time");
        let pts = [Point { at: now - 60, secs: 3.2, ok: true }, Point { at: now - 30, secs: 7.0, ok: false }];
        let svg = chart("c", "Cycle duration", &pts, now, Some((6.0, "interval"))).into_string();
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("11:59 UTC: 3.2 s") && svg.contains("(did not do its work)"), "{svg}");
        assert!(svg.contains(">10 s<") && svg.contains("median 7.0 s, longest 7.0 s"), "{svg}");
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(120.0), 200.0);
    }
}
