//! The validated workflow: what the parser produces and the runtime executes.
//! Everything here is plain data (serde) so a workflow can be stored and resumed
//! by another process without the original file.

use crate::errors::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub inputs: Map<String, Value>,
    pub tasks: Vec<TaskSpec>,
    /// Named results (`outputs:`): templates over this workflow's tasks and
    /// inputs, rendered when it completes; a parent's `workflow/run` task
    /// gets them as its result.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Value>,
    /// Limits on what the workflow's LLM calls may use; once reached, no
    /// further LLM task starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Which files its tasks may open. Never read from a workflow file: the
    /// process that accepts the workflow sets it (the server from the
    /// submitter's role); `None` means the running process's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<crate::access::FileAccess>,
    /// What starts it by itself (`triggers:`): registered with
    /// `schedule add`, never acted on by `run`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<crate::triggers::Trigger>,
    /// What started this run, when a trigger did. Set by whoever starts it,
    /// never read from a workflow file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<crate::triggers::RunTrigger>,
}

/// `budget: {tokens: 100000, cost: 2.5}` (cost in USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl Workflow {
    /// Index of every task by id and by name, for lookups in large workflows.
    pub fn index(&self) -> std::collections::HashMap<&str, usize> {
        let mut index = std::collections::HashMap::with_capacity(self.tasks.len() * 2);
        // Names first, so an id that equals another task's name wins.
        for (i, task) in self.tasks.iter().enumerate() {
            if let Some(name) = &task.name {
                index.insert(name.as_str(), i);
            }
        }
        for (i, task) in self.tasks.iter().enumerate() {
            index.insert(task.id.as_str(), i);
        }
        index
    }

    /// Linear lookup by id, then name; use [`Workflow::index`] for many lookups.
    pub fn task_index(&self, id_or_name: &str) -> Option<usize> {
        self.tasks
            .iter()
            .position(|t| t.id == id_or_name)
            .or_else(|| {
                self.tasks
                    .iter()
                    .position(|t| t.name.as_deref() == Some(id_or_name))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's key: its `id`, or its `name` when no id was given.
    pub id: String,
    /// Human-readable name (may contain spaces); references may use it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Normalised `protocol/method`, e.g. `python/execute`, `function/call`.
    pub method: String,
    pub params: Value,
    /// Ids of the tasks this one waits for, in file order.
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub priority: Priority,
    /// Seconds per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default)]
    pub on_error: OnError,
    /// What a worker node must offer to run this task (scale-out only).
    #[serde(default, skip_serializing_if = "Requires::is_empty")]
    pub requires: Requires,
    /// `when:` condition as written (see `expr`); validated at load, evaluated
    /// by the runtime when the task becomes ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// What a skipped dependency means for this task.
    #[serde(default, skip_serializing_if = "OnSkip::is_skip")]
    pub on_skip: OnSkip,
    /// Fan-out: one call per item, results gathered in item order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEach>,
    /// Instances of a `for_each` task running at once (default: the provider's
    /// concurrency limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<usize>,
    /// Reuse a stored result of the same call (`cache:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
}

impl TaskSpec {
    /// A task with every option at its default, as `exec` and tests build one.
    pub fn new(id: impl Into<String>, method: impl Into<String>, params: Value) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            name: None,
            method: method.into(),
            params,
            dependencies: vec![],
            priority: Default::default(),
            timeout: None,
            retry: RetryPolicy::default(),
            on_error: Default::default(),
            requires: Default::default(),
            when: None,
            on_skip: Default::default(),
            for_each: None,
            max_parallel: None,
            cache: None,
        }
    }
}

/// `cache: true` or `cache: {ttl: 1h, key: "…"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CachePolicy {
    /// Seconds an entry stays usable; `None`: until `gleitzeit cache clear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<f64>,
    /// A template (references allowed) that replaces the parameters in the
    /// key, for calls whose parameters vary in ways that do not matter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// What a task does when a dependency was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnSkip {
    /// The task is skipped too (and so are its dependants).
    #[default]
    Skip,
    /// The task runs; the skipped dependency's `${T.result}` is null.
    Run,
}

impl OnSkip {
    pub const NAMES: &'static [&'static str] = &["skip", "run"];

    pub fn parse(text: &str) -> Option<OnSkip> {
        match text.to_ascii_lowercase().as_str() {
            "skip" => Some(OnSkip::Skip),
            "run" => Some(OnSkip::Run),
            _ => None,
        }
    }

    fn is_skip(&self) -> bool {
        *self == OnSkip::Skip
    }
}

