//! The JSON shape of workflows and tasks. The API returns it and the CLI prints
//! it (`get --json`, `inspect`), locally or from a server, so scripts see one
//! format either way.

use crate::ErrorView;
use gleitzeit_core::model::primary_field;
use gleitzeit_core::{GzError, TaskState, WorkflowState};
use gleitzeit_store::{TaskRecord, WorkflowRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A task as the API and `get --json` show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub id: String,
    pub method: String,
    /// pending, running, completed, failed, retrying, skipped, cancelled
    #[schema(value_type = String)]
    pub state: TaskState,
    pub attempt: u32,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// The primary field of the result (`response`, `result`, …).
    pub result: Option<Value>,
    /// The whole result record.
    pub record: Option<Value>,
    #[serde(with = "error_view")]
    #[schema(value_type = Option<ErrorView>)]
    pub error: Option<GzError>,
    /// Tasks this one waits for (from the workflow file).
    #[serde(default)]
    pub dependencies: Vec<String>,
}

impl TaskView {
    pub fn new(task: &TaskRecord) -> TaskView {
        TaskView {
            dependencies: Vec::new(),
            id: task.task_id.clone(),
            method: task.method.clone(),
            state: task.state,
            attempt: task.attempt,
            started_ms: task.started_ms,
            finished_ms: task.finished_ms,
            duration_ms: task.duration_ms(),
            result: task
                .result
                .as_ref()
                .and_then(|r| r.get(primary_field(&task.method)))
                .cloned(),
            record: task.result.clone(),
            error: task.error.clone(),
        }
    }
}

/// A workflow with its tasks, as the API and `get --json` show it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkflowView {
    pub workflow_id: String,
    pub name: String,
    /// pending, running, completed, failed, cancelled
    #[schema(value_type = String)]
    pub state: WorkflowState,
    pub source: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(with = "error_view")]
    #[schema(value_type = Option<ErrorView>)]
    pub error: Option<GzError>,
    pub usage: Usage,
    /// What started it, when a schedule, webhook or folder did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<gleitzeit_core::triggers::RunTrigger>,
    pub tasks: Vec<TaskView>,
}

impl WorkflowView {
    pub fn new(record: &WorkflowRecord, tasks: &[TaskRecord]) -> WorkflowView {
        WorkflowView {
            workflow_id: record.id.clone(),
            name: record.name.clone(),
            state: record.state,
            source: record.source.clone(),
            created_ms: record.created_ms,
            started_ms: record.started_ms,
            finished_ms: record.finished_ms,
            duration_ms: match (record.started_ms, record.finished_ms) {
                (Some(s), Some(f)) => Some(f - s),
                _ => None,
            },
            cancel_requested: record.cancel_requested,
            error: record.error.clone(),
            usage: usage(tasks),
            trigger: record.spec.trigger.clone(),
            tasks: {
                // By position first (records keep the spec's order), by id
                // when that does not match: linear for any workflow size.
                let by_id: std::collections::HashMap<&str, &gleitzeit_core::TaskSpec> = record
                    .spec
                    .tasks
                    .iter()
                    .map(|s| (s.id.as_str(), s))
                    .collect();
                tasks
                    .iter()
                    .map(|t| {
                        let mut view = TaskView::new(t);
                        let spec = record
                            .spec
                            .tasks
                            .get(t.position as usize)
                            .filter(|s| s.id == t.task_id)
                            .or_else(|| by_id.get(t.task_id.as_str()).copied());
                        if let Some(spec) = spec {
                            view.dependencies = spec.dependencies.clone();
                        }
                        view
                    })
                    .collect()
            },
        }
    }
}

/// Errors leave with their hint spelled out (the registry's when the error
/// has none of its own) and come back as the same `GzError`.
mod error_view {
    use gleitzeit_core::GzError;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(error: &Option<GzError>, s: S) -> Result<S::Ok, S::Error> {
        error.as_ref().map(crate::ErrorView::new).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GzError>, D::Error> {
        Option::<GzError>::deserialize(d)
    }
}

/// LLM calls with their tokens and cost. A call without a known price counts
/// in `cost_unknown_calls` rather than as free.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageTotals {
    pub llm_calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: f64,
    pub cost_unknown_calls: u64,
}

impl UsageTotals {
    fn add(&mut self, prompt: u64, completion: u64, cost: Option<f64>) {
        self.llm_calls += 1;
        self.prompt_tokens += prompt;
        self.completion_tokens += completion;
        self.total_tokens += prompt + completion;
        match cost {
            Some(c) => self.cost_usd += c,
            None => self.cost_unknown_calls += 1,
        }
    }
}

/// Token and cost totals of LLM calls, overall and per model and endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    #[serde(flatten)]
    pub total: UsageTotals,
    pub by_model: BTreeMap<String, UsageTotals>,
    pub by_endpoint: BTreeMap<String, UsageTotals>,
}

/// What a task's result says about its LLM calls, summed.
pub fn usage(tasks: &[TaskRecord]) -> Usage {
    let mut sum = Usage::default();
    for result in tasks.iter().filter_map(|t| t.result.as_ref()) {
        let Some(usage) = result.get("usage") else {
            continue;
        };
        let tokens = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
        let (prompt, completion) = (tokens("prompt_tokens"), tokens("completion_tokens"));
        let cost = result.get("cost_usd").and_then(Value::as_f64);
        sum.total.add(prompt, completion, cost);
        if let Some(model) = result.get("model").and_then(Value::as_str) {
            sum.by_model
                .entry(model.to_string())
                .or_default()
                .add(prompt, completion, cost);
        }
        if let Some(endpoint) = result.get("endpoint").and_then(Value::as_str) {
            sum.by_endpoint
                .entry(endpoint.to_string())
                .or_default()
                .add(prompt, completion, cost);
        }
    }
    sum
}

pub fn workflow_json(record: &WorkflowRecord, tasks: &[TaskRecord]) -> Value {
    serde_json::to_value(WorkflowView::new(record, tasks)).unwrap_or(Value::Null)
}
