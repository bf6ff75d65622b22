//! The scheduler: a pure state machine over one workflow's tasks.
//!
//! It is fed [`Input`]s (a task succeeded, failed, a retry timer fired, the user
//! cancelled) and answers with [`Action`]s (run this task, retry that one after a
//! delay, skip these, the workflow is finished). It has no clock, no I/O and no
//! randomness, so every decision is reproducible in a unit test; the runtime
//! performs the actions and owns time, results and persistence.

use crate::errors::ErrorCode;
use crate::model::{OnError, OnSkip, Priority, RetryPolicy, TaskState, Workflow, WorkflowState};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

pub type TaskIdx = usize;

/// What the scheduler needs to know about one task.
#[derive(Debug, Clone)]
pub struct PlanTask {
    pub deps: Vec<TaskIdx>,
    pub priority: Priority,
    /// Index of the concurrency lane (one per provider) the task runs in.
    pub lane: usize,
    pub on_error: OnError,
    pub retry: RetryPolicy,
    pub on_skip: OnSkip,
}

/// The static shape of a workflow for scheduling, plus concurrency limits.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tasks: Vec<PlanTask>,
    /// Max tasks running at once per lane.
    pub lane_limits: Vec<usize>,
    /// Max tasks running at once in the whole workflow.
    pub global_limit: usize,
}

