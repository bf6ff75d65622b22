//! Built-in functions implemented in Rust, callable as `function/call` tasks
//! (`method: fibonacci`) or from the CLI (`gleitzeit run --function fibonacci --args n=10`).
//!
//! This file holds the registry and the one argument-coercion layer every
//! function goes through: arguments arrive as a JSON map that may come from YAML
//! (typed) or from the command line (all strings), and [`Function::call`] turns
//! them into the kinds each function declares in its [`ArgSpec`] list before
//! running it. The functions themselves live in one module per category.

// Unsafe only for the file path lookup on systems without /proc (marked `allow` there).
#![deny(unsafe_code)]

use gleitzeit_core::{ErrorCode, GzError};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::OnceLock;

pub use guard::{FileGuard, OpenError, Opened};

/// `arg!("n", Integer, required, "…")`, `arg!("n", Integer, optional, "…")`,
/// `arg!("n", Integer, default "10", "…")`: one [`ArgSpec`].
macro_rules! arg {
    ($name:literal, $kind:ident, required, $desc:literal) => {
        $crate::ArgSpec {
            name: $name,
            kind: $crate::ArgKind::$kind,
            required: true,
            default: None,
            description: $desc,
        }
    };
    ($name:literal, $kind:ident, optional, $desc:literal) => {
        $crate::ArgSpec {
            name: $name,
            kind: $crate::ArgKind::$kind,
            required: false,
            default: None,
            description: $desc,
        }
    };
    ($name:literal, $kind:ident, default $default:literal, $desc:literal) => {
        $crate::ArgSpec {
            name: $name,
            kind: $crate::ArgKind::$kind,
            required: false,
            default: Some($default),
            description: $desc,
        }
    };
}

mod data;
mod date;
mod files;
pub mod guard;
mod json;
mod math;
mod text;
mod util;

#[cfg(test)]
mod tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgKind {
    Integer,
    Number,
    String,
    Boolean,
    List,
    Object,
    Any,
}

impl ArgKind {
    /// How the kind is named in error messages ("must be an integer").
    pub fn expected(self) -> &'static str {
        match self {
            ArgKind::Integer => "an integer",
            ArgKind::Number => "a number",
            ArgKind::String => "text",
            ArgKind::Boolean => "true or false",
            ArgKind::List => "a list (JSON like [1,5,10] or comma-separated like 1,5,10)",
            ArgKind::Object => "an object (JSON like {\"key\": 1})",
            ArgKind::Any => "any value",
        }
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    pub required: bool,
    /// Default as JSON text, shown by `functions show`.
    pub default: Option<&'static str>,
    pub description: &'static str,
}

#[derive(Clone, Copy, serde::Serialize)]
pub struct Function {
    pub name: &'static str,
    pub category: &'static str,
    pub description: &'static str,
    pub args: &'static [ArgSpec],
    pub returns: &'static str,
    pub example: &'static str,
    /// Reads files or does heavy work: run off the async executor.
    pub blocking: bool,
    /// Runs with coerced arguments; functions that open files do so only
    /// through the guard.
    #[serde(skip)]
    pub run: fn(&Map<String, Value>, &FileGuard) -> Result<Value, GzError>,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("category", &self.category)
            .field("blocking", &self.blocking)
            .finish_non_exhaustive()
    }
}

impl Function {
    /// Checks and converts `args` against the function's [`ArgSpec`]s (see
    /// [`coerce_args`]), then runs the function.
    pub fn call(&self, args: &Map<String, Value>, files: &FileGuard) -> Result<Value, GzError> {
        let args = coerce_args(self, args)?;
        (self.run)(&args, files)
    }

    /// The spec of one argument.
    pub fn arg(&self, name: &str) -> Option<&'static ArgSpec> {
        self.args.iter().find(|a| a.name == name)
    }
}

/// Every built-in function, grouped by category.
pub fn all() -> &'static [Function] {
    static ALL: OnceLock<Vec<Function>> = OnceLock::new();
    ALL.get_or_init(|| {
        [
            math::FUNCTIONS,
            text::FUNCTIONS,
            data::FUNCTIONS,
            files::FUNCTIONS,
            json::FUNCTIONS,
            date::FUNCTIONS,
            util::FUNCTIONS,
        ]
        .concat()
    })
}

pub fn find(name: &str) -> Option<&'static Function> {
    all().iter().find(|f| f.name == name)
}

