//! From workflow text (YAML or JSON) to a validated [`Workflow`], reporting every
//! problem at once with its line and column.

mod agents;
mod diagnostics;
mod document;
mod fields;
mod graph;
mod references;
mod sub_workflows;
mod tasks;
mod triggers;

pub use diagnostics::{suggest, Diagnostic};
pub use fields::parse_duration;
pub use sub_workflows::{Includes, NoIncludes};
pub use triggers::valid_hook_name;

use crate::errors::{ErrorCode, GzError};
use crate::limits::Limits;
use crate::model::Workflow;
use crate::yaml::Pos;
use diagnostics::Ctx;
use serde_json::{Map, Value};

/// Which methods exist. Implemented by the provider registry; core only asks.
pub trait MethodCatalog {
    /// Is `protocol/method` served by some provider?
    fn has_method(&self, method: &str) -> bool;
    /// Is `name` a built-in function (so `method: fibonacci` means function/call)?
    fn has_function(&self, name: &str) -> bool;
    /// All methods and function names, for "did you mean" suggestions.
    fn all_names(&self) -> Vec<String>;
}

/// The methods every build knows, without function names. Used by tests and as
/// the base of the provider registry's catalog.
pub const CORE_METHODS: &[&str] = &[
    "llm/chat",
    "llm/generate",
    "llm/vision",
    "llm/embed",
    "llm/agent",
    "python/execute",
    "python/script",
    "python/function",
    "function/call",
    "http/request",
    "mcp/call_tool",
    "mcp/list_tools",
];

/// The method that runs another workflow file as one task.
pub const SUB_WORKFLOW: &str = "workflow/run";

/// Parses and validates workflow text. `overrides` replace or add workflow inputs
/// (`--input k=v`). On failure every problem found is returned, sorted by position.
pub fn load(
    text: &str,
    file: &str,
    catalog: &dyn MethodCatalog,
    overrides: &Map<String, Value>,
) -> Result<Workflow, Vec<Diagnostic>> {
    load_with(
        text,
        file,
        catalog,
        overrides,
        &NoIncludes,
        &Limits::default(),
    )
}

/// [`load`], reading the files of `workflow/run` tasks through `includes`.
/// Each sub-workflow is validated (with its own inputs) and embedded in its
/// task's parameters as `workflow`, so the stored spec needs no files later.
///
/// Everything read is held to `limits` (nesting, aliases, task count, id
/// lengths), and the workflow as it would be stored must be readable again.
pub fn load_with(
    text: &str,
    file: &str,
    catalog: &dyn MethodCatalog,
    overrides: &Map<String, Value>,
    includes: &dyn Includes,
    limits: &Limits,
) -> Result<Workflow, Vec<Diagnostic>> {
    let workflow = load_nested(
        text,
        file,
        catalog,
        overrides,
        includes,
        limits,
        &mut vec![includes.identity(file)],
    )?;
    // Inputs and embedded sub-workflows add levels the document alone does not show.
    if let Err(e) = crate::limits::check_storable_workflow(&workflow) {
        return Err(vec![Diagnostic {
            code: e.code,
            file: file.to_string(),
            pos: Pos { line: 1, column: 1 },
            message: e.message,
            hint: e.hint,
        }]);
    }
    Ok(workflow)
}

/// Loads one file: each phase reads what the ones before it produced, and
/// problems from all of them are reported together, sorted by position.
/// `stack` holds the files being loaded, outermost first.
fn load_nested(
    text: &str,
    file: &str,
    catalog: &dyn MethodCatalog,
    overrides: &Map<String, Value>,
    includes: &dyn Includes,
    limits: &Limits,
    stack: &mut Vec<String>,
) -> Result<Workflow, Vec<Diagnostic>> {
    let mut ctx = Ctx::new(file);
    let Some(root) = document::read_document(&mut ctx, text, limits) else {
        return Err(ctx.diagnostics);
    };
    let Some(header) = document::read_header(&mut ctx, &root, overrides, limits) else {
        return Err(ctx.diagnostics);
    };
    let mut tasks = tasks::read_tasks(
        &mut ctx,
        header.task_nodes,
        &header.defaults,
        catalog,
        limits,
    );
    agents::check_agents(&mut ctx, &tasks, catalog);
    sub_workflows::embed_sub_workflows(&mut ctx, &mut tasks, catalog, includes, limits, stack);
    let graph = graph::build_graph(&mut ctx, &tasks);
    let outputs =
        references::check_outputs(&mut ctx, root.get("outputs"), &graph.names, &header.inputs);
    let budget = root
        .get("budget")
        .and_then(|node| fields::parse_budget(node, &mut ctx));
    let triggers = triggers::read_triggers(&mut ctx, text, root.get("triggers"), &header.inputs);
    references::check_task_references(
        &mut ctx,
        text,
        &tasks,
        &graph,
        &header.inputs,
        limits,
        root.pos,
    );
    ctx.finish()?;
    Ok(Workflow {
        name: header.name,
        description: header.description,
        inputs: header.inputs,
        tasks: graph.task_specs(tasks),
        outputs,
        budget,
        access: None,
        triggers,
        trigger: None,
    })
}

/// Parses a `--input key=value` argument: the value is JSON when it parses as
/// JSON (numbers, lists, quoted strings), otherwise plain text.
pub fn parse_input_override(arg: &str) -> Result<(String, Value), GzError> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(
            GzError::new(ErrorCode::InvalidInput, format!("`{arg}` is not KEY=VALUE"))
                .with_hint("Write inputs as --input topic=Rust or --input n=5"),
        );
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(GzError::new(
            ErrorCode::InvalidInput,
            format!("`{arg}` has an empty key"),
        ));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((key.to_string(), value))
}

#[cfg(test)]
mod tests;
