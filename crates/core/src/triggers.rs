//! Triggers: what starts a workflow without a person typing a command — cron
//! and interval schedules, webhooks and watched folders — and the pure tick
//! arithmetic every scheduler shares.
//!
//! Nothing here reads a clock: every function takes the current time as a
//! parameter (milliseconds since the Unix epoch), so the scheduler in the
//! server, the local CLI and the tests all drive it with a clock of their own,
//! and DST changes, catch-up and overlap are testable at any instant.

use crate::errors::{ErrorCode, GzError};
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::str::FromStr;

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL_MS: u64 = 1000;

/// How late a tick may be seen by the scheduler and still count as on time
/// when the schedule has no catch-up window: a loaded machine or a slow store
/// delays the scheduler's turn by moments, never by minutes, while a server
/// that was down over a tick is late by at least its restart time.
pub const ON_TIME_TOLERANCE_MS: i64 = 15_000;

/// At most this many missed ticks are fired in one catch-up, newest kept; a
/// per-second schedule with a day-long window would otherwise start 86,400 runs.
pub const MAX_CATCHUP_TICKS: usize = 100;

/// At most this many runs are started by one backfill.
pub const MAX_BACKFILL_TICKS: usize = 1000;

/// One entry of a workflow's `triggers:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    #[serde(flatten)]
    pub kind: TriggerKind,
    /// Inputs each run starts with (over the workflow's declared defaults).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    #[serde(default)]
    pub overlap: Overlap,
    /// After downtime, ticks missed within this window still fire; `None`:
    /// missed ticks are skipped (counted, never run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerKind {
    Cron {
        expr: String,
        /// IANA name; `None` is UTC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
    },
    Every {
        every_ms: u64,
    },
    Webhook {
        name: String,
    },
    Folder {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pattern: Option<String>,
        /// A file is picked up once its size and mtime stayed the same this long.
        stable_ms: u64,
    },
}

impl TriggerKind {
    pub fn name(&self) -> &'static str {
        match self {
            TriggerKind::Cron { .. } => "cron",
            TriggerKind::Every { .. } => "every",
            TriggerKind::Webhook { .. } => "webhook",
            TriggerKind::Folder { .. } => "folder",
        }
    }

    /// What `schedule list` prints for it.
    pub fn describe(&self) -> String {
        match self {
            TriggerKind::Cron { expr, timezone } => match timezone {
                Some(tz) => format!("cron \"{expr}\" ({tz})"),
                None => format!("cron \"{expr}\" (UTC)"),
            },
            TriggerKind::Every { every_ms } => format!("every {}", format_duration(*every_ms)),
            TriggerKind::Webhook { name } => format!("webhook {name}"),
            TriggerKind::Folder { path, pattern, .. } => match pattern {
                Some(p) => format!("folder {path} ({p})"),
                None => format!("folder {path}"),
            },
        }
    }
}

/// What a tick does while an earlier run of the same schedule is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The tick is dropped (counted as skipped).
    #[default]
    Skip,
    /// One tick waits and starts when the running one ends; further ticks
    /// while one waits are dropped.
    BufferOne,
    /// The running one is cancelled and the tick starts.
    CancelOther,
    /// Every tick starts a run, however many are running.
    AllowAll,
}

impl Overlap {
    pub const NAMES: &'static [&'static str] = &["skip", "buffer_one", "cancel_other", "allow_all"];

    pub fn parse(text: &str) -> Option<Overlap> {
        match text {
            "skip" => Some(Overlap::Skip),
            "buffer_one" => Some(Overlap::BufferOne),
            "cancel_other" => Some(Overlap::CancelOther),
            "allow_all" => Some(Overlap::AllowAll),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::BufferOne => "buffer_one",
            Overlap::CancelOther => "cancel_other",
            Overlap::AllowAll => "allow_all",
        }
    }
}

/// What started a run: stored in its spec, shown by `get`, the API and the
/// dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunTrigger {
    /// `cron`, `every`, `webhook`, `folder`; `run_now` and `backfill` for
    /// runs a person asked a schedule for.
    pub kind: String,
    /// The schedule's id.
    pub id: String,
    /// The tick it stands for (RFC 3339, UTC); for a webhook or a file, when
    /// it arrived.
    pub tick: String,
}

