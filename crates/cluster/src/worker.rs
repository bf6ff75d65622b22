//! A worker node: reads the queues it may serve through the consumer group,
//! runs each call with its own providers (`Runtime::call_here`, so timeouts,
//! cancellation and streamed tokens behave as in a single process), and
//! records the outcome. It heartbeats, keeps its running entries fresh, takes
//! over entries of dead workers, and sends repeat killers to the dead letters.

use crate::dispatch::{node_event, node_joined, node_left, DONE_MAXLEN};
use crate::keys::{call_field, Keys};
use crate::protocol::{DeadLetter, NodeInfo, Outcome, QueueMeta, TaskMessage, PROTOCOL_VERSION};
use crate::{connect, hostname, is_transient, Backoff, ClusterError, GROUP};
use futures_util::StreamExt;
use gleitzeit_core::events::EventPayload;
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_runtime::Runtime;
use gleitzeit_store::{now_ms, Write};
use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub url: String,
    pub prefix: String,
    /// Node id; default `host-pid-xxxx`.
    pub id: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub gpu: bool,
    /// Calls run at once.
    pub concurrency: usize,
    /// Protocols to serve; `None`: every provider this process has.
    pub providers: Option<Vec<String>>,
    pub heartbeat: Duration,
    /// An entry nobody refreshed for this long belongs to a dead worker.
    pub reclaim_after: Duration,
    /// Deliveries after which an entry counts as a worker killer.
    pub max_deliveries: u64,
    /// On shutdown, how long running calls may take to finish.
    pub grace: Duration,
}

impl WorkerOptions {
    pub fn new(url: &str, prefix: &str) -> WorkerOptions {
        WorkerOptions {
            url: url.to_string(),
            prefix: prefix.to_string(),
            id: None,
            labels: BTreeMap::new(),
            gpu: false,
            concurrency: 8,
            providers: None,
            heartbeat: Duration::from_secs(1),
            reclaim_after: Duration::from_secs(15),
            max_deliveries: 3,
            grace: Duration::from_secs(30),
        }
    }
}

struct Running {
    token: CancellationToken,
    workflow_id: String,
    field: String,
}

/// Entries this node holds, by (stream, entry id).
type Holding = Mutex<HashMap<(String, String), Running>>;

pub struct Worker {
    options: WorkerOptions,
    runtime: Runtime,
    keys: Keys,
    conn: ConnectionManager,
    id: String,
    capabilities: Vec<String>,
    started_ms: i64,
    holding: Holding,
    /// Entries taken over from a dead node that wait for every slot: kept
    /// fresh by the heartbeat like running ones; one another node took in
    /// the meantime is dropped from here and not run.
    waiting: Mutex<HashSet<(String, String)>>,
    completed: AtomicU64,
    failed: AtomicU64,
    slots: Arc<Semaphore>,
    freed: Notify,
    /// Set while an entry taken over from a dead node waits for, or runs on,
    /// every slot of this node: nothing new is read meanwhile.
    exclusive: AtomicBool,
    /// Set when such an entry finished: look for the next one at once.
    reclaim_soon: AtomicBool,
    /// Fired when shutdown gave up waiting: calls stop and are left to be
    /// reclaimed elsewhere, not recorded as cancelled.
    abandon: CancellationToken,
    complete: redis::Script,
    dead_letter: redis::Script,
    reclaim: redis::Script,
    refresh: redis::Script,
}

