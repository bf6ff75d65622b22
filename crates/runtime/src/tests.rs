//! Runtime behaviour against the memory and SQLite stores with a test provider.

use super::*;
use async_trait::async_trait;
use gleitzeit_core::events::EventPayload;
use gleitzeit_core::parse;
use gleitzeit_core::TaskState;
use gleitzeit_providers::{CallContext, MethodInfo, Provider};
use gleitzeit_store::{MemoryStore, SqliteOptions, SqliteStore, Write};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// `test/echo` returns `value`; `test/flaky` fails until attempt `succeed_on`;
/// `test/fail` always fails; `test/sleep` sleeps `ms`. Every call is counted by task.
#[derive(Default)]
struct TestProvider {
    calls: Mutex<HashMap<String, u32>>,
    total: AtomicU32,
}

#[async_trait]
impl Provider for TestProvider {
    fn protocol(&self) -> &'static str {
        "test"
    }
    fn methods(&self) -> Vec<MethodInfo> {
        ["test/echo", "test/flaky", "test/fail", "test/sleep"]
            .iter()
            .map(|m| MethodInfo {
                method: m.to_string(),
                description: String::new(),
            })
            .collect()
    }
    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(ctx.task_id.clone())
            .or_default() += 1;
        self.total.fetch_add(1, Ordering::SeqCst);
        match method {
            "test/echo" => Ok(
                json!({"result": params.get("value").cloned().unwrap_or(Value::Null), "extra": 1}),
            ),
            "test/flaky" => {
                let succeed_on = params["succeed_on"].as_u64().unwrap_or(1) as u32;
                if ctx.attempt >= succeed_on {
                    Ok(json!({"result": ctx.attempt}))
                } else {
                    Err(GzError::new(
                        ErrorCode::TaskFailed,
                        format!("attempt {} failed", ctx.attempt),
                    ))
                }
            }
            "test/sleep" => {
                tokio::time::sleep(Duration::from_millis(params["ms"].as_u64().unwrap_or(10)))
                    .await;
                Ok(json!({"result": "slept"}))
            }
            _ => Err(GzError::new(ErrorCode::TaskFailed, "told to fail").retryable(false)),
        }
    }
}

fn runtime_with(store: Arc<dyn Store>) -> (Runtime, Arc<TestProvider>) {
    let provider = Arc::new(TestProvider::default());
    let mut registry = Registry::new();
    registry.register(provider.clone());
    let config = RuntimeConfig {
        cancel_poll: Duration::from_millis(20),
        ..RuntimeConfig::default()
    };
    (Runtime::new(store, registry, config), provider)
}

fn runtime() -> (Runtime, Arc<TestProvider>) {
    runtime_with(Arc::new(MemoryStore::new()))
}

fn workflow(rt: &Runtime, yaml: &str) -> Workflow {
    parse::load(yaml, "test.yaml", rt.registry(), &Map::new()).unwrap_or_else(|d| panic!("{d:#?}"))
}

async fn run_yaml(rt: &Runtime, yaml: &str) -> RunOutcome {
    let id = rt.submit(workflow(rt, yaml), None).await.unwrap();
    rt.run(&id, CancellationToken::new()).await.unwrap()
}

fn task<'a>(outcome: &'a RunOutcome, id: &str) -> &'a TaskRecord {
    outcome.tasks.iter().find(|t| t.task_id == id).unwrap()
}

#[tokio::test]
async fn results_flow_through_references_and_are_stored() {
    let (rt, _) = runtime();
    let outcome = run_yaml(
        &rt,
        r#"
name: chain
inputs: {word: hi}
tasks:
  - {id: a, method: test/echo, params: {value: {n: [1, 2, 3]}}}
  - {id: b, method: test/echo, dependencies: [a], params: {value: "${a.result.n[2]}"}}
  - {id: c, method: test/echo, dependencies: [b], params: {value: "${inputs.word} ${b} ${a.extra}"}}
"#,
    )
    .await;
    assert_eq!(outcome.state, WorkflowState::Completed);
    assert_eq!(
        task(&outcome, "b").result,
        Some(json!({"result": 3, "extra": 1}))
    );
    assert_eq!(
        task(&outcome, "c").result.as_ref().unwrap()["result"],
        json!("hi 3 1")
    );
    let stored = rt.store().tasks(&outcome.workflow_id).await.unwrap();
    assert_eq!(stored, outcome.tasks);
    let record = rt
        .store()
        .workflow(&outcome.workflow_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.state, WorkflowState::Completed);
    assert!(record.owner.is_none());
    let events = rt
        .store()
        .events(Some(&outcome.workflow_id), 0, 0)
        .await
        .unwrap();
    let kinds: Vec<&str> = events.iter().map(Event::kind).collect();
    assert_eq!(kinds.first(), Some(&"workflow_started"));
    assert_eq!(kinds.last(), Some(&"workflow_completed"));
    assert_eq!(kinds.iter().filter(|k| **k == "task_completed").count(), 3);
}