/// The list a `for_each` task fans out over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForEach {
    /// An inline YAML list.
    Items(Vec<serde_json::Value>),
    /// One reference (`${task.result}`), resolved when the task starts; it must
    /// be a list then.
    Ref(String),
    /// `range(n)`: 0, 1, …, n-1. `n` is a number or one reference to a number.
    Range(serde_json::Value),
}

/// Upper bound on a fan-out, so a wrong reference cannot start a billion calls.
pub const MAX_FOR_EACH_ITEMS: usize = 1_000_000;

/// Placement constraints: only worker nodes with a GPU (when `gpu`) and with
/// every listed label run the task. A single-process run ignores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requires {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gpu: bool,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Requires {
    pub fn is_empty(&self) -> bool {
        !self.gpu && self.labels.is_empty()
    }

    /// Whether a node with these properties may run the task.
    pub fn satisfied_by(
        &self,
        gpu: bool,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        (!self.gpu || gpu) && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// A canonical text for the constraint set (`""` when empty), stable across
    /// processes: equal constraints give equal keys.
    pub fn route_key(&self) -> String {
        let mut parts = Vec::new();
        if self.gpu {
            parts.push("gpu".to_string());
        }
        for (k, v) in &self.labels {
            parts.push(format!("{k}={v}"));
        }
        parts.join(",")
    }
}

impl TaskSpec {
    pub fn protocol(&self) -> &str {
        self.method.split('/').next().unwrap_or(&self.method)
    }

    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    pub fn timeout_duration(&self) -> Option<Duration> {
        self.timeout
            .filter(|t| *t > 0.0 && t.is_finite())
            .map(Duration::from_secs_f64)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub const NAMES: &'static [&'static str] = &["low", "normal", "high", "urgent"];

    pub fn parse(text: &str) -> Option<Priority> {
        match text.to_ascii_lowercase().as_str() {
            "low" => Some(Priority::Low),
            "normal" | "medium" => Some(Priority::Normal),
            "high" => Some(Priority::High),
            "urgent" | "critical" => Some(Priority::Urgent),
            _ => None,
        }
    }
}

/// What a task's failure (after its retries) means for the rest of the workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// The workflow fails; tasks not yet started are skipped.
    #[default]
    Stop,
    /// Dependants still run and can read `${T.error}`; the workflow can complete.
    Continue,
    /// Dependants (transitively) are skipped; other branches go on.
    Skip,
    /// Like `stop`, with a default retry policy of 3 attempts when none is given.
    Retry,
}

