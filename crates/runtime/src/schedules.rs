//! Firing schedules: registering a workflow's triggers in the store, and the
//! ticker that turns due ticks into runs — the same code in `gleitzeit serve`
//! and in the local CLI, with the clock and the way a run is started handed
//! in (tests drive both).
//!
//! Exactly once: a tick is claimed by advancing the schedule in the store
//! with a compare-and-set on its version; only the process whose write wins
//! starts the runs, so schedulers sharing one store never fire a tick twice.
//! The claim is committed before the run is started: a process killed between
//! the two loses that tick (it is counted fired, and shows no run), it never
//! runs it twice.

use async_trait::async_trait;
use gleitzeit_core::triggers::{
    decide_overlap, due, format_ms, OverlapAction, RunTrigger, Timing, Trigger, TriggerKind,
    MAX_BACKFILL_TICKS,
};
use gleitzeit_core::{ErrorCode, GzError, Workflow};
use gleitzeit_store::{ListFilter, ScheduleRecord, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the ticker reads the time; tests hand in one they move by hand.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        gleitzeit_store::now_ms()
    }
}

/// How a run is started and stopped: the server submits it and runs it in
/// the background; tests record what was asked.
#[async_trait]
pub trait RunStarter: Send + Sync {
    /// Stores `workflow` and starts running it; returns its id.
    async fn start(
        &self,
        workflow: Workflow,
        source: Option<String>,
        submitted_by: Option<String>,
    ) -> Result<String, GzError>;
    /// Cancels a run (`overlap: cancel_other`).
    async fn cancel(&self, workflow_id: &str) -> Result<(), GzError>;
}

/// What the ticker of this process did, for `/metrics`.
#[derive(Debug, Default)]
pub struct TickCounters {
    pub fired: AtomicU64,
    pub skipped: AtomicU64,
    pub failed: AtomicU64,
}

impl TickCounters {
    pub fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.fired.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn new_schedule_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("sch_{}", &id[..16])
}

