//! HTTP submit throughput: `gleitzeit serve` on a fresh SQLite store, one SSE
//! client following every event, and N one-task workflows submitted by 16
//! concurrent clients. Reports submit rate and latency, the time until all
//! workflows completed (counted from `workflow_completed` events on the SSE
//! client), the end-to-end rate and the event rate the SSE client received.

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use gleitzeit_core::events;
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const WORKFLOW: &str = "\
name: http-bench
tasks:
  - id: a
    method: function/call
    parameters: {name: sum, args: {numbers: [1, 2]}}
";

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub(crate) fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// The server runs as users run it: with API keys. The admin key made by
/// the latest `auth init` (each scenario's server has its own home) goes on
/// every request.
static API_KEY: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    let key = API_KEY.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(value) =
        key.and_then(|k| reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")).ok())
    {
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder().default_headers(headers)
}

pub(crate) fn init_auth(binary: &Path, home: &Path) -> Result<()> {
    let output = Command::new(binary)
        .args(["--json", "auth", "init"])
        .env("GLEITZEIT_HOME", home)
        .output()?;
    if !output.status.success() {
        bail!(
            "auth init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let answer: Value = serde_json::from_slice(&output.stdout)?;
    let key = answer["key"].as_str().context("no key from auth init")?;
    *API_KEY.write().unwrap_or_else(|p| p.into_inner()) = Some(key.to_string());
    Ok(())
}

pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The server process; killed if the benchmark fails before stopping it.
pub(crate) struct ServerProcess {
    child: Child,
    log: std::path::PathBuf,
    stopped: bool,
}

impl ServerProcess {
    pub(crate) fn start(binary: &Path, dir: &Path, port: u16) -> Result<ServerProcess> {
        Self::start_in(binary, dir, "home-http", port)
    }

    /// A server whose home (store, config, keys) is `dir/home`.
    pub(crate) fn start_in(
        binary: &Path,
        dir: &Path,
        home: &str,
        port: u16,
    ) -> Result<ServerProcess> {
        let log = dir.join(format!("{home}-serve.log"));
        let mut child = Command::new(binary)
            .args(["serve", "--port", &port.to_string()])
            .env("GLEITZEIT_HOME", dir.join(home))
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start {} serve", binary.display()))?;
        // Wait for the first line, then keep draining stdout on the thread so
        // the pipe never fills.
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        let mut server = ServerProcess {
            child,
            log,
            stopped: false,
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(Ok(line))) if line.starts_with("Gleitzeit server listening on http://") => {
                Ok(server)
            }
            other => {
                let _ = server.child.kill();
                let _ = server.child.wait();
                server.stopped = true;
                bail!(
                    "server did not start ({other:?}); its log:\n{}",
                    server.log_tail()
                )
            }
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then waits (at most 60 s) for the exit. Returns the exit code
    /// and the server's peak RSS in KiB.
    pub(crate) fn terminate(&mut self) -> Result<(i32, i64)> {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child, which has not been reaped yet.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            bail!("cannot send SIGTERM to the server");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut status = 0;
            // SAFETY: rusage is plain data filled by the kernel.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: waiting (without blocking) for our own child with valid pointers.
            let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if rc == pid {
                self.stopped = true;
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -libc::WTERMSIG(status)
                };
                return Ok((code, usage.ru_maxrss));
            }
            if rc < 0 {
                bail!("wait4 on the server failed");
            }
            if Instant::now() > deadline {
                bail!("server did not exit within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the SSE client saw.
#[derive(Default)]
struct SseCount {
    events: u64,
    bytes: u64,
    completed: usize,
    failed: usize,
    /// Ids that were not greater than the previous one (must stay 0).
    out_of_order: u64,
    /// When the last expected `workflow_completed` arrived.
    all_done: Option<Instant>,
}

/// Follows `/api/v1/events?after=0` until `expected` workflows finished (or
/// the stream ends). Returns once the response headers are in, so events are
/// not missed; the counting runs on a task.
async fn follow_events(
    base: &str,
    expected: usize,
) -> Result<tokio::task::JoinHandle<Result<SseCount>>> {
    let client = client_builder().build()?;
    let response = client
        .get(format!("{base}/api/v1/events?after=0"))
        .header("accept", "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    Ok(tokio::spawn(async move {
        let mut count = SseCount::default();
        let mut stream = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let mut last_id = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            count.bytes += chunk.len() as u64;
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let mut id = None;
                let mut kind = "";
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse::<u64>().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        kind = v.trim();
                    }
                }
                let Some(id) = id else { continue }; // keep-alive comment
                count.events += 1;
                if id <= last_id {
                    count.out_of_order += 1;
                }
                last_id = last_id.max(id);
                match kind {
                    events::WORKFLOW_COMPLETED => count.completed += 1,
                    events::WORKFLOW_FAILED | events::WORKFLOW_CANCELLED => count.failed += 1,
                    _ => {}
                }
            }
            if count.completed + count.failed >= expected {
                count.all_done = Some(Instant::now());
                break;
            }
        }
        Ok(count)
    }))
}

async fn wait_healthy(base: &str) -> Result<()> {
    let client = client_builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = client.get(format!("{base}/health")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{base}/health did not answer 200 within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits `total` workflows from `CLIENTS` clients; returns each latency (ms).
async fn submit_all(base: &str, total: usize) -> Result<Vec<f64>> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..CLIENTS).map(|_| {
        let next = next.clone();
        let url = format!("{base}/api/v1/workflows");
        async move {
            // One client (one connection) per worker, as separate callers would.
            let client = client_builder().timeout(Duration::from_secs(60)).build()?;
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/yaml")
                    .body(WORKFLOW)
                    .send()
                    .await?;
                let status = response.status();
                let body = response.bytes().await?;
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                if status != reqwest::StatusCode::CREATED {
                    bail!(
                        "submit answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            }
            anyhow::Ok(latencies)
        }
    });
    let per_worker = futures_util::future::try_join_all(workers).await?;
    Ok(per_worker.into_iter().flatten().collect())
}

async fn completed_count(base: &str) -> Result<usize> {
    let list: gleitzeit_api::workflows::WorkflowList = client_builder()
        .build()?
        .get(format!(
            "{base}/api/v1/workflows?state=completed&limit=1000"
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(list.workflows.len())
}

struct Measured {
    latencies: Vec<f64>,
    submit_ms: f64,
    complete_ms: f64,
    sse: SseCount,
    listed_completed: usize,
}

async fn drive(base: &str, total: usize) -> Result<Measured> {
    wait_healthy(base).await?;
    let follower = follow_events(base, total).await?;
    let started = Instant::now();
    let mut latencies = submit_all(base, total).await?;
    let submit_ms = started.elapsed().as_secs_f64() * 1000.0;
    let sse = match tokio::time::timeout(Duration::from_secs(300), follower).await {
        Ok(joined) => joined??,
        Err(_) => bail!(
            "not all {total} workflows completed within 300 s ({} listed completed)",
            completed_count(base).await.unwrap_or(0)
        ),
    };
    let Some(done) = sse.all_done else {
        bail!(
            "the SSE stream ended after {} workflow_completed events",
            sse.completed
        );
    };
    let complete_ms = done.duration_since(started).as_secs_f64() * 1000.0;
    let listed_completed = completed_count(base).await?;
    latencies.sort_by(|a, b| a.total_cmp(b));
    Ok(Measured {
        latencies,
        submit_ms,
        complete_ms,
        sse,
        listed_completed,
    })
}

pub fn run(binary: &Path, dir: &Path, total: usize) -> Result<Value> {
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    init_auth(binary, &dir.join("home-http"))?;
    let mut server = ServerProcess::start(binary, dir, port)?;
    let rt = tokio::runtime::Runtime::new()?;
    let measured = rt
        .block_on(drive(&base, total))
        .with_context(|| format!("server log:\n{}", server.log_tail()))?;
    drop(rt);
    let (exit_code, rss_kb) = server.terminate()?;
    let Measured {
        latencies,
        submit_ms,
        complete_ms,
        sse,
        listed_completed,
    } = measured;
    let submit_rate = total as f64 / (submit_ms / 1000.0);
    let e2e_rate = total as f64 / (complete_ms / 1000.0);
    let event_rate = sse.events as f64 / (complete_ms / 1000.0);
    let result = json!({
        "scenario": format!("http_submit_{total}_sse"),
        "workflows": total,
        "clients": CLIENTS,
        "submit_ms": round(submit_ms, 1),
        "submitted_workflows_per_second": round(submit_rate, 1),
        "submit_p50_ms": round(percentile(&latencies, 0.5), 2),
        "submit_p99_ms": round(percentile(&latencies, 0.99), 2),
        "submit_max_ms": round(latencies.last().copied().unwrap_or(0.0), 2),
        "all_completed_ms": round(complete_ms, 1),
        "end_to_end_workflows_per_second": round(e2e_rate, 1),
        "workflows_completed": sse.completed,
        "workflows_failed": sse.failed,
        "listed_completed": listed_completed,
        "sse_events": sse.events,
        "sse_bytes": sse.bytes,
        "sse_events_per_second": round(event_rate, 0),
        "sse_out_of_order": sse.out_of_order,
        "server_exit_code": exit_code,
        "server_peak_rss_mb": round(rss_kb as f64 / 1024.0, 1),
    });
    println!(
        "{:<34} {total:>7} workflows  {CLIENTS} clients  submit {:>7.0} wf/s (p50 {:.2} ms, p99 {:.2} ms)  all completed {:>8.1} ms  {:>7.0} wf/s end to end  SSE {} events {:.0}/s ({:.1} KB)  server RSS {:.1} MB, exit {exit_code}",
        result["scenario"].as_str().unwrap_or_default(),
        submit_rate,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        complete_ms,
        e2e_rate,
        sse.events,
        event_rate,
        sse.bytes as f64 / 1024.0,
        rss_kb as f64 / 1024.0,
    );
    if exit_code != 0 {
        bail!(
            "the server exited with {exit_code} after SIGTERM (expected 0); its log:\n{}",
            server.log_tail()
        );
    }
    if sse.failed > 0 || sse.out_of_order > 0 || listed_completed != total.min(1000) {
        println!(
            "  warning: {} failed/cancelled, {} out-of-order SSE ids, {listed_completed} listed completed",
            sse.failed, sse.out_of_order
        );
    }
    Ok(result)
}
