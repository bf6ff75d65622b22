//! Property tests of the pure scheduler: random DAGs with random per-attempt
//! outcomes (success, failure, retryable failure, slow) are driven through
//! `Scheduler::handle` on a virtual clock, and the transcript is checked
//! against the invariants the runtime relies on.

use gleitzeit_core::model::Backoff;
use gleitzeit_core::scheduler::{Action, Input, Plan, PlanTask, Scheduler};
use gleitzeit_core::{ErrorCode, OnError, OnSkip, Priority, RetryPolicy, TaskState, WorkflowState};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// What one attempt of a task does.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Success,
    /// Takes ten times as long as a normal attempt, then succeeds.
    Slow,
    Fail,
    RetryableFail,
}

#[derive(Debug, Clone)]
struct Case {
    tasks: Vec<(PlanTask, Vec<Outcome>)>,
    lane_limits: Vec<usize>,
    global_limit: usize,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Success),
        1 => Just(Outcome::Slow),
        1 => Just(Outcome::Fail),
        2 => Just(Outcome::RetryableFail),
    ]
}

fn task(n_before: usize) -> impl Strategy<Value = (PlanTask, Vec<Outcome>)> {
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
            Just(Priority::High),
            Just(Priority::Urgent)
        ],
        0usize..3,
        1u32..5,
        prop_oneof![
            Just(Backoff::Exponential),
            Just(Backoff::Linear),
            Just(Backoff::Fixed)
        ],
        1u32..8,
        any::<bool>(),
        proptest::collection::vec(outcome(), 1..5),
    )
        .prop_map(
            |(
                dep_mask,
                on_error,
                on_skip,
                priority,
                lane,
                max_attempts,
                strategy,
                base,
                retry_on_code,
                outcomes,
            )| {
                let deps = dep_mask
                    .iter()
                    .enumerate()
                    .filter(|(_, on)| **on)
                    .map(|(i, _)| i)
                    .collect();
                let retry = RetryPolicy {
                    max_attempts,
                    base_delay: f64::from(base),
                    max_delay: 20.0,
                    strategy,
                    jitter: false,
                    retry_on: if retry_on_code {
                        vec![ErrorCode::TaskFailed]
                    } else {
                        Vec::new()
                    },
                };
                (
                    PlanTask {
                        deps,
                        priority,
                        lane,
                        on_error,
                        retry,
                        on_skip,
                    },
                    outcomes,
                )
            },
        )
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..10)
        .prop_flat_map(|n| {
            let tasks: Vec<_> = (0..n)
                .map(|i| task(i.min(6)).prop_map(move |t| shift(t, i)).boxed())
                .collect();
            (tasks, proptest::collection::vec(1usize..4, 3), 1usize..5)
        })
        .prop_map(|(tasks, lane_limits, global_limit)| Case {
            tasks,
            lane_limits,
            global_limit,
        })
}

/// Dependencies are drawn among the (up to six) tasks just before `i`.
fn shift(mut t: (PlanTask, Vec<Outcome>), i: usize) -> (PlanTask, Vec<Outcome>) {
    let offset = i.saturating_sub(6);
    for d in &mut t.0.deps {
        *d += offset;
    }
    t
}

fn outcome_of(outcomes: &[Outcome], attempt: u32) -> Outcome {
    outcomes[(attempt as usize - 1).min(outcomes.len() - 1)]
}

fn is_failure(o: Outcome) -> bool {
    matches!(o, Outcome::Fail | Outcome::RetryableFail)
}

/// The final state a task must reach, computed without the scheduler, for
/// workflows where no failure stops the whole workflow.
fn oracle(case: &Case) -> Option<Vec<(TaskState, u32)>> {
    let mut out: Vec<(TaskState, u32)> = Vec::new();
    for (t, outcomes) in &case.tasks {
        let skipped = t.deps.iter().any(|&d| {
            let dep = &case.tasks[d].0;
            match out[d].0 {
                TaskState::Failed => dep.on_error == OnError::Skip,
                TaskState::Skipped => t.on_skip == OnSkip::Skip,
                _ => false,
            }
        });
        if skipped {
            out.push((TaskState::Skipped, 0));
            continue;
        }
        let mut attempt = 1;
        let state = loop {
            let o = outcome_of(outcomes, attempt);
            if !is_failure(o) {
                break TaskState::Completed;
            }
            let retryable = o == Outcome::RetryableFail;
            if t.retry
                .should_retry(ErrorCode::TaskFailed, retryable, attempt)
            {
                attempt += 1;
            } else {
                break TaskState::Failed;
            }
        };
        if state == TaskState::Failed && matches!(t.on_error, OnError::Stop | OnError::Retry) {
            return None;
        }
        out.push((state, attempt));
    }
    Some(out)
}

