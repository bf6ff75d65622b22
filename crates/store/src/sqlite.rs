//! The SQLite store: one file in WAL mode. All writes go through one writer thread
//! that commits whatever batches are waiting in a single transaction (group
//! commit), so durability costs one commit per burst rather than per change.
//! Reads use their own connection and never wait for the writer.

use crate::*;
use rusqlite::{params, Connection, ErrorCode as SqlCode, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

const SCHEMA_VERSION: i64 = 4;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS workflows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    spec TEXT NOT NULL,
    source TEXT,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    submitted_by TEXT
);
CREATE INDEX IF NOT EXISTS workflows_by_created ON workflows(created_ms DESC);
CREATE TABLE IF NOT EXISTS tasks (
    workflow_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    method TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    started_ms INTEGER,
    finished_ms INTEGER,
    PRIMARY KEY (workflow_id, task_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_workflow ON events(workflow_id, seq);
CREATE INDEX IF NOT EXISTS tasks_by_finished ON tasks(finished_ms);
"#;

/// Version 2: workflows remember who submitted them; users, keys, audit log.
const AUTH_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS workflows_by_submitter ON workflows(submitted_by, created_ms DESC);
"#;

/// Version 3: results of tasks with `cache:`, by key.
const CACHE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    result TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS cache_by_expiry ON cache(expires_ms) WHERE expires_ms IS NOT NULL;
"#;

/// Version 4: registered triggers (`schedule add`), versioned for
/// compare-and-set.
const SCHEDULE_SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
);
"#;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    /// `FULL` also survives power loss at the cost of an fsync per commit;
    /// `NORMAL` (default) survives any process crash.
    pub synchronous_full: bool,
    pub busy_timeout: Duration,
}

impl SqliteOptions {
    pub fn new(path: impl Into<PathBuf>) -> SqliteOptions {
        SqliteOptions {
            path: path.into(),
            synchronous_full: false,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// The sequence numbers the batch's events got, in order.
type Reply = oneshot::Sender<Result<Vec<u64>>>;

enum Job {
    Create(Box<WorkflowRecord>, Vec<TaskRecord>),
    Apply(Vec<Write>),
    Cancel(String),
    User(UserRecord),
    Key(KeyRecord),
    Audit(AuditEntry),
    CachePut(Box<CacheEntry>),
    /// Answers with the number of entries removed.
    CacheClear,
    /// Answers 1 when written, 0 when the stored version was not the expected one.
    PutSchedule(Box<ScheduleRecord>, Option<u64>),
    /// Answers the number of schedules removed.
    DeleteSchedule(String),
}

struct Request {
    job: Job,
    reply: Reply,
}

pub struct SqliteStore {
    writer: Mutex<mpsc::Sender<Request>>,
    readers: Arc<ReadPool>,
    path: PathBuf,
}

/// Read connections, opened as concurrent reads need them (WAL lets readers
/// run beside the writer and each other), so one slow read — a big
/// workflow's snapshot, an event replay — never queues every other request
/// behind it. A short-lived `gleitzeit run` opens just one.
struct ReadPool {
    options: SqliteOptions,
    state: Mutex<ReadPoolState>,
    returned: std::sync::Condvar,
}

struct ReadPoolState {
    idle: Vec<Connection>,
    opened: usize,
}

const MAX_READERS: usize = 4;

/// A borrowed read connection; it goes back to the pool when dropped, also
/// when a read panics, so the pool never runs out of connections it counted.
struct Lease<'p> {
    conn: Option<Connection>,
    pool: &'p ReadPool,
}

impl Lease<'_> {
    fn conn(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a lease holds its connection until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.give_back(conn);
        }
    }
}

fn open_reader(options: &SqliteOptions) -> Result<Connection> {
    let conn = open_connection(options)?;
    conn.execute_batch("PRAGMA query_only=1")
        .map_err(|e| classify(e, &options.path))?;
    Ok(conn)
}

impl ReadPool {
    fn take(&self) -> Result<Connection> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(conn);
            }
            if state.opened < MAX_READERS {
                state.opened += 1;
                drop(state);
                return open_reader(&self.options).inspect_err(|_| {
                    let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    state.opened -= 1;
                });
            }
            state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.idle.push(conn);
        drop(state);
        self.returned.notify_one();
    }
}

