//! References between tasks: `${task.path | filter}` and `{{task.path}}`.
//!
//! A template is scanned into text and references once; resolution asks a
//! [`Scope`] for task results, inputs and loop variables. `${…}` always means a
//! reference (an unknown name is an error); `{{…}}` is a reference only when its
//! root names something we know, so Jinja-like or Python-format text passes through.
//! `$${` writes a literal `${`.

use crate::errors::{ErrorCode, GzError};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Dollar,
    Braces,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Root {
    /// A task id or name, as written.
    Task(String),
    Input(String),
    Item,
    Index,
    Env(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathSeg {
    Key(String),
    Index(i64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Json,
    Raw,
    Trim,
    Code,
    Default(Value),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The text between the delimiters, for messages and the `inputs` dict.
    pub text: String,
    pub syntax: Syntax,
    pub root: Root,
    pub path: Vec<PathSeg>,
    pub filters: Vec<Filter>,
}

impl Reference {
    pub fn task(&self) -> Option<&str> {
        match &self.root {
            Root::Task(t) => Some(t),
            _ => None,
        }
    }

    fn default_value(&self) -> Option<&Value> {
        self.filters.iter().find_map(|f| match f {
            Filter::Default(v) => Some(v),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Text(String),
    Ref(Reference),
}

/// What a template may refer to by name. Task names can contain spaces and dots,
/// so a root is the longest prefix of the reference that names a task.
pub trait Names {
    fn is_task(&self, name: &str) -> bool;
}

impl Names for [&str] {
    fn is_task(&self, name: &str) -> bool {
        self.contains(&name)
    }
}

impl Names for Vec<String> {
    fn is_task(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }
}

impl Names for std::collections::HashSet<String> {
    fn is_task(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// The longest prefix of `expr` that ends at a path boundary and names a task.
fn task_root<'e>(expr: &'e str, names: &dyn Names) -> Option<&'e str> {
    let mut cuts: Vec<usize> = expr
        .char_indices()
        .filter(|(_, c)| matches!(c, '.' | '['))
        .map(|(i, _)| i)
        .collect();
    cuts.push(expr.len());
    cuts.into_iter()
        .rev()
        .map(|cut| &expr[..cut])
        .find(|root| names.is_task(root))
}

fn invalid(text: &str, why: impl Into<String>) -> GzError {
    GzError::new(
        ErrorCode::InvalidReference,
        format!("invalid reference `{text}`: {}", why.into()),
    )
}

/// Finds the closing delimiter, skipping quoted strings inside (for `default("}")`).
fn find_close(text: &str, from: usize, close: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                // Bytes, not `text[i..]`: after a multi-byte character `i`
                // is not a char boundary (found by fuzzing; fuzz/corpus/regressions).
                if bytes[i..].starts_with(close.as_bytes()) {
                    return Some(i);
                }
                if b == b'"' || b == b'\'' {
                    quote = Some(b);
                }
                if b == b'\n' && close == "}}" {
                    return None;
                }
            }
        }
        i += 1;
    }
    None
}

/// The end (exclusive) of the `${…}` reference that starts at `at`, if it closes.
pub fn find_reference_end(text: &str, at: usize) -> Option<usize> {
    if !text.get(at..)?.starts_with("${") {
        return None;
    }
    find_close(text, at + 2, "}").map(|close| close + 1)
}

/// A reference found at `start..end` of a template.
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub reference: Result<Reference, GzError>,
}

/// Looks for a reference starting exactly at `at`. `{{…}}` with an unknown root
/// and unclosed `{{` are not references.
pub fn reference_at(text: &str, at: usize, names: &dyn Names, allow_braces: bool) -> Option<Found> {
    let rest = &text[at..];
    if rest.starts_with("${") {
        let inner_start = at + 2;
        return Some(match find_close(text, inner_start, "}") {
            Some(close) => Found {
                start: at,
                end: close + 1,
                reference: parse_inner(&text[inner_start..close], Syntax::Dollar, names),
            },
            None => Found {
                start: at,
                end: text.len(),
                reference: Err(invalid(rest, "missing closing `}`")),
            },
        });
    }
    if allow_braces && rest.starts_with("{{") && !rest.starts_with("{{{") {
        let inner_start = at + 2;
        let close = find_close(text, inner_start, "}}")?;
        let reference = parse_inner(&text[inner_start..close], Syntax::Braces, names).ok()?;
        return Some(Found {
            start: at,
            end: close + 2,
            reference: Ok(reference),
        });
    }
    None
}

/// Splits a template into text and references. Errors only for malformed `${…}`.
pub fn scan(text: &str, names: &dyn Names) -> Result<Vec<Segment>, GzError> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with("$${") {
            literal.push_str("${");
            i += 3;
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        if c == '$' || c == '{' {
            if let Some(found) = reference_at(text, i, names, true) {
                if !literal.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut literal)));
                }
                segments.push(Segment::Ref(found.reference?));
                i = found.end;
                continue;
            }
        }
        literal.push(c);
        i += c.len_utf8();
    }
    if !literal.is_empty() {
        segments.push(Segment::Text(literal));
    }
    Ok(segments)
}