/// The trigger the `schedule add` flags describe (`--cron … --tz …`,
/// `--every 30s`, `--webhook NAME`, with `--overlap` and `--catchup`), held
/// to the same rules as `triggers:` in a file.
pub fn trigger_from_flags(
    cron: Option<&str>,
    timezone: Option<&str>,
    every: Option<&str>,
    webhook: Option<&str>,
    overlap: Option<&str>,
    catchup: Option<&str>,
) -> Result<Option<Trigger>, GzError> {
    let kind = match (cron, every, webhook) {
        (None, None, None) => {
            if timezone.is_some() || overlap.is_some() || catchup.is_some() {
                return Err(GzError::new(
                    ErrorCode::InvalidTrigger,
                    "--tz, --overlap and --catchup need --cron, --every or --webhook",
                ));
            }
            return Ok(None);
        }
        (Some(expr), None, None) => {
            parse_cron(expr).map_err(|why| {
                GzError::new(
                    ErrorCode::InvalidCron,
                    format!("invalid cron expression \"{expr}\": {why}"),
                )
                .with_hint(ErrorCode::InvalidCron.def().hint)
            })?;
            if let Some(tz) = timezone {
                parse_timezone(tz).map_err(|why| {
                    let error = GzError::new(ErrorCode::UnknownTimeZone, why);
                    match suggest_timezone(tz) {
                        Some(s) => error.with_hint(format!("Did you mean `{s}`?")),
                        None => error.with_hint(ErrorCode::UnknownTimeZone.def().hint),
                    }
                })?;
            }
            TriggerKind::Cron {
                expr: expr.trim().to_string(),
                timezone: timezone.map(|t| t.trim().to_string()),
            }
        }
        (None, Some(text), None) => {
            let ms = crate::parse::parse_duration(text)
                .map(|s| s * 1000.0)
                .filter(|ms| *ms >= MIN_INTERVAL_MS as f64 && *ms <= u64::MAX as f64 / 2.0)
                .ok_or_else(|| {
                    GzError::new(
                        ErrorCode::IntervalTooShort,
                        format!("--every {text} is not a duration of at least one second"),
                    )
                    .with_hint(ErrorCode::IntervalTooShort.def().hint)
                })?;
            TriggerKind::Every {
                every_ms: ms.round() as u64,
            }
        }
        (None, None, Some(name)) => {
            if !crate::parse::valid_hook_name(name) {
                return Err(GzError::new(
                    ErrorCode::InvalidTrigger,
                    format!("`{name}` is not a webhook name"),
                )
                .with_hint(
                    "Use 1-64 letters, digits, `-` or `_`: it becomes /api/v1/hooks/NAME.",
                ));
            }
            TriggerKind::Webhook {
                name: name.to_string(),
            }
        }
        _ => {
            return Err(GzError::new(
                ErrorCode::InvalidTrigger,
                "give only one of --cron, --every and --webhook",
            ))
        }
    };
    if timezone.is_some() && !matches!(kind, TriggerKind::Cron { .. }) {
        return Err(GzError::new(
            ErrorCode::InvalidTrigger,
            "--tz belongs to --cron",
        ));
    }
    let overlap = match overlap {
        None => Overlap::default(),
        Some(text) => Overlap::parse(text).ok_or_else(|| {
            GzError::new(
                ErrorCode::InvalidTrigger,
                format!("--overlap {text} is not a policy"),
            )
            .with_hint(format!("Use one of {}.", Overlap::NAMES.join(", ")))
        })?,
    };
    let catchup_ms = match catchup {
        None | Some("none") => None,
        Some(text) => Some(
            crate::parse::parse_duration(text)
                .map(|s| (s * 1000.0).round() as u64)
                .ok_or_else(|| {
                    GzError::new(
                        ErrorCode::InvalidTrigger,
                        format!("--catchup {text} is not a duration"),
                    )
                    .with_hint("Write a window such as 1h or 30m, or `none`.")
                })?,
        ),
    };
    Ok(Some(Trigger {
        kind,
        inputs: Map::new(),
        overlap,
        catchup_ms,
    }))
}

