//! One contract, every store: these tests run against memory and SQLite alike.

use crate::*;
use gleitzeit_core::model::TaskSpec;
use serde_json::json;

fn workflow(id: &str, created_ms: i64) -> (WorkflowRecord, Vec<TaskRecord>) {
    let spec = Workflow {
        name: format!("wf {id}"),
        description: None,
        inputs: Default::default(),
        tasks: vec![TaskSpec {
            id: "a".into(),
            name: None,
            method: "python/execute".into(),
            params: json!({"code": "result = 1"}),
            dependencies: vec![],
            priority: Default::default(),
            timeout: None,
            retry: Default::default(),
            on_error: Default::default(),
        }],
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

fn event(workflow_id: &str, kind: &str) -> Event {
    Event {
        seq: 0,
        kind: kind.into(),
        workflow_id: workflow_id.into(),
        at_ms: 5,
        data: json!({"k": kind}),
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

    // Events: ordered, filtered, resumable from a sequence number.
    let all = store.events(None, 0, 0).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let mine = store.events(Some("wf-0001"), 0, 0).await.unwrap();
    assert_eq!(
        mine.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["task_completed", "task_failed"]
    );
    let after = store.events(Some("wf-0001"), mine[0].seq, 0).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].data, json!({"k": "task_failed"}));

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
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(SqliteOptions::new(dir.path().join("g.db"))).unwrap();
    contract(&store).await;
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
