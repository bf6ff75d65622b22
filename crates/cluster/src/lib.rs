//! Scale-out over Redis. A scheduler (`gleitzeit serve --backend redis`) keeps
//! running workflows as usual but hands each task call to [`RedisDispatcher`],
//! which puts it on a Redis stream; `gleitzeit worker` nodes ([`worker`]) read
//! those streams through a consumer group, run the call with their own
//! providers and record the outcome.
//!
//! Guarantees, and where they come from:
//! - A call is enqueued once per attempt (`dispatch.lua` checks a per-workflow
//!   hash first), so a restarted scheduler that re-dispatches its running tasks
//!   does not run them twice.
//! - An outcome is recorded once: the worker acknowledges the entry and stores
//!   the outcome in one script, and only the first acknowledgement counts.
//! - Nothing is lost when a worker dies: its entries stay pending in the group
//!   until another worker takes them over (`XAUTOCLAIM`) after `reclaim_after`.
//!   A live worker keeps its entries fresh on every heartbeat.
//! - An entry delivered more than `max_deliveries` times has killed that many
//!   workers: it goes to the dead letters with its history, and its task fails
//!   with GZ1006.

#![forbid(unsafe_code)]

pub mod admin;
mod dispatch;
mod keys;
mod limits;
mod protocol;
pub mod worker;

pub use dispatch::{DispatchOptions, RedisDispatcher};
pub use keys::Keys;
pub use limits::RedisLimits;
pub use protocol::{DeadLetter, NodeInfo, Outcome, TaskMessage, PROTOCOL_VERSION};
pub use worker::{Worker, WorkerOptions};

use gleitzeit_core::{ErrorCode, GzError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use gleitzeit_runtime::hostname;

/// The consumer group every worker reads the queues through.
pub const GROUP: &str = "workers";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    // Shared so the error stays `Clone`; the cause stays reachable through `source()`.
    #[error("Redis command failed: {0}")]
    Redis(#[source] Arc<redis::RedisError>),
    /// A queue message or node record that cannot be written as JSON.
    #[error("cannot encode a message for Redis: {0}")]
    Encode(#[source] Arc<serde_json::Error>),
    #[error("this worker speaks queue protocol {ours}, the cluster at {url} speaks {theirs}")]
    Incompatible {
        ours: u32,
        theirs: String,
        url: String,
    },
    #[error("dead letter `{0}` not found")]
    DeadLetterNotFound(String),
    #[error("node `{0}` not found")]
    NodeNotFound(String),
    #[error("dead letter {id} is not a task call ({reason}), so there is nothing to retry")]
    NotRetryable { id: String, reason: String },
}

impl ClusterError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ClusterError::Unreachable { .. } | ClusterError::Redis(_) | ClusterError::Encode(_) => {
                ErrorCode::RedisConnectionFailed
            }
            ClusterError::Incompatible { .. } => ErrorCode::IncompatibleWorker,
            ClusterError::DeadLetterNotFound(_)
            | ClusterError::NodeNotFound(_)
            | ClusterError::NotRetryable { .. } => ErrorCode::InvalidArgument,
        }
    }
}

impl From<ClusterError> for GzError {
    fn from(error: ClusterError) -> GzError {
        let gz = GzError::new(error.code(), error.to_string());
        match error {
            ClusterError::DeadLetterNotFound(_) => {
                gz.with_hint("`gleitzeit dead-letters list` shows the ids.")
            }
            ClusterError::NodeNotFound(_) => gz.with_hint("`gleitzeit nodes` lists the nodes."),
            ClusterError::NotRetryable { .. } => {
                gz.with_hint("Remove it with `gleitzeit dead-letters drop ID`.")
            }
            _ => gz,
        }
    }
}

impl From<redis::RedisError> for ClusterError {
    fn from(error: redis::RedisError) -> ClusterError {
        ClusterError::Redis(Arc::new(error))
    }
}

impl From<serde_json::Error> for ClusterError {
    fn from(error: serde_json::Error) -> ClusterError {
        ClusterError::Encode(Arc::new(error))
    }
}

/// Connection errors are worth waiting out; anything else is a bug or bad data.
pub(crate) fn is_transient(error: &redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

/// A connection for ordinary commands (it reconnects by itself), checked with a
/// PING so a wrong URL fails at start, not at the first task.
pub async fn connect(
    url: &str,
    response_timeout: Option<Duration>,
) -> Result<ConnectionManager, ClusterError> {
    let unreachable = |reason: String| ClusterError::Unreachable {
        url: gleitzeit_store::redact_url(url),
        reason,
    };
    let client = redis::Client::open(url).map_err(|e| unreachable(e.to_string()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(response_timeout)
        .set_max_delay(Duration::from_secs(2));
    let connect = ConnectionManager::new_with_config(client, config);
    let mut conn = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| unreachable("no answer within 5 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    redis::cmd("PING")
        .query_async::<String>(&mut conn)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    Ok(conn)
}

/// Waits out a Redis outage: 100 ms doubling to 2 s between tries.
pub(crate) struct Backoff(Duration);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(Duration::from_millis(100))
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
    }
}
