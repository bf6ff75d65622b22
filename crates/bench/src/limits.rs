//! The rate limiter: what one admission costs, and whether a fan-out over
//! limited endpoints finishes as soon as the limits allow.
//!
//! Two endpoints (names for the same instant peer) limited to 50 and 100
//! requests per second take 600 LLM tasks. A sliding window admits 150 at
//! once and then 150 more each second, so the last request can leave after
//! floor(599 / 150) = 3 s; the figure is the workflow's time over that.

use anyhow::{Context, Result};
use gleitzeit_providers::llm::limits::{Limiter, RateLimits, SharedLimits, SharedScope};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const TASKS: usize = 600;
const RATES: [f64; 2] = [50.0, 100.0];

fn admission_cost() -> f64 {
    // Limits high enough never to refuse: the cost of the bookkeeping alone,
    // with a full window (the worst case: eviction and scans over entries).
    let limiter = Limiter::new(&RateLimits {
        requests_per_minute: Some(1e9),
        tokens_per_minute: Some(1e12),
        ..RateLimits::default()
    })
    .expect("limits");
    let start = Instant::now();
    let n = 200_000;
    for i in 0..n {
        let ticket = limiter
            .try_admit(Instant::now(), 100.0)
            .unwrap_or_else(|_| panic!("refused at {i}"));
        limiter.correct(ticket, 120.0);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// The same through Redis, as worker nodes count limits: one script call per
/// admission and one per correction, on loopback. `None` without Redis.
fn shared_admission_cost(quick: bool) -> Result<Option<f64>> {
    let Some(url) = crate::cluster::redis_url("the shared rate limiter") else {
        return Ok(None);
    };
    let prefix = format!("gz-bench-rl-{}", std::process::id());
    let shared = gleitzeit_cluster::RedisLimits::new(&url, &prefix);
    let scopes = [SharedScope {
        key: "endpoint:bench".into(),
        limits: RateLimits {
            requests_per_minute: Some(1e9),
            tokens_per_minute: Some(1e12),
            ..RateLimits::default()
        },
    }];
    let n = if quick { 2_000 } else { 20_000 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let elapsed = rt.block_on(async {
        // The first call connects; it is not what a call costs.
        shared.try_admit(&scopes, 1.0).await?.ok();
        let start = Instant::now();
        for i in 0..n {
            let ticket = shared
                .try_admit(&scopes, 100.0)
                .await?
                .unwrap_or_else(|_| panic!("refused at {i}"));
            shared.correct(&scopes, ticket, 120.0).await?;
        }
        let elapsed = start.elapsed();
        let mut conn = redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        anyhow::Ok(elapsed)
    })?;
    Ok(Some(elapsed.as_secs_f64() * 1e6 / n as f64))
}

pub fn run(binary: &Path, dir: &Path, url: &str, quick: bool) -> Result<Value> {
    let per_admission_us = admission_cost();
    let shared_us = shared_admission_cost(quick)?;
    let tasks = if quick { 300 } else { TASKS };
    let config = dir.join("limits-config.yaml");
    std::fs::write(
        &config,
        format!(
            "llm:\n  health_interval_secs: 0\n  endpoints:\n    - {{name: slow, url: '{url}', kind: openai, max_concurrent: 32, requests_per_second: {}}}\n    - {{name: fast, url: '{url}', kind: openai, max_concurrent: 32, requests_per_second: {}}}\n",
            RATES[0], RATES[1]
        ),
    )?;
    let file = dir.join("limits-fanout.yaml");
    std::fs::write(
        &file,
        format!("name: limited\ntasks:\n  - id: ask\n    method: llm/chat\n    for_each: range({tasks})\n    parameters: {{model: peer, prompt: 'q ${{item}}', max_tokens: 8}}\n"),
    )?;
    let json = crate::llm::run_ephemeral(
        binary,
        &config,
        &file,
        &dir.join("home-limits"),
        "rate-limited fan-out",
    )?;
    let wall_ms = json["duration_ms"].as_f64().context("duration_ms")?;
    let total: f64 = RATES.iter().sum();
    let theoretical = Duration::from_secs_f64(((tasks - 1) as f64 / total).floor());
    let ratio = wall_ms / 1000.0 / theoretical.as_secs_f64();
    let result = json!({
        "scenario": "rate_limits",
        "limiter_us_per_admission": (per_admission_us * 1000.0).round() / 1000.0,
        "shared_limiter_us_per_admission": shared_us.map(|us| (us * 10.0).round() / 10.0),
        "tasks": tasks,
        "limits_rps": RATES,
        "theoretical_s": theoretical.as_secs_f64(),
        "wall_ms": wall_ms.round(),
        "wall_over_theoretical": (ratio * 1000.0).round() / 1000.0,
    });
    if let Some(us) = shared_us {
        println!("rate limits shared through Redis: {us:.1} µs per admission and correction");
    }
    println!(
        "rate limits: {per_admission_us:.2} µs per admission; {tasks} tasks over {:?} rps in {:.2} s (limits allow {:.0} s, ratio {ratio:.3})",
        RATES,
        wall_ms / 1000.0,
        theoretical.as_secs_f64()
    );
    Ok(result)
}