/// The registered function whose name is closest to `name`, for "did you mean".
pub fn suggest(name: &str) -> Option<&'static str> {
    closest(name, all().iter().map(|f| f.name))
}

/// The candidate most similar to `word`, if any is similar enough.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&word, &c.to_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn show_hint(function: &str) -> String {
    format!("See the arguments of `{function}` with `gleitzeit functions show {function}`.")
}

/// A `FunctionArgumentInvalid` (GZ2031) error about one argument, with the
/// standard hint.
pub(crate) fn arg_error(function: &str, argument: &str, message: impl Into<String>) -> GzError {
    GzError::new(
        ErrorCode::FunctionArgumentInvalid,
        format!("{function}: argument `{argument}` {}", message.into()),
    )
    .with_hint(show_hint(function))
    .with_details(serde_json::json!({ "function": function, "argument": argument }))
}

/// A `FunctionFailed` (GZ2032) error.
pub(crate) fn failed(function: &str, message: impl Into<String>) -> GzError {
    GzError::new(
        ErrorCode::FunctionFailed,
        format!("{function}: {}", message.into()),
    )
    .with_details(serde_json::json!({ "function": function }))
}

/// A short description of a value for error messages: `the text "abc"`, `a list`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let mut shown: String = s.chars().take(40).collect();
            if shown.len() < s.len() {
                shown.push('…');
            }
            format!("the text {shown:?}")
        }
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Checks `args` against `function.args` and converts values to the declared kinds:
///
/// * unknown argument names are rejected, suggesting the closest known name;
/// * missing (or null) arguments take their default, and are an error when required;
/// * text converts to the declared kind when it parses: integer `"10"`, number
///   `"2.5"`, boolean `"true"`/`"no"`, list `"[1,5,10]"` or `"1,5,10"`, object
///   `"{\"a\":1}"`; numbers and booleans convert to text for text arguments;
///   text that looks like a JSON list or object is parsed for `any` arguments.
///
/// Errors are `FunctionArgumentInvalid` (GZ2031) naming the function and argument.
/// Borrows `args` unchanged when nothing needed converting.
pub fn coerce_args<'a>(
    function: &Function,
    args: &'a Map<String, Value>,
) -> Result<Cow<'a, Map<String, Value>>, GzError> {
    let name = function.name;
    for key in args.keys() {
        if function.arg(key).is_none() {
            let known: Vec<&str> = function.args.iter().map(|a| a.name).collect();
            let mut message = format!("{name}: unknown argument `{key}`");
            if let Some(close) = closest(key, known.iter().copied()) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            let accepted = if known.is_empty() {
                format!("`{name}` takes no arguments.")
            } else {
                format!("`{name}` accepts: {}.", known.join(", "))
            };
            return Err(GzError::new(ErrorCode::FunctionArgumentInvalid, message)
                .with_hint(format!("{accepted} {}", show_hint(name)))
                .with_details(
                    serde_json::json!({ "function": name, "argument": key, "accepted": known }),
                ));
        }
    }
    let mut owned: Option<Map<String, Value>> = None;
    for spec in function.args {
        let given = args.get(spec.name).filter(|v| !v.is_null());
        match given {
            None => {
                if let Some(text) = spec.default {
                    let default: Value = serde_json::from_str(text).map_err(|e| {
                        GzError::new(
                            ErrorCode::InternalError,
                            format!("{name}: default of `{}` is not valid JSON ({e})", spec.name),
                        )
                    })?;
                    let default = coerce_value(name, spec, &default)?.unwrap_or(default);
                    owned
                        .get_or_insert_with(|| args.clone())
                        .insert(spec.name.to_string(), default);
                } else if spec.required {
                    return Err(arg_error(
                        name,
                        spec.name,
                        format!("is required ({})", spec.description),
                    )
                    .with_details(serde_json::json!({
                        "function": name, "argument": spec.name, "expected": spec.kind,
                    })));
                }
            }
            Some(value) => {
                if let Some(converted) = coerce_value(name, spec, value)? {
                    owned
                        .get_or_insert_with(|| args.clone())
                        .insert(spec.name.to_string(), converted);
                }
            }
        }
    }
    Ok(match owned {
        Some(map) => Cow::Owned(map),
        None => Cow::Borrowed(args),
    })
}

