//! `llm/agent` through the real binary: `examples/agent.yaml` against the
//! Ollama double (deterministic tool turns), and an agent with a built-in
//! function and an MCP tool against the real llama.cpp server, where only the
//! transcript's structure is checked, never the model's wording.

mod common;
use common::{examples, Env, Server};
use gleitzeit_testkit::{DoubleConfig, OllamaDouble, ToolTurn};
use serde_json::{json, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_agent_example_runs_its_tool_loop() {
    let rt = runtime();
    let server = rt
        .block_on(OllamaDouble::start(
            DoubleConfig::default().with_tool_turns(vec![
                ToolTurn::Call(vec![
                    (
                        "count_words".into(),
                        json!({"text": "the quick brown fox jumps over the lazy dog"}),
                    ),
                    ("fibonacci".into(), json!({"n": 8})),
                ]),
                ToolTurn::Answer("Nine words; 0 1 1 2 3 5 8 13.".into()),
            ]),
        ))
        .unwrap();
    let env = Env::new();
    let path = examples().join("agent.yaml");
    let run = env
        .command()
        .env("OLLAMA_HOST", server.url())
        .args(["--json", "run", path.to_str().unwrap()])
        .output()
        .unwrap();
    let run = common::Run::from(run).ok();
    let json = run.json();
    assert_eq!(json["state"], "completed", "{json}");
    let agent = &json["tasks"][0]["record"];
    assert_eq!(agent["turns"], 2, "{agent}");
    assert_eq!(agent["tool_calls"][0]["result"]["words"], 9);
    assert_eq!(
        json["tasks"][1]["result"],
        json!({"answer": "Nine words; 0 1 1 2 3 5 8 13.", "turns": 2, "tools_called": 2})
    );
    assert_eq!(server.stats().chat, 2);

    // The turns are in the workflow's events, for `events` and the views.
    let id = json["workflow_id"].as_str().unwrap();
    let events = env
        .command()
        .args(["--json", "events", "--workflow", id, "--limit", "200"])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    for kind in ["agent_turn", "tool_call_started", "tool_call_completed"] {
        assert!(events.contains(kind), "{kind} missing: {events}");
    }
}

#[test]
fn an_agent_against_the_real_model_keeps_a_well_formed_transcript() {
    let env = Env::new();
    let notes = env.path("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), "Buy milk. Fix the roof.").unwrap();
    let notes = notes.canonicalize().unwrap();
    let llama = gleitzeit_testkit::llama_server_url();
    let config = env.write(
        "config.yaml",
        &format!(
            "mcp_servers:\n  files:\n    command: [node, '{dir}/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js', '{notes}']\nllm:\n  default_max_tokens: 60\n  endpoints:\n    - {{name: llama, url: '{llama}', kind: openai}}\n  models:\n    llama3.2: [gemma3]\n",
            dir = gleitzeit_testkit::mcp_servers_dir().display(),
            notes = notes.display()
        ),
    );
    let workflow = env.write(
        "agent.yaml",
        &format!(
            r#"
name: real-agent
tasks:
  - id: agent
    method: llm/agent
    parameters:
      model: llama3.2
      system: "Use the tools to answer."
      prompt: "Read {notes}/todo.txt with read_text_file, then count its words with count_words."
      tools:
        - function: count_words
        - mcp: {{server: files, tools: [read_text_file]}}
      max_turns: 3
"#,
            notes = notes.display()
        ),
    );
    let run = env.run(&[
        "--config",
        config.to_str().unwrap(),
        "--json",
        "run",
        workflow.to_str().unwrap(),
    ]);
    let json = run.json();
    let task = &json["tasks"][0];
    // The model may call tools or answer in text; either way the loop ends
    // with a result or a loop-level error, never anything else.
    let (transcript, turns) = match task["state"].as_str().unwrap() {
        "completed" => (task["record"].clone(), task["record"]["turns"].clone()),
        "failed" => {
            let code = task["error"]["code"].as_str().unwrap();
            assert!(
                ["GZ2080", "GZ2081", "GZ2013"].contains(&code),
                "unexpected failure: {task}"
            );
            (
                task["error"]["details"].clone(),
                task["error"]["details"]["turns"].clone(),
            )
        }
        other => panic!("agent ended {other}: {json}"),
    };
    let turns = turns.as_u64().unwrap_or(0);
    assert!((1..=3).contains(&turns), "{transcript}");
    let messages = transcript["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert_eq!(messages[1]["role"], "user");
    // Every assistant turn's calls are answered, in order, before the next turn.
    let mut i = 2;
    let mut assistant_turns = 0;
    while i < messages.len() {
        assert_eq!(messages[i]["role"], "assistant", "{transcript}");
        assistant_turns += 1;
        let calls = messages[i]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        i += 1;
        for call in &calls {
            if i == messages.len() {
                break; // the last turn's calls, unrun at max_turns
            }
            assert_eq!(messages[i]["role"], "tool", "{transcript}");
            assert_eq!(messages[i]["tool_call_id"], call["id"], "{transcript}");
            i += 1;
        }
    }
    assert_eq!(assistant_turns, turns, "{transcript}");
    for call in transcript["tool_calls"].as_array().unwrap() {
        let offered = ["count_words", "read_text_file"].contains(&call["name"].as_str().unwrap());
        let outcome = call
            .get("result")
            .or(call.get("error"))
            .cloned()
            .unwrap_or(Value::Null);
        assert!(!outcome.is_null(), "{call}");
        if !offered {
            assert_eq!(call["error"]["code"], "GZ2084", "{call}");
        }
    }
    assert!(transcript["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn validate_refuses_tool_approval_and_unknown_tools() {
    let env = Env::new();
    let workflow = env.write(
        "agent.yaml",
        r#"
name: bad-agent
tasks:
  - id: agent
    method: llm/agent
    parameters:
      model: llama3.2
      prompt: "p"
      max_turns: 0
      tools:
        - function: count_wordz
        - function: fibonacci
          approve: true
"#,
    );
    let run = env.run(&["validate", workflow.to_str().unwrap()]).code(2);
    for expected in [
        "GZ3040",
        "count_wordz",
        "GZ3041",
        "durable waits",
        "max_turns",
    ] {
        assert!(
            run.stderr.contains(expected) || run.stdout.contains(expected),
            "{expected}: {}{}",
            run.stdout,
            run.stderr
        );
    }
}

/// The attack through an agent: a USER key submits an agent whose model asks
/// `read_file` for a secret outside the user's roots, the server's config and
/// a file the user may read. The tools run under the submitter's grant, so the
/// secrets are refused (GZ6010, handed back to the model) and only the
/// allowed file is read; a tool whose method the role may not call is refused
/// at submit.
#[test]
fn an_agent_over_the_api_reaches_only_its_submitters_files() {
    const MARKER: &str = "AGENT-SECRET-77c1";
    let rt = runtime();
    let env = Env::new();
    let home = std::fs::canonicalize(env.home.path()).unwrap();
    let shared = home.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("ok.txt"), "fine\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = std::fs::canonicalize(elsewhere.path())
        .unwrap()
        .join("secret.txt");
    std::fs::write(&secret, MARKER).unwrap();
    let config_path = home.join("config.yaml");
    let llm = rt
        .block_on(OllamaDouble::start(
            DoubleConfig::default().with_tool_turns(vec![
                ToolTurn::Call(vec![
                    (
                        "read_file".into(),
                        json!({"path": secret.display().to_string()}),
                    ),
                    (
                        "read_file".into(),
                        json!({"path": config_path.display().to_string()}),
                    ),
                    (
                        "read_file".into(),
                        json!({"path": shared.join("ok.txt").display().to_string()}),
                    ),
                ]),
                ToolTurn::Answer("done".into()),
            ]),
        ))
        .unwrap();
    env.write(
        "config.yaml",
        &format!(
            "# {MARKER}\nfiles:\n  roots: ['{}']\nauth:\n  methods:\n    USER: ['llm/*', 'function/*']\nllm:\n  health_interval_secs: 0\n  endpoints:\n    - {{name: double, url: '{}', kind: ollama}}\n",
            shared.display(),
            llm.url()
        ),
    );
    let init = env.run(&["--json", "auth", "init"]).ok().json();
    let admin = init["key"].as_str().unwrap().to_string();
    let server = Server::spawn(&env, &[]);
    let s = server.url.clone();
    let as_admin = |args: &[&str]| {
        let output = env
            .command()
            .env("GLEITZEIT_API_KEY", &admin)
            .args(["--server", &s])
            .args(args)
            .output()
            .unwrap();
        common::Run::from(output).ok()
    };
    as_admin(&["auth", "users", "create", "mallory", "--role", "USER"]);
    let key = as_admin(&["--json", "auth", "keys", "create", "k", "--user", "mallory"]).json()
        ["key"]
        .as_str()
        .unwrap()
        .to_string();
    let client = reqwest::Client::new();
    let submit = |tools: Value| {
        let body = json!({"name": "agent attack", "tasks": [{"id": "agent", "method": "llm/agent",
            "parameters": {"model": "llama3.2", "prompt": "read the files", "tools": tools}}]});
        rt.block_on(async {
            let response = client
                .post(format!("{s}/api/v1/workflows"))
                .bearer_auth(&key)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        })
    };

    let (status, answer) = submit(json!([{"function": "read_file"}]));
    assert_eq!(status, 201, "{answer}");
    let id = answer["workflow_id"].as_str().unwrap().to_string();
    let view = common::poll::until(
        "the agent to finish",
        || -> Value {
            rt.block_on(async {
                match client
                    .get(format!("{s}/api/v1/workflows/{id}"))
                    .bearer_auth(&key)
                    .send()
                    .await
                {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                }
            })
        },
        |view| matches!(view["state"].as_str(), Some("completed" | "failed")),
    );
    assert_eq!(view["state"], "completed", "{view}");
    let calls = view["tasks"][0]["record"]["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(calls.len(), 3, "{view}");
    assert_eq!(calls[0]["error"]["code"], "GZ6010", "{view}");
    assert_eq!(calls[1]["error"]["code"], "GZ6010", "{view}");
    assert!(
        calls[2]["result"]["content"]
            .as_str()
            .unwrap()
            .starts_with("fine"),
        "{view}"
    );
    assert!(
        !view.to_string().contains(MARKER),
        "a secret was read: {view}"
    );
    // What the model was sent holds no secret either.
    for request in llm.stats().requests_to("/api/chat") {
        assert!(!request.body.to_string().contains(MARKER));
    }

    // A tool outside the role's methods: refused whole at submit.
    let (status, answer) =
        submit(json!([{"http": {"name": "f", "url_prefix": "https://example.com/"}}]));
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["code"], "GZ4003", "{answer}");
}

/// A recorded agent run replays offline: every turn's model call comes from
/// the recording (the tools run again, they are local and deterministic), and
/// the transcript is the same.
#[test]
fn a_recorded_agent_replays_without_an_endpoint() {
    let rt = runtime();
    let server = rt
        .block_on(OllamaDouble::start(
            DoubleConfig::default().with_tool_turns(vec![
                ToolTurn::Call(vec![
                    ("count_words".into(), json!({"text": "a b c"})),
                    ("fibonacci".into(), json!({"n": 5})),
                ]),
                ToolTurn::Answer("Three words.".into()),
            ]),
        ))
        .unwrap();
    let env = Env::new();
    let live_config = env.write(
        "live.yaml",
        &format!(
            "llm:\n  endpoints:\n    - {{name: ollama, url: '{}', kind: ollama}}\n",
            server.url()
        ),
    );
    let offline = env.write(
        "offline.yaml",
        "llm:\n  endpoints:\n    - {name: ollama, url: 'http://127.0.0.1:1', kind: ollama}\n",
    );
    let dir = env.path("recording");
    let file = examples().join("agent.yaml");
    let run = |config: &std::path::Path, flag: &str| {
        env.run(&[
            "--config",
            config.to_str().unwrap(),
            "--json",
            "run",
            "--ephemeral",
            file.to_str().unwrap(),
            flag,
            dir.to_str().unwrap(),
        ])
        .ok()
        .json()
    };
    let live = run(&live_config, "--record");
    assert_eq!(live["state"], "completed", "{live}");
    let chats = server.stats().chat;
    assert_eq!(chats, 2);
    let replayed = run(&offline, "--replay");
    assert_eq!(replayed["state"], "completed", "{replayed}");
    assert_eq!(server.stats().chat, chats, "the replay asked no model");
    let transcript = |json: &Value| {
        let record = &json["tasks"][0]["record"];
        (
            record["messages"].clone(),
            record["usage"].clone(),
            record["response"].clone(),
        )
    };
    assert_eq!(transcript(&replayed), transcript(&live));
}
