//! The dashboard's side of the API contract. `app.js` declares, as JSDoc
//! typedefs named after the OpenAPI schemas, every field it reads from the
//! API's answers, and annotates the values it reads them from (`@type`,
//! `@param`). This test fails when
//! - a typedef names a schema `docs/openapi.json` does not have, or a field
//!   the schema lacks, or a field whose type (or nullability) differs;
//! - the page reads a field of an annotated value that its typedef does not
//!   declare (following chains such as `wf.error.code` through typedefs).
//!
//! So renaming a field in the server's types (then refreshing the document,
//! see `openapi.rs`) or in the page alone fails here.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn document() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docs/openapi.json"))
        .expect("docs/openapi.json exists (refresh it as openapi.rs says)");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// A JSDoc type: its alternatives (`string|null` → `string`, `null`).
#[derive(Debug, Clone)]
struct JsType {
    alternatives: Vec<String>,
}

impl JsType {
    fn parse(text: &str) -> JsType {
        let text = text.trim();
        let (nullable, text) = match text.strip_prefix('?') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let mut alternatives = split_top_level(text, '|');
        if nullable {
            alternatives.push("null".into());
        }
        JsType { alternatives }
    }

    fn admits_absence(&self) -> bool {
        self.alternatives
            .iter()
            .any(|a| a == "null" || a == "undefined" || a == "*")
    }

    fn present(&self) -> impl Iterator<Item = &str> {
        self.alternatives
            .iter()
            .map(String::as_str)
            .filter(|a| *a != "null" && *a != "undefined")
    }

    /// The typedef a read continues through, when there is exactly one.
    fn typedef<'a>(&'a self, typedefs: &BTreeMap<String, Typedef>) -> Option<&'a str> {
        let mut named = self.present().filter(|a| typedefs.contains_key(*a));
        let first = named.next()?;
        named.next().is_none().then_some(first)
    }
}

fn split_top_level(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '<' | '(' | '{' => depth += 1,
            '>' | ')' | '}' => depth -= 1,
            _ => {}
        }
        if c == separator && depth == 0 {
            parts.push(current.trim().to_string());
            current.clear();
        } else {
            current.push(c);
        }
    }
    parts.push(current.trim().to_string());
    parts
}

#[derive(Debug, Default)]
struct Typedef {
    file: String,
    properties: BTreeMap<String, JsType>,
}

/// The text between `{` and its matching `}` starting at `open`.
fn braced(text: &str, open: usize) -> Option<(&str, usize)> {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((&text[open + 1..open + i], open + i + 1));
                }
            }
            _ => {}
        }
    }
    None
}

fn typedefs(files: &[(String, String)]) -> BTreeMap<String, Typedef> {
    let mut found: BTreeMap<String, Typedef> = BTreeMap::new();
    for (file, text) in files {
        let mut current: Option<String> = None;
        for raw in text.lines() {
            let ends_comment = raw.trim_end().ends_with("*/");
            let line = raw.trim().trim_start_matches('*').trim();
            if let Some(rest) = line.strip_prefix("@typedef") {
                let rest = rest.trim();
                let Some((_, after)) = rest.find('{').and_then(|o| braced(rest, o)) else {
                    continue;
                };
                let name = rest[after..].trim().to_string();
                found.insert(
                    name.clone(),
                    Typedef {
                        file: file.clone(),
                        ..Typedef::default()
                    },
                );
                current = Some(name);
            } else if let Some(rest) = line.strip_prefix("@property") {
                let rest = rest.trim();
                let (Some(name), Some((ty, after))) = (
                    current.clone(),
                    rest.find('{').and_then(|o| braced(rest, o)),
                ) else {
                    continue;
                };
                let field = rest[after..].trim();
                let (field, optional) = match field.strip_prefix('[') {
                    Some(inner) => (inner.trim_end_matches(']'), true),
                    None => (field, false),
                };
                let field = field.split_whitespace().next().unwrap_or_default();
                let mut ty = JsType::parse(ty);
                if optional {
                    ty.alternatives.push("undefined".into());
                }
                if let Some(def) = found.get_mut(&name) {
                    def.properties.insert(field.to_string(), ty);
                }
            }
            if ends_comment {
                current = None;
            }
        }
    }
    found
}

/// A schema's properties (through `$ref` and `allOf`/`oneOf`/`anyOf`) and
/// which of them are required.
fn properties(doc: &Value, schema: &Value, into: &mut BTreeMap<String, (Value, bool)>) {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.trim_start_matches("#/components/schemas/");
        properties(doc, &doc["components"]["schemas"][name], into);
        return;
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for part in schema[key].as_array().into_iter().flatten() {
            properties(doc, part, into);
        }
    }
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        into.insert(
            name.clone(),
            (property.clone(), required.contains(name.as_str())),
        );
    }
}

