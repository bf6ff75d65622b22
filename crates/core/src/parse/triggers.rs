//! The `triggers:` phase: each entry's kind (cron, every, webhook, folder) and
//! options, checked with positions — a bad cron field is reported at its own
//! column.

use super::diagnostics::{suggest, Ctx};
use super::fields::parse_duration;
use crate::errors::ErrorCode;
use crate::triggers::{
    faulty_cron_field, parse_cron, parse_timezone, suggest_timezone, Overlap, Trigger, TriggerKind,
    MIN_INTERVAL_MS,
};
use crate::yaml::{Node, NodeKind, Pos, Scalar};
use serde_json::{Map, Value};

const TRIGGER_KEYS: &[&str] = &[
    "cron", "timezone", "every", "webhook", "folder", "inputs", "overlap", "catchup",
];
const KINDS: &[&str] = &["cron", "every", "webhook", "folder"];
const FOLDER_KEYS: &[&str] = &["path", "pattern", "stable"];
const WEBHOOK_KEYS: &[&str] = &["name"];

/// How long a watched file must keep its size and mtime before it is picked up.
pub const DEFAULT_STABLE_MS: u64 = 1000;

pub(super) fn read_triggers(
    ctx: &mut Ctx,
    text: &str,
    node: Option<&Node>,
    inputs: &Map<String, Value>,
) -> Vec<Trigger> {
    let Some(node) = node else {
        return Vec::new();
    };
    let items = match &node.kind {
        NodeKind::Seq(items) => items.as_slice(),
        NodeKind::Scalar(Scalar::Null) => return Vec::new(),
        _ => {
            ctx.wrong_type(node, "triggers", "a list of triggers");
            return Vec::new();
        }
    };
    let mut triggers = Vec::new();
    let mut hooks: Vec<String> = Vec::new();
    for item in items {
        if let Some(trigger) = read_trigger(ctx, text, item, inputs) {
            if let TriggerKind::Webhook { name } = &trigger.kind {
                if hooks.contains(name) {
                    ctx.push(
                        ErrorCode::InvalidTrigger,
                        item.pos,
                        format!("webhook `{name}` is declared twice"),
                        Some("Give each webhook trigger its own name.".into()),
                    );
                    continue;
                }
                hooks.push(name.clone());
            }
            triggers.push(trigger);
        }
    }
    triggers
}

fn read_trigger(
    ctx: &mut Ctx,
    text: &str,
    node: &Node,
    inputs: &Map<String, Value>,
) -> Option<Trigger> {
    let Some(entries) = node.as_map() else {
        ctx.push(
            ErrorCode::InvalidTrigger,
            node.pos,
            format!("a trigger must be a mapping, not {}", node.type_name()),
            Some("Write e.g. `- cron: \"0 6 * * 1-5\"` or `- every: 15m`.".into()),
        );
        return None;
    };
    ctx.check_keys(entries, TRIGGER_KEYS, "trigger");
    let kinds: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| node.get(k).is_some())
        .collect();
    let kind_name = match kinds.as_slice() {
        [one] => *one,
        [] => {
            ctx.push(
                ErrorCode::InvalidTrigger,
                node.pos,
                "trigger has none of cron, every, webhook or folder",
                Some("Add exactly one of them, e.g. `every: 15m`.".into()),
            );
            return None;
        }
        several => {
            ctx.push(
                ErrorCode::InvalidTrigger,
                node.pos,
                format!(
                    "trigger has several kinds ({}); each entry is one trigger",
                    several.join(", ")
                ),
                Some("Split it into one list entry per kind.".into()),
            );
            return None;
        }
    };
    let value = node.get(kind_name)?;
    let kind = match kind_name {
        "cron" => read_cron(ctx, text, value, node.get("timezone")),
        "every" => read_every(ctx, value),
        "webhook" => read_webhook(ctx, value),
        _ => read_folder(ctx, value),
    };
    if kind_name != "cron" {
        if let Some(tz) = node.get("timezone") {
            ctx.push(
                ErrorCode::InvalidTrigger,
                tz.pos,
                "`timezone` belongs to a cron trigger",
                Some(
                    "Remove it; intervals, webhooks and folders do not depend on a time zone."
                        .into(),
                ),
            );
        }
    }

    let trigger_inputs = match node.get("inputs") {
        None => Map::new(),
        Some(n) => match n.to_json() {
            Value::Object(map) => {
                check_declared(ctx, n, &map, inputs);
                map
            }
            Value::Null => Map::new(),
            _ => {
                ctx.wrong_type(n, "inputs", "a mapping of input names to values");
                Map::new()
            }
        },
    };
    let overlap = match node.get("overlap") {
        None => Overlap::default(),
        Some(n) => match n.as_str().and_then(Overlap::parse) {
            Some(o) => o,
            None => {
                let shown = n.key_text().unwrap_or_else(|| n.type_name().to_string());
                let hint = suggest(&shown, Overlap::NAMES.iter().copied())
                    .map(|s| format!("Did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("Use one of {}.", Overlap::NAMES.join(", ")));
                ctx.push(
                    ErrorCode::InvalidTrigger,
                    n.pos,
                    format!("`overlap: {shown}` is not a policy"),
                    Some(hint),
                );
                Overlap::default()
            }
        },
    };
    let catchup_ms = match node.get("catchup") {
        None => None,
        Some(n) => read_catchup(ctx, n),
    };
    if catchup_ms.is_some()
        && matches!(
            kind,
            Some(TriggerKind::Webhook { .. } | TriggerKind::Folder { .. })
        )
    {
        if let Some(n) = node.get("catchup") {
            ctx.push(
                ErrorCode::InvalidTrigger,
                n.pos,
                "`catchup` belongs to cron and every triggers",
                Some("Remove it; webhooks and folders have no ticks to miss.".into()),
            );
        }
    }
    Some(Trigger {
        kind: kind?,
        inputs: trigger_inputs,
        overlap,
        catchup_ms,
    })
}

fn check_declared(
    ctx: &mut Ctx,
    node: &Node,
    given: &Map<String, Value>,
    declared: &Map<String, Value>,
) {
    for key in given.keys() {
        if declared.contains_key(key) {
            continue;
        }
        let pos = node
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.key_text().as_deref() == Some(key)))
            .map(|(k, _)| k.pos)
            .unwrap_or(node.pos);
        let hint = suggest(key, declared.keys().map(String::as_str))
            .map(|s| format!("Did you mean `{s}`?"))
            .unwrap_or_else(|| {
                "Declare it under the workflow's `inputs:` (with a default) so tasks can use it."
                    .into()
            });
        ctx.push(
            ErrorCode::InvalidTrigger,
            pos,
            format!("trigger input `{key}` is not an input of the workflow"),
            Some(hint),
        );
    }
}

