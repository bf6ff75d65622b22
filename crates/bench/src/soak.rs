//! Soak: workflows submitted over the API to `gleitzeit serve` on the Redis
//! backend while two worker nodes run them and one of them is SIGKILLed (and
//! a fresh one started) every second (0.7 s with `--quick`). Afterwards every
//! workflow is read back: its state, each task's result, and how often each
//! task's completion was recorded. Reports throughput, latency from submit to finish (p50,
//! p99), peak memory of the server and of the workers, and lost tasks, which
//! must be 0 (the run fails otherwise).
//!
//! Full: 10,000 workflows (`scripts/soak.sh`); `--quick`: 300, in CI.
//! Bounded: it gives up after a time limit and reports what was unfinished.

use anyhow::{bail, Context, Result};
use gleitzeit_core::events::EventPayload;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{clear, command, redis_url};
use crate::http::{free_port, percentile, round};

const CLIENTS: usize = 16;
const SLOTS: usize = 16;

/// Two chained function calls; every tenth workflow adds a Python step, so
/// the workers' process pools are killed mid-task too.
fn workflow(with_python: bool) -> String {
    let mut yaml = String::from(
        "name: soak\ninputs:\n  n: 0\ntasks:\n  - id: a\n    method: function/call\n    parameters: {name: sum, args: {numbers: [\"${inputs.n}\", 1]}}\n  - id: b\n    method: function/call\n    dependencies: [a]\n    parameters: {name: sum, args: {numbers: [\"${a.result}\", 1]}}\n",
    );
    if with_python {
        yaml.push_str("  - id: c\n    method: python/execute\n    dependencies: [b]\n    parameters: {code: \"result = ${b.result} * 2\"}\n");
    }
    yaml
}

/// What workflow `n` must end with, task by task.
fn expected(n: usize) -> Vec<(&'static str, u64)> {
    let n = n as u64;
    let mut tasks = vec![("a", n + 1), ("b", n + 2)];
    if n.is_multiple_of(10) {
        tasks.push(("c", (n + 2) * 2));
    }
    tasks
}

/// Peak resident memory of a live process, from the kernel (KiB).
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}

struct Cluster {
    binary: PathBuf,
    home: PathBuf,
    url: String,
    prefix: String,
    server: Option<Child>,
    workers: Mutex<Vec<Child>>,
    started_workers: AtomicUsize,
    worker_peak_kb: AtomicUsize,
}

impl Cluster {
    fn spawn(&self, args: &[&str], first_line: &str) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.home.join("soak.log"))?;
        let mut child = command(&self.binary, &self.home, &self.url, &self.prefix)
            .env("GLEITZEIT_NODE_TIMEOUT", "3")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start gleitzeit {args:?}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line.starts_with(first_line) => {
                std::thread::spawn(move || for _ in lines {});
                Ok(child)
            }
            other => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("gleitzeit {args:?} did not start: {other:?}")
            }
        }
    }

    fn start_worker(&self) -> Result<()> {
        let k = self.started_workers.fetch_add(1, Ordering::Relaxed);
        let child = self.spawn(
            &[
                "worker",
                "--id",
                &format!("soak-{k}"),
                "--concurrency",
                &SLOTS.to_string(),
                "--heartbeat",
                "0.5",
                "--reclaim-after",
                "2",
            ],
            "Worker ",
        )?;
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        Ok(())
    }

    fn note_worker_peak(&self, child: &Child) {
        self.worker_peak_kb
            .fetch_max(peak_rss_kb(child.id()) as usize, Ordering::Relaxed);
    }

    /// SIGKILLs the oldest worker and starts another in its place.
    fn kill_one(&self) -> Result<()> {
        let victim = {
            let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
            if workers.is_empty() {
                return Ok(());
            }
            workers.remove(0)
        };
        let mut victim = victim;
        self.note_worker_peak(&victim);
        let _ = victim.kill();
        let _ = victim.wait();
        self.start_worker()
    }
}

impl Drop for Cluster {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let workers = std::mem::take(self.workers.get_mut().unwrap_or_else(|p| p.into_inner()));
        for mut child in workers.into_iter().chain(self.server.take()) {
            // SAFETY: signalling our own child; SIGTERM lets it leave cleanly.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        let _ = clear(&self.url, &self.prefix);
    }
}

