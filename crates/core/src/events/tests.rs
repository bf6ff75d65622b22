use super::*;
use crate::{ErrorCode, GzError};
use serde_json::{json, Map};
use std::collections::BTreeMap;

fn event(payload: EventPayload) -> Event {
    Event {
        seq: 3,
        ..Event::new(payload, "wf", 5)
    }
}

/// The typed event serializes to `old` (the JSON the untyped producers
/// built, written out literally), reads back from it, and survives a store's
/// kind + data split.
fn same_as_before(payload: EventPayload, old: Value) {
    let typed = event(payload);
    assert_eq!(serde_json::to_value(&typed).unwrap(), old);
    let read: Event = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(read, typed);
    let (kind, data) = typed.stored_data();
    assert_eq!(kind, old["type"]);
    assert_eq!(data, old["data"]);
    // Byte for byte, key order included (a Map's equality ignores order):
    // the data as sent and stored is the text clients have always read.
    assert_eq!(data.to_string(), old["data"].to_string());
    let sent = serde_json::to_string(&typed).unwrap();
    assert!(
        sent.ends_with(&format!(",\"data\":{}}}", old["data"])),
        "{sent}"
    );
    let (stored, undecoded) = Event::from_stored(3, kind, "wf".into(), 5, data);
    assert_eq!(undecoded, None);
    assert_eq!(stored, typed);
}

fn error() -> GzError {
    GzError::new(ErrorCode::TaskFailed, "boom")
}

#[test]
fn workflow_started_is_unchanged() {
    same_as_before(
        EventPayload::WorkflowStarted(WorkflowStarted {
            name: "flow".into(),
            total_tasks: 2,
            resumed: false,
            trigger: None,
        }),
        json!({"seq": 3, "type": "workflow_started", "workflow_id": "wf", "at_ms": 5,
               "data": {"name": "flow", "total_tasks": 2, "resumed": false}}),
    );
}

#[test]
fn workflow_progress_is_unchanged() {
    same_as_before(
        EventPayload::WorkflowProgress(WorkflowProgress {
            completed_tasks: 1,
            failed_tasks: 0,
            skipped_tasks: 2,
            total_tasks: 4,
        }),
        json!({"seq": 3, "type": "workflow_progress", "workflow_id": "wf", "at_ms": 5,
               "data": {"completed_tasks": 1, "failed_tasks": 0, "skipped_tasks": 2, "total_tasks": 4}}),
    );
}

#[test]
fn workflow_ends_are_unchanged() {
    same_as_before(
        EventPayload::WorkflowCompleted(WorkflowCompleted {
            name: "flow".into(),
            state: "completed".into(),
            task_results: Some(json!({"a": "hi", "b": null}).as_object().cloned().unwrap()),
            error: None,
        }),
        json!({"seq": 3, "type": "workflow_completed", "workflow_id": "wf", "at_ms": 5,
               "data": {"name": "flow", "state": "completed",
                        "task_results": {"a": "hi", "b": null}, "error": null}}),
    );
    let cause = serde_json::to_value(error()).unwrap();
    same_as_before(
        EventPayload::WorkflowFailed(WorkflowFailed {
            name: "flow".into(),
            state: "failed".into(),
            task_results: Some(Map::new()),
            error: Some(error()),
        }),
        json!({"seq": 3, "type": "workflow_failed", "workflow_id": "wf", "at_ms": 5,
               "data": {"name": "flow", "state": "failed", "task_results": {}, "error": cause}}),
    );
    // A workflow failed or cancelled without a run carries no task results.
    same_as_before(
        EventPayload::WorkflowFailed(WorkflowFailed {
            name: "flow".into(),
            state: "failed".into(),
            task_results: None,
            error: Some(error()),
        }),
        json!({"seq": 3, "type": "workflow_failed", "workflow_id": "wf", "at_ms": 5,
               "data": {"name": "flow", "state": "failed", "error": cause}}),
    );
    same_as_before(
        EventPayload::WorkflowCancelled(WorkflowCancelled {
            name: "flow".into(),
            state: "cancelled".into(),
            task_results: None,
            error: Some(error()),
        }),
        json!({"seq": 3, "type": "workflow_cancelled", "workflow_id": "wf", "at_ms": 5,
               "data": {"name": "flow", "state": "cancelled", "error": cause}}),
    );
}

