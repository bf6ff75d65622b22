//! One workflow run: the loop that owns the scheduler.
//!
//! Each turn: feed queued inputs to the scheduler, turn its actions into store
//! writes and side effects, commit the writes in one batch, then (and only then)
//! announce events and start the tasks that were decided. Completions and retry
//! timers come back over a channel; whatever has arrived is handled in the same
//! turn, so a burst of completions costs one commit.

use crate::cache::CacheSlot;
use crate::call::TaskCall;
use crate::scope::{RunScope, TaskNames};
use crate::Runtime;
use gleitzeit_core::events::{
    Event, EventPayload, TaskCancelled, TaskCompleted, TaskFailed, TaskRetrying, TaskSkipped,
    TaskStarted, WorkflowCancelled, WorkflowCompleted, WorkflowFailed, WorkflowProgress,
    WorkflowStarted,
};
use gleitzeit_core::expr;
use gleitzeit_core::model::{primary_field, ForEach, MAX_FOR_EACH_ITEMS};
use gleitzeit_core::parse;
use gleitzeit_core::refs::{self, python};
use gleitzeit_core::scheduler::{Action, Input, Plan, Scheduler};
use gleitzeit_core::{ErrorCode, GzError, OnError, TaskState, Workflow, WorkflowState};
use gleitzeit_store::{now_ms, TaskRecord, WorkflowRecord, Write};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub workflow_id: String,
    pub state: WorkflowState,
    pub error: Option<GzError>,
    pub tasks: Vec<TaskRecord>,
}

enum Msg {
    Done {
        task: usize,
        attempt: u32,
        outcome: Result<Value, GzError>,
        /// A fan-out's instance results so far, kept for its next attempt.
        partial: Option<Vec<Option<Value>>>,
    },
    RetryDue {
        task: usize,
    },
}

struct Run<'r> {
    rt: &'r Runtime,
    id: String,
    workflow: Arc<Workflow>,
    /// Task index by id and by name.
    index: Arc<HashMap<String, usize>>,
    names: Arc<TaskNames>,
    /// Tasks per terminal state, for progress events without a scan.
    counts: HashMap<TaskState, usize>,
    scheduler: Scheduler,
    /// Result records by task index, as references see them.
    records: Vec<Option<Value>>,
    tasks: Vec<TaskRecord>,
    last_error: Vec<Option<GzError>>,
    task_tokens: Vec<Option<CancellationToken>>,
    first_failure: Option<usize>,
    queue: VecDeque<Input>,
    writes: Vec<Write>,
    announce: Vec<Event>,
    start: Vec<(usize, u32, Work)>,
    /// Instance results of `for_each` tasks whose last attempt failed: a retry
    /// runs only the instances that have none.
    partial: HashMap<usize, Vec<Option<Value>>>,
    tx: mpsc::UnboundedSender<Msg>,
    running: JoinSet<()>,
    finished: Option<(WorkflowState, Option<GzError>)>,
    draining: bool,
}

