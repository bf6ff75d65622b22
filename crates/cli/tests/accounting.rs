//! Token and cost accounting end to end: prices from the config on results,
//! `get` and `stats`, and a workflow `budget:` that stops further LLM tasks.

mod common;
use common::Env;
use gleitzeit_testkit::{DoubleConfig, OllamaDouble};
use serde_json::Value;

fn double() -> (tokio::runtime::Runtime, OllamaDouble) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt
        .block_on(OllamaDouble::start(DoubleConfig::default()))
        .unwrap();
    (rt, server)
}

const THREE_CALLS: &str = "name: spender\n{budget}tasks:\n  - id: one\n    method: llm/chat\n    parameters: {model: llama3.2, prompt: 'first question with several words in it'}\n  - id: two\n    method: llm/chat\n    dependencies: [one]\n    parameters: {model: llama3.2, prompt: 'second question'}\n  - id: three\n    method: llm/chat\n    dependencies: [two]\n    parameters: {model: llama3.2, prompt: 'third'}\n";

#[test]
fn prices_show_on_results_get_and_stats() {
    let (_rt, server) = double();
    let env = Env::new();
    let config = env.write(
        "config.yaml",
        "llm:\n  prices:\n    llama3.2: {input: 3.0, output: 15.0}\n",
    );
    let file = env.write("flow.yaml", &THREE_CALLS.replace("{budget}", ""));
    let run = |args: &[&str]| {
        let output = env
            .command()
            .env("OLLAMA_HOST", server.url())
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, out) = run(&["--json", "run", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let json: Value = serde_json::from_str(out.trim()).unwrap();
    let mut expected = 0.0;
    for task in json["tasks"].as_array().unwrap() {
        let record = &task["record"];
        let usage = &record["usage"];
        let cost = (usage["prompt_tokens"].as_f64().unwrap() * 3.0
            + usage["completion_tokens"].as_f64().unwrap() * 15.0)
            / 1e6;
        assert!(
            (record["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12,
            "{record}"
        );
        expected += cost;
    }
    let usage = &json["usage"];
    assert!(
        (usage["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-9,
        "{usage}"
    );
    assert_eq!(usage["cost_unknown_calls"], 0);
    assert_eq!(usage["by_model"]["llama3.2"]["llm_calls"], 3, "{usage}");
    assert_eq!(usage["by_endpoint"]["ollama"]["llm_calls"], 3, "{usage}");

    let id = json["workflow_id"].as_str().unwrap();
    let (_, get) = run(&["get", id]);
    assert!(get.contains("3 LLM call(s), $0.0"), "{get}");
    let (_, stats) = run(&["stats"]);
    assert!(stats.contains("model    llama3.2"), "{stats}");
    assert!(stats.contains("endpoint ollama"), "{stats}");
    // The columns line up: after the kind (8) and the name (24), each
    // count is right-aligned in 8 columns.
    for line in stats.lines().filter(|l| l.contains(" tokens in ")) {
        let counts = &line[4 + 9 + 25..];
        assert!(counts.len() > 8, "{stats}");
        assert_eq!(&counts[8..19], " tokens in ", "{stats}");
        assert!(counts[..8].trim_start().parse::<u64>().is_ok(), "{stats}");
    }
    assert_eq!(
        stats.lines().filter(|l| l.contains(" tokens in ")).count(),
        2,
        "{stats}"
    );
}

#[test]
fn a_budget_stops_further_llm_tasks_and_says_how_much_was_used() {
    let (_rt, server) = double();
    let env = Env::new();
    let file = env.write(
        "flow.yaml",
        &THREE_CALLS.replace("{budget}", "budget: {tokens: 12}\n"),
    );
    let output = env
        .command()
        .env("OLLAMA_HOST", server.url())
        .args(["--json", "run", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let tasks = json["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["state"], "completed");
    assert_eq!(tasks[1]["state"], "failed", "{json}");
    let error = &tasks[1]["error"];
    assert_eq!(error["code"], "GZ3032", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("token budget of 12 used up"),
        "{error}"
    );
    assert_ne!(tasks[2]["state"], "completed");
    assert_eq!(
        server.stats().chat,
        1,
        "no LLM call after the budget was used up"
    );

    // Bad budgets are validation errors with a position.
    let bad = env.write(
        "bad.yaml",
        "name: b\nbudget: {tokens: -5, dollars: 3}\ntasks:\n  - {id: a, method: python/execute, params: {code: 'result = 1'}}\n",
    );
    let run = env.run(&["validate", bad.to_str().unwrap()]).code(2);
    assert!(run.stderr.contains("GZ3031"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("budget `tokens` must be a positive number"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("unknown budget key `dollars`"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("bad.yaml:2:"), "{}", run.stderr);
}
