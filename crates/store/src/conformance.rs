//! One contract, every store: these tests run against memory, SQLite and Redis
//! alike. The Redis tests need a server (GLEITZEIT_TEST_REDIS_URL, default
//! redis://127.0.0.1:6379) and fail when there is none; each uses its own key
//! prefix and deletes its keys afterwards.

use crate::*;
use gleitzeit_core::events::*;
use gleitzeit_core::model::TaskSpec;
use serde_json::json;
use std::collections::BTreeMap;

fn workflow(id: &str, created_ms: i64) -> (WorkflowRecord, Vec<TaskRecord>) {
    let spec = Workflow {
        name: format!("wf {id}"),
        description: None,
        inputs: Default::default(),
        tasks: vec![TaskSpec::new(
            "a",
            "python/execute",
            json!({"code": "result = 1"}),
        )],
        outputs: Default::default(),
        budget: None,
        triggers: Vec::new(),
        trigger: None,
        access: None,
    };
    let record = WorkflowRecord {
        submitted_by: None,
        id: id.into(),
        name: spec.name.clone(),
        state: WorkflowState::Pending,
        spec,
        source: Some("flow.yaml".into()),
        created_ms,
        started_ms: None,
        finished_ms: None,
        error: None,
        cancel_requested: false,
        owner: None,
    };
    let tasks = vec![
        task(id, "a", 0, TaskState::Pending),
        task(id, "b", 1, TaskState::Pending),
    ];
    (record, tasks)
}

fn task(workflow_id: &str, task_id: &str, position: u32, state: TaskState) -> TaskRecord {
    TaskRecord {
        workflow_id: workflow_id.into(),
        task_id: task_id.into(),
        position,
        method: "python/execute".into(),
        state,
        attempt: 0,
        result: None,
        error: None,
        started_ms: None,
        finished_ms: None,
    }
}

/// A task event of `kind` (`task_started`, `task_completed`, `task_failed`)
/// whose fields tell which kind it is.
fn event(workflow_id: &str, kind: &str) -> Event {
    let task = TaskRef {
        task_id: kind.to_string(),
        task_name: "T".to_string(),
        method: "python/execute".to_string(),
        attempt: 1,
    };
    let payload = match kind {
        TASK_STARTED => EventPayload::TaskStarted(TaskStarted { items: None, task }),
        TASK_COMPLETED => EventPayload::TaskCompleted(TaskCompleted {
            result: json!({"k": kind}),
            stdout: None,
            duration_ms: 1,
            cached: None,
            duration_seconds: 0.001,
            usage: None,
            model: None,
            endpoint: None,
            first_token_ms: None,
            provider_ms: None,
            task,
        }),
        _ => EventPayload::TaskFailed(TaskFailed {
            error: GzError::new(ErrorCode::TaskFailed, kind),
            duration_ms: Some(1),
            task,
        }),
    };
    Event::new(payload, workflow_id, 5)
}

/// One event of every kind, with every optional field set where there is
/// one, and one this version cannot decode.
fn every_kind(workflow_id: &str) -> Vec<Event> {
    let task = |attempt| TaskRef {
        task_id: "a".into(),
        task_name: "A".into(),
        method: "llm/chat".into(),
        attempt,
    };
    let streamed = || AttemptRef {
        task_id: "a".into(),
        task_name: "A".into(),
        attempt: 1,
    };
    let node = || {
        (
            "n1".to_string(),
            "box".to_string(),
            BTreeMap::from([("zone".to_string(), "eu".to_string())]),
        )
    };
    let error = || GzError::new(ErrorCode::TaskFailed, "boom").with_hint("try again");
    let results = json!({"A": "hi"}).as_object().cloned();
    let mut payloads = vec![
        EventPayload::WorkflowStarted(WorkflowStarted {
            name: "flow".into(),
            total_tasks: 3,
            resumed: true,
            trigger: None,
        }),
        EventPayload::WorkflowProgress(WorkflowProgress {
            completed_tasks: 1,
            failed_tasks: 1,
            skipped_tasks: 0,
            total_tasks: 3,
        }),
        EventPayload::WorkflowCompleted(WorkflowCompleted {
            name: "flow".into(),
            state: "completed".into(),
            task_results: results.clone(),
            error: None,
        }),
        EventPayload::WorkflowFailed(WorkflowFailed {
            name: "flow".into(),
            state: "failed".into(),
            task_results: results,
            error: Some(error()),
        }),
        EventPayload::WorkflowCancelled(WorkflowCancelled {
            name: "flow".into(),
            state: "cancelled".into(),
            task_results: None,
            error: Some(error()),
        }),
        EventPayload::TaskStarted(TaskStarted {
            items: Some(4),
            task: task(1),
        }),
    ];
    payloads.push(EventPayload::TaskCompleted(TaskCompleted {
        result: json!("hi"),
        stdout: Some("out".into()),
        duration_ms: 1250,
        cached: Some(true),
        duration_seconds: 1.25,
        usage: Some(json!({"prompt_tokens": 2, "completion_tokens": 3})),
        model: Some(json!("m")),
        endpoint: Some(json!("local")),
        first_token_ms: Some(serde_json::Value::Null),
        provider_ms: Some(json!(1200)),
        task: task(2),
    }));
    payloads.push(EventPayload::TaskFailed(TaskFailed {
        error: error(),
        duration_ms: Some(3),
        task: task(2),
    }));
    payloads.push(EventPayload::TaskRetrying(TaskRetrying {
        next_attempt: 2,
        delay_seconds: 0.25,
        error: Some(error()),
        task: task(1),
    }));
    payloads.push(EventPayload::TaskSkipped(TaskSkipped {
        reason: "skipped because dependency `b` failed".into(),
        task: task(0),
    }));
    payloads.push(EventPayload::TaskCancelled(TaskCancelled { task: task(1) }));
    payloads.push(EventPayload::TaskOutput(TaskOutput {
        task: streamed(),
        line: "line".into(),
    }));
    payloads.push(EventPayload::LlmTokens(LlmTokens {
        task: streamed(),
        tokens: vec!["a".into(), "b".into()],
    }));
    let (node_id, host, labels) = node();
    payloads.push(EventPayload::NodeJoined(NodeJoined {
        node_id,
        host,
        labels,
        gpu: true,
        capabilities: vec!["llm".into()],
        rejoined: Some(true),
    }));
    let (node_id, host, labels) = node();
    payloads.push(EventPayload::NodeLeft(NodeLeft {
        node_id,
        host,
        labels,
        gpu: false,
        capabilities: vec![],
        reason: "heartbeat_timeout".into(),
        silent_ms: Some(40_000),
    }));
    payloads.push(EventPayload::Undecoded(UndecodedEvent {
        kind: "task_paused".into(),
        data: json!({"task_id": "a"}),
    }));
    payloads
        .into_iter()
        .map(|p| Event::new(p, workflow_id, 7))
        .collect()
}