pub(crate) async fn run_loop(
    rt: &Runtime,
    record: WorkflowRecord,
    cancel: CancellationToken,
) -> Result<crate::RunOutcome, GzError> {
    let workflow = record.spec.clone();
    let mut prepared = std::collections::HashSet::new();
    for task in workflow.tasks.iter().filter(|_| rt.remote.is_none()) {
        if let Some(provider) = rt.registry.for_method(&task.method) {
            if prepared.insert(provider.protocol()) {
                provider.prepare().await?;
            }
        }
    }
    let mut stored: HashMap<String, TaskRecord> = rt
        .store
        .tasks(&record.id)
        .await?
        .into_iter()
        .map(|t| (t.task_id.clone(), t))
        .collect();
    let lanes: Vec<String> = {
        let mut lanes: Vec<String> = workflow
            .tasks
            .iter()
            .map(|t| t.protocol().to_string())
            .collect();
        lanes.sort();
        lanes.dedup();
        lanes
    };
    let limits = lanes
        .iter()
        .map(|l| {
            rt.config
                .lane_limits
                .get(l)
                .copied()
                .unwrap_or(rt.config.default_lane_limit)
        })
        .collect();
    let plan = Plan::from_workflow(
        &workflow,
        limits,
        rt.config.max_concurrent_tasks,
        |protocol| lanes.iter().position(|l| l == protocol).unwrap_or(0),
    );
    let mut scheduler = Scheduler::new(plan);

    let n = workflow.tasks.len();
    let mut tasks: Vec<TaskRecord> = Vec::with_capacity(n);
    let mut records = vec![None; n];
    let mut last_error = vec![None; n];
    for (i, spec) in workflow.tasks.iter().enumerate() {
        let task = stored
            .remove(&spec.id)
            .unwrap_or_else(|| TaskRecord::pending(&record.id, i as u32, &spec.id, &spec.method));
        let attempts_done = match task.state {
            // The attempt in flight when the last process died did not finish.
            TaskState::Running => task.attempt.saturating_sub(1),
            _ => task.attempt,
        };
        scheduler.restore(i, task.state, attempts_done);
        match task.state {
            TaskState::Completed => records[i] = task.result.clone(),
            TaskState::Failed => {
                records[i] = Some(error_record(task.error.as_ref()));
                last_error[i] = task.error.clone();
            }
            TaskState::Skipped => records[i] = Some(skipped_record(&spec.method)),
            _ => {}
        }
        tasks.push(task);
    }
    let mut counts: HashMap<TaskState, usize> = HashMap::new();
    for task in &tasks {
        if task.state.is_terminal() {
            *counts.entry(task.state).or_default() += 1;
        }
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let resumed = record.started_ms.is_some();
    let mut run = Run {
        rt,
        id: record.id.clone(),
        names: Arc::new(TaskNames::of(&workflow)),
        index: Arc::new(
            workflow
                .index()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        ),
        counts,
        workflow: Arc::new(workflow),
        scheduler,
        records,
        tasks,
        last_error,
        task_tokens: vec![None; n],
        first_failure: None,
        queue: VecDeque::from([Input::Start]),
        writes: Vec::new(),
        announce: Vec::new(),
        start: Vec::new(),
        partial: HashMap::new(),
        tx,
        running: JoinSet::new(),
        finished: None,
        draining: rt.drain.is_cancelled(),
    };
    run.writes.push(Write::Workflow {
        id: run.id.clone(),
        state: WorkflowState::Running,
        at_ms: now_ms(),
        error: None,
    });
    run.event(EventPayload::WorkflowStarted(WorkflowStarted {
        name: run.workflow.name.clone(),
        total_tasks: n,
        resumed,
    }));

    let mut poll = tokio::time::interval(rt.config.cancel_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cancel_sent = false;
    loop {
        while let Some(input) = run.queue.pop_front() {
            let actions = run.scheduler.handle(input);
            for action in actions {
                run.perform(action);
            }
        }
        run.commit().await?;
        if let Some((state, error)) = run.finished.take() {
            run.running.shutdown().await;
            return Ok(RunOutcome {
                workflow_id: run.id,
                state,
                error,
                tasks: run.tasks,
            });
        }
        if run.draining && run.task_tokens.iter().all(Option::is_none) {
            // Every call that was in flight is recorded; what is left (pending,
            // retry timers, tasks marked running but not started) runs again
            // on resume.
            run.running.shutdown().await;
            return Ok(RunOutcome {
                workflow_id: run.id,
                state: WorkflowState::Running,
                error: None,
                tasks: run.tasks,
            });
        }
        tokio::select! {
            msg = rx.recv() => {
                if let Some(msg) = msg {
                    run.receive(msg);
                }
            }
            _ = rt.drain.cancelled(), if !run.draining => {
                run.draining = true;
            }
            _ = cancel.cancelled(), if !cancel_sent => {
                cancel_sent = true;
                run.queue.push_back(Input::Cancel);
            }
            _ = poll.tick(), if !cancel_sent => {
                if let Ok(Some(current)) = rt.store.workflow(&run.id).await {
                    if current.cancel_requested {
                        cancel_sent = true;
                        run.queue.push_back(Input::Cancel);
                    }
                }
            }
        }
        while let Ok(msg) = rx.try_recv() {
            run.receive(msg);
        }
        while run.running.try_join_next().is_some() {}
    }
}

fn error_record(error: Option<&GzError>) -> Value {
    json!({ "error": error.map(|e| serde_json::to_value(e).unwrap_or(Value::Null)) })
}

/// What references see of a skipped task: `${T.result}` is null.
fn skipped_record(method: &str) -> Value {
    json!({ primary_field(method): null })
}

/// What every task event says about its task.
struct TaskRef {
    task_id: String,
    task_name: String,
    method: String,
    attempt: u32,
}

/// What a decided attempt starts once it is committed.
enum Work {
    Call(Value, Option<CacheSlot>),
    FanOut(FanOut),
}

impl Run<'_> {
    fn event(&mut self, payload: EventPayload) {
        self.announce
            .push(Event::new(payload, self.id.clone(), now_ms()));
    }

    /// The fields every task event carries: id, display name, method and
    /// attempt.
    fn task_ref(&self, task: usize) -> TaskRef {
        let spec = &self.workflow.tasks[task];
        TaskRef {
            task_id: spec.id.clone(),
            task_name: spec.display_name().to_string(),
            method: spec.method.clone(),
            attempt: self.tasks[task].attempt,
        }
    }

    fn progress(&mut self) {
        let count = |state| self.counts.get(&state).copied().unwrap_or(0);
        let progress = WorkflowProgress {
            completed_tasks: count(TaskState::Completed),
            failed_tasks: count(TaskState::Failed),
            skipped_tasks: count(TaskState::Skipped),
            total_tasks: self.tasks.len(),
        };
        self.event(EventPayload::WorkflowProgress(progress));
    }

    fn save_task(&mut self, task: usize) {
        let state = self.tasks[task].state;
        if state.is_terminal() {
            *self.counts.entry(state).or_default() += 1;
        }
        self.writes.push(Write::Task(self.tasks[task].clone()));
    }

    fn receive(&mut self, msg: Msg) {
        match msg {
            Msg::RetryDue { task } => self.queue.push_back(Input::RetryDue { task }),
            Msg::Done {
                task,
                attempt,
                outcome,
                partial,
            } => {
                if attempt != self.scheduler.attempts(task) {
                    return;
                }
                match partial {
                    Some(partial) if outcome.is_err() => {
                        self.partial.insert(task, partial);
                    }
                    _ => {
                        self.partial.remove(&task);
                    }
                }
                let aborting = self.task_tokens[task]
                    .as_ref()
                    .is_some_and(|t| t.is_cancelled());
                self.task_tokens[task] = None;
                // A result over the limits is never stored: the task fails
                // with the limit named, and retrying would only repeat it.
                let outcome = outcome.and_then(|record| {
                    self.rt.config.limits.check_result(&record)?;
                    Ok(record)
                });
                match outcome {
                    Ok(record) => {
                        self.records[task] = Some(record);
                        self.queue.push_back(Input::Succeeded { task });
                    }
                    Err(_) if aborting => self.queue.push_back(Input::Aborted { task }),
                    Err(error) => {
                        let (code, retryable) = (error.code, error.retryable);
                        self.last_error[task] = Some(error);
                        self.queue.push_back(Input::Failed {
                            task,
                            code,
                            retryable,
                        });
                    }
                }
            }
        }
    }

    /// An LLM task may start only while the workflow's LLM calls so far stay
    /// inside its `budget:` (tokens and known costs of finished calls).
    fn within_budget(&self, task: usize) -> Result<(), GzError> {
        let Some(budget) = self.workflow.budget else {
            return Ok(());
        };
        if !self.workflow.tasks[task].method.starts_with("llm/") {
            return Ok(());
        }
        let (mut tokens, mut cost, mut calls) = (0u64, 0f64, 0u64);
        let mut add = |record: &Value| {
            if let Some(usage) = record.get("usage") {
                calls += 1;
                tokens += ["prompt_tokens", "completion_tokens"]
                    .iter()
                    .filter_map(|k| usage.get(*k).and_then(Value::as_u64))
                    .sum::<u64>();
                cost += record
                    .get("cost_usd")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
            }
        };
        for record in self.records.iter().flatten() {
            match record {
                // A fan-in: one record per instance.
                Value::Array(items) => items.iter().for_each(&mut add),
                record => add(record),
            }
        }
        let over = match (budget.tokens, budget.cost) {
            (Some(limit), _) if tokens >= limit => Some(format!(
                "token budget of {limit} used up: {tokens} tokens in {calls} LLM call(s)"
            )),
            (_, Some(limit)) if cost >= limit => Some(format!(
                "cost budget of ${limit:.2} used up: ${cost:.4} in {calls} LLM call(s)"
            )),
            _ => None,
        };
        match over {
            None => Ok(()),
            Some(message) => Err(GzError::new(
                ErrorCode::BudgetExceeded,
                format!("`{}` not started: {message}", self.workflow.tasks[task].id),
            )
            .retryable(false)
            .with_details(json!({"tokens": tokens, "cost_usd": cost, "llm_calls": calls}))),
        }
    }

    fn perform(&mut self, action: Action) {
        let now = now_ms();
        match action {
            Action::Run { task, attempt } => {
                if self.draining {
                    // Shutting down: the task stays pending in the store and
                    // starts when the workflow is resumed.
                    return;
                }
                match self.condition(task) {
                    Ok(true) => {}
                    Ok(false) => {
                        self.queue.push_back(Input::ConditionFalse { task });
                        return;
                    }
                    Err(error) => {
                        self.tasks[task].attempt = attempt;
                        self.fail_before_start(task, error, now);
                        return;
                    }
                }
                self.tasks[task].attempt = attempt;
                if let Err(error) = self.within_budget(task) {
                    self.fail_before_start(task, error, now);
                    return;
                }
                let work = if self.workflow.tasks[task].for_each.is_some() {
                    self.fan_out(task, attempt).map(Work::FanOut)
                } else {
                    self.prepare(task).and_then(|params| {
                        let spec = &self.workflow.tasks[task];
                        let slot = cache_slot(spec, &params, &self.names, &self.scope())?;
                        Ok(Work::Call(params, slot))
                    })
                };
                match work {
                    Ok(work) => {
                        let t = &mut self.tasks[task];
                        t.state = TaskState::Running;
                        t.started_ms = Some(now);
                        t.finished_ms = None;
                        t.error = None;
                        self.save_task(task);
                        let items = match &work {
                            Work::FanOut(f) => Some(f.items.len()),
                            Work::Call(..) => None,
                        };
                        let TaskRef {
                            task_id,
                            task_name,
                            method,
                            attempt,
                        } = self.task_ref(task);
                        self.event(EventPayload::TaskStarted(TaskStarted {
                            items,
                            task_id,
                            task_name,
                            method,
                            attempt,
                        }));
                        self.start.push((task, attempt, work));
                    }
                    Err(error) => self.fail_before_start(task, error, now),
                }
            }
            Action::Completed { task } => {
                let record = self.records[task].clone();
                let primary = record
                    .as_ref()
                    .and_then(|r| r.get(primary_field(&self.workflow.tasks[task].method)))
                    .cloned()
                    .unwrap_or(Value::Null);
                let t = &mut self.tasks[task];
                t.state = TaskState::Completed;
                t.result = record;
                t.finished_ms = Some(now);
                let duration_ms = t.duration_ms().unwrap_or(0);
                self.save_task(task);
                let result = self.tasks[task].result.as_ref();
                let stdout = result
                    .and_then(|r| r.get("stdout"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(|stdout| stdout.chars().take(4000).collect());
                let cached = result
                    .and_then(|r| r.get("cached"))
                    .is_some_and(|c| c == &Value::Bool(true))
                    .then_some(true);
                // LLM accounting rides along so metrics and clients need not
                // fetch the result.
                let llm = result.filter(|r| r.get("usage").is_some());
                let copy = |field: &str| llm.and_then(|r| r.get(field)).cloned();
                let TaskRef {
                    task_id,
                    task_name,
                    method,
                    attempt,
                } = self.task_ref(task);
                let completed = TaskCompleted {
                    result: primary,
                    stdout,
                    duration_ms,
                    cached,
                    duration_seconds: duration_ms as f64 / 1000.0,
                    usage: copy("usage"),
                    model: copy("model"),
                    endpoint: copy("endpoint"),
                    first_token_ms: copy("first_token_ms"),
                    provider_ms: copy("duration_ms"),
                    task_id,
                    task_name,
                    method,
                    attempt,
                };
                self.event(EventPayload::TaskCompleted(completed));
                self.progress();
            }
            Action::Retry {
                task,
                next_attempt,
                delay,
            } => {
                let policy = &self.workflow.tasks[task].retry;
                let delay = policy.jittered(delay, fastrand::f64());
                let error = self.last_error[task].clone();
                let t = &mut self.tasks[task];
                t.state = TaskState::Retrying;
                t.error = error.clone();
                t.finished_ms = Some(now);
                self.save_task(task);
                let TaskRef {
                    task_id,
                    task_name,
                    method,
                    attempt,
                } = self.task_ref(task);
                self.event(EventPayload::TaskRetrying(TaskRetrying {
                    next_attempt,
                    delay_seconds: delay.as_secs_f64(),
                    error,
                    task_id,
                    task_name,
                    method,
                    attempt,
                }));
                let tx = self.tx.clone();
                self.running.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Msg::RetryDue { task });
                });
            }
            Action::Failed { task } => {
                let spec = &self.workflow.tasks[task];
                let mut error = self.last_error[task].clone().unwrap_or_else(|| {
                    GzError::new(ErrorCode::TaskFailed, format!("task `{}` failed", spec.id))
                });
                if self.tasks[task].attempt > 1 {
                    error.details =
                        merge_details(error.details, json!({"attempts": self.tasks[task].attempt}));
                }
                if matches!(spec.on_error, OnError::Stop | OnError::Retry)
                    && self.first_failure.is_none()
                {
                    self.first_failure = Some(task);
                }
                self.records[task] = Some(error_record(Some(&error)));
                let t = &mut self.tasks[task];
                t.state = TaskState::Failed;
                t.error = Some(error.clone());
                t.finished_ms = Some(now);
                self.save_task(task);
                let TaskRef {
                    task_id,
                    task_name,
                    method,
                    attempt,
                } = self.task_ref(task);
                self.event(EventPayload::TaskFailed(TaskFailed {
                    error,
                    duration_ms: self.tasks[task].duration_ms(),
                    task_id,
                    task_name,
                    method,
                    attempt,
                }));
                self.progress();
            }
            Action::Skipped { task, cause } => {
                let reason = match cause {
                    Some(c) => {
                        let cause_spec = &self.workflow.tasks[c];
                        let what = match self.tasks[c].state {
                            TaskState::Failed => "failed",
                            TaskState::Skipped => "was skipped",
                            TaskState::Cancelled => "was cancelled",
                            _ => "did not complete",
                        };
                        if self.workflow.tasks[task]
                            .dependencies
                            .contains(&cause_spec.id)
                        {
                            format!("skipped because dependency `{}` {what}", cause_spec.id)
                        } else {
                            format!(
                                "skipped because the workflow stopped after `{}` {what}",
                                cause_spec.id
                            )
                        }
                    }
                    None => "skipped because its `when` condition is false".to_string(),
                };
                self.records[task] = Some(skipped_record(&self.workflow.tasks[task].method));
                let t = &mut self.tasks[task];
                t.state = TaskState::Skipped;
                // A false condition is a decision, not an error.
                t.error = cause.map(|_| GzError::new(ErrorCode::DependencyFailed, reason.clone()));
                t.finished_ms = Some(now);
                self.save_task(task);
                let TaskRef {
                    task_id,
                    task_name,
                    method,
                    attempt,
                } = self.task_ref(task);
                self.event(EventPayload::TaskSkipped(TaskSkipped {
                    reason,
                    task_id,
                    task_name,
                    method,
                    attempt,
                }));
            }
            Action::Cancelled { task } => {
                let t = &mut self.tasks[task];
                t.state = TaskState::Cancelled;
                t.error = Some(GzError::new(ErrorCode::TaskCancelled, "cancelled"));
                t.finished_ms = Some(now);
                self.save_task(task);
                let TaskRef {
                    task_id,
                    task_name,
                    method,
                    attempt,
                } = self.task_ref(task);
                self.event(EventPayload::TaskCancelled(TaskCancelled {
                    task_id,
                    task_name,
                    method,
                    attempt,
                }));
            }
            Action::Abort { task } => {
                if let Some(token) = &self.task_tokens[task] {
                    token.cancel();
                }
            }
            Action::Finished { state } => {
                let error = match state {
                    WorkflowState::Failed => self.first_failure.map(|task| {
                        let cause = self.tasks[task].error.clone();
                        let mut error = GzError::new(
                            ErrorCode::TaskFailed,
                            format!(
                                "task `{}` failed: {}",
                                self.workflow.tasks[task].id,
                                cause.as_ref().map(|c| c.to_string()).unwrap_or_default()
                            ),
                        );
                        if let Some(cause) = cause {
                            error.hint = Some(cause.hint_text().to_string());
                        }
                        error
                    }),
                    WorkflowState::Cancelled => Some(GzError::new(
                        ErrorCode::TaskCancelled,
                        "workflow was cancelled",
                    )),
                    _ => None,
                };
                self.writes.push(Write::Workflow {
                    id: self.id.clone(),
                    state,
                    at_ms: now,
                    error: error.clone(),
                });
                let task_results: Map<String, Value> = self
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.state == TaskState::Completed)
                    .map(|(i, t)| {
                        let spec = &self.workflow.tasks[i];
                        let primary = t
                            .result
                            .as_ref()
                            .and_then(|r| r.get(primary_field(&spec.method)))
                            .cloned()
                            .unwrap_or(Value::Null);
                        (spec.display_name().to_string(), primary)
                    })
                    .collect();
                let name = self.workflow.name.clone();
                let state_name = state.as_str().to_string();
                let task_results = Some(task_results);
                let error_sent = error.clone();
                self.event(match state {
                    WorkflowState::Completed => {
                        EventPayload::WorkflowCompleted(WorkflowCompleted {
                            name,
                            state: state_name,
                            task_results,
                            error: error_sent,
                        })
                    }
                    WorkflowState::Cancelled => {
                        EventPayload::WorkflowCancelled(WorkflowCancelled {
                            name,
                            state: state_name,
                            task_results,
                            error: error_sent,
                        })
                    }
                    _ => EventPayload::WorkflowFailed(WorkflowFailed {
                        name,
                        state: state_name,
                        task_results,
                        error: error_sent,
                    }),
                });
                self.finished = Some((state, error));
            }
        }
    }

    /// Bad references or conditions fail the attempt without running it.
    fn fail_before_start(&mut self, task: usize, error: GzError, now: i64) {
        let (code, retryable) = (error.code, error.retryable);
        self.last_error[task] = Some(error.at(format!("task {}", self.workflow.tasks[task].id)));
        self.tasks[task].started_ms = Some(now);
        self.queue.push_back(Input::Failed {
            task,
            code,
            retryable,
        });
    }

    fn scope(&self) -> RunScope<'_> {
        RunScope {
            workflow: &self.workflow,
            index: &self.index,
            records: &self.records,
            allowed_env: &self.rt.config.allowed_env,
            item: None,
        }
    }

    /// The task's `when` condition; true when it has none.
    fn condition(&self, task: usize) -> Result<bool, GzError> {
        let Some(text) = &self.workflow.tasks[task].when else {
            return Ok(true);
        };
        // Validated at load; parsed again here because the stored spec keeps
        // the text, so an invalid condition can only come from a hand-edited
        // store and is reported, not trusted.
        let parsed = expr::parse(text, self.names.as_ref()).map_err(|e| {
            GzError::new(
                ErrorCode::InvalidCondition,
                format!("invalid `when` condition `{text}`: {}", e.message),
            )
        })?;
        Ok(expr::truthy(&parsed.eval(&self.scope())?))
    }

    /// Resolves references in a task's parameters.
    fn prepare(&self, task: usize) -> Result<Value, GzError> {
        render_params(
            &self.workflow,
            &self.index,
            &self.names,
            &self.records,
            &self.scope(),
            task,
        )
    }

    /// Resolves a `for_each` task's list and packs what its instances need to
    /// render their parameters later, one at a time as they start.
    fn fan_out(&mut self, task: usize, attempt: u32) -> Result<FanOut, GzError> {
        let spec = &self.workflow.tasks[task];
        let scope = self.scope();
        let not_a_list = |what: &str, value: &Value| {
            GzError::new(
                ErrorCode::InvalidForEach,
                format!(
                    "`for_each` of task `{}`: {what} is {}, not a list",
                    spec.id,
                    describe(value)
                ),
            )
        };
        let items: Vec<Value> = match &spec.for_each {
            None => Vec::new(),
            Some(ForEach::Items(items)) => items.clone(),
            Some(ForEach::Ref(text)) => {
                match refs::render_str(text, self.names.as_ref(), &scope)? {
                    Value::Array(items) => items,
                    other => return Err(not_a_list(&format!("`{text}`"), &other)),
                }
            }
            Some(ForEach::Range(count)) => {
                let count = match count {
                    Value::String(text) => refs::render_str(text, self.names.as_ref(), &scope)?,
                    other => other.clone(),
                };
                match count.as_u64() {
                    Some(n) if n as usize <= MAX_FOR_EACH_ITEMS => (0..n).map(Value::from).collect(),
                    _ => {
                        return Err(GzError::new(
                            ErrorCode::InvalidForEach,
                            format!(
                                "`for_each: range(…)` of task `{}` needs a whole number from 0 to {MAX_FOR_EACH_ITEMS}, not {}",
                                spec.id,
                                describe(&count)
                            ),
                        ))
                    }
                }
            }
        };
        if items.len() > MAX_FOR_EACH_ITEMS {
            return Err(GzError::new(
                ErrorCode::InvalidForEach,
                format!(
                    "`for_each` of task `{}` has {} items; at most {MAX_FOR_EACH_ITEMS} are allowed",
                    spec.id,
                    items.len()
                ),
            ));
        }
        let results = match self.partial.remove(&task) {
            Some(partial) if partial.len() == items.len() => partial,
            _ => vec![None; items.len()],
        };
        let limit = spec.max_parallel.unwrap_or_else(|| {
            self.rt
                .config
                .lane_limits
                .get(spec.protocol())
                .copied()
                .unwrap_or(self.rt.config.default_lane_limit)
        });
        // Instances render against the task's ancestors only; copying those
        // once keeps the run loop free while they execute.
        let mut records = vec![None; self.records.len()];
        let mut stack = vec![task];
        while let Some(t) = stack.pop() {
            for dep in &self.workflow.tasks[t].dependencies {
                if let Some(&d) = self.index.get(dep) {
                    if records[d].is_none() {
                        records[d] = self.records[d].clone();
                        stack.push(d);
                    }
                }
            }
        }
        Ok(FanOut {
            workflow: self.workflow.clone(),
            index: self.index.clone(),
            names: self.names.clone(),
            records,
            task,
            attempt,
            items,
            results,
            limit: limit.max(1),
        })
    }

    async fn commit(&mut self) -> Result<(), GzError> {
        if self.writes.is_empty() && self.announce.is_empty() && self.start.is_empty() {
            return Ok(());
        }
        let mut writes = std::mem::take(&mut self.writes);
        writes.extend(self.announce.iter().cloned().map(Write::Event));
        fail::fail_point!("runtime.before_commit");
        let seqs = self.rt.store.apply(writes).await?;
        // Stored, but not announced, and the tasks it starts not started.
        fail::fail_point!("runtime.after_commit");
        // Every announced event carries the id it was stored under, so a
        // client can resume a stream from it.
        for (mut event, seq) in self.announce.drain(..).zip(seqs) {
            event.seq = seq;
            let _ = self.rt.events.send(event);
        }
        let start = std::mem::take(&mut self.start);
        if self.draining {
            // Decided just before the drain began: recorded as running, and
            // run again on resume.
            return Ok(());
        }
        for (task, attempt, work) in start {
            self.spawn(task, attempt, work);
        }
        Ok(())
    }

    fn spawn(&mut self, task: usize, attempt: u32, work: Work) {
        let token = CancellationToken::new();
        self.task_tokens[task] = Some(token.clone());
        let tx = self.tx.clone();
        let rt = self.rt.clone();
        let (params, slot) = match work {
            Work::Call(params, slot) => (params, slot),
            Work::FanOut(job) => {
                let run_id = self.id.clone();
                self.running.spawn(async move {
                    let (outcome, partial) = job.run(Arc::new(rt), run_id, token).await;
                    let _ = tx.send(Msg::Done {
                        task,
                        attempt,
                        outcome,
                        partial: Some(partial),
                    });
                });
                return;
            }
        };
        if self.workflow.tasks[task].method == parse::SUB_WORKFLOW {
            let parent = self.id.clone();
            let access = self.workflow.access.clone();
            self.running.spawn(async move {
                let outcome = sub_workflow(rt, parent, access, params, token).await;
                let _ = tx.send(Msg::Done {
                    task,
                    attempt,
                    outcome,
                    partial: None,
                });
            });
            return;
        }
        let files = self.rt.files_for(&self.workflow);
        let call = task_call(
            &self.id,
            &self.workflow.tasks[task],
            None,
            attempt,
            params,
            files,
        );
        self.running.spawn(async move {
            let outcome = execute(&rt, call, token, slot).await;
            // The provider answered; its outcome is not stored yet.
            fail::fail_point!("runtime.call_returned");
            let _ = tx.send(Msg::Done {
                task,
                attempt,
                outcome,
                partial: None,
            });
        });
    }
}

