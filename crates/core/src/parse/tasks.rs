//! The tasks phase: each entry of `tasks:` to a task spec, with its
//! dependencies and the positions later phases report at.

use super::diagnostics::{suggest, Ctx};
use super::fields::{
    number, parse_choice, parse_duration, parse_requires, parse_retry, parse_timeout, string_list,
    Defaults,
};
use super::{MethodCatalog, SUB_WORKFLOW};
use crate::errors::ErrorCode;
use crate::limits::{Limit, Limits};
use crate::model::{
    CachePolicy, ForEach, OnError, OnSkip, Priority, RetryPolicy, TaskSpec, MAX_FOR_EACH_ITEMS,
};
use crate::refs;
use crate::yaml::{Node, NodeKind, Pos, Scalar};
use serde_json::{Map, Value};

const TASK_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "protocol",
    "method",
    "parameters",
    "params",
    "dependencies",
    "depends_on",
    "priority",
    "timeout",
    "retry",
    "on_error",
    "requires",
    "when",
    "on_skip",
    "for_each",
    "max_parallel",
    "cache",
];
/// Keys of later features: named so the error says "not supported yet" rather
/// than "unknown".
pub(super) const FUTURE_TASK_KEYS: &[&str] = &[];

pub(super) struct RawTask<'n> {
    pub(super) spec: TaskSpec,
    pub(super) pos: Pos,
    pub(super) deps: Vec<(String, Pos)>,
    pub(super) params_node: Option<&'n Node>,
    /// Where `when:` and `for_each:` stand, for errors in their references.
    pub(super) when_pos: Pos,
    pub(super) for_each_pos: Pos,
    pub(super) cache_pos: Pos,
}

/// Every well-formed task of `task_nodes`, in order; a task whose id or name
/// is longer than `limits` allow is reported and left out.
pub(super) fn read_tasks<'n>(
    ctx: &mut Ctx,
    task_nodes: &'n [Node],
    defaults: &Defaults,
    catalog: &dyn MethodCatalog,
    limits: &Limits,
) -> Vec<RawTask<'n>> {
    let mut raw: Vec<RawTask> = Vec::new();
    for (i, node) in task_nodes.iter().enumerate() {
        if let Some(task) = parse_task(ctx, node, i, defaults, catalog) {
            let too_long = std::iter::once(&task.spec.id)
                .chain(task.spec.name.as_ref())
                .any(|key| key.chars().count() > limits.max_id_length);
            if too_long {
                let e = Limit::IdLength.exceeded(
                    format!(
                        "task #{}'s id or name is longer than {} characters",
                        i + 1,
                        limits.max_id_length
                    ),
                    limits.max_id_length,
                );
                ctx.push(e.code, task.pos, e.message, e.hint);
                continue;
            }
            raw.push(task);
        }
    }
    raw
}

