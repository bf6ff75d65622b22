//! Property tests of the real runtime with the memory store: random DAGs with
//! random per-attempt outcomes (success, failure, retryable failure, slow) are
//! run for real, and the stored results are compared with the pure scheduler
//! driven on the same case.

use async_trait::async_trait;
use gleitzeit_core::scheduler::{Action, Input, Plan, PlanTask, Scheduler};
use gleitzeit_core::{
    parse, ErrorCode, GzError, OnError, OnSkip, Priority, RetryPolicy, TaskState, WorkflowState,
};
use gleitzeit_providers::{CallContext, MethodInfo, Provider, Registry};
use gleitzeit_runtime::{Runtime, RuntimeConfig};
use gleitzeit_store::MemoryStore;
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Success,
    Slow,
    Fail,
    RetryableFail,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Success => "ok",
            Outcome::Slow => "slow",
            Outcome::Fail => "fail",
            Outcome::RetryableFail => "retry",
        }
    }
}

#[derive(Debug, Clone)]
struct Spec {
    deps: Vec<usize>,
    on_error: OnError,
    on_skip: OnSkip,
    priority: Priority,
    max_attempts: u32,
    retry_on_code: bool,
    outcomes: Vec<Outcome>,
}

fn spec(n_before: usize) -> impl Strategy<Value = Spec> {
    (
        proptest::collection::vec(any::<bool>(), n_before),
        prop_oneof![
            Just(OnError::Stop),
            Just(OnError::Continue),
            Just(OnError::Skip),
            Just(OnError::Retry)
        ],
        prop_oneof![Just(OnSkip::Skip), Just(OnSkip::Run)],
        prop_oneof![
            Just(Priority::Low),
            Just(Priority::Normal),
            Just(Priority::High)
        ],
        1u32..4,
        any::<bool>(),
        proptest::collection::vec(
            prop_oneof![
                3 => Just(Outcome::Success),
                1 => Just(Outcome::Slow),
                1 => Just(Outcome::Fail),
                2 => Just(Outcome::RetryableFail),
            ],
            1..4,
        ),
    )
        .prop_map(
            |(mask, on_error, on_skip, priority, max_attempts, retry_on_code, outcomes)| Spec {
                deps: mask
                    .iter()
                    .enumerate()
                    .filter(|(_, on)| **on)
                    .map(|(i, _)| i)
                    .collect(),
                on_error,
                on_skip,
                priority,
                max_attempts,
                retry_on_code,
                outcomes,
            },
        )
}

fn case() -> impl Strategy<Value = (Vec<Spec>, usize)> {
    (1usize..8).prop_flat_map(|n| {
        let specs: Vec<_> = (0..n).map(spec).collect();
        (specs, 1usize..4)
    })
}

fn outcome_of(outcomes: &[Outcome], attempt: u32) -> Outcome {
    outcomes[(attempt as usize - 1).min(outcomes.len() - 1)]
}

fn policy(s: &Spec) -> RetryPolicy {
    RetryPolicy {
        max_attempts: s.max_attempts,
        base_delay: 0.002,
        max_delay: 0.01,
        strategy: Default::default(),
        jitter: false,
        retry_on: if s.retry_on_code {
            vec![ErrorCode::TaskFailed]
        } else {
            Vec::new()
        },
    }
}