#[test]
fn task_started_is_unchanged() {
    same_as_before(
        EventPayload::TaskStarted(TaskStarted {
            items: None,
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "llm/chat".into(),
                attempt: 1,
            },
        }),
        json!({"seq": 3, "type": "task_started", "workflow_id": "wf", "at_ms": 5,
               "data": {"task_id": "a", "task_name": "A", "method": "llm/chat", "attempt": 1}}),
    );
    same_as_before(
        EventPayload::TaskStarted(TaskStarted {
            items: Some(7),
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "llm/chat".into(),
                attempt: 2,
            },
        }),
        json!({"seq": 3, "type": "task_started", "workflow_id": "wf", "at_ms": 5,
               "data": {"items": 7, "task_id": "a", "task_name": "A", "method": "llm/chat", "attempt": 2}}),
    );
}

#[test]
fn task_completed_is_unchanged() {
    same_as_before(
        EventPayload::TaskCompleted(TaskCompleted {
            result: json!({"x": 1}),
            stdout: None,
            duration_ms: 1500,
            cached: None,
            duration_seconds: 1.5,
            usage: None,
            model: None,
            endpoint: None,
            first_token_ms: None,
            provider_ms: None,
            task: TaskRef {
                task_id: "a".into(),
                task_name: "a".into(),
                method: "python/run".into(),
                attempt: 1,
            },
        }),
        json!({"seq": 3, "type": "task_completed", "workflow_id": "wf", "at_ms": 5,
               "data": {"result": {"x": 1}, "duration_ms": 1500, "duration_seconds": 1.5,
                        "task_id": "a", "task_name": "a", "method": "python/run", "attempt": 1}}),
    );
    // Everything an LLM call or a cached script adds; a `null` copied from
    // the record stays `null`.
    same_as_before(
        EventPayload::TaskCompleted(TaskCompleted {
            result: json!("hello"),
            stdout: Some("printed".into()),
            duration_ms: 20,
            cached: Some(true),
            duration_seconds: 0.02,
            usage: Some(json!({"prompt_tokens": 3, "completion_tokens": 4})),
            model: Some(json!("qwen")),
            endpoint: Some(json!("local")),
            first_token_ms: Some(Value::Null),
            provider_ms: Some(json!(18)),
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "llm/chat".into(),
                attempt: 1,
            },
        }),
        json!({"seq": 3, "type": "task_completed", "workflow_id": "wf", "at_ms": 5,
               "data": {"result": "hello", "stdout": "printed", "duration_ms": 20, "cached": true,
                        "duration_seconds": 0.02,
                        "usage": {"prompt_tokens": 3, "completion_tokens": 4}, "model": "qwen",
                        "endpoint": "local", "first_token_ms": null, "provider_ms": 18,
                        "task_id": "a", "task_name": "A", "method": "llm/chat", "attempt": 1}}),
    );
}

#[test]
fn task_retrying_is_unchanged() {
    let cause = serde_json::to_value(error()).unwrap();
    same_as_before(
        EventPayload::TaskRetrying(TaskRetrying {
            next_attempt: 2,
            delay_seconds: 0.5,
            error: Some(error()),
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "python/run".into(),
                attempt: 1,
            },
        }),
        json!({"seq": 3, "type": "task_retrying", "workflow_id": "wf", "at_ms": 5,
               "data": {"next_attempt": 2, "delay_seconds": 0.5, "error": cause,
                        "task_id": "a", "task_name": "A", "method": "python/run", "attempt": 1}}),
    );
    same_as_before(
        EventPayload::TaskRetrying(TaskRetrying {
            next_attempt: 3,
            delay_seconds: 0.0,
            error: None,
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "python/run".into(),
                attempt: 2,
            },
        }),
        json!({"seq": 3, "type": "task_retrying", "workflow_id": "wf", "at_ms": 5,
               "data": {"next_attempt": 3, "delay_seconds": 0.0, "error": null,
                        "task_id": "a", "task_name": "A", "method": "python/run", "attempt": 2}}),
    );
}