fn classify(error: rusqlite::Error, path: &Path) -> StoreError {
    let text = error.to_string();
    match error.sqlite_error_code() {
        Some(SqlCode::DatabaseBusy) | Some(SqlCode::DatabaseLocked) => {
            StoreError::Locked(path.display().to_string())
        }
        Some(SqlCode::NotADatabase) | Some(SqlCode::DatabaseCorrupt) => {
            StoreError::Corrupt(format!("{}: {text}", path.display()))
        }
        Some(SqlCode::CannotOpen) | Some(SqlCode::ReadOnly) | Some(SqlCode::PermissionDenied) => {
            StoreError::Open {
                path: path.display().to_string(),
                reason: text,
            }
        }
        _ => StoreError::Sqlite(Arc::new(error)),
    }
}

fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn open_connection(options: &SqliteOptions) -> Result<Connection> {
    let path = &options.path;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| classify(e, path))?;
    conn.busy_timeout(options.busy_timeout)
        .map_err(|e| classify(e, path))?;
    Ok(conn)
}

impl SqliteStore {
    pub fn open(options: SqliteOptions) -> Result<SqliteStore> {
        let path = options.path.clone();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let conn = open_connection(&options)?;
        let map = |e| classify(e, &path);
        // The first statement that reads the file tells a corrupt or foreign file.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(map)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(map)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Other(format!(
                "could not enable WAL mode (got {mode})"
            )));
        }
        conn.execute_batch(if options.synchronous_full {
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
        } else {
            "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
        })
        .map_err(map)?;
        if version < SCHEMA_VERSION {
            if version == 1 {
                conn.execute_batch("ALTER TABLE workflows ADD COLUMN submitted_by TEXT")
                    .map_err(map)?;
            } else {
                conn.execute_batch(SCHEMA).map_err(map)?;
            }
            conn.execute_batch(AUTH_SCHEMA).map_err(map)?;
            conn.execute_batch(CACHE_SCHEMA).map_err(map)?;
            conn.execute_batch(SCHEDULE_SCHEMA).map_err(map)?;
            conn.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))
                .map_err(map)?;
        }
        let reader = open_reader(&options)?;

        let (tx, rx) = mpsc::channel::<Request>();
        let writer_path = path.clone();
        std::thread::Builder::new()
            .name("gleitzeit-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, writer_path))
            .map_err(|e| StoreError::Other(format!("cannot start writer thread: {e}")))?;
        Ok(SqliteStore {
            writer: Mutex::new(tx),
            readers: Arc::new(ReadPool {
                options: options.clone(),
                state: Mutex::new(ReadPoolState {
                    idle: vec![reader],
                    opened: 1,
                }),
                returned: std::sync::Condvar::new(),
            }),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn send(&self, job: Job) -> Result<Vec<u64>> {
        let (reply, wait) = oneshot::channel();
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Request { job, reply })
            .map_err(|_| StoreError::Other("database writer has stopped".into()))?;
        wait.await
            .map_err(|_| StoreError::Other("database writer has stopped".into()))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let lease = Lease {
                conn: Some(readers.take()?),
                pool: &readers,
            };
            f(lease.conn()).map_err(|e| classify(e, &path))
        })
        .await
        .map_err(|e| StoreError::Other(format!("read task failed: {e}")))?
    }
}

