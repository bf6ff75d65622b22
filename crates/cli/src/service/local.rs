//! The service of this machine: its store, and a runtime of its own for what
//! needs one (cancel, resume, health). Both are opened when first needed.

use super::{
    Cancelled, EventStream, NewKey, Rejected, Resumed, Runner, ScheduleChange, StatusReport,
    Submitted, TriggerFlags, WorkflowService,
};
use crate::context::Context;
use gleitzeit_api::auth::{AuditEntryView, CreatedKey, KeyView, UserView, WhoAmI};
use gleitzeit_api::health::HealthAnswer;
use gleitzeit_api::schedules::{
    BackfillResponse, HookSecret, RunStarted, ScheduleAddResponse, ScheduleView,
};
use gleitzeit_api::stats::Stats;
use gleitzeit_api::system::{NodeView, ProviderList};
use gleitzeit_api::views::WorkflowView;
use gleitzeit_auth::admin;
use gleitzeit_core::events::Event;
use gleitzeit_core::parse;
use gleitzeit_core::{ErrorCode, GzError, WorkflowState};
use gleitzeit_runtime::schedules::{register, RunStarter, SystemClock, Ticker};
use gleitzeit_runtime::{process_alive, Runtime};
use gleitzeit_store::{ListFilter, Store, WorkflowSummary};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

pub struct LocalService {
    ctx: Context,
    store: OnceCell<Arc<dyn Store>>,
    runtime: OnceCell<Runtime>,
}

