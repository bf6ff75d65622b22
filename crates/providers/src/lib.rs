//! Providers execute tasks. Each protocol (`python`, `function`, later `llm`,
//! `http`, `mcp`) is one module behind the [`Provider`] trait; the [`Registry`]
//! maps a method to its provider and tells the parser which methods exist.
//!
//! Providers receive parameters with every reference already resolved: they never
//! see other tasks, the store or the scheduler.

// Unsafe only where the Python sandbox needs system calls (marked `allow` there).
#![deny(unsafe_code)]

pub mod function;
pub mod http;
pub mod jsonrpc;
pub mod llm;
pub mod mcp;
pub mod python;
mod registry;
pub mod replay;
pub mod tools;

pub use gleitzeit_functions::{FileGuard, OpenError};
pub use registry::Registry;

use async_trait::async_trait;
use gleitzeit_core::GzError;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Something a provider reports while a call is in flight (LLM tokens later).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProviderEvent {
    Token { text: String },
    Log { line: String },
}

/// Everything a call may need besides its parameters.
#[derive(Clone)]
pub struct CallContext {
    pub workflow_id: String,
    pub task_id: String,
    pub attempt: u32,
    /// Per-attempt limit; the provider must stop its work (kill processes, abort
    /// requests) and return `TaskTimeout` when it passes.
    pub timeout: Option<Duration>,
    /// Cancelled when the workflow is cancelled; the call should return promptly.
    pub cancel: CancellationToken,
    /// Where streamed tokens go while the call runs.
    pub events: Option<EventSink>,
    /// Every path a call opens goes through this: the workflow's grant and
    /// this process's protected files.
    pub files: gleitzeit_functions::FileGuard,
}

/// Receives [`ProviderEvent`]s; the runtime turns them into `llm_token` events.
pub type EventSink = std::sync::Arc<dyn Fn(ProviderEvent) + Send + Sync>;

impl CallContext {
    /// A call outside any workflow; it may open no files until `files` is set.
    pub fn detached(task_id: &str) -> CallContext {
        CallContext {
            workflow_id: String::new(),
            task_id: task_id.to_string(),
            attempt: 1,
            timeout: None,
            cancel: CancellationToken::new(),
            events: None,
            files: gleitzeit_functions::FileGuard::new(
                &gleitzeit_core::access::FileAccess::none(),
                &gleitzeit_core::access::FilePolicy::default(),
            ),
        }
    }
}

/// Whether a provider can take work right now, for `/health` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderHealth {
    pub status: HealthStatus,
    /// Why it is not healthy, in one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Provider-specific state (LLM endpoints, interpreter version, …).
    #[serde(skip_serializing_if = "Value::is_null")]
    pub detail: Value,
}

impl ProviderHealth {
    pub fn healthy(detail: Value) -> ProviderHealth {
        ProviderHealth {
            status: HealthStatus::Healthy,
            reason: None,
            detail,
        }
    }
}

/// A method a provider serves, for `providers list` and validation.
#[derive(Debug, Clone, Serialize)]
pub struct MethodInfo {
    pub method: String,
    pub description: String,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The protocol name, the part of the method before `/`.
    fn protocol(&self) -> &'static str;
    fn methods(&self) -> Vec<MethodInfo>;
    /// Runs one task attempt. `method` is the full `protocol/method`.
    async fn call(&self, method: &str, params: Value, ctx: &CallContext) -> Result<Value, GzError>;
    /// Checks that the provider can work (interpreter found, endpoint reachable)
    /// and warms it up. Called before a workflow that uses it starts, so a broken
    /// setup is reported once, before any task runs.
    async fn prepare(&self) -> Result<(), GzError> {
        Ok(())
    }
    /// Checks the provider now (endpoints reachable, interpreter present).
    async fn health(&self) -> ProviderHealth {
        ProviderHealth::healthy(Value::Null)
    }
    /// Releases processes and connections; called once at shutdown.
    async fn shutdown(&self) {}
}