fn schedule_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    let mut schedule = json_column::<ScheduleRecord>(row, 1)?;
    schedule.version = row.get::<_, i64>(0)? as u64;
    Ok(schedule)
}

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Request>, path: PathBuf) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let together = run_transaction(&mut conn, batch.iter().map(|r| &r.job));
        match together {
            Ok(seqs) => {
                for (request, seqs) in batch.into_iter().zip(seqs) {
                    let _ = request.reply.send(Ok(seqs));
                }
            }
            Err(_) if batch.len() > 1 => {
                // One bad request must not fail its neighbours: retry one by one.
                for request in batch {
                    let result = run_transaction(&mut conn, std::iter::once(&request.job))
                        .map(|mut seqs| seqs.pop().unwrap_or_default());
                    let _ = request.reply.send(result.map_err(|e| classify(e, &path)));
                }
            }
            Err(e) => {
                let error = classify(e, &path);
                for request in batch {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn run_transaction<'a>(
    conn: &mut Connection,
    jobs: impl Iterator<Item = &'a Job>,
) -> rusqlite::Result<Vec<Vec<u64>>> {
    let tx = conn.transaction()?;
    let mut all_seqs = Vec::new();
    for job in jobs {
        let mut seqs = Vec::new();
        match job {
            Job::Create(workflow, tasks) => {
                tx.prepare_cached(
                    "INSERT INTO workflows (id, name, state, spec, source, created_ms, started_ms, finished_ms, error, cancel_requested, owner, submitted_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )?
                .execute(params![
                    workflow.id,
                    workflow.name,
                    workflow.state.as_str(),
                    json_text(&workflow.spec),
                    workflow.source,
                    workflow.created_ms,
                    workflow.started_ms,
                    workflow.finished_ms,
                    workflow.error.as_ref().map(json_text),
                    workflow.cancel_requested,
                    workflow.owner.as_ref().map(json_text),
                    workflow.submitted_by,
                ])?;
                for task in tasks {
                    upsert_task(&tx, task)?;
                }
            }
            Job::Apply(writes) => {
                for write in writes {
                    match write {
                        Write::Task(task) => upsert_task(&tx, task)?,
                        Write::Workflow {
                            id,
                            state,
                            at_ms,
                            error,
                        } => {
                            let mut stmt = tx.prepare_cached(
                                "UPDATE workflows SET state = ?2, error = ?3,
                                   started_ms = CASE WHEN ?2 = 'running' AND started_ms IS NULL THEN ?4 ELSE started_ms END,
                                   finished_ms = CASE WHEN ?2 IN ('completed', 'failed', 'cancelled') THEN ?4 ELSE NULL END,
                                   owner = CASE WHEN ?2 IN ('completed', 'failed', 'cancelled') THEN NULL ELSE owner END
                                 WHERE id = ?1",
                            )?;
                            stmt.execute(params![
                                id,
                                state.as_str(),
                                error.as_ref().map(json_text),
                                at_ms
                            ])?;
                        }
                        Write::Event(event) => {
                            let (kind, data) = event.stored_data();
                            tx.prepare_cached(
                                "INSERT INTO events (workflow_id, kind, at_ms, data) VALUES (?1, ?2, ?3, ?4)",
                            )?
                            .execute(params![event.workflow_id, kind, event.at_ms, json_text(&data)])?;
                            seqs.push(tx.last_insert_rowid() as u64);
                        }
                    }
                }
            }
            Job::Cancel(id) => {
                tx.prepare_cached("UPDATE workflows SET cancel_requested = 1 WHERE id = ?1")?
                    .execute(params![id])?;
            }
            Job::User(user) => {
                tx.prepare_cached("INSERT OR REPLACE INTO users (name, data) VALUES (?1, ?2)")?
                    .execute(params![user.name, json_text(user)])?;
            }
            Job::Key(key) => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO api_keys (id, hash, created_ms, data) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![key.id, key.hash, key.created_ms, json_text(key)])?;
            }
            Job::Audit(entry) => {
                tx.prepare_cached("INSERT INTO audit (data) VALUES (?1)")?
                    .execute(params![json_text(entry)])?;
                seqs.push(tx.last_insert_rowid() as u64);
            }
            Job::CachePut(entry) => {
                // Expired entries go with the writes that add new ones, so the
                // table does not grow without bound between `cache clear`s.
                tx.prepare_cached(
                    "DELETE FROM cache WHERE expires_ms IS NOT NULL AND expires_ms <= ?1",
                )?
                .execute(params![entry.created_ms])?;
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO cache (key, method, created_ms, expires_ms, result) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    entry.key,
                    entry.method,
                    entry.created_ms,
                    entry.expires_ms,
                    json_text(&entry.result)
                ])?;
            }
            Job::CacheClear => {
                let removed = tx.prepare_cached("DELETE FROM cache")?.execute([])?;
                seqs.push(removed as u64);
            }
            Job::PutSchedule(schedule, expected) => {
                let written = match expected {
                    None => tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO schedules (id, created_ms, version, data) VALUES (?1, ?2, 1, ?3)",
                        )?
                        .execute(params![schedule.id, schedule.created_ms, json_text(schedule)])?,
                    Some(version) => tx
                        .prepare_cached(
                            "UPDATE schedules SET version = version + 1, data = ?3 WHERE id = ?1 AND version = ?2",
                        )?
                        .execute(params![schedule.id, *version as i64, json_text(schedule)])?,
                };
                seqs.push(written as u64);
            }
            Job::DeleteSchedule(id) => {
                let removed = tx
                    .prepare_cached("DELETE FROM schedules WHERE id = ?1")?
                    .execute(params![id])?;
                seqs.push(removed as u64);
            }
        }
        all_seqs.push(seqs);
    }
    fail::fail_point!("sqlite.before_commit");
    tx.commit()?;
    // Committed, but nobody has heard of it yet.
    fail::fail_point!("sqlite.after_commit");
    Ok(all_seqs)
}

