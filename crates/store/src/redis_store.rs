//! The Redis store: the same contract as SQLite, shared by every process that
//! points at the same server and key prefix (the cluster mode).
//!
//! Every write is one Lua script (`redis_store/write.lua`), so a batch is atomic
//! and sequence numbers are handed out in commit order by `INCR` inside it. A
//! reply can be lost after the script ran (a dropped connection); the write is
//! then retried under the same batch id and the script answers from what it
//! remembered instead of applying the batch twice.
//!
//! Key layout (`P` = prefix; ids follow the kind, so no two kinds can collide):
//!
//! | key                     | type   | content                                        |
//! |-------------------------|--------|------------------------------------------------|
//! | `P:schema`              | string | layout version (1)                             |
//! | `P:wf:{id}`             | hash   | workflow fields; spec, error, owner as JSON     |
//! | `P:ids`                 | zset   | workflow ids, score 0, for prefix lookup (lex)  |
//! | `P:wfidx:all`           | zset   | workflow ids by created_ms                      |
//! | `P:wfidx:state:{state}` | zset   | the same, per workflow state                    |
//! | `P:wfidx:by:{user}`     | zset   | the same, per submitter                         |
//! | `P:tasks:{wf}`          | hash   | task id → task JSON                             |
//! | `P:tfirst:{wf}`         | hash   | task id → `[position, method]` of its first write |
//! | `P:tstate:{wf}`         | hash   | task id → state, to tell real state changes     |
//! | `P:tcount:{wf}`         | hash   | total / completed / failed task counts          |
//! | `P:tfinished`           | zset   | `["wf","task"]` by finished_ms                  |
//! | `P:stats:workflows`     | hash   | state → number of workflows                     |
//! | `P:stats:tasks`         | hash   | state → number of tasks                         |
//! | `P:seq`                 | string | last event sequence number                      |
//! | `P:events`              | hash   | seq → event JSON                                |
//! | `P:evidx:all`           | zset   | seq by seq                                      |
//! | `P:evidx:wf:{wf}`       | zset   | seq by seq, one workflow's events               |
//! | `P:users`               | hash   | name → user JSON                                |
//! | `P:keys`                | hash   | key id → key JSON                               |
//! | `P:keys:hashof`         | hash   | key id → hash                                   |
//! | `P:keys:idbyhash`       | hash   | hash → key id                                   |
//! | `P:audit:seq`           | string | last audit sequence number                      |
//! | `P:audit`, `P:audit:idx`| hash, zset | seq → entry JSON, seq by seq                |
//! | `P:batch:{uuid}`        | string | results of an applied batch, expiring           |
//! | `P:cache:{key}`         | string | cache entry JSON, expiring with its `ttl`       |
//! | `P:sched`               | hash   | schedule id → schedule JSON                     |
//! | `P:sched:ver`           | hash   | schedule id → version (compare-and-set)         |
//! | `P:sched:idx`           | zset   | schedule ids by created_ms                      |
//! | `P:wfidx:sched:{id}`    | zset   | workflow ids by created_ms, runs of a schedule  |
//!
//! Cache entries are the one exception to "every write is a script": each is a
//! single independent key written with one `SET`, which is atomic on its own,
//! and writing one twice is harmless.
//! Scripts build keys from the prefix rather than declaring them, so on a Redis
//! Cluster the prefix must be a hash tag (`{gleitzeit}`) to keep every key in
//! one slot.

use crate::*;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

/// The key layout this code reads and writes; a store written by a newer
/// layout is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

/// Rows fetched per script call when a caller asks for more (or for all), so
/// one call never holds the single-threaded server for long.
const PAGE: usize = 500;

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Start of every key, so several installations (or tests) can share a
    /// server.
    pub prefix: String,
    /// How long an operation keeps retrying while Redis is unreachable (a
    /// restart, a failover) before it fails with `StoreError::Unreachable`.
    pub retry_for: Duration,
    /// How long `connect` waits for the first connection: a server that does
    /// not answer should stop a command at once, not after minutes.
    pub connect_timeout: Duration,
    /// A reply slower than this counts as a lost connection (and is retried).
    pub response_timeout: Duration,
    /// How long an applied batch is remembered so that a retry is recognised.
    /// Never shorter than the time a retry can still arrive (`retry_for` plus
    /// one response timeout, plus a minute).
    pub dedup_window: Duration,
}

impl Default for RedisOptions {
    fn default() -> RedisOptions {
        RedisOptions {
            prefix: "gleitzeit".into(),
            retry_for: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(10),
            dedup_window: Duration::from_secs(600),
        }
    }
}

struct Scripts {
    write: Script,
    list: Script,
    range: Script,
    key_by_hash: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            write: Script::new(include_str!("redis_store/write.lua")),
            list: Script::new(include_str!("redis_store/list.lua")),
            range: Script::new(include_str!("redis_store/range.lua")),
            key_by_hash: Script::new(
                "local id = redis.call('HGET', ARGV[1], ARGV[2])
                 if not id then return false end
                 return redis.call('HGET', ARGV[3], id)",
            ),
        }
    }
}

