//! The ticker against real stores, with a clock moved by hand and a starter
//! that stores each run as the server would (so overlap sees them) and lets
//! the test finish them.

use super::*;
use gleitzeit_core::triggers::Overlap;
use gleitzeit_core::WorkflowState;
use gleitzeit_store::{MemoryStore, RedisOptions, RedisStore, WorkflowRecord, Write};
use std::sync::atomic::AtomicI64;
use std::sync::Mutex;

struct ManualClock(AtomicI64);

impl ManualClock {
    fn at(ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(ms)))
    }
    fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Stores each run Pending, as `Runtime::submit` does, and remembers it.
struct StoringStarter {
    store: Arc<dyn Store>,
    started: Mutex<Vec<(String, RunTrigger)>>,
    cancelled: Mutex<Vec<String>>,
    fail: std::sync::atomic::AtomicBool,
}

impl StoringStarter {
    fn new(store: Arc<dyn Store>) -> Arc<StoringStarter> {
        Arc::new(StoringStarter {
            store,
            started: Mutex::default(),
            cancelled: Mutex::default(),
            fail: Default::default(),
        })
    }

    fn ticks(&self) -> Vec<String> {
        self.started
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| format!("{} {}", t.kind, t.tick))
            .collect()
    }

    async fn finish_all(&self) {
        let ids: Vec<String> = self
            .started
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            finish(self.store.as_ref(), &id, WorkflowState::Completed).await;
        }
    }
}

async fn finish(store: &dyn Store, id: &str, state: WorkflowState) {
    store
        .apply(vec![Write::Workflow {
            id: id.to_string(),
            state,
            at_ms: 0,
            error: None,
        }])
        .await
        .unwrap();
}

#[async_trait]
impl RunStarter for StoringStarter {
    async fn start(
        &self,
        workflow: Workflow,
        source: Option<String>,
        submitted_by: Option<String>,
    ) -> Result<String, GzError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(GzError::new(ErrorCode::ServerShuttingDown, "not now"));
        }
        let id = format!("wf_{}", uuid::Uuid::new_v4().simple());
        let trigger = workflow.trigger.clone().expect("a run carries its trigger");
        let record = WorkflowRecord {
            id: id.clone(),
            name: workflow.name.clone(),
            state: WorkflowState::Pending,
            spec: workflow,
            source,
            created_ms: 0,
            started_ms: None,
            finished_ms: None,
            error: None,
            cancel_requested: false,
            owner: None,
            submitted_by,
        };
        self.store.create_workflow(&record, &[]).await?;
        self.started.lock().unwrap().push((id.clone(), trigger));
        Ok(id)
    }

    async fn cancel(&self, workflow_id: &str) -> Result<(), GzError> {
        finish(self.store.as_ref(), workflow_id, WorkflowState::Cancelled).await;
        self.cancelled.lock().unwrap().push(workflow_id.to_string());
        Ok(())
    }
}

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn workflow() -> Workflow {
    serde_json::from_value(serde_json::json!({
        "name": "digest",
        "inputs": {"since": "1h"},
        "tasks": [{"id": "a", "method": "function/call", "params": {}}]
    }))
    .unwrap()
}

fn every(seconds: u64, overlap: Overlap, catchup_ms: Option<u64>) -> Trigger {
    Trigger {
        kind: TriggerKind::Every {
            every_ms: seconds * 1000,
        },
        inputs: serde_json::json!({"since": "24h"})
            .as_object()
            .unwrap()
            .clone(),
        overlap,
        catchup_ms,
    }
}

struct Setup {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    starter: Arc<StoringStarter>,
    ticker: Ticker,
    id: String,
}

async fn setup_on(store: Arc<dyn Store>, trigger: Trigger) -> Setup {
    let clock = ManualClock::at(T0);
    let starter = StoringStarter::new(store.clone());
    let ticker = Ticker::new(store.clone(), clock.clone(), starter.clone());
    let records = register(
        store.as_ref(),
        &workflow(),
        &[trigger],
        Some("flow.yaml".into()),
        Some("alice".into()),
        T0,
    )
    .await
    .unwrap()
    .schedules;
    Setup {
        id: records[0].id.clone(),
        store,
        clock,
        starter,
        ticker,
    }
}

