//! `gleitzeit errors list|show|search|stats|validate`: the GZ code registry.

use crate::output::{self, Paint};
use clap::Subcommand;
use gleitzeit_core::errors::{Domain, ErrorDef, REGISTRY};
use gleitzeit_core::{ErrorCode, GzError};
use std::collections::BTreeMap;

#[derive(Subcommand, Debug)]
pub enum ErrorsCommand {
    /// List error codes
    List {
        /// Only this domain (infrastructure, execution, workflow, auth, storage, network, system, cli)
        #[arg(long)]
        domain: Option<String>,
        /// Only this severity or worse (low, medium, high, critical)
        #[arg(long)]
        severity: Option<String>,
    },
    /// Show one code with its resolution hint
    Show { code: String },
    /// Find codes by words in their name, message or hint
    Search { query: Vec<String> },
    /// Count codes by domain and severity
    Stats,
    /// Check the registry for duplicate codes and missing hints
    Validate,
}

fn severity_rank(text: &str) -> Option<u8> {
    match text.to_ascii_lowercase().as_str() {
        "low" => Some(0),
        "medium" => Some(1),
        "high" => Some(2),
        "critical" => Some(3),
        _ => None,
    }
}

fn print_defs(defs: &[&ErrorDef], json: bool) {
    if json {
        println!("{}", serde_json::to_string(defs).unwrap_or_default());
        return;
    }
    let paint = Paint(output::color_stdout());
    for d in defs {
        println!(
            "{}  {:<9} {:<14} {}",
            paint.bold(d.code),
            d.severity.as_str(),
            d.domain.as_str(),
            d.message
        );
    }
    println!("{} codes", defs.len());
}

pub fn run(cmd: &ErrorsCommand, json: bool) -> Result<u8, GzError> {
    match cmd {
        ErrorsCommand::List { domain, severity } => {
            let min = match severity {
                Some(s) => Some(severity_rank(s).ok_or_else(|| {
                    GzError::new(
                        ErrorCode::InvalidArgument,
                        format!("unknown severity `{s}`"),
                    )
                    .with_hint("Severities: low, medium, high, critical.")
                })?),
                None => None,
            };
            let domain = match domain {
                Some(text) => Some(Domain::parse(text).ok_or_else(|| {
                    GzError::new(
                        ErrorCode::InvalidArgument,
                        format!("unknown domain `{text}`"),
                    )
                    .with_hint(format!(
                        "Domains: {}.",
                        Domain::ALL.map(|d| d.as_str()).join(", ")
                    ))
                })?),
                None => None,
            };
            let defs: Vec<&ErrorDef> = REGISTRY
                .iter()
                .filter(|d| domain.is_none_or(|x| d.domain == x))
                .filter(|d| {
                    min.is_none_or(|m| severity_rank(d.severity.as_str()).unwrap_or(0) >= m)
                })
                .collect();
            print_defs(&defs, json);
        }
        ErrorsCommand::Show { code } => {
            let Some(code) = ErrorCode::parse(code) else {
                return Err(GzError::new(ErrorCode::InvalidArgument, format!("`{code}` is not a known error code"))
                    .with_hint("`gleitzeit errors list` shows every code; `gleitzeit errors search WORD` finds one."));
            };
            let d = code.def();
            if json {
                println!("{}", serde_json::to_string(d).unwrap_or_default());
                return Ok(output::EXIT_OK);
            }
            let paint = Paint(output::color_stdout());
            println!(
                "{} {}",
                paint.red(&format!("❌ Error {}:", d.code)),
                d.message
            );
            println!("{} {}", paint.yellow("💡 Resolution:"), d.hint);
            println!("   name       {}", d.name);
            println!("   domain     {}", d.domain.as_str());
            println!("   severity   {}", d.severity.as_str());
            println!(
                "   retryable  {}",
                if d.retryable {
                    "yes (retried automatically under a retry policy)"
                } else {
                    "no (permanent)"
                }
            );
        }
        ErrorsCommand::Search { query } => {
            let words: Vec<String> = query.iter().map(|w| w.to_ascii_lowercase()).collect();
            let defs: Vec<&ErrorDef> = REGISTRY
                .iter()
                .filter(|d| {
                    let hay = format!(
                        "{} {} {} {} {}",
                        d.code,
                        d.name,
                        d.message,
                        d.hint,
                        d.domain.as_str()
                    )
                    .to_ascii_lowercase();
                    words.iter().all(|w| hay.contains(w.as_str()))
                })
                .collect();
            print_defs(&defs, json);
        }
        ErrorsCommand::Stats => {
            let count = |domain: Domain| REGISTRY.iter().filter(|d| d.domain == domain).count();
            let severities = ["low", "medium", "high", "critical"];
            let by_severity: BTreeMap<&str, usize> = severities
                .iter()
                .map(|s| {
                    (
                        *s,
                        REGISTRY
                            .iter()
                            .filter(|d| d.severity.as_str() == *s)
                            .count(),
                    )
                })
                .collect();
            let retryable = REGISTRY.iter().filter(|d| d.retryable).count();
            if json {
                let domains: BTreeMap<&str, serde_json::Value> = Domain::ALL
                    .iter()
                    .map(|d| {
                        let (low, high) = d.range();
                        (
                            d.as_str(),
                            serde_json::json!({"codes": count(*d), "range": format!("GZ{low}-GZ{high}"), "covers": d.covers()}),
                        )
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"total": REGISTRY.len(), "domains": domains, "severities": by_severity, "retryable": retryable})
                );
            } else {
                println!(
                    "{} error codes in {} domains; {retryable} of them are retryable (a retry may succeed, so task retries apply)",
                    REGISTRY.len(),
                    Domain::ALL.len()
                );
                println!("\nBy domain (codes in its range: what they are about):");
                for domain in Domain::ALL {
                    let (low, high) = domain.range();
                    println!(
                        "  {:<15} {:>3}  GZ{low}-GZ{high}  {}",
                        domain.as_str(),
                        count(domain),
                        domain.covers()
                    );
                }
                println!("\nBy severity (how much of Gleitzeit the error stops):");
                for severity in severities {
                    println!("  {severity:<15} {:>3}", by_severity[severity]);
                }
            }
        }
        ErrorsCommand::Validate => {
            let mut seen = std::collections::HashSet::new();
            let problems: Vec<String> = REGISTRY
                .iter()
                .filter_map(|d| {
                    if !seen.insert(d.code) {
                        Some(format!("{} is defined twice", d.code))
                    } else if d.hint.is_empty() || d.message.is_empty() {
                        Some(format!("{} lacks a message or hint", d.code))
                    } else {
                        None
                    }
                })
                .collect();
            if problems.is_empty() {
                println!(
                    "✓ {} error codes, all unique, all with message and hint",
                    REGISTRY.len()
                );
            } else {
                for p in &problems {
                    println!("✗ {p}");
                }
                return Ok(output::EXIT_WORKFLOW_FAILED);
            }
        }
    }
    Ok(output::EXIT_OK)
}