fn yaml(specs: &[Spec]) -> String {
    let mut out = String::from("name: prop\ntasks:\n");
    for (i, s) in specs.iter().enumerate() {
        let deps: Vec<String> = s.deps.iter().map(|d| format!("t{d}")).collect();
        let outcomes: Vec<&str> = s.outcomes.iter().map(|o| o.name()).collect();
        let on_error = match s.on_error {
            OnError::Stop => "stop",
            OnError::Continue => "continue",
            OnError::Skip => "skip",
            OnError::Retry => "retry",
        };
        let on_skip = match s.on_skip {
            OnSkip::Skip => "skip",
            OnSkip::Run => "run",
        };
        let priority = match s.priority {
            Priority::Low => "low",
            Priority::High => "high",
            _ => "normal",
        };
        out.push_str(&format!(
            "  - id: t{i}\n    method: prop/step\n    dependencies: [{}]\n    on_error: {on_error}\n    on_skip: {on_skip}\n    priority: {priority}\n    params: {{outcomes: [{}]}}\n    retry: {{max_attempts: {}, base_delay: 0.002, max_delay: 0.01, jitter: false{}}}\n",
            deps.join(", "),
            outcomes.join(", "),
            s.max_attempts,
            if s.retry_on_code { ", retry_on: [GZ2001]" } else { "" },
        ));
    }
    out
}

