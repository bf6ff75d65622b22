use super::*;
use expect_test::{expect, Expect};

fn task(deps: &[TaskIdx]) -> PlanTask {
    PlanTask {
        deps: deps.to_vec(),
        priority: Priority::Normal,
        lane: 0,
        on_error: OnError::Stop,
        retry: RetryPolicy::default(),
        on_skip: OnSkip::Skip,
    }
}

fn plan(tasks: Vec<PlanTask>, limit: usize) -> Plan {
    Plan {
        tasks,
        lane_limits: vec![limit, limit],
        global_limit: usize::MAX,
    }
}

/// Runs inputs through a scheduler and prints the transcript.
fn transcript(plan: Plan, inputs: &[Input]) -> String {
    let mut scheduler = Scheduler::new(plan);
    let mut out = String::new();
    for input in std::iter::once(&Input::Start).chain(inputs) {
        out.push_str(&format!("{input:?}\n"));
        for action in scheduler.handle(input.clone()) {
            out.push_str(&format!("  {action:?}\n"));
        }
    }
    out
}

fn check(plan: Plan, inputs: &[Input], expected: Expect) {
    expected.assert_eq(&transcript(plan, inputs));
}

fn ok(task: TaskIdx) -> Input {
    Input::Succeeded { task }
}

fn fail(task: TaskIdx) -> Input {
    Input::Failed {
        task,
        code: ErrorCode::PythonException,
        retryable: true,
    }
}

#[test]
fn diamond_runs_ready_tasks_together_then_joins() {
    check(
        plan(vec![task(&[]), task(&[0]), task(&[0]), task(&[1, 2])], 8),
        &[ok(0), ok(2), ok(1), ok(3)],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
            Succeeded { task: 0 }
              Completed { task: 0 }
              Run { task: 1, attempt: 1 }
              Run { task: 2, attempt: 1 }
            Succeeded { task: 2 }
              Completed { task: 2 }
            Succeeded { task: 1 }
              Completed { task: 1 }
              Run { task: 3, attempt: 1 }
            Succeeded { task: 3 }
              Completed { task: 3 }
              Finished { state: Completed }
        "#]],
    );
}

