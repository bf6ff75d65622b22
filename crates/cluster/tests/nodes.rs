//! The scheduler's node monitor against a real Redis: silent nodes are marked
//! lost once, and nodes gone for long are forgotten — but never a consumer
//! that still holds queue entries.

use gleitzeit_cluster::{DispatchOptions, Keys, NodeInfo, RedisDispatcher, GROUP};
use gleitzeit_core::events::EventPayload;
use gleitzeit_store::{now_ms, MemoryStore, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn url() -> String {
    std::env::var("GLEITZEIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn node(id: &str, heartbeat_ms: i64) -> String {
    serde_json::to_string(&NodeInfo {
        id: id.into(),
        host: "h".into(),
        pid: 1,
        version: "0".into(),
        protocol: 1,
        labels: Default::default(),
        gpu: false,
        capabilities: vec!["python".into()],
        concurrency: 1,
        running: 0,
        completed: 0,
        failed: 0,
        started_ms: heartbeat_ms,
        heartbeat_ms,
        state: String::new(),
    })
    .unwrap()
}

#[tokio::test]
async fn silent_nodes_are_marked_lost_and_long_gone_idle_ones_forgotten() {
    let client = redis::Client::open(url()).unwrap();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("this test needs Redis at {} ({e})", url()));
    let prefix = format!("gz-test-{}", uuid::Uuid::new_v4().simple());
    let keys = Keys::new(&prefix);
    let stream = keys.queue("python", "");
    let now = now_ms();
    let _: () = redis::pipe()
        .hset(keys.nodes(), "fresh", node("fresh", now + 60_000))
        .hset(keys.node_state(), "fresh", "active")
        .hset(keys.nodes(), "silent", node("silent", now - 5_000))
        .hset(keys.node_state(), "silent", "active")
        .hset(
            keys.nodes(),
            "gone-idle",
            node("gone-idle", now - 7_200_000),
        )
        .hset(keys.node_state(), "gone-idle", "lost")
        .hset(
            keys.nodes(),
            "gone-holding",
            node("gone-holding", now - 7_200_000),
        )
        .hset(keys.node_state(), "gone-holding", "lost")
        .hset(keys.queues(), &stream, r#"{"protocol":"python"}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("m")
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    // gone-holding read the entry (and died); gone-idle exists with nothing.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(GROUP)
        .arg("gone-holding")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&stream)
        .arg(GROUP)
        .arg("gone-idle")
        .query_async(&mut conn)
        .await
        .unwrap();

    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let stop = CancellationToken::new();
    let _dispatcher = RedisDispatcher::start(
        &url(),
        &prefix,
        store.clone(),
        DispatchOptions {
            node_timeout: Duration::from_secs(2),
        },
        stop.clone(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.cancel();

    let states: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.node_state())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(states.get("fresh").map(String::as_str), Some("active"));
    assert_eq!(states.get("silent").map(String::as_str), Some("lost"));
    assert!(!states.contains_key("gone-idle"), "{states:?}");
    assert_eq!(
        states.get("gone-holding").map(String::as_str),
        Some("lost"),
        "kept: it holds an entry"
    );
    let consumers: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream)
        .arg(GROUP)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        consumers.len(),
        1,
        "only gone-holding's consumer is left: {consumers:?}"
    );
    // node_left announced once, for the silent node only.
    let events = store.events(None, 0, 100).await.unwrap();
    let left: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::NodeLeft(left) => Some((e, left)),
            _ => None,
        })
        .collect();
    assert_eq!(left.len(), 1, "{events:?}");
    assert_eq!(left[0].1.node_id, "silent");
    assert_eq!(left[0].0.workflow_id, "");

    let all: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(all)
        .query_async(&mut conn)
        .await
        .unwrap();
}