#[tokio::test]
async fn announced_events_carry_their_stored_sequence_numbers() {
    let (rt, _) = runtime();
    let mut live = rt.subscribe();
    let outcome = run_yaml(&rt, "name: e\ntasks:\n  - {id: a, method: test/echo}\n  - {id: b, method: test/echo, dependencies: [a]}\n").await;
    let mut announced = Vec::new();
    while let Ok(event) = live.try_recv() {
        announced.push(event);
    }
    assert!(announced.iter().all(|e| e.seq > 0));
    assert!(
        announced.windows(2).all(|w| w[0].seq < w[1].seq),
        "monotonic"
    );
    let stored = rt
        .store()
        .events(Some(&outcome.workflow_id), 0, 0)
        .await
        .unwrap();
    assert_eq!(
        stored, announced,
        "what was announced is exactly what was stored"
    );
}

#[tokio::test]
async fn retries_until_success_and_counts_attempts() {
    let (rt, provider) = runtime();
    let outcome = run_yaml(
        &rt,
        "name: r\ntasks:\n  - id: f\n    method: test/flaky\n    params: {succeed_on: 3}\n    retry: {max_attempts: 3, base_delay: 0.01, jitter: false}\n",
    )
    .await;
    assert_eq!(outcome.state, WorkflowState::Completed);
    assert_eq!(task(&outcome, "f").attempt, 3);
    assert_eq!(provider.calls.lock().unwrap()["f"], 3);
}

#[tokio::test]
async fn failure_stops_the_workflow_and_skips_dependants() {
    let (rt, provider) = runtime();
    let outcome = run_yaml(
        &rt,
        "name: s\ntasks:\n  - {id: bad, method: test/fail}\n  - {id: after, method: test/echo, dependencies: [bad]}\n",
    )
    .await;
    assert_eq!(outcome.state, WorkflowState::Failed);
    let error = outcome.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::TaskFailed);
    assert!(error.message.contains("bad"), "{}", error.message);
    assert_eq!(task(&outcome, "after").state, TaskState::Skipped);
    assert!(!provider.calls.lock().unwrap().contains_key("after"));
}

#[tokio::test]
async fn on_error_continue_exposes_the_error_to_dependants() {
    let (rt, _) = runtime();
    let outcome = run_yaml(
        &rt,
        "name: c\ntasks:\n  - {id: bad, method: test/fail, on_error: continue}\n  - {id: report, method: test/echo, dependencies: [bad], params: {value: '${bad.error.code}'}}\n",
    )
    .await;
    assert_eq!(outcome.state, WorkflowState::Completed);
    assert_eq!(
        task(&outcome, "report").result.as_ref().unwrap()["result"],
        json!("GZ2001")
    );
}

#[tokio::test]
async fn missing_field_fails_the_task_with_gz3020() {
    let (rt, _) = runtime();
    let outcome = run_yaml(
        &rt,
        "name: m\ntasks:\n  - {id: a, method: test/echo, params: {value: 1}}\n  - {id: b, method: test/echo, dependencies: [a], params: {value: '${a.nothing}'}}\n",
    )
    .await;
    assert_eq!(outcome.state, WorkflowState::Failed);
    let error = task(&outcome, "b").error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::ReferenceFieldMissing);
    assert!(error.message.contains("a.nothing"));
    assert!(error.hint.unwrap().contains("extra"));
}

#[tokio::test]
async fn timeout_is_a_retryable_gz2002() {
    let (rt, _) = runtime();
    let outcome = run_yaml(
        &rt,
        "name: t\ntasks:\n  - {id: slow, method: test/sleep, params: {ms: 5000}, timeout: 0.05}\n",
    )
    .await;
    assert_eq!(outcome.state, WorkflowState::Failed);
    let error = task(&outcome, "slow").error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::TaskTimeout);
    assert!(error.retryable);
}

