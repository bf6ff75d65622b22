//! `llm/agent` end to end through the runtime: the Ollama double plays the
//! model (its tool turns follow the conversation), the real function and MCP
//! providers answer the tool calls, and the store holds the journal.

use gleitzeit_core::events::EventPayload;
use gleitzeit_core::{parse, ErrorCode, TaskState, WorkflowState};
use gleitzeit_providers::function::FunctionProvider;
use gleitzeit_providers::http::{HttpConfig, HttpProvider};
use gleitzeit_providers::llm::{Dialect, EndpointConfig, LlmConfig, LlmProvider};
use gleitzeit_providers::mcp::{McpProvider, McpServerConfig};
use gleitzeit_providers::Registry;
use gleitzeit_runtime::{RunOutcome, Runtime, RuntimeConfig};
use gleitzeit_store::{MemoryStore, Store};
use gleitzeit_testkit::{DoubleConfig, OllamaDouble, OpenAiPeer, ToolTurn};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn call(name: &str, arguments: Value) -> (String, Value) {
    (name.to_string(), arguments)
}

async fn double(turns: Vec<ToolTurn>) -> OllamaDouble {
    OllamaDouble::start(DoubleConfig::default().with_tool_turns(turns))
        .await
        .unwrap()
}

fn registry(llm_url: &str, mcp: Option<McpProvider>) -> Registry {
    registry_for(llm_url, Dialect::Ollama, mcp)
}

fn registry_for(llm_url: &str, dialect: Dialect, mcp: Option<McpProvider>) -> Registry {
    let mut registry = Registry::new();
    registry.register(Arc::new(FunctionProvider));
    let llm = LlmConfig {
        endpoints: vec![EndpointConfig {
            name: "double".into(),
            url: llm_url.into(),
            kind: Some(dialect),
            ..EndpointConfig::default()
        }],
        health_interval_secs: 0.0,
        ..LlmConfig::default()
    };
    registry.register(Arc::new(LlmProvider::new(llm, None).unwrap()));
    if let Some(mcp) = mcp {
        registry.register(Arc::new(mcp));
    }
    registry
}

async fn run(registry: Registry, yaml: &str) -> (Arc<dyn Store>, RunOutcome) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = Runtime::new(store.clone(), registry, RuntimeConfig::default());
    let workflow = parse::load(yaml, "agent.yaml", runtime.registry(), &Map::new())
        .unwrap_or_else(|d| panic!("{d:#?}"));
    let id = runtime.submit(workflow, None).await.unwrap();
    let outcome = runtime.run(&id, CancellationToken::new()).await.unwrap();
    (store, outcome)
}