/// Every kind of event reads back from the store exactly as it was written.
async fn events_round_trip(store: &dyn Store) {
    let written = every_kind("wf-kinds");
    let before = store.latest_event_seq().await.unwrap();
    let seqs = store
        .apply(written.iter().cloned().map(Write::Event).collect())
        .await
        .unwrap();
    let read = store.events(Some("wf-kinds"), before, 0).await.unwrap();
    assert_eq!(read.len(), written.len());
    for ((mut event, seq), read) in written.into_iter().zip(seqs).zip(read) {
        event.seq = seq;
        assert_eq!(read, event);
    }
}

async fn contract(store: &dyn Store) {
    let (record, tasks) = workflow("wf-0001", 100);
    store.create_workflow(&record, &tasks).await.unwrap();
    let (other, other_tasks) = workflow("wf-0002", 200);
    store.create_workflow(&other, &other_tasks).await.unwrap();

    // Round trip of the whole record, spec included.
    assert_eq!(store.workflow("wf-0001").await.unwrap().unwrap(), record);
    assert!(store.workflow("nope").await.unwrap().is_none());

    // Prefix lookup: unique prefix works, ambiguous and missing are errors.
    assert_eq!(store.find_workflow("wf-0001").await.unwrap().id, "wf-0001");
    assert_eq!(store.find_workflow("wf-0002").await.unwrap().id, "wf-0002");
    assert!(matches!(
        store.find_workflow("wf-000").await,
        Err(StoreError::Ambiguous(..))
    ));
    assert!(matches!(
        store.find_workflow("zz").await,
        Err(StoreError::WorkflowNotFound(_))
    ));

    // A batch of writes lands together.
    let mut done = task("wf-0001", "a", 0, TaskState::Completed);
    done.attempt = 1;
    done.result = Some(json!({"result": {"x": [1, 2]}}));
    done.started_ms = Some(10);
    done.finished_ms = Some(15);
    let mut failed = task("wf-0001", "b", 1, TaskState::Failed);
    failed.error = Some(GzError::new(ErrorCode::PythonException, "boom").with_hint("h"));
    let seqs = store
        .apply(vec![
            Write::Workflow {
                id: "wf-0001".into(),
                state: WorkflowState::Running,
                at_ms: 9,
                error: None,
            },
            Write::Task(done.clone()),
            Write::Task(failed.clone()),
            Write::Event(event("wf-0001", "task_completed")),
            Write::Event(event("wf-0002", "workflow_started")),
            Write::Event(event("wf-0001", "task_failed")),
        ])
        .await
        .unwrap();
    assert_eq!(seqs.len(), 3, "one sequence number per event");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    let tasks = store.tasks("wf-0001").await.unwrap();
    assert_eq!(tasks, vec![done.clone(), failed.clone()]);
    assert_eq!(tasks[0].duration_ms(), Some(5));
    let running = store.workflow("wf-0001").await.unwrap().unwrap();
    assert_eq!(running.state, WorkflowState::Running);
    assert_eq!(running.started_ms, Some(9));

    assert_eq!(store.latest_event_seq_of("wf-0001").await.unwrap(), seqs[2]);
    assert_eq!(store.latest_event_seq_of("wf-0002").await.unwrap(), seqs[1]);
    assert_eq!(store.latest_event_seq_of("wf-0101").await.unwrap(), 0);

    // Events: ordered, filtered, resumable from a sequence number.
    let all = store.events(None, 0, 0).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let mine = store.events(Some("wf-0001"), 0, 0).await.unwrap();
    assert_eq!(
        mine.iter().map(Event::kind).collect::<Vec<_>>(),
        ["task_completed", "task_failed"]
    );
    let after = store.events(Some("wf-0001"), mine[0].seq, 0).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0],
        Event {
            seq: after[0].seq,
            ..event("wf-0001", "task_failed")
        }
    );

    // Ownership is compare-and-set; finishing clears it.
    let me = Owner {
        host: "h".into(),
        pid: 1,
    };
    let you = Owner {
        host: "h".into(),
        pid: 2,
    };
    assert!(store.claim("wf-0001", None, Some(&me)).await.unwrap());
    assert!(!store.claim("wf-0001", None, Some(&you)).await.unwrap());
    assert!(store.claim("wf-0001", Some(&me), Some(&you)).await.unwrap());
    assert_eq!(
        store.workflow("wf-0001").await.unwrap().unwrap().owner,
        Some(you.clone())
    );
    assert!(store.claim("missing", None, Some(&me)).await.is_err());

    store.request_cancel("wf-0001").await.unwrap();
    assert!(
        store
            .workflow("wf-0001")
            .await
            .unwrap()
            .unwrap()
            .cancel_requested
    );
    assert!(store.request_cancel("missing").await.is_err());

    let error = GzError::new(ErrorCode::TaskFailed, "x");
    store
        .apply(vec![Write::Workflow {
            id: "wf-0001".into(),
            state: WorkflowState::Failed,
            at_ms: 30,
            error: Some(error.clone()),
        }])
        .await
        .unwrap();
    let finished = store.workflow("wf-0001").await.unwrap().unwrap();
    assert_eq!(finished.state, WorkflowState::Failed);
    assert_eq!(finished.finished_ms, Some(30));
    assert_eq!(finished.error, Some(error));
    assert_eq!(finished.owner, None);

    // Listing: newest first, filter by state, paginate, counts per state.
    let listed = store.list_workflows(&ListFilter::default()).await.unwrap();
    assert_eq!(
        listed.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["wf-0002", "wf-0001"]
    );
    assert_eq!(
        (listed[1].total, listed[1].completed, listed[1].failed),
        (2, 1, 1)
    );
    let failed_only = store
        .list_workflows(&ListFilter {
            submitted_by: None,
            state: Some(WorkflowState::Failed),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed_only.len(), 1);
    let page = store
        .list_workflows(&ListFilter {
            limit: 1,
            offset: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page[0].id, "wf-0001");

    let stats = store.stats().await.unwrap();
    assert!(stats
        .workflows_by_state
        .contains(&("failed".to_string(), 1)));
    assert!(stats.tasks_by_state.contains(&("completed".to_string(), 1)));

    // The newest event id, for streams that start "from now".
    let all = store.events(None, 0, 0).await.unwrap();
    assert!(!all.is_empty());
    assert_eq!(
        store.latest_event_seq().await.unwrap(),
        all.last().unwrap().seq
    );

    // Finished tasks in a window, newest first, for `stats --range`.
    let recent = store.tasks_finished_since(0, 0).await.unwrap();
    assert!(!recent.is_empty());
    assert!(recent.iter().all(|t| t.finished_ms.is_some()));
    assert!(recent
        .windows(2)
        .all(|w| w[0].finished_ms >= w[1].finished_ms));
    let newest = recent[0].finished_ms.unwrap();
    assert!(store
        .tasks_finished_since(newest + 1, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.tasks_finished_since(0, 1).await.unwrap().len(), 1);

    auth_records(store).await;
    cache_entries(store).await;
    token_chunks(store).await;
    events_round_trip(store).await;
    owned_lookups(store).await;
}

async fn owned_lookups(store: &dyn Store) {
    // Within one submitter's reach, prefixes see only their workflows, and a
    // foreign id reads exactly like a missing one.
    for (id, by) in [("wf-0101", "ann"), ("wf-0102", "bob"), ("wf-0103", "bob")] {
        let (mut mine, mine_tasks) = workflow(id, 300);
        mine.submitted_by = Some(by.into());
        store.create_workflow(&mine, &mine_tasks).await.unwrap();
    }
    assert_eq!(
        store.find_workflow_of("wf-01", "ann").await.unwrap().id,
        "wf-0101"
    );
    assert_eq!(
        store.find_workflow_of("wf-0101", "ann").await.unwrap().id,
        "wf-0101"
    );
    match store.find_workflow_of("wf-01", "bob").await {
        Err(StoreError::Ambiguous(_, ids)) => {
            assert!(!ids.contains("wf-0101"), "{ids}");
            assert!(ids.contains("wf-0102") && ids.contains("wf-0103"), "{ids}");
        }
        other => panic!("{other:?}"),
    }
    let foreign = store.find_workflow_of("wf-0101", "bob").await.unwrap_err();
    let missing = store.find_workflow_of("wf-0199", "bob").await.unwrap_err();
    assert!(
        matches!(foreign, StoreError::WorkflowNotFound(_)),
        "{foreign:?}"
    );
    assert_eq!(
        foreign.to_string().replace("wf-0101", "X"),
        missing.to_string().replace("wf-0199", "X")
    );
    assert!(matches!(
        store.find_workflow_of("wf-0001", "ann").await,
        Err(StoreError::WorkflowNotFound(_))
    ));
}

/// Cache entries: put, get while live, expiry, replace, stats, clear.
/// Streamed tokens are stored as `llm_tokens` chunks (one row per chunk) and
/// come back in order, expanding to the same `llm_token` events, with ids a
/// stream can resume from inside a chunk.
async fn token_chunks(store: &dyn Store) {
    let task = LlmTokens {
        task: AttemptRef {
            task_id: "talk".into(),
            task_name: "talk".into(),
            attempt: 1,
        },
        tokens: Vec::new(),
    };
    let words: Vec<String> = (0..500).map(|i| format!("t{i} ")).collect();
    let before = store.latest_event_seq().await.unwrap();
    let mut writes = Vec::new();
    for (i, chunk) in words.chunks(200).enumerate() {
        let chunk = LlmTokens {
            tokens: chunk.to_vec(),
            ..task.clone()
        };
        writes.push(Write::Event(Event::new(
            EventPayload::LlmTokens(chunk),
            "wf-tok",
            i as i64,
        )));
    }
    writes.push(Write::Event(event("wf-tok", "task_completed")));
    let seqs = store.apply(writes).await.unwrap();
    assert_eq!(seqs.len(), 4, "500 tokens in three rows");
    let stored = store.events(Some("wf-tok"), before, 0).await.unwrap();
    assert_eq!(stored.len(), 4);
    let expanded = expand_all(stored);
    let tokens: Vec<&str> = expanded
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::LlmToken(token) => Some(token.token.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(tokens, words.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(expanded.last().unwrap().kind(), "task_completed");
    assert_eq!(
        expanded[0].payload,
        EventPayload::LlmToken(LlmToken {
            task: AttemptRef {
                task_id: "talk".into(),
                task_name: "talk".into(),
                attempt: 1,
            },
            token: "t0 ".into()
        })
    );
    // Resuming after any id, reading from the store, gives exactly the rest.
    for (i, seen) in expanded.iter().enumerate().step_by(37) {
        let cursor = Cursor::parse(&seen.id()).unwrap();
        let again = expand_all(store.events(Some("wf-tok"), cursor.done, 0).await.unwrap());
        let rest: Vec<_> = again.into_iter().filter(|e| cursor.is_before(e)).collect();
        assert_eq!(rest, expanded[i + 1..], "after {}", seen.id());
    }
}

async fn cache_entries(store: &dyn Store) {
    let now = now_ms();
    let entry = |key: &str, expires_ms: Option<i64>| CacheEntry {
        key: key.into(),
        method: "python/execute".into(),
        result: json!({"result": [1, 2, 3], "stdout": ""}),
        created_ms: now,
        expires_ms,
    };
    assert_eq!(store.cache_get("k1", now).await.unwrap(), None);
    store.cache_put(&entry("k1", None)).await.unwrap();
    store
        .cache_put(&entry("k2", Some(now + 60_000)))
        .await
        .unwrap();
    assert_eq!(
        store.cache_get("k1", now).await.unwrap(),
        Some(entry("k1", None))
    );
    assert!(store.cache_get("k2", now).await.unwrap().is_some());
    assert_eq!(
        store.cache_get("k2", now + 60_001).await.unwrap(),
        None,
        "an expired entry is not used"
    );
    let mut replaced = entry("k1", None);
    replaced.result = json!({"result": "new"});
    store.cache_put(&replaced).await.unwrap();
    assert_eq!(
        store.cache_get("k1", now).await.unwrap().unwrap().result,
        json!({"result": "new"})
    );
    let stats = store.cache_stats(now).await.unwrap();
    assert_eq!(stats.entries, 2, "{stats:?}");
    assert!(stats.bytes > 10, "{stats:?}");
    assert_eq!(store.cache_clear().await.unwrap(), 2);
    assert_eq!(store.cache_get("k1", now).await.unwrap(), None);
    assert_eq!(store.cache_stats(now).await.unwrap().entries, 0);
}

/// Users, keys (found by hash), the audit log, and workflows by submitter.
async fn auth_records(store: &dyn Store) {
    let user = |name: &str, role: &str| UserRecord {
        name: name.into(),
        email: None,
        role: role.into(),
        disabled: false,
        created_ms: 1,
    };
    store.put_user(&user("zoe", "USER")).await.unwrap();
    store.put_user(&user("adam", "ADMIN")).await.unwrap();
    let mut zoe = user("zoe", "USER");
    zoe.disabled = true;
    store.put_user(&zoe).await.unwrap();
    let users = store.users().await.unwrap();
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["adam", "zoe"]
    );
    assert!(users[1].disabled, "put_user replaces");

    let key = KeyRecord {
        id: "gzt_abc123".into(),
        name: "ci".into(),
        user: "adam".into(),
        role: None,
        hash: "h1".into(),
        created_ms: 5,
        expires_ms: Some(10),
        revoked_ms: None,
    };
    store.put_key(&key).await.unwrap();
    assert_eq!(store.key_by_hash("h1").await.unwrap(), Some(key.clone()));
    assert_eq!(store.key_by_hash("h2").await.unwrap(), None);
    let revoked = KeyRecord {
        revoked_ms: Some(7),
        ..key
    };
    store.put_key(&revoked).await.unwrap();
    assert_eq!(store.keys().await.unwrap(), vec![revoked]);

    let entry = |action: &str| AuditEntry {
        seq: 0,
        at_ms: 9,
        actor: Some("adam".into()),
        action: action.into(),
        target: None,
        outcome: "ok".into(),
        client: None,
    };
    let first = store.audit(&entry("key.create")).await.unwrap();
    let second = store.audit(&entry("workflow.cancel")).await.unwrap();
    assert!(second > first);
    let log = store.audit_log(first, 0).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].seq, log[0].action.as_str()),
        (second, "workflow.cancel")
    );

    let (mut mine, tasks) = workflow("wf-mine", 500);
    mine.submitted_by = Some("zoe".into());
    store.create_workflow(&mine, &tasks).await.unwrap();
    let only_zoe = store
        .list_workflows(&ListFilter {
            submitted_by: Some("zoe".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        only_zoe.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["wf-mine"]
    );
    assert_eq!(
        store
            .workflow("wf-mine")
            .await
            .unwrap()
            .unwrap()
            .submitted_by,
        Some("zoe".into())
    );
}

#[tokio::test]
async fn a_version_1_database_is_migrated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE workflows (id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, spec TEXT NOT NULL, source TEXT, created_ms INTEGER NOT NULL, started_ms INTEGER, finished_ms INTEGER, error TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, owner TEXT);
             CREATE TABLE tasks (workflow_id TEXT NOT NULL, task_id TEXT NOT NULL, position INTEGER NOT NULL, method TEXT NOT NULL, state TEXT NOT NULL, attempt INTEGER NOT NULL, result TEXT, error TEXT, started_ms INTEGER, finished_ms INTEGER, PRIMARY KEY (workflow_id, task_id)) WITHOUT ROWID;
             CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, workflow_id TEXT NOT NULL, kind TEXT NOT NULL, at_ms INTEGER NOT NULL, data TEXT NOT NULL);
             INSERT INTO workflows (id, name, state, spec, created_ms) VALUES ('wf-old', 'old', 'completed', '{\"name\":\"old\",\"tasks\":[]}', 1);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
    let old = store.workflow("wf-old").await.unwrap();
    assert_eq!(
        old.map(|w| w.submitted_by),
        Some(None),
        "old rows read back"
    );
    auth_records(&store).await;
    cache_entries(&store).await;
}

