use super::*;

fn utc(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .timestamp_millis()
}

fn cron(expr: &str, tz: &str) -> Timing {
    let kind = TriggerKind::Cron {
        expr: expr.into(),
        timezone: Some(tz.into()),
    };
    Timing::of(&kind, 0).expect("valid").expect("timed")
}

fn every(period_ms: u64, anchor: i64) -> Timing {
    Timing::of(
        &TriggerKind::Every {
            every_ms: period_ms,
        },
        anchor,
    )
    .expect("valid")
    .expect("timed")
}

fn shown(ticks: &[i64]) -> Vec<String> {
    ticks.iter().map(|t| format_ms(*t)).collect()
}

#[test]
fn weekday_cron_in_berlin_fires_at_local_six() {
    let timing = cron("0 6 * * 1-5", "Europe/Berlin");
    // Friday 2026-01-02 07:00 Berlin: the next is Monday 06:00 CET (05:00 UTC).
    let next = timing.next_after(utc("2026-01-02T06:00:00Z")).unwrap();
    assert_eq!(format_ms(next), "2026-01-05T05:00:00.000Z");
    // In summer, 06:00 CEST is 04:00 UTC.
    let next = timing.next_after(utc("2026-07-01T12:00:00Z")).unwrap();
    assert_eq!(format_ms(next), "2026-07-02T04:00:00.000Z");
}

#[test]
fn fixed_time_in_the_spring_gap_runs_once_after_it() {
    // 2026-03-29 02:00 CET jumps to 03:00 CEST in Berlin: 02:30 does not exist.
    let timing = cron("30 2 * * *", "Europe/Berlin");
    let ticks = timing.ticks_between(utc("2026-03-28T00:00:00Z"), utc("2026-03-30T23:59:59Z"), 10);
    assert_eq!(
        shown(&ticks),
        [
            "2026-03-28T01:30:00.000Z", // 02:30 CET
            "2026-03-29T01:00:00.000Z", // first valid minute after the gap, 03:00 CEST
            "2026-03-30T00:30:00.000Z", // 02:30 CEST
        ]
    );
}

#[test]
fn fixed_time_in_the_autumn_overlap_runs_once_and_hourly_runs_twice() {
    // 2026-10-25 03:00 CEST falls back to 02:00 CET: 02:30 happens twice.
    let daily = cron("30 2 * * *", "Europe/Berlin");
    let ticks = daily.ticks_between(utc("2026-10-24T12:00:00Z"), utc("2026-10-25T12:00:00Z"), 10);
    assert_eq!(shown(&ticks), ["2026-10-25T00:30:00.000Z"]);

    let hourly = cron("@hourly", "Europe/Berlin");
    let ticks = hourly.ticks_between(utc("2026-10-24T23:30:00Z"), utc("2026-10-25T02:30:00Z"), 10);
    // 02:00 CEST, 02:00 CET, 03:00 CET and 04:00 CET as one tick an hour of real time.
    assert_eq!(
        shown(&ticks),
        [
            "2026-10-25T00:00:00.000Z",
            "2026-10-25T01:00:00.000Z",
            "2026-10-25T02:00:00.000Z",
        ]
    );
}

#[test]
fn seconds_field_is_optional() {
    let timing = cron("*/15 * * * * *", "UTC");
    let ticks = timing.ticks_between(utc("2026-01-01T00:00:01Z"), utc("2026-01-01T00:00:46Z"), 10);
    assert_eq!(
        shown(&ticks),
        [
            "2026-01-01T00:00:15.000Z",
            "2026-01-01T00:00:30.000Z",
            "2026-01-01T00:00:45.000Z"
        ]
    );
}

#[test]
fn invalid_cron_timezone_and_interval_are_gz_errors() {
    let bad = TriggerKind::Cron {
        expr: "61 * * * *".into(),
        timezone: None,
    };
    assert_eq!(
        Timing::of(&bad, 0).unwrap_err().code,
        ErrorCode::InvalidCron
    );
    let bad = TriggerKind::Cron {
        expr: "0 6 * * *".into(),
        timezone: Some("Europe/Berln".into()),
    };
    assert_eq!(
        Timing::of(&bad, 0).unwrap_err().code,
        ErrorCode::UnknownTimeZone
    );
    assert_eq!(suggest_timezone("Europe/Berln"), Some("Europe/Berlin"));
    assert_eq!(suggest_timezone("europe/berlin"), Some("Europe/Berlin"));
    let bad = TriggerKind::Every { every_ms: 999 };
    assert_eq!(
        Timing::of(&bad, 0).unwrap_err().code,
        ErrorCode::IntervalTooShort
    );
}

