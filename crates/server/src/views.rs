//! The JSON shape of workflows and tasks. The API returns it and the CLI prints
//! it (`get --json`, `inspect`), locally or from a server, so scripts see one
//! format either way.

use gleitzeit_core::model::primary_field;
use gleitzeit_core::{GzError, TaskState, WorkflowState};
use gleitzeit_store::{TaskRecord, WorkflowRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub fn error_json(error: &GzError) -> Value {
    json!({
        "code": error.code,
        "message": error.message,
        "hint": error.hint_text(),
        "location": error.location,
        "retryable": error.retryable,
        "details": error.details,
    })
}

/// A task as the API and `get --json` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub id: String,
    pub method: String,
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
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowView {
    pub workflow_id: String,
    pub name: String,
    pub state: WorkflowState,
    pub source: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    #[serde(default)]
    pub cancel_requested: bool,
    #[serde(with = "error_view")]
    pub error: Option<GzError>,
    pub usage: Value,
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
        error.as_ref().map(super::error_json).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<GzError>, D::Error> {
        Option::<GzError>::deserialize(d)
    }
}

pub fn task_json(task: &TaskRecord) -> Value {
    serde_json::to_value(TaskView::new(task)).unwrap_or(Value::Null)
}

/// Token counts summed over the workflow's LLM tasks.
/// Token and cost totals of LLM calls, overall and per model and endpoint.
/// A call without a known price counts in `cost_unknown_calls` rather than
/// as free.
pub fn usage(tasks: &[TaskRecord]) -> Value {
    #[derive(Default)]
    struct Sum {
        calls: u64,
        prompt: u64,
        completion: u64,
        cost: f64,
        unknown: u64,
    }
    impl Sum {
        fn add(&mut self, prompt: u64, completion: u64, cost: Option<f64>) {
            self.calls += 1;
            self.prompt += prompt;
            self.completion += completion;
            match cost {
                Some(c) => self.cost += c,
                None => self.unknown += 1,
            }
        }
        fn json(&self) -> Value {
            json!({
                "llm_calls": self.calls,
                "prompt_tokens": self.prompt,
                "completion_tokens": self.completion,
                "total_tokens": self.prompt + self.completion,
                "cost_usd": self.cost,
                "cost_unknown_calls": self.unknown,
            })
        }
    }
    let mut total = Sum::default();
    let mut by_model: std::collections::BTreeMap<String, Sum> = Default::default();
    let mut by_endpoint: std::collections::BTreeMap<String, Sum> = Default::default();
    for result in tasks.iter().filter_map(|t| t.result.as_ref()) {
        let Some(usage) = result.get("usage") else {
            continue;
        };
        let tokens = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
        let (prompt, completion) = (tokens("prompt_tokens"), tokens("completion_tokens"));
        let cost = result.get("cost_usd").and_then(Value::as_f64);
        total.add(prompt, completion, cost);
        if let Some(model) = result.get("model").and_then(Value::as_str) {
            by_model
                .entry(model.to_string())
                .or_default()
                .add(prompt, completion, cost);
        }
        if let Some(endpoint) = result.get("endpoint").and_then(Value::as_str) {
            by_endpoint
                .entry(endpoint.to_string())
                .or_default()
                .add(prompt, completion, cost);
        }
    }
    let mut value = total.json();
    value["by_model"] = by_model
        .iter()
        .map(|(k, v)| (k.clone(), v.json()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    value["by_endpoint"] = by_endpoint
        .iter()
        .map(|(k, v)| (k.clone(), v.json()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    value
}

pub fn workflow_json(record: &WorkflowRecord, tasks: &[TaskRecord]) -> Value {
    serde_json::to_value(WorkflowView::new(record, tasks)).unwrap_or(Value::Null)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Store-wide counts plus what finished in the last `range_minutes`.
pub async fn stats(
    store: &dyn gleitzeit_store::Store,
    range_minutes: u64,
    active_runs: usize,
) -> Result<Value, GzError> {
    let totals = store.stats().await?;
    let since = gleitzeit_store::now_ms() - (range_minutes as i64) * 60_000;
    let finished = store.tasks_finished_since(since, 100_000).await?;
    Ok(stats_json(
        totals.workflows_by_state,
        totals.tasks_by_state,
        &finished,
        since,
        range_minutes,
        active_runs,
    ))
}

/// The same figures over one user's workflows only, for callers whose reach
/// is their own: nothing in them counts anyone else's work. The cost grows
/// with that user's workflows, not with everyone's.
pub async fn stats_of(
    store: &dyn gleitzeit_store::Store,
    user: &str,
    range_minutes: u64,
) -> Result<Value, GzError> {
    use std::collections::BTreeMap;
    let since = gleitzeit_store::now_ms() - (range_minutes as i64) * 60_000;
    let mine = store
        .list_workflows(&gleitzeit_store::ListFilter {
            state: None,
            submitted_by: Some(user.to_string()),
            limit: 0,
            offset: 0,
        })
        .await?;
    let mut workflows: BTreeMap<String, u64> = BTreeMap::new();
    let mut tasks: BTreeMap<String, u64> = BTreeMap::new();
    let mut finished = Vec::new();
    let mut running = 0;
    for workflow in &mine {
        *workflows
            .entry(workflow.state.as_str().to_string())
            .or_default() += 1;
        if workflow.state == WorkflowState::Running {
            running += 1;
        }
        for task in store.tasks(&workflow.id).await? {
            *tasks.entry(task.state.as_str().to_string()).or_default() += 1;
            if task.finished_ms.is_some_and(|at| at >= since) {
                finished.push(task);
            }
        }
    }
    finished.sort_by_key(|t| std::cmp::Reverse(t.finished_ms));
    Ok(stats_json(
        workflows.into_iter().collect(),
        tasks.into_iter().collect(),
        &finished,
        since,
        range_minutes,
        running,
    ))
}

fn stats_json(
    workflows_by_state: Vec<(String, u64)>,
    tasks_by_state: Vec<(String, u64)>,
    finished: &[TaskRecord],
    since: i64,
    range_minutes: u64,
    active_runs: usize,
) -> Value {
    use std::collections::BTreeMap;
    let mut by_method: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
    for task in finished {
        *by_state.entry(task.state.as_str()).or_default() += 1;
        if let Some(ms) = task.duration_ms() {
            by_method.entry(task.method.as_str()).or_default().push(ms);
        }
    }
    let methods: BTreeMap<&str, Value> = by_method
        .into_iter()
        .map(|(method, mut durations)| {
            durations.sort_unstable();
            let total: i64 = durations.iter().sum();
            let view = json!({
                "count": durations.len(),
                "avg_ms": total / durations.len().max(1) as i64,
                "p50_ms": percentile(&durations, 0.5),
                "p95_ms": percentile(&durations, 0.95),
                "max_ms": durations.last().copied().unwrap_or(0),
            });
            (method, view)
        })
        .collect();
    let done = finished.len() as u64;
    let failed = by_state.get("failed").copied().unwrap_or(0);
    let timeline = timeline(finished, since, range_minutes);
    let queued: u64 = tasks_by_state
        .iter()
        .filter(|(s, _)| s == "pending" || s == "retrying")
        .map(|(_, n)| n)
        .sum();
    json!({
        "range_minutes": range_minutes,
        "workflows_by_state": workflows_by_state.into_iter().collect::<BTreeMap<_, _>>(),
        "tasks_by_state": tasks_by_state.into_iter().collect::<BTreeMap<_, _>>(),
        "queue_depth": queued,
        "active_runs": active_runs,
        "window": {
            "tasks_finished": done,
            "by_state": by_state,
            "failure_rate": if done == 0 { 0.0 } else { failed as f64 / done as f64 },
            "tasks_per_minute": done as f64 / range_minutes as f64,
            "methods": methods,
            "usage": usage(finished),
            "timeline": timeline,
        },
    })
}

/// Buckets of the window for charts: how many tasks finished (and failed) in
/// each, and their average duration.
pub const TIMELINE_BUCKETS: i64 = 24;

fn timeline(finished: &[TaskRecord], since_ms: i64, range_minutes: u64) -> Vec<Value> {
    let width = ((range_minutes as i64) * 60_000 / TIMELINE_BUCKETS).max(1);
    let mut buckets = vec![(0u64, 0u64, 0i64, 0i64); TIMELINE_BUCKETS as usize];
    for task in finished {
        let Some(at) = task.finished_ms else { continue };
        let index = ((at - since_ms) / width).clamp(0, TIMELINE_BUCKETS - 1) as usize;
        let bucket = &mut buckets[index];
        bucket.0 += 1;
        if task.state == gleitzeit_core::TaskState::Failed {
            bucket.1 += 1;
        }
        if let Some(ms) = task.duration_ms() {
            bucket.2 += ms;
            bucket.3 += 1;
        }
    }
    buckets
        .iter()
        .enumerate()
        .map(|(i, (count, failed, total_ms, timed))| {
            json!({
                "start_ms": since_ms + i as i64 * width,
                "minutes": width as f64 / 60_000.0,
                "finished": count,
                "failed": failed,
                "avg_ms": if *timed == 0 { Value::Null } else { json!(total_ms / timed) },
            })
        })
        .collect()
}

/// Providers and their methods, as `/api/v1/providers` and the monitor show
/// them; with `check`, each provider's health too (LLM endpoints are contacted).
pub async fn providers(registry: &gleitzeit_providers::Registry, check: bool) -> Value {
    let mut providers: Vec<_> = registry.providers().collect();
    providers.sort_by_key(|p| p.protocol());
    let mut list = Vec::new();
    for provider in providers {
        let mut entry = json!({"protocol": provider.protocol(), "methods": provider.methods()});
        if check {
            entry["health"] = json!(provider.health().await);
        }
        list.push(entry);
    }
    json!({ "providers": list })
}
