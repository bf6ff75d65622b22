//! One module per command; `dispatch` maps the parsed command to it and turns
//! its result into an exit code.

pub mod auth;
pub mod cache;
pub mod cancel;
pub mod config_cmd;
pub mod dead_letters;
pub mod discover;
pub mod errors;
pub mod events;
pub mod exec;
pub mod functions;
pub mod get;
pub mod health;
pub mod init;
pub mod inspect;
pub mod list;
pub mod logs;
pub mod monitor;
pub mod nodes;
pub mod providers;
pub mod resume;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod stats;
pub mod status;
pub mod submit;
pub mod validate;
pub mod watch;
pub mod worker;

use crate::context::Context;
use crate::output::{self, print_error};
use crate::{Cli, Command, WorkflowCommand};
use gleitzeit_core::GzError;

pub async fn dispatch(cli: Cli) -> u8 {
    let global = cli.global.clone();
    // Commands that need no config or store.
    match &cli.command {
        Command::Errors(cmd) => return finish(errors::run(cmd, global.json), global.json),
        Command::Functions(cmd) => return finish(functions::run(cmd, global.json), global.json),
        _ => {}
    }
    let creating_config = matches!(
        &cli.command,
        Command::Config(config_cmd::ConfigArgs {
            action: Some(
                config_cmd::ConfigAction::Init { .. }
                    | config_cmd::ConfigAction::Set { .. }
                    | config_cmd::ConfigAction::Path
            )
        })
    );
    let ctx = match Context::load(&global, creating_config) {
        Ok(ctx) => ctx,
        Err(e) => return finish(Err(e), global.json),
    };
    let result = match cli.command {
        Command::Run(args) => run::run(&ctx, *args).await,
        Command::Resume(args) => resume::run(&ctx, args).await,
        Command::Validate(args) => validate::run(&ctx, args),
        Command::Exec(args) => exec::run(&ctx, args).await,
        Command::Init(args) => init::run(args),
        Command::Discover(args) => discover::run(&ctx, args),
        Command::Monitor(args) => monitor::run(&ctx, args).await,
        Command::Status(args) | Command::System(crate::SystemCommand::Status(args)) => {
            status::run(&ctx, args).await
        }
        Command::List(args) | Command::Workflow(WorkflowCommand::List(args)) => {
            list::run(&ctx, args).await
        }
        Command::Get(args)
        | Command::Workflow(WorkflowCommand::Get(args) | WorkflowCommand::Status(args)) => {
            get::run(&ctx, args).await
        }
        Command::Cancel(args) | Command::Workflow(WorkflowCommand::Cancel(args)) => {
            cancel::run(&ctx, args).await
        }
        Command::Submit(args) | Command::Workflow(WorkflowCommand::Submit(args)) => {
            submit::run(&ctx, args).await
        }
        Command::Workflow(WorkflowCommand::Resume(args)) => resume::run(&ctx, args).await,
        Command::Worker(args) => worker::run(&ctx, args).await,
        Command::Nodes => nodes::run(&ctx).await,
        Command::DeadLetters(cmd) => dead_letters::run(&ctx, cmd).await,
        Command::Logs(args) => logs::run(&ctx, args).await,
        Command::Events(args) => events::run(&ctx, args).await,
        Command::Watch(command) => watch::run(&ctx, command).await,
        Command::Stats(args) => stats::run(&ctx, args).await,
        Command::Inspect(command) => inspect::run(&ctx, command).await,
        Command::Health(args) => health::run(&ctx, args).await,
        Command::Auth(command) => auth::run(&ctx, command).await,
        Command::Cache(command) => cache::run(&ctx, command).await,
        Command::Schedule(command) => schedule::run(&ctx, command).await,
        Command::Config(args) => config_cmd::run(&ctx, args),
        Command::Serve(args)
        | Command::Dev {
            command: Some(crate::DevCommand::Start(args)),
            ..
        }
        | Command::Dev {
            command: None,
            args,
        } => serve::run(&ctx, args).await,
        Command::Components(args) => worker::components(&ctx, args).await,
        Command::Providers { command } => providers::run(&ctx, command).await,
        Command::Errors(_) | Command::Functions(_) => Ok(output::EXIT_OK),
    };
    finish(result, global.json)
}

fn finish(result: Result<u8, GzError>, json: bool) -> u8 {
    match result {
        Ok(code) => code,
        Err(error) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": output::json_error(&error) })
                );
            } else {
                print_error(&error);
            }
            output::exit_code(&error)
        }
    }
}