#[tokio::test]
async fn cancelling_aborts_running_tasks_and_marks_everything_cancelled() {
    let (rt, _) = runtime();
    let id = rt
        .submit(
            workflow(
                &rt,
                "name: c\ntasks:\n  - {id: slow, method: test/sleep, params: {ms: 60000}}\n  - {id: next, method: test/echo, dependencies: [slow]}\n",
            ),
            None,
        )
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        // The scenario: the cancel arrives while `slow` runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.cancel();
    });
    let outcome = tokio::time::timeout(Duration::from_secs(10), rt.run(&id, cancel))
        .await
        .expect("cancel must not hang")
        .unwrap();
    assert_eq!(outcome.state, WorkflowState::Cancelled);
    assert!(outcome
        .tasks
        .iter()
        .all(|t| t.state == TaskState::Cancelled));
}

#[tokio::test]
async fn cancel_request_in_the_store_stops_a_run() {
    let (rt, _) = runtime();
    let id = rt
        .submit(
            workflow(
                &rt,
                "name: c\ntasks:\n  - {id: slow, method: test/sleep, params: {ms: 60000}}\n",
            ),
            None,
        )
        .await
        .unwrap();
    let store = rt.store().clone();
    let target = id.clone();
    tokio::spawn(async move {
        // The scenario: the request arrives while `slow` runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        store.request_cancel(&target).await.unwrap();
    });
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        rt.run(&id, CancellationToken::new()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(outcome.state, WorkflowState::Cancelled);
}

#[tokio::test]
async fn resume_keeps_completed_tasks_and_reruns_the_interrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("g.db"))).unwrap());
    let (rt, provider) = runtime_with(store.clone());
    let id = rt
        .submit(
            workflow(
                &rt,
                "name: r\ntasks:\n  - {id: a, method: test/echo, params: {value: 7}}\n  - {id: b, method: test/echo, dependencies: [a], params: {value: '${a}'}}\n  - {id: c, method: test/echo, dependencies: [b], params: {value: '${b}'}}\n",
            ),
            None,
        )
        .await
        .unwrap();
    // What a process killed while running `b` leaves behind.
    let mut tasks = store.tasks(&id).await.unwrap();
    tasks[0].state = TaskState::Completed;
    tasks[0].attempt = 1;
    tasks[0].result = Some(json!({"result": 7}));
    tasks[1].state = TaskState::Running;
    tasks[1].attempt = 1;
    store
        .apply(vec![
            Write::Task(tasks[0].clone()),
            Write::Task(tasks[1].clone()),
            Write::Workflow {
                id: id.clone(),
                state: WorkflowState::Running,
                at_ms: 1,
                error: None,
            },
        ])
        .await
        .unwrap();
    let dead = gleitzeit_store::Owner {
        host: current_owner().host,
        pid: 999_999_999,
    };
    store.claim(&id, None, Some(&dead)).await.unwrap();

    let outcome = rt.run(&id, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome.state, WorkflowState::Completed);
    let calls = provider.calls.lock().unwrap().clone();
    assert!(!calls.contains_key("a"), "completed task ran again");
    assert_eq!((calls["b"], calls["c"]), (1, 1));
    assert_eq!(task(&outcome, "b").attempt, 1);
    assert_eq!(
        task(&outcome, "c").result.as_ref().unwrap()["result"],
        json!(7)
    );

    // A finished workflow cannot be resumed.
    let again = rt.run(&id, CancellationToken::new()).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::WorkflowNotResumable);
}

#[tokio::test]
async fn a_live_owner_blocks_resume() {
    let (rt, _) = runtime();
    let id = rt
        .submit(
            workflow(&rt, "name: o\ntasks:\n  - {id: a, method: test/echo}\n"),
            None,
        )
        .await
        .unwrap();
    let alive = gleitzeit_store::Owner {
        host: current_owner().host,
        pid: 1,
    };
    rt.store().claim(&id, None, Some(&alive)).await.unwrap();
    let error = rt.run(&id, CancellationToken::new()).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::WorkflowNotResumable);
    assert!(error.message.contains("process 1"));
}

#[tokio::test]
async fn cancel_of_an_unowned_workflow_marks_it_cancelled() {
    let (rt, _) = runtime();
    let id = rt
        .submit(
            workflow(&rt, "name: u\ntasks:\n  - {id: a, method: test/echo}\n"),
            None,
        )
        .await
        .unwrap();
    let record = rt.cancel(&id).await.unwrap();
    assert_eq!(record.state, WorkflowState::Cancelled);
    assert_eq!(
        rt.store().tasks(&id).await.unwrap()[0].state,
        TaskState::Cancelled
    );
}