pub struct RedisStore {
    con: ConnectionManager,
    options: RedisOptions,
    url: String,
    scripts: Scripts,
}

/// Errors that say nothing about the request: the same request may succeed
/// once the connection is back. Script and data errors are not among them.
fn is_transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
        )
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Other(format!("cannot encode a record for Redis: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Other(format!("Redis holds an unreadable {what}: {e}")))
}

fn schedule_record(text: &str, version: Option<&str>) -> Result<ScheduleRecord> {
    let mut schedule = parse::<ScheduleRecord>("schedule", text)?;
    schedule.version = version
        .map(|v| number("a version", v))
        .transpose()?
        .unwrap_or(0);
    Ok(schedule)
}

/// An event as the log holds it: its JSON as clients get it, whose `seq` is
/// ignored for the index's. A damaged entry keeps the stream going: its kind
/// and workflow, where readable, with the reason as data.
fn stored_event(seq: u64, text: &str) -> Event {
    #[derive(serde::Deserialize)]
    struct Stored {
        #[serde(rename = "type")]
        kind: String,
        workflow_id: String,
        at_ms: i64,
        data: serde_json::Value,
    }
    match parse::<Stored>("event", text) {
        Ok(e) => crate::stored_event(seq, e.kind, e.workflow_id, e.at_ms, e.data),
        Err(e) => {
            let head: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            crate::stored_event(
                seq,
                head["type"].as_str().unwrap_or("unreadable").to_string(),
                head["workflow_id"].as_str().unwrap_or("").to_string(),
                head["at_ms"].as_i64().unwrap_or(0),
                crate::unreadable_event_data(&e.to_string()),
            )
        }
    }
}

fn number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|_| StoreError::Other(format!("Redis holds `{text}` as {what}")))
}

