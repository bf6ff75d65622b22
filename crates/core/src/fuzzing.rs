//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), shared with the
//! stable corpus-replay test (`tests/fuzz_replay.rs`) so CI exercises them
//! without a nightly toolchain. Each takes arbitrary bytes and must return
//! without panicking; every rejection must be a workflow error (GZ3xxx) that
//! says what is wrong and, from the loader, where.

use crate::errors::{Domain, ErrorCode, GzError};
use crate::parse::{self, Diagnostic, MethodCatalog, CORE_METHODS};
use crate::refs::{self, Scope, TaskView};
use crate::{expr, yaml};
use serde_json::{json, Map, Value};

/// The methods every build knows plus a few function names, so fuzzed
/// workflows get past "unknown method" into the deeper checks.
pub struct FuzzCatalog;

const FUNCTIONS: &[&str] = &["fibonacci", "add", "concat", "uppercase"];

impl MethodCatalog for FuzzCatalog {
    fn has_method(&self, method: &str) -> bool {
        CORE_METHODS.contains(&method)
    }
    fn has_function(&self, name: &str) -> bool {
        FUNCTIONS.contains(&name)
    }
    fn all_names(&self) -> Vec<String> {
        CORE_METHODS
            .iter()
            .chain(FUNCTIONS)
            .map(|s| s.to_string())
            .collect()
    }
}

struct FuzzScope {
    a: Value,
    inputs: Map<String, Value>,
}

impl FuzzScope {
    fn new() -> Self {
        let inputs =
            json!({"word": "hi", "n": 3, "list": [1, 2, 3], "nested": {"k": [null, true]}});
        FuzzScope {
            a: json!({"result": {"n": [1, 2, 3], "s": "```py\nprint(1)\n```"}, "stdout": "x"}),
            inputs: inputs.as_object().cloned().unwrap_or_default(),
        }
    }
}

impl Scope for FuzzScope {
    fn task(&self, id: &str) -> Option<TaskView<'_>> {
        (id == "a" || id == "b").then_some(TaskView {
            record: &self.a,
            primary: "result",
        })
    }
    fn input(&self, name: &str) -> Option<&Value> {
        self.inputs.get(name)
    }
    fn item(&self) -> Option<&Value> {
        self.inputs.get("list")
    }
    fn index(&self) -> Option<usize> {
        Some(1)
    }
    fn env(&self, name: &str) -> Option<String> {
        (name == "HOME").then(|| "/home/fuzz".to_string())
    }
}

fn names() -> Vec<String> {
    vec!["a".to_string(), "b".to_string()]
}

/// Everything these bodies read is workflow text the user wrote, so a refusal
/// is the workflow's fault: an execution, storage or internal code here would
/// send the user looking in the wrong place.
fn check_refusal(code: ErrorCode, message: &str, what: &dyn std::fmt::Debug) {
    let def = code.def();
    assert_eq!(
        ErrorCode::parse(def.code),
        Some(code),
        "the registry entry of {code:?} is not its own: {what:?}"
    );
    assert_eq!(
        def.domain,
        Domain::Workflow,
        "a refusal of workflow text outside the workflow codes: {what:?}"
    );
    assert!(
        !message.trim().is_empty(),
        "a refusal that says nothing: {what:?}"
    );
}

fn check_code(err: &GzError) {
    check_refusal(err.code, &err.message, err);
}

/// A loader's refusal also names the file it was given.
fn check_diagnostics(diagnostics: &[Diagnostic], file: &str) {
    assert!(!diagnostics.is_empty(), "rejected without a diagnostic");
    for d in diagnostics {
        check_refusal(d.code, &d.message, d);
        assert_eq!(d.file, file, "a diagnostic about another file: {d:?}");
    }
}

/// Workflow parser + validator: YAML text (or JSON) → `parse::load`.
pub fn workflow(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = yaml::parse(text);
    if let Err(diagnostics) = parse::load(text, "fuzz.yaml", &FuzzCatalog, &Map::new()) {
        check_diagnostics(&diagnostics, "fuzz.yaml");
    }
}

/// Reference/template resolver: scanning, rendering into JSON values and into
/// Python source.
pub fn references(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let names = names();
    let scope = FuzzScope::new();
    let _ = refs::has_reference(&text);
    let _ = refs::extract_code(&text);
    match refs::scan(&text, &names) {
        Ok(_) => {}
        Err(e) => check_code(&e),
    }
    if let Err(e) = refs::render_str(&text, &names, &scope) {
        check_code(&e);
    }
    let value = json!({"k": text, "list": [text]});
    if let Err(e) = refs::render_value(&value, &names, &scope) {
        check_code(&e);
    }
    let mut used = Vec::new();
    if let Err(e) = refs::python::render(&text, &names, &scope, &mut used) {
        check_code(&e);
    }
}

/// `when:` expressions: parse, then evaluate against a fixed scope.
pub fn when_expr(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let names = names();
    if let Ok(e) = expr::parse(&text, &names) {
        let mut out = Vec::new();
        e.references(&mut out);
        match e.eval(&FuzzScope::new()) {
            Ok(v) => {
                let _ = expr::truthy(&v);
            }
            Err(err) => check_code(&err),
        }
    }
}