/// RFC 3339 in UTC with milliseconds, the form ticks are shown and stored in.
pub fn format_ms(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// A user-given point in time: RFC 3339, `YYYY-MM-DDTHH:MM[:SS]` (UTC), or a
/// date (its midnight, UTC).
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

pub fn format_duration(ms: u64) -> String {
    if ms.is_multiple_of(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The cron parser every part of Gleitzeit uses: five fields, or six with
/// seconds first; `@hourly` and friends; no year field.
fn cron_parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
}

/// Parses a cron expression; the error says what is wrong in the crate's words.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    if expr.trim().is_empty() {
        return Err("the cron expression is empty".into());
    }
    cron_parser().parse(expr).map_err(|e| e.to_string())
}

/// Which whitespace-separated field of `expr` is at fault, as a byte offset
/// into `expr`: each field is tried alone with every other one a wildcard.
pub fn faulty_cron_field(expr: &str) -> Option<usize> {
    let fields: Vec<(usize, &str)> = expr
        .split_whitespace()
        .map(|f| (f.as_ptr() as usize - expr.as_ptr() as usize, f))
        .collect();
    if !(5..=6).contains(&fields.len()) {
        return None;
    }
    fields.iter().enumerate().find_map(|(i, (offset, _))| {
        let probe: Vec<&str> = fields
            .iter()
            .enumerate()
            .map(|(j, (_, f))| if i == j { *f } else { "*" })
            .collect();
        cron_parser()
            .parse(&probe.join(" "))
            .is_err()
            .then_some(*offset)
    })
}

pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name.trim()).map_err(|_| format!("`{name}` is not an IANA time zone"))
}

/// The IANA name closest to `name`, for "did you mean".
pub fn suggest_timezone(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if let Some(exact) = chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(&lower))
    {
        return Some(exact.name());
    }
    crate::parse::suggest(name, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
}

/// When a schedule fires: the time-based half of a trigger.
#[derive(Debug, Clone)]
pub enum Timing {
    Cron(Box<croner::Cron>, chrono_tz::Tz),
    /// Every `period` ms, counted from `anchor` (when the schedule was made),
    /// so ticks stay on the same grid across restarts.
    Every {
        period: i64,
        anchor: i64,
    },
}

impl Timing {
    /// The timing of a cron or every trigger; `None` for webhooks and folders.
    pub fn of(kind: &TriggerKind, anchor_ms: i64) -> Result<Option<Timing>, GzError> {
        match kind {
            TriggerKind::Cron { expr, timezone } => {
                let cron = parse_cron(expr).map_err(|why| {
                    GzError::new(
                        ErrorCode::InvalidCron,
                        format!("invalid cron expression \"{expr}\": {why}"),
                    )
                })?;
                let tz = match timezone {
                    Some(name) => parse_timezone(name)
                        .map_err(|why| GzError::new(ErrorCode::UnknownTimeZone, why))?,
                    None => chrono_tz::UTC,
                };
                Ok(Some(Timing::Cron(Box::new(cron), tz)))
            }
            TriggerKind::Every { every_ms } => {
                if *every_ms < MIN_INTERVAL_MS {
                    return Err(GzError::new(
                        ErrorCode::IntervalTooShort,
                        format!("an interval of {every_ms} ms is under one second"),
                    ));
                }
                let period = i64::try_from(*every_ms).map_err(|_| {
                    GzError::new(ErrorCode::IntervalTooShort, "the interval is too long")
                })?;
                Ok(Some(Timing::Every {
                    period,
                    anchor: anchor_ms,
                }))
            }
            TriggerKind::Webhook { .. } | TriggerKind::Folder { .. } => Ok(None),
        }
    }

