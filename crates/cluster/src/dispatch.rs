//! The scheduler's side: task calls go onto queues, outcomes come back through
//! the results hash, and a monitor notices worker nodes that stopped
//! heartbeating.

use crate::keys::{call_field, Keys};
use crate::protocol::{NodeInfo, Outcome, QueueMeta, TaskMessage, PROTOCOL_VERSION};
use crate::{connect, is_transient, Backoff, ClusterError, GROUP};
use async_trait::async_trait;
use gleitzeit_core::events::{Event, EventPayload, NodeJoined, NodeLeft};
use gleitzeit_core::{ErrorCode, GzError};
use gleitzeit_runtime::{RemoteExecutor, TaskCall};
use gleitzeit_store::{now_ms, Store, Write};
use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How many notifications of recorded outcomes Redis keeps (approximately).
pub(crate) const DONE_MAXLEN: usize = 10_000;

#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// A node whose last heartbeat is older than this is marked lost.
    pub node_timeout: Duration,
}

impl Default for DispatchOptions {
    fn default() -> Self {
        DispatchOptions {
            node_timeout: Duration::from_secs(10),
        }
    }
}

type Waiters = Mutex<HashMap<(String, String), oneshot::Sender<Outcome>>>;

struct Inner {
    conn: ConnectionManager,
    keys: Keys,
    waiters: Waiters,
    store: Arc<dyn Store>,
    options: DispatchOptions,
    dispatch: redis::Script,
    node_lost: redis::Script,
    cancel: redis::Script,
    forget_node: redis::Script,
    stop: CancellationToken,
}

/// Sends task calls to worker nodes; the runtime's [`RemoteExecutor`].
#[derive(Clone)]
pub struct RedisDispatcher {
    inner: Arc<Inner>,
}

impl RedisDispatcher {
    /// Connects, announces this cluster's protocol version, and starts the
    /// outcome reader and the node monitor (both stop when `stop` fires).
    pub async fn start(
        url: &str,
        prefix: &str,
        store: Arc<dyn Store>,
        options: DispatchOptions,
        stop: CancellationToken,
    ) -> Result<RedisDispatcher, ClusterError> {
        let keys = Keys::new(prefix);
        let mut conn = connect(url, Some(Duration::from_secs(10))).await?;
        let _: () = redis::cmd("HSET")
            .arg(keys.cluster())
            .arg("protocol")
            .arg(PROTOCOL_VERSION)
            .query_async(&mut conn)
            .await?;
        // Read from the newest notification on: anything older is already in
        // the results hash, which `execute` checks after registering.
        let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(keys.done())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let after = last
            .first()
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| "0-0".into());
        let reader = connect(url, None).await?;
        let inner = Arc::new(Inner {
            conn,
            keys,
            waiters: Mutex::new(HashMap::new()),
            store,
            options,
            dispatch: redis::Script::new(include_str!("lua/dispatch.lua")),
            node_lost: redis::Script::new(include_str!("lua/node_lost.lua")),
            cancel: redis::Script::new(include_str!("lua/cancel.lua")),
            forget_node: redis::Script::new(include_str!("lua/forget_node.lua")),
            stop,
        });
        tokio::spawn(read_outcomes(inner.clone(), reader, after));
        tokio::spawn(sweep_waiters(inner.clone()));
        tokio::spawn(watch_nodes(inner.clone()));
        Ok(RedisDispatcher { inner })
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// Enqueues the call; false when this attempt was enqueued before (by
    /// this scheduler before a restart).
    async fn enqueue(&self, call: &TaskCall) -> Result<bool, ClusterError> {
        let keys = &self.inner.keys;
        let route = call.requires.route_key();
        let stream = keys.queue(call.method.split('/').next().unwrap_or(""), &route);
        let meta = QueueMeta {
            protocol: call.method.split('/').next().unwrap_or("").to_string(),
            requires: call.requires.clone(),
        };
        let message = TaskMessage {
            v: PROTOCOL_VERSION,
            call: call.clone(),
            dispatched_ms: now_ms(),
        };
        let payload =
            serde_json::to_string(&message).map_err(|e| ClusterError::Redis(e.to_string()))?;
        let meta = serde_json::to_string(&meta).map_err(|e| ClusterError::Redis(e.to_string()))?;
        let mut backoff = Backoff::new();
        loop {
            let mut conn = self.inner.conn.clone();
            let result: Result<i64, redis::RedisError> = self
                .inner
                .dispatch
                .key(keys.dispatched(&call.workflow_id))
                .key(&stream)
                .key(keys.queues())
                .arg(call_field(&call.task_id, call.attempt))
                .arg(&payload)
                .arg(&meta)
                .arg(GROUP)
                .invoke_async(&mut conn)
                .await;
            match result {
                Ok(added) => return Ok(added == 1),
                Err(e) if is_transient(&e) && !self.inner.stop.is_cancelled() => {
                    tracing::warn!("Redis unavailable while enqueueing a task, retrying: {e}");
                    backoff.wait().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn recorded(&self, workflow_id: &str, field: &str) -> Option<Outcome> {
        let mut conn = self.inner.conn.clone();
        let text: Option<String> = redis::cmd("HGET")
            .arg(self.inner.keys.results(workflow_id))
            .arg(field)
            .query_async(&mut conn)
            .await
            .ok()?;
        parse_outcome(text?.as_str())
    }
}

fn parse_outcome(text: &str) -> Option<Outcome> {
    match serde_json::from_str(text) {
        Ok(outcome) => Some(outcome),
        Err(e) => {
            tracing::warn!("ignoring an unreadable outcome record: {e}");
            None
        }
    }
}

/// Removes the waiter when the call is dropped (cancelled, timed out) and
/// tells the workers to stop it.
struct Pending {
    inner: Arc<Inner>,
    key: (String, String),
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut waiters) = self.inner.waiters.lock() {
            waiters.remove(&self.key);
        }
        if self.answered || self.inner.stop.is_cancelled() {
            return;
        }
        let inner = self.inner.clone();
        let (workflow_id, field) = self.key.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let mut conn = inner.conn.clone();
                let _: Result<i64, _> = inner
                    .cancel
                    .key(inner.keys.dispatched(&workflow_id))
                    .arg(&field)
                    .arg(GROUP)
                    .arg(inner.keys.cancel_channel())
                    .arg(format!("{workflow_id} {field}"))
                    .invoke_async(&mut conn)
                    .await;
            });
        }
    }
}