async fn setup(trigger: Trigger) -> Setup {
    setup_on(Arc::new(MemoryStore::new()), trigger).await
}

impl Setup {
    async fn at(&self, seconds: i64) -> Vec<String> {
        self.clock.set(T0 + seconds * 1000);
        self.ticker.turn().await.unwrap()
    }

    async fn schedule(&self) -> ScheduleRecord {
        self.store.schedule(&self.id).await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn an_every_schedule_fires_each_tick_once_with_its_inputs_and_trigger() {
    let s = setup(every(10, Overlap::AllowAll, None)).await;
    assert!(s.at(5).await.is_empty(), "nothing before the first tick");
    let first = s.at(10).await;
    assert_eq!(first.len(), 1);
    assert!(
        s.at(10).await.is_empty(),
        "a turn at the same time fires nothing more"
    );
    s.at(20).await;
    assert_eq!(
        s.starter.ticks(),
        [
            "every 2026-01-01T00:00:10.000Z",
            "every 2026-01-01T00:00:20.000Z"
        ]
    );
    let run = s.store.workflow(&first[0]).await.unwrap().unwrap();
    assert_eq!(run.spec.inputs["since"], "24h", "the trigger's inputs win");
    assert!(run.spec.triggers.is_empty());
    assert_eq!(run.submitted_by.as_deref(), Some("alice"));
    let trigger = run.spec.trigger.unwrap();
    assert_eq!(
        (trigger.kind.as_str(), trigger.id.as_str()),
        ("every", s.id.as_str())
    );
    let schedule = s.schedule().await;
    assert_eq!(schedule.fired, 2);
    assert_eq!(schedule.next_fire_ms, Some(T0 + 30_000));
    assert_eq!(schedule.last_fire_ms, Some(T0 + 20_000));
    assert_eq!(s.ticker.counters().snapshot(), (2, 0, 0));
}

#[tokio::test]
async fn skip_drops_ticks_while_a_run_outlasts_its_interval() {
    let s = setup(every(10, Overlap::Skip, None)).await;
    s.at(10).await;
    // The run is still going at 20 and 30: both ticks are skipped.
    assert!(s.at(20).await.is_empty());
    assert!(s.at(30).await.is_empty());
    s.starter.finish_all().await;
    assert_eq!(s.at(40).await.len(), 1);
    assert_eq!(
        s.starter.ticks(),
        [
            "every 2026-01-01T00:00:10.000Z",
            "every 2026-01-01T00:00:40.000Z"
        ]
    );
    let schedule = s.schedule().await;
    assert_eq!((schedule.fired, schedule.skipped), (2, 2));
    assert_eq!(s.ticker.counters().snapshot(), (2, 2, 0));
}

#[tokio::test]
async fn buffer_one_keeps_one_tick_and_starts_it_when_the_run_ends() {
    let s = setup(every(10, Overlap::BufferOne, None)).await;
    s.at(10).await;
    assert!(s.at(20).await.is_empty(), "buffered");
    assert!(s.at(30).await.is_empty(), "dropped: one is already waiting");
    assert_eq!(s.schedule().await.buffered_tick_ms, Some(T0 + 20_000));
    assert!(s.at(35).await.is_empty(), "still running");
    s.starter.finish_all().await;
    assert_eq!(
        s.at(36).await.len(),
        1,
        "the buffered tick starts when the run ended"
    );
    assert_eq!(
        s.starter.ticks(),
        [
            "every 2026-01-01T00:00:10.000Z",
            "every 2026-01-01T00:00:20.000Z"
        ]
    );
    let schedule = s.schedule().await;
    assert_eq!(schedule.buffered_tick_ms, None);
    assert_eq!((schedule.fired, schedule.skipped), (2, 1));
}

#[tokio::test]
async fn cancel_other_cancels_the_running_one_and_starts_the_tick() {
    let s = setup(every(10, Overlap::CancelOther, None)).await;
    let first = s.at(10).await;
    let second = s.at(20).await;
    assert_eq!(second.len(), 1);
    assert_eq!(*s.starter.cancelled.lock().unwrap(), first);
    let first = s.store.workflow(&first[0]).await.unwrap().unwrap();
    assert_eq!(first.state, WorkflowState::Cancelled);
}

#[tokio::test]
async fn allow_all_starts_every_tick_however_many_run() {
    let s = setup(every(10, Overlap::AllowAll, None)).await;
    for t in [10, 20, 30] {
        assert_eq!(s.at(t).await.len(), 1);
    }
    assert_eq!(
        unfinished_runs(s.store.as_ref(), &s.id)
            .await
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn a_scheduler_down_over_ticks_skips_them_without_catchup() {
    let s = setup(every(60, Overlap::AllowAll, None)).await;
    // Down from the start until 10 min + 30 s: every tick is late.
    assert!(s.at(630).await.is_empty());
    let schedule = s.schedule().await;
    assert_eq!((schedule.fired, schedule.skipped), (0, 10));
    assert_eq!(schedule.next_fire_ms, Some(T0 + 660_000));
    assert_eq!(s.at(660).await.len(), 1, "on time again");
}

#[tokio::test]
async fn a_scheduler_down_over_ticks_fires_those_within_catchup() {
    let s = setup(every(60, Overlap::AllowAll, Some(150_000))).await;
    let started = s.at(630).await;
    assert_eq!(
        s.starter.ticks(),
        [
            "every 2026-01-01T00:08:00.000Z",
            "every 2026-01-01T00:09:00.000Z",
            "every 2026-01-01T00:10:00.000Z"
        ]
    );
    assert_eq!(started.len(), 3);
    assert_eq!(s.schedule().await.skipped, 7);
}

#[tokio::test]
async fn paused_schedules_do_not_fire_and_resume_on_the_next_tick() {
    let s = setup(every(10, Overlap::AllowAll, None)).await;
    let mut schedule = s.schedule().await;
    schedule.paused = true;
    assert!(s
        .store
        .put_schedule(&schedule, Some(schedule.version))
        .await
        .unwrap());
    assert!(s.at(10).await.is_empty());
    let mut schedule = s.schedule().await;
    schedule.paused = false;
    assert!(s
        .store
        .put_schedule(&schedule, Some(schedule.version))
        .await
        .unwrap());
    // Still the stored next fire of 10 s; at 11 s it is on time.
    assert_eq!(s.at(11).await.len(), 1);
}

#[tokio::test]
async fn a_run_that_cannot_start_counts_failed_and_the_schedule_goes_on() {
    let s = setup(every(10, Overlap::AllowAll, None)).await;
    s.starter.fail.store(true, Ordering::SeqCst);
    assert!(s.at(10).await.is_empty());
    let schedule = s.schedule().await;
    assert_eq!((schedule.fired, schedule.failed), (0, 1));
    assert_eq!(schedule.last_error.unwrap().code, ErrorCode::TickFailed);
    s.starter.fail.store(false, Ordering::SeqCst);
    assert_eq!(s.at(20).await.len(), 1);
    let schedule = s.schedule().await;
    assert_eq!((schedule.fired, schedule.failed), (1, 1));
    assert!(schedule.last_error.is_none());
    assert_eq!(s.ticker.counters().snapshot(), (1, 0, 1));
}

#[tokio::test]
async fn run_now_and_backfill() {
    let s = setup(every(10, Overlap::AllowAll, None)).await;
    s.clock.set(T0 + 5_000);
    let run = s.ticker.run_now(&s.id[..8]).await.unwrap();
    assert_eq!(
        s.schedule().await.last_run_id.as_deref(),
        Some(run.as_str())
    );
    let report = s
        .ticker
        .backfill(&s.id, T0 - 60_000, T0 - 30_000)
        .await
        .unwrap();
    assert_eq!(report.ticks, 4);
    assert_eq!(report.started.len(), 4);
    assert_eq!(
        s.starter.ticks()[1..],
        [
            "backfill 2025-12-31T23:59:00.000Z",
            "backfill 2025-12-31T23:59:10.000Z",
            "backfill 2025-12-31T23:59:20.000Z",
            "backfill 2025-12-31T23:59:30.000Z"
        ]
    );
    assert_eq!(s.schedule().await.fired, 5);

    let error = s.ticker.backfill(&s.id, T0, T0 - 1).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidBackfillRange);
    let error = s
        .ticker
        .backfill(&s.id, T0, T0 + 86_400_000)
        .await
        .unwrap_err();
    assert_eq!(
        error.code,
        ErrorCode::InvalidBackfillRange,
        "too many ticks"
    );
    let error = s.ticker.run_now("sch_nope").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ScheduleNotFound);
}

#[tokio::test]
async fn backfill_respects_the_overlap_policy() {
    let s = setup(every(10, Overlap::Skip, None)).await;
    let report = s.ticker.backfill(&s.id, T0 - 40_000, T0 - 1).await.unwrap();
    assert_eq!(
        (report.ticks, report.started.len(), report.skipped),
        (4, 1, 3)
    );
}

#[tokio::test]
async fn webhooks_are_unique_and_have_no_ticks() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let hook = Trigger {
        kind: TriggerKind::Webhook {
            name: "new-ticket".into(),
        },
        inputs: Default::default(),
        overlap: Overlap::AllowAll,
        catchup_ms: None,
    };
    let registered = register(
        store.as_ref(),
        &workflow(),
        std::slice::from_ref(&hook),
        None,
        None,
        T0,
    )
    .await
    .unwrap();
    let records = registered.schedules;
    assert_eq!(records[0].next_fire_ms, None);
    let (name, secret) = &registered.hook_secrets[0];
    assert_eq!(name, "new-ticket");
    assert!(secret.starts_with("ghs_") && secret.len() > 60);
    assert_eq!(
        records[0].hook_secret_sha256.as_deref(),
        Some(hash_secret(secret).as_str())
    );
    let error = register(store.as_ref(), &workflow(), &[hook], None, None, T0)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidTrigger);
    let clock = ManualClock::at(T0 + 3_600_000);
    let ticker = Ticker::new(store.clone(), clock, StoringStarter::new(store.clone()));
    assert!(ticker.turn().await.unwrap().is_empty());
    let error = ticker
        .backfill(&records[0].id, T0, T0 + 1)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::ScheduleNotRunnable);
    let error = register(store.as_ref(), &workflow(), &[], None, None, T0)
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidTrigger);
}