/// `Ok(None)` when `value` already has the kind, `Ok(Some(v))` when converted.
fn coerce_value(function: &str, spec: &ArgSpec, value: &Value) -> Result<Option<Value>, GzError> {
    let wrong = |extra: &str| {
        arg_error(
            function,
            spec.name,
            format!(
                "must be {}, got {}{extra}",
                spec.kind.expected(),
                describe(value)
            ),
        )
        .with_details(serde_json::json!({
            "function": function, "argument": spec.name, "expected": spec.kind, "got": value,
        }))
    };
    match spec.kind {
        ArgKind::Any => Ok(match value {
            Value::String(s) => parse_json_container(s).filter(|v| v.is_array() || v.is_object()),
            _ => None,
        }),
        ArgKind::Integer => match value {
            Value::Number(n) if n.is_i64() => Ok(None),
            Value::Number(n) => match n.as_f64().and_then(integral) {
                Some(i) => Ok(Some(Value::from(i))),
                None => Err(wrong(
                    " (whole numbers between -9223372036854775808 and 9223372036854775807)",
                )),
            },
            Value::String(s) => match parse_integer(s) {
                Some(i) => Ok(Some(Value::from(i))),
                None => Err(wrong("")),
            },
            _ => Err(wrong("")),
        },
        ArgKind::Number => match value {
            Value::Number(_) => Ok(None),
            Value::String(s) => match parse_number(s) {
                Some(v) => Ok(Some(v)),
                None => Err(wrong("")),
            },
            _ => Err(wrong("")),
        },
        ArgKind::String => match value {
            Value::String(_) => Ok(None),
            Value::Number(n) => Ok(Some(Value::String(n.to_string()))),
            Value::Bool(b) => Ok(Some(Value::String(b.to_string()))),
            _ => Err(wrong("")),
        },
        ArgKind::Boolean => match value {
            Value::Bool(_) => Ok(None),
            Value::String(s) => match parse_bool(s) {
                Some(b) => Ok(Some(Value::Bool(b))),
                None => Err(wrong(" (true/false, yes/no, on/off or 1/0)")),
            },
            Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                Ok(Some(Value::Bool(n.as_i64() == Some(1))))
            }
            _ => Err(wrong("")),
        },
        ArgKind::List => match value {
            Value::Array(_) => Ok(None),
            Value::String(s) => {
                let trimmed = s.trim();
                if trimmed.starts_with('[') {
                    match serde_json::from_str::<Value>(trimmed) {
                        Ok(list @ Value::Array(_)) => Ok(Some(list)),
                        Ok(_) => Err(wrong("")),
                        Err(e) => Err(wrong(&format!(" (the JSON list does not parse: {e})"))),
                    }
                } else {
                    Ok(Some(split_list(trimmed)))
                }
            }
            _ => Err(wrong("")),
        },
        ArgKind::Object => match value {
            Value::Object(_) => Ok(None),
            Value::String(s) => {
                let trimmed = s.trim();
                match serde_json::from_str::<Value>(trimmed) {
                    Ok(object @ Value::Object(_)) => Ok(Some(object)),
                    Ok(_) => Err(wrong("")),
                    Err(e) if trimmed.starts_with('{') => {
                        Err(wrong(&format!(" (the JSON object does not parse: {e})")))
                    }
                    Err(_) => Err(wrong("")),
                }
            }
            _ => Err(wrong("")),
        },
    }
}

/// Text that looks like a JSON list or object, parsed.
fn parse_json_container(s: &str) -> Option<Value> {
    let trimmed = s.trim();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        serde_json::from_str(trimmed).ok()
    } else {
        None
    }
}

/// `"1, 5, 10"` → `[1, 5, 10]`; `"a, b"` → `["a", "b"]`. Items become numbers
/// only when every item is a JSON number, so `"007,x"` stays text.
fn split_list(text: &str) -> Value {
    if text.is_empty() {
        return Value::Array(Vec::new());
    }
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    let numbers: Option<Vec<Value>> = items
        .iter()
        .map(|item| match serde_json::from_str::<Value>(item) {
            Ok(n @ Value::Number(_)) => Some(n),
            _ => None,
        })
        .collect();
    match numbers {
        Some(numbers) => Value::Array(numbers),
        None => Value::Array(
            items
                .into_iter()
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
    }
}

/// A float that is a whole number inside the i64 range.
pub(crate) fn integral(f: f64) -> Option<i64> {
    // 2^63 is exactly representable; i64::MAX is not, so compare with < 2^63.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    (f.is_finite() && f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
}

pub(crate) fn parse_integer(s: &str) -> Option<i64> {
    let s = s.trim().replace('_', "");
    s.parse::<i64>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().and_then(integral))
}