#[tokio::test]
async fn a_version_2_database_gets_the_cache_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.db");
    {
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let (record, tasks) = workflow("wf-v2", 1);
        store.create_workflow(&record, &tasks).await.unwrap();
    }
    {
        // What version 2 left behind: everything but the cache table.
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE cache; PRAGMA user_version = 2;")
            .unwrap();
    }
    let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
    assert!(store.workflow("wf-v2").await.unwrap().is_some());
    cache_entries(&store).await;
    schedules(&store).await;
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
}

fn nested(levels: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..levels {
        value = Value::Array(vec![value]);
    }
    value
}

fn schedule(id: &str, created_ms: i64) -> ScheduleRecord {
    let (record, _) = workflow(id, created_ms);
    ScheduleRecord {
        id: id.into(),
        name: record.name.clone(),
        spec: record.spec,
        source: Some("flow.yaml".into()),
        trigger: serde_json::from_value(json!({"kind": "every", "every_ms": 1000})).unwrap(),
        created_ms,
        submitted_by: Some("alice".into()),
        paused: false,
        next_fire_ms: Some(created_ms + 1000),
        last_fire_ms: None,
        last_run_id: None,
        buffered_tick_ms: None,
        fired: 0,
        skipped: 0,
        failed: 0,
        last_error: None,
        hook_secret_sha256: None,
        version: 0,
    }
}

