//! `gleitzeit status` (also `system status`): the server's health and load,
//! or the local store, running workflows and providers at a glance.

use crate::context::Context;
use crate::output::{self, Paint};
use crate::service::{self, StatusReport};
use clap::Args;
use gleitzeit_core::GzError;
use serde_json::json;

#[derive(Args, Debug)]
pub struct StatusArgs {}

pub async fn run(ctx: &Context, _args: StatusArgs) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    let report = service.status().await?;
    let paint = Paint(output::color_stdout());
    match report {
        StatusReport::Server {
            base,
            health,
            stats,
            running,
        } => {
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"server": base, "health": health, "stats": stats, "running": running})
                );
                return Ok(output::EXIT_OK);
            }
            println!("{}", paint.bold("Gleitzeit status"));
            match health.report() {
                Some(report) => {
                    println!(
                        "  server     {base} ({}, up {} s)",
                        report.status.as_str(),
                        report.uptime_seconds
                    );
                    for reason in &report.reasons {
                        println!("             - {reason}");
                    }
                }
                // A server tells its uptime and reasons only to a valid key.
                None => println!("  server     {base} ({})", health.status().as_str()),
            }
            println!("  workflows  {}", output::counts(&stats.workflows_by_state));
            println!("  tasks      {}", output::counts(&stats.tasks_by_state));
            println!("  queue      {}", stats.queue_depth);
            if !running.is_empty() {
                println!("  running:");
                for w in running {
                    println!("    {}  {}  {}/{}", w.id, w.name, w.completed, w.total);
                }
            }
        }
        StatusReport::Store {
            backend,
            location,
            workflows_by_state,
            tasks_by_state,
            running,
            python,
        } => {
            if ctx.global.json {
                println!(
                    "{}",
                    json!({
                        "backend": backend,
                        "location": location,
                        "workflows_by_state": workflows_by_state.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                        "tasks_by_state": tasks_by_state.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                        "running": running.iter().map(|(w, live)| json!({"id": w.id, "name": w.name, "live": live, "completed": w.completed, "total": w.total})).collect::<Vec<_>>(),
                        "providers": {
                            "python": match &python { Ok(v) => json!({"available": true, "version": v}), Err(e) => json!({"available": false, "error": output::json_error(e)}) },
                            "function": {"available": true, "functions": gleitzeit_functions::all().len()},
                        },
                    })
                );
                return Ok(output::EXIT_OK);
            }
            println!("{}", paint.bold("Gleitzeit status"));
            println!("  store      {backend} ({location})");
            let fmt = |pairs: &[(String, u64)]| {
                if pairs.is_empty() {
                    "none".to_string()
                } else {
                    pairs
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            println!("  workflows  {}", fmt(&workflows_by_state));
            println!("  tasks      {}", fmt(&tasks_by_state));
            match &python {
                Ok(version) => println!("  python     {} {version}", paint.green("available")),
                Err(e) => println!(
                    "  python     {} {} {}",
                    paint.red("unavailable"),
                    e.code,
                    e.message
                ),
            }
            println!("  functions  {} built-in", gleitzeit_functions::all().len());
            if !running.is_empty() {
                println!("  running:");
                for (w, live) in running {
                    let note = if live {
                        ""
                    } else {
                        "  (interrupted — `gleitzeit resume` continues it)"
                    };
                    println!(
                        "    {}  {}  {}/{}{note}",
                        w.id, w.name, w.completed, w.total
                    );
                }
            }
        }
    }
    Ok(output::EXIT_OK)
}
