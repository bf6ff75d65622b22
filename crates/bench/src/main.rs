//! `cargo run --release -p gleitzeit-bench [-- --quick] [--only NAME[,NAME]]`
//!
//! Runs the release `gleitzeit` binary on generated workflows and reports wall
//! time, tasks per second and peak RSS (from `wait4`), then writes the figures to
//! `bench/results/latest.json`. Each scenario runs several times; the median is
//! reported so one slow run does not decide the number.
//!
//! Scenarios (for `--only`): chain, fanout, python, http, llm, overhead, agent, cluster, limits, soak, fairness. A full run with
//! `--only` replaces just those scenarios' entries in `latest.json`.

// Unsafe only to signal and reap the processes it measures (marked `allow` there).
#![deny(unsafe_code)]

mod agent;
mod cluster;
mod fairness;
mod http;
mod limits;
mod llm;
mod peer;
mod soak;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

struct Measure {
    wall_ms: f64,
    max_rss_kb: i64,
    workflow_ms: Option<f64>,
}

/// Runs a command to completion and reads its resource usage.
#[allow(unsafe_code)]
fn measure(binary: &Path, args: &[&str], home: &Path) -> Result<Measure> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .env("GLEITZEIT_HOME", home)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id() as libc::pid_t;
    // Read stdout on a thread so a full pipe never blocks the child; the status
    // and peak RSS come from wait4 on this thread (std's wait would not give RSS).
    let mut pipe = child.stdout.take().context("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut pipe, &mut out);
        out
    });
    let mut status = 0;
    // SAFETY: rusage is plain data filled by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let stdout = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))?;
    if rc < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("{} {:?} failed (status {status})", binary.display(), args);
    }
    let workflow_ms = serde_json::from_slice::<Value>(&stdout)
        .ok()
        .and_then(|v| v["duration_ms"].as_f64());
    Ok(Measure {
        wall_ms,
        max_rss_kb: usage.ru_maxrss,
        workflow_ms,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn chain(n: usize) -> String {
    let mut yaml = String::from("name: chain\ntasks:\n");
    for i in 0..n {
        if i == 0 {
            yaml.push_str("  - {id: t0, method: noop}\n");
        } else {
            yaml.push_str(&format!(
                "  - {{id: t{i}, method: noop, dependencies: [t{}]}}\n",
                i - 1
            ));
        }
    }
    yaml
}

fn fan(n: usize, method: &str, params: &str) -> String {
    let mut yaml = String::from("name: fan\ntasks:\n  - {id: start, method: noop}\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - {{id: t{i}, method: {method}, dependencies: [start]{params}}}\n"
        ));
    }
    let deps: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    yaml.push_str(&format!(
        "  - {{id: join, method: noop, dependencies: [{}]}}\n",
        deps.join(", ")
    ));
    yaml
}

fn scenario(
    binary: &Path,
    dir: &Path,
    name: &str,
    yaml: &str,
    tasks: usize,
    runs: usize,
    extra: &[&str],
) -> Result<Value> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml)?;
    let file_arg = file.display().to_string();
    let mut args = vec!["--json", "run", "--quiet"];
    args.extend_from_slice(extra);
    args.push(&file_arg);
    let home = dir.join(format!("home-{name}"));
    // One warm-up run (page cache, first database creation).
    measure(binary, &args, &home)?;
    let mut walls = Vec::new();
    let mut workflows = Vec::new();
    let mut rss = 0;
    for _ in 0..runs {
        let m = measure(binary, &args, &home)?;
        walls.push(m.wall_ms);
        workflows.push(m.workflow_ms.unwrap_or(m.wall_ms));
        rss = rss.max(m.max_rss_kb);
    }
    let wall = median(walls);
    let workflow = median(workflows);
    let result = json!({
        "scenario": name,
        "tasks": tasks,
        "runs": runs,
        "wall_ms_median": (wall * 100.0).round() / 100.0,
        "workflow_ms_median": workflow,
        "tasks_per_second": ((tasks as f64) / (workflow.max(1.0) / 1000.0)).round(),
        "peak_rss_mb": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
    });
    println!(
        "{:<34} {:>7} tasks  whole process {:>9.1} ms  workflow {:>8.1} ms  {:>9} tasks/s  peak RSS {:>6.1} MB",
        name,
        tasks,
        wall,
        workflow,
        result["tasks_per_second"],
        rss as f64 / 1024.0
    );
    Ok(result)
}

/// Scenario names `--only` accepts.
const SCENARIOS: &[&str] = &[
    "chain", "fanout", "python", "http", "llm", "overhead", "agent", "cluster", "limits", "soak",
    "fairness",
];

struct Options {
    quick: bool,
    /// Run only these scenarios (all when empty).
    only: Vec<String>,
}

fn options() -> Result<Options> {
    let mut options = Options {
        quick: false,
        only: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let list = match arg.as_str() {
            "--quick" => {
                options.quick = true;
                continue;
            }
            "--only" => args.next().context("--only needs a scenario name")?,
            other => match other.strip_prefix("--only=") {
                Some(list) => list.to_string(),
                None => bail!(
                    "unknown argument `{other}`; usage: gleitzeit-bench [--quick] [--only NAME[,NAME]]"
                ),
            },
        };
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !SCENARIOS.contains(&name) {
                bail!(
                    "unknown scenario `{name}`; scenarios: {}",
                    SCENARIOS.join(", ")
                );
            }
            options.only.push(name.to_string());
        }
    }
    Ok(options)
}