/// Normalises a method as written (plus an optional protocol) to `protocol/method`
/// and the extra parameters it implies (`method: fibonacci` → function/call).
fn normalise_method(
    ctx: &mut Ctx,
    method_node: &Node,
    protocol: Option<(&str, Pos)>,
    catalog: &dyn MethodCatalog,
) -> Option<(String, Option<String>)> {
    let Some(raw) = method_node.as_str() else {
        ctx.wrong_type(method_node, "method", "a string like python/execute");
        return None;
    };
    let raw = raw.trim();
    let protocol_name =
        protocol.map(|(p, pos)| (p.split('/').next().unwrap_or(p).to_string(), pos));
    let (method, function) = match raw.split_once('/') {
        Some(("function", name)) if name != "call" => {
            ("function/call".to_string(), Some(name.to_string()))
        }
        Some(_) => (raw.to_string(), None),
        None => match &protocol_name {
            Some((p, _)) if p != "function" => (format!("{p}/{raw}"), None),
            _ if raw == "call" => ("function/call".to_string(), None),
            _ if catalog.has_function(raw) => ("function/call".to_string(), Some(raw.to_string())),
            _ => (raw.to_string(), None),
        },
    };
    if let Some((p, pos)) = &protocol_name {
        let method_protocol = method.split('/').next().unwrap_or("");
        if method_protocol != p {
            ctx.push(
                ErrorCode::UnknownMethod,
                *pos,
                format!("protocol `{p}` does not match method `{method}`"),
                Some(format!("Use protocol `{method_protocol}/v1` or drop `protocol:`; it is inferred from the method.")),
            );
            return None;
        }
    }
    if let Some(name) = &function {
        if !catalog.has_function(name) {
            let names = catalog.all_names();
            let hint = suggest(name, names.iter().map(String::as_str))
                .map(|s| {
                    format!("Did you mean `{s}`? `gleitzeit functions list` shows all functions.")
                })
                .or_else(|| Some("`gleitzeit functions list` shows all functions.".into()));
            ctx.push(
                ErrorCode::UnknownMethod,
                method_node.pos,
                format!("unknown function `{name}`"),
                hint,
            );
            return None;
        }
    } else if method != SUB_WORKFLOW && !catalog.has_method(&method) {
        let names = catalog.all_names();
        let hint = suggest(&method, names.iter().map(String::as_str))
            .map(|s| format!("Did you mean `{s}`?"))
            .or_else(|| Some(ErrorCode::UnknownMethod.def().hint.to_string()));
        ctx.push(
            ErrorCode::UnknownMethod,
            method_node.pos,
            format!("unknown method `{raw}`"),
            hint,
        );
        return None;
    }
    Some((method, function))
}

/// `cache: true | false | {ttl: 1h, key: "…"}`.
fn parse_cache(ctx: &mut Ctx, node: &Node) -> Option<CachePolicy> {
    match &node.kind {
        NodeKind::Scalar(Scalar::Bool(true)) => return Some(CachePolicy::default()),
        NodeKind::Scalar(Scalar::Bool(false)) => return None,
        NodeKind::Map(map) => ctx.check_keys(map, &["ttl", "key"], "cache"),
        _ => {
            ctx.wrong_type(node, "cache", "true, false or a mapping like {ttl: 1h}");
            return None;
        }
    }
    let mut policy = CachePolicy::default();
    if let Some(ttl) = node.get("ttl") {
        let seconds = match &ttl.kind {
            NodeKind::Scalar(Scalar::Str(s)) => parse_duration(s),
            _ => number(ttl).filter(|n| n.is_finite() && *n >= 0.0),
        };
        match seconds {
            Some(s) if s > 0.0 => policy.ttl = Some(s),
            _ => ctx.push(
                ErrorCode::InvalidValue,
                ttl.pos,
                format!(
                    "cache.ttl must be a positive duration, not `{}`",
                    ttl.key_text().unwrap_or_default()
                ),
                Some("Write seconds (3600) or a duration: 90s, 15m, 1h, 7d, 1h30m.".into()),
            ),
        }
    }
    if let Some(key) = node.get("key") {
        match key.key_text() {
            Some(text) if !text.trim().is_empty() => policy.key = Some(text),
            _ => ctx.wrong_type(key, "cache.key", "a non-empty text"),
        }
    }
    Some(policy)
}

/// `when:` — a condition text; YAML booleans are accepted as constant conditions.
fn parse_when(ctx: &mut Ctx, node: &Node) -> Option<String> {
    match &node.kind {
        NodeKind::Scalar(Scalar::Str(s)) => Some(s.clone()),
        NodeKind::Scalar(Scalar::Bool(b)) => Some(b.to_string()),
        _ => {
            ctx.wrong_type(node, "when", "a condition like \"${check.result} == true\"");
            None
        }
    }
}

/// True when `text` is exactly one `${…}` reference (surrounding spaces aside).
fn single_reference(text: &str) -> bool {
    let text = text.trim();
    text.starts_with("${") && refs::find_reference_end(text, 0).is_some_and(|end| end == text.len())
}

