//! `gleitzeit run --record DIR` / `--replay DIR`: a seed LLM example recorded
//! against the real llama.cpp server answers identically from the recording
//! with no endpoint at all; the committed recording under
//! `examples/recordings/` replays offline; a missing entry and a corrupt file
//! are clear errors.

mod common;
use common::{examples, llama_config, Env};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A config whose only LLM endpoint is a closed port: any request would fail.
fn offline_config(env: &Env) -> PathBuf {
    env.write(
        "offline.yaml",
        "llm:\n  endpoints:\n    - name: llama\n      url: http://127.0.0.1:1\n      kind: openai\n  models:\n    llama3.2: [gemma3]\n",
    )
}

fn run(env: &Env, config: &Path, file: &Path, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "--config",
        config.to_str().unwrap(),
        "--json",
        "run",
        "--ephemeral",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    env.run(&args)
}

/// What must be equal between a live run and its replay: each task's result
/// and its provider record (text, usage, model, endpoint).
fn answers(json: &Value) -> Vec<(Value, Value)> {
    json["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["result"].clone(), t["record"].clone()))
        .collect()
}

fn committed() -> PathBuf {
    examples().join("recordings/dependent_workflow")
}

#[test]
fn a_recording_against_llama_server_replays_identically_without_an_endpoint() {
    let env = Env::new();
    let config = llama_config(&env);
    let file = examples().join("dependent_workflow.yaml");
    let dir = env.path("rec");
    let live = run(&env, &config, &file, &["--record", dir.to_str().unwrap()]).ok();
    let live = live.json();
    assert_eq!(live["state"], "completed", "{live}");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 2, "one file per LLM exchange");
    for entry in files {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let entry: Value = serde_json::from_str(&text).unwrap();
        assert!(!entry["tokens"].as_array().unwrap().is_empty(), "{entry}");
    }

    let offline = offline_config(&env);
    let replayed = run(&env, &offline, &file, &["--replay", dir.to_str().unwrap()]).ok();
    let replayed = replayed.json();
    assert_eq!(replayed["state"], "completed", "{replayed}");
    assert_eq!(answers(&replayed), answers(&live));

    // The same workflow without the recording really has no endpoint.
    let failed = run(&env, &offline, &file, &[]);
    assert_eq!(failed.code, 1, "{}\n{}", failed.stdout, failed.stderr);
}

#[test]
fn the_committed_recording_replays_offline_and_streams_its_tokens() {
    let env = Env::new();
    let offline = offline_config(&env);
    let file = examples().join("dependent_workflow.yaml");
    let dir = committed();
    let json = run(&env, &offline, &file, &["--replay", dir.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(json["state"], "completed", "{json}");
    // Each result is the recorded reply, and the recorded tokens make it up.
    let mut recorded = std::collections::HashMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry: Value =
            serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
        let text = entry["outcome"]["ok"]["response"]
            .as_str()
            .unwrap()
            .to_string();
        let tokens: String = entry["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokens.trim(), text.trim());
        recorded.insert(text, entry);
    }
    for task in json["tasks"].as_array().unwrap() {
        let text = task["result"].as_str().unwrap();
        assert!(recorded.contains_key(text), "{text}");
    }
    // The second prompt got the first reply.
    let second = recorded
        .values()
        .find(|e| {
            e["request"]["messages"][0]["content"]
                .as_str()
                .unwrap()
                .starts_with("Write about: ")
        })
        .unwrap();
    let first_reply = json["tasks"][0]["result"].as_str().unwrap();
    assert_eq!(
        second["request"]["messages"][0]["content"],
        format!("Write about: {first_reply}")
    );
    // Replays are repeatable.
    let again = run(&env, &offline, &file, &["--replay", dir.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(answers(&again), answers(&json));
}

#[test]
fn a_request_the_recording_lacks_is_a_clear_error() {
    let env = Env::new();
    let offline = offline_config(&env);
    let changed = std::fs::read_to_string(examples().join("dependent_workflow.yaml"))
        .unwrap()
        .replace("Generate a topic", "Generate another topic");
    let file = env.write("changed.yaml", &changed);
    let dir = committed();
    let run = run(&env, &offline, &file, &["--replay", dir.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let json = run.json();
    assert_eq!(json["state"], "failed", "{json}");
    let text = json.to_string();
    assert!(text.contains("GZ2060"), "{text}");
    assert!(text.contains("has no answer"), "{text}");
}

#[test]
fn a_corrupt_recording_names_the_file_and_entry() {
    let env = Env::new();
    let offline = offline_config(&env);
    let dir = env.path("copy");
    std::fs::create_dir(&dir).unwrap();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(committed()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        std::fs::copy(&path, dir.join(&name)).unwrap();
        names.push(name.into_string().unwrap());
    }
    names.sort();
    let broken = dir.join(&names[0]);
    let text = std::fs::read_to_string(&broken).unwrap();
    std::fs::write(&broken, &text[..text.len() / 2]).unwrap();
    let file = examples().join("dependent_workflow.yaml");
    let run = run(&env, &offline, &file, &["--replay", dir.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(output.contains("GZ2061"), "{output}");
    assert!(output.contains(broken.to_str().unwrap()), "{output}");
    assert!(
        output.contains(&format!("entry {}", names[0].trim_end_matches(".json"))),
        "{output}"
    );
}