/// Submits workflows 0..total from `CLIENTS` clients; returns id → n.
async fn submit_all(base: &str, total: usize) -> Result<HashMap<String, usize>> {
    let next = Arc::new(AtomicUsize::new(0));
    let plain = Arc::new(workflow(false));
    let python = Arc::new(workflow(true));
    let clients = (0..CLIENTS).map(|_| {
        let (next, plain, python) = (next.clone(), plain.clone(), python.clone());
        let url = format!("{base}/api/v1/workflows");
        async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?;
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(ids);
                }
                let body = if n.is_multiple_of(10) {
                    &python
                } else {
                    &plain
                };
                let response = client
                    .post(format!("{url}?input=n={n}"))
                    .header("content-type", "application/yaml")
                    .body(body.to_string())
                    .send()
                    .await?;
                let status = response.status();
                let answer: Value = response.json().await?;
                if status != reqwest::StatusCode::CREATED {
                    bail!("submit answered {status}: {answer}");
                }
                let answer: gleitzeit_api::workflows::SubmitResponse =
                    serde_json::from_value(answer).context("submit answer")?;
                ids.push((answer.workflow_id, n));
            }
        }
    });
    let per_client = futures_util::future::try_join_all(clients).await?;
    Ok(per_client.into_iter().flatten().collect())
}

