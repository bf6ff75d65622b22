//! `gleitzeit serve` end to end: the real binary on a free port, workflows
//! submitted over HTTP and by the client commands, events followed over SSE,
//! WebSocket and Socket.IO, and the server killed (SIGKILL) or stopped
//! (SIGTERM) in the middle of a workflow.

mod common;
use common::{Env, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn submit(server: &str, body: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{server}/api/v1/workflows"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    answer["workflow_id"].as_str().unwrap().to_string()
}

async fn wait_state(server: &str, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let view = get(&format!("{server}/api/v1/workflows/{id}")).await;
        if view["state"] == state {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became {state}: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads an SSE stream until `stop` says so; returns the events.
async fn read_sse(
    url: &str,
    last_event_id: Option<u64>,
    mut stop: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let mut request = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    // Bytes, not text: a character may arrive split across two chunks.
    let mut buffer: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if stop(&events) {
            return events;
        }
        let chunk = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("SSE stream stalled")
            .expect("SSE stream ended")
            .unwrap();
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
            let frame = String::from_utf8(frame).expect("the server sends UTF-8");
            let mut id = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                    id = Some(v.trim().to_string());
                }
                if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                    data = Some(serde_json::from_str::<Value>(v.trim()).unwrap());
                }
            }
            if let Some(mut data) = data {
                // The id is the seq, or `SEQ.INDEX` for a token inside a
                // stored chunk.
                let id = id.expect("every event has an id");
                let seq = data["seq"].as_u64().unwrap().to_string();
                assert!(
                    id == seq || id.starts_with(&format!("{seq}.")),
                    "SSE id {id} is the event seq {seq}"
                );
                data["_id"] = Value::String(id);
                events.push(data);
            }
        }
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn strictly_increasing(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}

fn finished(events: &[Value], id: &str) -> bool {
    events
        .iter()
        .any(|e| e["workflow_id"] == id && e["type"] == "workflow_completed")
}

#[test]
fn seed_examples_over_http_with_sse_websocket_and_last_event_id() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let url = server.url.clone();
    runtime().block_on(async move {
        let files = [
            "quickstart.yaml",
            "seed_000_functions.yaml",
            "seed_001_example_workflow.yaml",
            "seed_001_python_provider.yaml",
            "fan_out.yaml",
        ];
        let mut ids = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(common::examples().join(file)).unwrap();
            ids.push(submit(&url, &text).await);
        }
        for id in &ids {
            let view = wait_state(&url, id, "completed").await;
            assert!(view["tasks"].as_array().unwrap().iter().all(|t| t["state"] == "completed"), "{view}");
        }

        // SSE from the beginning: every workflow's whole story, in order.
        let all = read_sse(&format!("{url}/api/v1/events?after=0"), None, |events| {
            ids.iter().all(|id| finished(events, id))
        })
        .await;
        assert!(strictly_increasing(&seqs(&all)), "{:?}", seqs(&all));
        for id in &ids {
            let started = all.iter().filter(|e| e["workflow_id"] == *id && e["type"] == "workflow_started").count();
            assert_eq!(started, 1, "{id}");
        }

        // Disconnect half way and resume with Last-Event-ID: nothing lost, nothing twice.
        let cut = all.len() / 2;
        let first = read_sse(&format!("{url}/api/v1/events?after=0"), None, |e| e.len() >= cut).await;
        let resume_at = first.last().unwrap()["seq"].as_u64().unwrap();
        let rest = read_sse(&format!("{url}/api/v1/events"), Some(resume_at), |events| {
            events.last().is_some_and(|e| e["seq"] == all.last().unwrap()["seq"])
        })
        .await;
        let mut joined = seqs(&first);
        joined.extend(seqs(&rest));
        assert_eq!(joined, seqs(&all));

        // Filters: one workflow, some types.
        let one = read_sse(
            &format!("{url}/api/v1/events?after=0&workflow_id={}&types=task_completed,workflow_completed", ids[0]),
            None,
            |events| finished(events, &ids[0]),
        )
        .await;
        assert!(one.iter().all(|e| e["workflow_id"] == ids[0]));
        assert!(one.iter().all(|e| e["type"] == "task_completed" || e["type"] == "workflow_completed"));
        assert_eq!(one.iter().filter(|e| e["type"] == "task_completed").count(), 4);

        // WebSocket: a live workflow, followed as JSON frames.
        let ws_url = format!("{}/api/v1/ws", url.replacen("http://", "ws://", 1));
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let text = std::fs::read_to_string(common::examples().join("quickstart.yaml")).unwrap();
        let live = submit(&url, &text).await;
        let mut seen = Vec::new();
        while !finished(&seen, &live) {
            let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
                .await
                .expect("websocket stalled")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = frame {
                seen.push(serde_json::from_str::<Value>(&text).unwrap());
            }
        }
        assert!(strictly_increasing(&seqs(&seen)));
        assert!(seen.iter().any(|e| e["type"] == "task_completed" && e["workflow_id"] == live));
        socket.close(None).await.unwrap();
    });
}