/// `for_each:` — an inline list, `range(n)` or one reference to a list.
fn parse_for_each(ctx: &mut Ctx, node: &Node) -> Option<ForEach> {
    let bad = |ctx: &mut Ctx, what: String| {
        ctx.push(
            ErrorCode::InvalidForEach,
            node.pos,
            format!("`for_each` must be a list, `range(N)` or one reference to a list, not {what}"),
            Some(
                "e.g. `for_each: [a, b]`, `for_each: range(10)` or `for_each: \"${list.result}\"`."
                    .into(),
            ),
        );
        None
    };
    match &node.kind {
        NodeKind::Seq(_) => match node.to_json() {
            Value::Array(items) if items.len() <= MAX_FOR_EACH_ITEMS => Some(ForEach::Items(items)),
            Value::Array(items) => bad(
                ctx,
                format!(
                    "a list of {} items (at most {MAX_FOR_EACH_ITEMS})",
                    items.len()
                ),
            ),
            _ => None,
        },
        NodeKind::Scalar(Scalar::Str(text)) => {
            let text = text.trim();
            if let Some(arg) = text
                .strip_prefix("range(")
                .and_then(|a| a.strip_suffix(')'))
            {
                let arg = arg.trim();
                if let Ok(n) = arg.parse::<u64>() {
                    if n as usize > MAX_FOR_EACH_ITEMS {
                        return bad(
                            ctx,
                            format!("range({n}) (at most {MAX_FOR_EACH_ITEMS} items)"),
                        );
                    }
                    return Some(ForEach::Range(Value::from(n)));
                }
                if single_reference(arg) {
                    return Some(ForEach::Range(Value::String(arg.to_string())));
                }
                return bad(
                    ctx,
                    format!("`{text}`: range takes a whole number or one reference"),
                );
            }
            if single_reference(text) {
                return Some(ForEach::Ref(text.to_string()));
            }
            bad(ctx, format!("the text `{text}`"))
        }
        _ => bad(ctx, format!("a {}", node.type_name())),
    }
}

