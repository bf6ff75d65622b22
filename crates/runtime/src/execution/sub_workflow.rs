//! `workflow/run` tasks: a child workflow run as a workflow of its own.

use super::{error_record, skipped_record};
use crate::scope::{RunScope, TaskNames};
use crate::Runtime;
use gleitzeit_core::refs;
use gleitzeit_core::{ErrorCode, GzError, TaskState, Workflow, WorkflowState};
use serde_json::{json, Value};
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

type BoxedRun = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, GzError>> + Send>>;

/// Runs the workflow embedded in a `workflow/run` task as a workflow of its
/// own (stored, resumable, with its own events) and answers with its
/// `outputs`. Boxed: a run that starts a run is a recursive future.
pub(super) fn sub_workflow(
    rt: Runtime,
    parent: String,
    access: Option<gleitzeit_core::access::FileAccess>,
    params: Value,
    token: CancellationToken,
) -> BoxedRun {
    Box::pin(async move {
        let mut child: Workflow = params
            .get("workflow")
            .cloned()
            .and_then(|w| serde_json::from_value(w).ok())
            .ok_or_else(|| {
                GzError::new(
                    ErrorCode::InvalidParameters,
                    "`workflow/run` task carries no sub-workflow (was it loaded from a file?)",
                )
            })?;
        if let Some(Value::Object(inputs)) = params.get("inputs") {
            for (k, v) in inputs {
                child.inputs.insert(k.clone(), v.clone());
            }
        }
        // A child reaches exactly the files its parent may.
        child.access = access;
        let source = params
            .get("file")
            .and_then(Value::as_str)
            .map(str::to_string);
        let id = rt.submit(child.clone(), source).await?;
        let outcome = rt.run(&id, token).await?;
        if outcome.state != WorkflowState::Completed {
            let cause = outcome.error.map(|e| e.to_string()).unwrap_or_default();
            return Err(GzError::new(
                ErrorCode::SubWorkflowFailed,
                format!(
                    "sub-workflow `{}` ({id}) {}: {cause}",
                    child.name,
                    outcome.state.as_str()
                ),
            )
            .with_details(json!({"workflow_id": id, "parent": parent})));
        }
        let records: Vec<Option<Value>> = child
            .tasks
            .iter()
            .map(|spec| {
                let task = outcome.tasks.iter().find(|t| t.task_id == spec.id)?;
                match task.state {
                    TaskState::Completed => task.result.clone(),
                    TaskState::Skipped => Some(skipped_record(&spec.method)),
                    TaskState::Failed => Some(error_record(task.error.as_ref())),
                    _ => None,
                }
            })
            .collect();
        let index: HashMap<String, usize> = child
            .index()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let names = TaskNames::of(&child);
        let scope = RunScope {
            workflow: &child,
            index: &index,
            records: &records,
            allowed_env: &rt.config.allowed_env,
            item: None,
        };
        let outputs = refs::render_value(&Value::Object(child.outputs.clone()), &names, &scope)?;
        Ok(json!({"result": outputs, "workflow_id": id}))
    })
}
