//! How attempts, tasks and the workflow end: stored states and their events.

use super::{error_record, merge_details, skipped_record, Msg, Run};
use gleitzeit_core::events::{
    EventPayload, TaskCancelled, TaskCompleted, TaskFailed, TaskRetrying, TaskSkipped,
    WorkflowCancelled, WorkflowCompleted, WorkflowFailed,
};
use gleitzeit_core::model::primary_field;
use gleitzeit_core::{ErrorCode, GzError, OnError, TaskState, WorkflowState};
use gleitzeit_store::Write;
use serde_json::{json, Map, Value};
use std::time::Duration;

impl Run<'_> {
    pub(super) fn complete(&mut self, task: usize, now: i64) {
        let record = self.slots[task].result.clone();
        let primary = record
            .as_ref()
            .and_then(|r| r.get(primary_field(&self.workflow.tasks[task].method)))
            .cloned()
            .unwrap_or(Value::Null);
        let t = &mut self.slots[task].task;
        t.state = TaskState::Completed;
        t.result = record;
        t.finished_ms = Some(now);
        let duration_ms = t.duration_ms().unwrap_or(0);
        self.save_task(task);
        let result = self.slots[task].task.result.as_ref();
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
            task: self.task_ref(task),
        };
        self.event(EventPayload::TaskCompleted(completed));
        self.progress();
    }

    /// Records a failed attempt and sets the timer for the next one.
    pub(super) fn retry(&mut self, task: usize, next_attempt: u32, delay: Duration, now: i64) {
        let policy = &self.workflow.tasks[task].retry;
        let delay = policy.jittered(delay, fastrand::f64());
        let error = self.slots[task].last_error.clone();
        let t = &mut self.slots[task].task;
        t.state = TaskState::Retrying;
        t.error = error.clone();
        t.finished_ms = Some(now);
        self.save_task(task);
        self.event(EventPayload::TaskRetrying(TaskRetrying {
            next_attempt,
            delay_seconds: delay.as_secs_f64(),
            error,
            task: self.task_ref(task),
        }));
        let tx = self.tx.clone();
        self.running.spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::RetryDue { task });
        });
    }

    pub(super) fn fail(&mut self, task: usize, now: i64) {
        let spec = &self.workflow.tasks[task];
        let mut error = self.slots[task].last_error.clone().unwrap_or_else(|| {
            GzError::new(ErrorCode::TaskFailed, format!("task `{}` failed", spec.id))
        });
        if self.slots[task].task.attempt > 1 {
            error.details = merge_details(
                error.details,
                json!({"attempts": self.slots[task].task.attempt}),
            );
        }
        if matches!(spec.on_error, OnError::Stop | OnError::Retry) && self.first_failure.is_none() {
            self.first_failure = Some(task);
        }
        self.slots[task].result = Some(error_record(Some(&error)));
        let t = &mut self.slots[task].task;
        t.state = TaskState::Failed;
        t.error = Some(error.clone());
        t.finished_ms = Some(now);
        self.save_task(task);
        self.event(EventPayload::TaskFailed(TaskFailed {
            error,
            duration_ms: self.slots[task].task.duration_ms(),
            task: self.task_ref(task),
        }));
        self.progress();
    }

    pub(super) fn skip(&mut self, task: usize, cause: Option<usize>, now: i64) {
        let reason = match cause {
            Some(c) => {
                let cause_spec = &self.workflow.tasks[c];
                let what = match self.slots[c].task.state {
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
        self.slots[task].result = Some(skipped_record(&self.workflow.tasks[task].method));
        let t = &mut self.slots[task].task;
        t.state = TaskState::Skipped;
        // A false condition is a decision, not an error.
        t.error = cause.map(|_| GzError::new(ErrorCode::DependencyFailed, reason.clone()));
        t.finished_ms = Some(now);
        self.save_task(task);
        self.event(EventPayload::TaskSkipped(TaskSkipped {
            reason,
            task: self.task_ref(task),
        }));
    }

    pub(super) fn cancel(&mut self, task: usize, now: i64) {
        let t = &mut self.slots[task].task;
        t.state = TaskState::Cancelled;
        t.error = Some(GzError::new(ErrorCode::TaskCancelled, "cancelled"));
        t.finished_ms = Some(now);
        self.save_task(task);
        self.event(EventPayload::TaskCancelled(TaskCancelled {
            task: self.task_ref(task),
        }));
    }

    pub(super) fn abort(&mut self, task: usize) {
        if let Some(token) = &self.slots[task].token {
            token.cancel();
        }
    }

    pub(super) fn finish(&mut self, state: WorkflowState, now: i64) {
        let error = match state {
            WorkflowState::Failed => self.first_failure.map(|task| {
                let cause = self.slots[task].task.error.clone();
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
            .slots
            .iter()
            .map(|s| &s.task)
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
            WorkflowState::Completed => EventPayload::WorkflowCompleted(WorkflowCompleted {
                name,
                state: state_name,
                task_results,
                error: error_sent,
            }),
            WorkflowState::Cancelled => EventPayload::WorkflowCancelled(WorkflowCancelled {
                name,
                state: state_name,
                task_results,
                error: error_sent,
            }),
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