impl RedisStore {
    /// Connects and checks the key layout. Fails within
    /// `options.connect_timeout` when the server does not answer.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<RedisStore> {
        let redacted = redact_url(url);
        let unreachable = |reason: String| StoreError::Unreachable {
            url: redacted.clone(),
            reason: scrub(url, &reason),
        };
        if options.prefix.is_empty() {
            return Err(StoreError::Other("the Redis key prefix is empty".into()));
        }
        let client =
            redis::Client::open(url).map_err(|e| unreachable(format!("not a Redis URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(MAX_RETRY_DELAY);
        let con = match tokio::time::timeout(
            options.connect_timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        {
            Ok(Ok(con)) => con,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no connection within {} ms",
                    options.connect_timeout.as_millis()
                )))
            }
        };
        let store = RedisStore {
            con,
            options,
            url: redacted,
            scripts: Scripts::new(),
        };
        store.check_schema().await?;
        Ok(store)
    }

    /// The shared connection (it reconnects by itself), for other users of
    /// the same server such as the cluster coordination.
    pub fn connection(&self) -> ConnectionManager {
        self.con.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.options.prefix
    }

    /// The URL without its password, fit for logs and error messages.
    pub fn url_redacted(&self) -> String {
        self.url.clone()
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut key = self.options.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Claims an empty prefix for this layout, or refuses one written by a
    /// newer version. Not retried: `connect` should fail fast.
    async fn check_schema(&self) -> Result<()> {
        let key = self.key(&["schema"]);
        let (found,): (Option<String>,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(SCHEMA_VERSION)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(&mut self.con.clone())
            .await
            .map_err(|e| self.error(e))?;
        let Some(found) = found else {
            return Err(StoreError::Other(format!(
                "{key} vanished while connecting"
            )));
        };
        let version: i64 = found.trim().parse().map_err(|_| {
            StoreError::Corrupt(format!(
                "{}: {key} holds `{found}`, not a Gleitzeit schema version",
                self.url
            ))
        })?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    fn error(&self, error: RedisError) -> StoreError {
        if is_transient(&error) || error.kind() == ErrorKind::AuthenticationFailed {
            StoreError::Unreachable {
                url: self.url.clone(),
                reason: error.to_string(),
            }
        } else {
            StoreError::Redis(Arc::new(error))
        }
    }

    /// Runs `attempt` until it succeeds, fails for a reason other than the
    /// connection, or `retry_for` has passed; backs off from 100 ms to 2 s.
    /// The connection manager reconnects in the background meanwhile.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let started = Instant::now();
        let deadline = started + self.options.retry_for;
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            match attempt(self.con.clone()).await {
                Ok(value) => return Ok(value),
                Err(e) if is_transient(&e) && Instant::now() < deadline => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(delay.min(left)).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(e) => {
                    return Err(match self.error(e) {
                        StoreError::Unreachable { url, reason } if delay > FIRST_RETRY_DELAY => {
                            StoreError::Unreachable {
                                url,
                                reason: format!(
                                    "{reason} (retried for {} ms)",
                                    started.elapsed().as_millis()
                                ),
                            }
                        }
                        other => other,
                    })
                }
            }
        }
    }

    /// Seconds a batch id is remembered: at least as long as a retry of it
    /// can still arrive.
    fn dedup_seconds(&self) -> u64 {
        let floor =
            self.options.retry_for + self.options.response_timeout + Duration::from_secs(60);
        self.options.dedup_window.max(floor).as_secs().max(1)
    }

    /// Runs the write script under `batch_id` (retried with the same id) and
    /// returns its results.
    async fn write(&self, batch_id: &str, ops: Ops) -> Result<Vec<String>> {
        let mut invocation = self.scripts.write.prepare_invoke();
        invocation
            .arg(&self.options.prefix)
            .arg(batch_id)
            .arg(self.dedup_seconds())
            .arg(ops.0);
        let invocation = &invocation;
        fail::fail_point!("redis.before_write");
        let reply: String = self
            .retrying(|mut con| async move { invocation.invoke_async(&mut con).await })
            .await?;
        // Written, but nobody has heard of it yet.
        fail::fail_point!("redis.after_write");
        if let Some(id) = reply.strip_prefix("!exists:") {
            return Err(StoreError::Other(format!("workflow `{id}` already exists")));
        }
        if let Some(id) = reply.strip_prefix("!notfound:") {
            return Err(StoreError::WorkflowNotFound(id.to_string()));
        }
        Ok(reply
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// A single write under a fresh batch id.
    async fn write_once(&self, ops: Ops) -> Result<Vec<String>> {
        self.write(&uuid::Uuid::new_v4().to_string(), ops).await
    }

    /// `apply` under a given batch id: applying the same id again returns the
    /// first application's sequence numbers and changes nothing.
    pub(crate) async fn apply_with_batch(
        &self,
        batch_id: &str,
        writes: Vec<Write>,
    ) -> Result<Vec<u64>> {
        // Everything is encoded before the script runs: an error inside it
        // would leave the writes before it in place.
        let mut ops = Ops::default();
        for write in &writes {
            match write {
                Write::Task(task) => ops.task(task)?,
                Write::Workflow {
                    id,
                    state,
                    at_ms,
                    error,
                } => ops.workflow_state(id, *state, *at_ms, error.as_ref())?,
                Write::Event(event) => ops.event(event)?,
            }
        }
        self.write(batch_id, ops)
            .await?
            .iter()
            .map(|seq| number("an event sequence number", seq))
            .collect()
    }

    /// Entries of a log after `after`, paged so each script call stays short.
    async fn read_log<T>(
        &self,
        index: &str,
        hash: &str,
        mut after: u64,
        limit: usize,
        decode: impl Fn(u64, &str) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        loop {
            let wanted = if limit == 0 {
                PAGE
            } else {
                (limit - out.len()).min(PAGE)
            };
            if wanted == 0 {
                break;
            }
            let mut invocation = self.scripts.range.prepare_invoke();
            invocation.arg(index).arg(hash).arg(after).arg(wanted);
            let invocation = &invocation;
            let flat: Vec<String> = self
                .retrying(|mut con| async move { invocation.invoke_async(&mut con).await })
                .await?;
            for pair in flat.chunks_exact(2) {
                after = number("a sequence number", &pair[0])?;
                out.push(decode(after, &pair[1])?);
            }
            if flat.len() / 2 < wanted {
                break;
            }
        }
        Ok(out)
    }

    /// Ids of the workflows `user` submitted, from their own index.
    async fn ids_submitted_by(&self, user: &str) -> Result<Vec<String>> {
        let index = self.key(&["wfidx", "by", user]);
        let index = &index;
        self.retrying(|mut con| async move {
            redis::cmd("ZRANGE")
                .arg(index)
                .arg(0)
                .arg(-1)
                .query_async(&mut con)
                .await
        })
        .await
    }

    /// The highest sequence number in an event index (0 when empty).
    async fn newest_seq(&self, index: &str) -> Result<u64> {
        let newest: Vec<String> = self
            .retrying(|mut con| async move {
                redis::cmd("ZREVRANGE")
                    .arg(index)
                    .arg(0)
                    .arg(0)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        newest
            .first()
            .map_or(Ok(0), |seq| number("an event sequence number", seq))
    }

    async fn hgetall(&self, key: &str) -> Result<HashMap<String, String>> {
        self.retrying(|mut con| async move {
            redis::cmd("HGETALL").arg(key).query_async(&mut con).await
        })
        .await
    }

    async fn hvals(&self, key: &str) -> Result<Vec<String>> {
        self.retrying(
            |mut con| async move { redis::cmd("HVALS").arg(key).query_async(&mut con).await },
        )
        .await
    }
}

/// Operations for the write script, each an op code and its arguments (see
/// the script for their meaning).
#[derive(Default)]
struct Ops(Vec<String>);

fn optional(value: Option<i64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

impl Ops {
    fn create(&mut self, w: &WorkflowRecord) -> Result<()> {
        let mut fields = vec![
            ("id", w.id.clone()),
            ("name", w.name.clone()),
            ("state", w.state.as_str().to_string()),
            ("spec", json(&w.spec)?),
            ("created_ms", w.created_ms.to_string()),
            (
                "cancel",
                if w.cancel_requested { "1" } else { "0" }.to_string(),
            ),
        ];
        if let Some(source) = &w.source {
            fields.push(("source", source.clone()));
        }
        if let Some(ms) = w.started_ms {
            fields.push(("started_ms", ms.to_string()));
        }
        if let Some(ms) = w.finished_ms {
            fields.push(("finished_ms", ms.to_string()));
        }
        if let Some(error) = &w.error {
            fields.push(("error", json(error)?));
        }
        if let Some(owner) = &w.owner {
            fields.push(("owner", json(owner)?));
        }
        if let Some(user) = &w.submitted_by {
            fields.push(("submitted_by", user.clone()));
        }
        self.0.extend([
            "C".to_string(),
            w.id.clone(),
            w.state.as_str().to_string(),
            w.created_ms.to_string(),
            if w.submitted_by.is_some() { "1" } else { "0" }.to_string(),
            w.submitted_by.clone().unwrap_or_default(),
            fields.len().to_string(),
        ]);
        for (field, value) in fields {
            self.0.push(field.to_string());
            self.0.push(value);
        }
        Ok(())
    }

    fn task(&mut self, task: &TaskRecord) -> Result<()> {
        self.0.extend([
            "T".to_string(),
            task.workflow_id.clone(),
            task.task_id.clone(),
            json(task)?,
            json(&(task.position, &task.method))?,
            task.state.as_str().to_string(),
            optional(task.finished_ms),
            json(&(&task.workflow_id, &task.task_id))?,
        ]);
        Ok(())
    }

    fn workflow_state(
        &mut self,
        id: &str,
        state: WorkflowState,
        at_ms: i64,
        error: Option<&GzError>,
    ) -> Result<()> {
        // The same terminal states as SQLite's UPDATE.
        let terminal = matches!(
            state,
            WorkflowState::Completed | WorkflowState::Failed | WorkflowState::Cancelled
        );
        self.0.extend([
            "W".to_string(),
            id.to_string(),
            state.as_str().to_string(),
            at_ms.to_string(),
            error.map(json).transpose()?.unwrap_or_default(),
            if terminal { "1" } else { "0" }.to_string(),
        ]);
        Ok(())
    }

    fn event(&mut self, event: &Event) -> Result<()> {
        // The stored JSON's `seq` is ignored on reading: the index holds the
        // real one, which only the script knows.
        self.0
            .extend(["E".to_string(), event.workflow_id.clone(), json(event)?]);
        Ok(())
    }

    fn owner(owner: Option<&Owner>) -> Result<String> {
        Ok(owner.map(json).transpose()?.unwrap_or_default())
    }
}

fn workflow_record(h: HashMap<String, String>) -> Result<WorkflowRecord> {
    let fallback = (
        h.get("id").cloned().unwrap_or_default(),
        h.get("name").cloned().unwrap_or_default(),
        h.get("created_ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        h.get("finished_ms").and_then(|v| v.parse().ok()),
        h.get("submitted_by").cloned(),
    );
    match decode_workflow_record(h) {
        Ok(record) => Ok(record),
        Err(e) => {
            let (id, name, created_ms, finished_ms, submitted_by) = fallback;
            Ok(crate::unreadable_workflow(
                id,
                name,
                created_ms,
                finished_ms,
                submitted_by,
                &e.to_string(),
            ))
        }
    }
}

fn decode_workflow_record(mut h: HashMap<String, String>) -> Result<WorkflowRecord> {
    let mut take = |field: &str| h.remove(field);
    let id = take("id").unwrap_or_default();
    let optional_ms = |value: Option<String>| -> Result<Option<i64>> {
        value.map(|v| number("a timestamp", &v)).transpose()
    };
    Ok(WorkflowRecord {
        name: take("name").unwrap_or_default(),
        state: take("state")
            .and_then(|s| WorkflowState::parse(&s))
            .unwrap_or(WorkflowState::Failed),
        spec: parse(
            "workflow spec",
            &take("spec").ok_or_else(|| {
                StoreError::Other(format!("Redis holds workflow `{id}` without its spec"))
            })?,
        )?,
        source: take("source"),
        created_ms: number("a timestamp", &take("created_ms").unwrap_or_default())?,
        started_ms: optional_ms(take("started_ms"))?,
        finished_ms: optional_ms(take("finished_ms"))?,
        error: take("error")
            .map(|e| parse("workflow error", &e))
            .transpose()?,
        cancel_requested: take("cancel").as_deref() == Some("1"),
        owner: take("owner")
            .map(|o| parse("workflow owner", &o))
            .transpose()?,
        submitted_by: take("submitted_by"),
        id,
    })
}

fn task_record(json: &str, first: Option<&String>) -> Result<TaskRecord> {
    let mut task: TaskRecord = match parse("task", json) {
        Ok(task) => task,
        Err(e) => {
            // What can still be read names the task; its result is lost.
            let head: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            let mut task = TaskRecord::pending(
                head["workflow_id"].as_str().unwrap_or(""),
                0,
                head["task_id"].as_str().unwrap_or("?"),
                "",
            );
            crate::mark_task_unreadable(&mut task, &e.to_string());
            task
        }
    };
    if let Some(first) = first {
        let (position, method): (u32, String) = parse("task position", first)?;
        task.position = position;
        task.method = method;
    }
    Ok(task)
}

fn counts(map: HashMap<String, i64>) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = map
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| (state, n as u64))
        .collect();
    counts.sort();
    counts
}

#[async_trait]
impl Store for RedisStore {
    async fn create_workflow(&self, workflow: &WorkflowRecord, tasks: &[TaskRecord]) -> Result<()> {
        crate::check_storable_workflow(workflow, tasks)?;
        let mut ops = Ops::default();
        ops.create(workflow)?;
        if let Some(trigger) = &workflow.spec.trigger {
            ops.0.extend([
                "I".to_string(),
                trigger.id.clone(),
                workflow.created_ms.to_string(),
                workflow.id.clone(),
            ]);
        }
        for task in tasks {
            ops.task(task)?;
        }
        self.write_once(ops).await.map(drop)
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<u64>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        crate::check_storable_writes(&writes)?;
        self.apply_with_batch(&uuid::Uuid::new_v4().to_string(), writes)
            .await
    }

    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>> {
        let fields = self.hgetall(&self.key(&["wf", id])).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        workflow_record(fields).map(Some)
    }

    async fn find_workflow(&self, id_or_prefix: &str) -> Result<WorkflowRecord> {
        if let Some(found) = self.workflow(id_or_prefix).await? {
            return Ok(found);
        }
        let ids_key = self.key(&["ids"]);
        let start = format!("[{id_or_prefix}");
        let (ids_key, start) = (&ids_key, &start);
        let candidates: Vec<String> = self
            .retrying(|mut con| async move {
                redis::cmd("ZRANGEBYLEX")
                    .arg(ids_key)
                    .arg(start)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(6)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        // Ids sharing the prefix sort right after it; the first one that does
        // not share it ends the run.
        let matches: Vec<String> = candidates
            .into_iter()
            .take_while(|id| id.starts_with(id_or_prefix))
            .collect();
        match matches.as_slice() {
            [one] => self
                .workflow(one)
                .await?
                .ok_or_else(|| StoreError::WorkflowNotFound(id_or_prefix.to_string())),
            [] => Err(StoreError::WorkflowNotFound(id_or_prefix.to_string())),
            many => Err(StoreError::Ambiguous(
                id_or_prefix.to_string(),
                many.iter()
                    .take(5)
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>> {
        let (tasks_key, first_key) = (
            self.key(&["tasks", workflow_id]),
            self.key(&["tfirst", workflow_id]),
        );
        let (tasks_key, first_key) = (&tasks_key, &first_key);
        let (records, firsts): (HashMap<String, String>, HashMap<String, String>) = self
            .retrying(|mut con| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HGETALL")
                    .arg(tasks_key)
                    .cmd("HGETALL")
                    .arg(first_key)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let mut tasks = records
            .iter()
            .map(|(task_id, json)| task_record(json, firsts.get(task_id)))
            .collect::<Result<Vec<_>>>()?;
        tasks.sort_by(|a, b| (a.position, &a.task_id).cmp(&(b.position, &b.task_id)));
        Ok(tasks)
    }

    async fn list_workflows(&self, filter: &ListFilter) -> Result<Vec<WorkflowSummary>> {
        // The narrowest index that answers the filter; only the combination
        // of submitter and state needs a check per entry.
        let (index, check_state) = match (&filter.submitted_by, filter.state) {
            // A schedule's runs all belong to whoever registered it; the
            // submitter is checked per row below.
            _ if filter.schedule.is_some() => (
                self.key(&[
                    "wfidx",
                    "sched",
                    filter.schedule.as_deref().unwrap_or_default(),
                ]),
                filter.state,
            ),
            (Some(user), state) => (self.key(&["wfidx", "by", user]), state),
            (None, Some(state)) => (self.key(&["wfidx", "state", state.as_str()]), None),
            (None, None) => (self.key(&["wfidx", "all"]), None),
        };
        let want = check_state.map_or("", |s| s.as_str());
        let (mut rank, mut skip) = if check_state.is_some() {
            (0, filter.offset)
        } else {
            (filter.offset, 0)
        };
        let mut out: Vec<WorkflowSummary> = Vec::new();
        // Workflows created between two script calls shift ranks down, so a
        // later call may see one again.
        let mut seen = HashSet::new();
        loop {
            let wanted = if filter.limit == 0 {
                PAGE
            } else {
                (filter.limit - out.len()).min(PAGE)
            };
            if wanted == 0 {
                break;
            }
            let mut invocation = self.scripts.list.prepare_invoke();
            invocation
                .arg(&self.options.prefix)
                .arg(&index)
                .arg(want)
                .arg(rank)
                .arg(skip)
                .arg(wanted);
            let invocation = &invocation;
            let flat: Vec<String> = self
                .retrying(|mut con| async move { invocation.invoke_async(&mut con).await })
                .await?;
            let [next, skip_left, rows @ ..] = flat.as_slice() else {
                return Err(StoreError::Other("Redis: short reply to a listing".into()));
            };
            for row in rows.chunks_exact(8) {
                if !seen.insert(row[0].clone()) {
                    continue;
                }
                out.push(WorkflowSummary {
                    id: row[0].clone(),
                    name: row[1].clone(),
                    state: WorkflowState::parse(&row[2]).unwrap_or(WorkflowState::Failed),
                    created_ms: number("a timestamp", &row[3])?,
                    finished_ms: (!row[4].is_empty())
                        .then(|| number("a timestamp", &row[4]))
                        .transpose()?,
                    total: number("a task count", &row[5])?,
                    completed: number("a task count", &row[6])?,
                    failed: number("a task count", &row[7])?,
                });
            }
            let next: i64 = number("a rank", next)?;
            if next < 0 {
                break;
            }
            rank = next as usize;
            skip = number("a count", skip_left)?;
        }
        if let (Some(_), Some(user)) = (&filter.schedule, &filter.submitted_by) {
            let by = self.key(&["wfidx", "by", user]);
            let mut kept = Vec::with_capacity(out.len());
            for summary in out {
                let id = &summary.id;
                let by = &by;
                let score: Option<f64> = self
                    .retrying(|mut con| async move {
                        redis::cmd("ZSCORE")
                            .arg(by)
                            .arg(id)
                            .query_async(&mut con)
                            .await
                    })
                    .await?;
                if score.is_some() {
                    kept.push(summary);
                }
            }
            return Ok(kept);
        }
        Ok(out)
    }

    async fn find_workflow_of(
        &self,
        id_or_prefix: &str,
        submitted_by: &str,
    ) -> Result<WorkflowRecord> {
        if let Some(found) = self
            .workflow(id_or_prefix)
            .await?
            .filter(|w| w.submitted_by.as_deref() == Some(submitted_by))
        {
            return Ok(found);
        }
        // The submitter's own index: the work grows with their workflows,
        // never with everyone's.
        let ids = self.ids_submitted_by(submitted_by).await?;
        let mut matches = Vec::new();
        for id in ids.iter().filter(|id| id.starts_with(id_or_prefix)).take(6) {
            if let Some(record) = self.workflow(id).await? {
                matches.push(record);
            }
        }
        crate::one_match(id_or_prefix, matches)
    }

    async fn request_cancel(&self, workflow_id: &str) -> Result<()> {
        let mut ops = Ops::default();
        ops.0.extend(["X".to_string(), workflow_id.to_string()]);
        self.write_once(ops).await.map(drop)
    }

    async fn claim(
        &self,
        workflow_id: &str,
        expected: Option<&Owner>,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        // A compare-and-set inside the write script; its batch id makes a
        // retry after a lost reply answer `true` again instead of seeing its
        // own write as someone else's.
        let mut ops = Ops::default();
        ops.0.extend([
            "O".to_string(),
            workflow_id.to_string(),
            Ops::owner(expected)?,
            Ops::owner(owner)?,
        ]);
        let results = self.write_once(ops).await?;
        Ok(results.first().map(String::as_str) == Some("1"))
    }

    async fn events(
        &self,
        workflow_id: Option<&str>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let index = match workflow_id {
            Some(id) => self.key(&["evidx", "wf", id]),
            None => self.key(&["evidx", "all"]),
        };
        self.read_log(
            &index,
            &self.key(&["events"]),
            after_seq,
            limit,
            |seq, text| Ok(stored_event(seq, text)),
        )
        .await
    }

    async fn events_submitted_by(
        &self,
        user: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let ids = self.ids_submitted_by(user).await?;
        // Each of the user's workflows contributes at most `limit` events
        // after the cursor; the page is the first `limit` of them all.
        let mut events = Vec::new();
        for id in ids {
            events.extend(self.events(Some(&id), after_seq, limit).await?);
        }
        events.sort_by_key(|e| e.seq);
        if limit != 0 {
            events.truncate(limit);
        }
        Ok(events)
    }

    async fn latest_event_seq_of(&self, workflow_id: &str) -> Result<u64> {
        self.newest_seq(&self.key(&["evidx", "wf", workflow_id]))
            .await
    }

    async fn latest_event_seq(&self) -> Result<u64> {
        self.newest_seq(&self.key(&["evidx", "all"])).await
    }

    async fn tasks_finished_since(&self, since_ms: i64, limit: usize) -> Result<Vec<TaskRecord>> {
        let index = self.key(&["tfinished"]);
        let index = &index;
        let members: Vec<String> = self
            .retrying(|mut con| async move {
                let mut cmd = redis::cmd("ZREVRANGEBYSCORE");
                cmd.arg(index).arg("+inf").arg(since_ms);
                if limit > 0 {
                    cmd.arg("LIMIT").arg(0).arg(limit);
                }
                cmd.query_async(&mut con).await
            })
            .await?;
        let ids = members
            .iter()
            .map(|m| parse::<(String, String)>("finished task index entry", m))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(PAGE) {
            let mut pipe = redis::pipe();
            for (workflow_id, task_id) in chunk {
                pipe.cmd("HGET")
                    .arg(self.key(&["tasks", workflow_id]))
                    .arg(task_id)
                    .cmd("HGET")
                    .arg(self.key(&["tfirst", workflow_id]))
                    .arg(task_id);
            }
            let pipe = &pipe;
            let values: Vec<Option<String>> = self
                .retrying(|mut con| async move { pipe.query_async(&mut con).await })
                .await?;
            for pair in values.chunks_exact(2) {
                if let Some(json) = &pair[0] {
                    out.push(task_record(json, pair[1].as_ref())?);
                }
            }
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<StoreStats> {
        let (workflows_key, tasks_key) = (
            self.key(&["stats", "workflows"]),
            self.key(&["stats", "tasks"]),
        );
        let (workflows_key, tasks_key) = (&workflows_key, &tasks_key);
        let (workflows, tasks): (HashMap<String, i64>, HashMap<String, i64>) = self
            .retrying(|mut con| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HGETALL")
                    .arg(workflows_key)
                    .cmd("HGETALL")
                    .arg(tasks_key)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        Ok(StoreStats {
            workflows_by_state: counts(workflows),
            tasks_by_state: counts(tasks),
        })
    }

    async fn put_user(&self, user: &UserRecord) -> Result<()> {
        let mut ops = Ops::default();
        ops.0
            .extend(["U".to_string(), user.name.clone(), json(user)?]);
        self.write_once(ops).await.map(drop)
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        let mut users = self
            .hvals(&self.key(&["users"]))
            .await?
            .iter()
            .map(|text| parse::<UserRecord>("user", text))
            .collect::<Result<Vec<_>>>()?;
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    async fn put_key(&self, key: &KeyRecord) -> Result<()> {
        let mut ops = Ops::default();
        ops.0.extend([
            "K".to_string(),
            key.id.clone(),
            key.hash.clone(),
            json(key)?,
        ]);
        self.write_once(ops).await.map(drop)
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        let mut keys = self
            .hvals(&self.key(&["keys"]))
            .await?
            .iter()
            .map(|text| parse::<KeyRecord>("API key", text))
            .collect::<Result<Vec<_>>>()?;
        keys.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(keys)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>> {
        let mut invocation = self.scripts.key_by_hash.prepare_invoke();
        invocation
            .arg(self.key(&["keys", "idbyhash"]))
            .arg(hash)
            .arg(self.key(&["keys"]));
        let invocation = &invocation;
        let found: Option<String> = self
            .retrying(|mut con| async move { invocation.invoke_async(&mut con).await })
            .await?;
        found.map(|text| parse("API key", &text)).transpose()
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<u64> {
        let mut ops = Ops::default();
        ops.0.extend(["A".to_string(), json(entry)?]);
        let results = self.write_once(ops).await?;
        results
            .first()
            .map_or(Ok(0), |seq| number("an audit sequence number", seq))
    }

    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read_log(
            &self.key(&["audit", "idx"]),
            &self.key(&["audit"]),
            after,
            limit,
            |seq, text| {
                let mut entry: AuditEntry = parse("audit entry", text)?;
                entry.seq = seq;
                Ok(entry)
            },
        )
        .await
    }

    async fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<CacheEntry>> {
        let key = self.key(&["cache", key]);
        let key = &key;
        let text: Option<String> = self
            .retrying(
                |mut con| async move { redis::cmd("GET").arg(key).query_async(&mut con).await },
            )
            .await?;
        match text {
            None => Ok(None),
            Some(text) => {
                let entry: CacheEntry = parse("cache entry", &text)?;
                Ok(Some(entry).filter(|e| e.is_live(now_ms)))
            }
        }
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord, expected: Option<u64>) -> Result<bool> {
        check_storable_schedule(schedule)?;
        let mut ops = Ops::default();
        ops.0.extend([
            "S".to_string(),
            schedule.id.clone(),
            expected.map(|v| v.to_string()).unwrap_or_default(),
            schedule.created_ms.to_string(),
            json(schedule)?,
        ]);
        let results = self.write_once(ops).await?;
        Ok(results.first().map(String::as_str) == Some("1"))
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let records = self.key(&["sched"]);
        let versions = self.key(&["sched", "ver"]);
        let (records, versions) = (&records, &versions);
        // One atomic read, so each record comes with its own version.
        let (texts, versions): (HashMap<String, String>, HashMap<String, String>) = self
            .retrying(|mut con| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HGETALL")
                    .arg(records)
                    .cmd("HGETALL")
                    .arg(versions)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let mut all = texts
            .iter()
            .map(|(id, text)| schedule_record(text, versions.get(id).map(String::as_str)))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }

    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        let records = self.key(&["sched"]);
        let versions = self.key(&["sched", "ver"]);
        let (records, versions) = (&records, &versions);
        let (text, version): (Option<String>, Option<String>) = self
            .retrying(|mut con| async move {
                redis::pipe()
                    .atomic()
                    .cmd("HGET")
                    .arg(records)
                    .arg(id)
                    .cmd("HGET")
                    .arg(versions)
                    .arg(id)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        text.map(|t| schedule_record(&t, version.as_deref()))
            .transpose()
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let mut ops = Ops::default();
        ops.0.extend(["D".to_string(), id.to_string()]);
        let results = self.write_once(ops).await?;
        Ok(results.first().map(String::as_str) == Some("1"))
    }

    async fn cache_put(&self, entry: &CacheEntry) -> Result<()> {
        let key = self.key(&["cache", &entry.key]);
        let key = &key;
        let text = serde_json::to_string(entry).map_err(|e| StoreError::Other(e.to_string()))?;
        let text = &text;
        let ttl_ms = match entry.expires_ms {
            Some(at) if at <= entry.created_ms => return Ok(()),
            Some(at) => Some(at - entry.created_ms),
            None => None,
        };
        self.retrying(|mut con| async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(text);
            if let Some(ms) = ttl_ms {
                cmd.arg("PX").arg(ms);
            }
            cmd.query_async::<()>(&mut con).await
        })
        .await
    }

    async fn cache_clear(&self) -> Result<u64> {
        let keys = self.cache_keys().await?;
        let mut removed = 0;
        for chunk in keys.chunks(PAGE) {
            let n: u64 = self
                .retrying(|mut con| async move {
                    redis::cmd("DEL").arg(chunk).query_async(&mut con).await
                })
                .await?;
            removed += n;
        }
        Ok(removed)
    }

    async fn cache_stats(&self, _now_ms: i64) -> Result<CacheStats> {
        // Redis drops expired entries itself, so every key found is live.
        let keys = self.cache_keys().await?;
        let mut stats = CacheStats::default();
        for chunk in keys.chunks(PAGE) {
            let sizes: Vec<u64> = self
                .retrying(|mut con| async move {
                    let mut pipe = redis::pipe();
                    for key in chunk {
                        pipe.cmd("STRLEN").arg(key);
                    }
                    pipe.query_async(&mut con).await
                })
                .await?;
            stats.entries += sizes.iter().filter(|n| **n > 0).count() as u64;
            stats.bytes += sizes.iter().sum::<u64>();
        }
        Ok(stats)
    }
}

impl RedisStore {
    /// Every cache key under this prefix (SCAN, so the server is never held).
    async fn cache_keys(&self) -> Result<Vec<String>> {
        let pattern = format!("{}*", self.key(&["cache", ""]));
        let pattern = &pattern;
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .retrying(|mut con| async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(&mut con)
                        .await
                })
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

/// The URL with its password (and any `pass=`/`password=` query value)
/// replaced by `***`, so it can appear in logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user info ends at the last `@` before the query: a password with an
    // unescaped `/` or `@` still counts as part of it.
    let head_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (authority_and_path, tail) = match rest[..head_end].rfind('@') {
        Some(at) => {
            let user = match rest[..at].split_once(':') {
                Some((user, _)) if !user.is_empty() => format!("{user}:***"),
                _ => "***".to_string(),
            };
            (
                format!("{user}@{}", &rest[at + 1..head_end]),
                &rest[head_end..],
            )
        }
        None => (rest[..head_end].to_string(), &rest[head_end..]),
    };
    let tail = match tail.strip_prefix('?') {
        Some(query) => {
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            let query = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_parameter(name) => format!("{name}=***"),
                    _ => pair.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&");
            match fragment {
                Some(fragment) => format!("?{query}#{fragment}"),
                None => format!("?{query}"),
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority_and_path}{tail}")
}

fn is_secret_parameter(name: &str) -> bool {
    matches!(name, "pass" | "password")
}

/// Removes the URL's secrets from a text (an error message that may quote it).
fn scrub(url: &str, text: &str) -> String {
    let mut secrets = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let head_end = rest.find(['?', '#']).unwrap_or(rest.len());
        if let Some(at) = rest[..head_end].rfind('@') {
            let userinfo = &rest[..at];
            secrets.push(userinfo.split_once(':').map_or(userinfo, |(_, p)| p));
        }
        if let Some((_, query)) = rest.split_once('?') {
            for pair in query.split(['&', '#']) {
                if let Some((name, value)) = pair.split_once('=') {
                    if is_secret_parameter(name) {
                        secrets.push(value);
                    }
                }
            }
        }
    }
    let mut text = text.to_string();
    for secret in secrets.into_iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "***");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        let cases = [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:secret@host:6379/0", "redis://***@host:6379/0"),
            ("redis://alice:secret@host", "redis://alice:***@host"),
            ("rediss://secret@host/", "rediss://***@host/"),
            ("redis://:p@ss/w0rd@host:1/2", "redis://***@host:1/2"),
            (
                "redis+unix:///run/redis.sock?db=1&pass=secret",
                "redis+unix:///run/redis.sock?db=1&pass=***",
            ),
            ("not a url", "not a url"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        assert_eq!(
            scrub("redis://:hunter2@h", "auth with hunter2 failed"),
            "auth with *** failed"
        );
        assert_eq!(scrub("redis://h", "plain"), "plain");
    }
}