/// Raw Engine.IO v4 / Socket.IO v5 over WebSocket, as a seed-003 client speaks it.
#[test]
fn socketio_clients_receive_events_by_name() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let url = server.url.clone();
    runtime().block_on(async move {
        let ws_url = format!(
            "{}/socket.io/?EIO=4&transport=websocket",
            url.replacen("http://", "ws://", 1)
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let next_text = async |socket: &mut tokio_tungstenite::WebSocketStream<_>| loop {
            let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
                .await
                .expect("socket.io stalled")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = frame {
                let text = text.to_string();
                if text == "2" {
                    // Engine.IO ping: answer so the server keeps us.
                    socket.send(Message::Text("3".into())).await.unwrap();
                    continue;
                }
                return text;
            }
        };
        let open = next_text(&mut socket).await;
        assert!(open.starts_with('0'), "engine.io open packet: {open}");
        // Connect to the default namespace, asking only for task events.
        socket
            .send(Message::Text(
                r#"40{"types":["task_completed","workflow_completed"]}"#.into(),
            ))
            .await
            .unwrap();
        let connected = next_text(&mut socket).await;
        assert!(connected.starts_with("40"), "{connected}");
        let subscribed = next_text(&mut socket).await;
        assert!(subscribed.starts_with(r#"42["subscribed""#), "{subscribed}");

        let text = std::fs::read_to_string(common::examples().join("quickstart.yaml")).unwrap();
        let id = submit(&url, &text).await;
        let mut names = Vec::new();
        loop {
            let packet = next_text(&mut socket).await;
            let payload: Value =
                serde_json::from_str(packet.strip_prefix("42").expect("event packet")).unwrap();
            let name = payload[0].as_str().unwrap().to_string();
            assert_eq!(payload[1]["type"], name.as_str(), "event named by its type");
            assert_eq!(payload[1]["workflow_id"], id.as_str());
            // Seed 000's handlers read the fields flat: event['task_name'].
            if name == "task_completed" {
                assert!(payload[1]["task_name"].is_string(), "{payload}");
                assert_eq!(payload[1]["task_name"], payload[1]["data"]["task_name"]);
                assert!(payload[1].get("result").is_some(), "{payload}");
            }
            if name == "workflow_completed" {
                assert!(payload[1]["task_results"].is_object(), "{payload}");
            }
            names.push(name.clone());
            if name == "workflow_completed" {
                break;
            }
        }
        assert_eq!(
            names.iter().filter(|n| *n == "task_completed").count(),
            4,
            "{names:?}"
        );

        // A bad subscription is answered with an error event, not a dropped socket.
        socket
            .send(Message::Text(
                r#"42["subscribe",{"types":"no_such_event"}]"#.into(),
            ))
            .await
            .unwrap();
        let error = next_text(&mut socket).await;
        assert!(
            error.starts_with(r#"42["error""#) && error.contains("GZ9001"),
            "{error}"
        );
    });
}

use common::lines;

async fn wait_lines(path: &std::path::Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines(path).len() < n {
        assert!(Instant::now() < deadline, "timed out waiting for {n} steps");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count(lines: &[String], step: &str) -> usize {
    lines.iter().filter(|l| *l == step).count()
}

#[test]
fn sigkill_mid_workflow_then_restart_completes_with_nothing_recorded_twice() {
    let env = Env::new();
    let effects = env.path("effects.txt");
    let yaml = common::chain_yaml(&effects, 0.4);
    let server = Server::start(&env, &[]);
    let rt = runtime();
    let id = rt.block_on(async {
        let id = submit(&server.url, &yaml).await;
        wait_lines(&effects, 3).await; // step2 is running; step0, step1 committed
        id
    });
    server.signal(libc::SIGKILL);
    server.wait_exit();

    // A new server on the same store adopts the workflow by itself.
    let server = Server::start(&env, &[]);
    rt.block_on(async {
        let view = wait_state(&server.url, &id, "completed").await;
        let results: Vec<Value> = view["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["result"].clone())
            .collect();
        assert_eq!(
            results,
            vec![json!(0), json!(1), json!(4), json!(11), json!(26)]
        );

        let after = lines(&effects);
        for step in ["step0", "step1", "step3", "step4"] {
            assert_eq!(count(&after, step), 1, "{step}: {after:?}");
        }
        assert!(
            count(&after, "step2") <= 2,
            "the interrupted step runs at most again: {after:?}"
        );

        let log = get(&format!(
            "{}/api/v1/workflows/{id}/events?limit=10000",
            server.url
        ))
        .await;
        let events = log["events"].as_array().unwrap();
        let ids = seqs(events);
        assert!(strictly_increasing(&ids), "event ids reused: {ids:?}");
        let mut completed: BTreeMap<String, usize> = BTreeMap::new();
        for e in events.iter().filter(|e| e["type"] == "task_completed") {
            *completed
                .entry(e["data"]["task_id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(completed.len(), 5, "{completed:?}");
        assert!(
            completed.values().all(|n| *n == 1),
            "a result recorded twice: {completed:?}"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e["type"] == "workflow_started" && e["data"]["resumed"] == true)
                .count(),
            1
        );
    });
}

#[test]
fn sigterm_lets_the_running_task_finish_and_a_restart_continues() {
    let env = Env::new();
    let effects = env.path("effects.txt");
    let yaml = common::chain_yaml(&effects, 1.0);
    let server = Server::start(&env, &["--grace", "30"]);
    let rt = runtime();
    let id = rt.block_on(async {
        let id = submit(&server.url, &yaml).await;
        wait_lines(&effects, 2).await; // step1 is running
        id
    });
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(), 0, "graceful shutdown exits 0");

    // The step in flight was recorded; nothing after it started; not cancelled.
    let stored = env.run(&["--json", "get", &id]).ok().json();
    assert_eq!(stored["state"], "running", "{stored}");
    assert_eq!(stored["tasks"][1]["state"], "completed", "{stored}");
    assert_eq!(stored["tasks"][2]["state"], "pending", "{stored}");
    assert_eq!(lines(&effects), vec!["step0", "step1"]);

    let server = Server::start(&env, &[]);
    rt.block_on(async {
        wait_state(&server.url, &id, "completed").await;
    });
    assert_eq!(
        lines(&effects),
        vec!["step0", "step1", "step2", "step3", "step4"]
    );
}

#[test]
fn client_commands_talk_to_the_server() {
    let env = Env::new();
    let server = Server::start(&env, &[]);
    let quickstart = common::examples().join("quickstart.yaml");
    let q = quickstart.to_str().unwrap();
    let s = server.url.as_str();

    let submitted = env.run(&["--server", s, "--json", "submit", q]).ok().json();
    let id = submitted["workflow_id"].as_str().unwrap().to_string();
    let watched = env.run(&["--server", s, "watch", "workflow", &id]).ok();
    assert!(
        watched.stdout.contains("4/4 tasks completed"),
        "{}",
        watched.stdout
    );

    let waited = env
        .run(&["--server", s, "--json", "submit", "--wait", q])
        .ok()
        .json();
    assert_eq!(waited["state"], "completed");
    assert_eq!(waited["tasks"].as_array().unwrap().len(), 4);

    // Seed 002 spellings and GLEITZEIT_SERVER.
    let listed = env
        .command()
        .env("GLEITZEIT_SERVER", s)
        .args(["--json", "workflow", "list"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let status = env
        .run(&["--server", s, "--json", "workflow", "status", &id])
        .ok()
        .json();
    assert_eq!(status["state"], "completed");

    let logs = env
        .run(&["--server", s, "logs", &id, "--search", "fib"])
        .ok();
    assert!(
        logs.stdout.contains("task fib completed"),
        "{}",
        logs.stdout
    );
    assert!(
        !logs.stdout.contains("task numbers"),
        "--search filters: {}",
        logs.stdout
    );

    let events = env
        .run(&[
            "--server",
            s,
            "--json",
            "events",
            "--types",
            "workflow_completed",
            "-n",
            "1000",
        ])
        .ok();
    let lines: Vec<Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines
        .iter()
        .all(|e| e["type"] == "workflow_completed" && e["data"].is_object()));

    let stats = env
        .run(&["--server", s, "stats", "--format", "csv", "--range", "1h"])
        .ok();
    assert!(
        stats
            .stdout
            .starts_with("method,count,avg_ms,p50_ms,p95_ms,max_ms\n"),
        "{}",
        stats.stdout
    );
    assert!(
        stats.stdout.contains("python/execute,2,"),
        "{}",
        stats.stdout
    );

    let inspected = env
        .run(&[
            "--server",
            s,
            "--json",
            "inspect",
            "task",
            &format!("{id}/report"),
        ])
        .ok()
        .json();
    assert_eq!(inspected["task"]["state"], "completed");
    assert_eq!(
        inspected["task"]["dependencies"],
        json!(["numbers", "stats", "fib"])
    );

    // The server is healthy apart from its LLM endpoint (none runs here): degraded = 1.
    let health = env
        .run(&["--server", s, "health", "--format", "json"])
        .code(1)
        .json();
    assert_eq!(health["status"], "degraded");
    assert!(health["reasons"][0].as_str().unwrap().starts_with("llm"));
    assert_eq!(
        env.run(&["--server", s, "health", "--quiet"])
            .code(1)
            .stdout,
        ""
    );

    let cancelled = env.run(&["--server", s, "cancel", &id]).ok();
    assert!(
        cancelled.stdout.contains("already completed"),
        "{}",
        cancelled.stdout
    );

    // Errors keep their codes across the wire.
    let missing = env.run(&["--server", s, "get", "wf_nope"]).code(2);
    assert!(missing.stderr.contains("GZ3021"), "{}", missing.stderr);
    let bad = env.write(
        "bad.yaml",
        "name: x\ntasks:\n  - id: a\n    method: python/execute\n    parameterz: {}\n",
    );
    let invalid = env
        .run(&["--server", s, "submit", bad.to_str().unwrap()])
        .code(2);
    assert!(
        invalid.stderr.contains("GZ3002") && invalid.stderr.contains("bad.yaml:5:5"),
        "{}",
        invalid.stderr
    );
}

#[test]
fn an_unreachable_server_is_exit_3_with_gz1002() {
    let env = Env::new();
    let run = env.run(&["--server", "http://127.0.0.1:1", "list"]).code(3);
    assert!(run.stderr.contains("GZ1002"), "{}", run.stderr);
    let run = env.run(&["--server", "ftp://example", "list"]).code(2);
    assert!(run.stderr.contains("http://"), "{}", run.stderr);
    let port_taken = Server::start(&env, &[]);
    let port = port_taken.url.rsplit(':').next().unwrap().to_string();
    let run = env.run(&["serve", "--port", &port]).code(3);
    assert!(run.stderr.contains("GZ1003"), "{}", run.stderr);
}

#[test]
fn oversized_and_malformed_requests_get_json_errors_and_the_server_keeps_serving() {
    let env = Env::new();
    let config = env.write("config.yaml", "server:\n  max_body_bytes: 2000\n");
    let server = Server::start(&env, &["--config", config.to_str().unwrap()]);
    let url = server.url.clone();
    runtime().block_on(async move {
        let client = reqwest::Client::new();
        let big = format!("name: big\ntasks:\n  - id: a\n    method: python/execute\n    parameters: {{code: \"x = '{}'\"}}\n", "y".repeat(5000));
        let response = client.post(format!("{url}/api/v1/workflows")).body(big).send().await.unwrap();
        assert_eq!(response.status(), 413);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "GZ6005");
        assert!(body["hint"].as_str().unwrap().contains("max_body_bytes"));

        let response = client.post(format!("{url}/api/v1/workflows")).body("tasks: [").send().await.unwrap();
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "GZ3001");
        assert!(body["diagnostics"][0]["line"].is_number());

        // A client that goes away mid-stream costs the server nothing.
        let mut stream = client.get(format!("{url}/api/v1/events?after=0")).send().await.unwrap().bytes_stream();
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        drop(stream);
        let ok = get(&format!("{url}/health")).await;
        assert!(ok["status"].is_string());
        let seen: HashSet<String> = get(&format!("{url}/api/v1/openapi.json")).await["paths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for path in ["/api/v1/workflows", "/api/v1/workflows/{id}/resume", "/api/v1/events", "/api/v1/ws", "/metrics"] {
            assert!(seen.contains(path), "{path} missing from the OpenAPI document");
        }
    });
}

/// An LLM task through the server against the real llama.cpp server: its
/// tokens are streamed as stored `llm_token` events (so a stream resumed by id
/// gets them too), they come before the task's `task_completed`, they spell
/// the response, and the usage reaches the workflow view.
#[test]
fn llm_tokens_are_stored_events_and_usage_is_reported() {
    let env = Env::new();
    let llama = gleitzeit_testkit::llama_server_url();
    let config = env.write(
        "config.yaml",
        &format!("llm:\n  default_max_tokens: 40\n  endpoints:\n    - name: llama\n      url: {llama}\n      kind: openai\n  models:\n    llama3.2:latest: [gemma3]\n"),
    );
    let server = Server::start(&env, &["--config", config.to_str().unwrap()]);
    let url = server.url.clone();
    runtime().block_on(async move {
        let text =
            std::fs::read_to_string(common::examples().join("seed_001_llm_task.yaml")).unwrap();
        let id = submit(&url, &text).await;
        let view = wait_state(&url, &id, "completed").await;
        let response = view["tasks"][0]["result"].as_str().unwrap().to_string();
        assert!(!response.is_empty());
        assert_eq!(view["tasks"][0]["record"]["endpoint"], "llama");
        let completion = view["usage"]["completion_tokens"].as_u64().unwrap();
        assert!(completion > 0, "{view}");
        assert_eq!(view["usage"]["llm_calls"], 1);

        // Replayed from the store after the fact: the tokens are there.
        let events = read_sse(
            &format!("{url}/api/v1/events?after=0&workflow_id={id}"),
            None,
            |e| finished(e, &id),
        )
        .await;
        // Tokens of one stored chunk share its seq; ids stay unique.
        assert!(seqs(&events).windows(2).all(|w| w[0] <= w[1]));
        let ids: std::collections::HashSet<&str> =
            events.iter().map(|e| e["_id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), events.len());
        let tokens: Vec<&Value> = events.iter().filter(|e| e["type"] == "llm_token").collect();
        assert!(!tokens.is_empty(), "no llm_token events stored");
        // Resuming after any token (also inside a chunk) gives exactly the rest.
        for cut in [0, tokens.len() / 2, tokens.len() - 1] {
            let at = events
                .iter()
                .position(|e| e["_id"] == tokens[cut]["_id"])
                .unwrap();
            let rest = read_sse(
                &format!(
                    "{url}/api/v1/events?workflow_id={id}&after={}",
                    tokens[cut]["_id"].as_str().unwrap()
                ),
                None,
                |e| finished(e, &id),
            )
            .await;
            assert_eq!(rest, events[at + 1..], "after {}", tokens[cut]["_id"]);
        }
        // A WebSocket client reconnecting with `since` (frames carry `id`).
        let middle = tokens[tokens.len() / 2]["_id"]
            .as_str()
            .unwrap()
            .to_string();
        let ws_url = format!(
            "{}/api/v1/ws?workflow_id={id}&since={middle}",
            url.replacen("http://", "ws://", 1)
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let mut seen: Vec<Value> = Vec::new();
        while !finished(&seen, &id) {
            let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
                .await
                .expect("websocket stalled")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = frame {
                seen.push(serde_json::from_str::<Value>(&text).unwrap());
            }
        }
        let at = events
            .iter()
            .position(|e| e["_id"] == middle.as_str())
            .unwrap();
        let expected: Vec<&Value> = events[at + 1..].iter().map(|e| &e["_id"]).collect();
        let got: Vec<&Value> = seen.iter().map(|e| &e["id"]).collect();
        assert_eq!(got, expected);
        let done = events
            .iter()
            .find(|e| e["type"] == "task_completed")
            .unwrap();
        assert!(
            tokens
                .iter()
                .all(|t| t["seq"].as_u64() < done["seq"].as_u64()),
            "tokens after task_completed"
        );
        let spelled: String = tokens
            .iter()
            .map(|t| t["data"]["token"].as_str().unwrap())
            .collect();
        assert_eq!(spelled.trim(), response.trim());
        assert_eq!(
            done["data"]["usage"]["completion_tokens"].as_u64(),
            Some(completion)
        );

        let metrics = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("gleitzeit_llm_tokens_total{kind=\"completion\"}"),
            "{metrics}"
        );
        assert!(
            metrics.contains("gleitzeit_provider_latency_seconds_count{provider=\"llm\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("gleitzeit_workflows{state=\"completed\"} 1"),
            "{metrics}"
        );
    });
}

/// With no server running, the same commands work on the local store, and
/// `submit` hands the workflow to a background process.
#[test]
fn without_a_server_submit_runs_in_the_background_and_clients_read_the_store() {
    let env = Env::new();
    let quickstart = common::examples().join("quickstart.yaml");
    let submitted = env
        .run(&["--json", "submit", quickstart.to_str().unwrap()])
        .ok()
        .json();
    let id = submitted["workflow_id"].as_str().unwrap().to_string();
    assert!(submitted["pid"].as_u64().is_some(), "{submitted}");
    let watched = env.run(&["watch", "workflow", &id]).ok();
    assert!(
        watched.stdout.contains("4/4 tasks completed"),
        "{}",
        watched.stdout
    );
    // The background run prints its summary to its log as it exits.
    let log_path = submitted["log"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("4/4 tasks completed")
    {
        assert!(
            Instant::now() < deadline,
            "background run never logged its summary"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let queue = env.run(&["--json", "watch", "queue", "--once"]).ok().json();
    assert_eq!(queue["queue_depth"], 0);
    let health = env.run(&["--json", "health"]).json();
    assert_eq!(
        health["providers"]["python"]["status"], "healthy",
        "{health}"
    );
    let logs = env.run(&["logs", &id, "--level", "error"]).ok();
    assert_eq!(logs.stdout, "", "no errors in a clean run");
    let events = env.run(&["--json", "events", "--workflow", &id]).ok();
    assert_eq!(events.stdout.lines().count() as u64, {
        let all = env.run(&["--json", "inspect", "workflow", &id]).ok().json();
        all["events"].as_u64().unwrap()
    });

    // Bad input: clear GZ errors, exit 2.
    let bad_range = env.run(&["stats", "--range", "soon"]).code(2);
    assert!(bad_range.stderr.contains("GZ9001"), "{}", bad_range.stderr);
    let bad_type = env.run(&["events", "--types", "task_exploded"]).code(2);
    assert!(
        bad_type.stderr.contains("task_exploded"),
        "{}",
        bad_type.stderr
    );
    let no_task = env.run(&["inspect", "task", &format!("{id}/nope")]).code(2);
    assert!(no_task.stderr.contains("GZ3023"), "{}", no_task.stderr);
    let memory = env
        .run(&[
            "--backend",
            "memory",
            "submit",
            quickstart.to_str().unwrap(),
        ])
        .code(2);
    assert!(memory.stderr.contains("gleitzeit run"), "{}", memory.stderr);
}

/// The server as it starts by default: API keys required. `auth init` makes
/// the first admin; users and keys are managed through the server; a user
/// sees only their own workflows; revoked keys stop at once; keys are never
/// printed back.
#[test]
fn api_keys_users_and_isolation_through_the_cli() {
    let env = Env::new();
    let init = env.run(&["--json", "auth", "init"]).ok().json();
    let admin = init["key"].as_str().unwrap().to_string();
    assert!(admin.starts_with("gzt_"));
    let again = env.run(&["auth", "init"]).code(2);
    assert!(again.stderr.contains("already set up"), "{}", again.stderr);

    // The users below submit the quickstart, which runs Python: USER may
    // not by default (tests/confinement.rs checks that), so this server
    // allows it explicitly, as an operator would.
    env.write("config.yaml", "auth:\n  methods:\n    USER: [\"*\"]\n");
    // Debug logging on: the log is checked for keys at the end.
    let server = Server::spawn(&env, &["--debug"]);
    let s = server.url.as_str();
    let quickstart = common::examples().join("quickstart.yaml");
    let q = quickstart.to_str().unwrap();

    // No key: refused with GZ4001 (exit 2); a mistyped key is caught locally.
    let refused = env.run(&["--server", s, "list"]).code(2);
    assert!(refused.stderr.contains("GZ4001"), "{}", refused.stderr);
    let mut typo = admin.clone();
    typo.pop();
    typo.push(if admin.ends_with('x') { 'y' } else { 'x' });
    let typed = env.run(&["auth", "login", "--api-key", &typo]).code(2);
    assert!(
        typed.stderr.contains("GZ4004") && !typed.stderr.contains(&typo[4..]),
        "{}",
        typed.stderr
    );

    // Log in and save; status shows the key's id, never the key.
    let login = env
        .run(&[
            "--server",
            s,
            "auth",
            "login",
            "--api-key",
            &admin,
            "--save",
        ])
        .ok();
    assert!(login.stdout.contains("`admin` (ADMIN)"), "{}", login.stdout);
    let credentials = env.path("credentials");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&credentials)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let status = env.run(&["--server", s, "auth", "status"]).ok();
    assert!(
        status.stdout.contains(&admin[..10]) && !status.stdout.contains(&admin[10..]),
        "{}",
        status.stdout
    );
    let config = env.run(&["config", "show"]).ok();
    assert!(
        !config.stdout.contains(&admin[4..]),
        "config show printed the key"
    );

    // Users and keys through the server.
    env.run(&[
        "--server", s, "auth", "users", "create", "bob", "--role", "USER",
    ])
    .ok();
    env.run(&[
        "--server",
        s,
        "auth",
        "user",
        "create",
        "carol",
        "--email",
        "c@example.com",
        "--role",
        "USER",
    ])
    .ok();
    let bob = env
        .run(&[
            "--server",
            s,
            "--json",
            "auth",
            "keys",
            "create",
            "bob laptop",
            "--user",
            "bob",
            "--expires",
            "30d",
        ])
        .ok()
        .json();
    let bob_key = bob["key"].as_str().unwrap().to_string();
    let carol = env
        .run(&[
            "--server",
            s,
            "--json",
            "auth",
            "key",
            "create",
            "--user",
            "carol",
            "--expires",
            "30",
        ])
        .ok()
        .json();
    let carol_key = carol["key"].as_str().unwrap().to_string();
    let listed = env
        .run(&["--server", s, "auth", "keys", "list", "--user", "bob"])
        .ok();
    assert!(
        listed.stdout.contains(bob["id"].as_str().unwrap())
            && !listed.stdout.contains(&bob_key[10..]),
        "{}",
        listed.stdout
    );

    let as_user = |key: &str, args: &[&str]| {
        let output = env
            .command()
            .env("GLEITZEIT_API_KEY", key)
            .args(["--server", s])
            .args(args)
            .output()
            .unwrap();
        common::Run::from(output)
    };
    let bobs = as_user(&bob_key, &["--json", "submit", "--wait", q])
        .ok()
        .json();
    let bobs_id = bobs["workflow_id"].as_str().unwrap().to_string();
    let carols = as_user(&carol_key, &["--json", "submit", "--wait", q])
        .ok()
        .json();
    assert_eq!(carols["state"], "completed");

    // Bob sees his own only; Carol's id is "not found" for him; the admin sees both.
    let bob_list = as_user(&bob_key, &["--json", "list"]).ok().json();
    assert_eq!(bob_list.as_array().unwrap().len(), 1);
    let peek = as_user(&bob_key, &["get", carols["workflow_id"].as_str().unwrap()]).code(2);
    assert!(peek.stderr.contains("GZ3021"), "{}", peek.stderr);
    let admin_list = env.run(&["--server", s, "--json", "list"]).ok().json();
    assert_eq!(admin_list.as_array().unwrap().len(), 2);
    // A USER may not manage keys.
    let denied = as_user(&bob_key, &["auth", "keys", "list"]).code(2);
    assert!(denied.stderr.contains("GZ4003"), "{}", denied.stderr);

    // Revoke: Bob's key stops at once; the audit log shows it.
    env.run(&[
        "--server",
        s,
        "auth",
        "keys",
        "revoke",
        bob["id"].as_str().unwrap(),
    ])
    .ok();
    let revoked = as_user(&bob_key, &["get", &bobs_id]).code(2);
    assert!(revoked.stderr.contains("GZ4004"), "{}", revoked.stderr);
    let audit = env
        .run(&["--server", s, "--json", "auth", "audit"])
        .ok()
        .json();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "auth.init",
        "user.create",
        "key.create",
        "key.revoke",
        "auth.failure",
    ] {
        assert!(actions.contains(&action), "{action} missing: {actions:?}");
    }
    assert!(!audit.to_string().contains(&bob_key[10..]));

    // Socket.IO needs the key too (in the connect auth payload).
    let url = server.url.replacen("http://", "ws://", 1);
    let admin_key = admin.clone();
    runtime().block_on(async move {
        let ws = format!("{url}/socket.io/?EIO=4&transport=websocket");
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.unwrap();
        let _open = socket.next().await.unwrap().unwrap();
        socket.send(Message::Text("40".into())).await.unwrap();
        let mut texts = Vec::new();
        while texts.len() < 2 {
            match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "2" => {}
                Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
                _ => break,
            }
        }
        assert!(texts.iter().any(|t| t.contains("GZ4001")), "{texts:?}");
        let (mut socket, _) = tokio_tungstenite::connect_async(&ws).await.unwrap();
        let _open = socket.next().await.unwrap().unwrap();
        socket
            .send(Message::Text(
                format!("40{}", json!({"api_key": admin_key})).into(),
            ))
            .await
            .unwrap();
        // Engine.IO pings ("2") may arrive at any time; the answer is "40…".
        let connected = loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
                .await
                .expect("socket.io connect answer")
                .unwrap()
                .unwrap()
                .to_string();
            if frame == "2" {
                socket.send(Message::Text("3".into())).await.unwrap();
                continue;
            }
            break frame;
        };
        assert!(connected.starts_with("40"), "{connected}");
    });

    env.run(&["auth", "logout"]).ok();
    assert!(!credentials.exists());

    let log = std::fs::read_to_string(env.path("server.log")).unwrap();
    assert!(
        log.contains("DEBUG") || log.contains("INFO"),
        "debug logging was on: {log}"
    );
    for key in [&admin, &bob_key, &carol_key, &typo] {
        assert!(!log.contains(&key[4..]), "a key reached the server log");
    }
}

/// A reverse proxy's header is believed only from the proxies named with it:
/// `serve` refuses to start on half a setting, or a malformed one.
#[test]
fn trusted_proxy_settings_are_checked_at_start() {
    let env = Env::new();
    for (config, words) in [
        (
            "server:\n  trusted_proxy_header: X-Forwarded-For\n",
            "names no proxy",
        ),
        (
            "server:\n  trusted_proxies: [127.0.0.1]\n",
            "trusted_proxy_header is not",
        ),
        (
            "server:\n  trusted_proxy_header: X-Forwarded-For\n  trusted_proxies: [proxy.local]\n",
            "not an IP address",
        ),
        (
            "server:\n  trusted_proxy_header: \"bad header\"\n  trusted_proxies: [127.0.0.1]\n",
            "not an HTTP header name",
        ),
    ] {
        let file = env.write("proxy.yaml", config);
        let run = env
            .run(&["--config", file.to_str().unwrap(), "serve", "--port", "0"])
            .code(2);
        assert!(
            run.stderr.contains("GZ9003") && run.stderr.contains(words),
            "{config}: {}",
            run.stderr
        );
    }
    // Set right, it starts and says whose header it believes.
    let file = env.write(
        "proxy.yaml",
        "server:\n  trusted_proxy_header: X-Forwarded-For\n  trusted_proxies: [127.0.0.1]\n",
    );
    let mut child = env
        .command()
        .args(["--config", file.to_str().unwrap(), "serve", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start server");
    let stdout = child.stdout.take().expect("stdout");
    // Read on a thread: a server that never says it must fail the test, not
    // hang it.
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Client addresses:") && lines.send(line).is_err() {
                return;
            }
        }
    });
    let said = said.recv_timeout(Duration::from_secs(30)).ok();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        said.as_deref(),
        Some("Client addresses: from `X-Forwarded-For` when the connection comes from 127.0.0.1")
    );
}