/// Schedules are written by compare-and-set on their version: of two
/// writers that read the same version only the first wins. Runs are listed
/// by the schedule that started them.
async fn schedules(store: &dyn Store) {
    let first = schedule("sch_b", 20);
    assert!(store.put_schedule(&first, None).await.unwrap());
    assert!(
        !store.put_schedule(&first, None).await.unwrap(),
        "a second create with the same id is refused"
    );
    assert!(store
        .put_schedule(&schedule("sch_a", 10), None)
        .await
        .unwrap());
    let read = store.schedule("sch_b").await.unwrap().unwrap();
    assert_eq!(read.version, 1);
    assert_eq!(read.trigger, first.trigger);
    assert_eq!(read.submitted_by.as_deref(), Some("alice"));

    let mut advanced = read.clone();
    advanced.next_fire_ms = Some(2020);
    advanced.fired = 1;
    let mut paused = read.clone();
    paused.paused = true;
    assert!(store.put_schedule(&advanced, Some(1)).await.unwrap());
    assert!(
        !store.put_schedule(&paused, Some(1)).await.unwrap(),
        "a stale version loses"
    );
    let read = store.schedule("sch_b").await.unwrap().unwrap();
    assert_eq!((read.version, read.fired, read.paused), (2, 1, false));
    assert!(!store.put_schedule(&read, Some(7)).await.unwrap());

    let ids: Vec<String> = store
        .schedules()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["sch_a", "sch_b"], "oldest first");
    assert_eq!(find_schedule(store, "sch_b").await.unwrap().id, "sch_b");
    assert_eq!(
        find_schedule(store, "sch_").await.unwrap_err().code,
        ErrorCode::ScheduleNotFound,
        "an ambiguous prefix"
    );
    assert_eq!(
        find_schedule(store, "nope").await.unwrap_err().code,
        ErrorCode::ScheduleNotFound
    );

    // Runs carry their trigger; listing by schedule finds exactly them.
    for (id, sched) in [
        ("run-1", Some("sch_b")),
        ("run-2", Some("sch_a")),
        ("run-3", Some("sch_b")),
        ("run-4", None),
    ] {
        let (mut record, tasks) = workflow(id, 100);
        record.spec.trigger = sched.map(|s| gleitzeit_core::triggers::RunTrigger {
            kind: "every".into(),
            id: s.into(),
            tick: "2026-01-01T00:00:00.000Z".into(),
        });
        store.create_workflow(&record, &tasks).await.unwrap();
    }
    let runs = store
        .list_workflows(&ListFilter {
            schedule: Some("sch_b".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ids: Vec<String> = runs.into_iter().map(|w| w.id).collect();
    ids.sort();
    assert_eq!(ids, ["run-1", "run-3"]);
    let got = store.workflow("run-3").await.unwrap().unwrap();
    assert_eq!(
        got.spec.trigger.unwrap().id,
        "sch_b",
        "the trigger reads back"
    );
    let pending = store
        .list_workflows(&ListFilter {
            schedule: Some("sch_a".into()),
            state: Some(WorkflowState::Pending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);

    assert!(store.delete_schedule("sch_a").await.unwrap());
    assert!(!store.delete_schedule("sch_a").await.unwrap());
    assert!(store.schedule("sch_a").await.unwrap().is_none());
    assert!(
        store
            .put_schedule(&schedule("sch_a", 10), None)
            .await
            .unwrap(),
        "a removed id can be used again"
    );
}

/// Streams limited to one user read that user's events only, in order and
/// by pages; nothing too deep to read back is ever written.
async fn reach_and_limits(store: &dyn Store) {
    for (id, user) in [
        ("rl-alice-1", "alice"),
        ("rl-bob-1", "bob"),
        ("rl-alice-2", "alice"),
    ] {
        let (mut record, tasks) = workflow(id, 10);
        record.submitted_by = Some(user.into());
        store.create_workflow(&record, &tasks).await.unwrap();
    }
    let mut writes = Vec::new();
    for round in 0..3 {
        for id in ["rl-alice-1", "rl-bob-1", "rl-alice-2"] {
            writes.push(Write::Event(Event {
                at_ms: round,
                ..event(id, TASK_STARTED)
            }));
        }
    }
    let seqs = store.apply(writes).await.unwrap();
    let before = seqs[0] - 1;
    let alice = store.events_submitted_by("alice", before, 0).await.unwrap();
    assert_eq!(alice.len(), 6);
    assert!(alice.iter().all(|e| e.workflow_id.starts_with("rl-alice")));
    assert!(alice.windows(2).all(|w| w[0].seq < w[1].seq));
    let first_page = store.events_submitted_by("alice", before, 4).await.unwrap();
    assert_eq!(first_page.len(), 4);
    let rest = store
        .events_submitted_by("alice", first_page[3].seq, 4)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].seq, alice[4].seq);
    assert!(store
        .events_submitted_by("mallory", 0, 0)
        .await
        .unwrap()
        .is_empty());

    // Too deep to read back: refused with the limit's code, nothing stored.
    let (mut deep, tasks) = workflow("rl-deep", 11);
    deep.spec.tasks[0].params = json!({"v": nested(130)});
    let error = store.create_workflow(&deep, &tasks).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InputLimitExceeded, "{error}");
    assert!(store.workflow("rl-deep").await.unwrap().is_none());
    let mut result = task("rl-bob-1", "a", 0, TaskState::Completed);
    result.result = Some(json!({"result": nested(130)}));
    let error = store.apply(vec![Write::Task(result)]).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::InputLimitExceeded, "{error}");
    let tasks = store.tasks("rl-bob-1").await.unwrap();
    assert!(tasks.iter().all(|t| t.state == TaskState::Pending));
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
    reach_and_limits(&MemoryStore::new()).await;
    schedules(&MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("g.db"))).unwrap();
    contract(&store).await;
    reach_and_limits(&store).await;
    schedules(&store).await;
}

