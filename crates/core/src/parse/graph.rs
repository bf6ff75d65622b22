//! The graph phase: ids and names to task indexes, dependencies resolved,
//! cycles found, and reachability for the reference checks.

use super::diagnostics::{suggest, Ctx};
use super::tasks::RawTask;
use crate::errors::ErrorCode;
use crate::model::TaskSpec;
use std::collections::{HashMap, HashSet};

/// The tasks' dependencies, resolved: which task each id or name belongs to,
/// each task's dependencies as indexes, and a cycle among them if there is one.
pub(super) struct Graph {
    /// Ids and names share one namespace: references may use either.
    pub(super) owner: HashMap<String, usize>,
    /// Every id and name, for resolving references.
    pub(super) names: HashSet<String>,
    pub(super) deps: Vec<Vec<usize>>,
    pub(super) cycle: Option<Vec<usize>>,
}

/// Resolves the dependencies of `tasks`, reporting duplicate ids, unknown or
/// self dependencies, and a cycle.
pub(super) fn build_graph(ctx: &mut Ctx, tasks: &[RawTask]) -> Graph {
    let owner = task_owners(ctx, tasks);
    let deps = dependency_indexes(ctx, tasks, &owner);
    let cycle = find_cycle(&deps);
    if let Some(cycle) = &cycle {
        let path: Vec<&str> = cycle.iter().map(|&i| tasks[i].spec.id.as_str()).collect();
        ctx.push(
            ErrorCode::DependencyCycle,
            tasks[cycle[0]].pos,
            format!("dependency cycle: {}", path.join(" -> ")),
            None,
        );
    }
    let names = owner.keys().cloned().collect();
    Graph {
        owner,
        names,
        deps,
        cycle,
    }
}

impl Graph {
    /// The task specs, with dependencies stored as task ids, whichever of id
    /// or name was written.
    pub(super) fn task_specs(&self, tasks: Vec<RawTask>) -> Vec<TaskSpec> {
        let id_of: Vec<String> = tasks.iter().map(|t| t.spec.id.clone()).collect();
        tasks
            .into_iter()
            .enumerate()
            .map(|(i, mut t)| {
                t.spec.dependencies = self.deps[i].iter().map(|&j| id_of[j].clone()).collect();
                t.spec
            })
            .collect()
    }
}

/// The task each id and name belongs to; a second task with the same key is reported.
fn task_owners(ctx: &mut Ctx, tasks: &[RawTask]) -> HashMap<String, usize> {
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, task) in tasks.iter().enumerate() {
        let mut keys = vec![task.spec.id.clone()];
        if let Some(n) = &task.spec.name {
            if n != &task.spec.id {
                keys.push(n.clone());
            }
        }
        for key in keys {
            if let Some(&other) = owner.get(&key) {
                ctx.push(
                    ErrorCode::DuplicateTaskId,
                    task.pos,
                    format!(
                        "task `{key}` is defined twice (first at line {})",
                        tasks[other].pos.line
                    ),
                    None,
                );
            } else {
                owner.insert(key, i);
            }
        }
    }
    owner
}

/// Each task's dependencies as indexes into `tasks`, without repeats.
fn dependency_indexes(
    ctx: &mut Ctx,
    tasks: &[RawTask],
    owner: &HashMap<String, usize>,
) -> Vec<Vec<usize>> {
    let mut dep_index: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        let mut seen = HashSet::new();
        for (dep, pos) in &task.deps {
            match owner.get(dep) {
                Some(&j) if j == i => ctx.push(
                    ErrorCode::DependencyCycle,
                    *pos,
                    format!("task `{}` depends on itself", task.spec.id),
                    None,
                ),
                Some(&j) => {
                    if seen.insert(j) {
                        dep_index[i].push(j);
                    }
                }
                None => {
                    let hint = suggest(dep, owner.keys().map(String::as_str))
                        .map(|s| format!("Did you mean `{s}`?"));
                    ctx.push(
                        ErrorCode::MissingDependency,
                        *pos,
                        format!(
                            "task `{}` depends on `{dep}`, which is not a task in this workflow",
                            task.spec.id
                        ),
                        hint,
                    );
                }
            }
        }
    }
    dep_index
}

/// Reachability over the dependency graph (which must have no cycle), one
/// query at a time: an iterative search with generation marks, so nothing is
/// allocated per query and no recursion follows a long chain.
pub(super) struct Ancestry<'d> {
    deps: &'d [Vec<usize>],
    /// Each task's direct dependencies, sorted: most references name one.
    direct: Vec<Vec<usize>>,
    seen: Vec<u32>,
    generation: u32,
    stack: Vec<usize>,
    /// Search steps left; a document whose references need more is refused
    /// rather than validated for minutes.
    budget: usize,
    /// For each task that references have named, the tasks found to depend
    /// on it: a later search stops at any of them (a chain whose every task
    /// refers to the first costs one step per task, not the chain's length).
    known: HashMap<usize, HashSet<usize>>,
}

/// Search steps all reference checks of one document may take together.
const ANCESTRY_BUDGET: usize = 50_000_000;

impl<'d> Ancestry<'d> {
    pub(super) fn new(deps: &'d [Vec<usize>]) -> Self {
        Ancestry {
            deps,
            direct: deps
                .iter()
                .map(|d| {
                    let mut sorted = d.clone();
                    sorted.sort_unstable();
                    sorted
                })
                .collect(),
            seen: vec![0; deps.len()],
            generation: 0,
            stack: Vec::new(),
            budget: ANCESTRY_BUDGET,
            known: HashMap::new(),
        }
    }

    pub(super) fn exhausted(&self) -> bool {
        self.budget == 0
    }

    /// Whether `ancestor` is a (transitive) dependency of `task`. Once the
    /// budget is spent every answer is `true` (the caller reports the
    /// document as too complex instead).
    pub(super) fn precedes(&mut self, ancestor: usize, task: usize) -> bool {
        let Some(direct) = self.direct.get(task) else {
            return false;
        };
        if direct.binary_search(&ancestor).is_ok() || self.budget == 0 {
            return true;
        }
        let known = self.known.entry(ancestor).or_default();
        if known.contains(&task) {
            return true;
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.seen.iter_mut().for_each(|mark| *mark = 0);
            self.generation = 1;
        }
        self.stack.clear();
        self.stack.push(task);
        while let Some(node) = self.stack.pop() {
            for &dep in &self.deps[node] {
                self.budget = self.budget.saturating_sub(1);
                if self.budget == 0 {
                    return true;
                }
                if dep == ancestor || known.contains(&dep) {
                    known.insert(task);
                    return true;
                }
                if self.seen[dep] != self.generation {
                    self.seen[dep] = self.generation;
                    self.stack.push(dep);
                }
            }
        }
        false
    }
}

/// Finds a dependency cycle, returned as task indexes with the first repeated last.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; deps.len()];
    for start in 0..deps.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next child index); the stack is the current path.
        let mut stack = vec![(start, 0usize)];
        marks[start] = Mark::Active;
        while let Some(&mut (node, ref mut child)) = stack.last_mut() {
            if let Some(&next) = deps[node].get(*child) {
                *child += 1;
                match marks[next] {
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    Mark::New => {
                        marks[next] = Mark::Active;
                        stack.push((next, 0));
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}
