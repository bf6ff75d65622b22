//! From workflow text (YAML or JSON) to a validated [`Workflow`], reporting every
//! problem at once with its line and column.

use crate::errors::{ErrorCode, GzError};
use crate::expr;
use crate::limits::{Limit, Limits};
use crate::model::{
    Backoff, Budget, CachePolicy, ForEach, OnError, OnSkip, Priority, Requires, RetryPolicy,
    TaskSpec, Workflow, MAX_FOR_EACH_ITEMS,
};
use crate::refs::{self, Root};
use crate::yaml::{self, Node, NodeKind, Pos, Scalar};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// One problem found in a workflow file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: ErrorCode,
    pub message: String,
    pub hint: Option<String>,
    pub file: String,
    pub pos: Pos,
}

impl Diagnostic {
    pub fn location(&self) -> String {
        format!("{}:{}:{}", self.file, self.pos.line, self.pos.column)
    }

    pub fn to_error(&self) -> GzError {
        let mut error = GzError::new(self.code, self.message.clone()).at(self.location());
        error.hint = self.hint.clone();
        error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} {}", self.location(), self.code, self.message)
    }
}

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
];
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
const FUTURE_TASK_KEYS: &[&str] = &[];
const DEFAULTS_KEYS: &[&str] = &[
    "model",
    "timeout",
    "retry",
    "priority",
    "on_error",
    "temperature",
    "max_tokens",
];
const RETRY_KEYS: &[&str] = &[
    "max_attempts",
    "base_delay",
    "max_delay",
    "strategy",
    "jitter",
    "retry_on",
];

struct Ctx<'a> {
    file: &'a str,
    diagnostics: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn push(
        &mut self,
        code: ErrorCode,
        pos: Pos,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.diagnostics.push(Diagnostic {
            code,
            message: message.into(),
            hint,
            file: self.file.to_string(),
            pos,
        });
    }

    fn check_keys(&mut self, map: &[(Node, Node)], allowed: &[&str], what: &str) {
        for (key, _) in map {
            let Some(text) = key.key_text() else {
                self.push(
                    ErrorCode::WrongType,
                    key.pos,
                    format!("{what} keys must be strings"),
                    None,
                );
                continue;
            };
            if allowed.contains(&text.as_str()) {
                continue;
            }
            if what == "task" && FUTURE_TASK_KEYS.contains(&text.as_str()) {
                self.push(
                    ErrorCode::UnknownKey,
                    key.pos,
                    format!("task key `{text}` is not supported by this version yet"),
                    Some(
                        "Remove it; the task would otherwise run differently than written.".into(),
                    ),
                );
                continue;
            }
            let hint = suggest(&text, allowed.iter().copied())
                .map(|s| format!("Did you mean `{s}`?"))
                .or_else(|| Some(format!("Accepted {what} keys: {}", allowed.join(", "))));
            self.push(
                ErrorCode::UnknownKey,
                key.pos,
                format!("unknown {what} key `{text}`"),
                hint,
            );
        }
    }

    fn wrong_type(&mut self, node: &Node, key: &str, expected: &str) {
        self.push(
            ErrorCode::WrongType,
            node.pos,
            format!("`{key}` must be {expected}, not {}", node.type_name()),
            None,
        );
    }
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn number(node: &Node) -> Option<f64> {
    match &node.kind {
        NodeKind::Scalar(Scalar::Int(i)) => Some(*i as f64),
        NodeKind::Scalar(Scalar::Float(f)) => Some(*f),
        _ => None,
    }
}

fn string_list(ctx: &mut Ctx, node: &Node, key: &str) -> Vec<(String, Pos)> {
    match &node.kind {
        NodeKind::Scalar(Scalar::Str(s)) => vec![(s.clone(), node.pos)],
        NodeKind::Scalar(Scalar::Null) => vec![],
        NodeKind::Seq(items) => items
            .iter()
            .filter_map(|item| match item.key_text() {
                Some(text) if !matches!(item.kind, NodeKind::Scalar(Scalar::Null)) => {
                    Some((text, item.pos))
                }
                _ => {
                    ctx.wrong_type(item, key, "a list of strings");
                    None
                }
            })
            .collect(),
        _ => {
            ctx.wrong_type(node, key, "a list of strings");
            vec![]
        }
    }
}