/// Where the text of a scalar starts: one column further when it is quoted.
fn content_pos(text: &str, node: &Node) -> Pos {
    let quoted = text
        .lines()
        .nth(node.pos.line.saturating_sub(1))
        .and_then(|line| line.chars().nth(node.pos.column.saturating_sub(1)))
        .is_some_and(|c| c == '"' || c == '\'');
    Pos {
        line: node.pos.line,
        column: node.pos.column + usize::from(quoted),
    }
}

fn read_cron(ctx: &mut Ctx, text: &str, value: &Node, tz: Option<&Node>) -> Option<TriggerKind> {
    let Some(expr) = value.as_str() else {
        ctx.push(
            ErrorCode::InvalidCron,
            value.pos,
            format!(
                "`cron` must be a quoted expression, not {}",
                value.type_name()
            ),
            Some(ErrorCode::InvalidCron.def().hint.into()),
        );
        return None;
    };
    let mut ok = true;
    if let Err(why) = parse_cron(expr) {
        ok = false;
        let start = content_pos(text, value);
        // Only a one-line plain or quoted scalar maps offsets to columns.
        let pos = match faulty_cron_field(expr) {
            Some(offset) if !expr.contains('\n') => Pos {
                line: start.line,
                column: start.column + expr[..offset].chars().count(),
            },
            _ => start,
        };
        ctx.push(
            ErrorCode::InvalidCron,
            pos,
            format!("invalid cron expression \"{expr}\": {why}"),
            Some(ErrorCode::InvalidCron.def().hint.into()),
        );
    }
    let timezone = match tz {
        None => None,
        Some(n) => match n.as_str() {
            Some(name) => match parse_timezone(name) {
                Ok(_) => Some(name.trim().to_string()),
                Err(why) => {
                    ok = false;
                    let hint = suggest_timezone(name)
                        .map(|s| format!("Did you mean `{s}`?"))
                        .unwrap_or_else(|| ErrorCode::UnknownTimeZone.def().hint.into());
                    ctx.push(
                        ErrorCode::UnknownTimeZone,
                        content_pos(text, n),
                        why,
                        Some(hint),
                    );
                    None
                }
            },
            None => {
                ok = false;
                ctx.wrong_type(n, "timezone", "an IANA time zone name");
                None
            }
        },
    };
    ok.then(|| TriggerKind::Cron {
        expr: expr.trim().to_string(),
        timezone,
    })
}

/// A duration in ms from a number of seconds or a text like `15m`.
fn duration_ms(node: &Node) -> Option<f64> {
    match &node.kind {
        NodeKind::Scalar(Scalar::Int(i)) if *i >= 0 => Some(*i as f64 * 1000.0),
        NodeKind::Scalar(Scalar::Float(f)) if f.is_finite() && *f >= 0.0 => Some(f * 1000.0),
        NodeKind::Scalar(Scalar::Str(s)) => parse_duration(s).map(|secs| secs * 1000.0),
        _ => None,
    }
}