fn task_call(
    workflow_id: &str,
    spec: &gleitzeit_core::TaskSpec,
    instance: Option<usize>,
    attempt: u32,
    params: Value,
    files: gleitzeit_core::access::FileAccess,
) -> TaskCall {
    let timeout_s = spec.timeout.or_else(|| {
        params
            .get("timeout")
            .and_then(Value::as_f64)
            .filter(|t| *t > 0.0)
    });
    let (task_id, task_name) = match instance {
        None => (spec.id.clone(), spec.display_name().to_string()),
        Some(i) => (
            format!("{}[{i}]", spec.id),
            format!("{}[{i}]", spec.display_name()),
        ),
    };
    TaskCall {
        workflow_id: workflow_id.to_string(),
        task_id,
        task_name,
        attempt,
        method: spec.method.clone(),
        params,
        timeout_s,
        requires: spec.requires.clone(),
        files,
    }
}

/// One provider call, here or on a worker node, or its cached result.
async fn execute(
    rt: &Runtime,
    call: TaskCall,
    token: CancellationToken,
    slot: Option<CacheSlot>,
) -> Result<Value, GzError> {
    if let Some(slot) = &slot {
        if let Some(record) = rt.cached(slot).await {
            return Ok(record);
        }
    }
    let outcome = call_provider(rt, call, token).await;
    if let Some(slot) = &slot {
        rt.remember(slot, &outcome).await;
    }
    outcome
}

