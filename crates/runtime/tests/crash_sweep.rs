//! The crash sweep: a workflow runs in a child process that dies (abort, as
//! a power cut or `kill -9` would leave it) at one crash point after another —
//! every durable step of the runtime and the SQLite store — and is resumed by
//! a fresh process. Whatever the point, the resumed run ends with the clean
//! run's states and results, and no task's completion is recorded twice.
//!
//! Needs the `failpoints` feature (the points compile to nothing without it):
//! `cargo test -p gleitzeit-runtime --features failpoints --test crash_sweep`.

use gleitzeit_core::events::EventPayload;
use gleitzeit_core::parse;
use gleitzeit_providers::function::FunctionProvider;
use gleitzeit_providers::llm::{Dialect, EndpointConfig, LlmConfig, LlmProvider};
use gleitzeit_providers::python::{PythonConfig, PythonProvider};
use gleitzeit_providers::Registry;
use gleitzeit_runtime::{Runtime, RuntimeConfig};
use gleitzeit_store::{ListFilter, RedisOptions, RedisStore, SqliteOptions, SqliteStore, Store};
use gleitzeit_testkit::{DoubleConfig, OllamaDouble, ToolTurn};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Every crash point of the runtime, in the order a run meets them.
const RUNTIME_POINTS: &[&str] = &[
    "runtime.claimed",
    "runtime.before_commit",
    "runtime.after_commit",
    "runtime.call_returned",
    "runtime.before_cache_put",
    "live.before_flush",
    "agent.before_turn",
    "agent.after_turn",
    "agent.between_tools",
];

/// Functions, a Python fan-out with a cached result per item, a fan-in, a
/// skipped task, a task that fails after a retry, an LLM call whose
/// tokens stream into the store, and an agent whose first turn calls two
/// tools at once.
const WORKFLOW: &str = r#"
name: crash-sweep
tasks:
  - id: fib
    method: fibonacci
    parameters: {kwargs: {n: 8}}
  - id: stats
    method: analyze_numbers
    dependencies: [fib]
    parameters: {kwargs: {numbers: "${fib.result}"}}
  - id: words
    method: count_words
    parameters: {text: "nothing is lost when a process dies"}
  - id: squares
    method: python/execute
    dependencies: [fib]
    for_each: "${fib.result}"
    max_parallel: 3
    cache: true
    parameters: {code: "result = ${item} ** 2"}
  - id: total
    method: sum
    dependencies: [squares]
    parameters: {numbers: "${squares.result}"}
  - id: never
    method: count_words
    dependencies: [total]
    when: "${total.result} < 0"
    parameters: {text: "skipped"}
  - id: flaky
    method: python/execute
    on_error: continue
    retry: {max_attempts: 2, base_delay: 0.05}
    parameters: {code: "raise ValueError('always')"}
  - id: ask
    method: llm/chat
    dependencies: [total]
    parameters: {model: llama3.2, prompt: "Say something about ${total.result}"}
  - id: agent
    method: llm/agent
    dependencies: [total]
    parameters:
      model: llama3.2
      prompt: "Look into ${total.result}"
      tools:
        - function: count_words
        - function: fibonacci
  - id: report
    method: python/execute
    dependencies: [stats, words, total, never, ask]
    on_skip: run
    parameters:
      code: |
        result = {"words": ${words.result.words}, "total": ${total.result}, "said": len("""${ask.response}""") > 0}
"#;

