//! One workflow run: the loop that owns the scheduler.
//!
//! Each turn: feed queued inputs to the scheduler, turn its actions into store
//! writes and side effects, commit the writes in one batch, then (and only then)
//! announce events and start the tasks that were decided. Completions and retry
//! timers come back over a channel; whatever has arrived is handled in the same
//! turn, so a burst of completions costs one commit.

use crate::call::TaskCall;
use crate::scope::{RunScope, TaskNames};
use crate::Runtime;
use gleitzeit_core::events::{self, Event};
use gleitzeit_core::model::primary_field;
use gleitzeit_core::refs::{self, python};
use gleitzeit_core::scheduler::{Action, Input, Plan, Scheduler};
use gleitzeit_core::{ErrorCode, GzError, OnError, TaskState, Workflow, WorkflowState};
use gleitzeit_store::{now_ms, TaskRecord, WorkflowRecord, Write};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
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
    },
    RetryDue {
        task: usize,
    },
}

struct Run<'r> {
    rt: &'r Runtime,
    id: String,
    workflow: Workflow,
    /// Task index by id and by name.
    index: HashMap<String, usize>,
    names: TaskNames,
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
    start: Vec<(usize, u32, Value)>,
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
        names: TaskNames::of(&workflow),
        index: workflow
            .index()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        counts,
        workflow,
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
    run.event(
        events::WORKFLOW_STARTED,
        json!({"name": run.workflow.name, "total_tasks": n, "resumed": resumed}),
    );

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

