//! Agent overhead: 20 agents of 5 turns each (4 `noop` tool calls, then an
//! answer) against the instant OpenAI-compatible peer, on the SQLite store.
//! The peer answers at once, so what a turn costs is Gleitzeit's own work:
//! building the request, decoding the streamed tool call, checking the
//! arguments, running the tool and committing the turn and the tool's outcome.

use crate::llm::run_ephemeral;
use crate::peer::AGENT_TURNS;
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;

const AGENTS: usize = 20;

fn run_durable(binary: &Path, config: &Path, file: &Path, home: &Path) -> Result<Value> {
    let output = std::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(["--json", "run", "--quiet"])
        .arg(file)
        .env("GLEITZEIT_HOME", home)
        .output()
        .context("run gleitzeit")?;
    anyhow::ensure!(
        output.status.success(),
        "agent workflow failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

pub fn run(binary: &Path, dir: &Path, url: &str) -> Result<Value> {
    let config = dir.join("agent-config.yaml");
    std::fs::write(
        &config,
        format!("llm:\n  health_interval_secs: 0\n  endpoints:\n    - {{name: peer, url: '{url}', kind: openai, max_concurrent: 4}}\n"),
    )?;
    let mut yaml = String::from("name: agents\ntasks:\n");
    for i in 0..AGENTS {
        yaml.push_str(&format!(
            "  - {{id: a{i}, method: llm/agent, parameters: {{model: gemma3, prompt: \"go {i}\", tools: [{{function: noop}}], max_turns: {AGENT_TURNS}, parallel_tool_calls: false}}}}\n"
        ));
    }
    let file = dir.join("agents.yaml");
    std::fs::write(&file, yaml)?;
    // Warm-up on the memory store, then the measured run on SQLite.
    run_ephemeral(
        binary,
        &config,
        &file,
        &dir.join("home-agent-warm"),
        "agent warm-up",
    )?;
    let json = run_durable(binary, &config, &file, &dir.join("home-agent"))?;
    let tasks = json["tasks"].as_array().context("tasks")?;
    let (mut turns, mut total, mut outside) = (0u64, 0f64, 0f64);
    for task in tasks {
        let record = &task["record"];
        anyhow::ensure!(
            record["turns"].as_u64() == Some(AGENT_TURNS as u64),
            "an agent did not take {AGENT_TURNS} turns: {task}"
        );
        let n = record["turns"].as_u64().unwrap_or(0);
        let duration = record["duration_ms"].as_f64().unwrap_or(0.0);
        let model = record["model_ms"].as_f64().unwrap_or(0.0);
        let tools: f64 = record["tool_calls"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["duration_ms"].as_f64()).sum())
            .unwrap_or(0.0);
        turns += n;
        total += duration;
        outside += duration - model - tools;
    }
    let per_turn = total / turns.max(1) as f64;
    let outside_per_turn = outside / turns.max(1) as f64;
    let result = json!({
        "scenario": "agent_5_turns_instant_peer",
        "agents": AGENTS,
        "turns_per_agent": AGENT_TURNS,
        "ms_per_turn": (per_turn * 100.0).round() / 100.0,
        "ms_per_turn_outside_calls": (outside_per_turn * 100.0).round() / 100.0,
        "workflow_ms": json["duration_ms"],
    });
    println!(
        "agent ({AGENTS} × {AGENT_TURNS} turns, SQLite, instant peer): {per_turn:.2} ms per turn, {outside_per_turn:.2} ms of it outside the model and tool calls"
    );
    Ok(result)
}