fn parse_retry(ctx: &mut Ctx, node: &Node, base: &RetryPolicy) -> RetryPolicy {
    let mut policy = base.clone();
    if base.max_attempts <= 1 {
        policy.max_attempts = RetryPolicy::configured().max_attempts;
    }
    // `retry: 5` is shorthand for five attempts.
    if let NodeKind::Scalar(Scalar::Int(n)) = node.kind {
        if n < 1 {
            ctx.push(
                ErrorCode::InvalidRetryPolicy,
                node.pos,
                "retry attempts must be at least 1",
                None,
            );
        }
        policy.max_attempts = n.max(1) as u32;
        return policy;
    }
    let Some(map) = node.as_map() else {
        ctx.wrong_type(node, "retry", "a mapping or a number of attempts");
        return policy;
    };
    ctx.check_keys(map, RETRY_KEYS, "retry");
    for (key, value) in map {
        let key_text = key.key_text().unwrap_or_default();
        match key_text.as_str() {
            "max_attempts" => match &value.kind {
                NodeKind::Scalar(Scalar::Int(n)) if *n >= 1 && *n <= 1000 => {
                    policy.max_attempts = *n as u32
                }
                NodeKind::Scalar(Scalar::Int(n)) => ctx.push(
                    ErrorCode::InvalidRetryPolicy,
                    value.pos,
                    format!("retry.max_attempts must be between 1 and 1000, not {n}"),
                    None,
                ),
                _ => ctx.wrong_type(value, "retry.max_attempts", "a whole number"),
            },
            "base_delay" | "max_delay" => match number(value) {
                Some(n) if n >= 0.0 && n.is_finite() => {
                    if key_text == "base_delay" {
                        policy.base_delay = n
                    } else {
                        policy.max_delay = n
                    }
                }
                Some(n) => ctx.push(
                    ErrorCode::InvalidRetryPolicy,
                    value.pos,
                    format!("retry.{key_text} must be zero or more seconds, not {n}"),
                    None,
                ),
                None => ctx.wrong_type(value, &format!("retry.{key_text}"), "a number of seconds"),
            },
            "strategy" => match value.as_str().and_then(Backoff::parse) {
                Some(b) => policy.strategy = b,
                None => ctx.push(
                    ErrorCode::InvalidRetryPolicy,
                    value.pos,
                    format!(
                        "retry.strategy must be one of {}, not `{}`",
                        Backoff::NAMES.join(", "),
                        value.key_text().unwrap_or_default()
                    ),
                    None,
                ),
            },
            "jitter" => match value.kind {
                NodeKind::Scalar(Scalar::Bool(b)) => policy.jitter = b,
                _ => ctx.wrong_type(value, "retry.jitter", "true or false"),
            },
            "retry_on" => {
                policy.retry_on = string_list(ctx, value, "retry.retry_on")
                    .into_iter()
                    .filter_map(|(code, pos)| match ErrorCode::parse(&code) {
                        Some(c) => Some(c),
                        None => {
                            ctx.push(
                                ErrorCode::InvalidRetryPolicy,
                                pos,
                                format!("retry.retry_on: `{code}` is not an error code"),
                                Some(
                                    "Codes look like GZ2002; `gleitzeit errors list` shows them."
                                        .into(),
                                ),
                            );
                            None
                        }
                    })
                    .collect()
            }
            _ => {}
        }
    }
    if policy.max_delay < policy.base_delay {
        ctx.push(
            ErrorCode::InvalidRetryPolicy,
            node.pos,
            format!(
                "retry.max_delay ({}) is smaller than retry.base_delay ({})",
                policy.max_delay, policy.base_delay
            ),
            None,
        );
    }
    policy
}