impl Run<'_> {
    fn event(&mut self, kind: &str, data: Value) {
        self.announce.push(Event {
            seq: 0,
            kind: kind.to_string(),
            workflow_id: self.id.clone(),
            at_ms: now_ms(),
            data,
        });
    }

    fn task_event(&mut self, kind: &str, task: usize, mut data: Map<String, Value>) {
        let spec = &self.workflow.tasks[task];
        data.insert("task_id".into(), json!(spec.id));
        data.insert("task_name".into(), json!(spec.display_name()));
        data.insert("method".into(), json!(spec.method));
        data.insert("attempt".into(), json!(self.tasks[task].attempt));
        self.event(kind, Value::Object(data));
    }

    fn progress(&mut self) {
        let count = |state| self.counts.get(&state).copied().unwrap_or(0);
        let data = json!({
            "completed_tasks": count(TaskState::Completed),
            "failed_tasks": count(TaskState::Failed),
            "skipped_tasks": count(TaskState::Skipped),
            "total_tasks": self.tasks.len(),
        });
        self.event(events::WORKFLOW_PROGRESS, data);
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
            } => {
                if attempt != self.scheduler.attempts(task) {
                    return;
                }
                let aborting = self.task_tokens[task]
                    .as_ref()
                    .is_some_and(|t| t.is_cancelled());
                self.task_tokens[task] = None;
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

    fn perform(&mut self, action: Action) {
        let now = now_ms();
        match action {
            Action::Run { task, attempt } => {
                if self.draining {
                    // Shutting down: the task stays pending in the store and
                    // starts when the workflow is resumed.
                    return;
                }
                self.tasks[task].attempt = attempt;
                match self.prepare(task) {
                    Ok(params) => {
                        let t = &mut self.tasks[task];
                        t.state = TaskState::Running;
                        t.started_ms = Some(now);
                        t.finished_ms = None;
                        t.error = None;
                        self.save_task(task);
                        self.task_event(events::TASK_STARTED, task, Map::new());
                        self.start.push((task, attempt, params));
                    }
                    Err(error) => {
                        // Bad references fail the attempt without running it.
                        let (code, retryable) = (error.code, error.retryable);
                        self.last_error[task] =
                            Some(error.at(format!("task {}", self.workflow.tasks[task].id)));
                        self.tasks[task].started_ms = Some(now);
                        self.queue.push_back(Input::Failed {
                            task,
                            code,
                            retryable,
                        });
                    }
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
                let mut data = Map::new();
                data.insert("result".into(), primary);
                if let Some(stdout) = self.tasks[task]
                    .result
                    .as_ref()
                    .and_then(|r| r.get("stdout"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                {
                    let cut: String = stdout.chars().take(4000).collect();
                    data.insert("stdout".into(), json!(cut));
                }
                data.insert("duration_ms".into(), json!(duration_ms));
                data.insert(
                    "duration_seconds".into(),
                    json!(duration_ms as f64 / 1000.0),
                );
                // LLM accounting rides along so metrics and clients need not
                // fetch the result.
                if let Some(record) = self.tasks[task]
                    .result
                    .as_ref()
                    .filter(|r| r.get("usage").is_some())
                {
                    for (from, to) in [
                        ("usage", "usage"),
                        ("model", "model"),
                        ("endpoint", "endpoint"),
                        ("first_token_ms", "first_token_ms"),
                        ("duration_ms", "provider_ms"),
                    ] {
                        if let Some(value) = record.get(from) {
                            data.insert(to.into(), value.clone());
                        }
                    }
                }
                self.task_event(events::TASK_COMPLETED, task, data);
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
                let mut data = Map::new();
                data.insert("next_attempt".into(), json!(next_attempt));
                data.insert("delay_seconds".into(), json!(delay.as_secs_f64()));
                data.insert(
                    "error".into(),
                    serde_json::to_value(&error).unwrap_or(Value::Null),
                );
                self.task_event(events::TASK_RETRYING, task, data);
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
                let mut data = Map::new();
                data.insert(
                    "error".into(),
                    serde_json::to_value(&error).unwrap_or(Value::Null),
                );
                if let Some(ms) = self.tasks[task].duration_ms() {
                    data.insert("duration_ms".into(), json!(ms));
                }
                self.task_event(events::TASK_FAILED, task, data);
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
                    None => "skipped".to_string(),
                };
                let t = &mut self.tasks[task];
                t.state = TaskState::Skipped;
                t.error = Some(GzError::new(ErrorCode::DependencyFailed, reason.clone()));
                t.finished_ms = Some(now);
                self.save_task(task);
                let mut data = Map::new();
                data.insert("reason".into(), json!(reason));
                self.task_event(events::TASK_SKIPPED, task, data);
            }
            Action::Cancelled { task } => {
                let t = &mut self.tasks[task];
                t.state = TaskState::Cancelled;
                t.error = Some(GzError::new(ErrorCode::TaskCancelled, "cancelled"));
                t.finished_ms = Some(now);
                self.save_task(task);
                self.task_event(events::TASK_CANCELLED, task, Map::new());
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
                let kind = match state {
                    WorkflowState::Completed => events::WORKFLOW_COMPLETED,
                    WorkflowState::Cancelled => events::WORKFLOW_CANCELLED,
                    _ => events::WORKFLOW_FAILED,
                };
                self.event(
                    kind,
                    json!({
                        "name": self.workflow.name,
                        "state": state.as_str(),
                        "task_results": task_results,
                        "error": error,
                    }),
                );
                self.finished = Some((state, error));
            }
        }
    }

    /// Resolves references in a task's parameters.
    fn prepare(&self, task: usize) -> Result<Value, GzError> {
        let spec = &self.workflow.tasks[task];
        let scope = RunScope {
            workflow: &self.workflow,
            index: &self.index,
            records: &self.records,
            allowed_env: &self.rt.config.allowed_env,
        };
        let mut params = match &spec.params {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        if !spec.method.starts_with("python/") {
            return refs::render_value(&Value::Object(params), &self.names, &scope);
        }
        // Python code gets context-aware insertion; the values it used, the
        // workflow inputs and the dependencies' results are also handed to the
        // code as the dict `inputs`.
        let code = params.remove("code");
        let mut rendered = match refs::render_value(&Value::Object(params), &self.names, &scope)? {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let mut inputs: Map<String, Value> = self.workflow.inputs.clone();
        for dep in &spec.dependencies {
            if let Some(&i) = self.index.get(dep) {
                if let Some(record) = &self.records[i] {
                    let primary = record
                        .get(primary_field(&self.workflow.tasks[i].method))
                        .cloned();
                    inputs.insert(dep.clone(), primary.unwrap_or(Value::Null));
                }
            }
        }
        if let Some(Value::String(code)) = code {
            let mut used = Vec::new();
            let code = python::render(&code, &self.names, &scope, &mut used)?;
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

    async fn commit(&mut self) -> Result<(), GzError> {
        if self.writes.is_empty() && self.announce.is_empty() && self.start.is_empty() {
            return Ok(());
        }
        let mut writes = std::mem::take(&mut self.writes);
        writes.extend(self.announce.iter().cloned().map(Write::Event));
        let seqs = self.rt.store.apply(writes).await?;
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
        for (task, attempt, params) in start {
            self.spawn(task, attempt, params);
        }
        Ok(())
    }

    fn spawn(&mut self, task: usize, attempt: u32, params: Value) {
        let spec = &self.workflow.tasks[task];
        let token = CancellationToken::new();
        self.task_tokens[task] = Some(token.clone());
        let timeout_s = spec.timeout.or_else(|| {
            params
                .get("timeout")
                .and_then(Value::as_f64)
                .filter(|t| *t > 0.0)
        });
        let call = TaskCall {
            workflow_id: self.id.clone(),
            task_id: spec.id.clone(),
            task_name: spec.display_name().to_string(),
            attempt,
            method: spec.method.clone(),
            params,
            timeout_s,
            requires: spec.requires.clone(),
        };
        let tx = self.tx.clone();
        let rt = self.rt.clone();
        self.running.spawn(async move {
            let outcome = match rt.remote.clone() {
                None => rt.call_here(call, token).await,
                // The worker enforces the timeout: time spent queued for a
                // free worker does not count against the task.
                Some(remote) => tokio::select! {
                    result = remote.execute(call) => result,
                    _ = token.cancelled() => Err(GzError::new(ErrorCode::TaskCancelled, "cancelled")),
                },
            };
            let _ = tx.send(Msg::Done { task, attempt, outcome });
        });
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
    let event = Event {
        seq: 0,
        kind: events::WORKFLOW_CANCELLED.to_string(),
        workflow_id: record.id.clone(),
        at_ms: now,
        data: json!({"name": record.name, "state": "cancelled", "error": error}),
    };
    writes.push(Write::Event(event.clone()));
    let seqs = rt.store.apply(writes).await?;
    let _ = rt.events.send(Event {
        seq: seqs.last().copied().unwrap_or(0),
        ..event
    });
    Ok(())
}