fn parse_task<'n>(
    ctx: &mut Ctx,
    node: &'n Node,
    index: usize,
    defaults: &Defaults,
    catalog: &dyn MethodCatalog,
) -> Option<RawTask<'n>> {
    let Some(map) = node.as_map() else {
        ctx.wrong_type(node, &format!("tasks[{index}]"), "a mapping");
        return None;
    };
    ctx.check_keys(map, TASK_KEYS, "task");
    let text_of = |ctx: &mut Ctx, key: &str| -> Option<String> {
        let value = node.get(key)?;
        match &value.kind {
            NodeKind::Scalar(Scalar::Str(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            NodeKind::Scalar(Scalar::Int(i)) => Some(i.to_string()),
            _ => {
                ctx.wrong_type(value, key, "a non-empty string");
                None
            }
        }
    };
    let id = text_of(ctx, "id");
    let name = text_of(ctx, "name");
    let key = id.clone().or_else(|| name.clone());
    if key.is_none() && node.get("id").is_none() && node.get("name").is_none() {
        ctx.push(
            ErrorCode::MissingField,
            node.pos,
            format!("task #{} has neither `id` nor `name`", index + 1),
            None,
        );
    }
    let label = key.clone().unwrap_or_else(|| format!("#{}", index + 1));

    let protocol = match node.get("protocol") {
        Some(p) => match p.as_str() {
            Some(s) => Some((s.trim(), p.pos)),
            None => {
                ctx.wrong_type(p, "protocol", "a string like python/v1");
                None
            }
        },
        None => None,
    };
    let method = match node.get("method") {
        Some(m) => normalise_method(ctx, m, protocol, catalog),
        None => {
            ctx.push(
                ErrorCode::MissingField,
                node.pos,
                format!("task `{label}` has no `method`"),
                Some("Add e.g. `method: python/execute`.".into()),
            );
            None
        }
    };

    let params_node = match (node.get("parameters"), node.get("params")) {
        (Some(p), Some(_)) => {
            ctx.push(
                ErrorCode::UnknownKey,
                p.pos,
                format!("task `{label}` has both `parameters` and `params`"),
                Some("They are synonyms; keep one.".into()),
            );
            Some(p)
        }
        (p, q) => p.or(q),
    };
    let mut params = match params_node {
        None => Map::new(),
        Some(p) => match p.to_json() {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            _ => {
                ctx.wrong_type(p, "parameters", "a mapping");
                Map::new()
            }
        },
    };

    let mut deps = Vec::new();
    for key in ["dependencies", "depends_on"] {
        if let Some(d) = node.get(key) {
            deps.extend(string_list(ctx, d, key));
        }
    }

    let priority = node
        .get("priority")
        .and_then(|p| parse_choice(ctx, p, "priority", Priority::NAMES, Priority::parse))
        .or(defaults.priority)
        .unwrap_or_default();
    let on_error = node
        .get("on_error")
        .and_then(|p| parse_choice(ctx, p, "on_error", OnError::NAMES, OnError::parse))
        .or(defaults.on_error)
        .unwrap_or_default();
    let base_retry = match (&defaults.retry, on_error) {
        (Some(r), _) => r.clone(),
        (None, OnError::Retry) => RetryPolicy::configured(),
        (None, _) => RetryPolicy::default(),
    };
    let retry = match node.get("retry") {
        Some(r) => parse_retry(ctx, r, &base_retry),
        None => base_retry,
    };
    let timeout = node
        .get("timeout")
        .and_then(|t| parse_timeout(ctx, t))
        .or(defaults.timeout);
    let requires = node
        .get("requires")
        .map(|r| parse_requires(ctx, r))
        .unwrap_or_default();
    let when = node.get("when").and_then(|w| parse_when(ctx, w));
    let on_skip = node
        .get("on_skip")
        .and_then(|p| parse_choice(ctx, p, "on_skip", OnSkip::NAMES, OnSkip::parse))
        .unwrap_or_default();
    let for_each = node.get("for_each").and_then(|f| parse_for_each(ctx, f));
    let cache = node.get("cache").and_then(|c| parse_cache(ctx, c));
    let max_parallel = match node.get("max_parallel") {
        None => None,
        Some(m) => match &m.kind {
            NodeKind::Scalar(Scalar::Int(n)) if *n >= 1 && node.get("for_each").is_some() => {
                Some(*n as usize)
            }
            NodeKind::Scalar(Scalar::Int(n)) if *n >= 1 => {
                ctx.push(
                    ErrorCode::InvalidValue,
                    m.pos,
                    format!("task `{label}` sets `max_parallel` without `for_each`"),
                    Some("`max_parallel` limits the instances of a `for_each` task.".into()),
                );
                None
            }
            NodeKind::Scalar(Scalar::Int(n)) => {
                ctx.push(
                    ErrorCode::InvalidValue,
                    m.pos,
                    format!("`max_parallel` must be at least 1, not {n}"),
                    None,
                );
                None
            }
            _ => {
                ctx.wrong_type(m, "max_parallel", "a whole number");
                None
            }
        },
    };

    // A task with a bad method still takes part in the duplicate and dependency
    // checks, so one run reports every problem.
    let (method, function) = method.unwrap_or_default();
    let key = key?;
    if let Some(function) = function {
        params.entry("function").or_insert(Value::String(function));
    }
    if method.starts_with("llm/") {
        for (k, v) in &defaults.params {
            params.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Some(RawTask {
        spec: TaskSpec {
            id: key,
            name: if id.is_some() { name } else { None },
            method,
            params: Value::Object(params),
            dependencies: Vec::new(),
            priority,
            timeout,
            retry,
            on_error,
            requires,
            when,
            on_skip,
            for_each,
            max_parallel,
            cache,
        },
        pos: node.pos,
        deps,
        params_node,
        when_pos: node.get("when").map(|w| w.pos).unwrap_or(node.pos),
        for_each_pos: node.get("for_each").map(|w| w.pos).unwrap_or(node.pos),
        cache_pos: node.get("cache").map(|w| w.pos).unwrap_or(node.pos),
    })
}
