//! LLM overhead: the same 64 short chat requests sent directly to a llama.cpp
//! server and run as a 64-task fan-out workflow, at the same concurrency.
//! Reports the throughput ratio and the latency Gleitzeit adds per request.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const REQUESTS: usize = 64;
const CONCURRENCY: usize = 4;
const MAX_TOKENS: u64 = 16;

fn prompt(i: usize) -> String {
    format!("Item {i}: write one short sentence about the number {i}.")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Per-request latencies (ms) and wall time (ms) of direct streaming requests.
async fn direct(url: &str) -> Result<(Vec<f64>, f64)> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()?;
    let fresh = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .pool_max_idle_per_host(0)
        .build()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let started = Instant::now();
    let calls = (0..REQUESTS).map(|i| {
        let client = client.clone();
        let fresh = fresh.clone();
        let slots = slots.clone();
        let url = format!("{url}/v1/chat/completions");
        async move {
            let _slot = slots.acquire().await?;
            let t = Instant::now();
            let body = json!({
                "model": "gemma3", "messages": [{"role": "user", "content": prompt(i)}],
                "max_tokens": MAX_TOKENS, "temperature": 0, "stream": true,
                "stream_options": {"include_usage": true}});
            // llama-server closes some keep-alive connections after a stream; a
            // request that lands on one is repeated, as any client must (and as
            // Gleitzeit's provider does).
            let response = match client.post(&url).json(&body).send().await {
                Err(e) if e.is_request() && !e.is_connect() && !e.is_timeout() => {
                    fresh.post(&url).json(&body).send().await?
                }
                other => other?,
            };
            let mut stream = response.bytes_stream();
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                chunk?;
            }
            anyhow::Ok(t.elapsed().as_secs_f64() * 1000.0)
        }
    });
    let latencies = futures_util::future::try_join_all(calls).await?;
    Ok((latencies, started.elapsed().as_secs_f64() * 1000.0))
}

/// The same requests as a workflow through the binary.
/// `gleitzeit --config CONFIG --json run --quiet --ephemeral FILE`: its JSON
/// answer, or an error naming `what` with the run's stderr.
pub(crate) fn run_ephemeral(
    binary: &Path,
    config: &Path,
    file: &Path,
    home: &Path,
    what: &str,
) -> Result<Value> {
    let output = std::process::Command::new(binary)
        .arg("--config")
        .arg(config)
        .args(["--json", "run", "--quiet", "--ephemeral"])
        .arg(file)
        .env("GLEITZEIT_HOME", home)
        .output()
        .context("run gleitzeit")?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn through_gleitzeit(binary: &Path, dir: &Path, url: &str) -> Result<(Vec<f64>, f64)> {
    let config = dir.join("llm-config.yaml");
    std::fs::write(
        &config,
        format!("llm:\n  health_interval_secs: 0\n  endpoints:\n    - {{name: llama, url: '{url}', kind: openai, max_concurrent: {CONCURRENCY}}}\n"),
    )?;
    let mut yaml = String::from("name: llm-fanout\ntasks:\n");
    for i in 0..REQUESTS {
        yaml.push_str(&format!(
            "  - {{id: q{i}, method: llm/chat, parameters: {{model: gemma3, prompt: {:?}, max_tokens: {MAX_TOKENS}, temperature: 0}}}}\n",
            prompt(i)
        ));
    }
    let file = dir.join("llm-fanout.yaml");
    std::fs::write(&file, yaml)?;
    let json = run_ephemeral(binary, &config, &file, &dir.join("home-llm"), "llm fan-out")?;
    let latencies = json["tasks"]
        .as_array()
        .context("tasks")?
        .iter()
        .filter_map(|t| t["duration_ms"].as_f64())
        .collect();
    let wall = json["duration_ms"].as_f64().context("duration_ms")?;
    Ok((latencies, wall))
}

pub fn run(binary: &Path, dir: &Path, url: &str, scenario: &str) -> Result<Value> {
    let rt = tokio::runtime::Runtime::new()?;
    // Warm the server (prompt cache, threads) once, then alternate.
    rt.block_on(direct(url))?;
    let mut direct_lat = Vec::new();
    let mut direct_wall = Vec::new();
    let mut gz_lat = Vec::new();
    let mut gz_wall = Vec::new();
    for _ in 0..2 {
        let (l, w) = rt.block_on(direct(url))?;
        direct_lat.extend(l);
        direct_wall.push(w);
        let (l, w) = through_gleitzeit(binary, dir, url)?;
        gz_lat.extend(l);
        gz_wall.push(w);
    }
    let sort = |v: &mut Vec<f64>| v.sort_by(|a, b| a.total_cmp(b));
    sort(&mut direct_lat);
    sort(&mut gz_lat);
    let direct_tput =
        REQUESTS as f64 * direct_wall.len() as f64 / (direct_wall.iter().sum::<f64>() / 1000.0);
    let gz_tput = REQUESTS as f64 * gz_wall.len() as f64 / (gz_wall.iter().sum::<f64>() / 1000.0);
    let result = json!({
        "scenario": scenario,
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "direct_requests_per_second": (direct_tput * 100.0).round() / 100.0,
        "gleitzeit_requests_per_second": (gz_tput * 100.0).round() / 100.0,
        "throughput_ratio": (gz_tput / direct_tput * 1000.0).round() / 1000.0,
        "direct_p50_ms": percentile(&direct_lat, 0.5),
        "direct_p99_ms": percentile(&direct_lat, 0.99),
        "gleitzeit_p50_ms": percentile(&gz_lat, 0.5),
        "gleitzeit_p99_ms": percentile(&gz_lat, 0.99),
        "added_p50_ms": ((percentile(&gz_lat, 0.5) - percentile(&direct_lat, 0.5)) * 10.0).round() / 10.0,
        "added_p99_ms": ((percentile(&gz_lat, 0.99) - percentile(&direct_lat, 0.99)) * 10.0).round() / 10.0,
    });
    println!(
        "{scenario} (conc. {CONCURRENCY}): direct {:.2} req/s, gleitzeit {:.2} req/s (ratio {}), p50 {:.0} vs {:.0} ms (added {}), p99 {:.0} vs {:.0} ms",
        direct_tput,
        gz_tput,
        result["throughput_ratio"],
        percentile(&direct_lat, 0.5),
        percentile(&gz_lat, 0.5),
        result["added_p50_ms"],
        percentile(&direct_lat, 0.99),
        percentile(&gz_lat, 0.99),
    );
    Ok(result)
}