fn upsert_task(tx: &rusqlite::Transaction, task: &TaskRecord) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO tasks (workflow_id, task_id, position, method, state, attempt, result, error, started_ms, finished_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (workflow_id, task_id) DO UPDATE SET
           state = excluded.state, attempt = excluded.attempt, result = excluded.result,
           error = excluded.error, started_ms = excluded.started_ms, finished_ms = excluded.finished_ms",
    )?
    .execute(params![
        task.workflow_id,
        task.task_id,
        task.position,
        task.method,
        task.state.as_str(),
        task.attempt,
        task.result.as_ref().map(json_text),
        task.error.as_ref().map(json_text),
        task.started_ms,
        task.finished_ms,
    ])?;
    Ok(())
}

/// A NOT NULL JSON column.
fn json_column<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row,
    column: usize,
) -> rusqlite::Result<T> {
    parse_json(row.get(column)?, column)?.ok_or(rusqlite::Error::InvalidColumnType(
        column,
        "json".into(),
        rusqlite::types::Type::Null,
    ))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    column: usize,
) -> rusqlite::Result<Option<T>> {
    match text {
        None => Ok(None),
        Some(t) => serde_json::from_str(&t).map(Some).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                column,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        }),
    }
}

const WORKFLOW_COLUMNS: &str =
    "id, name, state, spec, source, created_ms, started_ms, finished_ms, error, cancel_requested, owner, submitted_by";

fn workflow_row(row: &rusqlite::Row) -> rusqlite::Result<WorkflowRecord> {
    let state: String = row.get(2)?;
    let id: String = row.get(0)?;
    let name: String = row.get(1)?;
    let created_ms: i64 = row.get(5)?;
    let finished_ms: Option<i64> = row.get(7)?;
    let submitted_by: Option<String> = row.get(11)?;
    let decoded = (|| -> rusqlite::Result<(Workflow, Option<GzError>, Option<Owner>)> {
        let spec = parse_json(row.get(3)?, 3)?.ok_or(rusqlite::Error::InvalidColumnType(
            3,
            "spec".into(),
            rusqlite::types::Type::Null,
        ))?;
        Ok((
            spec,
            parse_json(row.get(8)?, 8)?,
            parse_json(row.get(10)?, 10)?,
        ))
    })();
    let (spec, error, owner) = match decoded {
        Ok(parts) => parts,
        Err(e) => {
            return Ok(crate::unreadable_workflow(
                id,
                name,
                created_ms,
                finished_ms,
                submitted_by,
                &e.to_string(),
            ))
        }
    };
    Ok(WorkflowRecord {
        id,
        name,
        state: WorkflowState::parse(&state).unwrap_or(WorkflowState::Failed),
        spec,
        source: row.get(4)?,
        created_ms,
        started_ms: row.get(6)?,
        finished_ms,
        error,
        cancel_requested: row.get(9)?,
        owner,
        submitted_by,
    })
}

fn task_row(row: &rusqlite::Row) -> rusqlite::Result<TaskRecord> {
    let state: String = row.get(4)?;
    let mut task = TaskRecord {
        workflow_id: row.get(0)?,
        task_id: row.get(1)?,
        position: row.get(2)?,
        method: row.get(3)?,
        state: TaskState::parse(&state).unwrap_or(TaskState::Pending),
        attempt: row.get(5)?,
        result: None,
        error: None,
        started_ms: row.get(8)?,
        finished_ms: row.get(9)?,
    };
    match (parse_json(row.get(6)?, 6), parse_json(row.get(7)?, 7)) {
        (Ok(result), Ok(error)) => {
            task.result = result;
            task.error = error;
        }
        (Err(e), _) | (_, Err(e)) => crate::mark_task_unreadable(&mut task, &e.to_string()),
    }
    Ok(task)
}