/// A row that cannot be decoded (an older version's, or a damaged one) fails
/// its own workflow with GZ5008; every other row still reads.
#[tokio::test]
async fn sqlite_unreadable_rows_fail_only_their_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.db");
    let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
    for id in ["bad-spec", "bad-result", "fine"] {
        let (record, tasks) = workflow(id, 1);
        store.create_workflow(&record, &tasks).await.unwrap();
    }
    store
        .apply(vec![Write::Event(Event {
            at_ms: 1,
            ..event("bad-result", TASK_STARTED)
        })])
        .await
        .unwrap();
    drop(store);
    let deep = serde_json::to_string(&nested(200)).unwrap();
    // A well-formed spec whose parameters nest deeper than JSON is read back.
    let mut spec = serde_json::to_value(&workflow("bad-spec", 1).0.spec).unwrap();
    spec["tasks"][0]["params"] = nested(200);
    let spec = serde_json::to_string(&spec).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE workflows SET spec = ?1 WHERE id = 'bad-spec'",
        [&spec],
    )
    .unwrap();
    conn.execute(
        "UPDATE tasks SET result = ?1, state = 'completed' WHERE workflow_id = 'bad-result' AND task_id = 'a'",
        [&deep],
    )
    .unwrap();
    conn.execute(
        "UPDATE events SET data = ?1 WHERE workflow_id = 'bad-result'",
        [&deep],
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
    let bad = store.workflow("bad-spec").await.unwrap().unwrap();
    assert_eq!(bad.state, WorkflowState::Failed);
    let error = bad.error.unwrap();
    assert_eq!(error.code, ErrorCode::StoredRecordUnreadable);
    assert!(
        error.message.contains("recursion limit"),
        "{}",
        error.message
    );
    assert_eq!(bad.name, "wf bad-spec");

    let tasks = store.tasks("bad-result").await.unwrap();
    let a = tasks.iter().find(|t| t.task_id == "a").unwrap();
    assert_eq!(a.state, TaskState::Failed);
    assert_eq!(
        a.error.as_ref().unwrap().code,
        ErrorCode::StoredRecordUnreadable
    );
    let events = store.events(Some("bad-result"), 0, 0).await.unwrap();
    assert_eq!(events.len(), 1);
    // Passed on as it is, with the reason it cannot be read as its data.
    assert_eq!(events[0].kind(), TASK_STARTED);
    let EventPayload::Undecoded(undecoded) = &events[0].payload else {
        panic!("{:?}", events[0]);
    };
    assert_eq!(undecoded.data["error"]["code"], "GZ5008");

    let fine = store.workflow("fine").await.unwrap().unwrap();
    assert_eq!(fine.state, WorkflowState::Pending);
    assert_eq!(store.find_workflow("fin").await.unwrap().id, "fine");
    let listed = store
        .list_workflows(&ListFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 3);
}

