//! `gleitzeit dead-letters list|retry|drop`: tasks that killed worker nodes.

use crate::context::Context;
use crate::output::{self, heartbeat_age};
use crate::service;
use clap::Subcommand;
use gleitzeit_cluster::admin::Admin;
use gleitzeit_core::{ErrorCode, GzError};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum DeadLettersCommand {
    /// Tasks that killed workers, and queue entries no worker could read
    List,
    /// Put a task back: clears its dead letter and reopens its failed workflow
    Retry { id: String },
    /// Forget a dead letter
    Drop { id: String },
}

pub async fn run(ctx: &Context, command: DeadLettersCommand) -> Result<u8, GzError> {
    let admin = Admin::connect(&ctx.redis_url(), ctx.redis_prefix()).await?;
    match command {
        DeadLettersCommand::List => {
            let letters = admin.dead_letters().await?;
            if ctx.global.json {
                println!("{}", json!({"dead_letters": letters}));
                return Ok(output::EXIT_OK);
            }
            if letters.is_empty() {
                println!("No dead letters.");
                return Ok(output::EXIT_OK);
            }
            for letter in &letters {
                let task = match (&letter.workflow_id, &letter.task_id) {
                    (Some(wf), Some(task)) => {
                        format!("{wf}/{task} attempt {}", letter.attempt.unwrap_or(0))
                    }
                    _ => "(no task: unreadable entry)".into(),
                };
                println!("{}  {}  {}", letter.id, task, heartbeat_age(letter.at_ms));
                println!("    {}", letter.reason);
                if !letter.holders.is_empty() {
                    println!("    held by: {}", letter.holders.join(" → "));
                }
            }
            Ok(output::EXIT_OK)
        }
        DeadLettersCommand::Drop { id } => {
            let letter = admin.drop_letter(&id).await?;
            if ctx.global.json {
                println!("{}", json!({"dropped": letter}));
            } else {
                println!("Dropped dead letter {}.", letter.id);
            }
            Ok(output::EXIT_OK)
        }
        DeadLettersCommand::Retry { id } => {
            let letter = admin.retry_letter(&id).await?;
            let workflow_id = letter.workflow_id.clone().unwrap_or_default();
            let store = ctx.open_redis_store().await?;
            let runtime = ctx.local_runtime(store);
            let reopened = match runtime.reopen(&workflow_id).await {
                Ok(_) => true,
                Err(e) if e.code == ErrorCode::WorkflowNotResumable => false,
                Err(e) => return Err(e),
            };
            let resumed = if reopened {
                // Only a server runs a workflow on its own once it is resumed.
                service::connect(ctx)
                    .await?
                    .resume(&workflow_id)
                    .await
                    .is_ok_and(|r| r.on_server.is_some())
            } else {
                false
            };
            if ctx.global.json {
                println!(
                    "{}",
                    json!({"retried": letter, "reopened": reopened, "resumed": resumed})
                );
            } else if resumed {
                println!(
                    "Retrying {}: workflow {workflow_id} resumed on the server.",
                    letter.id
                );
            } else if reopened {
                println!("Retrying {}: workflow {workflow_id} reopened; run `gleitzeit resume {workflow_id} --backend redis` (or start a server) to run it.", letter.id);
            } else {
                println!("Cleared dead letter {}; workflow {workflow_id} is still running and picks the task up on `gleitzeit resume`.", letter.id);
            }
            Ok(output::EXIT_OK)
        }
    }
}