/// `requires: {gpu: true, labels: {region: eu}}`.
fn parse_requires(ctx: &mut Ctx, node: &Node) -> Requires {
    let mut requires = Requires::default();
    let Some(map) = node.as_map() else {
        ctx.wrong_type(
            node,
            "requires",
            "a mapping like {gpu: true, labels: {region: eu}}",
        );
        return requires;
    };
    ctx.check_keys(map, &["gpu", "labels"], "requires");
    if let Some(gpu) = node.get("gpu") {
        match &gpu.kind {
            NodeKind::Scalar(Scalar::Bool(b)) => requires.gpu = *b,
            _ => ctx.wrong_type(gpu, "requires.gpu", "true or false"),
        }
    }
    if let Some(labels) = node.get("labels") {
        match labels.as_map() {
            Some(pairs) => {
                for (k, v) in pairs {
                    let key = k.key_text().unwrap_or_default();
                    let value = match &v.kind {
                        NodeKind::Scalar(Scalar::Str(s)) => Some(s.clone()),
                        NodeKind::Scalar(Scalar::Int(i)) => Some(i.to_string()),
                        NodeKind::Scalar(Scalar::Bool(b)) => Some(b.to_string()),
                        _ => None,
                    };
                    let valid = |s: &str| {
                        !s.is_empty() && !s.contains([',', '=', ':', ' ']) && s.len() <= 64
                    };
                    match value {
                        Some(value) if valid(&key) && valid(&value) => {
                            requires.labels.insert(key, value);
                        }
                        _ => ctx.push(
                            ErrorCode::InvalidValue,
                            v.pos,
                            format!("label `{key}` needs a short text value without `,`, `=`, `:` or spaces"),
                            Some("Labels match `gleitzeit worker --labels key=value`.".into()),
                        ),
                    }
                }
            }
            None => ctx.wrong_type(labels, "requires.labels", "a mapping of label to value"),
        }
    }
    requires
}

fn parse_timeout(ctx: &mut Ctx, node: &Node) -> Option<f64> {
    match number(node) {
        Some(t) if t > 0.0 && t.is_finite() => Some(t),
        Some(t) => {
            ctx.push(
                ErrorCode::InvalidValue,
                node.pos,
                format!("timeout must be more than 0 seconds, not {t}"),
                None,
            );
            None
        }
        None => {
            ctx.wrong_type(node, "timeout", "a number of seconds");
            None
        }
    }
}

fn parse_choice<T>(
    ctx: &mut Ctx,
    node: &Node,
    key: &str,
    names: &[&str],
    parse: fn(&str) -> Option<T>,
) -> Option<T> {
    let text = node.key_text().unwrap_or_default();
    match node.as_str().and_then(parse) {
        Some(v) => Some(v),
        None => {
            let hint =
                suggest(&text, names.iter().copied()).map(|s| format!("Did you mean `{s}`?"));
            ctx.push(
                ErrorCode::InvalidValue,
                node.pos,
                format!("`{key}` must be one of {}, not `{text}`", names.join(", ")),
                hint,
            );
            None
        }
    }
}

#[derive(Default)]
struct Defaults {
    params: Map<String, Value>,
    timeout: Option<f64>,
    retry: Option<RetryPolicy>,
    priority: Option<Priority>,
    on_error: Option<OnError>,
}

fn parse_defaults(ctx: &mut Ctx, node: &Node) -> Defaults {
    let mut defaults = Defaults::default();
    let Some(map) = node.as_map() else {
        ctx.wrong_type(node, "defaults", "a mapping");
        return defaults;
    };
    ctx.check_keys(map, DEFAULTS_KEYS, "defaults");
    for (key, value) in map {
        match key.key_text().unwrap_or_default().as_str() {
            "timeout" => defaults.timeout = parse_timeout(ctx, value),
            "retry" => defaults.retry = Some(parse_retry(ctx, value, &RetryPolicy::default())),
            "priority" => {
                defaults.priority =
                    parse_choice(ctx, value, "priority", Priority::NAMES, Priority::parse)
            }
            "on_error" => {
                defaults.on_error =
                    parse_choice(ctx, value, "on_error", OnError::NAMES, OnError::parse)
            }
            other if DEFAULTS_KEYS.contains(&other) => {
                defaults.params.insert(other.to_string(), value.to_json());
            }
            _ => {}
        }
    }
    defaults
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

struct RawTask<'n> {
    spec: TaskSpec,
    pos: Pos,
    deps: Vec<(String, Pos)>,
    params_node: Option<&'n Node>,
    /// Where `when:` and `for_each:` stand, for errors in their references.
    when_pos: Pos,
    for_each_pos: Pos,
    cache_pos: Pos,
}

