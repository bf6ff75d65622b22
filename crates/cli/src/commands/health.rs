//! `gleitzeit health`: the health check; exit 0 healthy, 1 degraded, 2
//! unhealthy.

use crate::context::Context;
use crate::output::{self, Format, Paint};
use crate::service;
use clap::Args;
use gleitzeit_api::health::HealthStatus;
use gleitzeit_core::GzError;
use serde_json::json;

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
    let answer = service.health().await?;
    service.finish().await;
    let source = service.location();
    let status = answer.status();
    let exit = match status {
        HealthStatus::Healthy => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Unhealthy => 2,
    };
    if args.quiet {
        return Ok(exit);
    }
    if ctx.global.json || matches!(args.format, Format::Json) {
        println!("{}", json!(answer));
        return Ok(exit);
    }
    let paint = Paint(output::color_stdout());
    let verdict = match status {
        HealthStatus::Healthy => paint.green(status.as_str()),
        HealthStatus::Degraded => paint.yellow(status.as_str()),
        HealthStatus::Unhealthy => paint.red(status.as_str()),
    };
    println!("{} {verdict} ({source})", paint.bold("Gleitzeit"));
    let Some(report) = answer.report() else {
        // A server tells reasons and providers only to a valid key.
        println!("  (details need an API key: `gleitzeit auth login` or GLEITZEIT_API_KEY)");
        return Ok(exit);
    };
    for reason in &report.reasons {
        println!("  - {reason}");
    }
    for (name, provider) in &report.providers {
        println!(
            "  {:<10} {}{}",
            name,
            provider.status.as_str(),
            provider
                .reason
                .as_deref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        );
    }
    Ok(exit)
}