#[async_trait]
impl RemoteExecutor for RedisDispatcher {
    async fn execute(&self, call: TaskCall) -> Result<Value, GzError> {
        let field = call_field(&call.task_id, call.attempt);
        let key = (call.workflow_id.clone(), field.clone());
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiters) = self.inner.waiters.lock() {
            waiters.insert(key.clone(), tx);
        }
        let mut pending = Pending {
            inner: self.inner.clone(),
            key,
            answered: false,
        };
        let fresh = self.enqueue(&call).await.map_err(GzError::from)?;
        // A restarted scheduler may find the outcome already recorded.
        if !fresh {
            if let Some(outcome) = self.recorded(&call.workflow_id, &field).await {
                pending.answered = true;
                return outcome.into_result();
            }
        }
        let outcome = rx.await.map_err(|_| {
            GzError::new(ErrorCode::ServerShuttingDown, "the scheduler is stopping")
        })?;
        pending.answered = true;
        outcome.into_result()
    }

    async fn workflow_finished(&self, workflow_id: &str) {
        let mut conn = self.inner.conn.clone();
        let keys = &self.inner.keys;
        let _: Result<(), _> = redis::pipe()
            .del(keys.results(workflow_id))
            .ignore()
            .del(keys.dispatched(workflow_id))
            .ignore()
            .query_async(&mut conn)
            .await;
    }
}

fn answer(inner: &Inner, workflow_id: &str, field: &str, outcome: Outcome) {
    let waiter = inner
        .waiters
        .lock()
        .ok()
        .and_then(|mut w| w.remove(&(workflow_id.to_string(), field.to_string())));
    if let Some(waiter) = waiter {
        let _ = waiter.send(outcome);
    }
}

