//! The workflows this server is executing. Each run is a task on the server's
//! tracker with its own cancel token; the store stays the truth about state.

use gleitzeit_core::{ErrorCode, GzError, WorkflowState};
use gleitzeit_runtime::{ensure_resumable, process_alive, Runtime};
use gleitzeit_store::{ListFilter, WorkflowRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

struct Active {
    cancel: CancellationToken,
    /// Becomes true when the run has returned.
    done: watch::Receiver<bool>,
}

#[derive(Clone)]
pub(crate) struct RunManager {
    runtime: Runtime,
    active: Arc<Mutex<HashMap<String, Active>>>,
    tracker: TaskTracker,
}

impl RunManager {
    pub fn new(runtime: Runtime) -> RunManager {
        RunManager {
            runtime,
            active: Arc::default(),
            tracker: TaskTracker::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Active>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn active_count(&self) -> usize {
        self.lock().len()
    }

    pub fn is_active(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Starts running a stored workflow in the background.
    pub fn start(&self, id: &str) -> Result<(), GzError> {
        if self.runtime.is_draining() {
            return Err(GzError::new(
                ErrorCode::ServerShuttingDown,
                "the server is shutting down and starts no new work",
            ));
        }
        let cancel = CancellationToken::new();
        let (done_tx, done) = watch::channel(false);
        {
            let mut active = self.lock();
            if active.contains_key(id) {
                return Err(already_running(id));
            }
            active.insert(
                id.to_string(),
                Active {
                    cancel: cancel.clone(),
                    done,
                },
            );
        }
        let runtime = self.runtime.clone();
        let active = self.active.clone();
        let id = id.to_string();
        self.tracker.spawn(async move {
            match runtime.run(&id, cancel).await {
                Ok(outcome) => tracing::info!("workflow {id} {}", outcome.state.as_str()),
                Err(error) => tracing::warn!("workflow {id} stopped: {error}"),
            }
            active.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            let _ = done_tx.send(true);
        });
        Ok(())
    }

    /// Cancels a workflow: at once if it runs here, through the store if
    /// another process runs it, directly if nobody does. Waits briefly for the
    /// run to record the cancellation so the answer shows the final state.
    pub async fn cancel(&self, id: &str) -> Result<WorkflowRecord, GzError> {
        let record = self.runtime.store().find_workflow(id).await?;
        let waiting = {
            let active = self.lock();
            active.get(&record.id).map(|a| {
                a.cancel.cancel();
                a.done.clone()
            })
        };
        match waiting {
            Some(mut done) => {
                let _ = tokio::time::timeout(Duration::from_secs(10), done.wait_for(|d| *d)).await;
            }
            None => {
                self.runtime.cancel(&record.id).await?;
            }
        }
        Ok(self.runtime.store().find_workflow(&record.id).await?)
    }

    /// Starts an interrupted workflow again; completed tasks are kept.
    pub async fn resume(&self, id: &str) -> Result<WorkflowRecord, GzError> {
        let record = self.runtime.store().find_workflow(id).await?;
        ensure_resumable(&record)?;
        if self.is_active(&record.id) {
            return Err(already_running(&record.id));
        }
        self.start(&record.id)?;
        Ok(record)
    }

    /// Adopts workflows nobody is running: those a killed process left
    /// `running`, and those submitted but never started.
    pub async fn resume_interrupted(&self) -> Result<Vec<String>, GzError> {
        let store = self.runtime.store();
        // Collect first: starting a workflow moves it between the lists.
        let mut candidates = Vec::new();
        for state in [WorkflowState::Running, WorkflowState::Pending] {
            let mut offset = 0;
            loop {
                let page = store
                    .list_workflows(&ListFilter {
                        submitted_by: None,
                        state: Some(state),
                        limit: 500,
                        offset,
                        schedule: None,
                    })
                    .await?;
                candidates.extend(page.iter().map(|w| w.id.clone()));
                if page.len() < 500 {
                    break;
                }
                offset += page.len();
            }
        }
        let mut adopted = Vec::new();
        for id in candidates {
            let Some(record) = store.workflow(&id).await? else {
                continue;
            };
            if record.state.is_terminal() {
                if let Some(error) = record
                    .error
                    .as_ref()
                    .filter(|e| e.code == ErrorCode::StoredRecordUnreadable)
                {
                    // Listed as unfinished but unreadable: record it failed,
                    // so listings agree and the next start does not look again.
                    tracing::warn!("workflow {} is failed: {error}", record.id);
                    let at_ms = gleitzeit_store::now_ms();
                    let failed = gleitzeit_core::events::WorkflowFailed {
                        name: record.name.clone(),
                        state: WorkflowState::Failed.as_str().to_string(),
                        task_results: None,
                        error: Some(error.clone()),
                    };
                    store
                        .apply(vec![
                            gleitzeit_store::Write::Workflow {
                                id: record.id.clone(),
                                state: WorkflowState::Failed,
                                at_ms,
                                error: Some(error.clone()),
                            },
                            gleitzeit_store::Write::Event(gleitzeit_core::events::Event::new(
                                gleitzeit_core::events::EventPayload::WorkflowFailed(failed),
                                record.id.clone(),
                                at_ms,
                            )),
                        ])
                        .await?;
                }
                continue;
            }
            if record.owner.as_ref().is_some_and(process_alive) || self.is_active(&record.id) {
                continue;
            }
            match self.start(&record.id) {
                Ok(()) => adopted.push(record.id),
                Err(error) => tracing::warn!("cannot resume {}: {error}", record.id),
            }
        }
        Ok(adopted)
    }

    /// Waits until every run has returned (after `Runtime::drain`), at most
    /// `grace`. True when all did.
    pub async fn wait_idle(&self, grace: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok()
    }
}

fn already_running(id: &str) -> GzError {
    GzError::new(
        ErrorCode::WorkflowNotResumable,
        format!("workflow {id} is already running on this server"),
    )
    .with_hint("Follow it with `gleitzeit watch workflow ID`, or cancel it first.")
}
