//! Where workflows live: the [`Store`] trait and its implementations — in memory
//! (tests, `--ephemeral`), SQLite (the default, one file, WAL) and Redis (shared
//! by several processes). Every write goes through [`Store::apply`], which commits
//! a batch atomically; the runtime announces a change only after `apply` returns.

#![forbid(unsafe_code)]

mod memory;
mod redis_store;
mod sqlite;

pub use memory::MemoryStore;
pub use redis_store::{redact_url, RedisOptions, RedisStore};
pub use sqlite::{SqliteOptions, SqliteStore};

use async_trait::async_trait;
use gleitzeit_core::events::Event;
use gleitzeit_core::{ErrorCode, GzError, TaskState, Workflow, WorkflowState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database is locked by another process: {0}")]
    Locked(String),
    #[error("database file is corrupt or not a Gleitzeit database: {0}")]
    Corrupt(String),
    #[error("database schema version {found} is newer than this gleitzeit supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("cannot open database {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("workflow `{0}` not found")]
    WorkflowNotFound(String),
    #[error("workflow id prefix `{0}` matches several workflows: {1}")]
    Ambiguous(String, String),
    /// Redis did not answer (within the retry window); `url` has no password.
    #[error("cannot reach Redis at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// A record nested deeper than stored JSON can be read back; refused
    /// before anything is written.
    #[error("{0}")]
    Unstorable(String),
    // The causes below are shared so the error stays `Clone`; they stay
    // reachable through `source()`.
    /// SQLite refused for a reason that has no code of its own.
    #[error("database error: {0}")]
    Sqlite(#[source] Arc<rusqlite::Error>),
    /// Redis refused a command for a reason other than the connection.
    #[error("database error: Redis: {0}")]
    Redis(#[source] Arc<redis::RedisError>),
    #[error("database error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::Locked(_) => ErrorCode::DatabaseLocked,
            StoreError::Corrupt(_) => ErrorCode::DatabaseCorrupt,
            StoreError::SchemaTooNew { .. } => ErrorCode::SchemaTooNew,
            StoreError::Open { .. } => ErrorCode::FileWriteFailed,
            StoreError::WorkflowNotFound(_) | StoreError::Ambiguous(..) => {
                ErrorCode::WorkflowNotFound
            }
            StoreError::Unreachable { .. } => ErrorCode::RedisConnectionFailed,
            StoreError::Unstorable(_) => ErrorCode::InputLimitExceeded,
            StoreError::Sqlite(_) | StoreError::Redis(_) | StoreError::Other(_) => {
                ErrorCode::DatabaseError
            }
        }
    }
}

impl From<StoreError> for GzError {
    fn from(error: StoreError) -> GzError {
        let mut gz = GzError::new(error.code(), error.to_string());
        if let StoreError::Ambiguous(..) = error {
            gz = gz.with_hint("Give more characters of the id.");
        }
        gz
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The process that is executing a workflow, so another process can tell a live
/// run from one that was killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    pub id: String,
    pub name: String,
    pub state: WorkflowState,
    pub spec: Workflow,
    /// The file it was loaded from, if any.
    pub source: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub error: Option<GzError>,
    pub cancel_requested: bool,
    pub owner: Option<Owner>,
    /// The user who submitted it through the API (`None`: the local CLI).
    #[serde(default)]
    pub submitted_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub workflow_id: String,
    pub task_id: String,
    /// Position in the workflow file.
    pub position: u32,
    pub method: String,
    pub state: TaskState,
    /// Attempts started so far.
    pub attempt: u32,
    pub result: Option<Value>,
    pub error: Option<GzError>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
}

impl TaskRecord {
    /// A task that has not started: what a new or resumed workflow begins with.
    pub fn pending(workflow_id: &str, position: u32, task_id: &str, method: &str) -> TaskRecord {
        TaskRecord {
            workflow_id: workflow_id.to_string(),
            task_id: task_id.to_string(),
            position,
            method: method.to_string(),
            state: TaskState::Pending,
            attempt: 0,
            result: None,
            error: None,
            started_ms: None,
            finished_ms: None,
        }
    }

    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_ms? - self.started_ms?)
    }
}

