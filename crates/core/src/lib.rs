//! Gleitzeit's core: the workflow model, parsing and validation of workflow files,
//! references between tasks, the pure scheduler and the GZ error registry.
//!
//! Nothing in this crate does I/O, reads a clock or spawns a task: it is the part
//! of Gleitzeit that can be tested exhaustively and replayed exactly.

#![forbid(unsafe_code)]

pub mod access;
pub mod agent;
pub mod errors;
pub mod events;
pub mod expr;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod model;
pub mod parse;
pub mod refs;
pub mod scheduler;
pub mod triggers;
pub mod yaml;

pub use errors::{ErrorCode, GzError};
pub use limits::Limits;
pub use model::{
    CachePolicy, ForEach, OnError, OnSkip, Priority, Requires, RetryPolicy, TaskSpec, TaskState,
    Workflow, WorkflowState,
};
