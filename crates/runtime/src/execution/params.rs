//! Rendering a task's parameters and its cache slot against a run's scope.

use crate::cache::CacheSlot;
use crate::scope::{Records, RunScope, TaskNames};
use gleitzeit_core::model::primary_field;
use gleitzeit_core::parse;
use gleitzeit_core::refs::{self, python};
use gleitzeit_core::{GzError, Workflow};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Renders a task's parameters. Python code gets context-aware insertion; the
/// values it used and the workflow inputs are also handed to the code as the
/// dict `inputs`, with the dependencies' results — except for `for_each`
/// instances, which get `item` and `index` instead (thousands of instances each
/// carrying every upstream result would multiply memory and pipe traffic).
pub(super) fn render_params(
    workflow: &Workflow,
    index: &HashMap<String, usize>,
    names: &TaskNames,
    records: &dyn Records,
    scope: &RunScope<'_>,
    task: usize,
) -> Result<Value, GzError> {
    let spec = &workflow.tasks[task];
    let mut params = match &spec.params {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    if spec.method == parse::SUB_WORKFLOW {
        // The embedded child keeps its own references for its own run.
        let child = params.remove("workflow");
        let mut rendered = refs::render_value(&Value::Object(params), names, scope)?;
        if let (Value::Object(map), Some(child)) = (&mut rendered, child) {
            map.insert("workflow".into(), child);
        }
        return Ok(rendered);
    }
    if !spec.method.starts_with("python/") {
        return refs::render_value(&Value::Object(params), names, scope);
    }
    let code = params.remove("code");
    let mut rendered = match refs::render_value(&Value::Object(params), names, scope)? {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut inputs: Map<String, Value> = workflow.inputs.clone();
    match scope.item {
        Some((item, i)) => {
            inputs.insert("item".into(), item.clone());
            inputs.insert("index".into(), json!(i));
        }
        None => {
            for dep in &spec.dependencies {
                if let Some(&i) = index.get(dep) {
                    if let Some(record) = records.record(i) {
                        let primary = record
                            .get(primary_field(&workflow.tasks[i].method))
                            .cloned();
                        inputs.insert(dep.clone(), primary.unwrap_or(Value::Null));
                    }
                }
            }
        }
    }
    if let Some(Value::String(code)) = code {
        let mut used = Vec::new();
        let code = python::render(&code, names, scope, &mut used)?;
        for (reference, value) in used {
            inputs.insert(reference.text, value);
        }
        rendered.insert("code".into(), Value::String(code));
    } else if let Some(code) = code {
        rendered.insert("code".into(), code);
    }
    if let Some(Value::Object(explicit)) = rendered.remove("inputs") {
        inputs.extend(explicit);
    }
    rendered.insert("inputs".into(), Value::Object(inputs));
    Ok(Value::Object(rendered))
}

/// Where a call of a task with `cache:` keeps its result.
pub(super) fn cache_slot(
    spec: &gleitzeit_core::TaskSpec,
    params: &Value,
    names: &TaskNames,
    scope: &RunScope<'_>,
) -> Result<Option<CacheSlot>, GzError> {
    let Some(policy) = &spec.cache else {
        return Ok(None);
    };
    let custom = match &policy.key {
        Some(template) => Some(refs::render_str(template, names, scope)?),
        None => None,
    };
    Ok(Some(CacheSlot::granted(
        &spec.method,
        params,
        custom.as_ref(),
        policy.ttl,
        scope.workflow.access.as_ref(),
    )))
}
