//! LLM workflows through the real binary: the seed examples against a real
//! llama.cpp server (OpenAI dialect), and the Ollama dialect, failover and
//! `providers` against the Ollama test double.

mod common;
use common::{examples, llama_config, Env};
use gleitzeit_testkit::{Behavior, DoubleConfig, OllamaDouble};
use serde_json::Value;

fn run_json(env: &Env, config: &std::path::Path, file: &str) -> Value {
    let path = examples().join(file);
    let run = env.run(&[
        "--config",
        config.to_str().unwrap(),
        "--json",
        "run",
        path.to_str().unwrap(),
    ]);
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("{file}: {e}\n{}\n{}", run.stdout, run.stderr))
}

#[test]
fn seed_llm_examples_run_unchanged_against_llama_server() {
    let env = Env::new();
    let config = llama_config(&env);
    for file in [
        "llm_workflow.yaml",
        "dependent_workflow.yaml",
        "simple_llm_workflow.yaml",
        "seed_001_llm_task.yaml",
    ] {
        let json = run_json(&env, &config, file);
        assert_eq!(json["state"], "completed", "{file}: {json}");
        for task in json["tasks"].as_array().unwrap() {
            if task["method"] == "llm/chat" {
                let record = &task["record"];
                assert_eq!(record["endpoint"], "llama", "{file}");
                assert!(
                    record["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
                    "{file}"
                );
                // default_max_tokens (40) caps replies; seed 001's task asks for 100 itself.
                assert!(
                    record["usage"]["completion_tokens"].as_u64().unwrap() <= 100,
                    "{file}"
                );
                assert!(task["result"].is_string());
            }
        }
    }
    // The dependent workflow really passed the first answer into the second prompt.
    let json = run_json(&env, &config, "dependent_workflow.yaml");
    assert!(
        json["tasks"][1]["record"]["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap()
            > 5
    );
}

#[test]
fn structured_output_and_embeddings_against_llama_server() {
    let env = Env::new();
    let config = llama_config(&env);
    let json = run_json(&env, &config, "structured_output.yaml");
    assert_eq!(json["state"], "completed", "{json}");
    let parsed = &json["tasks"][0]["record"]["parsed"];
    assert!(
        parsed["city"].is_string() && parsed["founded"].is_number(),
        "{parsed}"
    );
    let json = run_json(&env, &config, "embeddings.yaml");
    assert_eq!(json["state"], "completed", "{json}");
    let similarity = &json["tasks"][1]["result"];
    assert!(
        similarity["cat~cat"].as_f64().unwrap() > similarity["cat~stocks"].as_f64().unwrap() - 1.0
    );
}

#[test]
fn mixed_workflow_runs_the_generated_code() {
    let env = Env::new();
    let config = llama_config(&env);
    let json = run_json(&env, &config, "mixed_workflow.yaml");
    // A 270M base model rarely writes valid Python: the LLM step must complete
    // and its text must reach Python as the program, which then either runs or
    // fails with a Python traceback — never anything else.
    assert_eq!(json["tasks"][0]["state"], "completed");
    let python = &json["tasks"][1];
    match python["state"].as_str().unwrap() {
        "completed" => {}
        "failed" => {
            assert_eq!(python["error"]["code"], "GZ2020", "{python}");
            assert!(
                python["error"]["details"]["traceback"].is_string(),
                "{python}"
            );
        }
        other => panic!("python task ended {other}: {python}"),
    }
}

#[test]
fn run_text_streams_the_answer() {
    let env = Env::new();
    let config = llama_config(&env);
    let run = env
        .run(&[
            "--config",
            config.to_str().unwrap(),
            "run",
            "--text",
            "Explain quantum computing",
            "--model",
            "llama3",
        ])
        .ok();
    assert!(!run.stdout.trim().is_empty());
    assert!(run.stderr.contains("on llama"), "{}", run.stderr);
    assert!(run.stderr.contains("completion tokens"), "{}", run.stderr);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn ollama_dialect_through_ollama_host() {
    let rt = runtime();
    let server = rt
        .block_on(OllamaDouble::start(DoubleConfig::default()))
        .unwrap();
    let env = Env::new();
    let path = examples().join("dependent_workflow.yaml");
    let output = env
        .command()
        .env("OLLAMA_HOST", server.url())
        .args(["--json", "run", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        json["tasks"][1]["result"],
        "echo: Write about: echo: Generate a topic"
    );
    assert_eq!(server.stats().chat, 2);
    let run = env
        .command()
        .env("OLLAMA_HOST", server.url())
        .args([
            "run",
            "--vision",
            "missing.jpg",
            "--prompt",
            "Describe this image",
            "--model",
            "llava",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("GZ5001") && stderr.contains("missing.jpg"),
        "{stderr}"
    );
    let run = env
        .command()
        .env("OLLAMA_HOST", server.url())
        .args(["run", "--text", "hi", "--model", "llava-nope"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("GZ2011") && stderr.contains("ollama pull"),
        "{stderr}"
    );
}

#[test]
fn failover_and_providers_health() {
    let rt = runtime();
    let broken = rt
        .block_on(OllamaDouble::start(
            DoubleConfig::default().with_behavior(Behavior::fail(500, "GPU on fire")),
        ))
        .unwrap();
    let good = rt
        .block_on(OllamaDouble::start(DoubleConfig::default()))
        .unwrap();
    let env = Env::new();
    let config = env.write(
        "config.yaml",
        &format!(
            "llm:\n  strategy: LEAST_LOADED\n  endpoints:\n    - {{name: gpu_server, url: '{}', kind: ollama, priority: 5}}\n    - {{name: local_cpu, url: '{}', kind: ollama, priority: 1}}\n",
            broken.url(),
            good.url()
        ),
    );
    let file = examples().join("llm_workflow.yaml");
    let run = env
        .run(&[
            "--config",
            config.to_str().unwrap(),
            "--json",
            "run",
            file.to_str().unwrap(),
        ])
        .ok();
    let record = &run.json()["tasks"][0]["record"];
    assert_eq!(record["endpoint"], "local_cpu");
    assert_eq!(record["failovers"], 1);

    let health = env
        .run(&["--config", config.to_str().unwrap(), "providers", "health"])
        .code(1);
    assert!(
        health.stdout.contains("gpu_server") && health.stdout.contains("down"),
        "{}",
        health.stdout
    );
    assert!(health.stdout.contains("1/2 healthy"), "{}", health.stdout);
    broken.set_behavior(Behavior::Normal);
    env.run(&["--config", config.to_str().unwrap(), "providers", "health"])
        .ok();
    let list = env
        .run(&[
            "--config",
            config.to_str().unwrap(),
            "--json",
            "providers",
            "list",
        ])
        .ok()
        .json();
    assert_eq!(list["llm"]["endpoints"][1]["healthy"], true);
    assert!(list["providers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["protocol"] == "llm"));
}
