//! The runtime executes workflows: it feeds the pure scheduler, performs its
//! actions (resolve references, call providers, wait out retry delays), commits
//! every transition to the store, and only then announces it as an event.
//!
//! One workflow run is one loop (`execution::run_loop`) that owns the scheduler;
//! provider calls run as spawned tasks that report back over a channel.

// Unsafe only where libc is the way to ask the OS (marked `allow` there).
#![deny(unsafe_code)]

mod cache;
mod call;
mod execution;
pub mod health;
mod live;
pub mod schedules;
mod scope;

pub use call::{RemoteExecutor, TaskCall};
pub use execution::RunOutcome;

use gleitzeit_core::events::Event;
use gleitzeit_core::{ErrorCode, GzError, Workflow, WorkflowState};
use gleitzeit_providers::Registry;
use gleitzeit_store::{now_ms, Owner, Store, TaskRecord, WorkflowRecord};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Max concurrent tasks per protocol (`python`, `function`, `llm`, …).
    pub lane_limits: HashMap<String, usize>,
    /// Concurrency for protocols not listed in `lane_limits`.
    pub default_lane_limit: usize,
    /// Max concurrent tasks of one workflow, all protocols together.
    pub max_concurrent_tasks: usize,
    /// Environment variables that `${env.NAME}` may read.
    pub allowed_env: Vec<String>,
    /// How often a run checks the store for a cancel request from another process.
    pub cancel_poll: std::time::Duration,
    /// Whether tasks with `cache:` may reuse stored results (`run --no-cache`
    /// turns this off; fresh results are still stored).
    pub use_cache: bool,
    /// What a workflow and a task's result may be at most (config `limits:`).
    pub limits: gleitzeit_core::Limits,
    /// Files tasks of workflows without their own grant may read (`gleitzeit
    /// run`: the working directory and `files.roots`; a server: none).
    pub files: gleitzeit_core::access::FileAccess,
    /// Files refused whatever the grant, and the cap of worker nodes.
    pub file_policy: gleitzeit_core::access::FilePolicy,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        let mut lane_limits = HashMap::new();
        lane_limits.insert("function".to_string(), 256);
        lane_limits.insert("llm".to_string(), 8);
        RuntimeConfig {
            lane_limits,
            default_lane_limit: 16,
            max_concurrent_tasks: 10_000,
            allowed_env: Vec::new(),
            cancel_poll: std::time::Duration::from_millis(250),
            use_cache: true,
            limits: gleitzeit_core::Limits::default(),
            files: gleitzeit_core::access::FileAccess::none(),
            file_policy: gleitzeit_core::access::FilePolicy::default(),
        }
    }
}

#[derive(Clone)]
pub struct Runtime {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Registry,
    pub(crate) config: RuntimeConfig,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) live: live::LiveEvents,
    /// Fired at shutdown: runs stop starting tasks, wait for the ones in
    /// flight to be recorded, and hand the workflow back unfinished.
    pub(crate) drain: CancellationToken,
    /// Set in scale-out mode: task calls run on worker nodes.
    pub(crate) remote: Option<Arc<dyn RemoteExecutor>>,
}

impl Runtime {
    pub fn new(store: Arc<dyn Store>, registry: Registry, config: RuntimeConfig) -> Runtime {
        let (events, _) = broadcast::channel(8192);
        Runtime {
            store,
            registry,
            config,
            events,
            live: live::LiveEvents::default(),
            drain: CancellationToken::new(),
            remote: None,
        }
    }

    /// Sends every task call to `executor` (worker nodes) instead of running
    /// it with this process's providers, which then only validate workflows.
    pub fn with_remote(mut self, executor: Arc<dyn RemoteExecutor>) -> Runtime {
        self.remote = Some(executor);
        self
    }

    /// Tasks with `cache:` run even when a stored result exists (and store
    /// the fresh one): `run --no-cache`.
    pub fn without_cache(mut self) -> Runtime {
        self.config.use_cache = false;
        self
    }

    /// Workflows that carry no grant of their own read files under `files`
    /// (a server: none).
    pub fn with_default_files(mut self, files: gleitzeit_core::access::FileAccess) -> Runtime {
        self.config.files = files;
        self
    }

    /// What every call of this process is held to (worker nodes add their cap).
    pub fn with_file_policy(mut self, policy: gleitzeit_core::access::FilePolicy) -> Runtime {
        self.config.file_policy = policy;
        self
    }

    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Stops every run of this runtime at its next durable point: no new task
    /// starts, tasks in flight finish and are recorded, and each workflow is
    /// left resumable (not cancelled). `run` then returns with the workflow
    /// still `running`.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    pub fn limits(&self) -> &gleitzeit_core::Limits {
        &self.config.limits
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Live events of every workflow this runtime executes (after they are stored).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Stores a validated workflow as Pending and returns its id.
    pub async fn submit(
        &self,
        workflow: Workflow,
        source: Option<String>,
    ) -> Result<String, GzError> {
        self.submit_as(workflow, source, None).await
    }