#[test]
fn faulty_field_is_found_by_its_offset() {
    assert_eq!(faulty_cron_field("0 25 * * *"), Some(2));
    assert_eq!(faulty_cron_field("0 6 * * 1-9"), Some(8));
    assert_eq!(faulty_cron_field("0 6 * * *"), None);
}

#[test]
fn every_ticks_stay_on_the_grid_of_their_anchor() {
    let timing = every(60_000, 1_000);
    assert_eq!(timing.next_after(0), Some(1_000));
    assert_eq!(timing.next_after(-59_000), Some(1_000));
    assert_eq!(
        timing.next_after(-59_001),
        Some(-59_000),
        "before the anchor too"
    );
    assert_eq!(timing.next_after(1_000), Some(61_000));
    assert_eq!(timing.next_after(60_999), Some(61_000));
    assert_eq!(timing.next_after(61_000), Some(121_000));
}

#[test]
fn nothing_is_due_before_the_next_fire() {
    let timing = every(60_000, 0);
    let due = due(&timing, 60_000, 59_999, None);
    assert!(due.fire.is_empty());
    assert_eq!(due.missed, 0);
    assert_eq!(due.next_fire_ms, Some(60_000));
}

#[test]
fn an_on_time_tick_fires_and_the_next_one_is_scheduled() {
    let timing = every(60_000, 0);
    let due = due(&timing, 60_000, 60_250, None);
    assert_eq!(due.fire, vec![60_000]);
    assert_eq!(due.missed, 0);
    assert_eq!(due.next_fire_ms, Some(120_000));
}

#[test]
fn without_catchup_downtime_skips_missed_ticks_and_fires_only_the_current_one() {
    let timing = every(60_000, 0);
    // Down from just after 0 until 10 min + 5 s: ticks 1..=9 passed unseen.
    let now = 600_000 + 5_000;
    let due = due(&timing, 60_000, now, None);
    assert_eq!(due.fire, vec![600_000], "the tick of 5 s ago is on time");
    assert_eq!(due.missed, 9);
    assert_eq!(due.next_fire_ms, Some(660_000));

    // Back 30 s after a tick: it is late, nothing fires.
    let due2 = super::due(&timing, 60_000, 630_000, None);
    assert!(due2.fire.is_empty());
    assert_eq!(due2.missed, 10);
}

#[test]
fn catchup_fires_the_missed_ticks_inside_the_window_only() {
    let timing = every(60_000, 0);
    let now = 630_000;
    let due = due(&timing, 60_000, now, Some(300_000));
    // Window [330 000, 630 000]: ticks at 6..=10 min.
    assert_eq!(due.fire, vec![360_000, 420_000, 480_000, 540_000, 600_000]);
    assert_eq!(due.missed, 5);
    assert_eq!(due.next_fire_ms, Some(660_000));
}

#[test]
fn catchup_is_bounded() {
    let timing = every(1_000, 0);
    let due = due(&timing, 1_000, 86_400_000, Some(86_400_000));
    assert_eq!(due.fire.len(), MAX_CATCHUP_TICKS);
    assert_eq!(*due.fire.last().unwrap(), 86_400_000);
    assert_eq!(due.missed, 86_400 - MAX_CATCHUP_TICKS as u64);
}

#[test]
fn cron_catchup_across_a_dst_change() {
    let timing = cron("@hourly", "Europe/Berlin");
    // Down from before the autumn change until 03:10 CET (02:10 UTC).
    let next = utc("2026-10-24T23:00:00Z");
    let due = due(
        &timing,
        next,
        utc("2026-10-25T02:10:00Z"),
        Some(3 * 3_600_000),
    );
    assert_eq!(
        shown(&due.fire),
        [
            "2026-10-24T23:10:00.000Z",
            "2026-10-25T00:00:00.000Z",
            "2026-10-25T01:00:00.000Z",
            "2026-10-25T02:00:00.000Z",
        ][1..]
    );
    assert_eq!(due.missed, 1, "the 01:00 CEST tick is outside the window");
}