/// What a schema may be: `string`, `integer`, `object`, `ref:Name` (a
/// reference to an object schema; others count as what they refer to),
/// `any`, and whether it may be null.
fn kinds(doc: &Value, schema: &Value) -> (BTreeSet<String>, bool) {
    let mut kinds = BTreeSet::new();
    let mut nullable = false;
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.trim_start_matches("#/components/schemas/");
        let referred = &doc["components"]["schemas"][name];
        if referred["type"] == "object"
            || referred.get("properties").is_some()
            || referred.get("allOf").is_some()
        {
            kinds.insert(format!("ref:{name}"));
        } else {
            let (inner, null) = self::kinds(doc, referred);
            kinds.extend(inner);
            nullable |= null;
        }
    }
    match &schema["type"] {
        Value::String(t) => {
            kinds.insert(t.clone());
        }
        Value::Array(types) => {
            for t in types.iter().filter_map(Value::as_str) {
                if t == "null" {
                    nullable = true;
                } else {
                    kinds.insert(t.to_string());
                }
            }
        }
        _ => {}
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for part in schema[key].as_array().into_iter().flatten() {
            let (inner, null) = kinds_of_part(doc, part);
            kinds.extend(inner);
            nullable |= null;
        }
    }
    if schema["nullable"] == Value::Bool(true) {
        nullable = true;
    }
    if kinds.is_empty() {
        kinds.insert("any".into());
    }
    (kinds, nullable)
}

fn kinds_of_part(doc: &Value, part: &Value) -> (BTreeSet<String>, bool) {
    if part["type"] == "null" {
        return (BTreeSet::new(), true);
    }
    let (kinds, nullable) = kinds(doc, part);
    (kinds.into_iter().filter(|k| k != "any").collect(), nullable)
}

fn compatible(js: &str, kinds: &BTreeSet<String>, typedefs: &BTreeMap<String, Typedef>) -> bool {
    if js == "*" || kinds.contains("any") {
        return true;
    }
    let base = js.split('<').next().unwrap_or(js);
    if typedefs.contains_key(js) {
        return kinds.contains(&format!("ref:{js}"));
    }
    match base {
        "string" => kinds.contains("string"),
        "number" => kinds.contains("integer") || kinds.contains("number"),
        "boolean" => kinds.contains("boolean"),
        "Array" => kinds.contains("array"),
        "Object" => kinds.contains("object") || kinds.iter().any(|k| k.starts_with("ref:")),
        _ => false,
    }
}

/// Every typedef against the document: problems as lines.
fn typedef_problems(doc: &Value, typedefs: &BTreeMap<String, Typedef>) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, def) in typedefs {
        let schema = &doc["components"]["schemas"][name];
        if schema.is_null() {
            problems.push(format!(
                "{}: typedef {name} names no schema of docs/openapi.json",
                def.file
            ));
            continue;
        }
        let mut fields = BTreeMap::new();
        properties(doc, schema, &mut fields);
        for (field, js) in &def.properties {
            let Some((property, required)) = fields.get(field) else {
                problems.push(format!(
                    "{}: {name}.{field} is read, but schema {name} has no field `{field}` (it has: {})",
                    def.file,
                    fields.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            let (kinds, nullable) = kinds(doc, property);
            for alternative in js.present() {
                if !compatible(alternative, &kinds, typedefs) {
                    problems.push(format!(
                        "{}: {name}.{field} is read as {alternative}, but the schema says {kinds:?}",
                        def.file
                    ));
                }
            }
            if (nullable || !required) && !js.admits_absence() {
                problems.push(format!(
                    "{}: {name}.{field} may be {} in the schema; its typedef must admit that (`|null` or `|undefined`)",
                    def.file,
                    if nullable { "null" } else { "absent" }
                ));
            }
        }
    }
    problems
}

/// The end of the block that contains `from` (the first unmatched `}`).
fn end_of_block(text: &str, from: usize) -> usize {
    let mut depth = 0i32;
    for (i, c) in text[from..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth < 0 {
                    return from + i;
                }
            }
            _ => {}
        }
    }
    text.len()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$'
}

/// `name.a.b` / `name?.a` reads of `name` within `scope`: each chain of
/// field names.
fn reads(scope: &str, name: &str) -> Vec<Vec<String>> {
    let mut chains = Vec::new();
    let bytes: Vec<char> = scope.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == '.')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        let word: String = bytes[start..i].iter().collect();
        if word != name {
            continue;
        }
        let mut chain = Vec::new();
        loop {
            let mut j = i;
            if j < bytes.len() && bytes[j] == '?' {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == '.' && j + 1 < bytes.len() && is_ident(bytes[j + 1]) {
                let field_start = j + 1;
                let mut k = field_start;
                while k < bytes.len() && is_ident(bytes[k]) {
                    k += 1;
                }
                chain.push(bytes[field_start..k].iter().collect());
                i = k;
            } else {
                break;
            }
        }
        if !chain.is_empty() {
            chains.push(chain);
        }
    }
    chains
}

