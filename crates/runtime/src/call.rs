//! One provider call of one task attempt, and where it runs: in this process
//! (the default) or on worker nodes through a [`RemoteExecutor`] (scale-out).
//! Both paths answer with the same `Result<Value, GzError>`, so the run loop
//! does not know which one it used.

use crate::Runtime;
use async_trait::async_trait;
use gleitzeit_core::access::FileAccess;
use gleitzeit_core::events::{AttemptRef, Event, EventPayload, LlmToken, TaskOutput};
use gleitzeit_core::{ErrorCode, GzError, Requires};
use gleitzeit_providers::{CallContext, ProviderEvent};
use gleitzeit_store::now_ms;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Everything a process needs to run one attempt of a task: parameters with
/// every reference resolved, so no other task's data is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCall {
    pub workflow_id: String,
    pub task_id: String,
    pub task_name: String,
    pub attempt: u32,
    pub method: String,
    pub params: Value,
    /// Seconds per attempt, enforced where the call runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Requires::is_empty")]
    pub requires: Requires,
    /// The workflow's file grant, enforced wherever the call runs (worker
    /// nodes too). Missing in an entry means no file access.
    #[serde(default)]
    pub files: FileAccess,
}

impl TaskCall {
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_s
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(Duration::from_secs_f64)
    }
}

/// Runs task calls somewhere else (worker nodes). The returned future resolves
/// with the call's result once it is recorded where the executor keeps results;
/// dropping it (cancel) asks the executor to stop the call.
#[async_trait]
pub trait RemoteExecutor: Send + Sync {
    async fn execute(&self, call: TaskCall) -> Result<Value, GzError>;
    /// The workflow reached a terminal state and its results are in the store:
    /// whatever the executor kept for it may go.
    async fn workflow_finished(&self, workflow_id: &str);
}

impl Runtime {
    /// The file grant of `workflow`'s tasks: its own, or this runtime's
    /// default for workflows that carry none.
    pub fn files_for(&self, workflow: &gleitzeit_core::Workflow) -> FileAccess {
        workflow
            .access
            .clone()
            .unwrap_or_else(|| self.config.files.clone())
    }

    /// Runs one call with this process's providers: its timeout and cancel
    /// token apply, and streamed tokens and output lines are stored (and
    /// flushed before this returns, so they precede the task's result).
    pub async fn call_here(
        &self,
        call: TaskCall,
        cancel: CancellationToken,
    ) -> Result<Value, GzError> {
        let timeout = call.timeout();
        let streamed = Arc::new(AtomicBool::new(false));
        let sink: gleitzeit_providers::EventSink = {
            let rt = self.clone();
            let streamed = streamed.clone();
            let workflow_id = call.workflow_id.clone();
            let attempt = AttemptRef {
                task_id: call.task_id.clone(),
                task_name: call.task_name.clone(),
                attempt: call.attempt,
            };
            Arc::new(move |event: ProviderEvent| {
                let task = attempt.clone();
                let payload = match event {
                    ProviderEvent::Token { text } => {
                        EventPayload::LlmToken(LlmToken { task, token: text })
                    }
                    ProviderEvent::Log { line } => {
                        EventPayload::TaskOutput(TaskOutput { task, line })
                    }
                };
                streamed.store(true, Ordering::Relaxed);
                rt.live.send(
                    &rt.store,
                    &rt.events,
                    Event::new(payload, workflow_id.clone(), now_ms()),
                );
            })
        };
        let ctx = CallContext {
            workflow_id: call.workflow_id.clone(),
            task_id: call.task_id.clone(),
            attempt: call.attempt,
            timeout,
            cancel: cancel.clone(),
            events: Some(sink),
            files: gleitzeit_providers::FileGuard::new(&call.files, &self.config.file_policy),
        };
        let outcome = match self.registry.for_method(&call.method).cloned() {
            None => Err(GzError::new(
                ErrorCode::ProviderUnavailable,
                format!(
                    "no provider for `{}` is enabled in this process",
                    call.method
                ),
            )),
            Some(provider) => {
                tokio::select! {
                    result = provider.call(&call.method, call.params, &ctx) => result,
                    _ = cancel.cancelled() => Err(GzError::new(ErrorCode::TaskCancelled, "cancelled")),
                    _ = sleep_or_forever(timeout) => Err(GzError::new(
                        ErrorCode::TaskTimeout,
                        format!(
                            "task `{}` exceeded its timeout of {:.1} s",
                            call.task_id,
                            timeout.unwrap_or_default().as_secs_f64()
                        ),
                    )),
                }
            }
        };
        if streamed.load(Ordering::Relaxed) {
            self.live.flush(&self.store, &self.events).await;
        }
        outcome
    }
}

async fn sleep_or_forever(timeout: Option<Duration>) {
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
}
