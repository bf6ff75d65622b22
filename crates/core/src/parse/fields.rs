//! Values of single fields that workflows and tasks share: numbers,
//! durations, choices, retry policies, requirements, defaults and budgets.

use super::diagnostics::{suggest, Ctx};
use crate::errors::ErrorCode;
use crate::model::{Backoff, Budget, OnError, Priority, Requires, RetryPolicy};
use crate::yaml::{Node, NodeKind, Pos, Scalar};
use serde_json::{Map, Value};

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

pub(super) fn number(node: &Node) -> Option<f64> {
    match &node.kind {
        NodeKind::Scalar(Scalar::Int(i)) => Some(*i as f64),
        NodeKind::Scalar(Scalar::Float(f)) => Some(*f),
        _ => None,
    }
}

pub(super) fn string_list(ctx: &mut Ctx, node: &Node, key: &str) -> Vec<(String, Pos)> {
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

pub(super) fn parse_retry(ctx: &mut Ctx, node: &Node, base: &RetryPolicy) -> RetryPolicy {
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
pub(super) fn parse_requires(ctx: &mut Ctx, node: &Node) -> Requires {
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

pub(super) fn parse_timeout(ctx: &mut Ctx, node: &Node) -> Option<f64> {
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

pub(super) fn parse_choice<T>(
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
pub(super) struct Defaults {
    pub(super) params: Map<String, Value>,
    pub(super) timeout: Option<f64>,
    pub(super) retry: Option<RetryPolicy>,
    pub(super) priority: Option<Priority>,
    pub(super) on_error: Option<OnError>,
}

pub(super) fn parse_defaults(ctx: &mut Ctx, node: &Node) -> Defaults {
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

pub(super) fn parse_budget(node: &Node, ctx: &mut Ctx) -> Option<Budget> {
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