#[test]
fn task_failed_is_unchanged() {
    let mut cause = error();
    cause.details = json!({"attempts": 3});
    let cause_json = serde_json::to_value(&cause).unwrap();
    same_as_before(
        EventPayload::TaskFailed(TaskFailed {
            error: cause,
            duration_ms: Some(12),
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "python/run".into(),
                attempt: 3,
            },
        }),
        json!({"seq": 3, "type": "task_failed", "workflow_id": "wf", "at_ms": 5,
               "data": {"error": cause_json, "duration_ms": 12,
                        "task_id": "a", "task_name": "A", "method": "python/run", "attempt": 3}}),
    );
    let cause_json = serde_json::to_value(error()).unwrap();
    same_as_before(
        EventPayload::TaskFailed(TaskFailed {
            error: error(),
            duration_ms: None,
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "python/run".into(),
                attempt: 1,
            },
        }),
        json!({"seq": 3, "type": "task_failed", "workflow_id": "wf", "at_ms": 5,
               "data": {"error": cause_json,
                        "task_id": "a", "task_name": "A", "method": "python/run", "attempt": 1}}),
    );
}

#[test]
fn task_skipped_and_cancelled_are_unchanged() {
    same_as_before(
        EventPayload::TaskSkipped(TaskSkipped {
            reason: "skipped because its `when` condition is false".into(),
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "python/run".into(),
                attempt: 0,
            },
        }),
        json!({"seq": 3, "type": "task_skipped", "workflow_id": "wf", "at_ms": 5,
               "data": {"reason": "skipped because its `when` condition is false",
                        "task_id": "a", "task_name": "A", "method": "python/run", "attempt": 0}}),
    );
    same_as_before(
        EventPayload::TaskCancelled(TaskCancelled {
            task: TaskRef {
                task_id: "a".into(),
                task_name: "A".into(),
                method: "python/run".into(),
                attempt: 1,
            },
        }),
        json!({"seq": 3, "type": "task_cancelled", "workflow_id": "wf", "at_ms": 5,
               "data": {"task_id": "a", "task_name": "A", "method": "python/run", "attempt": 1}}),
    );
}

#[test]
fn streamed_events_are_unchanged() {
    same_as_before(
        EventPayload::LlmToken(LlmToken {
            task: AttemptRef {
                task_id: "a".into(),
                task_name: "A".into(),
                attempt: 1,
            },
            token: "Hel".into(),
        }),
        json!({"seq": 3, "type": "llm_token", "workflow_id": "wf", "at_ms": 5,
               "data": {"task_id": "a", "task_name": "A", "attempt": 1, "token": "Hel"}}),
    );
    same_as_before(
        EventPayload::LlmTokens(LlmTokens {
            task: AttemptRef {
                task_id: "a".into(),
                task_name: "A".into(),
                attempt: 1,
            },
            tokens: vec!["Hel".into(), "lo".into()],
        }),
        json!({"seq": 3, "type": "llm_tokens", "workflow_id": "wf", "at_ms": 5,
               "data": {"task_id": "a", "task_name": "A", "attempt": 1, "tokens": ["Hel", "lo"]}}),
    );
    same_as_before(
        EventPayload::TaskOutput(TaskOutput {
            task: AttemptRef {
                task_id: "a".into(),
                task_name: "A".into(),
                attempt: 1,
            },
            line: "step 1".into(),
        }),
        json!({"seq": 3, "type": "task_output", "workflow_id": "wf", "at_ms": 5,
               "data": {"task_id": "a", "task_name": "A", "attempt": 1, "line": "step 1"}}),
    );
}

