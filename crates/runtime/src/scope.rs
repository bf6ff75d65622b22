//! What references see while a workflow runs: finished tasks' result records,
//! workflow inputs and allowed environment variables.

use gleitzeit_core::model::primary_field;
use gleitzeit_core::refs::{Names, Scope, TaskView};
use gleitzeit_core::Workflow;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

pub(crate) struct RunScope<'a> {
    pub workflow: &'a Workflow,
    pub index: &'a HashMap<String, usize>,
    /// Result record per task index; failed tasks hold `{"error": …}`.
    pub records: &'a dyn Records,
    pub allowed_env: &'a [String],
    /// `${item}` and `${index}` of one `for_each` instance.
    pub item: Option<(&'a Value, usize)>,
}

/// Finished tasks' result records by task index, wherever a run keeps them.
pub(crate) trait Records {
    fn record(&self, task: usize) -> Option<&Value>;
}

impl Records for Vec<Option<Value>> {
    fn record(&self, task: usize) -> Option<&Value> {
        self.get(task)?.as_ref()
    }
}

impl Scope for RunScope<'_> {
    fn task(&self, id_or_name: &str) -> Option<TaskView<'_>> {
        let index = *self.index.get(id_or_name)?;
        let record = self.records.record(index)?;
        Some(TaskView {
            record,
            primary: primary_field(&self.workflow.tasks[index].method),
        })
    }

    fn input(&self, name: &str) -> Option<&Value> {
        self.workflow.inputs.get(name)
    }

    fn item(&self) -> Option<&Value> {
        self.item.map(|(item, _)| item)
    }

    fn index(&self) -> Option<usize> {
        self.item.map(|(_, index)| index)
    }

    fn env(&self, name: &str) -> Option<String> {
        if self.allowed_env.iter().any(|allowed| allowed == name) {
            std::env::var(name).ok()
        } else {
            None
        }
    }
}

/// Task ids and names of a workflow, for matching reference roots.
pub(crate) struct TaskNames(pub HashSet<String>);

impl TaskNames {
    pub fn of(workflow: &Workflow) -> TaskNames {
        let mut names = HashSet::with_capacity(workflow.tasks.len() * 2);
        for task in &workflow.tasks {
            names.insert(task.id.clone());
            if let Some(name) = &task.name {
                names.insert(name.clone());
            }
        }
        TaskNames(names)
    }
}

impl Names for TaskNames {
    fn is_task(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}