/// True when `text` contains anything that looks like a reference.
pub fn has_reference(text: &str) -> bool {
    text.contains("${") || text.contains("{{")
}

fn split_filters(inner: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                '|' if depth == 0 => {
                    parts.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            },
        }
    }
    parts.push(&inner[start..]);
    parts
}

fn parse_filter(text: &str, whole: &str) -> Result<Filter, GzError> {
    let text = text.trim();
    let (name, arg) = match text.find('(') {
        Some(open) if text.ends_with(')') => {
            (text[..open].trim(), Some(&text[open + 1..text.len() - 1]))
        }
        Some(_) => return Err(invalid(whole, format!("filter `{text}` is missing `)`"))),
        None => (text, None),
    };
    match (name, arg) {
        ("json", None) => Ok(Filter::Json),
        ("raw", None) => Ok(Filter::Raw),
        ("trim", None) => Ok(Filter::Trim),
        ("code", None) => Ok(Filter::Code),
        ("default", Some(arg)) => {
            let arg = arg.trim();
            let value =
                if let Some(inner) = arg.strip_prefix('\'').and_then(|a| a.strip_suffix('\'')) {
                    Value::String(inner.replace("\\'", "'"))
                } else {
                    serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.to_string()))
                };
            Ok(Filter::Default(value))
        }
        ("default", None) => Err(invalid(whole, "`default` needs a value: default(\"x\")")),
        _ => Err(invalid(
            whole,
            format!("unknown filter `{name}`; filters are json, raw, trim, code, default(\"x\")"),
        )),
    }
}

fn parse_path(text: &str, whole: &str) -> Result<Vec<PathSeg>, GzError> {
    let mut path = Vec::new();
    let mut rest = text.trim_end();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = after[..end].trim();
            if key.is_empty() {
                return Err(invalid(whole, "empty field name"));
            }
            path.push(PathSeg::Key(key.to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after
                .find(']')
                .ok_or_else(|| invalid(whole, "missing `]`"))?;
            let inside = after[..close].trim();
            if let Ok(n) = inside.parse::<i64>() {
                path.push(PathSeg::Index(n));
            } else {
                let key = inside.trim_matches(|c| c == '"' || c == '\'');
                path.push(PathSeg::Key(key.to_string()));
            }
            rest = &after[close + 1..];
        } else {
            return Err(invalid(whole, format!("unexpected `{rest}`")));
        }
    }
    Ok(path)
}