#[test]
fn agent_events_keep_their_keys() {
    same_as_before(
        EventPayload::AgentTurn(AgentTurn {
            task_id: "a".into(),
            task_name: "A".into(),
            attempt: 1,
            turn: 2,
            response: String::new(),
            tool_calls: vec![ToolCallRequest {
                id: "call_0".into(),
                name: "count_words".into(),
                arguments: json!({"text": "x"}),
            }],
            usage: Some(json!({"prompt_tokens": 3, "completion_tokens": 4})),
            cost_usd: Some(0.0),
            model: Some("m".into()),
            endpoint: Some("e".into()),
            duration_ms: 7,
        }),
        json!({"seq": 3, "type": "agent_turn", "workflow_id": "wf", "at_ms": 5,
               "data": {"task_id": "a", "task_name": "A", "attempt": 1, "turn": 2, "response": "",
                        "tool_calls": [{"id": "call_0", "name": "count_words", "arguments": {"text": "x"}}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 4}, "cost_usd": 0.0,
                        "model": "m", "endpoint": "e", "duration_ms": 7}}),
    );
    same_as_before(
        EventPayload::ToolCallStarted(ToolCallStarted {
            task_id: "a".into(),
            task_name: "A".into(),
            attempt: 1,
            turn: 2,
            call_id: "call_0".into(),
            name: "count_words".into(),
            arguments: json!({}),
        }),
        json!({"seq": 3, "type": "tool_call_started", "workflow_id": "wf", "at_ms": 5,
               "data": {"task_id": "a", "task_name": "A", "attempt": 1, "turn": 2,
                        "call_id": "call_0", "name": "count_words", "arguments": {}}}),
    );
    same_as_before(
        EventPayload::ToolCallCompleted(ToolCallCompleted {
            task_id: "a".into(),
            task_name: "A".into(),
            attempt: 1,
            turn: 2,
            call_id: "call_0".into(),
            name: "count_words".into(),
            result: None,
            error: Some(error()),
            duration_ms: 1,
        }),
        json!({"seq": 3, "type": "tool_call_completed", "workflow_id": "wf", "at_ms": 5,
               "data": {"task_id": "a", "task_name": "A", "attempt": 1, "turn": 2,
                        "call_id": "call_0", "name": "count_words",
                        "error": serde_json::to_value(error()).unwrap(), "duration_ms": 1}}),
    );
}

#[test]
fn node_events_are_unchanged() {
    let labels = BTreeMap::from([("zone".to_string(), "a".to_string())]);
    same_as_before(
        EventPayload::NodeJoined(NodeJoined {
            node_id: "n1".into(),
            host: "box".into(),
            labels: labels.clone(),
            gpu: false,
            capabilities: vec!["python".into()],
            rejoined: None,
        }),
        json!({"seq": 3, "type": "node_joined", "workflow_id": "wf", "at_ms": 5,
               "data": {"node_id": "n1", "host": "box", "labels": {"zone": "a"}, "gpu": false,
                        "capabilities": ["python"]}}),
    );
    same_as_before(
        EventPayload::NodeJoined(NodeJoined {
            node_id: "n1".into(),
            host: "box".into(),
            labels: BTreeMap::new(),
            gpu: true,
            capabilities: vec![],
            rejoined: Some(true),
        }),
        json!({"seq": 3, "type": "node_joined", "workflow_id": "wf", "at_ms": 5,
               "data": {"node_id": "n1", "host": "box", "labels": {}, "gpu": true,
                        "capabilities": [], "rejoined": true}}),
    );
    same_as_before(
        EventPayload::NodeLeft(NodeLeft {
            node_id: "n1".into(),
            host: "box".into(),
            labels: labels.clone(),
            gpu: false,
            capabilities: vec!["llm".into()],
            reason: "shutdown".into(),
            silent_ms: None,
        }),
        json!({"seq": 3, "type": "node_left", "workflow_id": "wf", "at_ms": 5,
               "data": {"node_id": "n1", "host": "box", "labels": {"zone": "a"}, "gpu": false,
                        "capabilities": ["llm"], "reason": "shutdown"}}),
    );
    same_as_before(
        EventPayload::NodeLeft(NodeLeft {
            node_id: "n1".into(),
            host: "box".into(),
            labels,
            gpu: false,
            capabilities: vec!["llm".into()],
            reason: "heartbeat_timeout".into(),
            silent_ms: Some(31_000),
        }),
        json!({"seq": 3, "type": "node_left", "workflow_id": "wf", "at_ms": 5,
               "data": {"node_id": "n1", "host": "box", "labels": {"zone": "a"}, "gpu": false,
                        "capabilities": ["llm"], "reason": "heartbeat_timeout", "silent_ms": 31000}}),
    );
}