/// Where the child keeps its workflow: a SQLite file, or a Redis prefix.
#[derive(Clone, Copy)]
enum Backend<'a> {
    Sqlite(&'a Path),
    Redis(&'a str),
}

fn redis_url() -> String {
    std::env::var("GLEITZEIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The child: runs (or resumes) the one workflow in the store named by
/// CRASH_SWEEP_DB (a file) or CRASH_SWEEP_REDIS_PREFIX, dying where
/// FAILPOINTS says, and prints what it ended with.
#[test]
#[ignore = "the crash sweep's child process; the sweep runs it"]
fn child() {
    let db = std::env::var("CRASH_SWEEP_DB").ok();
    let prefix = std::env::var("CRASH_SWEEP_REDIS_PREFIX").ok();
    if db.is_none() && prefix.is_none() {
        return;
    }
    let scenario = fail::FailScenario::setup();
    // A crash point fires as a panic; the process dies on the spot, whichever thread it is on.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("crashing: {info}");
        std::process::abort();
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let summary = rt.block_on(async {
        let llm = OllamaDouble::start(
            DoubleConfig::default()
                .with_token_delay(std::time::Duration::from_millis(2))
                .with_tool_turns(vec![
                    ToolTurn::Call(vec![
                        ("count_words".into(), json!({"text": "a b c"})),
                        ("fibonacci".into(), json!({"n": 6})),
                    ]),
                    ToolTurn::Answer("It is 273.".into()),
                ]),
        )
        .await
        .unwrap();
        let store: Arc<dyn Store> = match (&db, &prefix) {
            (Some(db), _) => Arc::new(SqliteStore::open(SqliteOptions::new(db)).unwrap()),
            (None, Some(prefix)) => {
                let options = RedisOptions {
                    prefix: prefix.clone(),
                    ..RedisOptions::default()
                };
                Arc::new(RedisStore::connect(&redis_url(), options).await.unwrap())
            }
            (None, None) => unreachable!(),
        };
        run_or_resume(store, &llm.url()).await
    });
    println!("SUMMARY {summary}");
    scenario.teardown();
}

async fn run_or_resume(store: Arc<dyn Store>, llm_url: &str) -> Value {
    let mut registry = Registry::new();
    registry.register(Arc::new(FunctionProvider));
    registry.register(Arc::new(PythonProvider::new(PythonConfig::default())));
    let llm = LlmConfig {
        endpoints: vec![EndpointConfig {
            name: "double".into(),
            url: llm_url.into(),
            kind: Some(Dialect::Ollama),
            ..EndpointConfig::default()
        }],
        health_interval_secs: 0.0,
        ..LlmConfig::default()
    };
    registry.register(Arc::new(LlmProvider::new(llm, None).unwrap()));
    let runtime = Runtime::new(store.clone(), registry, RuntimeConfig::default());
    let existing = store
        .list_workflows(&ListFilter {
            limit: 10,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    let id = match existing.first() {
        Some(summary) => summary.id.clone(),
        None => {
            let workflow = parse::load(WORKFLOW, "crash.yaml", runtime.registry(), &Map::new())
                .unwrap_or_else(|d| panic!("{d:#?}"));
            runtime.submit(workflow, None).await.unwrap()
        }
    };
    let record = store.find_workflow(&id).await.unwrap();
    if !record.state.is_terminal() {
        runtime.run(&id, CancellationToken::new()).await.unwrap();
    }
    summarize(store.as_ref(), &id).await
}

/// States and results per task, and how often each task's completion (and
/// each instance's) was recorded.
async fn summarize(store: &dyn Store, id: &str) -> Value {
    let record = store.find_workflow(id).await.unwrap();
    let mut tasks = BTreeMap::new();
    for task in store.tasks(id).await.unwrap() {
        tasks.insert(
            task.task_id.clone(),
            json!({
                "state": task.state.as_str(),
                "result": task.result.map(steady),
                "error": task.error.as_ref().map(|e| e.code.as_str()),
            }),
        );
    }
    let mut completions: BTreeMap<String, u64> = BTreeMap::new();
    // How often each agent step was committed: a turn sent again or a tool
    // run again after a crash would show as a 2.
    let mut agent_steps: BTreeMap<String, u64> = BTreeMap::new();
    let mut tokens = 0;
    let mut after = 0;
    loop {
        let events = store.events(Some(id), after, 1000).await.unwrap();
        let Some(last) = events.last() else { break };
        after = last.seq;
        for event in &events {
            match &event.payload {
                EventPayload::TaskCompleted(completed) => {
                    *completions
                        .entry(completed.task.task_id.clone())
                        .or_default() += 1;
                }
                EventPayload::LlmTokens(_) | EventPayload::LlmToken(_) => tokens += 1,
                EventPayload::AgentTurn(turn) => {
                    *agent_steps
                        .entry(format!("turn {}", turn.turn))
                        .or_default() += 1;
                }
                EventPayload::ToolCallCompleted(call) => {
                    *agent_steps
                        .entry(format!("call {}", call.call_id))
                        .or_default() += 1;
                }
                _ => {}
            }
        }
    }
    json!({
        "state": record.state.as_str(),
        "tasks": tasks,
        "completions": completions,
        "agent_steps": agent_steps,
        "streamed_tokens": tokens > 0,
    })
}

/// A result without what differs between two runs of the same work: timings.
fn steady(mut value: Value) -> Value {
    if let Some(object) = value.as_object_mut() {
        object.retain(|key, _| !key.ends_with("_ms") && !key.contains("duration"));
        for (_, inner) in object.iter_mut() {
            *inner = steady(inner.take());
        }
    }
    if let Some(items) = value.as_array_mut() {
        for inner in items.iter_mut() {
            *inner = steady(inner.take());
        }
    }
    value
}

fn child_process(backend: Backend, failpoints: Option<&str>) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_remove("CRASH_SWEEP_DB")
        .env_remove("CRASH_SWEEP_REDIS_PREFIX")
        .env_remove("FAILPOINTS");
    match backend {
        Backend::Sqlite(db) => command.env("CRASH_SWEEP_DB", db),
        Backend::Redis(prefix) => command.env("CRASH_SWEEP_REDIS_PREFIX", prefix),
    };
    if let Some(failpoints) = failpoints {
        command.env("FAILPOINTS", failpoints);
    }
    command.output().unwrap()
}

fn summary_of(output: &Output) -> Option<Value> {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.split_once("SUMMARY ").map(|(_, json)| json))
        .map(|json| serde_json::from_str(json).unwrap())
}

#[test]
fn every_crash_point_resumes_to_the_clean_result_on_sqlite() {
    sweep(&["sqlite.before_commit", "sqlite.after_commit"], |run| {
        let dir = tempfile::tempdir().unwrap();
        run(Backend::Sqlite(&dir.path().join("g.db")))
    });
}

#[test]
fn every_crash_point_resumes_to_the_clean_result_on_redis() {
    sweep(&["redis.before_write", "redis.after_write"], |run| {
        let prefix = format!(
            "gz-test-crash-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let summary = run(Backend::Redis(&prefix));
        let mut conn = redis::Client::open(redis_url())
            .and_then(|c| c.get_connection())
            .unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut conn)
            .unwrap();
        for chunk in keys.chunks(500) {
            let _: () = redis::cmd("DEL").arg(chunk).query(&mut conn).unwrap();
        }
        summary
    });
}

/// What one scenario ended with: whether its first process crashed, and the
/// summary of the run that finished it.
type Scenario = (bool, Output, Option<Value>);

/// Runs the clean scenario, then one per crash point and hit. `fresh` gives
/// each scenario its own empty store and removes it afterwards.
fn sweep(store_points: &[&str], fresh: impl Fn(&dyn Fn(Backend) -> Scenario) -> Scenario) {
    let (_, clean_run, clean) = fresh(&|backend| {
        let output = child_process(backend, None);
        let summary = summary_of(&output);
        (false, output, summary)
    });
    let clean = clean.unwrap_or_else(|| {
        panic!(
            "the clean run printed no summary: {}",
            String::from_utf8_lossy(&clean_run.stderr)
        )
    });
    assert_eq!(
        clean["tasks"]["total"]["result"]["result"],
        json!(273),
        "{clean}"
    );
    assert_eq!(clean["tasks"]["never"]["state"], "skipped", "{clean}");
    assert_eq!(clean["tasks"]["flaky"]["state"], "failed", "{clean}");
    assert_eq!(clean["streamed_tokens"], true, "{clean}");
    assert_eq!(clean["tasks"]["agent"]["state"], "completed", "{clean}");
    assert_eq!(clean["tasks"]["agent"]["result"]["turns"], 2, "{clean}");
    assert_eq!(
        clean["agent_steps"].as_object().map(|s| s.len()),
        Some(4),
        "two turns, two calls: {clean}"
    );
    for (step, count) in clean["agent_steps"].as_object().unwrap() {
        assert_eq!(count, 1, "{step} in the clean run: {clean}");
    }
    for (task, count) in clean["completions"].as_object().unwrap() {
        assert_eq!(count, 1, "{task} in the clean run: {clean}");
    }

    let mut crashed_at = Vec::new();
    for point in RUNTIME_POINTS.iter().chain(store_points) {
        // At its first hit (each point must be reached), then at every later
        // one until the run gets through without meeting it again.
        for skip in 0usize.. {
            let failpoints = format!("{point}={skip}*off->panic");
            let (crashed, first, summary) = fresh(&|backend| {
                let first = child_process(backend, Some(&failpoints));
                if first.status.success() {
                    let summary = summary_of(&first);
                    return (false, first, summary);
                }
                assert!(
                    String::from_utf8_lossy(&first.stderr).contains("crashing"),
                    "{failpoints}: died of something else: {}",
                    String::from_utf8_lossy(&first.stderr)
                );
                let resumed = child_process(backend, None);
                let summary = summary_of(&resumed);
                (true, resumed, summary)
            });
            if skip == 0 {
                assert!(
                    crashed,
                    "{point} was never reached: {}",
                    String::from_utf8_lossy(&first.stdout)
                );
            }
            if crashed {
                crashed_at.push(format!("{point}#{}", skip + 1));
            }
            let summary = summary.unwrap_or_else(|| {
                panic!(
                    "resuming after a crash at {point} (hit {}) failed: {}",
                    skip + 1,
                    String::from_utf8_lossy(&first.stderr)
                )
            });
            assert_eq!(
                summary,
                clean,
                "after a crash at {point} (hit {})",
                skip + 1
            );
            if !crashed {
                break;
            }
        }
    }
    eprintln!(
        "crashed and resumed {} times: {}",
        crashed_at.len(),
        crashed_at.join(", ")
    );
}

/// The tick sweep's child: registers an every-1s schedule (once) and runs
/// the ticker's turn at 1 s with a clock of its own; in phase 2 also at 2 s.
/// Prints how many runs each tick has.
#[test]
#[ignore = "the tick sweep's child process; the sweep runs it"]
fn tick_child() {
    let Ok(db) = std::env::var("TICK_SWEEP_DB") else {
        return;
    };
    let phase2 = std::env::var("TICK_SWEEP_PHASE").as_deref() == Ok("2");
    let scenario = fail::FailScenario::setup();
    std::panic::set_hook(Box::new(|info| {
        eprintln!("crashing: {info}");
        std::process::abort();
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let summary = rt.block_on(async {
        use gleitzeit_runtime::schedules::{register, Clock, RunStarter, Ticker};
        const T0: i64 = 1_767_225_600_000;
        struct At(i64);
        impl Clock for At {
            fn now_ms(&self) -> i64 {
                self.0
            }
        }
        struct Submit(Runtime);
        #[async_trait::async_trait]
        impl RunStarter for Submit {
            async fn start(
                &self,
                workflow: gleitzeit_core::Workflow,
                source: Option<String>,
                by: Option<String>,
            ) -> Result<String, gleitzeit_core::GzError> {
                self.0.submit_as(workflow, source, by).await
            }
            async fn cancel(&self, _: &str) -> Result<(), gleitzeit_core::GzError> {
                Ok(())
            }
        }
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteOptions::new(&db)).unwrap());
        let mut registry = Registry::new();
        registry.register(Arc::new(FunctionProvider));
        let runtime = Runtime::new(store.clone(), registry, RuntimeConfig::default());
        if store.schedules().await.unwrap().is_empty() {
            let workflow = parse::load(
                "name: ticking\ntriggers:\n  - every: 1s\n    overlap: allow_all\ntasks:\n  - id: a\n    method: fibonacci\n    parameters: {n: 3}\n",
                "tick.yaml",
                runtime.registry(),
                &Map::new(),
            )
            .unwrap();
            let triggers = workflow.triggers.clone();
            register(store.as_ref(), &workflow, &triggers, None, None, T0)
                .await
                .unwrap();
        }
        let mut times = vec![T0 + 1000];
        if phase2 {
            times.push(T0 + 2000);
        }
        for now in times {
            let ticker = Ticker::new(
                store.clone(),
                Arc::new(At(now)),
                Arc::new(Submit(runtime.clone())),
            );
            ticker.turn().await.unwrap();
        }
        let mut ticks: BTreeMap<String, u64> = BTreeMap::new();
        for summary in store.list_workflows(&ListFilter::default()).await.unwrap() {
            let run = store.workflow(&summary.id).await.unwrap().unwrap();
            *ticks.entry(run.spec.trigger.unwrap().tick).or_default() += 1;
        }
        let schedule = &store.schedules().await.unwrap()[0];
        json!({"ticks": ticks, "fired": schedule.fired})
    });
    println!("SUMMARY {summary}");
    scenario.teardown();
}

fn tick_child_process(db: &Path, phase2: bool, failpoints: Option<&str>) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "tick_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TICK_SWEEP_DB", db)
        .env("TICK_SWEEP_PHASE", if phase2 { "2" } else { "1" })
        .env_remove("CRASH_SWEEP_DB")
        .env_remove("CRASH_SWEEP_REDIS_PREFIX")
        .env_remove("FAILPOINTS");
    if let Some(failpoints) = failpoints {
        command.env("FAILPOINTS", failpoints);
    }
    command.output().unwrap()
}

/// A scheduler killed at any durable step of a tick, then restarted: the
/// tick has at most one run (a claim committed before the crash loses it,
/// one not committed fires it on restart), and the next tick fires once.
#[test]
fn a_crash_at_a_tick_never_fires_it_twice() {
    let mut crashed = 0;
    for point in [
        "ticker.claimed",
        "sqlite.before_commit",
        "sqlite.after_commit",
    ] {
        for skip in 0usize.. {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("g.db");
            let failpoints = format!("{point}={skip}*off->panic");
            let first = tick_child_process(&db, false, Some(&failpoints));
            if first.status.success() {
                break;
            }
            assert!(
                String::from_utf8_lossy(&first.stderr).contains("crashing"),
                "{failpoints}: died of something else: {}",
                String::from_utf8_lossy(&first.stderr)
            );
            crashed += 1;
            let resumed = tick_child_process(&db, true, None);
            let summary = summary_of(&resumed).unwrap_or_else(|| {
                panic!(
                    "{failpoints}: the restart printed no summary: {}",
                    String::from_utf8_lossy(&resumed.stderr)
                )
            });
            let ticks = summary["ticks"].as_object().unwrap();
            for (tick, runs) in ticks {
                assert_eq!(
                    runs.as_u64(),
                    Some(1),
                    "{failpoints}: tick {tick} ran {runs} times: {summary}"
                );
            }
            assert_eq!(
                ticks.get("2026-01-01T00:00:02.000Z"),
                Some(&json!(1)),
                "{failpoints}: the next tick fires once: {summary}"
            );
            assert!(
                summary["fired"].as_u64().unwrap() >= ticks.len() as u64,
                "{summary}"
            );
        }
    }
    assert!(crashed >= 4, "the sweep crashed only {crashed} times");
}