    /// As `submit`, recording the API user it belongs to.
    pub async fn submit_as(
        &self,
        workflow: Workflow,
        source: Option<String>,
        submitted_by: Option<String>,
    ) -> Result<String, GzError> {
        let id = new_workflow_id();
        let record = WorkflowRecord {
            id: id.clone(),
            name: workflow.name.clone(),
            state: WorkflowState::Pending,
            source,
            created_ms: now_ms(),
            started_ms: None,
            finished_ms: None,
            error: None,
            cancel_requested: false,
            owner: None,
            submitted_by,
            spec: workflow,
        };
        let tasks: Vec<TaskRecord> = record
            .spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| TaskRecord::pending(&id, i as u32, &t.id, &t.method))
            .collect();
        self.store.create_workflow(&record, &tasks).await?;
        Ok(id)
    }

    /// Runs a stored workflow until it finishes or `cancel` fires. Also the way to
    /// resume: completed tasks are kept, interrupted ones run again.
    pub async fn run(
        &self,
        workflow_id: &str,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, GzError> {
        let record = self.store.find_workflow(workflow_id).await?;
        let me = current_owner();
        self.take_ownership(&record, &me).await?;
        fail::fail_point!("runtime.claimed");
        let result = execution::run_loop(self, record.clone(), cancel).await;
        if let (Some(remote), Ok(outcome)) = (&self.remote, &result) {
            if outcome.state.is_terminal() {
                remote.workflow_finished(&record.id).await;
            }
        }
        // Finishing clears the owner in the same commit; after an error or a
        // drain the workflow stays resumable, so let go of it explicitly.
        if !result.as_ref().is_ok_and(|o| o.state.is_terminal()) {
            let _ = self.store.claim(&record.id, Some(&me), None).await;
        }
        result
    }

    async fn take_ownership(&self, record: &WorkflowRecord, me: &Owner) -> Result<(), GzError> {
        // Decided on a fresh read: the claim below is a compare-and-set on it.
        let fresh = self.store.workflow(&record.id).await?;
        let fresh = fresh.as_ref().unwrap_or(record);
        ensure_resumable(fresh)?;
        let current = fresh.owner.clone();
        if self
            .store
            .claim(&record.id, current.as_ref(), Some(me))
            .await?
        {
            Ok(())
        } else {
            Err(GzError::new(
                ErrorCode::WorkflowNotResumable,
                format!(
                    "workflow {} was claimed by another process just now",
                    record.id
                ),
            ))
        }
    }

    /// Makes a failed workflow resumable again: every task that did not
    /// complete goes back to pending with a fresh retry budget, so `resume`
    /// runs them (used after a dead-lettered task's cause is fixed).
    pub async fn reopen(&self, workflow_id: &str) -> Result<WorkflowRecord, GzError> {
        let record = self.store.find_workflow(workflow_id).await?;
        if record.state != WorkflowState::Failed {
            return Err(GzError::new(
                ErrorCode::WorkflowNotResumable,
                format!(
                    "workflow {} is {}, only a failed workflow can be reopened",
                    record.id,
                    record.state.as_str()
                ),
            )
            .with_hint(
                "A running or interrupted workflow picks the task up with `gleitzeit resume ID`.",
            ));
        }
        let mut writes = Vec::new();
        for task in self.store.tasks(&record.id).await? {
            if task.state != gleitzeit_core::TaskState::Completed {
                writes.push(gleitzeit_store::Write::Task(TaskRecord::pending(
                    &record.id,
                    task.position,
                    &task.task_id,
                    &task.method,
                )));
            }
        }
        writes.push(gleitzeit_store::Write::Workflow {
            id: record.id.clone(),
            state: WorkflowState::Pending,
            at_ms: now_ms(),
            error: None,
        });
        self.store.apply(writes).await?;
        Ok(self.store.find_workflow(&record.id).await?)
    }

    /// Asks a workflow to stop. A run in this or another process sees the request
    /// and cancels; a workflow nobody runs is marked Cancelled at once.
    pub async fn cancel(&self, workflow_id: &str) -> Result<WorkflowRecord, GzError> {
        let record = self.store.find_workflow(workflow_id).await?;
        if record.state.is_terminal() {
            return Ok(record);
        }
        let running_elsewhere = record.owner.as_ref().is_some_and(process_alive);
        if running_elsewhere {
            self.store.request_cancel(&record.id).await?;
        } else {
            execution::cancel_unowned(self, &record).await?;
        }
        Ok(self.store.find_workflow(&record.id).await?)
    }
}

/// A finished workflow, or one a live process (not this one) runs, cannot be
/// resumed.
pub fn ensure_resumable(record: &WorkflowRecord) -> Result<(), GzError> {
    if record.state.is_terminal() {
        return Err(GzError::new(
            ErrorCode::WorkflowNotResumable,
            format!(
                "workflow {} is already {}",
                record.id,
                record.state.as_str()
            ),
        )
        .with_hint("Run or submit the workflow file again to start a new run."));
    }
    if let Some(owner) = &record.owner {
        if *owner != current_owner() && process_alive(owner) {
            return Err(GzError::new(
                ErrorCode::WorkflowNotResumable,
                format!(
                    "workflow {} is being run by process {} on {}",
                    record.id, owner.pid, owner.host
                ),
            )
            .with_hint("Wait for it to finish, or cancel it with `gleitzeit cancel ID`."));
        }
    }
    Ok(())
}

fn new_workflow_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("wf_{}", &id[..16])
}

pub fn current_owner() -> Owner {
    Owner {
        host: hostname(),
        pid: std::process::id(),
    }
}

/// This machine's name, as owners and worker nodes record it.
#[allow(unsafe_code)]
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether the process that owns a workflow still exists. Owners on other hosts
/// are assumed alive: only they can say otherwise.
#[allow(unsafe_code)]
pub fn process_alive(owner: &Owner) -> bool {
    if owner.host != hostname() {
        return true;
    }
    if owner.pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(owner.pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests;