struct Transcript {
    states: Vec<TaskState>,
    attempts: Vec<u32>,
    finished: Option<WorkflowState>,
}

/// Drives the scheduler on a virtual clock and checks the per-step invariants.
fn simulate(case: &Case, cancel_at: Option<u64>) -> Transcript {
    let plan = Plan {
        tasks: case.tasks.iter().map(|(t, _)| t.clone()).collect(),
        lane_limits: case.lane_limits.clone(),
        global_limit: case.global_limit,
    };
    let n = plan.tasks.len();
    let mut sched = Scheduler::new(plan.clone());
    // (time, seq) → input
    let mut queue: BTreeMap<(u64, u64), Input> = BTreeMap::new();
    let mut seq = 0u64;
    let mut now = 0u64;
    let mut terminal: Vec<Option<TaskState>> = vec![None; n];
    let mut attempts = vec![0u32; n];
    let mut running = vec![false; n];
    let mut finished = None;
    let mut stopped = false;
    let mut pending_cancel = cancel_at;
    let mut inputs = vec![Input::Start];
    loop {
        for input in inputs.drain(..) {
            let actions = sched.handle(input);
            for action in actions {
                assert!(finished.is_none(), "action {action:?} after Finished");
                match action {
                    Action::Run { task, attempt } => {
                        assert!(!stopped, "task {task} started after the workflow stopped");
                        assert!(terminal[task].is_none(), "terminal task {task} ran again");
                        assert!(!running[task], "task {task} started twice at once");
                        assert_eq!(
                            attempt,
                            attempts[task] + 1,
                            "attempts of {task} are sequential"
                        );
                        assert!(attempt <= plan.tasks[task].retry.max_attempts.max(1));
                        for &d in &plan.tasks[task].deps {
                            let ok = match terminal[d] {
                                Some(TaskState::Completed) => true,
                                Some(TaskState::Failed) => {
                                    plan.tasks[d].on_error == OnError::Continue
                                }
                                Some(TaskState::Skipped) => plan.tasks[task].on_skip == OnSkip::Run,
                                _ => false,
                            };
                            assert!(
                                ok,
                                "task {task} started before dependency {d} ended acceptably ({:?})",
                                terminal[d]
                            );
                        }
                        attempts[task] = attempt;
                        running[task] = true;
                        let running_now = running.iter().filter(|r| **r).count();
                        assert!(
                            running_now <= case.global_limit.max(1),
                            "global limit exceeded"
                        );
                        let lane = plan.tasks[task].lane;
                        let in_lane = (0..n)
                            .filter(|&i| running[i] && plan.tasks[i].lane == lane)
                            .count();
                        assert!(
                            in_lane <= case.lane_limits[lane].max(1),
                            "lane limit exceeded"
                        );
                        let o = outcome_of(&case.tasks[task].1, attempt);
                        let (delay, input) = match o {
                            Outcome::Success => (1, Input::Succeeded { task }),
                            Outcome::Slow => (10, Input::Succeeded { task }),
                            Outcome::Fail => (
                                1,
                                Input::Failed {
                                    task,
                                    code: ErrorCode::TaskFailed,
                                    retryable: false,
                                },
                            ),
                            Outcome::RetryableFail => (
                                2,
                                Input::Failed {
                                    task,
                                    code: ErrorCode::TaskFailed,
                                    retryable: true,
                                },
                            ),
                        };
                        seq += 1;
                        queue.insert((now + delay, seq), input);
                    }
                    Action::Retry {
                        task,
                        next_attempt,
                        delay,
                    } => {
                        assert!(running[task]);
                        running[task] = false;
                        let o = outcome_of(&case.tasks[task].1, attempts[task]);
                        assert!(is_failure(o), "retry after success");
                        let policy = &plan.tasks[task].retry;
                        assert!(policy.should_retry(
                            ErrorCode::TaskFailed,
                            o == Outcome::RetryableFail,
                            attempts[task]
                        ));
                        assert_eq!(next_attempt, attempts[task] + 1);
                        assert_eq!(delay, policy.base_delay_after(attempts[task]));
                        assert!(delay <= Duration::from_secs_f64(policy.max_delay));
                        seq += 1;
                        queue.insert(
                            (now + delay.as_secs().max(1) * 10, seq),
                            Input::RetryDue { task },
                        );
                    }
                    Action::Completed { task } => {
                        assert!(running[task]);
                        running[task] = false;
                        assert!(
                            terminal[task].replace(TaskState::Completed).is_none(),
                            "two terminal states for {task}"
                        );
                    }
                    Action::Failed { task } => {
                        assert!(running[task]);
                        running[task] = false;
                        let o = outcome_of(&case.tasks[task].1, attempts[task]);
                        assert!(is_failure(o));
                        assert!(
                            terminal[task].replace(TaskState::Failed).is_none(),
                            "two terminal states for {task}"
                        );
                        if matches!(plan.tasks[task].on_error, OnError::Stop | OnError::Retry) {
                            stopped = true;
                        }
                    }
                    Action::Skipped { task, cause } => {
                        assert!(!running[task]);
                        assert!(
                            terminal[task].replace(TaskState::Skipped).is_none(),
                            "two terminal states for {task}"
                        );
                        if let Some(c) = cause {
                            assert!(terminal[c].is_some(), "skip caused by unfinished {c}");
                        }
                    }
                    Action::Cancelled { task } => {
                        running[task] = false;
                        assert!(
                            terminal[task].replace(TaskState::Cancelled).is_none(),
                            "two terminal states for {task}"
                        );
                    }
                    Action::Abort { task } => {
                        assert!(running[task]);
                        seq += 1;
                        queue.insert((now, seq), Input::Aborted { task });
                    }
                    Action::Finished { state } => {
                        assert!(running.iter().all(|r| !r), "finished with tasks running");
                        finished = Some(state);
                    }
                }
            }
        }
        if finished.is_some() {
            break;
        }
        let next = queue.keys().next().copied();
        if let Some(at) = pending_cancel {
            if next.is_none_or(|(t, _)| t >= at) {
                now = now.max(at);
                pending_cancel = None;
                inputs.push(Input::Cancel);
                continue;
            }
        }
        let Some(key) = next else {
            panic!("scheduler stalled: nothing queued, not finished; states {terminal:?}");
        };
        now = key.0;
        inputs.push(queue.remove(&key).unwrap());
    }
    for (i, t) in terminal.iter().enumerate() {
        assert!(t.is_some(), "task {i} never reached a terminal state");
        assert_eq!(Some(sched.state(i)), *t);
    }
    Transcript {
        states: terminal.into_iter().map(Option::unwrap).collect(),
        attempts,
        finished,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_task_ends_once_in_dependency_order(case in case()) {
        let t = simulate(&case, None);
        let state = t.finished.expect("finished");
        let stopped = case.tasks.iter().zip(&t.states).any(|((task, _), s)| {
            *s == TaskState::Failed && matches!(task.on_error, OnError::Stop | OnError::Retry)
        });
        prop_assert_eq!(state == WorkflowState::Failed, stopped);
        prop_assert!(!t.states.contains(&TaskState::Cancelled));
        match oracle(&case) {
            Some(expected) => {
                prop_assert_eq!(state, WorkflowState::Completed);
                for (i, (s, a)) in expected.iter().enumerate() {
                    prop_assert_eq!(t.states[i], *s, "state of task {}", i);
                    if *s != TaskState::Skipped {
                        prop_assert_eq!(t.attempts[i], *a, "attempts of task {}", i);
                    }
                }
            }
            None => prop_assert_eq!(state, WorkflowState::Failed),
        }
    }

    #[test]
    fn cancel_at_any_time_ends_every_task_once(case in case(), at in 0u64..60) {
        let t = simulate(&case, Some(at));
        let state = t.finished.expect("finished");
        if t.states.contains(&TaskState::Cancelled) {
            prop_assert_eq!(state, WorkflowState::Cancelled);
        }
    }

    /// Resume = run: restoring the terminal states of a finished run and
    /// starting again decides nothing new.
    #[test]
    fn restoring_a_finished_run_runs_nothing(case in case()) {
        let t = simulate(&case, None);
        let plan = Plan {
            tasks: case.tasks.iter().map(|(t, _)| t.clone()).collect(),
            lane_limits: case.lane_limits.clone(),
            global_limit: case.global_limit,
        };
        let mut again = Scheduler::new(plan);
        for (i, s) in t.states.iter().enumerate() {
            again.restore(i, *s, t.attempts[i]);
        }
        let actions = again.handle(Input::Start);
        prop_assert_eq!(actions.len(), 1, "{:?}", actions);
        let finished = matches!(actions[0], Action::Finished { .. });
        prop_assert!(finished);
    }
}
