//! `gleitzeit providers [list|health]`: what can run tasks, and LLM endpoint state.

use crate::context::Context;
use crate::output::{self, Paint};
use clap::Subcommand;
use gleitzeit_core::GzError;
use gleitzeit_providers::llm::EndpointStatus;
use gleitzeit_providers::Provider;
use serde_json::json;

#[derive(Subcommand, Debug, Clone)]
pub enum ProvidersCommand {
    /// Providers, their methods, and LLM endpoints with models, load and latency
    List,
    /// Check every LLM endpoint now; exit 0 all healthy, 1 degraded, 2 none healthy
    Health,
    /// One provider: its methods (with param schemas for custom ones), transport and health
    Show { name: String },
}

async fn show(ctx: &Context, name: &str) -> Result<u8, GzError> {
    let registry = ctx.registry();
    let Some(provider) = registry.providers().find(|p| p.protocol() == name).cloned() else {
        let mut known: Vec<&str> = registry.providers().map(|p| p.protocol()).collect();
        known.sort();
        return Err(GzError::new(
            gleitzeit_core::ErrorCode::InvalidArgument,
            format!("no provider `{name}`"),
        )
        .with_hint(format!("Providers: {}.", known.join(", "))));
    };
    let health = provider.health().await;
    let spec = ctx
        .custom_providers
        .iter()
        .find(|(s, _)| s.name == name)
        .map(|(s, _)| s.clone());
    registry.shutdown().await;
    if ctx.global.json {
        println!(
            "{}",
            json!({"protocol": name, "methods": provider.methods(), "health": health, "spec": spec})
        );
        return Ok(output::EXIT_OK);
    }
    let paint = Paint(output::color_stdout());
    println!(
        "{} {:?}{}",
        paint.bold(name),
        health.status,
        health
            .reason
            .as_deref()
            .map(|r| format!(" — {r}"))
            .unwrap_or_default()
    );
    if let Some(spec) = &spec {
        if let Some(d) = &spec.description {
            println!("  {d}");
        }
        match &spec.transport.url {
            Some(url) => println!("  transport  JSON-RPC over HTTP {url}"),
            None => println!(
                "  transport  JSON-RPC over stdio: {}",
                spec.transport.command.join(" ")
            ),
        }
        println!(
            "  limits     {} connections, {} waiting, {} s per call",
            spec.transport.max_connections, spec.transport.max_queue, spec.transport.timeout
        );
    }
    for method in provider.methods() {
        println!(
            "  {} {}",
            paint.bold(&method.method),
            paint.dim(&method.description)
        );
        let short = method.method.split_once('/').map_or("", |(_, m)| m);
        if let Some(schema) = spec
            .as_ref()
            .and_then(|s| s.methods.get(short))
            .and_then(|m| m.params.as_ref())
        {
            println!("    params {}", schema);
        }
    }
    Ok(output::EXIT_OK)
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
    if let ProvidersCommand::Show { name } = &cmd {
        return show(ctx, name).await;
    }
    let registry = ctx.registry();
    let llm = ctx.llm_provider()?;
    let endpoints = llm.check_all().await;
    let healthy = endpoints.iter().filter(|e| e.healthy == Some(true)).count();
    let exit = match cmd {
        ProvidersCommand::List => output::EXIT_OK,
        ProvidersCommand::Health if healthy == endpoints.len() => 0,
        ProvidersCommand::Health if healthy > 0 => 1,
        ProvidersCommand::Health => 2,
        ProvidersCommand::Show { .. } => output::EXIT_OK,
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
