//! The references phase: every `${…}` in outputs, parameters, cache keys,
//! conditions and `for_each` names an input or a task this one depends on.

use super::diagnostics::Ctx;
use super::graph::{Ancestry, Graph};
use super::tasks::RawTask;
use crate::errors::{ErrorCode, GzError};
use crate::expr;
use crate::limits::{Limit, Limits};
use crate::model::ForEach;
use crate::refs::{self, Root};
use crate::yaml::{Node, NodeKind, Pos, Scalar};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// Collects (reference result, position) for every string inside a params node.
fn references_in(
    node: &Node,
    names: &dyn refs::Names,
    out: &mut Vec<(Result<refs::Reference, GzError>, Pos)>,
) {
    match &node.kind {
        NodeKind::Scalar(Scalar::Str(s)) if refs::has_reference(s) => {
            let mut found = Vec::new();
            refs::collect_references(&Value::String(s.clone()), names, &mut found);
            out.extend(found.into_iter().map(|r| (r, node.pos)));
        }
        NodeKind::Seq(items) => items.iter().for_each(|n| references_in(n, names, out)),
        NodeKind::Map(entries) => entries
            .iter()
            .for_each(|(_, v)| references_in(v, names, out)),
        _ => {}
    }
}

/// The position of byte `offset` of `value`, a scalar that starts at `at`.
/// Exact for one-line plain and quoted scalars (the common `when: "…"`); for
/// anything else (block scalars, escapes before the offset) the scalar's start.
fn position_in(text: &str, at: Pos, value: &str, offset: usize) -> Pos {
    let Some(line) = text.lines().nth(at.line.saturating_sub(1)) else {
        return at;
    };
    let rest: String = line.chars().skip(at.column.saturating_sub(1)).collect();
    let quoted = rest.starts_with(['"', '\'']);
    let body = if quoted { &rest[1..] } else { rest.as_str() };
    match value.get(..offset) {
        Some(before) if body.starts_with(before) => Pos {
            line: at.line,
            column: at.column + usize::from(quoted) + before.chars().count(),
        },
        _ => at,
    }
}

/// The workflow's `outputs`, each checked to name only declared inputs and
/// no loop variables.
pub(super) fn check_outputs(
    ctx: &mut Ctx,
    outputs_node: Option<&Node>,
    names: &HashSet<String>,
    inputs: &Map<String, Value>,
) -> Map<String, Value> {
    let mut outputs = Map::new();
    if let Some(node) = outputs_node {
        match node.as_map() {
            Some(entries) => {
                for (key, value) in entries {
                    let mut found = Vec::new();
                    references_in(value, names, &mut found);
                    for (reference, pos) in found {
                        match reference {
                            Err(e) => ctx.push(e.code, pos, e.message.clone(), e.hint.clone()),
                            Ok(r) => match &r.root {
                                Root::Input(name) if !inputs.contains_key(name) => ctx.push(
                                    ErrorCode::InvalidInput,
                                    pos,
                                    format!("output refers to `{}`, but there is no input `{name}`", r.text),
                                    None,
                                ),
                                Root::Item | Root::Index => ctx.push(
                                    ErrorCode::InvalidReference,
                                    pos,
                                    format!("`{}` is only defined in the parameters of `for_each` tasks", r.text),
                                    None,
                                ),
                                _ => {}
                            },
                        }
                    }
                    outputs.insert(key.key_text().unwrap_or_default(), value.to_json());
                }
            }
            None => ctx.wrong_type(node, "outputs", "a mapping of names to references"),
        }
    }
    outputs
}

/// Checks every reference of every task: the task it names is one this task
/// depends on, the input it names is declared, and loop variables appear only
/// where a `for_each` defines them.
pub(super) fn check_task_references(
    ctx: &mut Ctx,
    text: &str,
    tasks: &[RawTask],
    graph: &Graph,
    inputs: &Map<String, Value>,
    limits: &Limits,
    root_pos: Pos,
) {
    let Graph {
        owner,
        names,
        deps,
        cycle,
    } = graph;
    // Whether a referenced task runs before the referring one: answered per
    // reference by a search over dependencies, not by ancestor sets of every
    // task (quadratic in memory for a long chain).
    let mut ancestry = Ancestry::new(deps);
    for (i, task) in tasks.iter().enumerate() {
        let fans_out = task.spec.for_each.is_some();
        let mut found = Vec::new();
        if let Some(params) = task.params_node {
            references_in(params, names, &mut found);
        }
        let mut check = |ctx: &mut Ctx,
                         found: Vec<(Result<refs::Reference, GzError>, Pos)>,
                         loop_vars: bool| {
            for (reference, pos) in found {
                match reference {
                    Err(e) => ctx.push(e.code, pos, e.message.clone(), e.hint.clone()),
                    Ok(r) => match &r.root {
                        Root::Task(t) => {
                            let Some(&j) = owner.get(t) else { continue };
                            if cycle.is_none() && !ancestry.precedes(j, i) {
                                ctx.push(
                                    ErrorCode::ReferenceNotAncestor,
                                    pos,
                                    format!(
                                        "task `{}` refers to `{}` but does not depend on task `{t}`",
                                        task.spec.id, r.text
                                    ),
                                    Some(format!("Add `{t}` to this task's `dependencies`.")),
                                );
                            }
                        }
                        Root::Input(name) if !inputs.contains_key(name) => ctx.push(
                            ErrorCode::InvalidInput,
                            pos,
                            format!("reference `{}` names no workflow input `{name}`", r.text),
                            Some("Declare it under `inputs:` or pass --input NAME=VALUE.".into()),
                        ),
                        Root::Item | Root::Index if !loop_vars => ctx.push(
                            ErrorCode::InvalidReference,
                            pos,
                            format!(
                                "`{}` is only defined in the parameters of `for_each` tasks",
                                r.text
                            ),
                            None,
                        ),
                        _ => {}
                    },
                }
            }
        };
        check(ctx, found, fans_out);
        if let Some(key) = task.spec.cache.as_ref().and_then(|c| c.key.as_ref()) {
            let mut found = Vec::new();
            refs::collect_references(&Value::String(key.clone()), names, &mut found);
            let pos = task.cache_pos;
            check(ctx, found.into_iter().map(|r| (r, pos)).collect(), fans_out);
        }

        if let Some(condition) = &task.spec.when {
            match expr::parse(condition, names) {
                Ok(parsed) => {
                    let mut used = Vec::new();
                    parsed.references(&mut used);
                    let found = used.into_iter().map(|r| (Ok(r), task.when_pos)).collect();
                    check(ctx, found, false);
                }
                Err(e) => ctx.push(
                    ErrorCode::InvalidCondition,
                    position_in(text, task.when_pos, condition, e.offset),
                    format!("invalid `when` condition: {}", e.message),
                    Some(ErrorCode::InvalidCondition.def().hint.to_string()),
                ),
            }
        }
        let for_each_ref = match &task.spec.for_each {
            Some(ForEach::Ref(r)) => Some(r.as_str()),
            Some(ForEach::Range(Value::String(r))) => Some(r.as_str()),
            _ => None,
        };
        if let Some(text) = for_each_ref {
            let mut found = Vec::new();
            refs::collect_references(&Value::String(text.to_string()), names, &mut found);
            let found = found.into_iter().map(|r| (r, task.for_each_pos)).collect();
            check(ctx, found, false);
        }
    }

    if ancestry.exhausted() {
        let e = Limit::Tasks.exceeded(
            "the workflow's references span too many dependencies to verify".to_string(),
            limits.max_tasks,
        );
        ctx.push(e.code, root_pos, e.message, e.hint);
    }
}