async fn finished_count(client: &reqwest::Client, base: &str) -> Result<u64> {
    let stats: gleitzeit_api::stats::Stats = client
        .get(format!("{base}/api/v1/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(["completed", "failed", "cancelled"]
        .iter()
        .filter_map(|s| stats.workflows_by_state.get(*s))
        .sum())
}

/// One workflow read back: whether it is whole, its latency, and tasks whose
/// completion was recorded other than once.
struct Checked {
    whole: bool,
    missing_tasks: usize,
    latency_ms: Option<f64>,
    finished_ms: Option<i64>,
    created_ms: i64,
    recorded_twice: usize,
}

async fn check(client: &reqwest::Client, base: &str, id: &str, n: usize) -> Result<Checked> {
    let view: gleitzeit_api::views::WorkflowView = client
        .get(format!("{base}/api/v1/workflows/{id}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let page: gleitzeit_api::workflows::EventPage = client
        .get(format!("{base}/api/v1/workflows/{id}/events?limit=1000"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut completions: HashMap<String, usize> = HashMap::new();
    for event in page.events {
        if let EventPayload::TaskCompleted(done) = event.payload {
            *completions.entry(done.task.task_id).or_default() += 1;
        }
    }
    let mut missing_tasks = 0;
    for (task_id, value) in expected(n) {
        let ok = view.tasks.iter().any(|t| {
            t.id == task_id
                && t.state == gleitzeit_core::TaskState::Completed
                && t.result.as_ref().and_then(Value::as_u64) == Some(value)
        }) && completions.get(task_id) == Some(&1);
        if !ok {
            missing_tasks += 1;
        }
    }
    let created_ms = view.created_ms;
    let finished_ms = view.finished_ms;
    Ok(Checked {
        whole: view.state == gleitzeit_core::WorkflowState::Completed && missing_tasks == 0,
        missing_tasks,
        latency_ms: finished_ms.map(|f| (f - created_ms) as f64),
        finished_ms,
        created_ms,
        recorded_twice: completions.values().filter(|c| **c > 1).count(),
    })
}

async fn check_all(base: &str, ids: &HashMap<String, usize>) -> Result<Vec<Checked>> {
    let queue: Arc<Mutex<Vec<(String, usize)>>> = Arc::new(Mutex::new(
        ids.iter().map(|(id, n)| (id.clone(), *n)).collect(),
    ));
    let readers = (0..CLIENTS).map(|_| {
        let queue = queue.clone();
        async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?;
            let mut checked = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let Some((id, n)) = next else {
                    return anyhow::Ok(checked);
                };
                checked.push(check(&client, base, &id, n).await?);
            }
        }
    });
    let per_reader = futures_util::future::try_join_all(readers).await?;
    Ok(per_reader.into_iter().flatten().collect())
}

pub fn run(binary: &Path, dir: &Path, quick: bool) -> Result<Option<Value>> {
    let Some(url) = redis_url("the soak") else {
        return Ok(None);
    };
    let (total, kill_every, limit) = if quick {
        (300, Duration::from_millis(700), Duration::from_secs(180))
    } else {
        (10_000, Duration::from_secs(1), Duration::from_secs(900))
    };
    let home = dir.join("home-soak");
    std::fs::create_dir_all(&home)?;
    std::fs::write(
        home.join("config.yaml"),
        format!(
            "providers:\n  python:\n    workers: 4\nexecution:\n  max_concurrent_tasks: {}\n",
            2 * SLOTS
        ),
    )?;
    let prefix = format!("gz-soak-{}", std::process::id());
    clear(&url, &prefix)?;
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let mut cluster = Cluster {
        binary: binary.to_path_buf(),
        home: home.clone(),
        url,
        prefix,
        server: None,
        workers: Mutex::new(Vec::new()),
        started_workers: AtomicUsize::new(0),
        worker_peak_kb: AtomicUsize::new(0),
    };
    cluster.server = Some(cluster.spawn(
        &["serve", "--port", &port.to_string(), "--no-auth"],
        "Gleitzeit server listening",
    )?);
    cluster.start_worker()?;
    cluster.start_worker()?;
    let cluster = Arc::new(cluster);

    // The killer: one worker every `kill_every`, a fresh one in its place.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (cluster, stop, kills) = (cluster.clone(), stop.clone(), kills.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut next = Instant::now() + kill_every;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                if Instant::now() >= next {
                    cluster.kill_one()?;
                    kills.fetch_add(1, Ordering::Relaxed);
                    next = Instant::now() + kill_every;
                }
            }
            Ok(())
        })
    };

    let rt = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let outcome = rt.block_on(async {
        let ids = submit_all(&base, total).await?;
        let submit_s = started.elapsed().as_secs_f64();
        let client = reqwest::Client::new();
        let deadline = started + limit;
        while finished_count(&client, &base).await? < total as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::Ok((ids, submit_s))
    });
    stop.store(true, Ordering::Relaxed);
    killer
        .join()
        .map_err(|_| anyhow::anyhow!("the killer thread panicked"))??;
    let (ids, submit_s) = outcome?;
    let checked = rt.block_on(check_all(&base, &ids))?;

    let server_peak_kb = cluster.server.as_ref().map_or(0, |s| peak_rss_kb(s.id()));
    for worker in cluster
        .workers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        cluster.note_worker_peak(worker);
    }
    let worker_peak_kb = cluster.worker_peak_kb.load(Ordering::Relaxed);
    let tasks: usize = (0..total).map(|n| expected(n).len()).sum();
    let lost_tasks: usize = checked.iter().map(|c| c.missing_tasks).sum();
    let unfinished = checked.iter().filter(|c| !c.whole).count();
    let recorded_twice: usize = checked.iter().map(|c| c.recorded_twice).sum();
    let mut latencies: Vec<f64> = checked.iter().filter_map(|c| c.latency_ms).collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let first = checked.iter().map(|c| c.created_ms).min().unwrap_or(0);
    let last = checked
        .iter()
        .filter_map(|c| c.finished_ms)
        .max()
        .unwrap_or(first);
    let span_s = ((last - first) as f64 / 1000.0).max(0.001);
    let p = |q| {
        if latencies.is_empty() {
            0.0
        } else {
            percentile(&latencies, q)
        }
    };
    let result = json!({
        "scenario": format!("soak_{total}_workflows_redis_2_workers_killed"),
        "workflows": total,
        "tasks": tasks,
        "workers": 2,
        "worker_kills": kills.load(Ordering::Relaxed),
        "kill_every_s": kill_every.as_secs_f64(),
        "submit_s": round(submit_s, 2),
        "all_finished_s": round(span_s, 2),
        "workflows_per_second": round(total as f64 / span_s, 1),
        "tasks_per_second": round(tasks as f64 / span_s, 1),
        "latency_p50_ms": p(0.5),
        "latency_p99_ms": p(0.99),
        "latency_max_ms": latencies.last().copied().unwrap_or(0.0),
        "server_peak_rss_mb": round(server_peak_kb as f64 / 1024.0, 1),
        "worker_peak_rss_mb": round(worker_peak_kb as f64 / 1024.0, 1),
        "unfinished_workflows": unfinished,
        "lost_tasks": lost_tasks,
        "results_recorded_twice": recorded_twice,
    });
    println!(
        "{:<34} {total:>7} workflows ({tasks} tasks), 2 workers, {} killed  {:>6.1} s  {:>6.0} wf/s {:>6.0} tasks/s  latency p50 {:.0} ms p99 {:.0} ms  server {:.0} MB, worker {:.0} MB  lost {lost_tasks}, twice {recorded_twice}",
        result["scenario"].as_str().unwrap_or_default(),
        kills.load(Ordering::Relaxed),
        span_s,
        total as f64 / span_s,
        tasks as f64 / span_s,
        p(0.5),
        p(0.99),
        server_peak_kb as f64 / 1024.0,
        worker_peak_kb as f64 / 1024.0,
    );
    if lost_tasks > 0 || unfinished > 0 || recorded_twice > 0 {
        bail!(
            "soak: {unfinished} workflows unfinished, {lost_tasks} tasks lost, {recorded_twice} results recorded twice; log in {}",
            home.join("soak.log").display()
        );
    }
    Ok(Some(result))
}