async fn call_provider(
    rt: &Runtime,
    call: TaskCall,
    token: CancellationToken,
) -> Result<Value, GzError> {
    match rt.remote.clone() {
        None => rt.call_here(call, token).await,
        // The worker enforces the timeout: time spent queued for a free
        // worker does not count against the task.
        Some(remote) => tokio::select! {
            result = remote.execute(call) => result,
            _ = token.cancelled() => Err(GzError::new(ErrorCode::TaskCancelled, "cancelled")),
        },
    }
}

/// Renders a task's parameters. Python code gets context-aware insertion; the
/// values it used and the workflow inputs are also handed to the code as the
/// dict `inputs`, with the dependencies' results — except for `for_each`
/// instances, which get `item` and `index` instead (thousands of instances each
/// carrying every upstream result would multiply memory and pipe traffic).
fn render_params(
    workflow: &Workflow,
    index: &HashMap<String, usize>,
    names: &TaskNames,
    records: &[Option<Value>],
    scope: &RunScope<'_>,
    task: usize,
) -> Result<Value, GzError> {
    let spec = &workflow.tasks[task];
    let mut params = match &spec.params {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    if spec.method == parse::SUB_WORKFLOW {
        // The embedded child keeps its own references for its own run.
        let child = params.remove("workflow");
        let mut rendered = refs::render_value(&Value::Object(params), names, scope)?;
        if let (Value::Object(map), Some(child)) = (&mut rendered, child) {
            map.insert("workflow".into(), child);
        }
        return Ok(rendered);
    }
    if !spec.method.starts_with("python/") {
        return refs::render_value(&Value::Object(params), names, scope);
    }
    let code = params.remove("code");
    let mut rendered = match refs::render_value(&Value::Object(params), names, scope)? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut inputs: Map<String, Value> = workflow.inputs.clone();
    match scope.item {
        Some((item, i)) => {
            inputs.insert("item".into(), item.clone());
            inputs.insert("index".into(), json!(i));
        }
        None => {
            for dep in &spec.dependencies {
                if let Some(&i) = index.get(dep) {
                    if let Some(record) = &records[i] {
                        let primary = record
                            .get(primary_field(&workflow.tasks[i].method))
                            .cloned();
                        inputs.insert(dep.clone(), primary.unwrap_or(Value::Null));
                    }
                }
            }
        }
    }
    if let Some(Value::String(code)) = code {
        let mut used = Vec::new();
        let code = python::render(&code, names, scope, &mut used)?;
        for (reference, value) in used {
            inputs.insert(reference.text, value);
        }
        rendered.insert("code".into(), Value::String(code));
    } else if let Some(code) = code {
        rendered.insert("code".into(), code);
    }
    if let Some(Value::Object(explicit)) = rendered.remove("inputs") {
        inputs.extend(explicit);
    }
    rendered.insert("inputs".into(), Value::Object(inputs));
    Ok(Value::Object(rendered))
}

type BoxedRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, GzError>> + Send>>;

/// Runs the workflow embedded in a `workflow/run` task as a workflow of its
/// own (stored, resumable, with its own events) and answers with its
/// `outputs`. Boxed: a run that starts a run is a recursive future.
fn sub_workflow(
    rt: Runtime,
    parent: String,
    access: Option<gleitzeit_core::access::FileAccess>,
    params: Value,
    token: CancellationToken,
) -> BoxedRun {
    Box::pin(async move {
        let mut child: Workflow = params
            .get("workflow")
            .cloned()
            .and_then(|w| serde_json::from_value(w).ok())
            .ok_or_else(|| {
                GzError::new(
                    ErrorCode::InvalidParameters,
                    "`workflow/run` task carries no sub-workflow (was it loaded from a file?)",
                )
            })?;
        if let Some(Value::Object(inputs)) = params.get("inputs") {
            for (k, v) in inputs {
                child.inputs.insert(k.clone(), v.clone());
            }
        }
        // A child reaches exactly the files its parent may.
        child.access = access;
        let source = params
            .get("file")
            .and_then(Value::as_str)
            .map(str::to_string);
        let id = rt.submit(child.clone(), source).await?;
        let outcome = rt.run(&id, token).await?;
        if outcome.state != WorkflowState::Completed {
            let cause = outcome.error.map(|e| e.to_string()).unwrap_or_default();
            return Err(GzError::new(
                ErrorCode::SubWorkflowFailed,
                format!(
                    "sub-workflow `{}` ({id}) {}: {cause}",
                    child.name,
                    outcome.state.as_str()
                ),
            )
            .with_details(json!({"workflow_id": id, "parent": parent})));
        }
        let records: Vec<Option<Value>> = child
            .tasks
            .iter()
            .map(|spec| {
                let task = outcome.tasks.iter().find(|t| t.task_id == spec.id)?;
                match task.state {
                    TaskState::Completed => task.result.clone(),
                    TaskState::Skipped => Some(skipped_record(&spec.method)),
                    TaskState::Failed => Some(error_record(task.error.as_ref())),
                    _ => None,
                }
            })
            .collect();
        let index: HashMap<String, usize> = child
            .index()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let names = TaskNames::of(&child);
        let scope = RunScope {
            workflow: &child,
            index: &index,
            records: &records,
            allowed_env: &rt.config.allowed_env,
            item: None,
        };
        let outputs = refs::render_value(&Value::Object(child.outputs.clone()), &names, &scope)?;
        Ok(json!({"result": outputs, "workflow_id": id}))
    })
}

/// Where a call of a task with `cache:` keeps its result.
fn cache_slot(
    spec: &gleitzeit_core::TaskSpec,
    params: &Value,
    names: &TaskNames,
    scope: &RunScope<'_>,
) -> Result<Option<CacheSlot>, GzError> {
    let Some(policy) = &spec.cache else {
        return Ok(None);
    };
    let custom = match &policy.key {
        Some(template) => Some(refs::render_str(template, names, scope)?),
        None => None,
    };
    Ok(Some(CacheSlot::granted(
        &spec.method,
        params,
        custom.as_ref(),
        policy.ttl,
        scope.workflow.access.as_ref(),
    )))
}

fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{kind} ({}…)", text.chars().take(60).collect::<String>())
    } else {
        format!("{kind} ({text})")
    }
}

