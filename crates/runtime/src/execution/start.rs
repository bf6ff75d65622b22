//! Starting an attempt: its condition, the budget, its parameters, and the
//! provider call, sub-workflow or fan-out it spawns once committed.

use super::agent::{AgentJob, BudgetUse};
use super::params::{cache_slot, render_params};
use super::sub_workflow::sub_workflow;
use super::{Msg, Run, Work};
use crate::cache::CacheSlot;
use crate::call::TaskCall;
use crate::Runtime;
use gleitzeit_core::agent;
use gleitzeit_core::events::{EventPayload, TaskStarted};
use gleitzeit_core::expr;
use gleitzeit_core::parse;
use gleitzeit_core::scheduler::Input;
use gleitzeit_core::{ErrorCode, GzError, TaskState};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

impl Run<'_> {
    /// Starts an attempt the scheduler decided, or fails it before it runs.
    pub(super) fn start_attempt(&mut self, task: usize, attempt: u32, now: i64) {
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
                self.slots[task].task.attempt = attempt;
                self.fail_before_start(task, error, now);
                return;
            }
        }
        self.slots[task].task.attempt = attempt;
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
                let t = &mut self.slots[task].task;
                t.state = TaskState::Running;
                t.started_ms = Some(now);
                t.finished_ms = None;
                t.error = None;
                self.save_task(task);
                let items = match &work {
                    Work::FanOut(f) => Some(f.items.len()),
                    Work::Call(..) => None,
                };
                let task_ref = self.task_ref(task);
                self.event(EventPayload::TaskStarted(TaskStarted {
                    items,
                    task: task_ref,
                }));
                self.start.push((task, attempt, work));
            }
            Err(error) => self.fail_before_start(task, error, now),
        }
    }

    /// Tokens, known costs and count of the workflow's finished LLM calls.
    fn llm_use(&self) -> (u64, f64, u64) {
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
        for record in self.slots.iter().filter_map(|s| s.result.as_ref()) {
            match record {
                // A fan-in: one record per instance.
                Value::Array(items) => items.iter().for_each(&mut add),
                record => add(record),
            }
        }
        (tokens, cost, calls)
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
        let (tokens, cost, calls) = self.llm_use();
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

    /// Bad references or conditions fail the attempt without running it.
    fn fail_before_start(&mut self, task: usize, error: GzError, now: i64) {
        let (code, retryable) = (error.code, error.retryable);
        self.slots[task].last_error =
            Some(error.at(format!("task {}", self.workflow.tasks[task].id)));
        self.slots[task].task.started_ms = Some(now);
        self.queue.push_back(Input::Failed {
            task,
            code,
            retryable,
        });
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
            &self.slots,
            &self.scope(),
            task,
        )
    }

    pub(super) fn spawn(&mut self, task: usize, attempt: u32, work: Work) {
        let token = CancellationToken::new();
        self.slots[task].token = Some(token.clone());
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
        if self.workflow.tasks[task].method == agent::METHOD {
            let (tokens, cost, _) = self.llm_use();
            let job = AgentJob {
                workflow_id: self.id.clone(),
                spec: self.workflow.tasks[task].clone(),
                attempt,
                params,
                files: self.rt.files_for(&self.workflow),
                resumed: self.resumed,
                budget: self.workflow.budget.map(|budget| BudgetUse {
                    budget,
                    tokens,
                    cost,
                }),
            };
            self.running.spawn(async move {
                let outcome = match slot.as_ref() {
                    Some(slot) => match rt.cached(slot).await {
                        Some(record) => Ok(record),
                        None => {
                            let outcome = job.run(rt.clone(), token).await;
                            rt.remember(slot, &outcome).await;
                            outcome
                        }
                    },
                    None => job.run(rt.clone(), token).await,
                };
                fail::fail_point!("runtime.call_returned");
                let _ = tx.send(Msg::Done {
                    task,
                    attempt,
                    outcome,
                    partial: None,
                });
            });
            return;
        }
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

pub(super) fn task_call(
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
pub(super) async fn execute(
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