async fn events(store: &dyn Store, id: &str) -> Vec<EventPayload> {
    store
        .events(Some(id), 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

fn roles(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect()
}

const TWO_TOOLS: &str = r#"
name: agent
tasks:
  - id: research
    method: llm/agent
    parameters:
      model: llama3.2
      system: "You are careful."
      prompt: "Count the words and the 10th Fibonacci number."
      tools:
        - function: count_words
        - function: fibonacci
          description: "Fibonacci numbers"
      max_turns: 4
"#;

#[tokio::test]
async fn parallel_calls_feed_back_in_the_models_order_and_the_loop_answers() {
    let llm = double(vec![
        ToolTurn::Call(vec![
            call("count_words", json!({"text": "one two three"})),
            call("fibonacci", json!({"n": 10})),
        ]),
        ToolTurn::Answer("Three words; the numbers are listed.".into()),
    ])
    .await;
    let (store, outcome) = run(registry(&llm.url(), None), TWO_TOOLS).await;
    assert_eq!(outcome.state, WorkflowState::Completed, "{outcome:#?}");
    let result = outcome.tasks[0].result.clone().unwrap();
    assert_eq!(result["response"], "Three words; the numbers are listed.");
    assert_eq!(result["turns"], 2);
    assert_eq!(result["failed_tool_calls"], 0);
    let calls = result["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["name"], "count_words");
    assert_eq!(calls[0]["result"]["words"], 3);
    assert_eq!(calls[1]["name"], "fibonacci");
    assert_eq!(calls[1]["arguments"], json!({"n": 10}));
    assert!(calls[1]["result"].is_array(), "{result}");
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(
        roles(&result["messages"]),
        ["system", "user", "assistant", "tool", "tool", "assistant"]
    );
    assert_eq!(result["messages"][3]["tool_call_id"], calls[0]["id"]);
    // Usage sums both model calls.
    let total = result["usage"]["total_tokens"].as_u64().unwrap();
    assert!(total > 0 && result["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(result["cost_usd"], 0.0);

    // The model saw the tools in its dialect, and the results in its order.
    let stats = llm.stats();
    let bodies: Vec<&Value> = stats.requests_to("/api/chat").map(|r| &r.body).collect();
    assert_eq!(bodies.len(), 2);
    let offered: Vec<&str> = bodies[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["count_words", "fibonacci"]);
    assert_eq!(
        bodies[0]["tools"][1]["function"]["description"],
        "Fibonacci numbers"
    );
    assert_eq!(
        bodies[0]["tools"][0]["function"]["parameters"]["required"],
        json!(["text"])
    );
    let second = bodies[1]["messages"].as_array().unwrap();
    assert_eq!(
        second[2]["tool_calls"][0]["function"],
        json!({"name": "count_words", "arguments": {"text": "one two three"}})
    );
    assert_eq!(second[3]["role"], "tool");
    assert_eq!(second[3]["tool_name"], "count_words");
    assert_eq!(second[4]["tool_name"], "fibonacci");

    // The journal: each step stored as its event, in order.
    let kinds: Vec<&str> = events(store.as_ref(), &outcome.workflow_id)
        .await
        .iter()
        .filter(|e| {
            matches!(
                e,
                EventPayload::AgentTurn(_)
                    | EventPayload::ToolCallStarted(_)
                    | EventPayload::ToolCallCompleted(_)
            )
        })
        .map(|e| e.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            "agent_turn",
            "tool_call_started",
            "tool_call_started",
            "tool_call_completed",
            "tool_call_completed",
            "agent_turn"
        ]
    );
}

#[tokio::test]
async fn sequential_calls_run_one_after_the_other() {
    let llm = double(vec![
        ToolTurn::Call(vec![
            call("count_words", json!({"text": "a b"})),
            call("count_words", json!({"text": "a b c"})),
        ]),
        ToolTurn::Answer("done".into()),
    ])
    .await;
    let yaml = TWO_TOOLS.replace(
        "max_turns: 4",
        "max_turns: 4\n      parallel_tool_calls: false",
    );
    let (store, outcome) = run(registry(&llm.url(), None), &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Completed, "{outcome:#?}");
    let kinds: Vec<&str> = events(store.as_ref(), &outcome.workflow_id)
        .await
        .iter()
        .filter(|e| {
            matches!(
                e,
                EventPayload::ToolCallStarted(_) | EventPayload::ToolCallCompleted(_)
            )
        })
        .map(|e| e.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            "tool_call_started",
            "tool_call_completed",
            "tool_call_started",
            "tool_call_completed"
        ]
    );
    let body = llm.stats().last_body("/api/chat").cloned().unwrap();
    assert!(
        body.get("parallel_tool_calls").is_none(),
        "Ollama has no such field"
    );
}

#[tokio::test]
async fn refused_and_failed_calls_go_back_to_the_model() {
    let llm = double(vec![
        ToolTurn::Call(vec![
            call("delete_everything", json!({})),
            call("count_words", json!({"text": 5})),
            call("json_parse", json!({"text": "{not json"})),
        ]),
        ToolTurn::Answer("I could not do it.".into()),
    ])
    .await;
    let yaml = TWO_TOOLS.replace("- function: fibonacci", "- function: json_parse");
    let (_, outcome) = run(registry(&llm.url(), None), &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Completed, "{outcome:#?}");
    let result = outcome.tasks[0].result.clone().unwrap();
    assert_eq!(result["failed_tool_calls"], 3);
    let calls = result["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["error"]["code"], "GZ2084");
    assert!(calls[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no tool `delete_everything`"));
    assert_eq!(calls[1]["error"]["code"], "GZ2084");
    assert!(calls[1]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("schema"));
    assert_eq!(calls[2]["error"]["code"], "GZ2031");
    // The model read each error as its tool's answer.
    let body = llm.stats().last_body("/api/chat").cloned().unwrap();
    let tool_messages: Vec<&Value> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_messages.len(), 3);
    assert!(tool_messages[0]["content"]
        .as_str()
        .unwrap()
        .contains("GZ2084"));
    assert!(tool_messages[2]["content"]
        .as_str()
        .unwrap()
        .contains("GZ2031"));
}

#[tokio::test]
async fn on_tool_error_fail_ends_the_task_with_the_transcript() {
    let llm = double(vec![
        ToolTurn::Call(vec![call("json_parse", json!({"text": "{not json"}))]),
        ToolTurn::Answer("unreachable".into()),
    ])
    .await;
    let yaml = TWO_TOOLS
        .replace("- function: fibonacci", "- function: json_parse")
        .replace("max_turns: 4", "max_turns: 4\n      on_tool_error: fail");
    let (_, outcome) = run(registry(&llm.url(), None), &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Failed);
    let task = &outcome.tasks[0];
    assert_eq!(task.state, TaskState::Failed);
    let error = task.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::AgentToolFailed);
    assert_eq!(error.details["tool_error"]["code"], "GZ2031");
    assert_eq!(error.details["turns"], 1);
    assert_eq!(
        roles(&error.details["messages"]),
        ["system", "user", "assistant", "tool"]
    );
    assert_eq!(llm.stats().chat, 1, "no turn after the failure");
}

#[tokio::test]
async fn a_model_that_never_stops_ends_at_max_turns() {
    let llm = double(vec![ToolTurn::Call(vec![call(
        "count_words",
        json!({"text": "again"}),
    )])])
    .await;
    let yaml = TWO_TOOLS.replace("max_turns: 4", "max_turns: 3");
    let (_, outcome) = run(registry(&llm.url(), None), &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Failed);
    let error = outcome.tasks[0].error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::AgentMaxTurns, "{error:#?}");
    assert!(!error.retryable);
    assert_eq!(error.details["turns"], 3);
    // Tools ran after turns 1 and 2; turn 3's request is in the transcript, unrun.
    assert_eq!(error.details["tool_calls"].as_array().unwrap().len(), 2);
    assert_eq!(
        roles(&error.details["messages"]),
        [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    assert!(error.details["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(llm.stats().chat, 3);
}

#[tokio::test]
async fn the_workflow_budget_stops_the_loop_between_turns() {
    let llm = double(vec![ToolTurn::Call(vec![call(
        "count_words",
        json!({"text": "again"}),
    )])])
    .await;
    let yaml = TWO_TOOLS
        .replace("name: agent\n", "name: agent\nbudget: {tokens: 20}\n")
        .replace("max_turns: 4", "max_turns: 50");
    let (_, outcome) = run(registry(&llm.url(), None), &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Failed);
    let error = outcome.tasks[0].error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::BudgetExceeded, "{error:#?}");
    let turns = error.details["turns"].as_u64().unwrap();
    assert!((1..50).contains(&turns), "{error:#?}");
    assert!(error.details["tokens"].as_u64().unwrap() >= 20);
    assert_eq!(llm.stats().chat, turns);
}

#[tokio::test]
async fn a_structured_final_answer_is_parsed_and_validated() {
    let llm = double(vec![
        ToolTurn::Call(vec![call("count_words", json!({"text": "x y"}))]),
        ToolTurn::Answer(r#"{"words": 2}"#.into()),
    ])
    .await;
    let yaml = TWO_TOOLS.replace(
        "max_turns: 4",
        "max_turns: 4\n      format: {type: object, properties: {words: {type: integer}}, required: [words]}",
    );
    let (_, outcome) = run(registry(&llm.url(), None), &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Completed, "{outcome:#?}");
    assert_eq!(
        outcome.tasks[0].result.as_ref().unwrap()["parsed"],
        json!({"words": 2})
    );

    let llm = double(vec![ToolTurn::Answer(r#"{"count": "two"}"#.into())]).await;
    let (_, outcome) = run(registry(&llm.url(), None), &yaml).await;
    let error = outcome.tasks[0].error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::StructuredOutputInvalid, "{error:#?}");
}

#[tokio::test]
async fn approval_and_unknown_tools_are_refused_before_anything_runs() {
    let llm = double(vec![]).await;
    let registry = registry(&llm.url(), None);
    let yaml = TWO_TOOLS.replace(
        "- function: fibonacci",
        "- function: fibonaci\n        - function: sum\n          approve: true",
    );
    let diagnostics = parse::load(&yaml, "agent.yaml", &registry, &Map::new()).unwrap_err();
    let codes: Vec<&str> = diagnostics.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, ["GZ3040", "GZ3041"], "{diagnostics:#?}");
    assert!(diagnostics[0]
        .message
        .contains("unknown function `fibonaci`"));
    assert_eq!(diagnostics[0].pos.line, 12);
    assert_eq!(diagnostics[1].pos.line, 13);
    assert!(diagnostics[1]
        .hint
        .as_deref()
        .unwrap()
        .contains("durable waits"));
    assert_eq!(llm.stats().requests, 0);
}

fn mcp_everything() -> McpProvider {
    let server = gleitzeit_testkit::mcp_servers_dir()
        .join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let mut servers = BTreeMap::new();
    servers.insert(
        "everything".to_string(),
        McpServerConfig {
            command: vec!["node".into(), server.display().to_string(), "stdio".into()],
            ..McpServerConfig::default()
        },
    );
    McpProvider::new(servers)
}

#[tokio::test]
async fn mcp_tools_are_offered_with_their_servers_schema() {
    let llm = double(vec![
        ToolTurn::Call(vec![call("echo", json!({"message": "hallo"}))]),
        ToolTurn::Answer("echoed".into()),
    ])
    .await;
    let yaml = r#"
name: agent-mcp
tasks:
  - id: research
    method: llm/agent
    parameters:
      model: llama3.2
      prompt: "Echo hallo."
      tools:
        - mcp: {server: everything, tools: [echo]}
"#;
    let (_, outcome) = run(registry(&llm.url(), Some(mcp_everything())), yaml).await;
    assert_eq!(outcome.state, WorkflowState::Completed, "{outcome:#?}");
    let result = outcome.tasks[0].result.clone().unwrap();
    assert!(
        result["tool_calls"][0]["result"]
            .to_string()
            .contains("hallo"),
        "{result}"
    );
    let first = llm
        .stats()
        .requests_to("/api/chat")
        .next()
        .unwrap()
        .body
        .clone();
    assert_eq!(
        first["tools"][0]["function"]["parameters"]["properties"]["message"]["type"],
        "string"
    );

    // A tool the server does not have ends the task before the model is asked.
    let llm = double(vec![]).await;
    let (_, outcome) = run(
        registry(&llm.url(), Some(mcp_everything())),
        &yaml.replace("tools: [echo]", "tools: [no_such_tool]"),
    )
    .await;
    let error = outcome.tasks[0].error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::AgentToolUnavailable, "{error:#?}");
    assert!(error.message.contains("echo"), "{}", error.message);
    assert_eq!(llm.stats().chat, 0);
}

#[tokio::test]
async fn openai_dialect_streamed_call_deltas_drive_the_loop() {
    let peer = OpenAiPeer::start(vec![
        ToolTurn::Call(vec![
            call(
                "count_words",
                json!({"text": "streamed in small fragments"}),
            ),
            call("fibonacci", json!({"n": 5})),
        ]),
        ToolTurn::Answer("four words".into()),
    ])
    .await
    .unwrap();
    let yaml = TWO_TOOLS.replace("model: llama3.2", "model: peer");
    let (_, outcome) = run(registry_for(&peer.url(), Dialect::Openai, None), &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Completed, "{outcome:#?}");
    let result = outcome.tasks[0].result.clone().unwrap();
    assert_eq!(result["response"], "four words");
    let calls = result["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["id"], "call_peer_0_0");
    assert_eq!(
        calls[0]["arguments"],
        json!({"text": "streamed in small fragments"})
    );
    assert_eq!(calls[0]["result"]["words"], 4);
    assert_eq!(calls[1]["id"], "call_peer_0_1");
    assert_eq!(calls[1]["arguments"], json!({"n": 5}));
    let requests = peer.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["parallel_tool_calls"], true);
    let second = requests[1]["messages"].as_array().unwrap();
    assert_eq!(second[2]["content"], Value::Null);
    assert_eq!(second[2]["tool_calls"][0]["id"], "call_peer_0_0");
    assert_eq!(
        second[2]["tool_calls"][0]["function"]["arguments"],
        json!({"text": "streamed in small fragments"}).to_string()
    );
    assert_eq!(
        second[3],
        json!({"role": "tool", "content": calls[0]["result"].to_string(), "tool_call_id": "call_peer_0_0"})
    );
}

/// An `http:` tool reaches only URLs under its prefix, through the HTTP
/// provider and its SSRF guard. The Ollama double doubles as the web API.
#[tokio::test]
async fn http_tools_stay_under_their_prefix_and_behind_the_guard() {
    let llm = double(vec![
        ToolTurn::Call(vec![
            call("models", json!({"path": "tags"})),
            call("models", json!({"path": "../version"})),
            call("models", json!({"path": "https://example.com/"})),
        ]),
        ToolTurn::Answer("listed".into()),
    ])
    .await;
    let yaml = format!(
        r#"
name: agent-http
tasks:
  - id: research
    method: llm/agent
    parameters:
      model: llama3.2
      prompt: "Which models are installed?"
      tools:
        - http: {{name: models, url_prefix: "{}/api/", method: GET}}
"#,
        llm.url()
    );
    let with_http = |allow: bool| {
        let mut registry = registry(&llm.url(), None);
        let config = HttpConfig {
            allow_hosts: if allow {
                vec!["127.0.0.1".into()]
            } else {
                vec![]
            },
            ..HttpConfig::default()
        };
        registry.register(Arc::new(HttpProvider::new(config).unwrap()));
        registry
    };
    let (_, outcome) = run(with_http(true), &yaml).await;
    assert_eq!(outcome.state, WorkflowState::Completed, "{outcome:#?}");
    let calls = outcome.tasks[0].result.as_ref().unwrap()["tool_calls"].clone();
    assert!(calls[0]["result"]["models"].is_array(), "{calls}");
    assert_eq!(calls[1]["error"]["code"], "GZ2084", "{calls}");
    assert_eq!(calls[2]["error"]["code"], "GZ2084", "{calls}");
    let tags = llm.stats().requests_to("/api/tags").count();
    assert_eq!(tags, 1, "only the call under the prefix went out");
    assert_eq!(llm.stats().version, 0);

    // Loopback is private: without an allowance the guard refuses the call,
    // and the model hears why.
    let (_, outcome) = run(with_http(false), &yaml).await;
    let calls = outcome.tasks[0].result.as_ref().unwrap()["tool_calls"].clone();
    assert_eq!(
        calls[0]["error"]["code"],
        ErrorCode::AddressBlocked.as_str(),
        "{calls}"
    );
}