#[tokio::test]
async fn sqlite_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/g.db");
    {
        let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
        let (record, tasks) = workflow("wf-keep", 1);
        store.create_workflow(&record, &tasks).await.unwrap();
    }
    let store = SqliteStore::open(SqliteOptions::new(&path)).unwrap();
    assert_eq!(store.tasks("wf-keep").await.unwrap().len(), 2);
}

#[test]
fn corrupt_file_is_reported_as_gz5004() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let error = SqliteStore::open(SqliteOptions::new(&path)).err().unwrap();
    assert_eq!(error.code(), ErrorCode::DatabaseCorrupt, "{error}");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA user_version = 99")
        .unwrap();
    let error = SqliteStore::open(SqliteOptions::new(&path)).err().unwrap();
    assert_eq!(error.code(), ErrorCode::SchemaTooNew);
}

#[tokio::test]
async fn locked_database_is_reported_as_gz5003() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let mut options = SqliteOptions::new(&path);
    options.busy_timeout = std::time::Duration::from_millis(100);
    let store = SqliteStore::open(options).unwrap();
    // Another process holding an exclusive write transaction.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (record, tasks) = workflow("wf-l", 1);
    let error = store.create_workflow(&record, &tasks).await.unwrap_err();
    assert_eq!(error.code(), ErrorCode::DatabaseLocked, "{error}");
    holder.execute_batch("ROLLBACK").unwrap();
    store.create_workflow(&record, &tasks).await.unwrap();
}

// ---- Redis ----

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn redis_url() -> String {
    std::env::var("GLEITZEIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix of its own for one test; its keys are deleted when dropped,
/// even when the test panicked.
struct RedisPrefix {
    prefix: String,
}

impl RedisPrefix {
    fn new() -> RedisPrefix {
        RedisPrefix {
            prefix: format!("gleitzeit-test-{}", uuid::Uuid::new_v4()),
        }
    }

    fn options(&self) -> RedisOptions {
        RedisOptions {
            prefix: self.prefix.clone(),
            ..Default::default()
        }
    }

    async fn store(&self) -> RedisStore {
        self.store_at(&redis_url(), self.options()).await
    }

    async fn store_at(&self, url: &str, options: RedisOptions) -> RedisStore {
        match RedisStore::connect(url, options).await {
            Ok(store) => store,
            Err(e @ StoreError::Unreachable { .. }) => panic!(
                "these tests need Redis: {e}. Start one with \
                 `redis-server --port 6379 --save '' --daemonize yes` or point \
                 GLEITZEIT_TEST_REDIS_URL at one."
            ),
            Err(e) => panic!("cannot open the Redis store at {}: {e}", redact_url(url)),
        }
    }

    fn keys(&self) -> Vec<String> {
        let Ok(mut con) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) else {
            return Vec::new();
        };
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let Ok((next, batch)): redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}:*", self.prefix))
                .arg("COUNT")
                .arg(1000)
                .query(&mut con)
            else {
                break;
            };
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let keys = self.keys();
        if let Ok(mut con) = redis::Client::open(redis_url()).and_then(|c| c.get_connection()) {
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(chunk).query(&mut con);
            }
        }
    }
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let prefix = RedisPrefix::new();
    let store = prefix.store().await;
    contract(&store).await;
    reach_and_limits(&store).await;
    schedules(&store).await;
    assert_eq!(store.prefix(), prefix.prefix);
    assert!(
        prefix.keys().iter().all(|k| k.starts_with(&prefix.prefix)),
        "every key under the prefix"
    );
}

#[tokio::test]
async fn redis_keys_are_cleaned_up() {
    let prefix = RedisPrefix::new();
    let store = prefix.store().await;
    let (record, tasks) = workflow("wf-x", 1);
    store.create_workflow(&record, &tasks).await.unwrap();
    assert!(!prefix.keys().is_empty());
    let name = prefix.prefix.clone();
    drop(prefix);
    assert!(RedisPrefix { prefix: name }.keys().is_empty());
}

#[tokio::test]
async fn redis_counters_follow_state_changes_only() {
    let prefix = RedisPrefix::new();
    let store = prefix.store().await;
    let (record, tasks) = workflow("wf-c", 1);
    store.create_workflow(&record, &tasks).await.unwrap();
    // A second create of the same id is refused, like SQLite's primary key.
    assert!(store.create_workflow(&record, &tasks).await.is_err());
    let mut done = task("wf-c", "a", 0, TaskState::Completed);
    done.finished_ms = Some(3);
    // The same state written twice, and a task of a workflow that does not exist.
    for _ in 0..2 {
        store
            .apply(vec![
                Write::Task(done.clone()),
                Write::Workflow {
                    id: "wf-c".into(),
                    state: WorkflowState::Running,
                    at_ms: 2,
                    error: None,
                },
                Write::Task(task("ghost", "z", 0, TaskState::Failed)),
                Write::Workflow {
                    id: "ghost".into(),
                    state: WorkflowState::Running,
                    at_ms: 2,
                    error: None,
                },
            ])
            .await
            .unwrap();
    }
    // A rewrite keeps the first position and method, as SQLite's upsert does.
    let mut moved = done.clone();
    moved.position = 7;
    moved.method = "other/method".into();
    store.apply(vec![Write::Task(moved)]).await.unwrap();
    let tasks = store.tasks("wf-c").await.unwrap();
    assert_eq!(tasks[0], done);

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.workflows_by_state, vec![("running".to_string(), 1)]);
    assert_eq!(
        stats.tasks_by_state,
        vec![
            ("completed".to_string(), 1),
            ("failed".to_string(), 1),
            ("pending".to_string(), 1)
        ]
    );
    let listed = store.list_workflows(&ListFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].total, listed[0].completed, listed[0].failed),
        (2, 1, 0)
    );
    assert!(store.workflow("ghost").await.unwrap().is_none());

    // Back to pending: running's count goes, the timestamps follow SQLite.
    store
        .apply(vec![Write::Workflow {
            id: "wf-c".into(),
            state: WorkflowState::Paused,
            at_ms: 4,
            error: None,
        }])
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.workflows_by_state, vec![("paused".to_string(), 1)]);
    let paused = store.workflow("wf-c").await.unwrap().unwrap();
    assert_eq!((paused.started_ms, paused.finished_ms), (Some(2), None));
}