fn event_row(row: &rusqlite::Row) -> rusqlite::Result<Event> {
    let seq: i64 = row.get(0)?;
    let data = match parse_json(row.get(4)?, 4) {
        Ok(data) => data.unwrap_or(Value::Null),
        Err(e) => crate::unreadable_event_data(&e.to_string()),
    };
    Ok(crate::stored_event(
        seq as u64,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        data,
    ))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_workflow(&self, workflow: &WorkflowRecord, tasks: &[TaskRecord]) -> Result<()> {
        check_storable_workflow(workflow, tasks)?;
        self.send(Job::Create(Box::new(workflow.clone()), tasks.to_vec()))
            .await
            .map(drop)
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<u64>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        check_storable_writes(&writes)?;
        self.send(Job::Apply(writes)).await
    }

    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>> {
        let id = id.to_string();
        self.read(move |c| {
            c.prepare_cached(&format!(
                "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?1"
            ))?
            .query_row(params![id], workflow_row)
            .optional()
        })
        .await
    }

    async fn find_workflow(&self, id_or_prefix: &str) -> Result<WorkflowRecord> {
        if let Some(found) = self.workflow(id_or_prefix).await? {
            return Ok(found);
        }
        let prefix = id_or_prefix.to_string();
        let matches = self
            .read(move |c| {
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE substr(id, 1, length(?1)) = ?1 LIMIT 6"
                ))?;
                let rows = stmt.query_map(params![prefix], workflow_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        one_match(id_or_prefix, matches)
    }

    async fn find_workflow_of(
        &self,
        id_or_prefix: &str,
        submitted_by: &str,
    ) -> Result<WorkflowRecord> {
        let prefix = id_or_prefix.to_string();
        let user = submitted_by.to_string();
        let matches = self
            .read(move |c| {
                // A full id is its own (only) prefix; the index on submitter
                // keeps this to the caller's own workflows.
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows
                     WHERE submitted_by = ?2 AND substr(id, 1, length(?1)) = ?1
                     ORDER BY id = ?1 DESC LIMIT 6"
                ))?;
                let rows = stmt.query_map(params![prefix, user], workflow_row)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        match matches.first() {
            Some(exact) if exact.id == id_or_prefix => Ok(exact.clone()),
            _ => crate::one_match(id_or_prefix, matches),
        }
    }

    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>> {
        let id = workflow_id.to_string();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT workflow_id, task_id, position, method, state, attempt, result, error, started_ms, finished_ms
                 FROM tasks WHERE workflow_id = ?1 ORDER BY position",
            )?;
            let rows = stmt.query_map(params![id], task_row)?;
            rows.collect()
        })
        .await
    }

    async fn list_workflows(&self, filter: &ListFilter) -> Result<Vec<WorkflowSummary>> {
        let state = filter.state.map(|s| s.as_str().to_string());
        let submitted_by = filter.submitted_by.clone();
        let schedule = filter.schedule.clone();
        let limit = if filter.limit == 0 {
            -1
        } else {
            filter.limit as i64
        };
        let offset = filter.offset as i64;
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT w.id, w.name, w.state, w.created_ms, w.finished_ms,
                        (SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id),
                        (SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id AND t.state = 'completed'),
                        (SELECT count(*) FROM tasks t WHERE t.workflow_id = w.id AND t.state = 'failed')
                 FROM workflows w WHERE (?1 IS NULL OR w.state = ?1)
                   AND (?4 IS NULL OR w.submitted_by = ?4)
                   AND (?5 IS NULL OR json_extract(w.spec, '$.trigger.id') = ?5)
                 ORDER BY w.created_ms DESC, w.id DESC LIMIT ?2 OFFSET ?3",
            )?;
            let rows = stmt.query_map(params![state, limit, offset, submitted_by, schedule], |row| {
                let state: String = row.get(2)?;
                Ok(WorkflowSummary {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    state: WorkflowState::parse(&state).unwrap_or(WorkflowState::Failed),
                    created_ms: row.get(3)?,
                    finished_ms: row.get(4)?,
                    total: row.get(5)?,
                    completed: row.get(6)?,
                    failed: row.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn request_cancel(&self, workflow_id: &str) -> Result<()> {
        if self.workflow(workflow_id).await?.is_none() {
            return Err(StoreError::WorkflowNotFound(workflow_id.to_string()));
        }
        self.send(Job::Cancel(workflow_id.to_string()))
            .await
            .map(drop)
    }

    async fn claim(
        &self,
        workflow_id: &str,
        expected: Option<&Owner>,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        // Compare-and-set through the writer connection's serialisation: a
        // conditional UPDATE is atomic in SQLite.
        let id = workflow_id.to_string();
        let expected = expected.map(json_text);
        let owner_text = owner.map(json_text);
        let clears_cancel = owner.is_some();
        let path = self.path.clone();
        let options = SqliteOptions::new(path.clone());
        tokio::task::spawn_blocking(move || {
            let conn = open_connection(&options)?;
            let changed = conn
                .execute(
                    "UPDATE workflows SET owner = ?2,
                        cancel_requested = CASE WHEN ?4 THEN 0 ELSE cancel_requested END
                     WHERE id = ?1 AND owner IS ?3",
                    params![id, owner_text, expected, clears_cancel],
                )
                .map_err(|e| classify(e, &path))?;
            if changed == 0 {
                let exists: bool = conn
                    .query_row(
                        "SELECT count(*) FROM workflows WHERE id = ?1",
                        params![id],
                        |r| r.get(0),
                    )
                    .map_err(|e| classify(e, &path))?;
                if !exists {
                    return Err(StoreError::WorkflowNotFound(id));
                }
            }
            Ok(changed == 1)
        })
        .await
        .map_err(|e| StoreError::Other(format!("claim task failed: {e}")))?
    }

    async fn events(
        &self,
        workflow_id: Option<&str>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let id = workflow_id.map(str::to_string);
        let limit = if limit == 0 { -1 } else { limit as i64 };
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, kind, workflow_id, at_ms, data FROM events
                 WHERE seq > ?1 AND (?2 IS NULL OR workflow_id = ?2) ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![after_seq as i64, id, limit], event_row)?;
            rows.collect()
        })
        .await
    }

    async fn events_submitted_by(
        &self,
        user: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let user = user.to_string();
        let limit = if limit == 0 { -1 } else { limit as i64 };
        self.read(move |c| {
            // The user's workflows by `workflows_by_submitter`, then each
            // one's events by `events_by_workflow`: never a scan of the log.
            let mut stmt = c.prepare_cached(
                "SELECT seq, kind, workflow_id, at_ms, data FROM events INDEXED BY events_by_workflow
                 WHERE workflow_id IN (SELECT id FROM workflows WHERE submitted_by = ?1)
                   AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![user, after_seq as i64, limit], event_row)?;
            rows.collect()
        })
        .await
    }

    async fn put_user(&self, user: &UserRecord) -> Result<()> {
        self.send(Job::User(user.clone())).await.map(|_| ())
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT data FROM users ORDER BY name")?;
            let rows = stmt.query_map([], |r| json_column::<UserRecord>(r, 0))?;
            rows.collect()
        })
        .await
    }

    async fn put_key(&self, key: &KeyRecord) -> Result<()> {
        self.send(Job::Key(key.clone())).await.map(|_| ())
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT data FROM api_keys ORDER BY created_ms, id")?;
            let rows = stmt.query_map([], |r| json_column::<KeyRecord>(r, 0))?;
            rows.collect()
        })
        .await
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>> {
        let hash = hash.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT data FROM api_keys WHERE hash = ?1")?
                .query_row(params![hash], |r| json_column::<KeyRecord>(r, 0))
                .optional()
        })
        .await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<u64> {
        let seqs = self.send(Job::Audit(entry.clone())).await?;
        Ok(seqs.first().copied().unwrap_or(0))
    }

    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let limit = if limit == 0 { -1 } else { limit as i64 };
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, data FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![after as i64, limit], |r| {
                let mut entry = json_column::<AuditEntry>(r, 1)?;
                entry.seq = r.get::<_, i64>(0)? as u64;
                Ok(entry)
            })?;
            rows.collect()
        })
        .await
    }

    async fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<CacheEntry>> {
        let key = key.to_string();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT key, method, created_ms, expires_ms, result FROM cache
                 WHERE key = ?1 AND (expires_ms IS NULL OR expires_ms > ?2)",
            )?
            .query_row(params![key, now_ms], |r| {
                Ok(CacheEntry {
                    key: r.get(0)?,
                    method: r.get(1)?,
                    created_ms: r.get(2)?,
                    expires_ms: r.get(3)?,
                    result: json_column(r, 4)?,
                })
            })
            .optional()
        })
        .await
    }

    async fn cache_put(&self, entry: &CacheEntry) -> Result<()> {
        self.send(Job::CachePut(Box::new(entry.clone())))
            .await
            .map(|_| ())
    }

    async fn cache_clear(&self) -> Result<u64> {
        let removed = self.send(Job::CacheClear).await?;
        Ok(removed.first().copied().unwrap_or(0))
    }

    async fn cache_stats(&self, now_ms: i64) -> Result<CacheStats> {
        self.read(move |c| {
            c.query_row(
                "SELECT
                   coalesce(sum(CASE WHEN expires_ms IS NULL OR expires_ms > ?1 THEN 1 ELSE 0 END), 0),
                   coalesce(sum(CASE WHEN expires_ms IS NULL OR expires_ms > ?1 THEN 0 ELSE 1 END), 0),
                   coalesce(sum(length(result)), 0)
                 FROM cache",
                params![now_ms],
                |r| {
                    Ok(CacheStats {
                        entries: r.get::<_, i64>(0)? as u64,
                        expired: r.get::<_, i64>(1)? as u64,
                        bytes: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
        })
        .await
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord, expected: Option<u64>) -> Result<bool> {
        check_storable_schedule(schedule)?;
        let written = self
            .send(Job::PutSchedule(Box::new(schedule.clone()), expected))
            .await?;
        Ok(written.first().copied() == Some(1))
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT version, data FROM schedules ORDER BY created_ms, id")?;
            let rows = stmt.query_map([], schedule_row)?;
            rows.collect()
        })
        .await
    }

    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        let id = id.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT version, data FROM schedules WHERE id = ?1")?
                .query_row(params![id], schedule_row)
                .optional()
        })
        .await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let removed = self.send(Job::DeleteSchedule(id.to_string())).await?;
        Ok(removed.first().copied().unwrap_or(0) > 0)
    }

    async fn latest_event_seq(&self) -> Result<u64> {
        self.read(|c| {
            c.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .await
        .map(|seq| seq as u64)
    }

    async fn latest_event_seq_of(&self, workflow_id: &str) -> Result<u64> {
        let id = workflow_id.to_string();
        self.read(move |c| {
            c.query_row(
                "SELECT coalesce(max(seq), 0) FROM events WHERE workflow_id = ?1",
                params![id],
                |r| r.get::<_, i64>(0),
            )
        })
        .await
        .map(|seq| seq as u64)
    }

    async fn tasks_finished_since(&self, since_ms: i64, limit: usize) -> Result<Vec<TaskRecord>> {
        let limit = if limit == 0 { -1 } else { limit as i64 };
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT workflow_id, task_id, position, method, state, attempt, result, error, started_ms, finished_ms
                 FROM tasks WHERE finished_ms >= ?1 ORDER BY finished_ms DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![since_ms, limit], task_row)?;
            rows.collect()
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.read(|c| {
            let group = |sql: &str| -> rusqlite::Result<Vec<(String, u64)>> {
                let mut stmt = c.prepare_cached(sql)?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?;
                rows.collect()
            };
            Ok(StoreStats {
                workflows_by_state: group(
                    "SELECT state, count(*) FROM workflows GROUP BY state ORDER BY state",
                )?,
                tasks_by_state: group(
                    "SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state",
                )?,
            })
        })
        .await
    }
}

#[cfg(test)]
mod read_pool_tests {
    use super::*;

    /// A read that panics still hands its connection back: more panics than
    /// the pool has connections, and reads go on.
    #[tokio::test]
    async fn reads_that_panic_do_not_use_up_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("g.db"))).unwrap();
        for _ in 0..MAX_READERS + 2 {
            let outcome = store
                .read(|_| -> rusqlite::Result<()> { panic!("a read that fails hard") })
                .await;
            assert!(outcome.is_err());
        }
        let answered = tokio::time::timeout(
            Duration::from_secs(10),
            store.read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))),
        )
        .await
        .expect("a connection was free");
        assert_eq!(answered.unwrap(), 1);
    }
}