#[tokio::test]
async fn wide_fan_out_and_fan_in() {
    let (rt, provider) = runtime();
    let mut yaml = String::from("name: fan\ntasks:\n");
    for i in 0..300 {
        yaml.push_str(&format!(
            "  - {{id: t{i}, method: test/echo, params: {{value: {i}}}}}\n"
        ));
    }
    let deps: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    yaml.push_str(&format!(
        "  - {{id: join, method: test/echo, dependencies: [{}], params: {{value: '${{t299}}'}}}}\n",
        deps.join(", ")
    ));
    let outcome = run_yaml(&rt, &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Completed);
    assert_eq!(provider.total.load(Ordering::SeqCst), 301);
    assert_eq!(
        task(&outcome, "join").result.as_ref().unwrap()["result"],
        json!(299)
    );
}

fn llm_runtime(url: &str) -> Runtime {
    use gleitzeit_providers::llm::{Dialect, EndpointConfig, LlmConfig, LlmProvider};
    let config = LlmConfig {
        endpoints: vec![EndpointConfig {
            name: "double".into(),
            url: url.into(),
            kind: Some(Dialect::Ollama),
            ..EndpointConfig::default()
        }],
        health_interval_secs: 0.0,
        ..LlmConfig::default()
    };
    let mut registry = Registry::new();
    registry.register(Arc::new(LlmProvider::new(config, None).unwrap()));
    Runtime::new(
        Arc::new(MemoryStore::new()),
        registry,
        RuntimeConfig::default(),
    )
}

#[tokio::test]
async fn llm_tokens_are_announced_as_they_stream_and_stored() {
    use gleitzeit_testkit::{DoubleConfig, OllamaDouble};
    let server = OllamaDouble::start(DoubleConfig::default()).await.unwrap();
    let rt = llm_runtime(&server.url());
    let mut events = rt.subscribe();
    let outcome = run_yaml(
        &rt,
        "name: t\ntasks:\n  - {id: talk, method: llm/chat, params: {model: llama3.2, prompt: 'one two three four'}}\n",
    )
    .await;
    assert_eq!(outcome.state, WorkflowState::Completed);
    let mut tokens = String::new();
    let mut token_events = 0;
    let mut completed_after_tokens = false;
    while let Ok(event) = events.try_recv() {
        match &event.payload {
            EventPayload::LlmToken(token) => {
                assert_eq!(token.task.task_id, "talk");
                tokens.push_str(&token.token);
                token_events += 1;
            }
            EventPayload::TaskCompleted(_) => completed_after_tokens = token_events > 0,
            _ => {}
        }
    }
    assert!(token_events > 1);
    assert_eq!(tokens, "echo: one two three four");
    assert!(
        completed_after_tokens,
        "tokens stream before the task completes"
    );
    // Tokens are stored in chunks (a stream resumed by id gets them back as
    // tokens), all before the task's completion.
    let stored = rt
        .store()
        .events(Some(&outcome.workflow_id), 0, 0)
        .await
        .unwrap();
    let stored_tokens: Vec<_> = stored.iter().filter(|e| e.kind() == "llm_tokens").collect();
    assert!(!stored_tokens.is_empty() && stored_tokens.len() < token_events);
    assert!(stored.iter().all(|e| e.kind() != "llm_token"));
    let expanded: String = gleitzeit_core::events::expand_all(stored.clone())
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::LlmToken(token) => Some(token.token.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(expanded, tokens);
    let done = stored
        .iter()
        .find(|e| e.kind() == "task_completed")
        .unwrap()
        .seq;
    assert!(stored_tokens.iter().all(|e| e.seq > 0 && e.seq < done));
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
}

#[tokio::test]
async fn a_long_reply_is_stored_in_a_few_rows_and_expands_in_order() {
    use gleitzeit_testkit::{DoubleConfig, OllamaDouble};
    let server = OllamaDouble::start(DoubleConfig::default()).await.unwrap();
    let rt = llm_runtime(&server.url());
    let mut events = rt.subscribe();
    let words: Vec<String> = (0..499).map(|i| format!("w{i}")).collect();
    let yaml = format!(
        "name: t\ntasks:\n  - {{id: talk, method: llm/chat, params: {{model: llama3.2, prompt: '{}'}}}}\n",
        words.join(" ")
    );
    let outcome = run_yaml(&rt, &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Completed);
    let mut live = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.kind() == "llm_token" {
            live.push(event);
        }
    }
    let stored = rt
        .store()
        .events(Some(&outcome.workflow_id), 0, 0)
        .await
        .unwrap();
    let token_rows = stored.iter().filter(|e| e.kind() == "llm_tokens").count();
    let expanded: Vec<_> = gleitzeit_core::events::expand_all(stored)
        .into_iter()
        .filter(|e| e.kind() == "llm_token")
        .collect();
    assert_eq!(expanded.len(), 500, "one token per word plus `echo:`");
    // What a live watcher saw is exactly what a late reader gets, ids included.
    assert_eq!(expanded, live);
    let ids: Vec<String> = expanded.iter().map(|e| e.id()).collect();
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 500);
    println!("a 500-token reply: {token_rows} stored token rows (was 500)");
    assert!(
        token_rows <= 500 / crate::live::CHUNK_TOKENS + 4,
        "{token_rows} rows"
    );
}