/// A fresh webhook secret and its hash: 244 random bits from the OS
/// generator (two v4 UUIDs).
fn new_hook_secret() -> (String, String) {
    let secret = format!(
        "ghs_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let hash = hash_secret(&secret);
    (secret, hash)
}

pub fn hash_secret(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `register` made: the schedules, and each new webhook's secret
/// (shown this once; only its hash is stored).
pub struct Registered {
    pub schedules: Vec<ScheduleRecord>,
    pub hook_secrets: Vec<(String, String)>,
}

// Never prints the secrets.
impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field(
                "schedules",
                &self.schedules.iter().map(|s| &s.id).collect::<Vec<_>>(),
            )
            .field(
                "hooks",
                &self.hook_secrets.iter().map(|(h, _)| h).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// One schedule per trigger of `workflow` (each runs the workflow without
/// its `triggers:`), stored after every one of them was checked: a webhook
/// name already registered refuses the whole file.
pub async fn register(
    store: &dyn Store,
    workflow: &Workflow,
    triggers: &[Trigger],
    source: Option<String>,
    submitted_by: Option<String>,
    now_ms: i64,
) -> Result<Registered, GzError> {
    if triggers.is_empty() {
        return Err(GzError::new(
            ErrorCode::InvalidTrigger,
            format!("workflow `{}` has no triggers", workflow.name),
        )
        .with_hint(
            "Add a `triggers:` list to the file, or give one with --cron, --every or --webhook.",
        ));
    }
    if triggers
        .iter()
        .any(|t| matches!(t.kind, TriggerKind::Folder { .. }))
    {
        return Err(GzError::new(
            ErrorCode::InvalidTrigger,
            "folder triggers cannot be registered as schedules yet",
        )
        .with_hint(
            "Register the file's other triggers with --cron, --every or --webhook, one at a time.",
        ));
    }
    let existing = store.schedules().await?;
    let mut spec = workflow.clone();
    spec.triggers.clear();
    spec.trigger = None;
    let mut records = Vec::new();
    let mut hook_secrets = Vec::new();
    for trigger in triggers {
        if let TriggerKind::Webhook { name } = &trigger.kind {
            if let Some(other) = existing.iter().find(|s| hook_name(s) == Some(name)) {
                return Err(GzError::new(
                    ErrorCode::InvalidTrigger,
                    format!(
                        "webhook `{name}` is already registered (schedule {})",
                        other.id
                    ),
                )
                .with_hint(
                    "Choose another name, or `gleitzeit schedule remove` the other one first.",
                ));
            }
        }
        let timing = Timing::of(&trigger.kind, now_ms)?;
        let hook_secret_sha256 = match &trigger.kind {
            TriggerKind::Webhook { name } => {
                let (secret, hash) = new_hook_secret();
                hook_secrets.push((name.clone(), secret));
                Some(hash)
            }
            _ => None,
        };
        records.push(ScheduleRecord {
            id: new_schedule_id(),
            name: workflow.name.clone(),
            spec: spec.clone(),
            source: source.clone(),
            trigger: trigger.clone(),
            created_ms: now_ms,
            submitted_by: submitted_by.clone(),
            paused: false,
            next_fire_ms: timing.and_then(|t| t.next_after(now_ms)),
            last_fire_ms: None,
            last_run_id: None,
            buffered_tick_ms: None,
            fired: 0,
            skipped: 0,
            failed: 0,
            last_error: None,
            hook_secret_sha256,
            version: 0,
        });
    }
    for record in &mut records {
        if !store.put_schedule(record, None).await? {
            return Err(GzError::new(
                ErrorCode::InternalError,
                format!("schedule id {} is taken", record.id),
            ));
        }
        record.version = 1;
    }
    Ok(Registered {
        schedules: records,
        hook_secrets,
    })
}

pub fn hook_name(schedule: &ScheduleRecord) -> Option<&String> {
    match &schedule.trigger.kind {
        TriggerKind::Webhook { name } => Some(name),
        _ => None,
    }
}

/// The run a tick starts: the schedule's workflow with the trigger's inputs
/// (and `extra`, e.g. a webhook's body) over its defaults, marked with what
/// started it.
pub fn run_of(
    schedule: &ScheduleRecord,
    kind: &str,
    tick_ms: i64,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Workflow {
    let mut workflow = schedule.spec.clone();
    for (k, v) in schedule.trigger.inputs.iter().chain(extra.iter()) {
        workflow.inputs.insert(k.clone(), v.clone());
    }
    workflow.trigger = Some(RunTrigger {
        kind: kind.to_string(),
        id: schedule.id.clone(),
        tick: format_ms(tick_ms),
    });
    workflow
}

/// Ids of the schedule's runs that have not finished.
pub async fn unfinished_runs(store: &dyn Store, schedule_id: &str) -> Result<Vec<String>, GzError> {
    let runs = store
        .list_workflows(&ListFilter {
            schedule: Some(schedule_id.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    Ok(runs
        .into_iter()
        .filter(|w| !w.state.is_terminal())
        .map(|w| w.id)
        .collect())
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackfillReport {
    pub ticks: usize,
    pub started: Vec<String>,
    pub skipped: usize,
    pub buffered: bool,
    pub failed: Vec<GzError>,
}

#[derive(Clone)]
pub struct Ticker {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    starter: Arc<dyn RunStarter>,
    counters: Arc<TickCounters>,
}

/// What one schedule's turn decided, before it is claimed.
#[derive(Default)]
struct Plan {
    start: Vec<i64>,
    cancel: Vec<String>,
    skipped: u64,
}

impl Ticker {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, starter: Arc<dyn RunStarter>) -> Self {
        Ticker {
            store,
            clock,
            starter,
            counters: Arc::default(),
        }
    }

    pub fn counters(&self) -> Arc<TickCounters> {
        self.counters.clone()
    }

    /// Runs turns until `stop`, one every `period`. A schedule that fails
    /// its turn is logged and retried next turn; the others go on.
    pub async fn run(self, period: Duration, stop: CancellationToken) {
        loop {
            if let Err(error) = self.turn().await {
                tracing::warn!("scheduler turn failed: {error}");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    /// One pass over every schedule: fires what is due now. Returns the ids
    /// of the runs it started.
    pub async fn turn(&self) -> Result<Vec<String>, GzError> {
        let now = self.clock.now_ms();
        let mut started = Vec::new();
        for schedule in self.store.schedules().await? {
            match self.turn_one(schedule.clone(), now).await {
                Ok(ids) => started.extend(ids),
                Err(error) => {
                    tracing::warn!("schedule {} could not fire: {error}", schedule.id);
                }
            }
        }
        Ok(started)
    }

    async fn turn_one(&self, schedule: ScheduleRecord, now: i64) -> Result<Vec<String>, GzError> {
        if schedule.paused {
            return Ok(Vec::new());
        }
        let Some(timing) = Timing::of(&schedule.trigger.kind, schedule.created_ms)? else {
            return Ok(Vec::new());
        };
        let tick_due = schedule.next_fire_ms.is_some_and(|next| now >= next);
        if !tick_due && schedule.buffered_tick_ms.is_none() {
            return Ok(Vec::new());
        }
        let running = unfinished_runs(self.store.as_ref(), &schedule.id).await?;
        let mut updated = schedule.clone();
        let mut plan = Plan::default();
        let mut running_n = running.len();
        if let Some(tick) = schedule.buffered_tick_ms.filter(|_| running.is_empty()) {
            plan.start.push(tick);
            updated.buffered_tick_ms = None;
            running_n = 1;
        }
        if let (true, Some(next)) = (tick_due, schedule.next_fire_ms) {
            let due = due(&timing, next, now, schedule.trigger.catchup_ms);
            plan.skipped += due.missed;
            updated.next_fire_ms = due.next_fire_ms;
            for tick in due.fire {
                let buffered = updated.buffered_tick_ms.is_some();
                match decide_overlap(schedule.trigger.overlap, running_n, buffered) {
                    OverlapAction::Start => {
                        plan.start.push(tick);
                        running_n += 1;
                    }
                    OverlapAction::Skip => plan.skipped += 1,
                    OverlapAction::Buffer => updated.buffered_tick_ms = Some(tick),
                    OverlapAction::CancelOthersAndStart => {
                        plan.cancel = running.clone();
                        // Runs planned earlier in this turn would be cancelled
                        // at once: they are not started at all.
                        plan.skipped += plan.start.len() as u64;
                        plan.start = vec![tick];
                        running_n = 1;
                    }
                }
            }
        }
        if plan.start.is_empty() && plan.skipped == 0 && updated == schedule {
            return Ok(Vec::new());
        }
        updated.skipped += plan.skipped;
        updated.fired += plan.start.len() as u64;
        if let Some(&last) = plan.start.last() {
            updated.last_fire_ms = Some(last);
        }
        if !self
            .store
            .put_schedule(&updated, Some(schedule.version))
            .await?
        {
            // Another scheduler advanced it first: the ticks are its to fire.
            return Ok(Vec::new());
        }
        // Claimed, but no run is stored yet: a crash here loses these ticks.
        fail::fail_point!("ticker.claimed");
        self.counters
            .skipped
            .fetch_add(plan.skipped, Ordering::Relaxed);
        for id in &plan.cancel {
            if let Err(error) = self.starter.cancel(id).await {
                tracing::warn!("schedule {}: cannot cancel run {id}: {error}", schedule.id);
            }
        }
        let kind = schedule.trigger.kind.name();
        self.start_ticks(&schedule, kind, &plan.start).await
    }

    /// Starts one run per tick and records the outcome on the schedule.
    async fn start_ticks(
        &self,
        schedule: &ScheduleRecord,
        kind: &str,
        ticks: &[i64],
    ) -> Result<Vec<String>, GzError> {
        let mut started = Vec::new();
        let mut errors = Vec::new();
        for &tick in ticks {
            let run = run_of(schedule, kind, tick, Default::default());
            match self
                .starter
                .start(run, schedule.source.clone(), schedule.submitted_by.clone())
                .await
            {
                Ok(id) => {
                    self.counters.fired.fetch_add(1, Ordering::Relaxed);
                    started.push(id);
                }
                Err(error) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "schedule {}: the tick of {} could not start: {error}",
                        schedule.id,
                        format_ms(tick)
                    );
                    errors.push(error);
                }
            }
        }
        if !ticks.is_empty() {
            self.record_outcome(&schedule.id, &started, &errors, true)
                .await?;
        }
        Ok(started)
    }

    /// Notes the last run and failures on the schedule, re-reading it when
    /// another writer got there first. `claimed`: the ticks were already
    /// counted fired when they were claimed.
    async fn record_outcome(
        &self,
        id: &str,
        started: &[String],
        errors: &[GzError],
        claimed: bool,
    ) -> Result<(), GzError> {
        let failed = errors.len() as u64;
        for _ in 0..8 {
            let Some(mut schedule) = self.store.schedule(id).await? else {
                return Ok(());
            };
            let version = schedule.version;
            if let Some(run) = started.last() {
                schedule.last_run_id = Some(run.clone());
            }
            schedule.failed += failed;
            if claimed {
                schedule.fired = schedule.fired.saturating_sub(failed);
            } else {
                schedule.fired += started.len() as u64;
            }
            schedule.last_error = errors.last().map(|last| {
                GzError::new(
                    ErrorCode::TickFailed,
                    format!("the run could not start: {}", last.message),
                )
            });
            if self.store.put_schedule(&schedule, Some(version)).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Starts a run of the schedule at once, whatever runs already (a
    /// person asked for it explicitly); the schedule's ticks are unchanged.
    pub async fn run_now(&self, id: &str) -> Result<String, GzError> {
        let schedule = gleitzeit_store::find_schedule(self.store.as_ref(), id).await?;
        self.fire_with(&schedule, "run_now", Default::default())
            .await
    }

    /// Starts one run of `schedule` now, marked with `kind` and with `inputs`
    /// over the trigger's (a webhook's body), and records it on the schedule.
    pub async fn fire_with(
        &self,
        schedule: &ScheduleRecord,
        kind: &str,
        inputs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, GzError> {
        let now = self.clock.now_ms();
        let run = run_of(schedule, kind, now, inputs);
        let result = self
            .starter
            .start(run, schedule.source.clone(), schedule.submitted_by.clone())
            .await;
        match &result {
            Ok(run_id) => {
                self.counters.fired.fetch_add(1, Ordering::Relaxed);
                self.record_outcome(&schedule.id, std::slice::from_ref(run_id), &[], false)
                    .await?
            }
            Err(error) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                self.record_outcome(&schedule.id, &[], std::slice::from_ref(error), false)
                    .await?
            }
        }
        result
    }

    /// One run per tick of the schedule in `[from_ms, to_ms]`, through its
    /// overlap policy as if the ticks came one after another now.
    pub async fn backfill(
        &self,
        id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<BackfillReport, GzError> {
        let schedule = gleitzeit_store::find_schedule(self.store.as_ref(), id).await?;
        let Some(timing) = Timing::of(&schedule.trigger.kind, schedule.created_ms)? else {
            return Err(GzError::new(
                ErrorCode::ScheduleNotRunnable,
                format!(
                    "schedule {} is a {} trigger, which has no ticks to backfill",
                    schedule.id,
                    schedule.trigger.kind.name()
                ),
            ));
        };
        if from_ms > to_ms {
            return Err(GzError::new(
                ErrorCode::InvalidBackfillRange,
                format!(
                    "--from {} is after --to {}",
                    format_ms(from_ms),
                    format_ms(to_ms)
                ),
            ));
        }
        let ticks = timing.ticks_between(from_ms, to_ms, MAX_BACKFILL_TICKS + 1);
        if ticks.len() > MAX_BACKFILL_TICKS {
            return Err(GzError::new(
                ErrorCode::InvalidBackfillRange,
                format!(
                    "the range holds more than {MAX_BACKFILL_TICKS} ticks of schedule {}",
                    schedule.id
                ),
            )
            .with_hint("Backfill a shorter range at a time."));
        }
        let running = unfinished_runs(self.store.as_ref(), &schedule.id).await?;
        let mut report = BackfillReport {
            ticks: ticks.len(),
            ..Default::default()
        };
        let mut plan = Plan::default();
        let mut running_n = running.len();
        let mut buffered = schedule.buffered_tick_ms;
        for tick in ticks {
            match decide_overlap(schedule.trigger.overlap, running_n, buffered.is_some()) {
                OverlapAction::Start => {
                    plan.start.push(tick);
                    running_n += 1;
                }
                OverlapAction::Skip => plan.skipped += 1,
                OverlapAction::Buffer => buffered = Some(tick),
                OverlapAction::CancelOthersAndStart => {
                    plan.cancel = running.clone();
                    plan.skipped += plan.start.len() as u64;
                    plan.start = vec![tick];
                    running_n = 1;
                }
            }
        }
        report.skipped = plan.skipped as usize;
        if buffered != schedule.buffered_tick_ms {
            let mut updated = schedule.clone();
            updated.buffered_tick_ms = buffered;
            report.buffered = self
                .store
                .put_schedule(&updated, Some(schedule.version))
                .await?;
        }
        for id in &plan.cancel {
            if let Err(error) = self.starter.cancel(id).await {
                tracing::warn!("schedule {}: cannot cancel run {id}: {error}", schedule.id);
            }
        }
        for &tick in &plan.start {
            let run = run_of(&schedule, "backfill", tick, Default::default());
            match self
                .starter
                .start(run, schedule.source.clone(), schedule.submitted_by.clone())
                .await
            {
                Ok(run_id) => report.started.push(run_id),
                Err(error) => report.failed.push(error),
            }
        }
        self.counters
            .fired
            .fetch_add(report.started.len() as u64, Ordering::Relaxed);
        self.counters
            .failed
            .fetch_add(report.failed.len() as u64, Ordering::Relaxed);
        self.counters
            .skipped
            .fetch_add(plan.skipped, Ordering::Relaxed);
        if !plan.start.is_empty() {
            self.record_outcome(&schedule.id, &report.started, &report.failed, false)
                .await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests;