/// One attempt of a `for_each` task: its items, the results so far and what
/// rendering an instance's parameters needs. Instances are rendered only when
/// they start, so at most `limit` rendered parameter sets exist at once; the
/// task keeps one list of items and one of results, whatever its size.
struct FanOut {
    workflow: Arc<Workflow>,
    index: Arc<HashMap<String, usize>>,
    names: Arc<TaskNames>,
    /// Results of the task's ancestors (other entries are None).
    records: Vec<Option<Value>>,
    task: usize,
    attempt: u32,
    items: Vec<Value>,
    results: Vec<Option<Value>>,
    limit: usize,
}

impl FanOut {
    /// Runs the instances that have no result yet, at most `limit` at once.
    /// The first failure stops new instances from starting; the ones running
    /// finish, and every result is handed back for the next attempt.
    async fn run(
        mut self,
        rt: Arc<Runtime>,
        workflow_id: String,
        token: CancellationToken,
    ) -> (Result<Value, GzError>, Vec<Option<Value>>) {
        let spec = &self.workflow.tasks[self.task];
        let primary = primary_field(&spec.method);
        let total = self.items.len();
        let mut running: JoinSet<(usize, Result<Value, GzError>)> = JoinSet::new();
        let mut next = 0;
        let mut failure: Option<(usize, GzError)> = None;
        loop {
            while failure.is_none() && running.len() < self.limit && next < total {
                let i = next;
                next += 1;
                if self.results[i].is_some() {
                    continue;
                }
                let scope = RunScope {
                    workflow: &self.workflow,
                    index: &self.index,
                    records: &self.records,
                    allowed_env: &rt.config.allowed_env,
                    item: Some((&self.items[i], i)),
                };
                let params = match render_params(
                    &self.workflow,
                    &self.index,
                    &self.names,
                    &self.records,
                    &scope,
                    self.task,
                ) {
                    Ok(params) => params,
                    Err(error) => {
                        failure = Some((i, error));
                        break;
                    }
                };
                let slot = match cache_slot(spec, &params, &self.names, &scope) {
                    Ok(slot) => slot,
                    Err(error) => {
                        failure = Some((i, error));
                        break;
                    }
                };
                let files = rt.files_for(&self.workflow);
                let call = task_call(&workflow_id, spec, Some(i), self.attempt, params, files);
                let (rt, token) = (rt.clone(), token.clone());
                running.spawn(async move { (i, execute(&rt, call, token, slot).await) });
            }
            match running.join_next().await {
                None => break,
                Some(Ok((i, Ok(record)))) => {
                    self.results[i] = Some(record.get(primary).cloned().unwrap_or(Value::Null));
                }
                Some(Ok((i, Err(error)))) => {
                    failure.get_or_insert((i, error));
                }
                Some(Err(join)) => {
                    failure.get_or_insert((
                        next,
                        GzError::new(
                            ErrorCode::InternalError,
                            format!("instance stopped: {join}"),
                        ),
                    ));
                }
            }
        }
        if let Some((i, mut error)) = failure {
            error.message = format!("item {i} of {total}: {}", error.message);
            error.details = merge_details(error.details, json!({"index": i}));
            return (Err(error), self.results);
        }
        let list: Vec<Value> = std::mem::take(&mut self.results)
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        (Ok(json!({ primary: list, "items": total })), Vec::new())
    }
}

