//! The `gleitzeit` command line: parses arguments once, builds the store, the
//! providers and the runtime from config, and hands off to one command module.
//! No workflow logic lives here.

// Two functions need libc calls the standard library does not offer (turning
// terminal echo off for a typed key, and a new session for a background run);
// each carries its own `allow` and nothing else may use `unsafe`.
#![deny(unsafe_code)]

mod batch;
mod client;
mod commands;
pub mod config;
mod context;
mod credentials;
mod eventlog;
mod launch;
pub mod output;
mod progress;
mod service;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// `--help` lists commands by what they are for; clap alone would print one
/// flat list with every alias. `help_lists_every_command_once` keeps this in
/// step with the `Command` enum.
const COMMAND_GROUPS: &str = "\
Run workflows:
  run           Run workflow files, a function (--function), a prompt (--text, --vision) or a folder (--batch-folder)
  resume        Continue an interrupted workflow (completed tasks are kept)
  validate      Check workflow files without running them
  init          Write a runnable workflow template NAME.yaml
  exec          Execute Python code directly and print its output
  discover      What a folder holds and which batch command fits it

Follow and inspect:
  list          Workflows, newest first
  get           One workflow with its tasks, results and errors
  status        Store, running workflows and providers at a glance (also: system status)
  cancel        Cancel a workflow
  monitor       Full-screen live dashboard (also: pro)
  logs          Workflow log lines; --follow keeps streaming
  events        Event stream; --json for scripts
  watch         Follow a workflow, a task or the queue
  stats         Throughput, durations and failure rates, with charts
  inspect       Everything about one workflow, task or node
  health        Health check; exit 0 healthy, 1 degraded, 2 unhealthy

Server and scale-out:
  serve         The server: REST API, web dashboard, live events (also: start, hub, dev, dev start)
  submit        Hand workflow files to the server (also: workflow submit|status|list|get|cancel|resume)
  schedule      Schedules and webhooks that start workflows: add, list, pause, resume, remove, run-now, backfill
  worker        A worker node taking tasks from Redis (also: components exec|all)
  nodes         Worker nodes: labels, load, heartbeat
  dead-letters  Tasks that killed worker nodes: list, retry, drop
  auth          API keys and users: init, login, status, logout, users, keys, audit

Reference and settings:
  providers     Providers and LLM endpoints: list, health, show
  functions     Built-in functions: list, show
  errors        The GZ error registry: list, show, search, stats, validate
  config        Show or change configuration
  cache         Stored results of tasks with `cache:`: stats, clear
  help          Help for a command (also: COMMAND --help)";

#[derive(Parser, Debug)]
#[command(
    name = "gleitzeit",
    version,
    help_template = "{about-with-newline}\n{usage-heading} {usage}\n\n{before-help}\n\nOptions:\n{options}{after-help}",
    before_help = COMMAND_GROUPS,
    about = "Local-first orchestrator for LLM workflows",
    long_about = "Gleitzeit runs DAGs of tasks (LLM calls, Python code, built-in functions) described in YAML, durably, on an embedded SQLite store.\n\nStart with `gleitzeit run examples/quickstart.yaml`."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// Config file [default: ~/.gleitzeit/config.yaml, or GLEITZEIT_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where workflows are stored: sqlite (default), memory, or redis (scale-out:
    /// tasks run on `gleitzeit worker` nodes)
    #[arg(long, global = true, value_name = "BACKEND")]
    pub backend: Option<String>,
    /// Redis for --backend redis [env: REDIS_URL; default redis://127.0.0.1:6379/0]
    #[arg(long, global = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// SQLite database file [default: ~/.gleitzeit/gleitzeit.db]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// A custom provider file (JSON-RPC 2.0; repeatable), besides
    /// ~/.gleitzeit/providers/*.yaml
    #[arg(long, global = true, value_name = "FILE")]
    pub provider: Vec<PathBuf>,
    /// Talk to this server (e.g. http://127.0.0.1:8765) [env: GLEITZEIT_SERVER]
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Use the local store even if a server is running
    #[arg(long, global = true, conflicts_with = "server")]
    pub local: bool,
    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Debug log output
    #[arg(long, global = true)]
    pub debug: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run workflow files (or a single built-in function) and wait for the result
    Run(Box<commands::run::RunArgs>),
    /// Continue a workflow that was interrupted (completed tasks are kept)
    Resume(commands::resume::ResumeArgs),
    /// Check workflow files without running them; reports every problem
    Validate(commands::validate::ValidateArgs),
    /// Execute Python code directly and print its output
    Exec(commands::exec::ExecArgs),
    /// Write a runnable workflow template NAME.yaml
    Init(commands::init::InitArgs),
    /// What a folder holds, by file type, and which batch command fits it
    Discover(commands::discover::DiscoverArgs),
    /// Show store statistics, running workflows and provider availability
    Status(commands::status::StatusArgs),
    /// List workflows, newest first
    List(commands::list::ListArgs),
    /// Show one workflow with its tasks, results and errors
    Get(commands::get::GetArgs),
    /// Cancel a workflow (running here, in another process, or not running)
    Cancel(commands::cancel::CancelArgs),
    /// Show or change configuration
    Config(commands::config_cmd::ConfigArgs),
    /// Providers and LLM endpoints: list them or check their health
    Providers {
        #[command(subcommand)]
        command: Option<commands::providers::ProvidersCommand>,
    },
    /// Hand workflow files to the server (or a background run) and return
    Submit(commands::submit::SubmitArgs),
    /// Workflow log lines: history, then new ones with --follow
    Logs(commands::logs::LogsArgs),
    /// Event stream (JSON lines with --json); --follow keeps streaming
    Events(commands::events::EventsArgs),
    /// Follow a workflow, a task or the queue until it finishes
    #[command(subcommand)]
    Watch(commands::watch::WatchCommand),
    /// Throughput, durations and failure rates (table, JSON or CSV)
    Stats(commands::stats::StatsArgs),
    /// Everything about one workflow, task or node
    #[command(subcommand)]
    Inspect(commands::inspect::InspectCommand),
    /// Full-screen live dashboard: workflows, tasks, tokens, providers, nodes (also: `pro`)
    #[command(alias = "pro")]
    Monitor(commands::monitor::MonitorArgs),
    /// Health check; exit 0 healthy, 1 degraded, 2 unhealthy
    Health(commands::health::HealthArgs),
    /// API keys and users for `serve`: init, login, status, logout, users, keys, audit
    #[command(subcommand)]
    Auth(commands::auth::AuthCommand),
    /// Stored results of tasks with `cache:`: clear, stats
    #[command(subcommand)]
    Cache(commands::cache::CacheCommand),
    /// Triggers that start workflows by themselves: add, list, pause, resume, remove, run-now, backfill
    #[command(subcommand)]
    Schedule(commands::schedule::ScheduleCommand),
    /// Workflow commands under one name (seed 002): submit, status, list, get, cancel, resume
    #[command(subcommand, hide = true)]
    Workflow(WorkflowCommand),
    /// System commands (seed 002): status
    #[command(subcommand, hide = true)]
    System(SystemCommand),
    /// Run the server: REST API, live events, and the runtime (also: `dev start`, `hub`)
    #[command(alias = "start", alias = "hub")]
    Serve(commands::serve::ServeArgs),
    /// Run tasks from the Redis queues as a worker node (scale-out)
    Worker(commands::worker::WorkerArgs),
    /// Worker nodes: labels, capabilities, load, last heartbeat
    Nodes,
    /// Tasks that killed worker nodes: list, retry, drop
    #[command(subcommand)]
    DeadLetters(commands::dead_letters::DeadLettersCommand),
    /// The server with its in-process runtime, as `gleitzeit dev` / `dev start` (seeds 000, 002)
    #[command(args_conflicts_with_subcommands = true, hide = true)]
    Dev {
        #[command(subcommand)]
        command: Option<DevCommand>,
        #[command(flatten)]
        args: commands::serve::ServeArgs,
    },
    /// Worker roles of seed 003 (`components exec`, `components all`): a worker node
    #[command(hide = true)]
    Components(commands::worker::ComponentsArgs),
    /// Built-in functions: list them or show one
    #[command(subcommand)]
    Functions(commands::functions::FunctionsCommand),
    /// The error code registry: list, show, search
    #[command(subcommand)]
    Errors(commands::errors::ErrorsCommand),
}