#[test]
fn events_that_do_not_decode_pass_through_unchanged() {
    for (kind, data, claimed) in [
        ("task_paused", json!({"task_id": "a"}), UNKNOWN),
        (
            "task_started",
            json!({"error": {"code": "GZ5008"}}),
            TASK_STARTED,
        ),
        ("node_left", json!([1, 2]), NODE_LEFT),
    ] {
        let old = json!({"seq": 3, "type": kind, "workflow_id": "wf", "at_ms": 5, "data": data});
        let read: Event = serde_json::from_value(old.clone()).unwrap();
        assert!(
            matches!(read.payload, EventPayload::Undecoded(_)),
            "{read:?}"
        );
        assert_eq!(read.kind(), claimed);
        assert_eq!(serde_json::to_value(&read).unwrap(), old);
        let (stored_kind, stored_data) = read.stored_data();
        assert_eq!((stored_kind.as_str(), &stored_data), (kind, &data));
        let (stored, why) = Event::from_stored(3, kind.into(), "wf".into(), 5, data);
        assert_eq!(stored, read);
        assert!(why.is_some_and(|why| why.contains(kind)));
        assert_eq!(expand(stored.clone()), vec![stored]);
    }
    // A chunk that does not decode cannot be sent as tokens.
    let (chunk, _) = Event::from_stored(3, LLM_TOKENS.into(), "wf".into(), 5, json!("x"));
    assert_eq!(expand(chunk), Vec::<Event>::new());
}

#[test]
fn every_kind_has_its_name() {
    // Every kind clients can ask for, and the stored chunk form.
    let kinds: Vec<&str> = ALL.iter().copied().chain([LLM_TOKENS]).collect();
    for kind in kinds {
        // Each name decodes as its own variant (and only a malformed data
        // error, never an unknown kind, comes back for empty data).
        let (payload, why) = EventPayload::decode(kind.into(), json!({}));
        assert_eq!(payload.kind(), kind);
        if let Some(why) = why {
            assert!(!why.contains("unknown event type"), "{why}");
        }
    }
    assert!(!ALL.contains(&LLM_TOKENS));
}

#[test]
fn chunks_expand_to_tokens_with_resumable_ids() {
    let mut chunk = Event::new(
        EventPayload::LlmTokens(LlmTokens {
            task: AttemptRef {
                task_id: "t".into(),
                task_name: "T".into(),
                attempt: 1,
            },
            tokens: vec!["a".into(), "b".into(), "c".into()],
        }),
        "wf",
        5,
    );
    chunk.seq = 7;
    let tokens = expand(chunk);
    let ids: Vec<String> = tokens.iter().map(Event::id).collect();
    assert_eq!(ids, ["7.0", "7.1", "7"]);
    assert_eq!(
        serde_json::to_value(&tokens[1]).unwrap()["data"],
        json!({"task_id": "t", "task_name": "T", "attempt": 1, "token": "b"})
    );
    assert_eq!(tokens[1].kind(), LLM_TOKEN);
    // Resuming from each id yields exactly the rest.
    for (i, token) in tokens.iter().enumerate() {
        let cursor = Cursor::parse(&token.id()).unwrap();
        assert_eq!(cursor, token.cursor());
        let rest: Vec<_> = tokens.iter().filter(|t| cursor.is_before(t)).collect();
        assert_eq!(rest.len(), 2 - i);
        if let Some(next) = rest.first() {
            assert!(cursor.is_next(next));
        }
    }
    assert!(Cursor::after_seq(6).is_next(&tokens[0]));
    assert!(!Cursor::after_seq(6).is_next(&tokens[1]));
    assert_eq!(Cursor::parse("0.1"), None);
    assert_eq!(Cursor::parse("x"), None);
    let plain = Event::new(
        EventPayload::TaskCancelled(TaskCancelled {
            task: TaskRef {
                task_id: "t".into(),
                task_name: "T".into(),
                method: "python/run".into(),
                attempt: 1,
            },
        }),
        "wf",
        0,
    );
    assert_eq!(expand(plain.clone()), vec![plain]);
}
