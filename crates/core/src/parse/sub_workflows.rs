//! The sub-workflow phase: each `workflow/run` task's file is read, loaded
//! as a workflow of its own and embedded in the task's parameters.

use super::diagnostics::Ctx;
use super::tasks::RawTask;
use super::{load_nested, MethodCatalog, SUB_WORKFLOW};
use crate::errors::{ErrorCode, GzError};
use crate::limits::Limits;
use serde_json::{Map, Value};

/// How deep sub-workflows may nest.
const MAX_NESTING: usize = 16;

/// Reads the files that `workflow/run` tasks name. Core does no I/O: the CLI
/// passes a reader of the file system; the server passes none, since requests
/// carry no files.
pub trait Includes {
    /// The text of `path` (relative to the file `from`) and the name to report
    /// it by, the same for every spelling of one file (cycles are found by it).
    fn read(&self, from: &str, path: &str) -> Result<(String, String), GzError>;
    /// The name `read` would give the top-level file.
    fn identity(&self, file: &str) -> String {
        file.to_string()
    }
}

/// No file access: `workflow/run` tasks are refused.
pub struct NoIncludes;

impl Includes for NoIncludes {
    fn read(&self, _from: &str, _path: &str) -> Result<(String, String), GzError> {
        Err(GzError::new(
            ErrorCode::InvalidValue,
            "sub-workflows (`workflow/run` with `file:`) can only be loaded from files",
        )
        .with_hint(
            "Run the parent file with `gleitzeit run`; requests to the server carry no files.",
        ))
    }
}

/// Loads the file each `workflow/run` task names (through `includes`, relative
/// to the file being loaded) and embeds it in the task's parameters as
/// `workflow`. `stack` holds the files being loaded, outermost first, so a
/// file that includes itself is reported rather than followed.
pub(super) fn embed_sub_workflows(
    ctx: &mut Ctx,
    tasks: &mut [RawTask],
    catalog: &dyn MethodCatalog,
    includes: &dyn Includes,
    limits: &Limits,
    stack: &mut Vec<String>,
) {
    for task in tasks.iter_mut().filter(|t| t.spec.method == SUB_WORKFLOW) {
        let file_node = task.params_node.and_then(|p| p.get("file"));
        let Some((path, pos)) = file_node.and_then(|n| n.as_str().map(|s| (s.to_string(), n.pos)))
        else {
            ctx.push(
                ErrorCode::MissingField,
                task.pos,
                format!("task `{}` runs a sub-workflow but names no `file`", task.spec.id),
                Some("Add `parameters: {file: child.yaml, inputs: {…}}`; the path is relative to this file.".into()),
            );
            continue;
        };
        let (child_text, child_name) = match includes.read(ctx.file, &path) {
            Ok(found) => found,
            Err(e) => {
                ctx.push(e.code, pos, e.message.clone(), e.hint.clone());
                continue;
            }
        };
        if let Some(start) = stack.iter().position(|f| *f == child_name) {
            let mut cycle: Vec<&str> = stack[start..].iter().map(String::as_str).collect();
            cycle.push(&child_name);
            ctx.push(
                ErrorCode::SubWorkflowCycle,
                pos,
                format!("sub-workflow cycle: {}", cycle.join(" -> ")),
                Some(ErrorCode::SubWorkflowCycle.def().hint.to_string()),
            );
            continue;
        }
        if stack.len() >= MAX_NESTING {
            ctx.push(
                ErrorCode::InvalidValue,
                pos,
                format!("sub-workflows nest more than {MAX_NESTING} deep"),
                None,
            );
            continue;
        }
        stack.push(child_name.clone());
        let child = load_nested(
            &child_text,
            &child_name,
            catalog,
            &Map::new(),
            includes,
            limits,
            stack,
        );
        stack.pop();
        match child {
            Ok(child) => {
                if let Value::Object(params) = &mut task.spec.params {
                    params.insert(
                        "workflow".into(),
                        serde_json::to_value(child).unwrap_or(Value::Null),
                    );
                }
            }
            Err(problems) => ctx.diagnostics.extend(problems),
        }
    }
}
