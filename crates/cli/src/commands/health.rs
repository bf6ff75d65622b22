//! `gleitzeit health`: the health check; exit 0 healthy, 1 degraded, 2
//! unhealthy.

use crate::context::Context;
use crate::output::{self, Format, Paint};
use crate::service;
use clap::Args;
use gleitzeit_core::GzError;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Print nothing; the exit code says it: 0 healthy, 1 degraded, 2 unhealthy
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

pub async fn run(ctx: &Context, args: HealthArgs) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    let report = service.health().await?;
    service.finish().await;
    let source = service.location();
    let status = report["status"].as_str().unwrap_or("unhealthy").to_string();
    let exit = match status.as_str() {
        "healthy" => 0,
        "degraded" => 1,
        _ => 2,
    };
    if args.quiet {
        return Ok(exit);
    }
    if ctx.global.json || matches!(args.format, Format::Json) {
        println!("{report}");
        return Ok(exit);
    }
    let paint = Paint(output::color_stdout());
    let verdict = match exit {
        0 => paint.green(&status),
        1 => paint.yellow(&status),
        _ => paint.red(&status),
    };
    println!("{} {verdict} ({source})", paint.bold("Gleitzeit"));
    if report.get("version").is_none() {
        // A server tells reasons and providers only to a valid key.
        println!("  (details need an API key: `gleitzeit auth login` or GLEITZEIT_API_KEY)");
    }
    for reason in report["reasons"].as_array().into_iter().flatten() {
        println!("  - {}", reason.as_str().unwrap_or(""));
    }
    if let Some(providers) = report["providers"].as_object() {
        for (name, p) in providers {
            println!(
                "  {:<10} {}{}",
                name,
                p["status"].as_str().unwrap_or(""),
                p["reason"]
                    .as_str()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(exit)
}