impl Worker {
    /// Connects and checks the cluster speaks this worker's protocol. The
    /// runtime supplies the providers and the store tokens are written to.
    pub async fn connect(options: WorkerOptions, runtime: Runtime) -> Result<Worker, ClusterError> {
        let keys = Keys::new(&options.prefix);
        let mut conn = connect(&options.url, Some(Duration::from_secs(10))).await?;
        let theirs: Option<String> = redis::cmd("HGET")
            .arg(keys.cluster())
            .arg("protocol")
            .query_async(&mut conn)
            .await?;
        if let Some(theirs) = theirs {
            if theirs != PROTOCOL_VERSION.to_string() {
                return Err(ClusterError::Incompatible {
                    ours: PROTOCOL_VERSION,
                    theirs,
                    url: gleitzeit_store::redact_url(&options.url),
                });
            }
        }
        let mut capabilities = Vec::new();
        for provider in runtime.registry().providers() {
            let protocol = provider.protocol().to_string();
            if let Some(wanted) = &options.providers {
                if !wanted.contains(&protocol) {
                    continue;
                }
            }
            if let Err(e) = provider.prepare().await {
                tracing::warn!("provider `{protocol}` unavailable on this node: {e}");
                continue;
            }
            if !capabilities.contains(&protocol) {
                capabilities.push(protocol);
            }
        }
        capabilities.sort();
        let id = options.id.clone().unwrap_or_else(|| {
            let tag = uuid::Uuid::new_v4().simple().to_string();
            format!("{}-{}-{}", hostname(), std::process::id(), &tag[..4])
        });
        let concurrency = options.concurrency.max(1);
        Ok(Worker {
            keys,
            conn,
            id,
            capabilities,
            started_ms: now_ms(),
            holding: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashSet::new()),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(concurrency)),
            freed: Notify::new(),
            exclusive: AtomicBool::new(false),
            reclaim_soon: AtomicBool::new(false),
            abandon: CancellationToken::new(),
            complete: redis::Script::new(include_str!("lua/complete.lua")),
            dead_letter: redis::Script::new(include_str!("lua/dead_letter.lua")),
            reclaim: redis::Script::new(include_str!("lua/reclaim.lua")),
            refresh: redis::Script::new(include_str!("lua/refresh.lua")),
            options: WorkerOptions {
                concurrency,
                ..options
            },
            runtime,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn capabilities(&self) -> &[String] {
        &self.capabilities
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            id: self.id.clone(),
            host: hostname(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL_VERSION,
            labels: self.options.labels.clone(),
            gpu: self.options.gpu,
            capabilities: self.capabilities.clone(),
            concurrency: self.options.concurrency,
            running: self.holding.lock().map(|h| h.len()).unwrap_or(0),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            started_ms: self.started_ms,
            heartbeat_ms: now_ms(),
            state: "active".into(),
        }
    }

    async fn announce(&self, payload: impl FnOnce(&NodeInfo) -> EventPayload) {
        let event = node_event(payload(&self.info()));
        let kind = event.kind();
        if let Err(e) = self.runtime.store().apply(vec![Write::Event(event)]).await {
            tracing::warn!("could not record {kind}: {e}");
        }
    }

    /// Serves until `shutdown` fires, then lets running calls finish (up to
    /// the grace period) and leaves the cluster.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ClusterError> {
        let me = Arc::new(self);
        let mut conn = me.conn.clone();
        let info =
            serde_json::to_string(&me.info()).map_err(|e| ClusterError::Redis(e.to_string()))?;
        let _: () = redis::pipe()
            .hset(me.keys.nodes(), &me.id, info)
            .ignore()
            .hset(me.keys.node_state(), &me.id, "active")
            .ignore()
            .query_async(&mut conn)
            .await?;
        me.announce(|node| node_joined(node, false)).await;
        tracing::info!(node = %me.id, capabilities = ?me.capabilities, "worker joined");

        let background = CancellationToken::new();
        tokio::spawn(heartbeat(me.clone(), background.clone()));
        tokio::spawn(listen_for_cancels(me.clone(), background.clone()));

        let result = me.clone().serve(shutdown).await;

        // Let what is running finish and be recorded; past the grace period
        // leave it pending for another node to take over.
        let deadline = tokio::time::Instant::now() + me.options.grace;
        while me.holding.lock().map(|h| !h.is_empty()).unwrap_or(false) {
            if tokio::time::Instant::now() >= deadline {
                me.abandon.cancel();
                break;
            }
            tokio::select! {
                _ = me.freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        background.cancel();
        let mut conn = me.conn.clone();
        let _: Result<(), _> = redis::cmd("HSET")
            .arg(me.keys.node_state())
            .arg(&me.id)
            .arg("left")
            .query_async(&mut conn)
            .await;
        me.announce(|node| node_left(node, "shutdown", None)).await;
        tracing::info!(node = %me.id, "worker left");
        result
    }

    async fn serve(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), ClusterError> {
        let mut reader = connect(&self.options.url, None).await?;
        let mut queues: Vec<String> = Vec::new();
        let mut with_group: HashSet<String> = HashSet::new();
        let mut last_discovery = None::<tokio::time::Instant>;
        let reclaim_every = (self.options.reclaim_after / 4).max(Duration::from_millis(200));
        let mut last_reclaim = tokio::time::Instant::now();
        let mut backoff = Backoff::new();
        while !shutdown.is_cancelled() {
            if last_discovery.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                match self.discover(&mut with_group).await {
                    Ok(found) => queues = found,
                    Err(e) => {
                        tracing::warn!("Redis unavailable, retrying: {e}");
                        backoff.wait().await;
                        continue;
                    }
                }
                last_discovery = Some(tokio::time::Instant::now());
            }
            let free = self.slots.available_permits();
            if free == 0 || self.exclusive.load(Ordering::Acquire) {
                tokio::select! {
                    _ = self.freed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            if queues.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            if last_reclaim.elapsed() >= reclaim_every
                || self.reclaim_soon.swap(false, Ordering::AcqRel)
            {
                last_reclaim = tokio::time::Instant::now();
                if let Err(e) = self.take_over(&queues).await {
                    tracing::warn!("reclaiming abandoned entries failed: {e}");
                }
                continue;
            }
            let mut read = redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(GROUP)
                .arg(&self.id)
                .arg("COUNT")
                .arg(free)
                .arg("BLOCK")
                .arg(250)
                .arg("STREAMS");
            for queue in &queues {
                read.arg(queue);
            }
            for _ in &queues {
                read.arg(">");
            }
            let reply = tokio::select! {
                reply = read.query_async::<Option<StreamReadReply>>(&mut reader) => reply,
                _ = shutdown.cancelled() => break,
            };
            match reply {
                Ok(reply) => {
                    backoff = Backoff::new();
                    for key in reply.into_iter().flat_map(|r| r.keys) {
                        for entry in key.ids {
                            let payload = entry.get::<String>("m").unwrap_or_default();
                            self.clone().start(key.key.clone(), entry.id, payload, 1);
                        }
                    }
                }
                Err(e) if e.code() == Some("NOGROUP") => {
                    // A queue was removed and recreated: make its group again.
                    with_group.clear();
                    last_discovery = None;
                }
                Err(e) => {
                    tracing::warn!("Redis unavailable while reading the queues, retrying: {e}");
                    backoff.wait().await;
                }
            }
        }
        Ok(())
    }

    /// The queues this node may serve, with their consumer group in place.
    async fn discover(
        &self,
        with_group: &mut HashSet<String>,
    ) -> Result<Vec<String>, ClusterError> {
        let mut conn = self.conn.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.queues())
            .query_async(&mut conn)
            .await?;
        let mut mine = Vec::new();
        for (stream, meta) in all {
            let Ok(meta) = serde_json::from_str::<QueueMeta>(&meta) else {
                continue;
            };
            if !self.capabilities.contains(&meta.protocol)
                || !meta
                    .requires
                    .satisfied_by(self.options.gpu, &self.options.labels)
            {
                continue;
            }
            if with_group.insert(stream.clone()) {
                let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                if let Err(e) = created {
                    if is_transient(&e) {
                        with_group.remove(&stream);
                        return Err(e.into());
                    }
                    // BUSYGROUP: it exists, which is what we want.
                }
            }
            mine.push(stream);
        }
        mine.sort();
        Ok(mine)
    }

    /// Takes over entries abandoned by dead workers.
    /// Takes over one entry a dead node held, and runs it alone.
    ///
    /// Alone, because the node died while running it and whatever else it
    /// held: any of them may be what killed it. Run one at a time, only the
    /// one that kills again collects deliveries towards the dead letters; the
    /// others that shared its first node finish.
    async fn take_over(self: &Arc<Self>, queues: &[String]) -> Result<(), ClusterError> {
        for queue in queues {
            let mut conn = self.conn.clone();
            let claimed: Vec<(String, String, u64)> = self
                .reclaim
                .key(queue)
                .arg(GROUP)
                .arg(&self.id)
                .arg(self.options.reclaim_after.as_millis() as u64)
                .arg(1)
                .arg(self.keys.history(queue, ""))
                .invoke_async(&mut conn)
                .await?;
            if let Some((entry_id, payload, deliveries)) = claimed.into_iter().next() {
                tracing::info!(node = %self.id, entry = %entry_id, deliveries, "took over an abandoned entry; running it alone");
                self.exclusive.store(true, Ordering::Release);
                let key = (queue.clone(), entry_id.clone());
                if let Ok(mut waiting) = self.waiting.lock() {
                    waiting.insert(key.clone());
                }
                let me = self.clone();
                let queue = queue.clone();
                tokio::spawn(async move {
                    let all = me.options.concurrency as u32;
                    if let Ok(permit) = me.slots.clone().acquire_many_owned(all).await {
                        let still_ours = me.waiting.lock().is_ok_and(|mut w| w.remove(&key));
                        if still_ours {
                            me.clone()
                                .execute(queue, entry_id, payload, deliveries, permit)
                                .await;
                        } else {
                            tracing::info!(entry = %entry_id, "another node took this entry over while it waited here");
                        }
                    }
                    me.exclusive.store(false, Ordering::Release);
                    me.reclaim_soon.store(true, Ordering::Release);
                    me.freed.notify_waiters();
                });
                return Ok(());
            }
        }
        Ok(())
    }

    fn start(self: Arc<Self>, stream: String, entry_id: String, payload: String, deliveries: u64) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // More arrived than there are free slots (several queues answered
            // at once): run it as soon as one frees. Its entry stays fresh
            // because we hold it.
            let me = self.clone();
            tokio::spawn(async move {
                if let Ok(permit) = me.slots.clone().acquire_owned().await {
                    me.clone()
                        .execute(stream, entry_id, payload, deliveries, permit)
                        .await;
                }
            });
            return;
        };
        tokio::spawn(
            self.clone()
                .execute(stream, entry_id, payload, deliveries, permit),
        );
    }