    /// The first tick strictly after `after_ms`; `None` when there is none
    /// (a cron expression that matches no date before the year 5000).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Timing::Cron(cron, tz) => {
                let start = tz.timestamp_millis_opt(after_ms).single()?;
                cron.find_next_occurrence(&start, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
            Timing::Every { period, anchor } => {
                // The grid extends before the anchor too (backfill).
                let steps = after_ms.checked_sub(*anchor)?.div_euclid(*period) + 1;
                anchor.checked_add(steps.checked_mul(*period)?)
            }
        }
    }

    /// Every tick in `[from_ms, to_ms]`, at most `max` of them (the earliest).
    pub fn ticks_between(&self, from_ms: i64, to_ms: i64, max: usize) -> Vec<i64> {
        let mut ticks = Vec::new();
        let mut cursor = from_ms.saturating_sub(1);
        while ticks.len() < max {
            match self.next_after(cursor) {
                Some(t) if t <= to_ms => {
                    ticks.push(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        ticks
    }
}

/// What is due for a schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Ticks to fire now, oldest first (each still goes through the overlap
    /// policy).
    pub fire: Vec<i64>,
    /// Ticks that passed unseen and are not fired (outside catch-up).
    pub missed: u64,
    /// The next tick after `now`, to store as the schedule's next fire.
    pub next_fire_ms: Option<i64>,
}

/// The ticks due at `now_ms` for a schedule whose stored next fire is
/// `next_fire_ms`: a tick fires when it is on time (within
/// [`ON_TIME_TOLERANCE_MS`]) or within `catchup_ms` of now; older ones are
/// missed. Nothing is due before `next_fire_ms`.
pub fn due(timing: &Timing, next_fire_ms: i64, now_ms: i64, catchup_ms: Option<u64>) -> Due {
    if now_ms < next_fire_ms {
        return Due {
            fire: Vec::new(),
            missed: 0,
            next_fire_ms: Some(next_fire_ms),
        };
    }
    let window = catchup_ms
        .map(|c| i64::try_from(c).unwrap_or(i64::MAX))
        .unwrap_or(0)
        .max(ON_TIME_TOLERANCE_MS);
    let oldest_fired = now_ms.saturating_sub(window);
    let mut fire = Vec::new();
    let mut missed = 0u64;
    // Ticks before the window are counted, not listed: a schedule that was
    // off for a year must not walk a year of per-second ticks one by one.
    if next_fire_ms < oldest_fired {
        let first_in_window = timing.next_after(oldest_fired.saturating_sub(1));
        missed = count_ticks(timing, next_fire_ms, oldest_fired);
        let mut cursor = first_in_window;
        while let Some(t) = cursor.filter(|t| *t <= now_ms) {
            fire.push(t);
            cursor = timing.next_after(t);
        }
    } else {
        let mut cursor = Some(next_fire_ms);
        while let Some(t) = cursor.filter(|t| *t <= now_ms) {
            fire.push(t);
            cursor = timing.next_after(t);
        }
    }
    if fire.len() > MAX_CATCHUP_TICKS {
        let dropped = fire.len() - MAX_CATCHUP_TICKS;
        missed += dropped as u64;
        fire.drain(..dropped);
    }
    Due {
        fire,
        missed,
        next_fire_ms: timing.next_after(now_ms),
    }
}

/// How many ticks lie in `[from_ms, before_ms)`; exact for intervals, for
/// cron counted up to a bound (a count is only reported, never acted on).
fn count_ticks(timing: &Timing, from_ms: i64, before_ms: i64) -> u64 {
    match timing {
        Timing::Every { period, .. } => {
            u64::try_from((before_ms - from_ms + period - 1) / period).unwrap_or(0)
        }
        Timing::Cron(..) => {
            let mut n = 0u64;
            let mut cursor = Some(from_ms);
            while let Some(t) = cursor.filter(|t| *t < before_ms) {
                n += 1;
                if n >= 100_000 {
                    break;
                }
                cursor = timing.next_after(t);
            }
            n
        }
    }
}

/// What to do with a due tick, given the schedule's runs that are still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapAction {
    /// Start a run for the tick.
    Start,
    /// Drop the tick (count it skipped).
    Skip,
    /// Keep the tick; start it when the running ones end.
    Buffer,
    /// Cancel the running ones, then start a run for the tick.
    CancelOthersAndStart,
}

/// The overlap policy as a decision: `running` runs of the schedule are not
/// finished, and `buffered` says whether a tick is already waiting.
pub fn decide_overlap(policy: Overlap, running: usize, buffered: bool) -> OverlapAction {
    if running == 0 {
        return OverlapAction::Start;
    }
    match policy {
        Overlap::Skip => OverlapAction::Skip,
        Overlap::BufferOne if buffered => OverlapAction::Skip,
        Overlap::BufferOne => OverlapAction::Buffer,
        Overlap::CancelOther => OverlapAction::CancelOthersAndStart,
        Overlap::AllowAll => OverlapAction::Start,
    }
}

#[cfg(test)]
mod tests;