/// Listing across pages of the script (more than it fetches per call), with
/// the tie-break on equal creation times and both filters at once.
#[tokio::test]
async fn redis_lists_like_sqlite() {
    let prefix = RedisPrefix::new();
    let redis = prefix.store().await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(SqliteOptions::new(dir.path().join("g.db"))).unwrap();
    for i in 0..1200u32 {
        let (mut record, tasks) = workflow(&format!("wf-{i:05}"), i64::from(i / 3));
        record.submitted_by = (i % 2 == 0).then(|| "zoe".to_string());
        if i % 5 == 0 {
            record.state = WorkflowState::Completed;
        }
        redis.create_workflow(&record, &tasks).await.unwrap();
        sqlite.create_workflow(&record, &tasks).await.unwrap();
    }
    let filters = [
        ListFilter::default(),
        ListFilter {
            limit: 7,
            offset: 3,
            ..Default::default()
        },
        ListFilter {
            state: Some(WorkflowState::Completed),
            ..Default::default()
        },
        ListFilter {
            submitted_by: Some("zoe".into()),
            limit: 600,
            offset: 1,
            ..Default::default()
        },
        ListFilter {
            submitted_by: Some("zoe".into()),
            state: Some(WorkflowState::Completed),
            limit: 0,
            offset: 2,
            schedule: None,
        },
        ListFilter {
            submitted_by: Some("zoe".into()),
            state: Some(WorkflowState::Pending),
            limit: 10,
            offset: 470,
            schedule: None,
        },
        ListFilter {
            submitted_by: Some("nobody".into()),
            ..Default::default()
        },
    ];
    for filter in filters {
        let ids = |list: Vec<WorkflowSummary>| list.into_iter().map(|w| w.id).collect::<Vec<_>>();
        assert_eq!(
            ids(redis.list_workflows(&filter).await.unwrap()),
            ids(sqlite.list_workflows(&filter).await.unwrap()),
            "{filter:?}"
        );
    }
    assert_eq!(
        redis
            .find_workflow("wf-0119")
            .await
            .unwrap_err()
            .to_string(),
        sqlite
            .find_workflow("wf-0119")
            .await
            .unwrap_err()
            .to_string()
    );
    assert_eq!(
        redis.find_workflow("wf-01199").await.unwrap().id,
        "wf-01199"
    );
    assert_eq!(
        redis.stats().await.unwrap().workflows_by_state,
        sqlite.stats().await.unwrap().workflows_by_state
    );
}

