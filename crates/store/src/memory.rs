//! The in-memory store: the same contract as SQLite, gone when the process ends.

use crate::*;
use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    workflows: HashMap<String, WorkflowRecord>,
    /// Tasks per workflow, in insertion order, with an index by task id.
    tasks: HashMap<String, Tasks>,
    events: Vec<Event>,
    users: Vec<UserRecord>,
    keys: Vec<KeyRecord>,
    audit: Vec<AuditEntry>,
    cache: HashMap<String, CacheEntry>,
    schedules: Vec<ScheduleRecord>,
}

#[derive(Default)]
struct Tasks {
    records: Vec<TaskRecord>,
    by_id: HashMap<String, usize>,
}

impl Tasks {
    fn upsert(&mut self, task: TaskRecord) {
        match self.by_id.get(&task.task_id) {
            Some(&i) => self.records[i] = task,
            None => {
                self.by_id.insert(task.task_id.clone(), self.records.len());
                self.records.push(task);
            }
        }
    }
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave a half-applied batch visible
        // (batches are applied to clones first), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn summary(record: &WorkflowRecord, tasks: &[TaskRecord]) -> WorkflowSummary {
    WorkflowSummary {
        id: record.id.clone(),
        name: record.name.clone(),
        state: record.state,
        created_ms: record.created_ms,
        finished_ms: record.finished_ms,
        total: tasks.len() as u32,
        completed: tasks
            .iter()
            .filter(|t| t.state == TaskState::Completed)
            .count() as u32,
        failed: tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .count() as u32,
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_workflow(&self, workflow: &WorkflowRecord, tasks: &[TaskRecord]) -> Result<()> {
        crate::check_storable_workflow(workflow, tasks)?;
        let mut inner = self.lock();
        inner
            .workflows
            .insert(workflow.id.clone(), workflow.clone());
        let mut stored = Tasks::default();
        for task in tasks {
            stored.upsert(task.clone());
        }
        inner.tasks.insert(workflow.id.clone(), stored);
        Ok(())
    }

    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<u64>> {
        crate::check_storable_writes(&writes)?;
        let mut inner = self.lock();
        let mut seqs = Vec::new();
        for write in writes {
            match write {
                Write::Task(task) => inner
                    .tasks
                    .entry(task.workflow_id.clone())
                    .or_default()
                    .upsert(task),
                Write::Workflow {
                    id,
                    state,
                    at_ms,
                    error,
                } => {
                    if let Some(w) = inner.workflows.get_mut(&id) {
                        apply_workflow_state(w, state, at_ms, error);
                    }
                }
                Write::Event(mut event) => {
                    event.seq = inner.events.len() as u64 + 1;
                    seqs.push(event.seq);
                    inner.events.push(event);
                }
            }
        }
        Ok(seqs)
    }

    async fn workflow(&self, id: &str) -> Result<Option<WorkflowRecord>> {
        Ok(self.lock().workflows.get(id).cloned())
    }

    async fn find_workflow(&self, id_or_prefix: &str) -> Result<WorkflowRecord> {
        let inner = self.lock();
        if let Some(w) = inner.workflows.get(id_or_prefix) {
            return Ok(w.clone());
        }
        let matches: Vec<&WorkflowRecord> = inner
            .workflows
            .values()
            .filter(|w| w.id.starts_with(id_or_prefix))
            .collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::WorkflowNotFound(id_or_prefix.to_string())),
            many => Err(StoreError::Ambiguous(
                id_or_prefix.to_string(),
                many.iter()
                    .map(|w| w.id.as_str())
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    async fn find_workflow_of(
        &self,
        id_or_prefix: &str,
        submitted_by: &str,
    ) -> Result<WorkflowRecord> {
        let inner = self.lock();
        let theirs = |w: &&WorkflowRecord| w.submitted_by.as_deref() == Some(submitted_by);
        if let Some(w) = inner.workflows.get(id_or_prefix).filter(theirs) {
            return Ok(w.clone());
        }
        let matches: Vec<WorkflowRecord> = inner
            .workflows
            .values()
            .filter(theirs)
            .filter(|w| w.id.starts_with(id_or_prefix))
            .take(6)
            .cloned()
            .collect();
        crate::one_match(id_or_prefix, matches)
    }

    async fn tasks(&self, workflow_id: &str) -> Result<Vec<TaskRecord>> {
        let mut tasks = self
            .lock()
            .tasks
            .get(workflow_id)
            .map(|t| t.records.clone())
            .unwrap_or_default();
        tasks.sort_by_key(|t| t.position);
        Ok(tasks)
    }

    async fn list_workflows(&self, filter: &ListFilter) -> Result<Vec<WorkflowSummary>> {
        let inner = self.lock();
        let mut records: Vec<&WorkflowRecord> = inner
            .workflows
            .values()
            .filter(|w| filter.state.is_none_or(|s| w.state == s))
            .filter(|w| {
                filter
                    .schedule
                    .as_ref()
                    .is_none_or(|id| w.spec.trigger.as_ref().map(|t| &t.id) == Some(id))
            })
            .filter(|w| {
                filter
                    .submitted_by
                    .as_ref()
                    .is_none_or(|u| w.submitted_by.as_ref() == Some(u))
            })
            .collect();
        records.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id)));
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit
        };
        Ok(records
            .into_iter()
            .skip(filter.offset)
            .take(limit)
            .map(|w| {
                summary(
                    w,
                    inner
                        .tasks
                        .get(&w.id)
                        .map(|t| t.records.as_slice())
                        .unwrap_or(&[]),
                )
            })
            .collect())
    }

    async fn request_cancel(&self, workflow_id: &str) -> Result<()> {
        match self.lock().workflows.get_mut(workflow_id) {
            Some(w) => {
                w.cancel_requested = true;
                Ok(())
            }
            None => Err(StoreError::WorkflowNotFound(workflow_id.to_string())),
        }
    }

    async fn claim(
        &self,
        workflow_id: &str,
        expected: Option<&Owner>,
        owner: Option<&Owner>,
    ) -> Result<bool> {
        let mut inner = self.lock();
        let Some(w) = inner.workflows.get_mut(workflow_id) else {
            return Err(StoreError::WorkflowNotFound(workflow_id.to_string()));
        };
        if w.owner.as_ref() != expected {
            return Ok(false);
        }
        w.owner = owner.cloned();
        if owner.is_some() {
            w.cancel_requested = false;
        }
        Ok(true)
    }

    async fn events(
        &self,
        workflow_id: Option<&str>,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let inner = self.lock();
        // Events are appended in sequence order.
        let start = inner.events.partition_point(|e| e.seq <= after_seq);
        Ok(inner.events[start..]
            .iter()
            .filter(|e| workflow_id.is_none_or(|id| e.workflow_id == id))
            .take(if limit == 0 { usize::MAX } else { limit })
            .cloned()
            .collect())
    }

    async fn events_submitted_by(
        &self,
        user: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Event>> {
        let inner = self.lock();
        let theirs: std::collections::HashSet<&str> = inner
            .workflows
            .values()
            .filter(|w| w.submitted_by.as_deref() == Some(user))
            .map(|w| w.id.as_str())
            .collect();
        let start = inner.events.partition_point(|e| e.seq <= after_seq);
        Ok(inner.events[start..]
            .iter()
            .filter(|e| theirs.contains(e.workflow_id.as_str()))
            .take(if limit == 0 { usize::MAX } else { limit })
            .cloned()
            .collect())
    }

    async fn put_user(&self, user: &UserRecord) -> Result<()> {
        let mut inner = self.lock();
        inner.users.retain(|u| u.name != user.name);
        inner.users.push(user.clone());
        Ok(())
    }

    async fn users(&self) -> Result<Vec<UserRecord>> {
        let mut users = self.lock().users.clone();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    async fn put_key(&self, key: &KeyRecord) -> Result<()> {
        let mut inner = self.lock();
        inner.keys.retain(|k| k.id != key.id);
        inner.keys.push(key.clone());
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>> {
        let mut keys = self.lock().keys.clone();
        keys.sort_by_key(|k| k.created_ms);
        Ok(keys)
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>> {
        Ok(self.lock().keys.iter().find(|k| k.hash == hash).cloned())
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<u64> {
        let mut inner = self.lock();
        let seq = inner.audit.len() as u64 + 1;
        inner.audit.push(AuditEntry {
            seq,
            ..entry.clone()
        });
        Ok(seq)
    }

    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let inner = self.lock();
        Ok(inner
            .audit
            .iter()
            .filter(|e| e.seq > after)
            .take(if limit == 0 { usize::MAX } else { limit })
            .cloned()
            .collect())
    }

    async fn cache_get(&self, key: &str, now_ms: i64) -> Result<Option<CacheEntry>> {
        Ok(self
            .lock()
            .cache
            .get(key)
            .filter(|e| e.is_live(now_ms))
            .cloned())
    }

    async fn cache_put(&self, entry: &CacheEntry) -> Result<()> {
        let mut inner = self.lock();
        let now = entry.created_ms;
        inner.cache.retain(|_, e| e.is_live(now));
        inner.cache.insert(entry.key.clone(), entry.clone());
        Ok(())
    }

    async fn cache_clear(&self) -> Result<u64> {
        let mut inner = self.lock();
        let n = inner.cache.len() as u64;
        inner.cache.clear();
        Ok(n)
    }

    async fn cache_stats(&self, now_ms: i64) -> Result<CacheStats> {
        let inner = self.lock();
        let mut stats = CacheStats::default();
        for entry in inner.cache.values() {
            if entry.is_live(now_ms) {
                stats.entries += 1;
            } else {
                stats.expired += 1;
            }
            stats.bytes += entry.result.to_string().len() as u64;
        }
        Ok(stats)
    }

    async fn latest_event_seq(&self) -> Result<u64> {
        Ok(self.lock().events.last().map_or(0, |e| e.seq))
    }

    async fn latest_event_seq_of(&self, workflow_id: &str) -> Result<u64> {
        Ok(self
            .lock()
            .events
            .iter()
            .rev()
            .find(|e| e.workflow_id == workflow_id)
            .map_or(0, |e| e.seq))
    }

    async fn tasks_finished_since(&self, since_ms: i64, limit: usize) -> Result<Vec<TaskRecord>> {
        let inner = self.lock();
        let mut tasks: Vec<TaskRecord> = inner
            .tasks
            .values()
            .flat_map(|t| &t.records)
            .filter(|t| t.finished_ms.is_some_and(|f| f >= since_ms))
            .cloned()
            .collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.finished_ms));
        if limit > 0 {
            tasks.truncate(limit);
        }
        Ok(tasks)
    }

    async fn stats(&self) -> Result<StoreStats> {
        let inner = self.lock();
        let mut workflows: HashMap<&'static str, u64> = HashMap::new();
        for w in inner.workflows.values() {
            *workflows.entry(w.state.as_str()).or_default() += 1;
        }
        let mut tasks: HashMap<&'static str, u64> = HashMap::new();
        for t in inner.tasks.values().flat_map(|t| &t.records) {
            *tasks.entry(t.state.as_str()).or_default() += 1;
        }
        let sorted = |m: HashMap<&'static str, u64>| {
            let mut v: Vec<(String, u64)> =
                m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            v.sort();
            v
        };
        Ok(StoreStats {
            workflows_by_state: sorted(workflows),
            tasks_by_state: sorted(tasks),
        })
    }

    async fn put_schedule(&self, schedule: &ScheduleRecord, expected: Option<u64>) -> Result<bool> {
        check_storable_schedule(schedule)?;
        let mut inner = self.lock();
        let current = inner.schedules.iter().position(|s| s.id == schedule.id);
        let stored_version = current.map(|i| inner.schedules[i].version);
        if stored_version != expected {
            return Ok(false);
        }
        let mut record = schedule.clone();
        record.version = expected.unwrap_or(0) + 1;
        match current {
            Some(i) => inner.schedules[i] = record,
            None => inner.schedules.push(record),
        }
        Ok(true)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let mut all = self.lock().schedules.clone();
        all.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(all)
    }

    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        Ok(self.lock().schedules.iter().find(|s| s.id == id).cloned())
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool> {
        let mut inner = self.lock();
        let before = inner.schedules.len();
        inner.schedules.retain(|s| s.id != id);
        Ok(inner.schedules.len() != before)
    }
}

pub(crate) fn apply_workflow_state(
    w: &mut WorkflowRecord,
    state: WorkflowState,
    at_ms: i64,
    error: Option<GzError>,
) {
    if state == WorkflowState::Running && w.started_ms.is_none() {
        w.started_ms = Some(at_ms);
    }
    if state.is_terminal() {
        w.finished_ms = Some(at_ms);
        w.owner = None;
    } else {
        w.finished_ms = None;
    }
    w.state = state;
    w.error = error;
}