    async fn execute(
        self: Arc<Self>,
        stream: String,
        entry_id: String,
        payload: String,
        deliveries: u64,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) {
        // The version first: an entry of another version may not parse at all.
        let version = serde_json::from_str::<serde_json::Value>(&payload)
            .ok()
            .and_then(|v| v.get("v").and_then(serde_json::Value::as_u64));
        let parsed = match version {
            Some(v) if v != u64::from(PROTOCOL_VERSION) => Err(format!(
                "queue protocol {v} (this worker speaks {PROTOCOL_VERSION})"
            )),
            _ => serde_json::from_str::<TaskMessage>(&payload)
                .map_err(|e| format!("unreadable entry: {e}")),
        };
        let message = match parsed {
            Ok(message) => message,
            Err(reason) => {
                self.bury(&stream, &entry_id, &payload, deliveries, reason, None)
                    .await;
                drop(permit);
                return;
            }
        };
        let call = message.call;
        let field = call_field(&call.task_id, call.attempt);
        if deliveries > self.options.max_deliveries {
            let reason = format!(
                "delivered {deliveries} times: {} worker nodes stopped while running it",
                deliveries - 1
            );
            self.bury(
                &stream,
                &entry_id,
                &payload,
                deliveries,
                reason,
                Some(&call),
            )
            .await;
            drop(permit);
            return;
        }
        let token = self.abandon.child_token();
        let key = (stream.clone(), entry_id.clone());
        if let Ok(mut holding) = self.holding.lock() {
            holding.insert(
                key.clone(),
                Running {
                    token: token.clone(),
                    workflow_id: call.workflow_id.clone(),
                    field: field.clone(),
                },
            );
        }
        let history = self.keys.history(&stream, &entry_id);
        let workflow_id = call.workflow_id.clone();
        let outcome = self.runtime.call_here(call, token).await;
        if self.abandon.is_cancelled() {
            // Shutting down past the grace period: another node runs it again.
            self.release(&key);
            drop(permit);
            return;
        }
        match &outcome {
            Ok(_) => self.completed.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
        let record = serde_json::to_string(&Outcome::from(outcome)).unwrap_or_else(|e| {
            format!(r#"{{"err":{{"code":"GZ2001","message":"unserialisable result: {e}"}}}}"#)
        });
        let mut backoff = Backoff::new();
        loop {
            let mut conn = self.conn.clone();
            let done: Result<i64, redis::RedisError> = self
                .complete
                .key(&stream)
                .key(self.keys.results(&workflow_id))
                .key(self.keys.done())
                .key(&history)
                .arg(GROUP)
                .arg(&entry_id)
                .arg(&field)
                .arg(&record)
                .arg(&workflow_id)
                .arg(DONE_MAXLEN)
                .invoke_async(&mut conn)
                .await;
            match done {
                Ok(1) => break,
                Ok(_) => {
                    tracing::info!(entry = %entry_id, "another node recorded this call first");
                    break;
                }
                Err(e) if is_transient(&e) && !self.abandon.is_cancelled() => {
                    tracing::warn!("Redis unavailable while recording a result, retrying: {e}");
                    backoff.wait().await;
                }
                Err(e) => {
                    tracing::error!("could not record a result (left for another node): {e}");
                    break;
                }
            }
        }
        self.release(&key);
        drop(permit);
    }

    fn release(&self, key: &(String, String)) {
        if let Ok(mut holding) = self.holding.lock() {
            holding.remove(key);
        }
        self.freed.notify_waiters();
    }

    /// Moves an entry to the dead letters; if it names a task, that task fails.
    async fn bury(
        &self,
        stream: &str,
        entry_id: &str,
        payload: &str,
        deliveries: u64,
        reason: String,
        call: Option<&gleitzeit_runtime::TaskCall>,
    ) {
        let history = self.keys.history(stream, entry_id);
        let mut conn = self.conn.clone();
        let mut holders: Vec<String> = redis::cmd("LRANGE")
            .arg(&history)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        holders.dedup();
        tracing::warn!(entry = %entry_id, %reason, "moving a queue entry to the dead letters");
        let letter = DeadLetter {
            id: entry_id.to_string(),
            stream: stream.to_string(),
            reason: reason.clone(),
            deliveries,
            holders: holders.clone(),
            at_ms: now_ms(),
            workflow_id: call.map(|c| c.workflow_id.clone()),
            task_id: call.map(|c| c.task_id.clone()),
            attempt: call.map(|c| c.attempt),
            payload: payload.to_string(),
        };
        let (field, record, workflow_id, results) = match call {
            Some(call) => {
                let error = GzError::new(
                    ErrorCode::DeadLettered,
                    format!(
                        "task `{}` was moved to the dead letters: {reason}",
                        call.task_id
                    ),
                )
                .with_details(
                    json!({"entry": entry_id, "deliveries": deliveries, "holders": holders}),
                );
                (
                    call_field(&call.task_id, call.attempt),
                    serde_json::to_string(&Outcome::Err(error)).unwrap_or_default(),
                    call.workflow_id.clone(),
                    self.keys.results(&call.workflow_id),
                )
            }
            None => (String::new(), String::new(), String::new(), String::new()),
        };
        let letter = serde_json::to_string(&letter).unwrap_or_default();
        let moved: Result<i64, _> = self
            .dead_letter
            .key(stream)
            .key(self.keys.dead())
            .key(&history)
            .key(if results.is_empty() {
                self.keys.dead()
            } else {
                results
            })
            .key(self.keys.done())
            .arg(GROUP)
            .arg(entry_id)
            .arg(letter)
            .arg(&field)
            .arg(record)
            .arg(workflow_id)
            .arg(DONE_MAXLEN)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = moved {
            tracing::error!("could not move entry {entry_id} to the dead letters: {e}");
        }
    }
}

/// Tells the cluster this node is alive and keeps its entries from looking
/// abandoned; stops calls another node took over meanwhile.
async fn heartbeat(me: Arc<Worker>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(me.options.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut conn = me.conn.clone();
        let Ok(info) = serde_json::to_string(&me.info()) else {
            continue;
        };
        let state: Result<Option<String>, _> = redis::pipe()
            .hset(me.keys.nodes(), &me.id, info)
            .ignore()
            .hget(me.keys.node_state(), &me.id)
            .query_async::<(Option<String>,)>(&mut conn)
            .await
            .map(|(s,)| s);
        if let Ok(Some(state)) = &state {
            if state != "active" {
                // Marked lost while this process was stalled; it is back.
                let _: Result<(), _> = redis::cmd("HSET")
                    .arg(me.keys.node_state())
                    .arg(&me.id)
                    .arg("active")
                    .query_async(&mut conn)
                    .await;
                me.announce(|node| node_joined(node, true)).await;
            }
        }
        let mut by_stream: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let waiting: Vec<(String, String)> = me
            .waiting
            .lock()
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default();
        if let Ok(holding) = me.holding.lock() {
            for (stream, id) in holding.keys().chain(waiting.iter()) {
                by_stream
                    .entry(stream.clone())
                    .or_default()
                    .push(id.clone());
            }
        }
        for (stream, ids) in by_stream {
            let mut invocation = me.refresh.key(&stream);
            invocation.arg(GROUP).arg(&me.id);
            for id in &ids {
                invocation.arg(id);
            }
            let lost: Result<Vec<String>, _> = invocation.invoke_async(&mut conn).await;
            for id in lost.unwrap_or_default() {
                let key = (stream.clone(), id.clone());
                if me.waiting.lock().is_ok_and(|mut w| w.remove(&key)) {
                    continue;
                }
                if let Ok(holding) = me.holding.lock() {
                    if let Some(running) = holding.get(&(stream.clone(), id.clone())) {
                        tracing::info!(entry = %id, "another node took this entry over; stopping it here");
                        running.token.cancel();
                    }
                }
            }
        }
    }
}

/// Stops calls whose workflow was cancelled or whose scheduler gave up on them.
async fn listen_for_cancels(me: Arc<Worker>, stop: CancellationToken) {
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() {
        let subscribed = async {
            let client = redis::Client::open(me.options.url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(me.keys.cancel_channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let mut pubsub = match subscribed.await {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!("cancel channel unavailable, retrying: {e}");
                tokio::select! {
                    _ = backoff.wait() => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        backoff = Backoff::new();
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                m = messages.next() => m,
                _ = stop.cancelled() => return,
            };
            let Some(message) = message else { break };
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            let Some((workflow_id, field)) = text.split_once(' ') else {
                continue;
            };
            if let Ok(holding) = me.holding.lock() {
                for running in holding.values() {
                    if running.workflow_id == workflow_id && running.field == field {
                        running.token.cancel();
                    }
                }
            }
        }
    }
}