fn redis_url() -> String {
    std::env::var("GLEITZEIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Two schedulers on one Redis, racing turn for turn over the same ticks:
/// every tick starts exactly one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_on_one_redis_fire_each_tick_once() {
    let options = RedisOptions {
        prefix: format!("gleitzeit-test-{}", uuid::Uuid::new_v4()),
        ..Default::default()
    };
    let connect = || async {
        RedisStore::connect(&redis_url(), options.clone())
            .await
            .unwrap_or_else(|e| panic!("this test needs Redis (GLEITZEIT_TEST_REDIS_URL): {e}"))
    };
    let a: Arc<dyn Store> = Arc::new(connect().await);
    let b: Arc<dyn Store> = Arc::new(connect().await);
    let s = setup_on(a.clone(), every(1, Overlap::AllowAll, None)).await;
    let starter_b = StoringStarter::new(b.clone());
    let ticker_b = Ticker::new(b.clone(), s.clock.clone(), starter_b.clone());
    for second in 1..=40 {
        s.clock.set(T0 + second * 1000);
        let (x, y) = tokio::join!(s.ticker.turn(), ticker_b.turn());
        x.unwrap();
        y.unwrap();
    }
    let mut all = s.starter.ticks();
    all.extend(starter_b.ticks());
    all.sort();
    let expected: Vec<String> = (1..=40)
        .map(|t| format!("every {}", format_ms(T0 + t * 1000)))
        .collect();
    assert_eq!(all, expected, "each tick exactly once across both");
    let runs = a
        .list_workflows(&ListFilter {
            schedule: Some(s.id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 40);
    assert_eq!(s.schedule().await.fired, 40);

    // Clean up this test's keys.
    if let Ok(mut con) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", options.prefix))
            .query(&mut con)
            .unwrap_or_default();
        for key in keys {
            let _: Result<(), _> = redis::cmd("DEL").arg(key).query(&mut con);
        }
    }
}
