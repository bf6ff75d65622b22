//! What client commands ask of Gleitzeit, whoever answers: a server (with
//! `--server URL`, GLEITZEIT_SERVER, or one answering on the configured host
//! and port) or this machine's store and runtime. Commands are written once
//! against [`WorkflowService`]; [`connect`] is the only place that decides
//! which side answers, and both sides produce the same views and the same
//! `GzError`s, so output does not depend on where it came from.

mod local;
mod remote;

use crate::client::Client;
use crate::context::Context;
use futures_util::stream::BoxStream;
use gleitzeit_api::auth::{AuditEntryView, CreatedKey, KeyView, UserView, WhoAmI};
use gleitzeit_api::health::HealthAnswer;
use gleitzeit_api::schedules::{BackfillResponse, RunStarted, ScheduleAddResponse, ScheduleView};
use gleitzeit_api::stats::Stats;
use gleitzeit_api::system::{NodeView, ProviderList};
use gleitzeit_api::views::{TaskView, WorkflowView};
use gleitzeit_core::events::Event;
use gleitzeit_core::parse::Diagnostic;
use gleitzeit_core::{ErrorCode, GzError, WorkflowState};
use gleitzeit_store::WorkflowSummary;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub type EventStream = BoxStream<'static, Result<Event, GzError>>;

/// A workflow accepted for running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submitted {
    pub workflow_id: String,
    pub name: String,
    pub state: String,
    pub total_tasks: usize,
    /// Where a server says to follow it (absent for a local submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<BTreeMap<String, String>>,
}

/// Who runs a submitted workflow that nobody waits for.
pub enum Runner {
    /// The server runs it.
    Server { base: String },
    /// A background process of this machine runs it, logging to `log`.
    Process { pid: u32, log: String },
}

/// A workflow's state after a cancel request.
pub struct Cancelled {
    pub workflow_id: String,
    /// It had already finished: there was nothing to cancel.
    pub was_terminal: bool,
    pub state: WorkflowState,
    /// Another process runs it and was asked to stop.
    pub cancel_requested: bool,
}

impl Cancelled {
    /// What the cancel did, in one sentence: `gleitzeit cancel` prints it and
    /// the monitor shows it.
    pub fn sentence(&self) -> String {
        let id = &self.workflow_id;
        let state = self.state.as_str();
        if self.was_terminal {
            format!("Workflow {id} is already {state}; nothing to cancel.")
        } else if self.state == WorkflowState::Cancelled {
            format!("Cancelled workflow {id}.")
        } else if self.state.is_terminal() {
            format!("Workflow {id} ended {state} before the cancel reached it.")
        } else {
            format!("Asked the process running workflow {id} to cancel it.")
        }
    }
}

/// A workflow made ready to continue.
pub struct Resumed {
    pub workflow_id: String,
    /// The server that continues it on its own; `None` when this process is
    /// to run it (see [`WorkflowService::run_to_end`]).
    pub on_server: Option<String>,
}

/// `gleitzeit status`: a server reports its health, a store its contents and
/// the providers of this machine.
pub enum StatusReport {
    Server {
        base: String,
        health: HealthAnswer,
        stats: Stats,
        running: Vec<WorkflowSummary>,
    },
    Store {
        backend: String,
        location: String,
        workflows_by_state: Vec<(String, u64)>,
        tasks_by_state: Vec<(String, u64)>,
        /// Running workflows, and whether the process running each is alive.
        running: Vec<(WorkflowSummary, bool)>,
        /// The Python interpreter's version, or why there is none.
        python: Result<String, GzError>,
    },
}

/// The `schedule add` flags that describe one trigger instead of the
/// file's `triggers:`.
#[derive(Debug, Clone, Default)]
pub struct TriggerFlags {
    pub cron: Option<String>,
    pub tz: Option<String>,
    pub every: Option<String>,
    pub webhook: Option<String>,
    pub overlap: Option<String>,
    pub catchup: Option<String>,
}

impl TriggerFlags {
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("cron", &self.cron),
            ("tz", &self.tz),
            ("every", &self.every),
            ("webhook", &self.webhook),
            ("overlap", &self.overlap),
            ("catchup", &self.catchup),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// `schedule pause|resume|remove`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleChange {
    Pause,
    Resume,
    Remove,
}

/// What to make a key for.
pub struct NewKey {
    /// Whose key; the caller (server) or the first active admin (store) when
    /// not named.
    pub user: Option<String>,
    pub label: String,
    pub role: Option<String>,
    pub expires_days: Option<u32>,
}

