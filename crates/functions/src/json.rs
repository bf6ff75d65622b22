//! JSON: paths, merging, keys, flattening, parsing.

use crate::FileGuard;
use crate::{Args, Function};
use gleitzeit_core::GzError;
use serde_json::{Map, Value};

type Res = Result<Value, GzError>;

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "json_get",
        category: "json",
        description: "The value at a dot path in JSON data: `user.name`, `items.0.id` or `items[0].id`. \
                      An empty path returns the whole value.",
        args: &[
            arg!("data", Any, required, "The JSON value (or JSON text) to look into"),
            arg!("path", String, required, "Dot path, e.g. user.address.city"),
            arg!("default", Any, optional, "Returned when the path does not exist (otherwise an error)"),
        ],
        returns: "any",
        example: "gleitzeit run --function json_get --args data='{\"user\":{\"name\":\"Ada\"}}' path=user.name",
        blocking: false,
        run: json_get,
    },
    Function {
        name: "json_merge",
        category: "json",
        description: "Merges two objects; keys of `other` win. With deep=true nested objects are merged \
                      key by key instead of replaced.",
        args: &[
            arg!("base", Object, required, "The object to start from"),
            arg!("other", Object, required, "The object whose keys are laid over base"),
            arg!("deep", Boolean, default "true", "Merge nested objects recursively"),
        ],
        returns: "object",
        example: "gleitzeit run --function json_merge --args base='{\"a\":1}' other='{\"b\":2}'",
        blocking: false,
        run: json_merge,
    },
    Function {
        name: "json_keys",
        category: "json",
        description: "The keys of an object, in order.",
        args: &[arg!("data", Object, required, "The object")],
        returns: "list of strings",
        example: "gleitzeit run --function json_keys --args data='{\"a\":1,\"b\":2}'",
        blocking: false,
        run: json_keys,
    },
    Function {
        name: "flatten_json",
        category: "json",
        description: "Flattens nested objects and lists into one object whose keys are paths \
                      (`a.b`, `items.0`).",
        args: &[
            arg!("data", Any, required, "The object or list to flatten"),
            arg!("separator", String, default "\".\"", "Joins the keys of a path"),
        ],
        returns: "object",
        example: "gleitzeit run --function flatten_json --args data='{\"a\":{\"b\":1},\"c\":[2,3]}'",
        blocking: false,
        run: flatten_json,
    },
    Function {
        name: "json_parse",
        category: "json",
        description: "Parses JSON text into a value.",
        args: &[arg!("text", String, required, "The JSON text")],
        returns: "any",
        example: "gleitzeit run --function json_parse --args text='{\"ok\": true}'",
        blocking: false,
        run: json_parse,
    },
    Function {
        name: "json_stringify",
        category: "json",
        description: "Writes a value as JSON text, compact or pretty-printed.",
        args: &[
            arg!("value", Any, required, "The value to write"),
            arg!("pretty", Boolean, default "false", "Indent with two spaces"),
        ],
        returns: "string",
        example: "gleitzeit run --function json_stringify --args value='[1,2,3]' pretty=true",
        blocking: false,
        run: json_stringify,
    },
];

/// Nesting deeper than this is refused (protects the stack).
const MAX_DEPTH: usize = 512;

fn path_segments(path: &str) -> Vec<String> {
    path.replace('[', ".")
        .replace(']', "")
        .split('.')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The value at `segments`, or the index of the first segment that is missing.
pub(crate) fn lookup<'v>(data: &'v Value, segments: &[String]) -> Result<&'v Value, usize> {
    let mut current = data;
    for (i, segment) in segments.iter().enumerate() {
        let next = match current {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|n| items.get(n)),
            _ => None,
        };
        current = next.ok_or(i)?;
    }
    Ok(current)
}