/// Follows the notifications of recorded outcomes and answers the waiting calls.
async fn read_outcomes(inner: Arc<Inner>, mut conn: ConnectionManager, mut after: String) {
    let mut backoff = Backoff::new();
    while !inner.stop.is_cancelled() {
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(inner.keys.done())
            .arg(&after);
        let reply = tokio::select! {
            reply = read.query_async::<Option<StreamReadReply>>(&mut conn) => reply,
            _ = inner.stop.cancelled() => return,
        };
        match reply {
            Ok(reply) => {
                backoff = Backoff::new();
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    after = entry.id.clone();
                    let text = |name: &str| entry.get::<String>(name);
                    match (text("wf"), text("f"), text("r")) {
                        (Some(wf), Some(field), Some(record)) => {
                            if let Some(outcome) = parse_outcome(&record) {
                                answer(&inner, &wf, &field, outcome);
                            }
                        }
                        _ => {
                            tracing::warn!("ignoring a malformed outcome notification {}", entry.id)
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!("Redis unavailable while reading outcomes, retrying: {e}");
                backoff.wait().await;
            }
        }
    }
}

/// Notifications can be missed (Redis restarted, the stream was trimmed while
/// this process was busy); the results hash cannot. Every few seconds, check
/// it for every call still waiting.
async fn sweep_waiters(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.stop.cancelled() => return,
        }
        let waiting: Vec<(String, String)> = match inner.waiters.lock() {
            Ok(w) => w.keys().cloned().collect(),
            Err(_) => return,
        };
        for chunk in waiting.chunks(500) {
            let mut pipe = redis::pipe();
            for (wf, field) in chunk {
                pipe.hget(inner.keys.results(wf), field);
            }
            let mut conn = inner.conn.clone();
            let Ok(found) = pipe.query_async::<Vec<Option<String>>>(&mut conn).await else {
                break;
            };
            for ((wf, field), record) in chunk.iter().zip(found) {
                if let Some(outcome) = record.as_deref().and_then(parse_outcome) {
                    answer(&inner, wf, field, outcome);
                }
            }
        }
    }
}

/// Reads every node record with its state.
pub(crate) async fn read_nodes(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<Vec<NodeInfo>, ClusterError> {
    let (records, states): (HashMap<String, String>, HashMap<String, String>) = redis::pipe()
        .hgetall(keys.nodes())
        .hgetall(keys.node_state())
        .query_async(conn)
        .await?;
    let mut nodes: Vec<NodeInfo> = records
        .into_iter()
        .filter_map(|(id, text)| {
            let mut node: NodeInfo = serde_json::from_str(&text).ok()?;
            node.state = states.get(&id).cloned().unwrap_or_else(|| "active".into());
            Some(node)
        })
        .collect();
    nodes.sort_by(|a, b| a.started_ms.cmp(&b.started_ms).then(a.id.cmp(&b.id)));
    Ok(nodes)
}

/// Marks nodes lost when they stop heartbeating, announces it, and forgets
/// nodes that have been gone for an hour.
async fn watch_nodes(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.stop.cancelled() => return,
        }
        let mut conn = inner.conn.clone();
        let Ok(nodes) = read_nodes(&mut conn, &inner.keys).await else {
            continue;
        };
        let now = now_ms();
        for node in nodes {
            let silent_ms = now - node.heartbeat_ms;
            if node.state == "active" && silent_ms > inner.options.node_timeout.as_millis() as i64 {
                let marked: Result<i64, _> = inner
                    .node_lost
                    .key(inner.keys.node_state())
                    .arg(&node.id)
                    .arg("active")
                    .arg("lost")
                    .invoke_async(&mut conn)
                    .await;
                if marked == Ok(1) {
                    tracing::warn!(node = %node.id, "worker node stopped heartbeating; its tasks will be reclaimed");
                    let event = node_event(node_left(&node, "heartbeat_timeout", Some(silent_ms)));
                    let _ = inner.store.apply(vec![Write::Event(event)]).await;
                }
            } else if node.state != "active" && silent_ms > 3_600_000 {
                let _: Result<i64, _> = inner
                    .forget_node
                    .key(inner.keys.nodes())
                    .key(inner.keys.node_state())
                    .key(inner.keys.queues())
                    .arg(&node.id)
                    .arg(GROUP)
                    .invoke_async(&mut conn)
                    .await;
            }
        }
    }
}

/// A node's event; nodes belong to no workflow.
pub(crate) fn node_event(payload: EventPayload) -> Event {
    Event::new(payload, String::new(), now_ms())
}

pub(crate) fn node_joined(node: &NodeInfo, rejoined: bool) -> EventPayload {
    EventPayload::NodeJoined(NodeJoined {
        node_id: node.id.clone(),
        host: node.host.clone(),
        labels: node.labels.clone(),
        gpu: node.gpu,
        capabilities: node.capabilities.clone(),
        rejoined: rejoined.then_some(true),
    })
}

pub(crate) fn node_left(node: &NodeInfo, reason: &str, silent_ms: Option<i64>) -> EventPayload {
    EventPayload::NodeLeft(NodeLeft {
        node_id: node.id.clone(),
        host: node.host.clone(),
        labels: node.labels.clone(),
        gpu: node.gpu,
        capabilities: node.capabilities.clone(),
        reason: reason.to_string(),
        silent_ms,
    })
}
