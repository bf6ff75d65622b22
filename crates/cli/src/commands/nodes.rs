//! `gleitzeit nodes`: worker nodes with their labels, load and heartbeat.

use crate::context::Context;
use crate::output::{self, heartbeat_age, node_labels};
use crate::service;
use gleitzeit_core::GzError;
use serde_json::json;

pub async fn run(ctx: &Context) -> Result<u8, GzError> {
    let nodes = service::connect(ctx).await?.nodes().await?;
    if ctx.global.json {
        println!("{}", json!({"nodes": nodes}));
        return Ok(output::EXIT_OK);
    }
    if nodes.is_empty() {
        if ctx.backend() == "redis" {
            println!("No worker nodes. Start one with `gleitzeit worker --backend redis`.");
        } else {
            println!("No worker nodes: this setup runs tasks in-process. Scale out with `gleitzeit serve --backend redis` and `gleitzeit worker`.");
        }
        return Ok(output::EXIT_OK);
    }
    println!(
        "{:<28} {:<7} {:<18} {:<22} {:>9} {:>9} {:>7}  HEARTBEAT",
        "NODE", "STATE", "LABELS", "SERVES", "LOAD", "DONE", "FAILED"
    );
    for node in &nodes {
        println!(
            "{:<28} {:<7} {:<18} {:<22} {:>9} {:>9} {:>7}  {}",
            node.id,
            node.state,
            node_labels(node),
            node.capabilities.join(","),
            format!("{}/{}", node.running, node.concurrency),
            node.completed,
            node.failed,
            heartbeat_age(node.heartbeat_ms)
        );
    }
    Ok(output::EXIT_OK)
}
