//! Schedules, webhooks and their runs: `/api/v1/schedules…` and
//! `/api/v1/hooks/{name}`.

use gleitzeit_core::triggers::{format_ms, TriggerKind};
use gleitzeit_core::GzError;
use gleitzeit_store::ScheduleRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A registered trigger as `schedule list` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    pub schedule_id: String,
    /// The workflow's name.
    pub name: String,
    /// cron, every, webhook or folder
    pub kind: String,
    /// The trigger in words: `cron "0 6 * * 1-5" (Europe/Berlin)`, `every 15m`, …
    pub describe: String,
    /// For a cron trigger: its IANA time zone (UTC when none was given).
    pub timezone: Option<String>,
    /// For a webhook: its name (`POST /api/v1/hooks/NAME`).
    pub hook: Option<String>,
    /// skip, buffer_one, cancel_other or allow_all
    pub overlap: String,
    /// Missed ticks within this many ms still run after downtime; `null`: none.
    pub catchup_ms: Option<u64>,
    pub paused: bool,
    pub next_fire_ms: Option<i64>,
    /// `next_fire_ms` as RFC 3339, UTC.
    pub next_fire: Option<String>,
    pub last_fire_ms: Option<i64>,
    pub last_run_id: Option<String>,
    pub fired: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Why the latest tick could not start its run.
    pub last_error: Option<String>,
    pub source: Option<String>,
    pub created_ms: i64,
    pub submitted_by: Option<String>,
}

impl From<&ScheduleRecord> for ScheduleView {
    fn from(s: &ScheduleRecord) -> ScheduleView {
        let (timezone, hook) = match &s.trigger.kind {
            TriggerKind::Cron { timezone, .. } => {
                (Some(timezone.clone().unwrap_or_else(|| "UTC".into())), None)
            }
            TriggerKind::Webhook { name } => (None, Some(name.clone())),
            _ => (None, None),
        };
        ScheduleView {
            schedule_id: s.id.clone(),
            name: s.name.clone(),
            kind: s.trigger.kind.name().to_string(),
            describe: s.trigger.kind.describe(),
            timezone,
            hook,
            overlap: s.trigger.overlap.as_str().to_string(),
            catchup_ms: s.trigger.catchup_ms,
            paused: s.paused,
            next_fire_ms: s.next_fire_ms,
            next_fire: s.next_fire_ms.map(format_ms),
            last_fire_ms: s.last_fire_ms,
            last_run_id: s.last_run_id.clone(),
            fired: s.fired,
            skipped: s.skipped,
            failed: s.failed,
            last_error: s.last_error.as_ref().map(GzError::to_string),
            source: s.source.clone(),
            created_ms: s.created_ms,
            submitted_by: s.submitted_by.clone(),
        }
    }
}

/// `GET /api/v1/schedules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// `POST /api/v1/schedules`: the schedules made from the file's triggers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleAddResponse {
    pub schedules: Vec<ScheduleView>,
    /// For each webhook made: its secret, shown this once (only its hash is
    /// kept). Send it as `X-Gleitzeit-Hook-Secret`.
    #[serde(default)]
    pub hook_secrets: Vec<HookSecret>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HookSecret {
    pub hook: String,
    pub secret: String,
}

/// `POST /api/v1/schedules/{id}/backfill`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// Start of the range (RFC 3339, or a date), inclusive.
    pub from: String,
    /// End of the range, inclusive.
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackfillResponse {
    pub schedule_id: String,
    /// Ticks in the range.
    pub ticks: usize,
    /// Runs started, oldest tick first.
    pub started: Vec<String>,
    /// Ticks the overlap policy dropped.
    pub skipped: usize,
    /// One tick waits for the running one (`overlap: buffer_one`).
    pub buffered: bool,
    /// Ticks whose run could not start, with why.
    pub failed: Vec<String>,
}

/// A run started at once: `run-now`, or a webhook call (202).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunStarted {
    pub schedule_id: String,
    pub workflow_id: String,
}