#[tokio::test]
async fn cancelling_aborts_an_in_flight_llm_request() {
    use gleitzeit_testkit::{DoubleConfig, OllamaDouble};
    let server =
        OllamaDouble::start(DoubleConfig::default().with_token_delay(Duration::from_millis(300)))
            .await
            .unwrap();
    let rt = llm_runtime(&server.url());
    let id = rt
        .submit(
            workflow(&rt, "name: t\ntasks:\n  - {id: talk, method: llm/chat, params: {model: llama3.2, prompt: 'a b c d e f g h i j k l'}}\n"),
            None,
        )
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let stats_server = &server;
    let run = rt.run(&id, cancel);
    let watcher = async {
        while stats_server.stats().in_flight == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        trigger.cancel();
    };
    let (outcome, _) = tokio::join!(run, watcher);
    assert_eq!(outcome.unwrap().state, WorkflowState::Cancelled);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while server.stats().in_flight > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "request still streaming after cancel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_condition_skip_survives_resume_and_reads_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("g.db"))).unwrap());
    let (rt, provider) = runtime_with(store.clone());
    let id = rt
        .submit(
            workflow(
                &rt,
                "name: r\ntasks:\n  - {id: a, method: test/echo, when: 'false', params: {value: 1}}\n  - {id: b, method: test/echo, dependencies: [a], on_skip: run, params: {value: '${a}'}}\n",
            ),
            None,
        )
        .await
        .unwrap();
    // What a process killed right after skipping `a` leaves behind.
    let mut tasks = store.tasks(&id).await.unwrap();
    tasks[0].state = TaskState::Skipped;
    store
        .apply(vec![
            Write::Task(tasks[0].clone()),
            Write::Workflow {
                id: id.clone(),
                state: WorkflowState::Running,
                at_ms: 1,
                error: None,
            },
        ])
        .await
        .unwrap();
    let outcome = rt.run(&id, CancellationToken::new()).await.unwrap();
    assert_eq!(outcome.state, WorkflowState::Completed);
    assert!(!provider.calls.lock().unwrap().contains_key("a"));
    assert_eq!(
        task(&outcome, "b").result.as_ref().unwrap()["result"],
        Value::Null
    );
}

#[tokio::test]
async fn fan_out_respects_max_parallel_and_keeps_item_order() {
    let (rt, provider) = runtime();
    let started = std::time::Instant::now();
    let outcome = run_yaml(
        &rt,
        "name: f\ntasks:\n  - {id: s, method: test/sleep, for_each: range(6), max_parallel: 2, params: {ms: 50}}\n  - {id: e, method: test/echo, for_each: [x, y, z], params: {value: '${index}:${item}'}}\n",
    )
    .await;
    assert_eq!(outcome.state, WorkflowState::Completed);
    // Six 50 ms calls, two at a time: three rounds.
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(
        task(&outcome, "e").result.as_ref().unwrap()["result"],
        json!(["0:x", "1:y", "2:z"])
    );
    let calls = provider.calls.lock().unwrap().clone();
    assert_eq!(calls.get("s[5]"), Some(&1), "instances are named task[i]");
}

#[tokio::test]
async fn cache_hits_skip_the_provider_unless_disabled() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let (rt, provider) = runtime_with(store.clone());
    let yaml = "name: c\ntasks:\n  - {id: a, method: test/echo, cache: true, params: {value: 5}}\n";
    run_yaml(&rt, yaml).await;
    let second = run_yaml(&rt, yaml).await;
    assert_eq!(provider.total.load(Ordering::SeqCst), 1);
    let record = task(&second, "a").result.clone().unwrap();
    assert_eq!(
        (record["result"].clone(), record["cached"].clone()),
        (json!(5), json!(true))
    );
    let fresh = rt.clone().without_cache();
    let third = run_yaml(&fresh, yaml).await;
    assert_eq!(provider.total.load(Ordering::SeqCst), 2);
    assert_eq!(
        task(&third, "a").result.as_ref().unwrap().get("cached"),
        None
    );
    assert_eq!(
        store
            .cache_stats(gleitzeit_store::now_ms())
            .await
            .unwrap()
            .entries,
        1
    );
}