#[derive(Subcommand, Debug)]
pub enum WorkflowCommand {
    /// Same as `gleitzeit submit`
    Submit(commands::submit::SubmitArgs),
    /// One workflow's state (same as `gleitzeit get`)
    Status(commands::get::GetArgs),
    /// Same as `gleitzeit list`
    List(commands::list::ListArgs),
    /// Same as `gleitzeit get`
    Get(commands::get::GetArgs),
    /// Same as `gleitzeit cancel`
    Cancel(commands::cancel::CancelArgs),
    /// Same as `gleitzeit resume`
    Resume(commands::resume::ResumeArgs),
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Same as `gleitzeit status`
    Status(commands::status::StatusArgs),
}

#[derive(Subcommand, Debug)]
pub enum DevCommand {
    /// Same as `gleitzeit serve`
    Start(commands::serve::ServeArgs),
}

pub fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`gleitzeit events --json | head`). SIGPIPE itself stays ignored:
    // restoring it would let a peer that closes a socket kill the server.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => output::EXIT_INVALID,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error[GZ8001]: cannot start the async runtime: {e}");
            return ExitCode::from(output::EXIT_BACKEND);
        }
    };
    let code = runtime.block_on(commands::dispatch(cli));
    // Providers may hold child processes; do not wait for stray blocking work.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code)
}

fn init_logging(global: &GlobalOpts) {
    let level = if global.debug {
        "debug"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GLEITZEIT_LOG_LEVEL")
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Escape codes only on a terminal: `docker compose logs` and log
        // files get plain lines.
        .with_ansi(output::color_stderr())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_lists_every_command_once() {
        let cli = Cli::command();
        let listed: Vec<&str> = COMMAND_GROUPS
            .lines()
            .filter_map(|line| line.strip_prefix("  "))
            .filter_map(|line| line.split_whitespace().next())
            .collect();
        let mut visible: Vec<String> = cli
            .get_subcommands()
            .filter(|c| !c.is_hide_set())
            .map(|c| c.get_name().to_string())
            .collect();
        visible.push("help".into());
        for name in &visible {
            assert_eq!(
                listed.iter().filter(|l| *l == name).count(),
                1,
                "`{name}` must be listed once in COMMAND_GROUPS"
            );
        }
        for name in &listed {
            assert!(
                visible.iter().any(|v| v == name),
                "`{name}` is not a visible command"
            );
        }
        let help = cli.clone().render_help().to_string();
        assert!(
            help.contains("Run workflows:") && help.contains("(also: pro)"),
            "{help}"
        );
        assert!(!help.contains("Commands:"), "no second, flat list: {help}");
    }
}