impl Plan {
    /// Builds a plan; `lane_of` maps a task's protocol to its lane index.
    pub fn from_workflow(
        workflow: &Workflow,
        lane_limits: Vec<usize>,
        global_limit: usize,
        lane_of: impl Fn(&str) -> usize,
    ) -> Plan {
        let index = workflow.index();
        let tasks = workflow
            .tasks
            .iter()
            .map(|t| PlanTask {
                deps: t
                    .dependencies
                    .iter()
                    .filter_map(|d| index.get(d.as_str()).copied())
                    .collect(),
                priority: t.priority,
                lane: lane_of(t.protocol()),
                on_error: t.on_error,
                retry: t.retry.clone(),
                on_skip: t.on_skip,
            })
            .collect();
        Plan {
            tasks,
            lane_limits,
            global_limit,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start,
    Succeeded {
        task: TaskIdx,
    },
    Failed {
        task: TaskIdx,
        code: ErrorCode,
        retryable: bool,
    },
    RetryDue {
        task: TaskIdx,
    },
    /// A running task stopped after an [`Action::Abort`].
    Aborted {
        task: TaskIdx,
    },
    /// Answer to an [`Action::Run`], before anything started: the task's `when`
    /// condition is false. The task is skipped, and so are the dependants that
    /// do not say `on_skip: run`.
    ConditionFalse {
        task: TaskIdx,
    },
    Cancel,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start attempt `attempt` (1-based) of the task.
    Run {
        task: TaskIdx,
        attempt: u32,
    },
    Completed {
        task: TaskIdx,
    },
    /// The attempt failed and another comes after `delay` (before jitter).
    Retry {
        task: TaskIdx,
        next_attempt: u32,
        delay: Duration,
    },
    /// The task failed for good.
    Failed {
        task: TaskIdx,
    },
    /// Not run because `cause` failed or was skipped, or the workflow stopped;
    /// without a cause, because its own `when` condition is false.
    Skipped {
        task: TaskIdx,
        cause: Option<TaskIdx>,
    },
    /// Not run (or its retry dropped) because the workflow was cancelled.
    Cancelled {
        task: TaskIdx,
    },
    /// Stop a running task; answer with [`Input::Aborted`].
    Abort {
        task: TaskIdx,
    },
    Finished {
        state: WorkflowState,
    },
}

#[derive(Debug)]
pub struct Scheduler {
    plan: Plan,
    dependants: Vec<Vec<TaskIdx>>,
    states: Vec<TaskState>,
    attempts: Vec<u32>,
    waiting_on: Vec<usize>,
    /// One ready queue per lane: highest priority first, then file order.
    ready: Vec<BinaryHeap<(Priority, Reverse<TaskIdx>)>>,
    running_in_lane: Vec<usize>,
    running: usize,
    stopped_by: Option<TaskIdx>,
    cancelled: bool,
    started: bool,
    finished: Option<WorkflowState>,
}

impl Scheduler {
    pub fn new(plan: Plan) -> Scheduler {
        let n = plan.tasks.len();
        let mut dependants = vec![Vec::new(); n];
        for (i, task) in plan.tasks.iter().enumerate() {
            for &d in &task.deps {
                dependants[d].push(i);
            }
        }
        let lanes = plan
            .tasks
            .iter()
            .map(|t| t.lane + 1)
            .max()
            .unwrap_or(0)
            .max(plan.lane_limits.len());
        Scheduler {
            dependants,
            states: vec![TaskState::Pending; n],
            attempts: vec![0; n],
            waiting_on: vec![0; n],
            ready: vec![BinaryHeap::new(); lanes],
            running_in_lane: vec![0; lanes],
            running: 0,
            stopped_by: None,
            cancelled: false,
            started: false,
            finished: None,
            plan,
        }
    }

    /// Before [`Input::Start`]: a task's state as recovered from the store.
    /// Terminal states stay; anything else runs again, keeping its attempt count.
    pub fn restore(&mut self, task: TaskIdx, state: TaskState, attempts_done: u32) {
        self.attempts[task] = attempts_done;
        self.states[task] = if state.is_terminal() {
            state
        } else {
            TaskState::Pending
        };
    }

    pub fn state(&self, task: TaskIdx) -> TaskState {
        self.states[task]
    }

    pub fn attempts(&self, task: TaskIdx) -> u32 {
        self.attempts[task]
    }

    pub fn finished(&self) -> Option<WorkflowState> {
        self.finished
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn handle(&mut self, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.finished.is_some() {
            return actions;
        }
        match input {
            Input::Start => self.start(&mut actions),
            Input::Succeeded { task } => {
                if self.states[task] == TaskState::Running {
                    self.leave_running(task);
                    self.states[task] = TaskState::Completed;
                    actions.push(Action::Completed { task });
                    self.resolve(task, &mut actions);
                }
            }
            Input::Failed {
                task,
                code,
                retryable,
            } => {
                if self.states[task] == TaskState::Running {
                    self.leave_running(task);
                    let attempt = self.attempts[task];
                    let policy = &self.plan.tasks[task].retry;
                    if !self.cancelled
                        && self.stopped_by.is_none()
                        && policy.should_retry(code, retryable, attempt)
                    {
                        self.states[task] = TaskState::Retrying;
                        actions.push(Action::Retry {
                            task,
                            next_attempt: attempt + 1,
                            delay: policy.base_delay_after(attempt),
                        });
                    } else {
                        self.states[task] = TaskState::Failed;
                        actions.push(Action::Failed { task });
                        self.resolve(task, &mut actions);
                    }
                }
            }
            Input::RetryDue { task } => {
                if self.states[task] == TaskState::Retrying {
                    self.states[task] = TaskState::Ready;
                    let lane = self.plan.tasks[task].lane;
                    self.ready[lane].push((self.plan.tasks[task].priority, Reverse(task)));
                }
            }
            Input::ConditionFalse { task } => {
                if self.states[task] == TaskState::Running {
                    self.leave_running(task);
                    self.skip_now(task, None, &mut actions);
                }
            }
            Input::Aborted { task } => {
                if self.states[task] == TaskState::Running {
                    self.leave_running(task);
                    self.states[task] = TaskState::Cancelled;
                    actions.push(Action::Cancelled { task });
                }
            }
            Input::Cancel => {
                if !self.cancelled {
                    self.cancelled = true;
                    for task in 0..self.states.len() {
                        match self.states[task] {
                            TaskState::Running => actions.push(Action::Abort { task }),
                            s if !s.is_terminal() => {
                                self.states[task] = TaskState::Cancelled;
                                actions.push(Action::Cancelled { task });
                            }
                            _ => {}
                        }
                    }
                    for heap in &mut self.ready {
                        heap.clear();
                    }
                }
            }
        }
        if self.started {
            self.dispatch(&mut actions);
            self.check_finished(&mut actions);
        }
        actions
    }

    fn start(&mut self, actions: &mut Vec<Action>) {
        if self.started {
            return;
        }
        self.started = true;
        // Counts first, skips after: a skip releases dependants (`on_skip:
        // run`), whose counts must already include it.
        let mut skips = Vec::new();
        for task in 0..self.states.len() {
            if self.states[task].is_terminal() {
                continue;
            }
            let mut waiting = 0;
            let mut skip_cause = None;
            for &dep in &self.plan.tasks[task].deps {
                match self.dep_outcome(dep, task) {
                    DepOutcome::Satisfied => {}
                    DepOutcome::Pending => waiting += 1,
                    DepOutcome::Skip => skip_cause = Some(dep),
                    DepOutcome::Stop => {
                        self.stopped_by.get_or_insert(dep);
                    }
                }
            }
            self.waiting_on[task] = waiting;
            if let Some(cause) = skip_cause {
                skips.push((task, cause));
            }
        }
        for (task, cause) in skips {
            self.skip(task, Some(cause), actions);
        }
        if let Some(cause) = self.stopped_by {
            self.stop_all(cause, actions);
            return;
        }
        for task in 0..self.states.len() {
            if self.states[task] == TaskState::Pending && self.waiting_on[task] == 0 {
                self.make_ready(task);
            }
        }
    }

    /// What `dep`'s state means for `dependant`.
    fn dep_outcome(&self, dep: TaskIdx, dependant: TaskIdx) -> DepOutcome {
        match self.states[dep] {
            TaskState::Completed => DepOutcome::Satisfied,
            TaskState::Failed => match self.plan.tasks[dep].on_error {
                OnError::Continue => DepOutcome::Satisfied,
                OnError::Skip => DepOutcome::Skip,
                OnError::Stop | OnError::Retry => DepOutcome::Stop,
            },
            TaskState::Skipped if self.plan.tasks[dependant].on_skip == OnSkip::Run => {
                DepOutcome::Satisfied
            }
            TaskState::Skipped | TaskState::Cancelled => DepOutcome::Skip,
            _ => DepOutcome::Pending,
        }
    }

    fn make_ready(&mut self, task: TaskIdx) {
        self.states[task] = TaskState::Ready;
        let lane = self.plan.tasks[task].lane;
        self.ready[lane].push((self.plan.tasks[task].priority, Reverse(task)));
    }

    fn leave_running(&mut self, task: TaskIdx) {
        self.running -= 1;
        self.running_in_lane[self.plan.tasks[task].lane] -= 1;
    }

    /// A task reached a terminal state: tell its dependants.
    fn resolve(&mut self, task: TaskIdx, actions: &mut Vec<Action>) {
        if self.states[task] == TaskState::Failed
            && matches!(
                self.plan.tasks[task].on_error,
                OnError::Stop | OnError::Retry
            )
        {
            if self.stopped_by.is_none() {
                self.stopped_by = Some(task);
                self.stop_all(task, actions);
            }
            return;
        }
        for i in 0..self.dependants[task].len() {
            let dependant = self.dependants[task][i];
            match self.dep_outcome(task, dependant) {
                DepOutcome::Satisfied => self.release(dependant),
                DepOutcome::Skip => self.skip(dependant, Some(task), actions),
                DepOutcome::Stop | DepOutcome::Pending => {}
            }
        }
    }

    /// One dependency of `dependant` is done with an outcome it accepts.
    fn release(&mut self, dependant: TaskIdx) {
        if self.states[dependant] != TaskState::Pending {
            return;
        }
        self.waiting_on[dependant] -= 1;
        if self.waiting_on[dependant] == 0 && self.stopped_by.is_none() && !self.cancelled {
            self.make_ready(dependant);
        }
    }

    fn skip(&mut self, task: TaskIdx, cause: Option<TaskIdx>, actions: &mut Vec<Action>) {
        if matches!(self.states[task], TaskState::Pending | TaskState::Ready) {
            self.skip_now(task, cause, actions);
        }
    }

    fn skip_now(&mut self, task: TaskIdx, cause: Option<TaskIdx>, actions: &mut Vec<Action>) {
        self.states[task] = TaskState::Skipped;
        actions.push(Action::Skipped { task, cause });
        self.resolve(task, actions);
    }

    /// After a failure with `on_error: stop`, nothing new starts; running tasks finish.
    fn stop_all(&mut self, cause: TaskIdx, actions: &mut Vec<Action>) {
        for heap in &mut self.ready {
            heap.clear();
        }
        for task in 0..self.states.len() {
            if matches!(
                self.states[task],
                TaskState::Pending | TaskState::Ready | TaskState::Retrying
            ) {
                self.states[task] = TaskState::Skipped;
                actions.push(Action::Skipped {
                    task,
                    cause: Some(cause),
                });
            }
        }
    }

    fn dispatch(&mut self, actions: &mut Vec<Action>) {
        if self.cancelled || self.stopped_by.is_some() {
            return;
        }
        while self.running < self.plan.global_limit.max(1) {
            // The best ready task among lanes that have room.
            let mut best: Option<(usize, (Priority, Reverse<TaskIdx>))> = None;
            for (lane, heap) in self.ready.iter().enumerate() {
                let limit = self
                    .plan
                    .lane_limits
                    .get(lane)
                    .copied()
                    .unwrap_or(usize::MAX)
                    .max(1);
                if self.running_in_lane[lane] >= limit {
                    continue;
                }
                if let Some(&top) = heap.peek() {
                    if best.is_none_or(|(_, b)| top > b) {
                        best = Some((lane, top));
                    }
                }
            }
            let Some((lane, _)) = best else { break };
            let Some((_, Reverse(task))) = self.ready[lane].pop() else {
                break;
            };
            self.states[task] = TaskState::Running;
            self.attempts[task] += 1;
            self.running += 1;
            self.running_in_lane[lane] += 1;
            actions.push(Action::Run {
                task,
                attempt: self.attempts[task],
            });
        }
    }

    fn check_finished(&mut self, actions: &mut Vec<Action>) {
        if self.running > 0 || self.finished.is_some() {
            return;
        }
        // Cancel and stop turn every task that is not running terminal at once,
        // so once nothing runs, everything is terminal.
        if !self.states.iter().all(|s| s.is_terminal()) {
            return;
        }
        let state = if self.cancelled {
            WorkflowState::Cancelled
        } else if self.stopped_by.is_some()
            || self.states.iter().enumerate().any(|(i, s)| {
                *s == TaskState::Failed
                    && matches!(self.plan.tasks[i].on_error, OnError::Stop | OnError::Retry)
            })
        {
            WorkflowState::Failed
        } else {
            WorkflowState::Completed
        };
        self.finished = Some(state);
        actions.push(Action::Finished { state });
    }
}

enum DepOutcome {
    Satisfied,
    Pending,
    Skip,
    Stop,
}

#[cfg(test)]
mod tests;