/// `prop/step` does what its `outcomes` list says for the current attempt, and
/// records every call so duplicate or out-of-order starts can be detected.
#[derive(Default)]
struct StepProvider {
    log: Mutex<Vec<(String, u32, &'static str)>>,
}

#[async_trait]
impl Provider for StepProvider {
    fn protocol(&self) -> &'static str {
        "prop"
    }
    fn methods(&self) -> Vec<MethodInfo> {
        vec![MethodInfo {
            method: "prop/step".into(),
            description: String::new(),
        }]
    }
    async fn call(
        &self,
        _method: &str,
        params: Value,
        ctx: &CallContext,
    ) -> Result<Value, GzError> {
        self.log
            .lock()
            .unwrap()
            .push((ctx.task_id.clone(), ctx.attempt, "start"));
        let list = params["outcomes"].as_array().cloned().unwrap_or_default();
        let i = (ctx.attempt as usize - 1).min(list.len().saturating_sub(1));
        let what = list
            .get(i)
            .and_then(Value::as_str)
            .unwrap_or("ok")
            .to_string();
        let ms = if what == "slow" { 15 } else { 1 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.log
            .lock()
            .unwrap()
            .push((ctx.task_id.clone(), ctx.attempt, "end"));
        match what.as_str() {
            "fail" => Err(GzError::new(ErrorCode::TaskFailed, "told to fail").retryable(false)),
            "retry" => Err(GzError::new(ErrorCode::TaskFailed, "told to fail").retryable(true)),
            _ => Ok(json!({"task": ctx.task_id, "attempt": ctx.attempt})),
        }
    }
}

/// The pure scheduler on the same case, every call answered in FIFO order and
/// retries due at once.
fn pure(specs: &[Spec], limit: usize) -> (Vec<(TaskState, u32)>, WorkflowState) {
    let plan = Plan {
        tasks: specs
            .iter()
            .map(|s| PlanTask {
                deps: s.deps.clone(),
                priority: s.priority,
                lane: 0,
                on_error: s.on_error,
                retry: policy(s),
                on_skip: s.on_skip,
            })
            .collect(),
        lane_limits: vec![limit],
        global_limit: limit,
    };
    let mut sched = Scheduler::new(plan);
    let mut queue = VecDeque::from([Input::Start]);
    let mut attempts = vec![0; specs.len()];
    while let Some(input) = queue.pop_front() {
        for action in sched.handle(input) {
            match action {
                Action::Run { task, attempt } => {
                    attempts[task] = attempt;
                    queue.push_back(match outcome_of(&specs[task].outcomes, attempt) {
                        Outcome::Success | Outcome::Slow => Input::Succeeded { task },
                        o => Input::Failed {
                            task,
                            code: ErrorCode::TaskFailed,
                            retryable: o == Outcome::RetryableFail,
                        },
                    })
                }
                Action::Retry { task, .. } => queue.push_back(Input::RetryDue { task }),
                Action::Finished { state } => {
                    let states = (0..specs.len())
                        .map(|i| (sched.state(i), attempts[i]))
                        .collect();
                    return (states, state);
                }
                _ => {}
            }
        }
    }
    panic!("pure scheduler did not finish");
}

/// True when a failure with `on_error: stop/retry` happens in every run (the
/// set of tasks that get to run before the stop then depends on timing).
fn stops(specs: &[Spec], states: &[(TaskState, u32)]) -> bool {
    specs.iter().zip(states).any(|(s, (st, _))| {
        *st == TaskState::Failed && matches!(s.on_error, OnError::Stop | OnError::Retry)
    })
}

async fn run_case(specs: Vec<Spec>, limit: usize) {
    let provider = Arc::new(StepProvider::default());
    let mut registry = Registry::new();
    registry.register(provider.clone());
    let config = RuntimeConfig {
        max_concurrent_tasks: limit,
        default_lane_limit: limit,
        cancel_poll: Duration::from_millis(20),
        ..RuntimeConfig::default()
    };
    let rt = Runtime::new(Arc::new(MemoryStore::new()), registry, config);
    let text = yaml(&specs);
    let workflow = parse::load(&text, "prop.yaml", rt.registry(), &Map::new())
        .unwrap_or_else(|d| panic!("{text}\n{d:#?}"));
    let id = rt.submit(workflow, None).await.unwrap();
    let outcome = rt.run(&id, CancellationToken::new()).await.unwrap();

    let (expected, expected_state) = pure(&specs, limit);
    assert_eq!(outcome.state, expected_state, "{text}");
    let by_id: HashMap<&str, _> = outcome
        .tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t))
        .collect();
    // Every task ends in exactly one terminal state.
    for record in &outcome.tasks {
        assert!(record.state.is_terminal(), "{record:?}");
    }
    let log = provider.log.lock().unwrap().clone();
    // No task starts before its dependencies ended; attempts never overlap.
    for (i, s) in specs.iter().enumerate() {
        let me = format!("t{i}");
        let starts: Vec<usize> = log
            .iter()
            .enumerate()
            .filter(|(_, e)| e.0 == me && e.2 == "start")
            .map(|(k, _)| k)
            .collect();
        let attempts: Vec<u32> = log
            .iter()
            .filter(|e| e.0 == me && e.2 == "start")
            .map(|e| e.1)
            .collect();
        assert_eq!(
            attempts,
            (1..=attempts.len() as u32).collect::<Vec<_>>(),
            "{text}"
        );
        assert!(attempts.len() as u32 <= s.max_attempts);
        assert_eq!(by_id[me.as_str()].attempt, attempts.len() as u32, "{text}");
        for &d in &s.deps {
            let dep = format!("t{d}");
            let last_end = log
                .iter()
                .rposition(|e| e.0 == dep && e.2 == "end")
                .unwrap_or(0);
            for &k in &starts {
                assert!(k > last_end, "t{i} started before t{d} ended\n{text}");
            }
        }
    }
    // Results are identical to the pure scheduler's whenever they do not depend
    // on timing (no workflow-stopping failure).
    if !stops(&specs, &expected) {
        for (i, (state, attempt)) in expected.iter().enumerate() {
            let record = by_id[format!("t{i}").as_str()];
            assert_eq!(record.state, *state, "t{i}\n{text}");
            assert_eq!(record.attempt, *attempt, "t{i}\n{text}");
            if *state == TaskState::Completed {
                assert_eq!(
                    record.result,
                    Some(json!({"task": format!("t{i}"), "attempt": attempt}))
                );
            }
            if *state == TaskState::Failed {
                assert_eq!(record.error.as_ref().unwrap().code, ErrorCode::TaskFailed);
            }
        }
    } else {
        assert_eq!(outcome.state, WorkflowState::Failed);
        for record in &outcome.tasks {
            assert!(
                matches!(
                    record.state,
                    TaskState::Completed | TaskState::Failed | TaskState::Skipped
                ),
                "{record:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn runtime_matches_the_pure_scheduler((specs, limit) in case()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_case(specs, limit));
    }
}