/// A submission the service refused because the workflow is invalid: its
/// problems, pointing into the user's file.
pub type Rejected = Vec<Diagnostic>;

#[async_trait::async_trait]
pub trait WorkflowService: Send + Sync {
    /// Where answers come from, for people: the server's URL, or `local`.
    fn location(&self) -> String;

    /// Workflows, newest first.
    async fn list(
        &self,
        state: Option<WorkflowState>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorkflowSummary>, GzError>;

    /// The runs one schedule started, newest first.
    async fn list_runs_of(
        &self,
        schedule: &str,
        state: Option<WorkflowState>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<WorkflowSummary>, GzError>;

    /// Registers a workflow file's triggers (or the one `flags` describe).
    async fn add_schedules(
        &self,
        text: &str,
        file: &str,
        flags: &TriggerFlags,
    ) -> Result<Result<ScheduleAddResponse, Rejected>, GzError>;

    async fn schedules(&self) -> Result<Vec<ScheduleView>, GzError>;

    async fn change_schedule(
        &self,
        id: &str,
        change: ScheduleChange,
    ) -> Result<ScheduleView, GzError>;

    /// Stores a run of the schedule now (see [`Self::start`] to run it).
    async fn run_now(&self, id: &str) -> Result<RunStarted, GzError>;

    async fn backfill(&self, id: &str, from: &str, to: &str) -> Result<BackfillResponse, GzError>;

    /// One workflow with its tasks; a unique prefix of its id is enough.
    async fn workflow(&self, id: &str) -> Result<WorkflowView, GzError>;

    async fn cancel(&self, id: &str) -> Result<Cancelled, GzError>;

    async fn resume(&self, id: &str) -> Result<Resumed, GzError>;

    /// Checks and stores a workflow (YAML or JSON `text` read from `file`).
    async fn submit(
        &self,
        text: &str,
        file: &str,
        overrides: &Map<String, Value>,
    ) -> Result<Result<Submitted, Rejected>, GzError>;

    /// Has a submitted workflow run without anyone waiting for it.
    async fn start(&self, submitted: &Submitted) -> Result<Runner, GzError>;

    /// Sees a workflow through to its end, showing progress unless `quiet`,
    /// then prints its summary; the exit code is `run`'s. Locally this process
    /// runs it; a server runs it while this follows its events.
    async fn run_to_end(&self, id: &str, quiet: bool) -> Result<u8, GzError>;

    /// A workflow's stored events, oldest first (`id` is a full id).
    async fn history(&self, id: &str) -> Result<Vec<Event>, GzError>;

    /// The id of the newest stored event (0 when there is none).
    async fn latest_event_seq(&self) -> Result<u64, GzError>;

    /// Events after `after` (or from now), as they happen, of one workflow
    /// or all, of the `types` named or all.
    async fn follow(
        &self,
        workflow_id: Option<String>,
        types: Option<Vec<String>>,
        after: Option<u64>,
    ) -> Result<EventStream, GzError>;

    /// Counts, throughput, durations and usage over the last `range_minutes`.
    async fn stats(&self, range_minutes: u64) -> Result<Stats, GzError>;

    /// The health verdict: the whole report, or from a server that is not
    /// shown the key only its status.
    async fn health(&self) -> Result<HealthAnswer, GzError>;

    async fn status(&self) -> Result<StatusReport, GzError>;

    /// Providers with a fresh check of each.
    async fn providers(&self) -> Result<ProviderList, GzError>;

    /// Worker nodes (none without scale-out).
    async fn nodes(&self) -> Result<Vec<NodeView>, GzError>;

    /// Who the server says the API key in use belongs to; `None` where no
    /// server checks keys.
    async fn whoami(&self) -> Result<Option<WhoAmI>, GzError>;

    async fn users(&self) -> Result<Vec<UserView>, GzError>;

    async fn create_user(
        &self,
        name: &str,
        email: Option<String>,
        role: &str,
    ) -> Result<UserView, GzError>;

    async fn disable_user(&self, name: &str) -> Result<UserView, GzError>;

    async fn keys(&self, user: Option<&str>) -> Result<Vec<KeyView>, GzError>;

    async fn create_key(&self, key: NewKey) -> Result<CreatedKey, GzError>;

    async fn revoke_key(&self, id: &str) -> Result<(), GzError>;

    async fn audit(&self, limit: usize) -> Result<Vec<AuditEntryView>, GzError>;

    /// Opens up front what answering needs (a local runtime), so that what
    /// opening prints comes before a full-screen display takes the terminal.
    async fn open(&self) -> Result<(), GzError>;

    /// Stops what this process started for the service (provider processes).
    async fn finish(&self);

    /// Follows a workflow's events until it finishes (whoever runs it),
    /// showing progress unless `quiet`, then prints its summary. Exit code as
    /// `run`: 0 completed, 1 failed or cancelled.
    async fn wait(&self, id: &str, quiet: bool, json: bool) -> Result<u8, GzError> {
        // A workflow that already finished has its final event in the history.
        let stream = self.follow(Some(id.to_string()), None, Some(0)).await?;
        crate::launch::show_until_finished(stream, id, quiet || json).await?;
        let view = self.workflow(id).await?;
        Ok(crate::launch::report_view(&view, json))
    }

    /// A task by `TASK`, `WORKFLOW/TASK` (or `WORKFLOW:TASK`) or `--workflow`:
    /// without a workflow, recent workflows are searched, unfinished first.
    async fn find_task(
        &self,
        task: &str,
        workflow: Option<String>,
    ) -> Result<(WorkflowView, TaskView), GzError> {
        let (workflow, task) = match (workflow, task.split_once(['/', ':'])) {
            (Some(w), _) => (Some(w), task.to_string()),
            (None, Some((w, t))) => (Some(w.to_string()), t.to_string()),
            (None, None) => (None, task.to_string()),
        };
        let candidates: Vec<String> = match workflow {
            Some(w) => vec![w],
            None => {
                // Task ids are unique per workflow: look through recent ones,
                // unfinished first.
                let list = self.list(None, 100, 0).await?;
                let (done, running): (Vec<_>, Vec<_>) =
                    list.into_iter().partition(|w| w.state.is_terminal());
                running.into_iter().chain(done).map(|w| w.id).collect()
            }
        };
        for id in candidates {
            let view = self.workflow(&id).await?;
            if let Some(found) = view.tasks.iter().find(|t| t.id == task).cloned() {
                return Ok((view, found));
            }
        }
        Err(GzError::new(
            ErrorCode::TaskNotFound,
            format!("no recent workflow has a task `{task}`"),
        )
        .with_hint("Name the workflow: `gleitzeit watch task WORKFLOW_ID/TASK_ID`."))
    }
}

/// The service for this command: the server in use, else this machine.
/// With `--server URL` (or `server.url`), a server that does not answer is an
/// error, not a fallback.
pub async fn connect(ctx: &Context) -> Result<Arc<dyn WorkflowService>, GzError> {
    if ctx.global.local {
        return Ok(Arc::new(local::LocalService::new(ctx)));
    }
    if let Some(url) = ctx
        .global
        .server
        .clone()
        .or_else(|| ctx.config.server.url.clone())
    {
        let client = Client::new(&url)?;
        client.require().await?;
        return Ok(Arc::new(remote::RemoteService::new(ctx, client)));
    }
    let host = match ctx.config.server.host.as_str() {
        "0.0.0.0" | "::" | "" => "127.0.0.1".to_string(),
        host if host.contains(':') => format!("[{host}]"),
        host => host.to_string(),
    };
    let client = Client::new(&format!("http://{host}:{}", ctx.config.server.port))?;
    if client.probe().await {
        Ok(Arc::new(remote::RemoteService::new(ctx, client)))
    } else {
        Ok(Arc::new(local::LocalService::new(ctx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancelled(was_terminal: bool, state: WorkflowState) -> String {
        Cancelled {
            workflow_id: "wf_1".into(),
            was_terminal,
            state,
            cancel_requested: !state.is_terminal(),
        }
        .sentence()
    }

    #[test]
    fn a_cancel_says_what_it_did() {
        assert_eq!(
            cancelled(true, WorkflowState::Completed),
            "Workflow wf_1 is already completed; nothing to cancel."
        );
        assert_eq!(
            cancelled(false, WorkflowState::Cancelled),
            "Cancelled workflow wf_1."
        );
        assert_eq!(
            cancelled(false, WorkflowState::Failed),
            "Workflow wf_1 ended failed before the cancel reached it."
        );
        assert_eq!(
            cancelled(false, WorkflowState::Running),
            "Asked the process running workflow wf_1 to cancel it."
        );
    }
}