/// Values annotated with a typedef: (typedef, variable, the text where the
/// variable is in scope).
fn annotated(text: &str) -> Vec<(String, String, &str)> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = text[at..].find("/**") {
        let open = at + offset;
        let Some(close) = text[open..].find("*/").map(|c| open + c + 2) else {
            break;
        };
        let comment = &text[open..close];
        at = close;
        for (tag, is_param) in [("@type", false), ("@param", true)] {
            // `@type` but not `@typedef`.
            let Some(tag_at) = comment
                .match_indices(tag)
                .map(|(i, _)| i)
                .find(|i| !comment[i + tag.len()..].starts_with(is_ident))
            else {
                continue;
            };
            let rest = &comment[tag_at + tag.len()..];
            let Some((ty, after)) = rest.find('{').and_then(|o| braced(rest, o)) else {
                continue;
            };
            let ty = ty.trim().to_string();
            let name: String = if is_param {
                rest[after..]
                    .trim_start()
                    .chars()
                    .take_while(|c| is_ident(*c))
                    .collect()
            } else {
                let following = text[close..].trim_start();
                let following = ["const ", "let ", "var "]
                    .iter()
                    .find_map(|k| following.strip_prefix(k))
                    .unwrap_or(following);
                following.chars().take_while(|c| is_ident(*c)).collect()
            };
            if name.is_empty() {
                continue;
            }
            // A parameter lives in the function that follows; a variable
            // in the block around it.
            let end = if is_param {
                text[close..]
                    .find('{')
                    .and_then(|o| braced(text, close + o))
                    .map_or(text.len(), |(_, end)| end)
            } else {
                end_of_block(text, close)
            };
            found.push((ty, name, &text[close..end]));
        }
    }
    found
}

fn read_problems(files: &[(String, String)], typedefs: &BTreeMap<String, Typedef>) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, text) in files {
        for (ty, name, scope) in annotated(text) {
            if !typedefs.contains_key(&ty) {
                problems.push(format!(
                    "{file}: `{name}` is annotated {ty}, which no typedef declares"
                ));
                continue;
            }
            for chain in reads(scope, &name) {
                let mut current = ty.clone();
                for field in &chain {
                    let Some(js) = typedefs[&current].properties.get(field) else {
                        problems.push(format!(
                            "{file}: `{name}.{}` reads `{field}`, which typedef {current} does not declare",
                            chain.join(".")
                        ));
                        break;
                    };
                    match js.typedef(typedefs) {
                        Some(next) => current = next.to_string(),
                        None => break,
                    }
                }
            }
        }
    }
    problems
}

fn dashboard_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("dashboard directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "js"))
        .map(|p| {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).expect("readable dashboard file");
            (name, text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_field_the_dashboard_reads_is_in_the_api_document() {
    let doc = document();
    let files = dashboard_files();
    let typedefs = typedefs(&files);
    assert!(
        typedefs.len() >= 10,
        "the dashboard declares the shapes it reads: {:?}",
        typedefs.keys()
    );
    let mut problems = typedef_problems(&doc, &typedefs);
    problems.extend(read_problems(&files, &typedefs));
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The checker itself: a read the typedef lacks, a field the schema lacks
/// and a nullable field read as never null are each found.
#[test]
fn the_checker_finds_each_kind_of_mismatch() {
    let doc = serde_json::json!({"components": {"schemas": {
        "Thing": {"type": "object", "required": ["id"], "properties": {
            "id": {"type": "string"},
            "done_ms": {"type": ["integer", "null"]},
        }},
    }}});
    let file = |text: &str| vec![("t.js".to_string(), text.to_string())];
    let good = file(
        "/**\n * @typedef {Object} Thing\n * @property {string} id\n * @property {number|null} done_ms\n */\n\
         function f() { /** @type {Thing} */ const t = get(); use(t.id, t.done_ms); }",
    );
    let defs = typedefs(&good);
    assert!(typedef_problems(&doc, &defs).is_empty());
    assert!(read_problems(&good, &defs).is_empty());

    let unread = file(
        "/**\n * @typedef {Object} Thing\n * @property {string} id\n */\n\
         function f() { /** @type {Thing} */ const t = get(); use(t.name); }",
    );
    let problems = read_problems(&unread, &typedefs(&unread));
    assert!(problems[0].contains("`name`"), "{problems:?}");

    let renamed = file("/**\n * @typedef {Object} Thing\n * @property {string} ident\n */");
    let problems = typedef_problems(&doc, &typedefs(&renamed));
    assert!(problems[0].contains("no field `ident`"), "{problems:?}");

    let never_null = file("/**\n * @typedef {Object} Thing\n * @property {number} done_ms\n */");
    let problems = typedef_problems(&doc, &typedefs(&never_null));
    assert!(problems[0].contains("may be null"), "{problems:?}");

    let wrong_type = file("/**\n * @typedef {Object} Thing\n * @property {number} id\n */");
    let problems = typedef_problems(&doc, &typedefs(&wrong_type));
    assert!(problems[0].contains("read as number"), "{problems:?}");
}
