//! `gleitzeit schedule add|list|pause|resume|remove|run-now|backfill`:
//! triggers that start workflows by themselves, kept in the store (or on
//! the server) and fired by `gleitzeit serve`.

use crate::context::Context;
use crate::launch::{read_user_file, report_diagnostics};
use crate::output::{self, Paint};
use crate::service::{self, Runner, ScheduleChange, Submitted, TriggerFlags};
use chrono::{Local, TimeZone};
use clap::{Args, Subcommand};
use gleitzeit_api::schedules::ScheduleView;
use gleitzeit_core::GzError;
use serde_json::json;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Register the triggers of a workflow file (or the one the flags give)
    Add(AddArgs),
    /// Schedules with their next fire time (local and UTC) and counts
    List,
    /// Stop a schedule from firing until it is resumed
    Pause { id: String },
    /// Let a paused schedule fire again from its next tick
    Resume { id: String },
    /// Remove a schedule (its runs are kept)
    Remove { id: String },
    /// Start one run of the schedule now, whatever its overlap policy
    RunNow(RunNowArgs),
    /// One run per tick in a past range, through the overlap policy
    Backfill(BackfillArgs),
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Workflow file (YAML or JSON); its `triggers:` are registered
    pub file: PathBuf,
    /// Register this cron expression instead (5 fields, or 6 with seconds; @hourly …)
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone of --cron (default UTC)
    #[arg(long)]
    pub tz: Option<String>,
    /// Register this interval instead (at least 1s): 30s, 15m, 1h
    #[arg(long)]
    pub every: Option<String>,
    /// Register a webhook of this name instead (POST /api/v1/hooks/NAME)
    #[arg(long)]
    pub webhook: Option<String>,
    /// With a flag trigger: skip, buffer_one, cancel_other or allow_all (default skip)
    #[arg(long)]
    pub overlap: Option<String>,
    /// With a flag trigger: run ticks missed within this window after downtime (default none)
    #[arg(long)]
    pub catchup: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunNowArgs {
    pub id: String,
    /// Wait for the run to finish, showing progress; exit code as `run`
    #[arg(long, short = 'w')]
    pub wait: bool,
}

#[derive(Args, Debug)]
pub struct BackfillArgs {
    pub id: String,
    /// Start of the range, inclusive (RFC 3339 or a date)
    #[arg(long)]
    pub from: String,
    /// End of the range, inclusive
    #[arg(long)]
    pub to: String,
}

pub async fn run(ctx: &Context, command: ScheduleCommand) -> Result<u8, GzError> {
    let service = service::connect(ctx).await?;
    let json = ctx.global.json;
    let code = match command {
        ScheduleCommand::Add(args) => {
            let text = read_user_file(&args.file)?;
            let name = args.file.display().to_string();
            let flags = TriggerFlags {
                cron: args.cron,
                tz: args.tz,
                every: args.every,
                webhook: args.webhook,
                overlap: args.overlap,
                catchup: args.catchup,
            };
            match service.add_schedules(&text, &name, &flags).await? {
                Err(diagnostics) => {
                    report_diagnostics(json, &name, &diagnostics);
                    output::EXIT_INVALID
                }
                Ok(added) => {
                    if json {
                        println!("{}", json!(added));
                    } else {
                        for s in &added.schedules {
                            println!(
                                "Added schedule {} ({}): {}",
                                s.schedule_id, s.name, s.describe
                            );
                            if let Some(next) = s.next_fire_ms {
                                println!("  next: {}", both_times(next));
                            }
                        }
                        for hook in &added.hook_secrets {
                            println!(
                                "Webhook {}: POST /api/v1/hooks/{} with a SERVICE key, or with header\n  X-Gleitzeit-Hook-Secret: {}\n  (the secret is shown only now; keep it)",
                                hook.hook, hook.hook, hook.secret
                            );
                        }
                        if service.location() == "local" {
                            println!("Schedules fire while `gleitzeit serve` runs on this store.");
                        }
                    }
                    output::EXIT_OK
                }
            }
        }
        ScheduleCommand::List => {
            let schedules = service.schedules().await?;
            if json {
                println!("{}", json!({ "schedules": schedules }));
            } else {
                print_list(&schedules);
            }
            output::EXIT_OK
        }
        ScheduleCommand::Pause { id } => {
            change(&*service, &id, ScheduleChange::Pause, json).await?
        }
        ScheduleCommand::Resume { id } => {
            change(&*service, &id, ScheduleChange::Resume, json).await?
        }
        ScheduleCommand::Remove { id } => {
            change(&*service, &id, ScheduleChange::Remove, json).await?
        }
        ScheduleCommand::RunNow(args) => {
            let started = service.run_now(&args.id).await?;
            let id = started.workflow_id.clone();
            if args.wait {
                service.run_to_end(&id, false).await?
            } else {
                let runner = service
                    .start(&Submitted {
                        workflow_id: id.clone(),
                        name: String::new(),
                        state: "pending".into(),
                        total_tasks: 0,
                        links: None,
                    })
                    .await?;
                if json {
                    println!("{}", json!(started));
                } else {
                    match runner {
                        Runner::Server { base } => {
                            println!("Started {id} (schedule {}) on {base}", started.schedule_id)
                        }
                        Runner::Process { pid, log } => println!(
                            "Started {id} (schedule {}); background process {pid} runs it (log: {log})",
                            started.schedule_id
                        ),
                    }
                    println!("Follow it: gleitzeit watch workflow {id}");
                }
                output::EXIT_OK
            }
        }
        ScheduleCommand::Backfill(args) => {
            let report = service.backfill(&args.id, &args.from, &args.to).await?;
            // Locally nobody runs stored runs until they are started.
            for id in &report.started {
                service
                    .start(&Submitted {
                        workflow_id: id.clone(),
                        name: String::new(),
                        state: "pending".into(),
                        total_tasks: 0,
                        links: None,
                    })
                    .await?;
            }
            if json {
                println!("{}", json!(report));
            } else {
                println!(
                    "Backfill of {}: {} tick{}, {} run{} started, {} skipped by the overlap policy{}",
                    report.schedule_id,
                    report.ticks,
                    if report.ticks == 1 { "" } else { "s" },
                    report.started.len(),
                    if report.started.len() == 1 { "" } else { "s" },
                    report.skipped,
                    if report.buffered { ", one buffered" } else { "" }
                );
                for id in &report.started {
                    println!("  {id}");
                }
                for failure in &report.failed {
                    println!("  failed: {failure}");
                }
            }
            if report.failed.is_empty() {
                output::EXIT_OK
            } else {
                output::EXIT_WORKFLOW_FAILED
            }
        }
    };
    service.finish().await;
    Ok(code)
}

