//! One module per command; `dispatch` maps the parsed command to it and turns
//! its result into an exit code.

pub mod auth;
pub mod batch;
pub mod cache;
pub mod cluster;
pub mod config_cmd;
pub mod errors;
pub mod exec;
pub mod functions;
pub mod init;
pub mod inspect;
pub mod monitor;
pub mod observe;
pub mod progress;
pub mod providers;
pub mod run;
pub mod serve;
pub mod submit;
pub mod validate;

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
        Command::Resume(args) => run::resume(&ctx, args).await,
        Command::Validate(args) => validate::run(&ctx, args),
        Command::Exec(args) => exec::run(&ctx, args).await,
        Command::Init(args) => init::run(args),
        Command::Discover(args) => batch::discover(&ctx, args),
        Command::Monitor(args) => monitor::run(&ctx, args).await,
        Command::Status(args) | Command::System(crate::SystemCommand::Status(args)) => {
            inspect::status(&ctx, args).await
        }
        Command::List(args) | Command::Workflow(WorkflowCommand::List(args)) => {
            inspect::list(&ctx, args).await
        }
        Command::Get(args)
        | Command::Workflow(WorkflowCommand::Get(args) | WorkflowCommand::Status(args)) => {
            inspect::get(&ctx, args).await
        }
        Command::Cancel(args) | Command::Workflow(WorkflowCommand::Cancel(args)) => {
            inspect::cancel(&ctx, args).await
        }
        Command::Submit(args) | Command::Workflow(WorkflowCommand::Submit(args)) => {
            submit::run(&ctx, args).await
        }
        Command::Workflow(WorkflowCommand::Resume(args)) => run::resume(&ctx, args).await,
        Command::Worker(args) => cluster::worker(&ctx, args).await,
        Command::Nodes => cluster::nodes(&ctx).await,
        Command::DeadLetters(cmd) => cluster::dead_letters(&ctx, cmd).await,
        Command::Logs(args) => observe::logs(&ctx, args).await,
        Command::Events(args) => observe::events(&ctx, args).await,
        Command::Watch(command) => observe::watch(&ctx, command).await,
        Command::Stats(args) => observe::stats(&ctx, args).await,
        Command::Inspect(command) => observe::inspect(&ctx, command).await,
        Command::Health(args) => observe::health(&ctx, args).await,
        Command::Auth(command) => auth::run(&ctx, command).await,
        Command::Cache(command) => cache::run(&ctx, command).await,
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
        Command::Components(args) => cluster::components(&ctx, args).await,
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

/// Reads a file a user named, with GZ5001/5002 errors that name it.
pub fn read_user_file(path: &std::path::Path) -> Result<String, GzError> {
    use gleitzeit_core::ErrorCode;
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
            GzError::new(
                ErrorCode::FileUnreadable,
                format!("{} is not UTF-8 text", path.display()),
            )
            .at(path.display().to_string())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(GzError::new(
            ErrorCode::FileNotFound,
            format!("file {} does not exist", path.display()),
        )
        .at(path.display().to_string())),
        Err(e) => Err(GzError::new(
            ErrorCode::FileUnreadable,
            format!("cannot read {}: {e}", path.display()),
        )
        .at(path.display().to_string())),
    }
}
