//! Scale-out: `gleitzeit run --backend redis` schedules, N `gleitzeit worker`
//! processes execute. Measures no-op tasks (the cost of the queue round trip
//! itself) and 10 ms Python tasks (how close the cluster gets to the ideal
//! time the workers' slots allow).

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// Concurrency of each worker in these scenarios.
const SLOTS: usize = 16;

struct Workers(Vec<Child>);

impl Drop for Workers {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        for child in &mut self.0 {
            // SAFETY: signalling our own child; SIGTERM lets it leave cleanly.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for child in &mut self.0 {
            let _ = child.wait();
        }
    }
}

/// GLEITZEIT_BENCH_REDIS_URL (default the local Redis) when it answers;
/// otherwise says which scenario is skipped.
pub(crate) fn redis_url(skipping: &str) -> Option<String> {
    let url = std::env::var("GLEITZEIT_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let answers = redis::Client::open(url.as_str())
        .and_then(|c| c.get_connection())
        .is_ok();
    if !answers {
        println!("(no Redis at {url}: skipping {skipping})");
    }
    answers.then_some(url)
}

pub(crate) fn clear(url: &str, prefix: &str) -> Result<()> {
    let mut conn = redis::Client::open(url)?.get_connection()?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query(&mut conn)?;
    for chunk in keys.chunks(500) {
        let _: () = redis::cmd("DEL").arg(chunk).query(&mut conn)?;
    }
    Ok(())
}

pub(crate) fn command(binary: &Path, home: &Path, url: &str, prefix: &str) -> Command {
    let mut cmd = Command::new(binary);
    cmd.env("GLEITZEIT_HOME", home)
        .env("NO_COLOR", "1")
        .env("REDIS_URL", url)
        .env("GLEITZEIT_REDIS_PREFIX", prefix)
        .env("GLEITZEIT_BACKEND", "redis")
        .env("GLEITZEIT_PORT", "1");
    cmd
}

fn fan(n: usize, method: &str, params: &str) -> String {
    let mut yaml = String::from("name: cluster fan\ntasks:\n");
    for i in 0..n {
        yaml.push_str(&format!("  - {{id: t{i}, method: {method}{params}}}\n"));
    }
    yaml
}

/// Runs every cluster scenario; empty when Redis does not answer.
pub fn run(binary: &Path, dir: &Path, quick: bool) -> Result<Vec<Value>> {
    let Some(url) = redis_url("the scale-out scenarios") else {
        return Ok(Vec::new());
    };
    let (noop_n, sleep_n) = if quick { (2_000, 200) } else { (20_000, 2_000) };
    let worker_counts: &[usize] = if quick { &[2] } else { &[1, 2, 4] };
    let mut results = Vec::new();
    for &workers in worker_counts {
        results.push(scenario(
            binary,
            dir,
            &url,
            &format!("cluster_noop_{noop_n}_{workers}w"),
            &fan(noop_n, "noop", ""),
            noop_n,
            workers,
            None,
        )?);
        results.push(scenario(
            binary,
            dir,
            &url,
            &format!("cluster_sleep10ms_{sleep_n}_{workers}w"),
            &fan(
                sleep_n,
                "python/execute",
                ", parameters: {code: 'import time; time.sleep(0.01); result = 1'}",
            ),
            sleep_n,
            workers,
            Some(0.010),
        )?);
    }
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn scenario(
    binary: &Path,
    dir: &Path,
    url: &str,
    name: &str,
    yaml: &str,
    tasks: usize,
    workers: usize,
    task_seconds: Option<f64>,
) -> Result<Value> {
    let prefix = format!("gz-bench-{}-{name}", std::process::id());
    clear(url, &prefix)?;
    let home = dir.join(format!("home-{name}"));
    std::fs::create_dir_all(&home)?;
    // As many warm Python processes as slots, so a worker can run its 16
    // sleeping tasks at once (the default pool is one per CPU).
    std::fs::write(
        home.join("config.yaml"),
        format!("providers:\n  python:\n    workers: {SLOTS}\n"),
    )?;
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml)?;
    let mut started = Workers(Vec::new());
    for _ in 0..workers {
        let mut child = command(binary, &home, url, &prefix)
            .args(["worker", "--concurrency", &SLOTS.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start a worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        started.0.push(child);
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line.starts_with("Worker ") => {}
            other => bail!("worker did not start: {other:?}"),
        }
        std::thread::spawn(move || for _ in lines {});
    }
    let clock = Instant::now();
    let output = command(binary, &home, url, &prefix)
        .args(["--json", "run", "--quiet"])
        .arg(&file)
        .stderr(Stdio::null())
        .output()
        .context("cannot run the scheduler")?;
    let wall_ms = clock.elapsed().as_secs_f64() * 1000.0;
    drop(started);
    clear(url, &prefix)?;
    if !output.status.success() {
        bail!("{name}: the workflow did not complete");
    }
    let workflow_ms = serde_json::from_slice::<Value>(&output.stdout)
        .ok()
        .and_then(|v| v["duration_ms"].as_f64())
        .unwrap_or(wall_ms);
    let per_second = tasks as f64 / (workflow_ms.max(1.0) / 1000.0);
    // No-op: the whole per-task time is overhead. Sleeping tasks: the wall
    // time beyond what the workers' slots would need if dispatch were free,
    // per task.
    let overhead_us = match task_seconds {
        None => workflow_ms * 1000.0 / tasks as f64,
        Some(s) => {
            let ideal_ms = (tasks as f64 / (workers * SLOTS) as f64).ceil() * s * 1000.0;
            (workflow_ms - ideal_ms).max(0.0) * 1000.0 / tasks as f64
        }
    };
    println!(
        "{:<34} {:>7} tasks  {} worker(s) × {SLOTS}  workflow {:>8.1} ms  {:>9.0} tasks/s  overhead {:>7.1} µs/task",
        name, tasks, workers, workflow_ms, per_second, overhead_us
    );
    Ok(json!({
        "scenario": name,
        "tasks": tasks,
        "workers": workers,
        "slots_per_worker": SLOTS,
        "workflow_ms": workflow_ms,
        "wall_ms": (wall_ms * 100.0).round() / 100.0,
        "tasks_per_second": per_second.round(),
        "overhead_us_per_task": (overhead_us * 10.0).round() / 10.0,
    }))
}