fn merge_details(details: Value, extra: Value) -> Value {
    match (details, extra) {
        (Value::Object(mut a), Value::Object(b)) => {
            a.extend(b);
            Value::Object(a)
        }
        (Value::Null, extra) => extra,
        (other, _) => other,
    }
}

/// Cancels a workflow that no live process is running.
pub(crate) async fn cancel_unowned(rt: &Runtime, record: &WorkflowRecord) -> Result<(), GzError> {
    let now = now_ms();
    let mut writes = Vec::new();
    for mut task in rt.store.tasks(&record.id).await? {
        if !task.state.is_terminal() {
            task.state = TaskState::Cancelled;
            task.error = Some(GzError::new(ErrorCode::TaskCancelled, "cancelled"));
            task.finished_ms = Some(now);
            writes.push(Write::Task(task));
        }
    }
    let error = GzError::new(ErrorCode::TaskCancelled, "workflow was cancelled");
    writes.push(Write::Workflow {
        id: record.id.clone(),
        state: WorkflowState::Cancelled,
        at_ms: now,
        error: Some(error.clone()),
    });
    let cancelled = WorkflowCancelled {
        name: record.name.clone(),
        state: WorkflowState::Cancelled.as_str().to_string(),
        task_results: None,
        error: Some(error),
    };
    let event = Event::new(
        EventPayload::WorkflowCancelled(cancelled),
        record.id.clone(),
        now,
    );
    writes.push(Write::Event(event.clone()));
    let seqs = rt.store.apply(writes).await?;
    let _ = rt.events.send(Event {
        seq: seqs.last().copied().unwrap_or(0),
        ..event
    });
    Ok(())
}
