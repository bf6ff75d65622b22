//! Fair share under hostile load: while one client submits a workflow of N
//! tasks (and, once it ran, four clients replay every stored event from the
//! start), another samples `/health` and submits one-task workflows. Reports
//! their latency (p50/p99) idle and under load, how long the heavy workflow
//! took, and the server's peak RSS — at N = 1,000, 10,000 and 100,000
//! (`--quick`: 2,000).

use crate::http::{client_builder, free_port, init_auth, percentile, round, ServerProcess};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SMALL: &str = "name: small\ntasks:\n  - {id: a, method: function/call, parameters: {name: sum, args: {numbers: [1, 2]}}}\n";

fn heavy(n: usize) -> String {
    let mut text = String::with_capacity(n * 80);
    text.push_str("name: heavy\ntasks:\n");
    for i in 0..n {
        text.push_str(&format!(
            "  - {{id: t{i}, method: function/call, parameters: {{name: sum, args: {{numbers: [{i}, 1]}}}}}}\n"
        ));
    }
    text
}

#[derive(Default)]
struct Samples {
    health: Vec<f64>,
    submit: Vec<f64>,
}

impl Samples {
    fn summary(&mut self) -> Value {
        let mut out = json!({});
        for (name, values) in [("health", &mut self.health), ("submit", &mut self.submit)] {
            values.sort_by(f64::total_cmp);
            if values.is_empty() {
                continue;
            }
            out[format!("{name}_p50_ms")] = json!(round(percentile(values, 0.5), 2));
            out[format!("{name}_p99_ms")] = json!(round(percentile(values, 0.99), 2));
            out[format!("{name}_samples")] = json!(values.len());
        }
        out
    }
}

/// Samples `/health` every 20 ms and a one-task submit every 100 ms until
/// `stop` is set.
async fn sample(base: String, stop: Arc<AtomicBool>) -> Result<Samples> {
    let client = client_builder().build()?;
    let mut samples = Samples::default();
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        client
            .get(format!("{base}/health"))
            .send()
            .await?
            .error_for_status()?;
        samples
            .health
            .push(started.elapsed().as_secs_f64() * 1000.0);
        if tick.is_multiple_of(5) {
            let started = Instant::now();
            client
                .post(format!("{base}/api/v1/workflows"))
                .body(SMALL)
                .send()
                .await?
                .error_for_status()?;
            samples
                .submit
                .push(started.elapsed().as_secs_f64() * 1000.0);
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(samples)
}

/// Waits for the workflow's final event on a stream filtered to it (a
/// snapshot poll would read all N tasks each time and skew the figures).
async fn wait_finished(base: &str, id: &str) -> Result<()> {
    use futures_util::StreamExt;
    let response = client_builder()
        .build()?
        .get(format!(
            "{base}/api/v1/events?workflow_id={id}&types=workflow_completed,workflow_failed,workflow_cancelled&after=0"
        ))
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk?));
        if seen.contains("workflow_completed") {
            return Ok(());
        }
        if seen.contains("workflow_failed") || seen.contains("workflow_cancelled") {
            bail!("the heavy workflow did not complete: {seen}");
        }
    }
    bail!("the event stream ended before the heavy workflow finished")
}

/// Reads the whole event log from the start, as fast as it arrives, until
/// `stop`; returns how many bytes came.
async fn replay(base: String, stop: Arc<AtomicBool>) -> Result<u64> {
    use futures_util::StreamExt;
    let response = client_builder()
        .build()?
        .get(format!("{base}/api/v1/events?after=0"))
        .send()
        .await?
        .error_for_status()?;
    let mut bytes = 0u64;
    let mut body = response.bytes_stream();
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), body.next()).await {
            Ok(Some(chunk)) => bytes += chunk?.len() as u64,
            Ok(None) => break,
            Err(_) => {}
        }
    }
    Ok(bytes)
}

fn one(binary: &Path, dir: &Path, n: usize) -> Result<Value> {
    let home = format!("home-fair-{n}");
    std::fs::create_dir_all(dir.join(&home))?;
    std::fs::write(
        dir.join(&home).join("config.yaml"),
        // About 90 bytes a task: 100,000 tasks are a 9 MB body.
        format!(
            "limits:\n  max_tasks: {}\nserver:\n  max_body_bytes: {}\n",
            n.max(100_000),
            (n * 128).max(4 * 1024 * 1024)
        ),
    )?;
    init_auth(binary, &dir.join(&home))?;
    let port = free_port()?;
    let mut server = ServerProcess::start_in(binary, dir, &home, port)?;
    let base = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async {
        // Idle figures first.
        let stop = Arc::new(AtomicBool::new(false));
        let idle = tokio::spawn(sample(base.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let mut idle = idle.await??;

        // The heavy submit and its run, sampled throughout.
        let stop = Arc::new(AtomicBool::new(false));
        let loaded = tokio::spawn(sample(base.clone(), stop.clone()));
        let started = Instant::now();
        let answer: gleitzeit_api::workflows::SubmitResponse = client_builder()
            .build()?
            .post(format!("{base}/api/v1/workflows"))
            .body(heavy(n))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let submit_s = started.elapsed().as_secs_f64();
        let id = answer.workflow_id;
        wait_finished(&base, &id).await?;
        let run_s = started.elapsed().as_secs_f64();
        // Four replays of everything stored, still sampled.
        let replay_stop = Arc::new(AtomicBool::new(false));
        let replays: Vec<_> = (0..4)
            .map(|_| tokio::spawn(replay(base.clone(), replay_stop.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        replay_stop.store(true, Ordering::Relaxed);
        let mut replayed = 0;
        for r in replays {
            replayed += r.await??;
        }
        stop.store(true, Ordering::Relaxed);
        let mut loaded = loaded.await??;
        Ok::<Value, anyhow::Error>(json!({
            "heavy_submit_s": round(submit_s, 2),
            "heavy_run_s": round(run_s, 2),
            "replayed_mb": round(replayed as f64 / 1e6, 1),
            "idle": idle.summary(),
            "under_load": loaded.summary(),
        }))
    });
    let (_, peak_kb) = server.terminate()?;
    let mut result = result?;
    result["name"] = json!(format!("fairness_{n}_task_workflow_plus_replays"));
    result["server_peak_rss_mb"] = json!(peak_kb / 1024);
    println!(
        "{:<44} heavy {n} tasks: submit {:.2} s, run {:.2} s | /health p99 idle {} ms, loaded {} ms | submit p99 idle {} ms, loaded {} ms | server {} MB",
        result["name"].as_str().unwrap_or(""),
        result["heavy_submit_s"].as_f64().unwrap_or(0.0),
        result["heavy_run_s"].as_f64().unwrap_or(0.0),
        result["idle"]["health_p99_ms"],
        result["under_load"]["health_p99_ms"],
        result["idle"]["submit_p99_ms"],
        result["under_load"]["submit_p99_ms"],
        result["server_peak_rss_mb"],
    );
    Ok(result)
}

pub fn run(binary: &Path, dir: &Path, quick: bool, sizes: &[usize]) -> Result<Vec<Value>> {
    let sizes: Vec<usize> = if quick { vec![2_000] } else { sizes.to_vec() };
    sizes.into_iter().map(|n| one(binary, dir, n)).collect()
}
