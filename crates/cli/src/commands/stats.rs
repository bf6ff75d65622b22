//! `gleitzeit stats`: throughput, durations and failure rates over a window,
//! as a table with charts, JSON or CSV.

use crate::context::Context;
use crate::output::{self, format_ms, Format, Paint};
use crate::service;
use clap::Args;
use gleitzeit_api::stats::TimelineBucket;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::json;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Window: minutes (60) or with a unit (30m, 1h, 2d)
    #[arg(long, default_value = "60")]
    pub range: String,
}

pub fn parse_range(text: &str) -> Result<u64, GzError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "m"),
    };
    let factor = match unit {
        "m" | "min" => 1,
        "h" => 60,
        "d" => 24 * 60,
        _ => 0,
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 && factor > 0 => Ok(n * factor),
        _ => Err(GzError::new(
            ErrorCode::InvalidArgument,
            format!("--range `{text}` is not a time window"),
        )
        .with_hint("Use minutes (60) or a number with m, h or d (30m, 1h, 2d).")),
    }
}

pub async fn run(ctx: &Context, args: StatsArgs) -> Result<u8, GzError> {
    let range = parse_range(&args.range)?;
    let stats = service::connect(ctx).await?.stats(range).await?;
    let format = if ctx.global.json {
        Format::Json
    } else {
        args.format
    };
    let window = &stats.window;
    match format {
        Format::Json => println!("{}", json!(stats)),
        Format::Csv => {
            println!("method,count,avg_ms,p50_ms,p95_ms,max_ms");
            for (method, m) in &window.methods {
                println!(
                    "{method},{},{},{},{},{}",
                    m.count, m.avg_ms, m.p50_ms, m.p95_ms, m.max_ms
                );
            }
        }
        Format::Table => {
            let paint = Paint(output::color_stdout());
            println!("{}", paint.bold("Gleitzeit statistics"));
            println!(
                "  workflows    {}",
                output::counts(&stats.workflows_by_state)
            );
            println!("  tasks        {}", output::counts(&stats.tasks_by_state));
            println!("  queue depth  {}", stats.queue_depth);
            println!("{}", paint.bold(&format!("Last {}", format_range(range))));
            println!(
                "  finished     {} tasks ({:.1}/min), failure rate {:.1}%",
                window.tasks_finished,
                window.tasks_per_minute,
                window.failure_rate * 100.0
            );
            print!("{}", charts(&window.timeline, &paint));
            let usage = &window.usage;
            if usage.total.total_tokens > 0 {
                println!(
                    "  LLM tokens   {} prompt + {} completion in {} calls, {}",
                    usage.total.prompt_tokens,
                    usage.total.completion_tokens,
                    usage.total.llm_calls,
                    output::cost_text(&usage.total)
                );
                for (kind, by) in [("model", &usage.by_model), ("endpoint", &usage.by_endpoint)] {
                    for (name, u) in by {
                        println!(
                            "    {kind:<8} {name:<24} {:>8} tokens in {:>4} calls  {}",
                            u.total_tokens,
                            u.llm_calls,
                            output::cost_text(u)
                        );
                    }
                }
            }
            if !window.methods.is_empty() {
                println!(
                    "  {:<24} {:>6} {:>9} {:>9} {:>9} {:>9}",
                    "METHOD", "COUNT", "AVG", "P50", "P95", "MAX"
                );
                for (method, m) in &window.methods {
                    println!(
                        "  {:<24} {:>6} {:>9} {:>9} {:>9} {:>9}",
                        method,
                        m.count,
                        format_ms(m.avg_ms),
                        format_ms(m.p50_ms),
                        format_ms(m.p95_ms),
                        format_ms(m.max_ms)
                    );
                }
            }
        }
    }
    Ok(output::EXIT_OK)
}

/// One character per bucket, scaled to the largest.
fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().flatten().cloned().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if max <= 0.0 => BARS[0],
            Some(v) => BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect()
}

/// Throughput, failures and durations over the window, as sparklines.
fn charts(buckets: &[TimelineBucket], paint: &Paint) -> String {
    let Some(first) = buckets.first() else {
        return String::new();
    };
    if buckets.iter().all(|b| b.finished == 0) {
        return String::new();
    }
    let finished: Vec<Option<f64>> = buckets.iter().map(|b| Some(b.finished as f64)).collect();
    let failed: Vec<Option<f64>> = buckets.iter().map(|b| Some(b.failed as f64)).collect();
    let durations: Vec<Option<f64>> = buckets
        .iter()
        .map(|b| b.avg_ms.map(|ms| ms as f64))
        .collect();
    let max = |v: &[Option<f64>]| v.iter().flatten().cloned().fold(0.0, f64::max);
    let minutes = first.minutes;
    let per = if minutes >= 1.0 {
        format!("{minutes:.0} min")
    } else {
        format!("{:.0} s", minutes * 60.0)
    };
    let mut text = format!(
        "  throughput   {}  {}\n",
        paint.cyan(&sparkline(&finished)),
        paint.dim(&format!(
            "tasks finished per {per}, peak {}",
            max(&finished)
        ))
    );
    if max(&failed) > 0.0 {
        text.push_str(&format!(
            "  failures     {}  {}\n",
            paint.red(&sparkline(&failed)),
            paint.dim(&format!("peak {}", max(&failed)))
        ));
    }
    text.push_str(&format!(
        "  durations    {}  {}\n",
        paint.yellow(&sparkline(&durations)),
        paint.dim(&format!(
            "average per bucket, peak {}",
            format_ms(max(&durations) as i64)
        ))
    ));
    text
}

fn format_range(minutes: u64) -> String {
    match minutes {
        m if m % (24 * 60) == 0 => format!("{} day(s)", m / (24 * 60)),
        m if m % 60 == 0 => format!("{} hour(s)", m / 60),
        m => format!("{m} minute(s)"),
    }
}