#[tokio::test]
async fn unreachable_redis_fails_fast_without_the_password() {
    let error = RedisStore::connect("redis://:hunter2@127.0.0.1:1", RedisOptions::default())
        .await
        .err()
        .expect("nothing listens on port 1");
    match &error {
        StoreError::Unreachable { url, reason } => {
            assert_eq!(url, "redis://***@127.0.0.1:1");
            // Fast: the refusal itself is the answer; connect did not sit
            // out its timeout waiting for one.
            assert!(!reason.contains("no connection within"), "{reason}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(!format!("{error} {error:?}").contains("hunter2"));
    assert_eq!(error.code(), ErrorCode::RedisConnectionFailed);
}

#[tokio::test]
async fn silent_redis_fails_within_the_connect_timeout() {
    // Accepts connections and never answers, like a host behind a black hole.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let options = RedisOptions {
        connect_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let error = RedisStore::connect(&url, options).await.err().unwrap();
    // The connection was accepted and held, so only a timeout (connect's own,
    // or the connection manager's with the same limit) can have ended it.
    let StoreError::Unreachable { reason, .. } = &error else {
        panic!("expected Unreachable, got {error:?}");
    };
    let reason = reason.to_lowercase();
    assert!(
        reason.contains("no connection within 500 ms")
            || reason.contains("timed out")
            || reason.contains("timeout"),
        "{reason}"
    );
    holder.abort();
}

#[tokio::test]
async fn newer_redis_schema_is_refused() {
    let prefix = RedisPrefix::new();
    drop(prefix.store().await);
    let mut con = redis::Client::open(redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}:schema", prefix.prefix))
        .arg(2)
        .query(&mut con)
        .unwrap();
    let error = RedisStore::connect(&redis_url(), prefix.options())
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), ErrorCode::SchemaTooNew, "{error}");
}

fn two_events(workflow_id: &str) -> Vec<Write> {
    vec![
        Write::Event(event(workflow_id, "task_started")),
        Write::Event(event(workflow_id, "task_completed")),
    ]
}

#[tokio::test]
async fn redis_apply_is_idempotent_per_batch_id() {
    let prefix = RedisPrefix::new();
    let store = prefix.store().await;
    let (record, tasks) = workflow("wf-i", 1);
    store.create_workflow(&record, &tasks).await.unwrap();
    let mut batch = two_events("wf-i");
    batch.push(Write::Task(task("wf-i", "a", 0, TaskState::Completed)));
    let first = store
        .apply_with_batch("batch-1", batch.clone())
        .await
        .unwrap();
    let again = store
        .apply_with_batch("batch-1", batch.clone())
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(store.events(None, 0, 0).await.unwrap().len(), 2);
    assert_eq!(
        store.stats().await.unwrap().tasks_by_state,
        vec![("completed".to_string(), 1), ("pending".to_string(), 1)]
    );
    let other = store.apply_with_batch("batch-2", batch).await.unwrap();
    assert!(other[0] > first[1]);
    assert_eq!(store.events(None, 0, 0).await.unwrap().len(), 4);
}

#[tokio::test]
async fn redis_apply_survives_a_killed_connection() {
    let prefix = RedisPrefix::new();
    let store = prefix.store().await;
    store.apply(two_events("wf-k")).await.unwrap();
    let client_id = |mut con: redis::aio::ConnectionManager| async move {
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async::<i64>(&mut con)
            .await
            .unwrap()
    };
    let before = client_id(store.connection()).await;
    let mut killer = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(before)
        .query_async(&mut killer)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let seqs = store.apply(two_events("wf-k")).await.unwrap();
    assert_eq!(seqs.len(), 2);
    assert_ne!(client_id(store.connection()).await, before, "reconnected");
    let all = store.events(None, 0, 0).await.unwrap();
    assert_eq!(all.len(), 4, "applied exactly once");
    assert_eq!(all[2..].iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
}

/// A TCP proxy in front of Redis that can swallow the next reply (the script
/// ran, the client never hears of it) or be down for a while.
struct Proxy {
    url: String,
    drop_next_reply: Arc<AtomicBool>,
    down: tokio::sync::watch::Sender<bool>,
    connections: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start() -> Proxy {
        let upstream = redis::Client::open(redis_url())
            .unwrap()
            .get_connection_info()
            .addr()
            .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap().to_string();
        // Keeps the test URL's credentials and database, when it has them.
        let url = match redis_url() {
            original if original.contains(&upstream) => original.replacen(&upstream, &local, 1),
            _ => format!("redis://{local}"),
        };
        let drop_next_reply = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let (down, _) = tokio::sync::watch::channel(false);
        let (flag, count, down_rx) = (
            drop_next_reply.clone(),
            connections.clone(),
            down.subscribe(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *down_rx.borrow() {
                    continue; // dropped: closed at once
                }
                count.fetch_add(1, Ordering::SeqCst);
                let (flag, upstream, mut down_rx) =
                    (flag.clone(), upstream.clone(), down_rx.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = tokio::io::copy(&mut client_read, &mut server_write);
                    let downstream = async {
                        let mut buffer = vec![0u8; 64 * 1024];
                        loop {
                            let n = server_read.read(&mut buffer).await?;
                            if n == 0 || flag.swap(false, Ordering::SeqCst) {
                                return Ok::<_, std::io::Error>(());
                            }
                            client_write.write_all(&buffer[..n]).await?;
                        }
                    };
                    let outage = down_rx.wait_for(|down| *down);
                    tokio::select! {
                        _ = up => {}
                        _ = downstream => {}
                        _ = outage => {}
                    }
                });
            }
        });
        Proxy {
            url,
            drop_next_reply,
            down,
            connections,
        }
    }

    fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

#[tokio::test]
async fn redis_lost_reply_is_not_applied_twice() {
    let prefix = RedisPrefix::new();
    let proxy = Proxy::start().await;
    let store = prefix.store_at(&proxy.url, prefix.options()).await;
    // Loads the script, so the swallowed reply is the script's own.
    store.apply(two_events("wf-l")).await.unwrap();
    proxy.drop_next_reply.store(true, Ordering::SeqCst);
    let seqs = store.apply(two_events("wf-l")).await.unwrap();
    assert!(
        !proxy.drop_next_reply.load(Ordering::SeqCst),
        "a reply was swallowed"
    );
    assert!(proxy.connections.load(Ordering::SeqCst) >= 2, "reconnected");
    let all = store.events(None, 0, 0).await.unwrap();
    assert_eq!(all.len(), 4, "applied exactly once");
    assert_eq!(all[2..].iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);

    // The same for a claim: the retry must not see its own write as a rival's.
    let (record, tasks) = workflow("wf-l", 1);
    store.create_workflow(&record, &tasks).await.unwrap();
    let me = Owner {
        host: "h".into(),
        pid: 7,
    };
    proxy.drop_next_reply.store(true, Ordering::SeqCst);
    assert!(store.claim("wf-l", None, Some(&me)).await.unwrap());
    assert!(!proxy.drop_next_reply.load(Ordering::SeqCst));
}

#[tokio::test]
async fn redis_apply_waits_out_an_outage() {
    let prefix = RedisPrefix::new();
    let proxy = Proxy::start().await;
    let store = prefix.store_at(&proxy.url, prefix.options()).await;
    store.apply(two_events("wf-o")).await.unwrap();
    proxy.set_down(true);
    let writer = tokio::spawn(async move {
        let seqs = store.apply(two_events("wf-o")).await;
        (store, seqs)
    });
    // The scenario: an outage of 0.8 s, which the writer must wait out —
    // neither done nor failed while Redis is away, done once it is back.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !writer.is_finished(),
        "the write ended during the outage: {:?}",
        writer.await.map(|(_, seqs)| seqs)
    );
    proxy.set_down(false);
    let (store, seqs) = writer.await.unwrap();
    assert_eq!(seqs.unwrap().len(), 2);
    assert_eq!(store.events(None, 0, 0).await.unwrap().len(), 4);

    // An outage longer than the retry window is an error, in about that time.
    let mut options = prefix.options();
    options.retry_for = Duration::from_secs(1);
    let impatient = prefix.store_at(&proxy.url, options).await;
    proxy.set_down(true);
    // The proxy stays down until the write has returned, so it can only have
    // returned by giving up: after retrying for the whole window, no less.
    let error = impatient.apply(two_events("wf-o")).await.unwrap_err();
    let StoreError::Unreachable { reason, .. } = &error else {
        panic!("expected Unreachable, got {error:?}");
    };
    let retried_ms: u64 = reason
        .split("(retried for ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("the error does not say how long it retried: {reason}"));
    assert!(retried_ms >= 1000, "{reason}");
    proxy.set_down(false);
    assert_eq!(
        prefix.store().await.events(None, 0, 0).await.unwrap().len(),
        4,
        "the write that gave up was not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_redis_handles_share_one_store() {
    let prefix = RedisPrefix::new();
    let a = Arc::new(prefix.store().await);
    let b = Arc::new(prefix.store().await);
    let (record, tasks) = workflow("wf-s", 1);
    a.create_workflow(&record, &tasks).await.unwrap();
    assert_eq!(b.workflow("wf-s").await.unwrap(), Some(record));

    let mut writers = tokio::task::JoinSet::new();
    for i in 0..400 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        writers.spawn(async move { store.apply(two_events("wf-s")).await.unwrap() });
    }
    let mut seqs = Vec::new();
    while let Some(batch) = writers.join_next().await {
        let batch = batch.unwrap();
        assert!(batch[0] < batch[1]);
        seqs.extend(batch);
    }
    seqs.sort_unstable();
    let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(unique.len(), 800, "every sequence number handed out once");
    for store in [&a, &b] {
        let events = store.events(Some("wf-s"), 0, 0).await.unwrap();
        assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
        let paged = store.events(None, seqs[99], 150).await.unwrap();
        assert_eq!(
            paged.iter().map(|e| e.seq).collect::<Vec<_>>(),
            seqs[100..250]
        );
        assert_eq!(store.latest_event_seq().await.unwrap(), seqs[799]);
    }
}