fn main() -> Result<()> {
    let Options { quick, only } = options()?;
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = std::env::var_os("GLEITZEIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/gleitzeit"));
    if !binary.exists() {
        bail!(
            "{} not found: build it with `cargo build --release`",
            binary.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let runs = if quick { 1 } else { 7 };
    let fan_n = if quick { 500 } else { 10_000 };
    let py_n = if quick { 20 } else { 200 };
    let http_n = if quick { 200 } else { 1_000 };
    println!(
        "gleitzeit benchmarks ({}), binary {}",
        if quick { "quick" } else { "full" },
        binary.display()
    );
    let mut results = Vec::new();
    if wants("chain") {
        results.push(scenario(
            &binary,
            dir.path(),
            "chain_40_noop_sqlite",
            &chain(40),
            40,
            runs,
            &[],
        )?);
    }
    if wants("fanout") {
        results.push(scenario(
            &binary,
            dir.path(),
            &format!("fanout_{fan_n}_noop_sqlite"),
            &fan(fan_n, "noop", ""),
            fan_n + 2,
            runs.min(3),
            &[],
        )?);
        results.push(scenario(
            &binary,
            dir.path(),
            &format!("fanout_{fan_n}_noop_memory"),
            &fan(fan_n, "noop", ""),
            fan_n + 2,
            runs.min(3),
            &["--ephemeral"],
        )?);
    }
    if wants("python") {
        results.push(scenario(
            &binary,
            dir.path(),
            &format!("python_fanout_{py_n}"),
            &fan(py_n, "python/execute", ", parameters: {code: 'result = 1'}"),
            py_n + 2,
            runs.min(5),
            &[],
        )?);
    }
    if wants("http") {
        results.push(http::run(&binary, dir.path(), http_n)?);
    }
    if wants("cluster") {
        results.extend(cluster::run(&binary, dir.path(), quick)?);
    }
    if wants("overhead") && !quick {
        // Kept alive for the scenario: the peer runs on this runtime.
        let peer_rt = tokio::runtime::Runtime::new()?;
        let url = peer::start(&peer_rt)?;
        results.push(llm::run(
            &binary,
            dir.path(),
            &url,
            "llm_overhead_64_instant_peer",
        )?);
    }
    if wants("agent") && !quick {
        let peer_rt = tokio::runtime::Runtime::new()?;
        let url = peer::start(&peer_rt)?;
        results.push(agent::run(&binary, dir.path(), &url)?);
    }
    if wants("soak") {
        results.extend(soak::run(&binary, dir.path(), quick)?);
    }
    if wants("fairness") {
        let sizes: Vec<usize> = std::env::var("GLEITZEIT_BENCH_FAIRNESS_SIZES")
            .ok()
            .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
        results.extend(fairness::run(&binary, dir.path(), quick, &sizes)?);
    }
    if wants("limits") {
        let peer_rt = tokio::runtime::Runtime::new()?;
        let url = peer::start(&peer_rt)?;
        results.push(limits::run(&binary, dir.path(), &url, quick)?);
    }
    if wants("llm") {
        if let Some(url) = std::env::var("GLEITZEIT_BENCH_LLAMA_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            results.push(llm::run(
                &binary,
                dir.path(),
                url.trim_end_matches('/'),
                "llm_fanout_64_vs_direct",
            )?);
        } else if !quick {
            println!(
                "(set GLEITZEIT_BENCH_LLAMA_URL, or use scripts/bench.sh, for the LLM scenario)"
            );
        }
    }
    let machine = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())),
        "memory_gb": std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok())).map(|kb| (kb / 1024.0 / 1024.0).round()),
    });
    if !quick {
        let out = std::env::var_os("GLEITZEIT_BENCH_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("bench/results"));
        std::fs::create_dir_all(&out)?;
        let file = out.join("latest.json");
        // With --only, the other scenarios keep their last figures. The file's
        // machine stays the one they were measured on; a result measured on
        // another machine carries its own.
        let mut machine = machine;
        if !only.is_empty() {
            let previous = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| serde_json::from_str::<Value>(&text).ok());
            if let Some(previous) = previous.filter(|p| p["results"].is_array()) {
                if previous["machine"] != machine {
                    for result in &mut results {
                        result["machine"] = machine.clone();
                    }
                    machine = previous["machine"].clone();
                }
                let mut merged: Vec<Value> = previous["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|entry| {
                        results
                            .iter()
                            .find(|r| r["scenario"] == entry["scenario"])
                            .cloned()
                            .unwrap_or_else(|| entry.clone())
                    })
                    .collect();
                for result in &results {
                    if !merged.iter().any(|m| m["scenario"] == result["scenario"]) {
                        merged.push(result.clone());
                    }
                }
                results = merged;
            }
        }
        let report = json!({"quick": quick, "machine": machine, "results": results});
        std::fs::write(&file, serde_json::to_string_pretty(&report)?)?;
        println!("written to bench/results/latest.json");
    }
    Ok(())
}