#[test]
fn priority_then_file_order_within_a_lane_limit() {
    let mut tasks = vec![task(&[]), task(&[]), task(&[]), task(&[])];
    tasks[2].priority = Priority::Urgent;
    tasks[3].priority = Priority::High;
    check(
        plan(tasks, 1),
        &[ok(2), ok(3), ok(0), ok(1)],
        expect![[r#"
            Start
              Run { task: 2, attempt: 1 }
            Succeeded { task: 2 }
              Completed { task: 2 }
              Run { task: 3, attempt: 1 }
            Succeeded { task: 3 }
              Completed { task: 3 }
              Run { task: 0, attempt: 1 }
            Succeeded { task: 0 }
              Completed { task: 0 }
              Run { task: 1, attempt: 1 }
            Succeeded { task: 1 }
              Completed { task: 1 }
              Finished { state: Completed }
        "#]],
    );
}

#[test]
fn lanes_limit_independently() {
    let mut tasks = vec![task(&[]), task(&[]), task(&[]), task(&[])];
    tasks[2].lane = 1;
    tasks[3].lane = 1;
    let mut p = plan(tasks, 1);
    p.lane_limits = vec![1, 2];
    check(
        p,
        &[],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
              Run { task: 2, attempt: 1 }
              Run { task: 3, attempt: 1 }
        "#]],
    );
}

#[test]
fn retries_follow_the_policy_then_fail_and_stop_the_workflow() {
    let mut tasks = vec![task(&[]), task(&[0]), task(&[])];
    tasks[0].retry = RetryPolicy {
        max_attempts: 3,
        base_delay: 1.0,
        max_delay: 60.0,
        jitter: false,
        ..RetryPolicy::default()
    };
    check(
        plan(tasks, 4),
        &[
            fail(0),
            Input::RetryDue { task: 0 },
            fail(0),
            Input::RetryDue { task: 0 },
            fail(0),
            ok(2),
        ],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
              Run { task: 2, attempt: 1 }
            Failed { task: 0, code: PythonException, retryable: true }
              Retry { task: 0, next_attempt: 2, delay: 1s }
            RetryDue { task: 0 }
              Run { task: 0, attempt: 2 }
            Failed { task: 0, code: PythonException, retryable: true }
              Retry { task: 0, next_attempt: 3, delay: 2s }
            RetryDue { task: 0 }
              Run { task: 0, attempt: 3 }
            Failed { task: 0, code: PythonException, retryable: true }
              Failed { task: 0 }
              Skipped { task: 1, cause: Some(0) }
            Succeeded { task: 2 }
              Completed { task: 2 }
              Finished { state: Failed }
        "#]],
    );
}

#[test]
fn non_retryable_errors_fail_at_once() {
    let mut tasks = vec![task(&[])];
    tasks[0].retry = RetryPolicy::configured();
    check(
        plan(tasks, 1),
        &[Input::Failed {
            task: 0,
            code: ErrorCode::InvalidParameters,
            retryable: false,
        }],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
            Failed { task: 0, code: InvalidParameters, retryable: false }
              Failed { task: 0 }
              Finished { state: Failed }
        "#]],
    );
}

#[test]
fn on_error_continue_lets_dependants_run_and_the_workflow_complete() {
    let mut tasks = vec![task(&[]), task(&[0])];
    tasks[0].on_error = OnError::Continue;
    check(
        plan(tasks, 4),
        &[fail(0), ok(1)],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
            Failed { task: 0, code: PythonException, retryable: true }
              Failed { task: 0 }
              Run { task: 1, attempt: 1 }
            Succeeded { task: 1 }
              Completed { task: 1 }
              Finished { state: Completed }
        "#]],
    );
}

#[test]
fn on_error_skip_skips_dependants_transitively_but_not_other_branches() {
    let mut tasks = vec![task(&[]), task(&[0]), task(&[1]), task(&[])];
    tasks[0].on_error = OnError::Skip;
    check(
        plan(tasks, 4),
        &[fail(0), ok(3)],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
              Run { task: 3, attempt: 1 }
            Failed { task: 0, code: PythonException, retryable: true }
              Failed { task: 0 }
              Skipped { task: 1, cause: Some(0) }
              Skipped { task: 2, cause: Some(1) }
            Succeeded { task: 3 }
              Completed { task: 3 }
              Finished { state: Completed }
        "#]],
    );
}

#[test]
fn cancel_aborts_running_and_cancels_the_rest() {
    check(
        plan(vec![task(&[]), task(&[]), task(&[0])], 1),
        &[Input::Cancel, Input::Aborted { task: 0 }],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
            Cancel
              Abort { task: 0 }
              Cancelled { task: 1 }
              Cancelled { task: 2 }
            Aborted { task: 0 }
              Cancelled { task: 0 }
              Finished { state: Cancelled }
        "#]],
    );
}

#[test]
fn resume_skips_completed_work_and_reruns_interrupted_tasks() {
    let mut scheduler = Scheduler::new(plan(vec![task(&[]), task(&[0]), task(&[1])], 4));
    scheduler.restore(0, TaskState::Completed, 1);
    // Attempt 1 of task 1 was running when the process died: none finished.
    scheduler.restore(1, TaskState::Running, 0);
    let actions = scheduler.handle(Input::Start);
    assert_eq!(
        actions,
        vec![Action::Run {
            task: 1,
            attempt: 1
        }]
    );
    let actions = scheduler.handle(ok(1));
    assert_eq!(
        actions,
        vec![
            Action::Completed { task: 1 },
            Action::Run {
                task: 2,
                attempt: 1
            }
        ]
    );
}

#[test]
fn empty_plan_finishes_at_once() {
    check(
        plan(vec![], 1),
        &[],
        expect![[r#"
            Start
              Finished { state: Completed }
        "#]],
    );
}

fn condition_false(task: TaskIdx) -> Input {
    Input::ConditionFalse { task }
}

#[test]
fn false_condition_skips_the_task_and_dependants_that_need_it() {
    // 0 -> 1 (when false) -> 2 -> 3; 4 depends on 0 only and still runs.
    check(
        plan(
            vec![task(&[]), task(&[0]), task(&[1]), task(&[2]), task(&[0])],
            8,
        ),
        &[ok(0), condition_false(1), ok(4)],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
            Succeeded { task: 0 }
              Completed { task: 0 }
              Run { task: 1, attempt: 1 }
              Run { task: 4, attempt: 1 }
            ConditionFalse { task: 1 }
              Skipped { task: 1, cause: None }
              Skipped { task: 2, cause: Some(1) }
              Skipped { task: 3, cause: Some(2) }
            Succeeded { task: 4 }
              Completed { task: 4 }
              Finished { state: Completed }
        "#]],
    );
}

#[test]
fn on_skip_run_dependant_runs_after_a_skipped_dependency() {
    // 1 (when false) -> 2 (on_skip: run) -> 3; 3 also waits for 0.
    let mut tasks = vec![task(&[]), task(&[]), task(&[1]), task(&[2, 0])];
    tasks[2].on_skip = OnSkip::Run;
    check(
        plan(tasks, 8),
        &[condition_false(1), ok(2), ok(0), ok(3)],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
              Run { task: 1, attempt: 1 }
            ConditionFalse { task: 1 }
              Skipped { task: 1, cause: None }
              Run { task: 2, attempt: 1 }
            Succeeded { task: 2 }
              Completed { task: 2 }
            Succeeded { task: 0 }
              Completed { task: 0 }
              Run { task: 3, attempt: 1 }
            Succeeded { task: 3 }
              Completed { task: 3 }
              Finished { state: Completed }
        "#]],
    );
}

#[test]
fn on_skip_run_also_takes_skips_that_cascade_but_not_cancellations() {
    // 0 (when false) -> 1 -> 2 (on_skip: run): 1 is skipped, 2 runs.
    let mut tasks = vec![task(&[]), task(&[0]), task(&[1])];
    tasks[2].on_skip = OnSkip::Run;
    check(
        plan(tasks.clone(), 8),
        &[condition_false(0), ok(2)],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
            ConditionFalse { task: 0 }
              Skipped { task: 0, cause: None }
              Skipped { task: 1, cause: Some(0) }
              Run { task: 2, attempt: 1 }
            Succeeded { task: 2 }
              Completed { task: 2 }
              Finished { state: Completed }
        "#]],
    );
    check(
        plan(tasks, 8),
        &[Input::Cancel, Input::Aborted { task: 0 }],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
            Cancel
              Abort { task: 0 }
              Cancelled { task: 1 }
              Cancelled { task: 2 }
            Aborted { task: 0 }
              Cancelled { task: 0 }
              Finished { state: Cancelled }
        "#]],
    );
}

#[test]
fn a_restored_skipped_dependency_is_honoured_on_resume() {
    let mut tasks = vec![task(&[]), task(&[0]), task(&[0])];
    tasks[2].on_skip = OnSkip::Run;
    let mut scheduler = Scheduler::new(plan(tasks, 8));
    scheduler.restore(0, TaskState::Skipped, 0);
    let actions = scheduler.handle(Input::Start);
    expect![[r#"
        [
            Skipped {
                task: 1,
                cause: Some(
                    0,
                ),
            },
            Run {
                task: 2,
                attempt: 1,
            },
        ]
    "#]]
    .assert_debug_eq(&actions);
}

#[test]
fn condition_false_for_a_task_not_running_is_ignored() {
    check(
        plan(vec![task(&[]), task(&[0])], 8),
        &[condition_false(1), ok(0)],
        expect![[r#"
            Start
              Run { task: 0, attempt: 1 }
            ConditionFalse { task: 1 }
            Succeeded { task: 0 }
              Completed { task: 0 }
              Run { task: 1, attempt: 1 }
        "#]],
    );
}
