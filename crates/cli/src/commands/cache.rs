//! `gleitzeit cache clear|stats`: the stored results of tasks with `cache:`.

use crate::context::Context;
use crate::output;
use clap::Subcommand;
use gleitzeit_core::GzError;
use gleitzeit_store::now_ms;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Remove every stored result
    Clear,
    /// Number of stored results and their size
    Stats,
}

pub async fn run(ctx: &Context, command: CacheCommand) -> Result<u8, GzError> {
    let store = ctx.open_store(false).await?;
    match command {
        CacheCommand::Clear => {
            let removed = store.cache_clear().await?;
            if ctx.global.json {
                println!("{}", json!({"ok": true, "removed": removed}));
            } else {
                println!("Removed {removed} cached result{}", plural(removed));
            }
        }
        CacheCommand::Stats => {
            let stats = store.cache_stats(now_ms()).await?;
            if ctx.global.json {
                println!("{}", json!(stats));
            } else {
                println!(
                    "{} cached result{} ({} bytes), {} expired",
                    stats.entries,
                    plural(stats.entries),
                    stats.bytes,
                    stats.expired
                );
            }
        }
    }
    Ok(output::EXIT_OK)
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
