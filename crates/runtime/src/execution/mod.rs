//! One workflow run: the loop that owns the scheduler.
//!
//! Each turn: feed queued inputs to the scheduler, turn its actions into store
//! writes and side effects, commit the writes in one batch, then (and only then)
//! announce events and start the tasks that were decided. Completions and retry
//! timers come back over a channel; whatever has arrived is handled in the same
//! turn, so a burst of completions costs one commit.
//!
//! `perform` turns each scheduler action into its effects; the families live
//! apart: starting an attempt (`start`), recording how it ended (`finish`),
//! `for_each` fan-out (`fan_out`), embedded workflows (`sub_workflow`),
//! tool-calling loops (`agent`) and rendering parameters (`params`).

mod agent;
mod fan_out;
mod finish;
mod params;
mod start;
mod sub_workflow;

use crate::cache::CacheSlot;
use crate::scope::{Records, RunScope, TaskNames};
use crate::Runtime;
use fan_out::FanOut;
use gleitzeit_core::events::{
    Event, EventPayload, TaskRef, WorkflowCancelled, WorkflowProgress, WorkflowStarted,
};
use gleitzeit_core::model::primary_field;
use gleitzeit_core::scheduler::{Action, Input, Plan, Scheduler};
use gleitzeit_core::{ErrorCode, GzError, TaskState, Workflow, WorkflowState};
use gleitzeit_store::{now_ms, TaskRecord, WorkflowRecord, Write};
use serde_json::{json, Value};
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
    /// Per task, by index in the workflow.
    slots: Vec<TaskSlot>,
    first_failure: Option<usize>,
    queue: VecDeque<Input>,
    writes: Vec<Write>,
    announce: Vec<Event>,
    start: Vec<(usize, u32, Work)>,
    tx: mpsc::UnboundedSender<Msg>,
    running: JoinSet<()>,
    finished: Option<(WorkflowState, Option<GzError>)>,
    draining: bool,
    /// The workflow ran before (this run resumes it).
    resumed: bool,
}

/// What the run loop keeps of one task.
struct TaskSlot {
    task: TaskRecord,
    /// The result record as references see it.
    result: Option<Value>,
    last_error: Option<GzError>,
    /// Set while an attempt is in flight.
    token: Option<CancellationToken>,
    /// Instance results of a `for_each` task whose last attempt failed: a
    /// retry runs only the instances that have none.
    partial: Option<Vec<Option<Value>>>,
}

impl Records for Vec<TaskSlot> {
    fn record(&self, task: usize) -> Option<&Value> {
        self.get(task)?.result.as_ref()
    }
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
    let mut slots: Vec<TaskSlot> = Vec::with_capacity(n);
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
        let (result, last_error) = match task.state {
            TaskState::Completed => (task.result.clone(), None),
            TaskState::Failed => (Some(error_record(task.error.as_ref())), task.error.clone()),
            TaskState::Skipped => (Some(skipped_record(&spec.method)), None),
            _ => (None, None),
        };
        slots.push(TaskSlot {
            task,
            result,
            last_error,
            token: None,
            partial: None,
        });
    }
    let mut counts: HashMap<TaskState, usize> = HashMap::new();
    for task in slots.iter().map(|s| &s.task) {
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
        slots,
        first_failure: None,
        queue: VecDeque::from([Input::Start]),
        writes: Vec::new(),
        announce: Vec::new(),
        start: Vec::new(),
        tx,
        running: JoinSet::new(),
        finished: None,
        draining: rt.drain.is_cancelled(),
        resumed,
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
        trigger: run.workflow.trigger.clone(),
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
                tasks: run.slots.into_iter().map(|s| s.task).collect(),
            });
        }
        if run.draining && run.slots.iter().all(|s| s.token.is_none()) {
            // Every call that was in flight is recorded; what is left (pending,
            // retry timers, tasks marked running but not started) runs again
            // on resume.
            run.running.shutdown().await;
            return Ok(RunOutcome {
                workflow_id: run.id,
                state: WorkflowState::Running,
                error: None,
                tasks: run.slots.into_iter().map(|s| s.task).collect(),
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
            attempt: self.slots[task].task.attempt,
        }
    }

    fn progress(&mut self) {
        let count = |state| self.counts.get(&state).copied().unwrap_or(0);
        let progress = WorkflowProgress {
            completed_tasks: count(TaskState::Completed),
            failed_tasks: count(TaskState::Failed),
            skipped_tasks: count(TaskState::Skipped),
            total_tasks: self.slots.len(),
        };
        self.event(EventPayload::WorkflowProgress(progress));
    }

    fn save_task(&mut self, task: usize) {
        let state = self.slots[task].task.state;
        if state.is_terminal() {
            *self.counts.entry(state).or_default() += 1;
        }
        self.writes.push(Write::Task(self.slots[task].task.clone()));
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
                        self.slots[task].partial = Some(partial);
                    }
                    _ => {
                        self.slots[task].partial.take();
                    }
                }
                let aborting = self.slots[task]
                    .token
                    .as_ref()
                    .is_some_and(|t| t.is_cancelled());
                self.slots[task].token = None;
                // A result over the limits is never stored: the task fails
                // with the limit named, and retrying would only repeat it.
                let outcome = outcome.and_then(|record| {
                    self.rt.config.limits.check_result(&record)?;
                    Ok(record)
                });
                match outcome {
                    Ok(record) => {
                        self.slots[task].result = Some(record);
                        self.queue.push_back(Input::Succeeded { task });
                    }
                    Err(_) if aborting => self.queue.push_back(Input::Aborted { task }),
                    Err(error) => {
                        let (code, retryable) = (error.code, error.retryable);
                        self.slots[task].last_error = Some(error);
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
            Action::Run { task, attempt } => self.start_attempt(task, attempt, now),
            Action::Completed { task } => self.complete(task, now),
            Action::Retry {
                task,
                next_attempt,
                delay,
            } => self.retry(task, next_attempt, delay, now),
            Action::Failed { task } => self.fail(task, now),
            Action::Skipped { task, cause } => self.skip(task, cause, now),
            Action::Cancelled { task } => self.cancel(task, now),
            Action::Abort { task } => self.abort(task),
            Action::Finished { state } => self.finish(state, now),
        }
    }

    fn scope(&self) -> RunScope<'_> {
        RunScope {
            workflow: &self.workflow,
            index: &self.index,
            records: &self.slots,
            allowed_env: &self.rt.config.allowed_env,
            item: None,
        }
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