impl LocalService {
    pub fn new(ctx: &Context) -> LocalService {
        LocalService {
            ctx: ctx.clone(),
            store: OnceCell::new(),
            runtime: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<Arc<dyn Store>, GzError> {
        self.store
            .get_or_try_init(|| self.ctx.open_store(false))
            .await
            .cloned()
    }

    async fn runtime(&self) -> Result<&Runtime, GzError> {
        self.runtime
            .get_or_try_init(|| async { self.ctx.runtime(self.store().await?).await })
            .await
    }
}

/// Stores a schedule's run for this machine; the command then has it run
/// (`WorkflowService::start` or `run_to_end`).
struct LocalStarter {
    runtime: Runtime,
}

#[async_trait::async_trait]
impl RunStarter for LocalStarter {
    async fn start(
        &self,
        workflow: gleitzeit_core::Workflow,
        source: Option<String>,
        submitted_by: Option<String>,
    ) -> Result<String, GzError> {
        self.runtime.submit_as(workflow, source, submitted_by).await
    }

    async fn cancel(&self, workflow_id: &str) -> Result<(), GzError> {
        self.runtime.cancel(workflow_id).await.map(drop)
    }
}

impl LocalService {
    async fn ticker(&self) -> Result<Ticker, GzError> {
        let runtime = self.runtime().await?.clone();
        Ok(Ticker::new(
            runtime.store().clone(),
            Arc::new(SystemClock),
            Arc::new(LocalStarter { runtime }),
        ))
    }

    fn persistent(&self) -> Result<(), GzError> {
        if self.ctx.backend() == "memory" {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                "the memory backend keeps nothing after this process, so there is nowhere to keep a schedule",
            )
            .with_hint("Use the SQLite store (the default) or Redis, where `gleitzeit serve` fires the schedules."));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl WorkflowService for LocalService {
    fn location(&self) -> String {
        "local".to_string()
    }

    async fn list(
        &self,
        state: Option<WorkflowState>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorkflowSummary>, GzError> {
        Ok(self
            .store()
            .await?
            .list_workflows(&ListFilter {
                submitted_by: None,
                state,
                limit,
                offset,
                schedule: None,
            })
            .await?)
    }

    async fn list_runs_of(
        &self,
        schedule: &str,
        state: Option<WorkflowState>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorkflowSummary>, GzError> {
        let store = self.store().await?;
        // The full id of a removed schedule still lists its runs.
        let schedule = match gleitzeit_store::find_schedule(store.as_ref(), schedule).await {
            Ok(found) => found,
            Err(e) if e.code == ErrorCode::ScheduleNotFound => {
                return Ok(store
                    .list_workflows(&ListFilter {
                        submitted_by: None,
                        state,
                        limit,
                        offset,
                        schedule: Some(schedule.to_string()),
                    })
                    .await?)
            }
            Err(e) => return Err(e),
        };
        Ok(store
            .list_workflows(&ListFilter {
                submitted_by: None,
                state,
                limit,
                offset,
                schedule: Some(schedule.id),
            })
            .await?)
    }

    async fn add_schedules(
        &self,
        text: &str,
        file: &str,
        flags: &TriggerFlags,
    ) -> Result<Result<ScheduleAddResponse, Rejected>, GzError> {
        self.persistent()?;
        let flagged = gleitzeit_core::triggers::trigger_from_flags(
            flags.cron.as_deref(),
            flags.tz.as_deref(),
            flags.every.as_deref(),
            flags.webhook.as_deref(),
            flags.overlap.as_deref(),
            flags.catchup.as_deref(),
        )?;
        let runtime = self.runtime().await?;
        let workflow = match parse::load_with(
            text,
            file,
            runtime.registry(),
            &Map::new(),
            &crate::launch::FsIncludes,
            runtime.limits(),
        ) {
            Ok(workflow) => workflow,
            Err(diagnostics) => return Ok(Err(diagnostics)),
        };
        let triggers = match flagged {
            Some(trigger) => vec![trigger],
            None => workflow.triggers.clone(),
        };
        let registered = register(
            runtime.store().as_ref(),
            &workflow,
            &triggers,
            Some(file.to_string()),
            None,
            gleitzeit_store::now_ms(),
        )
        .await?;
        Ok(Ok(ScheduleAddResponse {
            schedules: registered.schedules.iter().map(Into::into).collect(),
            hook_secrets: registered
                .hook_secrets
                .into_iter()
                .map(|(hook, secret)| HookSecret { hook, secret })
                .collect(),
        }))
    }

    async fn schedules(&self) -> Result<Vec<ScheduleView>, GzError> {
        let store = self.store().await?;
        Ok(store.schedules().await?.iter().map(Into::into).collect())
    }

    async fn change_schedule(
        &self,
        id: &str,
        change: ScheduleChange,
    ) -> Result<ScheduleView, GzError> {
        let store = self.store().await?;
        for _ in 0..16 {
            let mut schedule = gleitzeit_store::find_schedule(store.as_ref(), id).await?;
            let version = schedule.version;
            match change {
                ScheduleChange::Remove => {
                    store.delete_schedule(&schedule.id).await?;
                    return Ok((&schedule).into());
                }
                ScheduleChange::Pause => schedule.paused = true,
                ScheduleChange::Resume if schedule.paused => {
                    // Ticks that passed while paused do not fire.
                    let now = gleitzeit_store::now_ms();
                    schedule.paused = false;
                    schedule.next_fire_ms = gleitzeit_core::triggers::Timing::of(
                        &schedule.trigger.kind,
                        schedule.created_ms,
                    )?
                    .and_then(|t| t.next_after(now));
                }
                ScheduleChange::Resume => return Ok((&schedule).into()),
            }
            if store.put_schedule(&schedule, Some(version)).await? {
                return Ok((&schedule).into());
            }
        }
        Err(GzError::new(
            ErrorCode::DatabaseLocked,
            format!("schedule {id} keeps changing; try again"),
        ))
    }

    async fn run_now(&self, id: &str) -> Result<RunStarted, GzError> {
        self.persistent()?;
        let ticker = self.ticker().await?;
        let schedule = gleitzeit_store::find_schedule(self.store().await?.as_ref(), id).await?;
        let workflow_id = ticker.fire_with(&schedule, "run_now", Map::new()).await?;
        Ok(RunStarted {
            schedule_id: schedule.id,
            workflow_id,
        })
    }

    async fn backfill(&self, id: &str, from: &str, to: &str) -> Result<BackfillResponse, GzError> {
        self.persistent()?;
        let time = |text: &str, which: &str| {
            gleitzeit_core::triggers::parse_time(text).ok_or_else(|| {
                GzError::new(
                    ErrorCode::InvalidBackfillRange,
                    format!("--{which} {text} is not a time"),
                )
                .with_hint(ErrorCode::InvalidBackfillRange.def().hint)
            })
        };
        let (from_ms, to_ms) = (time(from, "from")?, time(to, "to")?);
        let schedule = gleitzeit_store::find_schedule(self.store().await?.as_ref(), id).await?;
        let report = self
            .ticker()
            .await?
            .backfill(&schedule.id, from_ms, to_ms)
            .await?;
        Ok(BackfillResponse {
            schedule_id: schedule.id,
            ticks: report.ticks,
            started: report.started,
            skipped: report.skipped,
            buffered: report.buffered,
            failed: report.failed.iter().map(GzError::to_string).collect(),
        })
    }

    async fn workflow(&self, id: &str) -> Result<WorkflowView, GzError> {
        let store = self.store().await?;
        let record = store.find_workflow(id).await?;
        let tasks = store.tasks(&record.id).await?;
        Ok(WorkflowView::new(&record, &tasks))
    }

    async fn cancel(&self, id: &str) -> Result<Cancelled, GzError> {
        let runtime = self.runtime().await?;
        let before = runtime.store().find_workflow(id).await?;
        let after = runtime.cancel(&before.id).await?;
        Ok(Cancelled {
            workflow_id: after.id,
            was_terminal: before.state.is_terminal(),
            state: after.state,
            cancel_requested: after.cancel_requested,
        })
    }

    async fn resume(&self, id: &str) -> Result<Resumed, GzError> {
        let record = self.store().await?.find_workflow(id).await?;
        Ok(Resumed {
            workflow_id: record.id,
            on_server: None,
        })
    }

    async fn submit(
        &self,
        text: &str,
        file: &str,
        overrides: &Map<String, Value>,
    ) -> Result<Result<Submitted, Rejected>, GzError> {
        if self.ctx.backend() == "memory" {
            return Err(GzError::new(
                ErrorCode::InvalidArgument,
                "the memory backend keeps nothing after this process, so there is nothing to submit to",
            )
            .with_hint("Use `gleitzeit run FILE`, or start `gleitzeit serve` and submit to it."));
        }
        let runtime = self.runtime().await?;
        let workflow = match parse::load_with(
            text,
            file,
            runtime.registry(),
            overrides,
            &crate::launch::FsIncludes,
            runtime.limits(),
        ) {
            Ok(workflow) => workflow,
            Err(diagnostics) => return Ok(Err(diagnostics)),
        };
        let name = workflow.name.clone();
        let total_tasks = workflow.tasks.len();
        let workflow_id = runtime.submit(workflow, Some(file.to_string())).await?;
        Ok(Ok(Submitted {
            workflow_id,
            name,
            state: WorkflowState::Pending.as_str().to_string(),
            total_tasks,
            links: None,
        }))
    }

    async fn start(&self, submitted: &Submitted) -> Result<Runner, GzError> {
        let (pid, log) = spawn_background_run(&self.ctx, &submitted.workflow_id)?;
        Ok(Runner::Process { pid, log })
    }

    async fn run_to_end(&self, id: &str, quiet: bool) -> Result<u8, GzError> {
        let runtime = self.runtime().await?;
        crate::launch::execute(self.ctx.global.json, runtime, id, quiet, false).await
    }

    async fn history(&self, id: &str) -> Result<Vec<Event>, GzError> {
        let store = self.store().await?;
        let record = store.find_workflow(id).await?;
        Ok(gleitzeit_core::events::expand_all(
            store.events(Some(&record.id), 0, 0).await?,
        ))
    }

    async fn latest_event_seq(&self) -> Result<u64, GzError> {
        Ok(self.store().await?.latest_event_seq().await?)
    }

    async fn follow(
        &self,
        workflow_id: Option<String>,
        types: Option<Vec<String>>,
        after: Option<u64>,
    ) -> Result<EventStream, GzError> {
        Ok(follow_store(self.store().await?, workflow_id, types, after))
    }

    async fn stats(&self, range_minutes: u64) -> Result<Stats, GzError> {
        let store = self.store().await?;
        gleitzeit_api::stats::stats(store.as_ref(), range_minutes, 0).await
    }

    async fn health(&self) -> Result<HealthAnswer, GzError> {
        let runtime = self.runtime().await?;
        let report = gleitzeit_runtime::health::check(runtime, 0, Duration::ZERO, true).await;
        Ok(HealthAnswer::from(report))
    }

    async fn status(&self) -> Result<StatusReport, GzError> {
        let ctx = &self.ctx;
        let store = self.store().await?;
        let stats = store.stats().await?;
        let running = self.list(Some(WorkflowState::Running), 50, 0).await?;
        let python = if ctx.config.providers.python.enabled {
            let provider = gleitzeit_providers::python::PythonProvider::new(ctx.python_config());
            let version = provider.check().await;
            gleitzeit_providers::Provider::shutdown(&provider).await;
            version
        } else {
            Err(GzError::new(
                ErrorCode::ProviderUnavailable,
                "disabled in config",
            ))
        };
        let mut running_info = Vec::new();
        for w in running {
            let record = store.workflow(&w.id).await?;
            let live = record
                .as_ref()
                .and_then(|r| r.owner.clone())
                .is_some_and(|o| process_alive(&o));
            running_info.push((w, live));
        }
        let location = match ctx.backend() {
            "sqlite" => ctx.config.db_path().display().to_string(),
            other => other.to_string(),
        };
        Ok(StatusReport::Store {
            backend: ctx.backend().to_string(),
            location,
            workflows_by_state: stats.workflows_by_state,
            tasks_by_state: stats.tasks_by_state,
            running: running_info,
            python,
        })
    }

    async fn providers(&self) -> Result<ProviderList, GzError> {
        let runtime = self.runtime().await?;
        Ok(gleitzeit_runtime::health::providers(runtime.registry(), true).await)
    }

    async fn nodes(&self) -> Result<Vec<NodeView>, GzError> {
        if self.ctx.backend() != "redis" {
            return Ok(Vec::new());
        }
        let admin = gleitzeit_cluster::admin::Admin::connect(
            &self.ctx.redis_url(),
            self.ctx.redis_prefix(),
        )
        .await?;
        Ok(admin
            .nodes()
            .await?
            .into_iter()
            .map(NodeView::from)
            .collect())
    }

    async fn whoami(&self) -> Result<Option<WhoAmI>, GzError> {
        Ok(None)
    }

    async fn users(&self) -> Result<Vec<UserView>, GzError> {
        let users = self.store().await?.users().await?;
        Ok(users.iter().map(UserView::from).collect())
    }

    async fn create_user(
        &self,
        name: &str,
        email: Option<String>,
        role: &str,
    ) -> Result<UserView, GzError> {
        let role = admin::parse_role(role)?;
        let user = admin::create_user(self.store().await?.as_ref(), name, email, role).await?;
        Ok(UserView::from(&user))
    }

    async fn disable_user(&self, name: &str) -> Result<UserView, GzError> {
        let user = admin::disable_user(self.store().await?.as_ref(), name).await?;
        Ok(UserView::from(&user))
    }

    async fn keys(&self, user: Option<&str>) -> Result<Vec<KeyView>, GzError> {
        Ok(self
            .store()
            .await?
            .keys()
            .await?
            .into_iter()
            .filter(|k| user.is_none_or(|u| u == k.user))
            .map(|k| KeyView::from(&k))
            .collect())
    }

    async fn create_key(&self, key: NewKey) -> Result<CreatedKey, GzError> {
        let store = self.store().await?;
        // Whoever can write the database file is its administrator anyway:
        // without a user named, the key is the first active admin's.
        let user = match key.user {
            Some(u) => u,
            None => store
                .users()
                .await?
                .into_iter()
                .find(|u| u.role == "ADMIN" && !u.disabled)
                .map(|u| u.name)
                .ok_or_else(|| {
                    GzError::new(ErrorCode::InvalidArgument, "no user to make a key for")
                        .with_hint("Run `gleitzeit auth init` first, or pass --user.")
                })?,
        };
        let role = key.role.as_deref().map(admin::parse_role).transpose()?;
        let (made, record) =
            admin::create_key(store.as_ref(), &user, &key.label, role, key.expires_days).await?;
        Ok(CreatedKey {
            key: made.reveal().to_string(),
            record: KeyView::from(&record),
        })
    }

    async fn revoke_key(&self, id: &str) -> Result<(), GzError> {
        let store = self.store().await?;
        admin::revoke_key(store.as_ref(), id).await?;
        gleitzeit_auth::admin::audit(
            store.as_ref(),
            Some("local"),
            "key.revoke",
            Some(id),
            "ok",
            None,
        )
        .await;
        Ok(())
    }

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntryView>, GzError> {
        let entries = self.store().await?.audit_log(0, limit).await?;
        Ok(entries.iter().map(AuditEntryView::from).collect())
    }

    async fn open(&self) -> Result<(), GzError> {
        self.runtime().await.map(|_| ())
    }

    async fn finish(&self) {
        if let Some(runtime) = self.runtime.get() {
            runtime.registry().shutdown().await;
        }
    }
}

/// Events from a store as other processes commit them (polled: a store has no
/// push), after `after` or from now.
pub fn follow_store(
    store: Arc<dyn Store>,
    workflow_id: Option<String>,
    wanted: Option<Vec<String>>,
    after: Option<u64>,
) -> EventStream {
    Box::pin(async_stream::try_stream! {
        let mut last = match after {
            Some(seq) => seq,
            None => store.latest_event_seq().await?,
        };
        loop {
            let page = store.events(workflow_id.as_deref(), last, 1000).await?;
            let full = page.len() == 1000;
            for event in gleitzeit_core::events::expand_all(page) {
                last = event.seq;
                if wanted.as_ref().is_none_or(|w| w.iter().any(|k| k == event.type_name())) {
                    yield event;
                }
            }
            if !full {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
}

/// `gleitzeit resume ID -q` in its own session, so it outlives this command
/// and the terminal.
fn spawn_background_run(ctx: &Context, id: &str) -> Result<(u32, String), GzError> {
    let exe = std::env::current_exe().map_err(|e| {
        GzError::new(
            ErrorCode::InternalError,
            format!("cannot find this program: {e}"),
        )
    })?;
    let logs = crate::config::home_dir().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| {
        GzError::new(
            ErrorCode::FileWriteFailed,
            format!("cannot create {}: {e}", logs.display()),
        )
    })?;
    let log_path = logs.join(format!("{id}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| {
        GzError::new(
            ErrorCode::FileWriteFailed,
            format!("cannot create {}: {e}", log_path.display()),
        )
    })?;
    let mut command = std::process::Command::new(exe);
    if let Some(config) = &ctx.global.config {
        command.arg("--config").arg(config);
    }
    command
        .arg("--backend")
        .arg(ctx.backend())
        .arg("--db")
        .arg(ctx.config.db_path())
        .arg("--local")
        .args(["resume", id, "--quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| GzError::new(ErrorCode::FileWriteFailed, format!("log file: {e}")))?,
        )
        .stderr(log);
    own_session(&mut command);
    let child = command.spawn().map_err(|e| {
        GzError::new(
            ErrorCode::ServiceStartFailed,
            format!("cannot start a background run: {e}"),
        )
    })?;
    Ok((child.id(), log_path.display().to_string()))
}

/// Starts the child in a session of its own, without a controlling terminal,
/// so closing the terminal (SIGHUP) does not end the run.
// `Command::process_group` would leave the child on the terminal; a new
// session needs setsid between fork and exec, which only `pre_exec` (unsafe)
// can run.
#[allow(unsafe_code)]
fn own_session(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // setsid, which is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}