fn json_get(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("json_get", m);
    let data = a
        .get("data")
        .ok_or_else(|| a.error("data", "is required"))?;
    let path = a.str("path")?;
    let segments = path_segments(path);
    match lookup(data, &segments) {
        Ok(value) => Ok(value.clone()),
        Err(_) if a.get("default").is_some() => {
            Ok(a.get("default").cloned().unwrap_or(Value::Null))
        }
        Err(i) => {
            let found = segments.get(..i).map(|s| s.join(".")).unwrap_or_default();
            let missing = segments.get(i).cloned().unwrap_or_default();
            let parent = segments
                .get(..i)
                .and_then(|s| lookup(data, s).ok())
                .unwrap_or(&Value::Null);
            let available = match parent {
                Value::Object(map) => format!(
                    "available keys: {}",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                Value::Array(items) => format!(
                    "it is a list of {} items (indexes 0 to {})",
                    items.len(),
                    items.len().saturating_sub(1)
                ),
                other => format!("it is {}, which has no fields", crate::describe(other)),
            };
            let at = if found.is_empty() {
                "the top level".to_string()
            } else {
                format!("`{found}`")
            };
            Err(a
                .failed(format!(
                    "path `{path}` does not exist: no `{missing}` at {at}; {available}"
                ))
                .with_hint("Fix the path, or pass `default` to get a value instead of an error."))
        }
    }
}

fn merge(
    base: &mut Map<String, Value>,
    other: &Map<String, Value>,
    deep: bool,
    depth: usize,
) -> Result<(), ()> {
    if depth > MAX_DEPTH {
        return Err(());
    }
    for (key, value) in other {
        match (base.get_mut(key), value) {
            (Some(Value::Object(inner)), Value::Object(over)) if deep => {
                merge(inner, over, deep, depth + 1)?
            }
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

fn json_merge(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("json_merge", m);
    let mut base = a.object("base")?.clone();
    let other = a.object("other")?;
    let deep = a.bool("deep")?;
    merge(&mut base, other, deep, 0)
        .map_err(|_| a.failed(format!("objects nested deeper than {MAX_DEPTH} levels")))?;
    Ok(Value::Object(base))
}

fn json_keys(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("json_keys", m);
    Ok(Value::Array(
        a.object("data")?
            .keys()
            .cloned()
            .map(Value::String)
            .collect(),
    ))
}

fn flatten_into(
    prefix: &str,
    value: &Value,
    sep: &str,
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ()> {
    if depth > MAX_DEPTH {
        return Err(());
    }
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}{sep}{k}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten_into(&key(k), v, sep, out, depth + 1)?;
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten_into(&key(&i.to_string()), v, sep, out, depth + 1)?;
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
    Ok(())
}

fn flatten_json(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("flatten_json", m);
    let data = a
        .get("data")
        .ok_or_else(|| a.error("data", "is required"))?;
    if !(data.is_object() || data.is_array()) {
        return Err(a.error(
            "data",
            format!("must be an object or a list, got {}", crate::describe(data)),
        ));
    }
    let separator = a.str("separator")?;
    let mut out = Map::new();
    flatten_into("", data, separator, &mut out, 0)
        .map_err(|_| a.failed(format!("data nested deeper than {MAX_DEPTH} levels")))?;
    Ok(Value::Object(out))
}

fn json_parse(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("json_parse", m);
    let text = a.str("text")?;
    serde_json::from_str(text).map_err(|e| a.error("text", format!("is not valid JSON: {e}")))
}

fn json_stringify(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("json_stringify", m);
    let value = a
        .get("value")
        .ok_or_else(|| a.error("value", "is required"))?;
    let text = if a.bool("pretty")? {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.map(Value::String).map_err(|e| a.failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use crate::tests::{call, err_code};
    use gleitzeit_core::ErrorCode;
    use serde_json::json;

    #[test]
    fn json_get_follows_paths() {
        let data = json!({"user": {"name": "Ada", "tags": ["x", {"id": 7}]}});
        assert_eq!(
            call("json_get", json!({"data": data, "path": "user.name"})).unwrap(),
            json!("Ada")
        );
        assert_eq!(
            call("json_get", json!({"data": data, "path": "user.tags.1.id"})).unwrap(),
            json!(7)
        );
        assert_eq!(
            call("json_get", json!({"data": data, "path": "user.tags[0]"})).unwrap(),
            json!("x")
        );
        assert_eq!(
            call("json_get", json!({"data": data, "path": ""})).unwrap(),
            data
        );
        let from_cli = call(
            "json_get",
            json!({"data": "{\"a\": {\"b\": 1}}", "path": "a.b"}),
        )
        .unwrap();
        assert_eq!(from_cli, json!(1), "JSON text is parsed");
        let missing = call("json_get", json!({"data": data, "path": "user.email"})).unwrap_err();
        assert_eq!(missing.code, ErrorCode::FunctionFailed);
        assert!(
            missing.message.contains("available keys: name, tags"),
            "{}",
            missing.message
        );
        let defaulted = call(
            "json_get",
            json!({"data": data, "path": "user.email", "default": "none"}),
        )
        .unwrap();
        assert_eq!(defaulted, json!("none"));
        assert_eq!(
            err_code("json_get", json!({"data": data, "path": "user.tags.9"})),
            ErrorCode::FunctionFailed
        );
    }

    #[test]
    fn json_merge_deep_and_shallow() {
        let base = json!({"a": 1, "n": {"x": 1, "y": 2}});
        let other = json!({"b": 2, "n": {"y": 3}});
        let deep = call("json_merge", json!({"base": base, "other": other})).unwrap();
        assert_eq!(deep, json!({"a": 1, "n": {"x": 1, "y": 3}, "b": 2}));
        let shallow = call(
            "json_merge",
            json!({"base": base, "other": other, "deep": false}),
        )
        .unwrap();
        assert_eq!(shallow, json!({"a": 1, "n": {"y": 3}, "b": 2}));
        let from_text = call(
            "json_merge",
            json!({"base": "{\"a\":1}", "other": "{\"b\":2}"}),
        )
        .unwrap();
        assert_eq!(from_text, json!({"a": 1, "b": 2}));
        assert_eq!(
            err_code("json_merge", json!({"base": "[1]", "other": {}})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn json_keys_in_order() {
        let out = call("json_keys", json!({"data": "{\"z\":1,\"a\":2}"})).unwrap();
        assert_eq!(out, json!(["z", "a"]));
    }

    #[test]
    fn flattening() {
        let out = call(
            "flatten_json",
            json!({"data": {"a": {"b": 1}, "c": [2, {"d": 3}], "e": {}}}),
        )
        .unwrap();
        assert_eq!(out, json!({"a.b": 1, "c.0": 2, "c.1.d": 3, "e": {}}));
        let out = call("flatten_json", json!({"data": [[1]], "separator": "/"})).unwrap();
        assert_eq!(out, json!({"0/0": 1}));
        assert_eq!(
            err_code("flatten_json", json!({"data": 5})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn parse_and_stringify() {
        assert_eq!(
            call("json_parse", json!({"text": "{\"ok\": true}"})).unwrap(),
            json!({"ok": true})
        );
        assert_eq!(call("json_parse", json!({"text": "3"})).unwrap(), json!(3));
        assert_eq!(
            err_code("json_parse", json!({"text": "{nope"})),
            ErrorCode::FunctionArgumentInvalid
        );
        assert_eq!(
            call("json_stringify", json!({"value": [1, 2]})).unwrap(),
            json!("[1,2]")
        );
        assert_eq!(
            call("json_stringify", json!({"value": {"a": 1}, "pretty": true})).unwrap(),
            json!("{\n  \"a\": 1\n}")
        );
        assert_eq!(
            call("json_stringify", json!({"value": "hi"})).unwrap(),
            json!("\"hi\"")
        );
    }
}