async fn change(
    service: &dyn service::WorkflowService,
    id: &str,
    change: ScheduleChange,
    json: bool,
) -> Result<u8, GzError> {
    let view = service.change_schedule(id, change).await?;
    if json {
        println!("{}", json!(view));
    } else {
        let verb = match change {
            ScheduleChange::Pause => "Paused",
            ScheduleChange::Resume => "Resumed",
            ScheduleChange::Remove => "Removed",
        };
        println!(
            "{verb} schedule {} ({}: {})",
            view.schedule_id, view.name, view.describe
        );
        if change == ScheduleChange::Resume {
            if let Some(next) = view.next_fire_ms {
                println!("  next: {}", both_times(next));
            }
        }
    }
    Ok(output::EXIT_OK)
}

/// A time in this machine's zone and in UTC.
fn both_times(ms: i64) -> String {
    let utc = gleitzeit_core::triggers::format_ms(ms);
    match Local.timestamp_millis_opt(ms).single() {
        Some(local) => format!("{} ({utc})", local.format("%Y-%m-%d %H:%M:%S %Z")),
        None => utc,
    }
}

fn print_list(schedules: &[ScheduleView]) {
    if schedules.is_empty() {
        println!("No schedules. Add one with `gleitzeit schedule add FILE` (a `triggers:` list, or --cron/--every/--webhook).");
        return;
    }
    let paint = Paint(output::color_stdout());
    println!(
        "{}",
        paint.bold(&format!(
            "{:<20}  {:<7}  {:<28}  {:<12}  {:>5}/{:<5}/{:<5}  NEXT (LOCAL, UTC)",
            "ID", "STATE", "TRIGGER", "OVERLAP", "FIRED", "SKIP", "FAIL"
        ))
    );
    for s in schedules {
        let next = match (s.paused, s.next_fire_ms) {
            (true, _) => "-".to_string(),
            (false, Some(ms)) => both_times(ms),
            (false, None) => match &s.hook {
                Some(hook) => format!("on POST /api/v1/hooks/{hook}"),
                None => "-".into(),
            },
        };
        println!(
            "{:<20}  {:<7}  {:<28}  {:<12}  {:>5}/{:<5}/{:<5}  {next}",
            s.schedule_id,
            if s.paused { "paused" } else { "active" },
            s.describe,
            s.overlap,
            s.fired,
            s.skipped,
            s.failed,
        );
        if let Some(error) = &s.last_error {
            println!("    last error: {error}");
        }
    }
}