impl OnError {
    pub const NAMES: &'static [&'static str] = &["stop", "continue", "skip", "retry"];

    pub fn parse(text: &str) -> Option<OnError> {
        match text.to_ascii_lowercase().as_str() {
            "stop" | "fail" => Some(OnError::Stop),
            "continue" => Some(OnError::Continue),
            "skip" => Some(OnError::Skip),
            "retry" => Some(OnError::Retry),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    #[default]
    Exponential,
    Linear,
    Fixed,
}

impl Backoff {
    pub const NAMES: &'static [&'static str] = &["exponential", "linear", "fixed"];

    pub fn parse(text: &str) -> Option<Backoff> {
        match text.to_ascii_lowercase().as_str() {
            "exponential" => Some(Backoff::Exponential),
            "linear" => Some(Backoff::Linear),
            "fixed" | "constant" => Some(Backoff::Fixed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included. 1 means no retry.
    pub max_attempts: u32,
    /// Seconds.
    pub base_delay: f64,
    /// Seconds; caps every delay.
    pub max_delay: f64,
    pub strategy: Backoff,
    pub jitter: bool,
    /// When not empty, only errors with these codes are retried; otherwise every
    /// error marked retryable is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<ErrorCode>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            base_delay: 1.0,
            max_delay: 60.0,
            strategy: Backoff::Exponential,
            jitter: true,
            retry_on: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The policy a `retry:` block starts from before its keys are applied.
    pub fn configured() -> Self {
        RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        }
    }

    /// Delay before attempt `failed_attempt + 1`, without jitter. `failed_attempt`
    /// is 1-based. Deterministic so the schedule can be tested and shown.
    pub fn base_delay_after(&self, failed_attempt: u32) -> Duration {
        let n = failed_attempt.max(1) as f64;
        let raw = match self.strategy {
            Backoff::Exponential => self.base_delay * 2f64.powf(n - 1.0),
            Backoff::Linear => self.base_delay * n,
            Backoff::Fixed => self.base_delay,
        };
        Duration::from_secs_f64(raw.min(self.max_delay).max(0.0))
    }

    /// Applies "equal jitter": half the delay is kept, the other half is scaled by
    /// `sample` in [0, 1). Keeps retries spread out without ever retrying at once.
    pub fn jittered(&self, delay: Duration, sample: f64) -> Duration {
        if !self.jitter {
            return delay;
        }
        let half = delay.as_secs_f64() / 2.0;
        Duration::from_secs_f64(half + half * sample.clamp(0.0, 1.0))
    }

    pub fn should_retry(&self, code: ErrorCode, retryable: bool, failed_attempt: u32) -> bool {
        if failed_attempt >= self.max_attempts {
            return false;
        }
        if self.retry_on.is_empty() {
            retryable
        } else {
            self.retry_on.contains(&code)
        }
    }
}

/// Life cycle of one task. Terminal states never change again except by resume of
/// a non-terminal task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Pending,
    Ready,
    Running,
    Retrying,
    Completed,
    Failed,
    Skipped,
    Cancelled,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Skipped | TaskState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Ready => "ready",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<TaskState> {
        Some(match text {
            "pending" => TaskState::Pending,
            "ready" => TaskState::Ready,
            "running" => TaskState::Running,
            "retrying" => TaskState::Retrying,
            "completed" => TaskState::Completed,
            "failed" => TaskState::Failed,
            "skipped" => TaskState::Skipped,
            "cancelled" => TaskState::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Paused,
}

impl WorkflowState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            WorkflowState::Completed | WorkflowState::Failed | WorkflowState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Pending => "pending",
            WorkflowState::Running => "running",
            WorkflowState::Completed => "completed",
            WorkflowState::Failed => "failed",
            WorkflowState::Cancelled => "cancelled",
            WorkflowState::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<WorkflowState> {
        Some(match text {
            "pending" => WorkflowState::Pending,
            "running" => WorkflowState::Running,
            "completed" => WorkflowState::Completed,
            "failed" => WorkflowState::Failed,
            "cancelled" => WorkflowState::Cancelled,
            "paused" => WorkflowState::Paused,
            _ => return None,
        })
    }
}

/// The field that `${T}` and `${T.result}` stand for, by protocol.
pub fn primary_field(method: &str) -> &'static str {
    if method.starts_with("llm/") {
        if method == "llm/embed" {
            "embeddings"
        } else {
            "response"
        }
    } else {
        "result"
    }
}

/// JSON with object keys sorted at every level, so equal values hash equally
/// whatever order their keys were written in.
pub fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_linear_fixed_schedules_are_capped() {
        let mut policy = RetryPolicy {
            max_attempts: 10,
            base_delay: 1.0,
            max_delay: 5.0,
            strategy: Backoff::Exponential,
            jitter: false,
            retry_on: vec![],
        };
        let secs = |p: &RetryPolicy| {
            (1..=5)
                .map(|n| p.base_delay_after(n).as_secs_f64())
                .collect::<Vec<_>>()
        };
        assert_eq!(secs(&policy), vec![1.0, 2.0, 4.0, 5.0, 5.0]);
        policy.strategy = Backoff::Linear;
        assert_eq!(secs(&policy), vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        policy.strategy = Backoff::Fixed;
        assert_eq!(secs(&policy), vec![1.0; 5]);
    }

    #[test]
    fn jitter_keeps_at_least_half_the_delay() {
        let policy = RetryPolicy::configured();
        let d = Duration::from_secs(4);
        assert_eq!(policy.jittered(d, 0.0), Duration::from_secs(2));
        assert_eq!(policy.jittered(d, 1.0), Duration::from_secs(4));
    }

    #[test]
    fn retry_decision_respects_attempts_and_codes() {
        let mut policy = RetryPolicy::configured();
        assert!(policy.should_retry(ErrorCode::TaskTimeout, true, 1));
        assert!(!policy.should_retry(ErrorCode::TaskTimeout, true, 3));
        assert!(!policy.should_retry(ErrorCode::InvalidParameters, false, 1));
        policy.retry_on = vec![ErrorCode::InvalidParameters];
        assert!(policy.should_retry(ErrorCode::InvalidParameters, false, 1));
        assert!(!policy.should_retry(ErrorCode::TaskTimeout, true, 1));
    }
}