fn parse_inner(inner: &str, syntax: Syntax, names: &dyn Names) -> Result<Reference, GzError> {
    let whole = inner.trim();
    let parts = split_filters(whole);
    let expr = parts[0].trim();
    if expr.is_empty() {
        return Err(invalid(whole, "empty reference"));
    }
    let filters = parts[1..]
        .iter()
        .map(|f| parse_filter(f, whole))
        .collect::<Result<Vec<_>, _>>()?;

    let at_boundary = |name: &str| {
        expr == name
            || (expr.starts_with(name)
                && matches!(expr.as_bytes().get(name.len()), Some(b'.') | Some(b'[')))
    };
    let (root, rest) = if let Some(name) = task_root(expr, names) {
        (Root::Task(name.to_string()), &expr[name.len()..])
    } else if at_boundary("inputs") || at_boundary("env") {
        let is_env = expr.starts_with("env");
        let after = &expr[if is_env { 3 } else { 6 }..];
        let path = parse_path(after, whole)?;
        let Some(PathSeg::Key(first)) = path.first().cloned() else {
            return Err(invalid(whole, "name the input: inputs.NAME or env.NAME"));
        };
        let root = if is_env {
            Root::Env(first)
        } else {
            Root::Input(first)
        };
        return Ok(Reference {
            text: whole.to_string(),
            syntax,
            root,
            path: path[1..].to_vec(),
            filters,
        });
    } else if at_boundary("item") {
        (Root::Item, &expr[4..])
    } else if at_boundary("index") {
        (Root::Index, &expr[5..])
    } else {
        let end = expr.find(['.', '[']).unwrap_or(expr.len());
        let root_name = &expr[..end];
        let valid_identifier = root_name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | ' '));
        if syntax == Syntax::Braces || !valid_identifier {
            return Err(invalid(whole, "not a reference"));
        }
        return Err(GzError::new(
            ErrorCode::UnknownReference,
            format!("reference `{whole}` names no task or input `{root_name}`"),
        )
        .with_details(serde_json::json!({ "reference": whole, "root": root_name })));
    };
    Ok(Reference {
        text: whole.to_string(),
        syntax,
        root,
        path: parse_path(rest, whole)?,
        filters,
    })
}

/// A finished task as references see it.
pub struct TaskView<'a> {
    /// The whole result record (`{response, model, usage…}` or `{result, stdout…}`).
    pub record: &'a Value,
    /// The name of the record's primary field.
    pub primary: &'a str,
}

/// Where references get their values.
pub trait Scope {
    fn task(&self, id_or_name: &str) -> Option<TaskView<'_>>;
    fn input(&self, name: &str) -> Option<&Value>;
    fn item(&self) -> Option<&Value> {
        None
    }
    fn index(&self) -> Option<usize> {
        None
    }
    fn env(&self, _name: &str) -> Option<String> {
        None
    }
}

