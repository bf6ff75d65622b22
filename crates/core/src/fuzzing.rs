//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`), shared with the
//! stable corpus-replay test (`tests/fuzz_replay.rs`) so CI exercises them
//! without a nightly toolchain. Each takes arbitrary bytes and must return
//! without panicking; every rejection must be a GZ-coded error.

use crate::errors::GzError;
use crate::parse::{self, MethodCatalog, CORE_METHODS};
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

fn check_code(err: &GzError) {
    let code = err.code.as_str();
    assert!(
        code.starts_with("GZ") && code.len() == 6,
        "error without a GZ code: {err:?}"
    );
}

/// Workflow parser + validator: YAML text (or JSON) → `parse::load`.
pub fn workflow(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = yaml::parse(text);
    if let Err(diagnostics) = parse::load(text, "fuzz.yaml", &FuzzCatalog, &Map::new()) {
        assert!(!diagnostics.is_empty(), "rejected without a diagnostic");
        for d in &diagnostics {
            assert!(d.code.as_str().starts_with("GZ"), "{d:?}");
        }
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
        assert!(!diagnostics.is_empty());
    }
}