/// What the API does with a submitted body: UTF-8 check, `input=k=v` query
/// overrides, then the workflow loader (bodies are YAML or JSON). The first
/// line of the input is taken as the query string, the rest as the body.
pub fn api_body(data: &[u8]) {
    let (query, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let mut overrides = Map::new();
    for part in String::from_utf8_lossy(query).split('&') {
        if let Some(arg) = part.strip_prefix("input=") {
            match parse::parse_input_override(arg) {
                Ok((k, v)) => {
                    overrides.insert(k, v);
                }
                Err(e) => check_code(&e),
            }
        }
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    if let Ok(value) = serde_json::from_str::<Value>(text) {
        // A JSON body re-serialized is the same document to the loader.
        let _ = parse::load(&value.to_string(), "request", &FuzzCatalog, &overrides);
    }
    if let Err(diagnostics) = parse::load(text, "request", &FuzzCatalog, &overrides) {
        check_diagnostics(&diagnostics, "request");
    }
}

/// Nesting and aliases: the input as a document, and as a program that builds
/// one (flow lists nested, anchored and aliased as the bytes say), so the
/// fuzzer reaches deep and self-multiplying documents in a few bytes.
/// Whatever is accepted must stay within the limits and read back as stored
/// JSON; whatever is refused must carry a GZ code.
pub fn yaml_nesting(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        nested_document(text);
    }
    nested_document(&build_nested(data));
}

/// The document a byte program describes: every byte is one step.
pub fn build_nested(data: &[u8]) -> String {
    let mut out = String::from(
        "name: f\ntasks:\n  - {id: t, method: python/execute, parameters: {code: x, v: ",
    );
    let mut open = 0usize;
    // Whether the list being written already has an item (needs a comma).
    let mut has_item: Vec<bool> = vec![false];
    let mut anchors = 0usize;
    for &byte in data {
        let arg = usize::from(byte >> 3);
        let separator = |out: &mut String, has_item: &mut Vec<bool>| {
            if let Some(last) = has_item.last_mut() {
                if *last {
                    out.push_str(", ");
                }
                *last = true;
            }
        };
        match byte & 7 {
            0 | 1 => {
                separator(&mut out, &mut has_item);
                out.push('[');
                open += 1;
                has_item.push(false);
            }
            2 => {
                separator(&mut out, &mut has_item);
                anchors += 1;
                out.push_str(&format!("&a{anchors} ["));
                open += 1;
                has_item.push(false);
            }
            3 if open > 0 => {
                out.push(']');
                open -= 1;
                has_item.pop();
            }
            4 => {
                separator(&mut out, &mut has_item);
                out.push_str(&format!("s{arg}"));
            }
            5 if anchors > 0 => {
                separator(&mut out, &mut has_item);
                out.push_str(&format!("*a{}", 1 + arg % anchors));
            }
            6 => {
                separator(&mut out, &mut has_item);
                out.push_str(&"[".repeat(arg + 1));
                out.push_str(&"]".repeat(arg + 1));
            }
            _ => {
                // Many aliases of the newest anchor at once.
                if anchors > 0 {
                    for _ in 0..=arg {
                        separator(&mut out, &mut has_item);
                        out.push_str(&format!("*a{anchors}"));
                    }
                }
            }
        }
    }
    if has_item.len() == 1 && !has_item[0] {
        out.push('1');
    }
    out.push_str(&"]".repeat(open));
    out.push_str("}}\n");
    out
}

fn nested_document(text: &str) {
    let limits = crate::Limits::default();
    match yaml::parse_limited(text, &limits) {
        Ok(Some(node)) => {
            let value = node.to_json();
            assert!(
                crate::limits::depth(&value, limits.max_depth + 1) <= limits.max_depth,
                "accepted a document deeper than the limit"
            );
        }
        Ok(None) => {}
        Err(e) => check_refusal(e.code, &e.message, &e),
    }
    match parse::load(text, "nested.yaml", &FuzzCatalog, &Map::new()) {
        Ok(workflow) => {
            // What would be stored must read back.
            let stored = serde_json::to_string(&workflow).unwrap_or_default();
            assert!(
                serde_json::from_str::<crate::Workflow>(&stored).is_ok(),
                "an accepted workflow does not read back as stored JSON"
            );
        }
        Err(diagnostics) => check_diagnostics(&diagnostics, "nested.yaml"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_under_another_domain_fails_the_target() {
        let outcome = std::panic::catch_unwind(|| {
            check_code(&GzError::new(ErrorCode::InternalError, "lost"));
        });
        assert!(outcome.is_err());
        check_code(&GzError::new(ErrorCode::InvalidReference, "bad reference"));
    }

    #[test]
    #[should_panic(expected = "a refusal that says nothing")]
    fn a_refusal_without_a_message_fails_the_target() {
        check_code(&GzError::new(ErrorCode::InvalidReference, " "));
    }
}
