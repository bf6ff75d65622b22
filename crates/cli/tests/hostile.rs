//! Hostile input against the real server: documents that nest or expand past
//! the limits, oversized ids, task counts and results, rows the store cannot
//! read back, and event replays by a user with no workflows. Each is refused
//! or contained with its GZ code; the server keeps answering and restarts
//! cleanly afterwards.

mod common;
use common::{Env, Server};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn regression(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus/regressions")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn block<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Sends a request; the timeout only turns a hung server into a failure
/// instead of a hung test (how fast it answers is the bench's business).
fn send(request: reqwest::RequestBuilder, key: Option<&str>) -> (u16, Value) {
    let request = match key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    block(async move {
        let response = request
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .expect("the server answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

fn post(server: &Server, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let request = reqwest::Client::new()
        .post(format!("{}{path}", server.url))
        .body(body.to_string());
    send(request, key)
}

fn get(server: &Server, path: &str, key: Option<&str>) -> (u16, Value) {
    send(
        reqwest::Client::new().get(format!("{}{path}", server.url)),
        key,
    )
}

fn assert_healthy(server: &Server) {
    let (status, body) = get(server, "/health", None);
    assert_eq!(status, 200, "{body}");
}

fn wait_state(server: &Server, id: &str, state: &str, key: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, view) = get(server, &format!("/api/v1/workflows/{id}"), key);
        if view["state"] == state {
            return view;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became {state}: {view}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn refused_with(server: &Server, body: &str, path: &str, code: &str) -> Value {
    let (status, answer) = post(server, path, body, None);
    assert!(
        status == 400 || status == 413 || status == 422,
        "status {status}: {answer}"
    );
    let text = answer.to_string();
    assert!(text.contains(code), "expected {code}: {text}");
    answer
}

#[test]
fn hostile_documents_are_refused_and_the_server_keeps_serving_and_restarts() {
    let env = Env::new();
    env.write("config.yaml", "limits:\n  max_tasks: 2000\n");
    let server = Server::spawn(&env, &["--no-auth"]);
    let submit = "/api/v1/workflows";

    // 1. A parameter nested 150 deep (about 400 bytes): used to be stored
    //    and then kept the server from starting again.
    let answer = refused_with(
        &server,
        &regression("deep-150-parameter.yaml"),
        submit,
        "GZ3033",
    );
    assert!(answer.to_string().contains("limits.max_depth"), "{answer}");
    assert_healthy(&server);
    // 2. 40 anchors each wrapping the previous alias in 240 brackets: used to
    //    overflow a worker thread's stack and abort the process.
    refused_with(
        &server,
        &regression("alias-nesting-stack.yaml"),
        submit,
        "GZ3033",
    );
    assert_healthy(&server);
    // 3. Billion laughs, 9 levels in about 600 bytes: used to take gigabytes.
    let answer = refused_with(
        &server,
        &regression("billion-laughs.yaml"),
        submit,
        "GZ3033",
    );
    assert!(
        answer.to_string().contains("limits.max_alias_expansion"),
        "{answer}"
    );
    assert_healthy(&server);
    assert!(
        server.peak_rss_mb() < 300,
        "the server grew to {} MiB",
        server.peak_rss_mb()
    );
    // Variants: deep input override, a 2 MB task id, more tasks than allowed,
    // a flow mapping nested instead of a list.
    let deep_input = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let quickstart = "name: q\ntasks:\n  - {id: a, method: unique, parameters: {items: [1, 1]}}\n";
    refused_with(
        &server,
        quickstart,
        &format!("{submit}?input=x={}", urlencode(&deep_input)),
        "GZ3033",
    );
    let long_id = format!(
        "name: long\ntasks:\n  - {{id: {}, method: unique, parameters: {{items: [1, 1]}}}}\n",
        "x".repeat(2 * 1024 * 1024)
    );
    let answer = refused_with(&server, &long_id, submit, "GZ3033");
    assert!(
        answer.to_string().contains("limits.max_id_length"),
        "{answer}"
    );
    let mut many = String::from("name: many\ntasks:\n");
    for i in 0..2001 {
        many.push_str(&format!(
            "  - {{id: t{i}, method: unique, parameters: {{items: [1, 1]}}}}\n"
        ));
    }
    let answer = refused_with(&server, &many, submit, "GZ3033");
    assert!(answer.to_string().contains("2001 tasks"), "{answer}");
    let deep_map = format!(
        "name: m\ntasks:\n  - {{id: a, method: unique, parameters: {{items: [1], c: {}1{}}}}}\n",
        "{k: ".repeat(80),
        "}".repeat(80)
    );
    refused_with(&server, &deep_map, submit, "GZ3033");
    assert_healthy(&server);

    // Nothing half-stored, and ordinary work still runs.
    let (_, listed) = get(&server, "/api/v1/workflows", None);
    assert_eq!(
        listed["workflows"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    let (status, created) = post(&server, submit, quickstart, None);
    assert_eq!(status, 201, "{created}");
    let id = created["workflow_id"].as_str().unwrap().to_string();
    wait_state(&server, &id, "completed", None);

    // And it starts again on the same store.
    server.kill();
    let server = Server::spawn(&env, &["--no-auth"]);
    assert_healthy(&server);
    wait_state(&server, &id, "completed", None);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn results_over_the_limits_fail_their_task_and_are_never_stored() {
    let env = Env::new();
    env.write("config.yaml", "limits:\n  max_result_bytes: 100000\n");
    let flow = env.write(
        "big.yaml",
        "name: big results\ntasks:\n  - id: huge\n    on_error: continue\n    method: python/execute\n    parameters:\n      code: \"result = 'x' * 1_000_000\"\n  - id: deep\n    on_error: continue\n    method: python/execute\n    parameters:\n      code: |\n        r = 1\n        for _ in range(100):\n            r = [r]\n        result = r\n  - id: fine\n    method: python/execute\n    parameters:\n      code: \"result = 'ok'\"\n",
    );
    // `on_error: continue`: the workflow completes, the two tasks fail.
    let run = env.run(&["run", flow.to_str().unwrap()]).ok();
    assert!(
        run.stdout.contains("GZ2070") && run.stdout.contains("GZ3033"),
        "{}",
        run.stdout
    );
    let list = env.run(&["--json", "list"]).ok().json();
    let id = list[0]["id"].as_str().unwrap().to_string();
    let view = env.run(&["--json", "get", &id]).ok().json();
    let task = |name: &str| common::task_of(&view, name);
    let huge = task("huge");
    assert_eq!(huge["state"], "failed", "{huge}");
    assert_eq!(huge["error"]["code"], "GZ2070", "{huge}");
    assert!(
        huge["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than the 100000 allowed"),
        "{huge}"
    );
    assert!(huge["result"].is_null(), "{huge}");
    let deep = task("deep");
    assert_eq!(deep["error"]["code"], "GZ3033", "{deep}");
    assert_eq!(task("fine")["state"], "completed");
    // The megabyte never reached the database.
    let db = env.path("gleitzeit.db");
    let stored = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(env.path("gleitzeit.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    assert!(stored < 900_000, "database and WAL hold {stored} bytes");
}

#[test]
fn an_unreadable_row_fails_its_workflow_and_the_server_still_starts() {
    let env = Env::new();
    let server = Server::spawn(&env, &["--no-auth"]);
    let (_, done) = post(
        &server,
        "/api/v1/workflows",
        "name: done\ntasks:\n  - {id: a, method: unique, parameters: {items: [1, 1]}}\n",
        None,
    );
    let done = done["workflow_id"].as_str().unwrap().to_string();
    wait_state(&server, &done, "completed", None);
    let (_, slow) = post(
        &server,
        "/api/v1/workflows",
        "name: slow\ntasks:\n  - {id: nap, method: python/execute, parameters: {code: \"import time; time.sleep(60)\"}}\n",
        None,
    );
    let slow = slow["workflow_id"].as_str().unwrap().to_string();
    wait_state(&server, &slow, "running", None);
    server.kill();

    // What an older version could write: parameters nested past what JSON is
    // read back with.
    let db = env.path("gleitzeit.db");
    let script = format!(
        "import json, sqlite3\n\
         c = sqlite3.connect({db:?})\n\
         spec = json.loads(c.execute('SELECT spec FROM workflows WHERE id = ?', ({slow:?},)).fetchone()[0])\n\
         v = 1\n\
         for _ in range(200): v = [v]\n\
         spec['tasks'][0]['params']['v'] = v\n\
         import sys; sys.setrecursionlimit(10000)\n\
         c.execute('UPDATE workflows SET spec = ? WHERE id = ?', (json.dumps(spec), {slow:?}))\n\
         c.commit()\n",
        db = db.to_str().unwrap(),
    );
    let status = std::process::Command::new("python3")
        .args(["-c", &script])
        .status()
        .expect("python3");
    assert!(status.success());

    let server = Server::spawn(&env, &["--no-auth"]);
    assert_healthy(&server);
    let failed = wait_state(&server, &slow, "failed", None);
    assert_eq!(failed["error"]["code"], "GZ5008", "{failed}");
    assert!(
        failed["error"]["hint"]
            .as_str()
            .unwrap_or("")
            .contains("Submit it again"),
        "{failed}"
    );
    // Listings agree, and every other workflow reads and works.
    let (_, listed) = get(&server, "/api/v1/workflows?state=failed", None);
    assert!(listed.to_string().contains(&slow), "{listed}");
    wait_state(&server, &done, "completed", None);
    let (status, resumed) = post(
        &server,
        &format!("/api/v1/workflows/{slow}/resume"),
        "",
        None,
    );
    assert_eq!(status, 409, "{resumed}");
    assert_eq!(resumed["code"], "GZ3022", "{resumed}");
    let (_, again) = post(
        &server,
        "/api/v1/workflows",
        "name: again\ntasks:\n  - {id: a, method: unique, parameters: {items: [2, 2]}}\n",
        None,
    );
    wait_state(
        &server,
        again["workflow_id"].as_str().unwrap(),
        "completed",
        None,
    );
    let local = env.run(&["--json", "get", &done]).ok().json();
    assert_eq!(local["state"], "completed");

    // A third start finds it already recorded as failed.
    server.kill();
    let server = Server::spawn(&env, &["--no-auth"]);
    assert_eq!(
        wait_state(&server, &slow, "failed", None)["error"]["code"],
        "GZ5008"
    );
}

#[test]
fn an_event_replay_by_a_user_reads_only_their_own_events() {
    let env = Env::new();
    let init = env.run(&["--json", "auth", "init"]).ok().json();
    let admin = init["key"].as_str().unwrap().to_string();
    let server = Server::spawn(&env, &[]);
    let s = server.url.clone();
    let cli = |args: &[&str]| {
        let mut command = env.command();
        command
            .env("GLEITZEIT_API_KEY", &admin)
            .arg("--server")
            .arg(&s)
            .args(args);
        common::Run::from(command.output().expect("run gleitzeit"))
    };
    cli(&["auth", "users", "create", "bob", "--role", "USER"]).ok();
    let bob = cli(&[
        "--json", "auth", "keys", "create", "bob key", "--user", "bob",
    ])
    .ok()
    .json();
    let bob = bob["key"].as_str().unwrap().to_string();

    let flow =
        "name: admin work\ntasks:\n  - {id: a, method: unique, parameters: {items: [1, 1]}}\n";
    let mut ids = Vec::new();
    for _ in 0..30 {
        let (status, created) = post(&server, "/api/v1/workflows", flow, Some(&admin));
        assert_eq!(status, 201, "{created}");
        ids.push(created["workflow_id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        wait_state(&server, id, "completed", Some(&admin));
    }
    let (status, mine) = post(
        &server,
        "/api/v1/workflows",
        "name: bob work\ntasks:\n  - {id: b, method: unique, parameters: {items: [5, 5]}}\n",
        Some(&bob),
    );
    assert_eq!(status, 201, "{mine}");
    let mine = mine["workflow_id"].as_str().unwrap().to_string();
    wait_state(&server, &mine, "completed", Some(&bob));

    // Replay everything from the start as bob: only bob's workflow appears.
    // The stream stays open; read what arrives within three seconds.
    let text = block(async {
        use futures_util::StreamExt;
        let response = reqwest::Client::new()
            .get(format!("{s}/api/v1/events?after=0"))
            .bearer_auth(&bob)
            .send()
            .await
            .expect("stream opens");
        assert_eq!(response.status(), 200);
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, chunks.next()).await {
            body.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&body).into_owned()
    });
    assert!(text.contains(&mine), "bob's events are missing: {text}");
    assert!(text.contains("workflow_completed"), "{text}");
    for id in &ids {
        assert!(
            !text.contains(id.as_str()),
            "bob saw the admin's workflow {id}"
        );
    }
}