fn navigate<'v>(mut value: &'v Value, path: &[PathSeg]) -> Result<&'v Value, (usize, &'v Value)> {
    for (i, seg) in path.iter().enumerate() {
        let next = match (seg, value) {
            (PathSeg::Key(k), Value::Object(map)) => map.get(k),
            (PathSeg::Index(n), Value::Array(items)) => {
                let idx = if *n < 0 { items.len() as i64 + n } else { *n };
                usize::try_from(idx).ok().and_then(|i| items.get(i))
            }
            (PathSeg::Key(k), Value::Array(items)) => {
                k.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            _ => None,
        };
        match next {
            Some(v) => value = v,
            None => return Err((i, value)),
        }
    }
    Ok(value)
}

fn available(value: &Value) -> String {
    match value {
        Value::Object(map) if !map.is_empty() => map.keys().cloned().collect::<Vec<_>>().join(", "),
        Value::Array(items) => format!("indexes 0..{}", items.len()),
        Value::Object(_) => "none (empty object)".to_string(),
        other => format!("none ({} value)", type_name(other)),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn missing(reference: &Reference, message: String, fields: String) -> GzError {
    GzError::new(ErrorCode::ReferenceFieldMissing, message)
        .with_hint(format!(
            "Available fields: {fields}. Or add `| default(\"x\")` to the reference."
        ))
        .with_details(serde_json::json!({ "reference": reference.text, "available": fields }))
}

fn lookup(reference: &Reference, scope: &dyn Scope) -> Result<Value, GzError> {
    match &reference.root {
        Root::Task(name) => {
            let view = scope.task(name).ok_or_else(|| {
                GzError::new(
                    ErrorCode::ReferenceNotAncestor,
                    format!(
                        "reference `{}`: task `{name}` has no result (it did not run before this task)",
                        reference.text
                    ),
                )
            })?;
            let primary = view.record.get(view.primary).unwrap_or(&Value::Null);
            let path = &reference.path;
            // `${T.result}` is the primary value; `${T.result.x}` and `${T.x}` are
            // fields of the whole record, falling back to fields of the primary value.
            let (in_record, rest) = match path.first() {
                None => return Ok(primary.clone()),
                Some(PathSeg::Key(k)) if k == "result" && path.len() == 1 => {
                    return Ok(primary.clone())
                }
                Some(PathSeg::Key(k)) if k == "result" => (&path[1..], &path[1..]),
                _ => (&path[..], &path[..]),
            };
            if let Ok(v) = navigate(view.record, in_record) {
                return Ok(v.clone());
            }
            match navigate(primary, rest) {
                Ok(v) => Ok(v.clone()),
                Err((depth, at)) => {
                    let fields = if depth == 0 {
                        let mut names: Vec<String> = view
                            .record
                            .as_object()
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default();
                        if let Value::Object(m) = primary {
                            names.extend(m.keys().map(|k| format!("{}.{k}", view.primary)));
                        }
                        names.join(", ")
                    } else {
                        available(at)
                    };
                    Err(missing(
                        reference,
                        format!(
                            "reference `{}`: task `{name}` has no field `{}`",
                            reference.text,
                            describe(&rest[..=depth.min(rest.len().saturating_sub(1))])
                        ),
                        fields,
                    ))
                }
            }
        }
        Root::Input(name) => {
            let value = scope.input(name).ok_or_else(|| {
                GzError::new(
                    ErrorCode::InvalidInput,
                    format!("reference `{}`: no workflow input `{name}`", reference.text),
                )
                .with_hint("Declare it under `inputs:` in the workflow or pass --input NAME=VALUE.")
            })?;
            navigate(value, &reference.path)
                .cloned()
                .map_err(|(depth, at)| {
                    missing(
                        reference,
                        format!(
                            "reference `{}`: input `{name}` has no field `{}`",
                            reference.text,
                            describe(&reference.path[..=depth])
                        ),
                        available(at),
                    )
                })
        }
        Root::Item => {
            let item = scope.item().ok_or_else(|| {
                invalid(
                    &reference.text,
                    "`item` is only defined inside `for_each` tasks",
                )
            })?;
            navigate(item, &reference.path).cloned().map_err(|(_, at)| {
                missing(
                    reference,
                    format!("reference `{}`: no such field", reference.text),
                    available(at),
                )
            })
        }
        Root::Index => scope.index().map(Value::from).ok_or_else(|| {
            invalid(
                &reference.text,
                "`index` is only defined inside `for_each` tasks",
            )
        }),
        Root::Env(name) => scope.env(name).map(Value::String).ok_or_else(|| {
            GzError::new(
                ErrorCode::InvalidReference,
                format!(
                    "reference `{}`: environment variable `{name}` is not allowed or not set",
                    reference.text
                ),
            )
            .with_hint(
                "List the variable under `allowed_env` in ~/.gleitzeit/config.yaml and set it.",
            )
        }),
    }
}

fn describe(path: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            PathSeg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathSeg::Index(n) => out.push_str(&format!("[{n}]")),
        }
    }
    out
}

/// Extracts the first fenced code block (```lang … ```); LLMs wrap code in them.
/// Without a fence the text is returned trimmed.
pub fn extract_code(text: &str) -> String {
    if let Some(open) = text.find("```") {
        let after = &text[open + 3..];
        let body_start = after.find('\n').map(|i| i + 1).unwrap_or(after.len());
        let body = &after[body_start..];
        let end = body.find("```").unwrap_or(body.len());
        return body[..end].trim_end().to_string();
    }
    text.trim().to_string()
}

/// Resolves one reference to a JSON value, applying its filters.
pub fn resolve(reference: &Reference, scope: &dyn Scope) -> Result<Value, GzError> {
    let mut value = match lookup(reference, scope) {
        Ok(Value::Null) | Err(_) if reference.default_value().is_some() => {
            reference.default_value().cloned().unwrap_or(Value::Null)
        }
        other => other?,
    };
    for filter in &reference.filters {
        value = match filter {
            Filter::Json => Value::String(value.to_string()),
            Filter::Raw => Value::String(as_text(&value)),
            Filter::Trim => Value::String(as_text(&value).trim().to_string()),
            Filter::Code => Value::String(extract_code(&as_text(&value))),
            Filter::Default(_) => value,
        };
    }
    Ok(value)
}

/// How a value reads when inserted into a larger string: strings raw, the rest JSON.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders one string. Exactly one reference keeps the value's JSON type.
pub fn render_str(text: &str, names: &dyn Names, scope: &dyn Scope) -> Result<Value, GzError> {
    if !has_reference(text) {
        return Ok(Value::String(text.to_string()));
    }
    let segments = scan(text, names)?;
    if let [Segment::Ref(reference)] = segments.as_slice() {
        return resolve(reference, scope);
    }
    let mut out = String::with_capacity(text.len());
    for segment in &segments {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Ref(r) => out.push_str(&as_text(&resolve(r, scope)?)),
        }
    }
    Ok(Value::String(out))
}

