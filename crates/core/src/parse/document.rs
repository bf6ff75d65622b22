//! The document phase: text to a YAML tree, and the workflow-level fields
//! (name, description, defaults, inputs, the list of tasks) held to limits.

use super::diagnostics::Ctx;
use super::fields::{parse_defaults, Defaults};
use crate::errors::ErrorCode;
use crate::limits::{Limit, Limits};
use crate::yaml::{self, Node, NodeKind, Pos, Scalar};
use serde_json::{Map, Value};

const WORKFLOW_KEYS: &[&str] = &[
    "name",
    "description",
    "version",
    "metadata",
    "defaults",
    "inputs",
    "tasks",
    "outputs",
    "budget",
    "triggers",
];

/// The workflow-level fields, read before any task.
pub(super) struct Header<'n> {
    pub(super) name: String,
    pub(super) description: Option<String>,
    pub(super) defaults: Defaults,
    /// Declared inputs with the `--input` overrides applied.
    pub(super) inputs: Map<String, Value>,
    pub(super) task_nodes: &'n [Node],
}

/// The document's tree; `None` when there is none to validate (the reason is in `ctx`).
pub(super) fn read_document(ctx: &mut Ctx, text: &str, limits: &Limits) -> Option<Node> {
    match yaml::parse_limited(text, limits) {
        Ok(Some(root)) => Some(root),
        Ok(None) => {
            ctx.push(
                ErrorCode::EmptyWorkflow,
                Pos { line: 1, column: 1 },
                "workflow file is empty",
                None,
            );
            None
        }
        Err(e) if e.code == ErrorCode::YamlSyntax => {
            ctx.push(
                ErrorCode::YamlSyntax,
                e.pos,
                format!("syntax error: {}", e.message),
                None,
            );
            None
        }
        Err(e) => {
            ctx.push(e.code, e.pos, e.message, e.hint);
            None
        }
    }
}

/// The workflow-level fields of `root`; `None` when the tasks cannot be read
/// (the document is not a mapping, or has more tasks than `limits` allow).
pub(super) fn read_header<'n>(
    ctx: &mut Ctx,
    root: &'n Node,
    overrides: &Map<String, Value>,
    limits: &Limits,
) -> Option<Header<'n>> {
    let Some(top) = root.as_map() else {
        ctx.wrong_type(root, "the workflow", "a mapping with `name` and `tasks`");
        return None;
    };
    ctx.check_keys(top, WORKFLOW_KEYS, "workflow");

    let name = match root.get("name") {
        Some(n) => match n.key_text() {
            Some(s) if !s.trim().is_empty() => s,
            _ => {
                ctx.wrong_type(n, "name", "a non-empty string");
                String::new()
            }
        },
        None => {
            ctx.push(
                ErrorCode::MissingField,
                root.pos,
                "workflow has no `name`",
                Some("Add `name: \"My workflow\"` at the top.".into()),
            );
            String::new()
        }
    };
    let description = root.get("description").and_then(|d| d.key_text());
    let defaults = root
        .get("defaults")
        .map(|d| parse_defaults(ctx, d))
        .unwrap_or_default();
    let mut inputs = match root.get("inputs") {
        None => Map::new(),
        Some(node) => match node.to_json() {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => {
                ctx.wrong_type(node, "inputs", "a mapping of names to values");
                Map::new()
            }
        },
    };
    for (k, v) in overrides {
        inputs.insert(k.clone(), v.clone());
    }

    let task_nodes: &[Node] = match root.get("tasks") {
        Some(t) => match &t.kind {
            NodeKind::Seq(items) => items,
            NodeKind::Scalar(Scalar::Null) => &[],
            _ => {
                ctx.wrong_type(t, "tasks", "a list of tasks");
                &[]
            }
        },
        None => {
            ctx.push(
                ErrorCode::MissingField,
                root.pos,
                "workflow has no `tasks`",
                None,
            );
            &[]
        }
    };
    if task_nodes.len() > limits.max_tasks {
        let e = Limit::Tasks.exceeded(
            format!(
                "the workflow has {} tasks, more than the {} allowed",
                task_nodes.len(),
                limits.max_tasks
            ),
            limits.max_tasks,
        );
        let pos = root.get("tasks").map(|t| t.pos).unwrap_or_default();
        ctx.push(e.code, pos, e.message, e.hint);
        return None;
    }
    if name.chars().count() > limits.max_name_length {
        let e = Limit::NameLength.exceeded(
            format!(
                "the workflow's name is longer than {} characters",
                limits.max_name_length
            ),
            limits.max_name_length,
        );
        let pos = root.get("name").map(|n| n.pos).unwrap_or_default();
        ctx.push(e.code, pos, e.message, e.hint);
    }
    for (key, _) in inputs.iter().chain(overrides.iter()) {
        if key.chars().count() > limits.max_id_length {
            let e = Limit::IdLength.exceeded(
                format!(
                    "an input's name is longer than {} characters",
                    limits.max_id_length
                ),
                limits.max_id_length,
            );
            let pos = root.get("inputs").map(|n| n.pos).unwrap_or_default();
            ctx.push(e.code, pos, e.message, e.hint);
            break;
        }
    }
    for (key, value) in overrides {
        if let Err(e) = limits.check_value(value, &format!("input `{key}`")) {
            ctx.push(e.code, Pos { line: 1, column: 1 }, e.message, e.hint);
        }
    }
    if task_nodes.is_empty() && root.get("tasks").is_some() {
        let pos = root.get("tasks").map(|t| t.pos).unwrap_or_default();
        ctx.push(ErrorCode::EmptyWorkflow, pos, "workflow has no tasks", None);
    }
    Some(Header {
        name,
        description,
        defaults,
        inputs,
        task_nodes,
    })
}