#[test]
fn overlap_policies_decide_as_named() {
    use OverlapAction::*;
    for policy in [
        Overlap::Skip,
        Overlap::BufferOne,
        Overlap::CancelOther,
        Overlap::AllowAll,
    ] {
        assert_eq!(decide_overlap(policy, 0, false), Start, "{policy:?}");
    }
    assert_eq!(decide_overlap(Overlap::Skip, 1, false), Skip);
    assert_eq!(decide_overlap(Overlap::BufferOne, 1, false), Buffer);
    assert_eq!(decide_overlap(Overlap::BufferOne, 1, true), Skip);
    assert_eq!(
        decide_overlap(Overlap::CancelOther, 2, false),
        CancelOthersAndStart
    );
    assert_eq!(decide_overlap(Overlap::AllowAll, 3, true), Start);
}

#[test]
fn times_parse_in_the_forms_backfill_accepts() {
    assert_eq!(parse_time("2026-01-01"), Some(utc("2026-01-01T00:00:00Z")));
    assert_eq!(
        parse_time("2026-01-01T06:30"),
        Some(utc("2026-01-01T06:30:00Z"))
    );
    assert_eq!(
        parse_time("2026-01-01T06:30:00+01:00"),
        Some(utc("2026-01-01T05:30:00Z"))
    );
    assert_eq!(parse_time("yesterday"), None);
}

#[test]
fn trigger_round_trips_through_json() {
    let trigger = Trigger {
        kind: TriggerKind::Cron {
            expr: "0 6 * * 1-5".into(),
            timezone: Some("Europe/Berlin".into()),
        },
        inputs: serde_json::json!({"since": "24h"})
            .as_object()
            .unwrap()
            .clone(),
        overlap: Overlap::BufferOne,
        catchup_ms: Some(3_600_000),
    };
    let json = serde_json::to_value(&trigger).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "cron", "expr": "0 6 * * 1-5", "timezone": "Europe/Berlin",
            "inputs": {"since": "24h"}, "overlap": "buffer_one", "catchup_ms": 3600000})
    );
    assert_eq!(serde_json::from_value::<Trigger>(json).unwrap(), trigger);
}

#[test]
fn flags_make_the_same_triggers_as_a_file() {
    let t = trigger_from_flags(
        Some("0 6 * * 1-5"),
        Some("Europe/Berlin"),
        None,
        None,
        Some("buffer_one"),
        Some("1h"),
    )
    .unwrap()
    .unwrap();
    assert_eq!(t.kind.describe(), "cron \"0 6 * * 1-5\" (Europe/Berlin)");
    assert_eq!(
        (t.overlap, t.catchup_ms),
        (Overlap::BufferOne, Some(3_600_000))
    );
    let t = trigger_from_flags(None, None, Some("30s"), None, None, None)
        .unwrap()
        .unwrap();
    assert_eq!(t.kind, TriggerKind::Every { every_ms: 30_000 });
    assert!(trigger_from_flags(None, None, None, None, None, None)
        .unwrap()
        .is_none());
    let code = |r: Result<Option<Trigger>, GzError>| r.unwrap_err().code;
    assert_eq!(
        code(trigger_from_flags(
            Some("* * *"),
            None,
            None,
            None,
            None,
            None
        )),
        ErrorCode::InvalidCron
    );
    assert_eq!(
        code(trigger_from_flags(
            Some("@daily"),
            Some("Mars/Base"),
            None,
            None,
            None,
            None
        )),
        ErrorCode::UnknownTimeZone
    );
    assert_eq!(
        code(trigger_from_flags(
            None,
            None,
            Some("0.5s"),
            None,
            None,
            None
        )),
        ErrorCode::IntervalTooShort
    );
    assert_eq!(
        code(trigger_from_flags(
            None,
            None,
            None,
            Some("a b"),
            None,
            None
        )),
        ErrorCode::InvalidTrigger
    );
    assert_eq!(
        code(trigger_from_flags(
            Some("@daily"),
            None,
            Some("1m"),
            None,
            None,
            None
        )),
        ErrorCode::InvalidTrigger
    );
    assert_eq!(
        code(trigger_from_flags(
            None,
            Some("UTC"),
            Some("1m"),
            None,
            None,
            None
        )),
        ErrorCode::InvalidTrigger
    );
    assert_eq!(
        code(trigger_from_flags(
            None,
            None,
            Some("1m"),
            None,
            Some("sometimes"),
            None
        )),
        ErrorCode::InvalidTrigger
    );
}