/// Renders every string inside a JSON value.
pub fn render_value(value: &Value, names: &dyn Names, scope: &dyn Scope) -> Result<Value, GzError> {
    Ok(match value {
        Value::String(s) => render_str(s, names, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, names, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, names, scope)?)))
                .collect::<Result<_, GzError>>()?,
        ),
        other => other.clone(),
    })
}

/// Every reference in a JSON value, for validation. Keeps going after a bad
/// reference so all of them are reported.
pub fn collect_references(
    value: &Value,
    names: &dyn Names,
    out: &mut Vec<Result<Reference, GzError>>,
) {
    match value {
        Value::String(text) if has_reference(text) => {
            let mut i = 0;
            while i < text.len() {
                if text[i..].starts_with("$${") {
                    i += 3;
                    continue;
                }
                match reference_at(text, i, names, true) {
                    Some(found) => {
                        out.push(found.reference);
                        i = found.end;
                    }
                    None => i += text[i..].chars().next().map_or(1, char::len_utf8),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, names, out)),
        Value::Object(map) => map.values().for_each(|v| collect_references(v, names, out)),
        _ => {}
    }
}

pub mod python;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    pub(crate) struct TestScope {
        pub tasks: HashMap<String, (Value, &'static str)>,
        pub inputs: HashMap<String, Value>,
    }

    impl Scope for TestScope {
        fn task(&self, id: &str) -> Option<TaskView<'_>> {
            self.tasks
                .get(id)
                .map(|(record, primary)| TaskView { record, primary })
        }
        fn input(&self, name: &str) -> Option<&Value> {
            self.inputs.get(name)
        }
    }

    /// Found by fuzzing: `{{` followed by a multi-byte character panicked on a
    /// byte index inside the character. Such text is plain text; an unclosed
    /// `${` with one is GZ3013.
    #[test]
    fn braces_before_multibyte_text_do_not_panic() {
        let names = vec!["a".to_string()];
        for text in ["{{é}}", "{{ café }}", "x {{é", "{{\u{e9}'é'}}"] {
            let segments = scan(text, &names).unwrap();
            assert!(
                segments.iter().all(|s| matches!(s, Segment::Text(_))),
                "{text}"
            );
        }
        let err = scan("${a | default(\"é\")", &names).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidReference);
    }

    pub(crate) fn scope() -> (Vec<String>, TestScope) {
        let mut tasks = HashMap::new();
        tasks.insert(
            "Generate Data".to_string(),
            (
                json!({"result": {"numbers": [1, 2, 3]}, "stdout": "hi\n"}),
                "result",
            ),
        );
        tasks.insert(
            "llm_task".to_string(),
            (
                json!({"response": "```python\nprint(1)\n```", "model": "m"}),
                "response",
            ),
        );
        let mut inputs = HashMap::new();
        inputs.insert("topic".to_string(), json!("Rust"));
        (
            vec!["Generate Data".to_string(), "llm_task".to_string()],
            TestScope { tasks, inputs },
        )
    }

    #[test]
    fn primary_and_field_rules() {
        let (names, scope) = scope();
        let r = |t: &str| render_str(t, &names, &scope).unwrap();
        assert_eq!(r("${Generate Data}"), json!({"numbers": [1, 2, 3]}));
        assert_eq!(r("${Generate Data.result}"), json!({"numbers": [1, 2, 3]}));
        assert_eq!(
            r("${Generate Data.result.result}"),
            json!({"numbers": [1, 2, 3]})
        );
        assert_eq!(r("${Generate Data.stdout}"), json!("hi\n"));
        assert_eq!(r("${Generate Data.result.numbers[1]}"), json!(2));
        assert_eq!(r("{{Generate Data.numbers[-1]}}"), json!(3));
        assert_eq!(r("${llm_task.response}"), r("${llm_task.result}"));
        assert_eq!(r("n=${Generate Data.numbers}"), json!("n=[1,2,3]"));
        assert_eq!(r("about ${inputs.topic}!"), json!("about Rust!"));
    }

    #[test]
    fn filters() {
        let (names, scope) = scope();
        let r = |t: &str| render_str(t, &names, &scope).unwrap();
        assert_eq!(r("${llm_task | code}"), json!("print(1)"));
        assert_eq!(r("${inputs.topic | json}"), json!("\"Rust\""));
        assert_eq!(r("${llm_task.nothing | default(\"x\")}"), json!("x"));
        assert_eq!(r("${llm_task.nothing | default(5)}"), json!(5));
        assert_eq!(r("${Generate Data.stdout | trim}"), json!("hi"));
    }

    #[test]
    fn missing_field_names_reference_and_available_fields() {
        let (names, scope) = scope();
        let error = render_str("${Generate Data.result.nope}", &names, &scope).unwrap_err();
        assert_eq!(error.code, ErrorCode::ReferenceFieldMissing);
        assert!(
            error.message.contains("Generate Data.result.nope"),
            "{}",
            error.message
        );
        let hint = error.hint.unwrap();
        assert!(
            hint.contains("stdout") && hint.contains("result.numbers"),
            "{hint}"
        );
    }

    #[test]
    fn unknown_dollar_root_is_an_error_but_braces_pass_through() {
        let (names, scope) = scope();
        let error = render_str("${nobody.result}", &names, &scope).unwrap_err();
        assert_eq!(error.code, ErrorCode::UnknownReference);
        assert_eq!(
            render_str("{{ jinja }}", &names, &scope).unwrap(),
            json!("{{ jinja }}")
        );
        assert_eq!(
            render_str("cost $${x}", &names, &scope).unwrap(),
            json!("cost ${x}")
        );
    }

    #[test]
    fn bad_filter_is_invalid_reference() {
        let (names, scope) = scope();
        let error = render_str("${llm_task | shout}", &names, &scope).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidReference);
        assert!(error.message.contains("unknown filter `shout`"));
    }

    #[test]
    fn extract_code_takes_first_fence() {
        assert_eq!(
            extract_code("Here:\n```python\na = 1\nb = 2\n```\nmore ```x```"),
            "a = 1\nb = 2"
        );
        assert_eq!(extract_code("  plain  "), "plain");
    }
}