/// A duration: seconds as a number, or a number with a unit (`500ms`, `90s`,
/// `15m`, `1h`, `7d`), or several of them (`1h30m`).
pub fn parse_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Some(seconds).filter(|s| s.is_finite() && *s >= 0.0);
    }
    let mut total = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match rest[..unit_len].trim() {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    Some(total).filter(|t: &f64| t.is_finite())
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

/// Reachability over the dependency graph (which must have no cycle), one
/// query at a time: an iterative search with generation marks, so nothing is
/// allocated per query and no recursion follows a long chain.
struct Ancestry<'d> {
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
    fn new(deps: &'d [Vec<usize>]) -> Self {
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

    fn exhausted(&self) -> bool {
        self.budget == 0
    }

    /// Whether `ancestor` is a (transitive) dependency of `task`. Once the
    /// budget is spent every answer is `true` (the caller reports the
    /// document as too complex instead).
    fn precedes(&mut self, ancestor: usize, task: usize) -> bool {
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

fn load_nested(
    text: &str,
    file: &str,
    catalog: &dyn MethodCatalog,
    overrides: &Map<String, Value>,
    includes: &dyn Includes,
    limits: &Limits,
    stack: &mut Vec<String>,
) -> Result<Workflow, Vec<Diagnostic>> {
    let mut ctx = Ctx {
        file,
        diagnostics: Vec::new(),
    };
    let root = match yaml::parse_limited(text, limits) {
        Ok(Some(root)) => root,
        Ok(None) => {
            ctx.push(
                ErrorCode::EmptyWorkflow,
                Pos { line: 1, column: 1 },
                "workflow file is empty",
                None,
            );
            return Err(ctx.diagnostics);
        }
        Err(e) if e.code == ErrorCode::YamlSyntax => {
            ctx.push(
                ErrorCode::YamlSyntax,
                e.pos,
                format!("syntax error: {}", e.message),
                None,
            );
            return Err(ctx.diagnostics);
        }
        Err(e) => {
            ctx.push(e.code, e.pos, e.message, e.hint);
            return Err(ctx.diagnostics);
        }
    };
    let Some(top) = root.as_map() else {
        ctx.wrong_type(&root, "the workflow", "a mapping with `name` and `tasks`");
        return Err(ctx.diagnostics);
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
        .map(|d| parse_defaults(&mut ctx, d))
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
        return Err(ctx.diagnostics);
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

    let mut raw: Vec<RawTask> = Vec::new();
    for (i, node) in task_nodes.iter().enumerate() {
        if let Some(task) = parse_task(&mut ctx, node, i, &defaults, catalog) {
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
    for task in raw.iter_mut().filter(|t| t.spec.method == SUB_WORKFLOW) {
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
        let (child_text, child_name) = match includes.read(file, &path) {
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

    // Ids and names share one namespace: references may use either.
    let mut owner: HashMap<String, usize> = HashMap::new();
    for (i, task) in raw.iter().enumerate() {
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
                        raw[other].pos.line
                    ),
                    None,
                );
            } else {
                owner.insert(key, i);
            }
        }
    }

    let mut dep_index: Vec<Vec<usize>> = vec![Vec::new(); raw.len()];
    for (i, task) in raw.iter().enumerate() {
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

    let cycle = find_cycle(&dep_index);
    if let Some(cycle) = &cycle {
        let path: Vec<&str> = cycle.iter().map(|&i| raw[i].spec.id.as_str()).collect();
        ctx.push(
            ErrorCode::DependencyCycle,
            raw[cycle[0]].pos,
            format!("dependency cycle: {}", path.join(" -> ")),
            None,
        );
    }

    // Whether a referenced task runs before the referring one: answered per
    // reference by a search over dependencies, not by ancestor sets of every
    // task (quadratic in memory for a long chain).
    let mut ancestry = Ancestry::new(&dep_index);
    let names: HashSet<String> = owner.keys().cloned().collect();
    let mut outputs = Map::new();
    if let Some(node) = root.get("outputs") {
        match node.as_map() {
            Some(entries) => {
                for (key, value) in entries {
                    let mut found = Vec::new();
                    references_in(value, &names, &mut found);
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
    let budget = root.get("budget").map(|node| parse_budget(node, &mut ctx));
    for (i, task) in raw.iter().enumerate() {
        let fans_out = task.spec.for_each.is_some();
        let mut found = Vec::new();
        if let Some(params) = task.params_node {
            references_in(params, &names, &mut found);
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
        check(&mut ctx, found, fans_out);
        if let Some(key) = task.spec.cache.as_ref().and_then(|c| c.key.as_ref()) {
            let mut found = Vec::new();
            refs::collect_references(&Value::String(key.clone()), &names, &mut found);
            let pos = task.cache_pos;
            check(
                &mut ctx,
                found.into_iter().map(|r| (r, pos)).collect(),
                fans_out,
            );
        }

        if let Some(condition) = &task.spec.when {
            match expr::parse(condition, &names) {
                Ok(parsed) => {
                    let mut used = Vec::new();
                    parsed.references(&mut used);
                    let found = used.into_iter().map(|r| (Ok(r), task.when_pos)).collect();
                    check(&mut ctx, found, false);
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
            refs::collect_references(&Value::String(text.to_string()), &names, &mut found);
            let found = found.into_iter().map(|r| (r, task.for_each_pos)).collect();
            check(&mut ctx, found, false);
        }
    }

    if ancestry.exhausted() {
        let e = Limit::Tasks.exceeded(
            "the workflow's references span too many dependencies to verify".to_string(),
            limits.max_tasks,
        );
        ctx.push(e.code, root.pos, e.message, e.hint);
    }

    if !ctx.diagnostics.is_empty() {
        let mut diagnostics = ctx.diagnostics;
        diagnostics.sort_by_key(|d| (d.pos.line, d.pos.column));
        diagnostics.dedup();
        return Err(diagnostics);
    }
    // Dependencies are stored as task ids, whichever of id or name was written.
    let id_of: Vec<String> = raw.iter().map(|t| t.spec.id.clone()).collect();
    let tasks = raw
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            t.spec.dependencies = dep_index[i].iter().map(|&j| id_of[j].clone()).collect();
            t.spec
        })
        .collect();
    Ok(Workflow {
        name,
        description,
        inputs,
        tasks,
        outputs,
        budget: budget.flatten(),
        access: None,
    })
}

fn parse_budget(node: &Node, ctx: &mut Ctx) -> Option<Budget> {
    let Some(entries) = node.as_map() else {
        ctx.push(
            ErrorCode::InvalidBudget,
            node.pos,
            "`budget` must be a mapping like {tokens: 100000, cost: 2.5}",
            None,
        );
        return None;
    };
    let mut budget = Budget::default();
    for (key, value) in entries {
        let name = key.key_text().unwrap_or_default();
        let number = value
            .to_json()
            .as_f64()
            .filter(|n| n.is_finite() && *n > 0.0);
        match (name.as_str(), number) {
            ("tokens", Some(n)) if n.fract() == 0.0 => budget.tokens = Some(n as u64),
            ("cost", Some(n)) => budget.cost = Some(n),
            ("tokens" | "cost", _) => ctx.push(
                ErrorCode::InvalidBudget,
                value.pos,
                format!(
                    "budget `{name}` must be a positive number{}",
                    if name == "tokens" {
                        " of tokens"
                    } else {
                        " (USD)"
                    }
                ),
                None,
            ),
            _ => ctx.push(
                ErrorCode::InvalidBudget,
                key.pos,
                format!("unknown budget key `{name}`"),
                Some("A budget has `tokens` and/or `cost`.".into()),
            ),
        }
    }
    (budget != Budget::default()).then_some(budget)
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