fn read_every(ctx: &mut Ctx, value: &Node) -> Option<TriggerKind> {
    match duration_ms(value) {
        Some(ms) if ms >= MIN_INTERVAL_MS as f64 && ms <= u64::MAX as f64 / 2.0 => {
            Some(TriggerKind::Every {
                every_ms: ms.round() as u64,
            })
        }
        Some(ms) => {
            ctx.push(
                ErrorCode::IntervalTooShort,
                value.pos,
                format!(
                    "`every` is {} ms; the shortest interval is one second",
                    ms.round()
                ),
                Some(ErrorCode::IntervalTooShort.def().hint.into()),
            );
            None
        }
        None => {
            let shown = value.key_text().unwrap_or_else(|| value.type_name().into());
            ctx.push(
                ErrorCode::IntervalTooShort,
                value.pos,
                format!("`every: {shown}` is not a duration"),
                Some(ErrorCode::IntervalTooShort.def().hint.into()),
            );
            None
        }
    }
}

/// Hook names appear in URLs: letters, digits, `-` and `_`, at most 64.
pub fn valid_hook_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn read_webhook(ctx: &mut Ctx, value: &Node) -> Option<TriggerKind> {
    let name_node = match &value.kind {
        NodeKind::Map(entries) => {
            ctx.check_keys(entries, WEBHOOK_KEYS, "webhook");
            match value.get("name") {
                Some(n) => n,
                None => {
                    ctx.push(
                        ErrorCode::MissingField,
                        value.pos,
                        "webhook has no `name`",
                        Some("Write `webhook: {name: new-ticket}`.".into()),
                    );
                    return None;
                }
            }
        }
        _ => value,
    };
    match name_node.as_str() {
        Some(name) if valid_hook_name(name) => Some(TriggerKind::Webhook {
            name: name.to_string(),
        }),
        _ => {
            let shown = name_node
                .key_text()
                .unwrap_or_else(|| name_node.type_name().into());
            ctx.push(
                ErrorCode::InvalidTrigger,
                name_node.pos,
                format!("`{shown}` is not a webhook name"),
                Some("Use 1-64 letters, digits, `-` or `_`: it becomes /api/v1/hooks/NAME.".into()),
            );
            None
        }
    }
}

fn read_folder(ctx: &mut Ctx, value: &Node) -> Option<TriggerKind> {
    let (path_node, pattern, stable_ms) = match &value.kind {
        NodeKind::Map(entries) => {
            ctx.check_keys(entries, FOLDER_KEYS, "folder");
            let Some(path) = value.get("path") else {
                ctx.push(
                    ErrorCode::MissingField,
                    value.pos,
                    "folder trigger has no `path`",
                    Some("Write `folder: {path: ./inbox, pattern: \"*.pdf\"}`.".into()),
                );
                return None;
            };
            let pattern = match value.get("pattern") {
                None => None,
                Some(p) => match p.as_str() {
                    Some(s) if !s.trim().is_empty() => Some(s.to_string()),
                    _ => {
                        ctx.wrong_type(p, "pattern", "a glob such as \"*.pdf\"");
                        return None;
                    }
                },
            };
            let stable_ms = match value.get("stable") {
                None => DEFAULT_STABLE_MS,
                Some(s) => match duration_ms(s) {
                    Some(ms) => ms.round() as u64,
                    None => {
                        ctx.wrong_type(s, "stable", "a duration such as 500ms or 2s");
                        return None;
                    }
                },
            };
            (path, pattern, stable_ms)
        }
        _ => (value, None, DEFAULT_STABLE_MS),
    };
    match path_node.as_str() {
        Some(path) if !path.trim().is_empty() && !path.contains('\0') => {
            Some(TriggerKind::Folder {
                path: path.to_string(),
                pattern,
                stable_ms,
            })
        }
        _ => {
            ctx.wrong_type(path_node, "path", "a folder path");
            None
        }
    }
}

fn read_catchup(ctx: &mut Ctx, node: &Node) -> Option<u64> {
    if matches!(node.as_str(), Some("none")) || matches!(node.kind, NodeKind::Scalar(Scalar::Null))
    {
        return None;
    }
    match duration_ms(node) {
        Some(ms) if ms >= 1.0 && ms <= u64::MAX as f64 / 2.0 => Some(ms.round() as u64),
        Some(_) => None,
        None => {
            let shown = node.key_text().unwrap_or_else(|| node.type_name().into());
            ctx.push(
                ErrorCode::InvalidTrigger,
                node.pos,
                format!("`catchup: {shown}` is not a duration"),
                Some("Write a window such as 1h or 30m, or `none` to skip missed ticks (the default).".into()),
            );
            None
        }
    }
}