/// One change; [`Store::apply`] commits a batch of them atomically.
#[derive(Debug, Clone)]
// A typed event is the largest change; writes are built once and moved into
// a batch, so boxing it would only add an allocation per event.
#[allow(clippy::large_enum_variant)]
pub enum Write {
    /// Insert or replace a task row.
    Task(TaskRecord),
    Workflow {
        id: String,
        state: WorkflowState,
        at_ms: i64,
        error: Option<GzError>,
    },
    Event(Event),
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<WorkflowState>,
    /// Only workflows this user submitted.
    pub submitted_by: Option<String>,
    /// Only runs this schedule started (`trigger.id`).
    pub schedule: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowSummary {
    pub id: String,
    pub name: String,
    pub state: WorkflowState,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub total: u32,
    pub completed: u32,
    pub failed: u32,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    pub workflows_by_state: Vec<(String, u64)>,
    pub tasks_by_state: Vec<(String, u64)>,
}

/// A user of the server. The role is kept as text (`ADMIN`, …); what it may
/// do is the auth crate's business.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub email: Option<String>,
    pub role: String,
    pub disabled: bool,
    pub created_ms: i64,
}

/// An API key: only its hash is kept, and a public id to name it by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub user: String,
    /// A role narrower than the user's, if the key was made with one.
    pub role: Option<String>,
    pub hash: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
}

/// Who did what, when: authentication failures, key and user changes,
/// cancellations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(default)]
    pub seq: u64,
    pub at_ms: i64,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    /// The client's address, when known.
    pub client: Option<String>,
}

/// A registered trigger: a workflow and what starts it, with the state the
/// schedulers share. Every change is a compare-and-set on `version`
/// ([`Store::put_schedule`]), so of several schedulers reading the same
/// schedule only one can advance it past a tick: each tick fires once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub id: String,
    /// The workflow's name.
    pub name: String,
    /// The workflow each run starts, as validated when it was registered.
    pub spec: Workflow,
    /// The file it was registered from, if any.
    pub source: Option<String>,
    pub trigger: gleitzeit_core::triggers::Trigger,
    pub created_ms: i64,
    /// The API user who registered it; its runs are theirs (`None`: the local CLI).
    pub submitted_by: Option<String>,
    pub paused: bool,
    /// The next tick not yet handled (`None`: webhooks, folders, or a cron
    /// expression with no further date).
    pub next_fire_ms: Option<i64>,
    /// The latest tick that started a run.
    pub last_fire_ms: Option<i64>,
    pub last_run_id: Option<String>,
    /// A tick kept by `overlap: buffer_one` until the running one ends.
    pub buffered_tick_ms: Option<i64>,
    /// Ticks that started a run, ticks skipped (overlap or missed while
    /// down), ticks whose run could not be started.
    pub fired: u64,
    pub skipped: u64,
    pub failed: u64,
    pub last_error: Option<GzError>,
    /// Hex SHA-256 of a webhook's secret (the secret itself is shown once,
    /// when the hook is registered).
    #[serde(default)]
    pub hook_secret_sha256: Option<String>,
    /// The stored version: set by the store when read, ignored when written.
    #[serde(default)]
    pub version: u64,
}

/// A stored successful result of a task call with `cache:`, found again by
/// the hash of its method and fully resolved parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Hex SHA-256 of the canonical JSON of method and parameters (or of the
    /// task's own `cache.key`).
    pub key: String,
    pub method: String,
    /// The call's whole result record.
    pub result: Value,
    pub created_ms: i64,
    /// `None`: kept until `cache clear`.
    pub expires_ms: Option<i64>,
}

