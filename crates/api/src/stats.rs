//! `GET /api/v1/stats` and `gleitzeit stats`: counts by state, the queue, and
//! what finished in a recent window.

use crate::views::{usage, Usage};
use gleitzeit_core::{GzError, WorkflowState};
use gleitzeit_store::TaskRecord;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Window in minutes for throughput and durations (default 60).
    pub range_minutes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    pub range_minutes: u64,
    pub workflows_by_state: BTreeMap<String, u64>,
    pub tasks_by_state: BTreeMap<String, u64>,
    /// Tasks waiting to run (pending or retrying).
    pub queue_depth: u64,
    pub active_runs: usize,
    pub window: StatsWindow,
}

/// What finished within `range_minutes`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsWindow {
    pub tasks_finished: u64,
    pub by_state: BTreeMap<String, u64>,
    pub failure_rate: f64,
    pub tasks_per_minute: f64,
    pub methods: BTreeMap<String, MethodStats>,
    pub usage: Usage,
    pub timeline: Vec<TimelineBucket>,
}

/// Durations of one method's finished tasks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MethodStats {
    pub count: usize,
    pub avg_ms: i64,
    pub p50_ms: i64,
    pub p95_ms: i64,
    pub max_ms: i64,
}

/// One slice of the window, for charts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineBucket {
    pub start_ms: i64,
    pub minutes: f64,
    pub finished: u64,
    pub failed: u64,
    /// Average duration of the tasks that finished in it; null when none.
    pub avg_ms: Option<i64>,
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
) -> Result<Stats, GzError> {
    let totals = store.stats().await?;
    let since = gleitzeit_store::now_ms() - (range_minutes as i64) * 60_000;
    let finished = store.tasks_finished_since(since, 100_000).await?;
    Ok(summarize(
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
) -> Result<Stats, GzError> {
    let since = gleitzeit_store::now_ms() - (range_minutes as i64) * 60_000;
    let mine = store
        .list_workflows(&gleitzeit_store::ListFilter {
            state: None,
            submitted_by: Some(user.to_string()),
            limit: 0,
            offset: 0,
            schedule: None,
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
    Ok(summarize(
        workflows.into_iter().collect(),
        tasks.into_iter().collect(),
        &finished,
        since,
        range_minutes,
        running,
    ))
}

fn summarize(
    workflows_by_state: Vec<(String, u64)>,
    tasks_by_state: Vec<(String, u64)>,
    finished: &[TaskRecord],
    since: i64,
    range_minutes: u64,
    active_runs: usize,
) -> Stats {
    let mut by_method: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
    for task in finished {
        *by_state.entry(task.state.as_str().to_string()).or_default() += 1;
        if let Some(ms) = task.duration_ms() {
            by_method.entry(task.method.as_str()).or_default().push(ms);
        }
    }
    let methods = by_method
        .into_iter()
        .map(|(method, mut durations)| {
            durations.sort_unstable();
            let total: i64 = durations.iter().sum();
            let view = MethodStats {
                count: durations.len(),
                avg_ms: total / durations.len().max(1) as i64,
                p50_ms: percentile(&durations, 0.5),
                p95_ms: percentile(&durations, 0.95),
                max_ms: durations.last().copied().unwrap_or(0),
            };
            (method.to_string(), view)
        })
        .collect();
    let done = finished.len() as u64;
    let failed = by_state.get("failed").copied().unwrap_or(0);
    let queue_depth: u64 = tasks_by_state
        .iter()
        .filter(|(s, _)| s == "pending" || s == "retrying")
        .map(|(_, n)| n)
        .sum();
    Stats {
        range_minutes,
        workflows_by_state: workflows_by_state.into_iter().collect(),
        tasks_by_state: tasks_by_state.into_iter().collect(),
        queue_depth,
        active_runs,
        window: StatsWindow {
            tasks_finished: done,
            by_state,
            failure_rate: if done == 0 {
                0.0
            } else {
                failed as f64 / done as f64
            },
            tasks_per_minute: done as f64 / range_minutes as f64,
            methods,
            usage: usage(finished),
            timeline: timeline(finished, since, range_minutes),
        },
    }
}

/// Buckets of the window for charts: how many tasks finished (and failed) in
/// each, and their average duration.
pub const TIMELINE_BUCKETS: i64 = 24;

fn timeline(finished: &[TaskRecord], since_ms: i64, range_minutes: u64) -> Vec<TimelineBucket> {
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
        .map(|(i, (count, failed, total_ms, timed))| TimelineBucket {
            start_ms: since_ms + i as i64 * width,
            minutes: width as f64 / 60_000.0,
            finished: *count,
            failed: *failed,
            avg_ms: (*timed != 0).then(|| total_ms / timed),
        })
        .collect()
}
