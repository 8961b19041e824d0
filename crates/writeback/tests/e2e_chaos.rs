//! Failure and recovery in CI (issue #5), with reduced counts; `scripts/chaos` runs the full
//! ones. Alone in its test binary: it stops and restarts the shared DC.

mod common;

use std::time::Duration;

use common::chaos;

#[test]
fn failures_never_leave_ad_wrong_or_duplicated() {
    let kill = chaos::kill_loop(5, 300, 0x0dd_ba11);
    println!("kill -9: {kill:?}");
    assert_eq!((kill.failures, kill.duplicates), (0, 0), "{:#?}", kill.notes);

    let throttled = chaos::throttled(200, 0.3);
    println!("30% 429/503: {throttled:?}");
    assert_eq!(throttled.failures, 0, "{:#?}", throttled.notes);

    let state = chaos::lost_state(100);
    assert_eq!(state.failures, 0, "{:#?}", state.notes);

    let dc = chaos::dc_outage(600, Duration::from_secs(5));
    println!("DC outage: {dc:?}");
    assert_eq!(dc.failures, 0, "{:#?}", dc.notes);
}