impl CacheEntry {
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expires_ms.is_none_or(|at| at > now_ms)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Entries that can still be used.
    pub entries: u64,
    /// Entries past their expiry that are still stored (removed by the next
    /// `cache_put` or `cache clear`; Redis drops them on its own).
    pub expired: u64,
    /// Size of the stored results (JSON text).
    pub bytes: u64,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// Stores a new workflow and all its tasks in one transaction.
    async fn create_workflow(&self, workflow: &WorkflowRecord, tasks: &[TaskRecord]) -> Result<()>;
    /// Commits the batch atomically; returns after it is durable, with the
    /// sequence numbers its events got (monotonic across the store), in order.
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<u64>>;
    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>>;
    /// Finds a workflow by full id or a unique prefix.
    async fn find_workflow(&self, id_or_prefix: &str) -> Result<WorkflowRecord>;
    /// Finds one submitter's workflow by full id or a prefix unique among
    /// that submitter's workflows. Everyone else's workflows count as absent,
    /// so neither the answer nor its wording tells anything about them.
    async fn find_workflow_of(
        &self,
        id_or_prefix: &str,
        submitted_by: &str,
    ) -> Result<WorkflowRecord>;
    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>>;
    async fn list_workflows(&self, filter: &ListFilter) -> Result<Vec<WorkflowSummary>>;
    async fn request_cancel(&self, workflow_id: &str) -> Result<()>;
    /// Sets the owner if it is still `expected` (compare-and-set); false otherwise.
    async fn claim(
        &self,
        workflow_id: &str,
        expected: Option<&Owner>,
        owner: Option<&Owner>,
    ) -> Result<bool>;
    /// Stored events of a workflow (or all workflows) after `after_seq`.
    async fn events(
        &self,
        workflow_id: Option<&str>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>>;
    /// Stored events of the workflows `user` submitted, after `after_seq`, in
    /// sequence order: what a stream limited to its caller's own workflows
    /// reads. Found through the user's workflows, so its cost follows what
    /// the user did, not what everyone did.
    async fn events_submitted_by(
        &self,
        user: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>>;
    /// The highest event sequence number stored so far (0 when none).
    async fn latest_event_seq(&self) -> Result<u64>;
    /// The highest event sequence number of one workflow (0 when none).
    async fn latest_event_seq_of(&self, workflow_id: &str) -> Result<u64>;
    /// Tasks that finished (completed, failed, …) at or after `since_ms`,
    /// newest first, for `stats --range`.
    async fn tasks_finished_since(&self, since_ms: i64, limit: usize) -> Result<Vec<TaskRecord>>;
    async fn stats(&self) -> Result<StoreStats>;

    /// Inserts or replaces a user.
    async fn put_user(&self, user: &UserRecord) -> Result<()>;
    async fn users(&self) -> Result<Vec<UserRecord>>;
    /// Inserts or replaces a key (by id).
    async fn put_key(&self, key: &KeyRecord) -> Result<()>;
    async fn keys(&self) -> Result<Vec<KeyRecord>>;
    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>>;
    /// Appends to the audit log; returns the entry's sequence number.
    async fn audit(&self, entry: &AuditEntry) -> Result<u64>;
    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>>;

    /// The entry under `key` if it has not expired at `now_ms`.
    async fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<CacheEntry>>;
    /// Inserts or replaces an entry (by key); may drop expired entries.
    async fn cache_put(&self, entry: &CacheEntry) -> Result<()>;
    /// Removes every entry; returns how many were stored.
    async fn cache_clear(&self) -> Result<u64>;
    async fn cache_stats(&self, now_ms: i64) -> Result<CacheStats>;

    /// Writes `schedule` if the stored version is still `expected` (`None`:
    /// no schedule with its id exists); the stored version becomes
    /// `expected + 1` (1 for a new one). `false`: someone else changed or
    /// created it first, nothing was written.
    async fn put_schedule(&self, schedule: &ScheduleRecord, expected: Option<u64>) -> Result<bool>;
    /// Every schedule, oldest first.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>>;
    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>>;
    /// Removes a schedule; `false` when there was none.
    async fn delete_schedule(&self, id: &str) -> Result<bool>;
}

/// The schedule with this id, or the only one whose id starts with it.
pub async fn find_schedule(
    store: &dyn Store,
    id_or_prefix: &str,
) -> Result<ScheduleRecord, GzError> {
    if let Some(found) = store.schedule(id_or_prefix).await? {
        return Ok(found);
    }
    let mut matches: Vec<ScheduleRecord> = store
        .schedules()
        .await?
        .into_iter()
        .filter(|s| !id_or_prefix.is_empty() && s.id.starts_with(id_or_prefix))
        .collect();
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(GzError::new(
            ErrorCode::ScheduleNotFound,
            format!("no schedule `{id_or_prefix}`"),
        )),
        _ => Err(GzError::new(
            ErrorCode::ScheduleNotFound,
            format!(
                "schedule id prefix `{id_or_prefix}` matches several schedules: {}",
                matches
                    .iter()
                    .map(|s| s.id.as_str())
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .with_hint("Give more characters of the id.")),
    }
}

/// A workflow whose stored row cannot be decoded (written by an older
/// version, or damaged): shown and kept as failed with GZ5008, so one bad row
/// never stops the server or hides the other workflows.
pub(crate) fn unreadable_workflow(
    id: String,
    name: String,
    created_ms: i64,
    finished_ms: Option<i64>,
    submitted_by: Option<String>,
    reason: &str,
) -> WorkflowRecord {
    WorkflowRecord {
        spec: Workflow {
            name: name.clone(),
            description: None,
            inputs: Default::default(),
            tasks: Vec::new(),
            outputs: Default::default(),
            budget: None,
            triggers: Vec::new(),
            trigger: None,
            // Nothing of it runs: it grants nothing.
            access: None,
        },
        name,
        state: WorkflowState::Failed,
        source: None,
        created_ms,
        started_ms: None,
        finished_ms: finished_ms.or(Some(created_ms)),
        error: Some(unreadable_error(&format!("workflow `{id}`"), reason)),
        cancel_requested: false,
        owner: None,
        submitted_by,
        id,
    }
}

/// The store never holds what it cannot read back: every JSON document a
/// write would store is held to the depth the reader accepts.
pub(crate) fn check_storable_workflow(
    workflow: &WorkflowRecord,
    tasks: &[TaskRecord],
) -> Result<()> {
    gleitzeit_core::limits::check_storable_workflow(&workflow.spec)
        .map_err(|e| StoreError::Unstorable(e.message))?;
    check_storable_tasks(tasks.iter())
}

pub(crate) fn check_storable_writes(writes: &[Write]) -> Result<()> {
    for write in writes {
        if let Write::Event(event) = write {
            storable(&event.stored_data().1, "an event")?;
        }
    }
    check_storable_tasks(writes.iter().filter_map(|w| match w {
        Write::Task(task) => Some(task),
        _ => None,
    }))
}

pub(crate) fn check_storable_schedule(schedule: &ScheduleRecord) -> Result<()> {
    gleitzeit_core::limits::check_storable_workflow(&schedule.spec)
        .map_err(|e| StoreError::Unstorable(e.message))?;
    let inputs = Value::Object(schedule.trigger.inputs.clone());
    storable(&inputs, "a trigger's inputs")
}

fn check_storable_tasks<'t>(tasks: impl Iterator<Item = &'t TaskRecord>) -> Result<()> {
    for task in tasks {
        if let Some(result) = &task.result {
            storable(result, "a task's result")?;
        }
    }
    Ok(())
}

fn storable(value: &Value, what: &str) -> Result<()> {
    gleitzeit_core::limits::check_storable(value, what)
        .map_err(|e| StoreError::Unstorable(e.message))
}

pub(crate) fn unreadable_error(what: &str, reason: &str) -> GzError {
    GzError::new(
        ErrorCode::StoredRecordUnreadable,
        format!("the stored {what} cannot be read back: {reason}"),
    )
}

/// The data of a stored event that cannot be decoded, in place of it.
pub(crate) fn unreadable_event_data(reason: &str) -> Value {
    serde_json::json!({ "error": unreadable_error("event", reason) })
}

/// A stored event read back from its kind and data. One that does not
/// decode as its kind (damaged, or written by a newer version) is neither
/// skipped nor an error: skipping would make a short page look like the end
/// of the log, and an error would stop every reader at it. It is passed on
/// as [`gleitzeit_core::events::EventPayload::Undecoded`], exactly as stored,
/// with a warning here.
pub(crate) fn stored_event(
    seq: u64,
    kind: String,
    workflow_id: String,
    at_ms: i64,
    data: Value,
) -> Event {
    let (event, undecoded) = Event::from_stored(seq, kind, workflow_id, at_ms, data);
    if let Some(why) = undecoded {
        tracing::warn!("stored event {seq} is passed on undecoded: {why}");
    }
    event
}

/// A task whose stored result or error cannot be decoded becomes failed with
/// GZ5008 instead of making its workflow unreadable.
pub(crate) fn mark_task_unreadable(task: &mut TaskRecord, reason: &str) {
    task.state = TaskState::Failed;
    task.result = None;
    task.error = Some(unreadable_error(
        &format!("result of task `{}`", task.task_id),
        reason,
    ));
}

/// The answer to a prefix lookup from the workflows that matched (at most a
/// few are needed to tell "several").
pub(crate) fn one_match(
    id_or_prefix: &str,
    mut matches: Vec<WorkflowRecord>,
) -> Result<WorkflowRecord> {
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(StoreError::WorkflowNotFound(id_or_prefix.to_string())),
        _ => Err(StoreError::Ambiguous(
            id_or_prefix.to_string(),
            matches
                .iter()
                .map(|w| w.id.as_str())
                .take(5)
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod conformance;
