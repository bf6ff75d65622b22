//! The agents phase: the parameters of each `llm/agent` task — its tools,
//! `max_turns`, `on_tool_error`, `format` — checked with the rules the runtime
//! reads them by (`crate::agent`), each problem at the place it is written.

use super::diagnostics::{suggest, Ctx};
use super::tasks::RawTask;
use super::MethodCatalog;
use crate::agent;
use crate::errors::ErrorCode;

pub(super) fn check_agents(ctx: &mut Ctx, tasks: &[RawTask], catalog: &dyn MethodCatalog) {
    for task in tasks.iter().filter(|t| t.spec.method == agent::METHOD) {
        let params = task.params_node;
        if let Some(map) = params.and_then(|p| p.as_map()) {
            for (key, _) in map {
                let Some(text) = key.key_text() else { continue };
                if !agent::KEYS.contains(&text.as_str()) {
                    let hint = suggest(&text, agent::KEYS.iter().copied())
                        .map(|s| format!("Did you mean `{s}`?"))
                        .unwrap_or_else(|| format!("Accepted keys: {}", agent::KEYS.join(", ")));
                    ctx.push(
                        ErrorCode::UnknownKey,
                        key.pos,
                        format!("unknown llm/agent parameter `{text}`"),
                        Some(hint),
                    );
                }
            }
        }
        let Err(problems) = agent::read(&task.spec.params, &|name| catalog.has_function(name))
        else {
            continue;
        };
        for problem in problems {
            // The entry the problem is about, else the key, else the task.
            let node = params.and_then(|p| p.get(problem.key));
            let pos = match (problem.at, node) {
                (Some(i), Some(list)) => list
                    .as_seq()
                    .and_then(|items| items.get(i))
                    .map(|n| n.pos)
                    .unwrap_or(list.pos),
                (None, Some(n)) => n.pos,
                _ => params.map(|p| p.pos).unwrap_or(task.pos),
            };
            ctx.push(
                problem.code,
                pos,
                format!("task `{}`: {}", task.spec.id, problem.message),
                problem.hint,
            );
        }
    }
}