/// A finite number from text, kept an integer when it is written as one.
pub(crate) fn parse_number(s: &str) -> Option<Value> {
    let s = s.trim().replace('_', "");
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::from(i));
    }
    let f = s.parse::<f64>().ok().filter(|f| f.is_finite())?;
    serde_json::Number::from_f64(f).map(Value::Number)
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A number as JSON, written as an integer when it is a whole number that f64
/// holds exactly (so `sum` of `[1, 2]` is `3`, not `3.0`). Non-finite → null.
pub(crate) fn num(f: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Typed, non-panicking access to a function's (already coerced) arguments.
/// Every accessor returns `FunctionArgumentInvalid` naming the argument when the
/// value is missing or of the wrong kind, so functions stay safe even when `run`
/// is called directly without [`coerce_args`].
pub(crate) struct Args<'a> {
    pub function: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    pub fn new(function: &'static str, map: &'a Map<String, Value>) -> Self {
        Args { function, map }
    }

    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    pub fn error(&self, name: &str, message: impl Into<String>) -> GzError {
        arg_error(self.function, name, message)
    }

    pub fn failed(&self, message: impl Into<String>) -> GzError {
        failed(self.function, message)
    }

    fn required(&self, name: &str) -> Result<&'a Value, GzError> {
        self.get(name)
            .ok_or_else(|| self.error(name, "is required"))
    }

    fn wrong(&self, name: &str, expected: &str, value: &Value) -> GzError {
        self.error(name, format!("must be {expected}, got {}", describe(value)))
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, GzError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| v.as_f64().and_then(integral))
                .or_else(|| v.as_str().and_then(parse_integer))
                .map(Some)
                .ok_or_else(|| self.wrong(name, "an integer", v)),
        }
    }

    pub fn int(&self, name: &str) -> Result<i64, GzError> {
        self.opt_int(name)?
            .ok_or_else(|| self.error(name, "is required"))
    }

    /// An integer in `min..=max`, with a message naming the range otherwise.
    pub fn int_in(&self, name: &str, min: i64, max: i64) -> Result<i64, GzError> {
        let n = self.int(name)?;
        if n < min || n > max {
            return Err(self.error(name, format!("must be between {min} and {max}, got {n}")));
        }
        Ok(n)
    }

    pub fn opt_num(&self, name: &str) -> Result<Option<f64>, GzError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .or_else(|| v.as_str().and_then(parse_number).and_then(|n| n.as_f64()))
                .filter(|f| f.is_finite())
                .map(Some)
                .ok_or_else(|| self.wrong(name, "a number", v)),
        }
    }

    pub fn number(&self, name: &str) -> Result<f64, GzError> {
        self.opt_num(name)?
            .ok_or_else(|| self.error(name, "is required"))
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, GzError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong(name, "text", v)),
        }
    }

    pub fn str(&self, name: &str) -> Result<&'a str, GzError> {
        self.opt_str(name)?
            .ok_or_else(|| self.error(name, "is required"))
    }

    pub fn bool(&self, name: &str) -> Result<bool, GzError> {
        match self.required(name)? {
            Value::Bool(b) => Ok(*b),
            v => v
                .as_str()
                .and_then(parse_bool)
                .ok_or_else(|| self.wrong(name, "true or false", v)),
        }
    }

    pub fn list(&self, name: &str) -> Result<&'a Vec<Value>, GzError> {
        match self.required(name)? {
            Value::Array(items) => Ok(items),
            v => Err(self.wrong(name, "a list", v)),
        }
    }

    pub fn object(&self, name: &str) -> Result<&'a Map<String, Value>, GzError> {
        match self.required(name)? {
            Value::Object(map) => Ok(map),
            v => Err(self.wrong(name, "an object", v)),
        }
    }

    /// A list whose items are all numbers (numeric text is accepted).
    pub fn numbers(&self, name: &str) -> Result<Vec<f64>, GzError> {
        self.list(name)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(parse_number).and_then(|n| n.as_f64()))
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| {
                        self.error(
                            name,
                            format!("must be a list of numbers, but item {i} is {}", describe(v)),
                        )
                    })
            })
            .collect()
    }
}
