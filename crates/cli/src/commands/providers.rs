//! `gleitzeit providers [list|health]`: what can run tasks, and LLM endpoint state.

use crate::context::Context;
use crate::output::{self, Paint};
use clap::Subcommand;
use gleitzeit_core::GzError;
use gleitzeit_providers::llm::EndpointStatus;
use gleitzeit_providers::Provider;
use serde_json::json;

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum ProvidersCommand {
    /// Providers, their methods, and LLM endpoints with models, load and latency
    List,
    /// Check every LLM endpoint now; exit 0 all healthy, 1 degraded, 2 none healthy
    Health,
}

fn endpoint_line(e: &EndpointStatus, paint: &Paint) -> String {
    let state = match (e.healthy, e.circuit) {
        (Some(false), _) => paint.red("down"),
        (_, gleitzeit_providers::llm::Circuit::Open) => paint.red("circuit open"),
        (Some(true), _) => paint.green("healthy"),
        (None, _) => paint.dim("unchecked"),
    };
    let kind = e
        .kind
        .map(|k| format!("{k:?}").to_lowercase())
        .unwrap_or_else(|| "auto".into());
    let latency = e
        .latency_ms
        .map(|l| format!("{l:.0} ms"))
        .unwrap_or_else(|| "-".into());
    let mut line = format!(
        "  {:<14} {:<30} {:<7} {state}  prio {}  load {}/{}  latency {latency}",
        e.name, e.url, kind, e.priority, e.in_flight, e.max_concurrent
    );
    if !e.models.is_empty() {
        line.push_str(&format!("\n  {:<14} models: {}", "", e.models.join(", ")));
    }
    if !e.tags.is_empty() {
        line.push_str(&format!("  tags: {}", e.tags.join(", ")));
    }
    if e.api_key {
        line.push_str("  (API key set)");
    }
    if let Some(error) = &e.last_error {
        line.push_str(&format!("\n  {:<14} {}", "", paint.dim(error)));
    }
    line
}

pub async fn run(ctx: &Context, cmd: Option<ProvidersCommand>) -> Result<u8, GzError> {
    let cmd = cmd.unwrap_or(ProvidersCommand::List);
    let registry = ctx.registry();
    let llm = ctx.llm_provider()?;
    let endpoints = llm.check_all().await;
    let healthy = endpoints.iter().filter(|e| e.healthy == Some(true)).count();
    let exit = match cmd {
        ProvidersCommand::List => output::EXIT_OK,
        ProvidersCommand::Health if healthy == endpoints.len() => 0,
        ProvidersCommand::Health if healthy > 0 => 1,
        ProvidersCommand::Health => 2,
    };
    let mcp_catalog = if ctx.config.mcp_servers.is_empty() {
        None
    } else {
        let mcp = gleitzeit_providers::mcp::McpProvider::new(ctx.config.mcp_servers.clone());
        let catalog = mcp.catalog().await;
        mcp.shutdown().await;
        Some(catalog)
    };
    let mut providers: Vec<_> = registry.providers().collect();
    providers.sort_by_key(|p| p.protocol());
    if ctx.global.json {
        let list: Vec<_> = providers
            .iter()
            .map(|p| json!({"protocol": p.protocol(), "methods": p.methods()}))
            .collect();
        println!(
            "{}",
            json!({
                "providers": list,
                "mcp_servers": mcp_catalog,
                "llm": {"strategy": ctx.config.llm.strategy.as_str(), "endpoints": endpoints, "aliases": ctx.config.llm.models},
                "healthy_endpoints": healthy,
            })
        );
        return Ok(exit);
    }
    let paint = Paint(output::color_stdout());
    if matches!(cmd, ProvidersCommand::List) {
        for provider in &providers {
            let methods: Vec<String> = provider.methods().into_iter().map(|m| m.method).collect();
            println!(
                "{} {}",
                paint.bold(provider.protocol()),
                paint.dim(&methods.join(", "))
            );
        }
        println!();
    }
    println!(
        "{} ({}, {healthy}/{} healthy)",
        paint.bold("LLM endpoints"),
        ctx.config.llm.strategy.as_str(),
        endpoints.len()
    );
    for endpoint in &endpoints {
        println!("{}", endpoint_line(endpoint, &paint));
    }
    if let Some(catalog) = &mcp_catalog {
        println!("{}", paint.bold("MCP servers"));
        for (name, entry) in catalog.as_object().into_iter().flatten() {
            match entry.get("tools").and_then(|t| t.as_array()) {
                Some(tools) => println!(
                    "  {name:<14} {}",
                    tools
                        .iter()
                        .filter_map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => println!(
                    "  {name:<14} {}",
                    paint.red(entry["error"].as_str().unwrap_or("unavailable"))
                ),
            }
        }
    }
    if !ctx.config.llm.models.is_empty() {
        println!("{}", paint.bold("model aliases"));
        for (alias, targets) in &ctx.config.llm.models {
            println!("  {alias} -> {}", targets.join(", "));
        }
    }
    llm.shutdown().await;
    Ok(exit)
}
