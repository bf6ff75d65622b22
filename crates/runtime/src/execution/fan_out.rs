//! `for_each` tasks: resolving the list, and running its instances.

use super::merge_details;
use super::params::{cache_slot, render_params};
use super::start::{execute, task_call};
use super::Run;
use crate::scope::{RunScope, TaskNames};
use crate::Runtime;
use gleitzeit_core::model::{primary_field, ForEach, MAX_FOR_EACH_ITEMS};
use gleitzeit_core::refs;
use gleitzeit_core::{ErrorCode, GzError, Workflow};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

impl Run<'_> {
    /// Resolves a `for_each` task's list and packs what its instances need to
    /// render their parameters later, one at a time as they start.
    pub(super) fn fan_out(&mut self, task: usize, attempt: u32) -> Result<FanOut, GzError> {
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
        let results = match self.slots[task].partial.take() {
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
        let mut records = vec![None; self.slots.len()];
        let mut stack = vec![task];
        while let Some(t) = stack.pop() {
            for dep in &self.workflow.tasks[t].dependencies {
                if let Some(&d) = self.index.get(dep) {
                    if records[d].is_none() {
                        records[d] = self.slots[d].result.clone();
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
pub(super) struct FanOut {
    workflow: Arc<Workflow>,
    index: Arc<HashMap<String, usize>>,
    names: Arc<TaskNames>,
    /// Results of the task's ancestors (other entries are None).
    records: Vec<Option<Value>>,
    task: usize,
    attempt: u32,
    pub(super) items: Vec<Value>,
    results: Vec<Option<Value>>,
    limit: usize,
}

impl FanOut {
    /// Runs the instances that have no result yet, at most `limit` at once.
    /// The first failure stops new instances from starting; the ones running
    /// finish, and every result is handed back for the next attempt.
    pub(super) async fn run(
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
