//! What an agent offers a model as tools: each tool's JSON Schema (from a
//! built-in function's `ArgSpec`s, an MCP server's own schema, or the fixed
//! shape of an HTTP tool) and the check of the model's arguments against it.

use gleitzeit_functions::ArgKind;
use serde_json::{json, Map, Value};

/// A compiled tool schema.
pub struct ArgumentCheck {
    validator: jsonschema::Validator,
}

impl ArgumentCheck {
    /// Compiles `schema`; `Err` says why it is not a valid JSON Schema.
    pub fn new(schema: &Value) -> Result<ArgumentCheck, String> {
        if !schema.is_object() {
            return Err(format!("a tool schema must be an object, not {schema}"));
        }
        jsonschema::validator_for(schema)
            .map(|validator| ArgumentCheck { validator })
            .map_err(|e| e.to_string())
    }

    /// What is wrong with `arguments` (at most five problems); empty when
    /// they fit.
    pub fn problems(&self, arguments: &Value) -> Vec<String> {
        crate::llm::schema_problems(&self.validator, arguments)
    }
}

/// A built-in function as a tool: its description and the schema of its
/// arguments, or `None` when there is no such function.
pub fn function_tool(name: &str) -> Option<(String, Value)> {
    let function = gleitzeit_functions::find(name)?;
    let mut properties = Map::new();
    let mut required = Vec::new();
    for arg in function.args {
        let mut property = match arg.kind {
            ArgKind::Integer => json!({"type": "integer"}),
            ArgKind::Number => json!({"type": "number"}),
            ArgKind::String => json!({"type": "string"}),
            ArgKind::Boolean => json!({"type": "boolean"}),
            ArgKind::List => json!({"type": "array"}),
            ArgKind::Object => json!({"type": "object"}),
            ArgKind::Any => json!({}),
        };
        let mut description = arg.description.to_string();
        if let Some(default) = arg.default {
            description = format!("{description} (default {default})");
        }
        if !description.is_empty() {
            property["description"] = json!(description);
        }
        properties.insert(arg.name.to_string(), property);
        if arg.required {
            required.push(arg.name);
        }
    }
    let schema = json!({"type": "object", "properties": properties, "required": required});
    Some((function.description.to_string(), schema))
}

/// The arguments an `http:` tool takes: a path under its prefix, query
/// parameters and, for methods with a body, JSON.
pub fn http_tool_schema(method: &str) -> Value {
    let mut properties = json!({
        "path": {"type": "string", "description": "Path (and query) appended to the tool's base URL"},
        "query": {"type": "object", "description": "Query parameters", "additionalProperties": {"type": ["string", "number", "boolean"]}},
    });
    if method != "GET" && method != "DELETE" {
        properties["json"] = json!({"description": "JSON request body"});
    }
    json!({"type": "object", "properties": properties, "required": ["path"], "additionalProperties": false})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_schemas_come_from_arg_specs() {
        let (description, schema) = function_tool("count_words").unwrap();
        assert!(!description.is_empty());
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["properties"]["text"]["type"], "string");
        assert_eq!(schema["required"], json!(["text"]));
        let check = ArgumentCheck::new(&schema).unwrap();
        assert!(check.problems(&json!({"text": "a b"})).is_empty());
        assert_eq!(check.problems(&json!({"text": 5})).len(), 1);
        assert!(!check.problems(&json!({})).is_empty());
        assert!(function_tool("no_such_function").is_none());
    }

    #[test]
    fn invalid_schemas_are_refused() {
        assert!(ArgumentCheck::new(&json!({"type": "nonsense"})).is_err());
        assert!(ArgumentCheck::new(&json!(5)).is_err());
    }

    #[test]
    fn http_tools_take_a_path() {
        let check = ArgumentCheck::new(&http_tool_schema("GET")).unwrap();
        assert!(check.problems(&json!({"path": "items"})).is_empty());
        assert!(!check.problems(&json!({"path": "x", "json": {}})).is_empty());
        let post = ArgumentCheck::new(&http_tool_schema("POST")).unwrap();
        assert!(post
            .problems(&json!({"path": "x", "json": {"a": 1}}))
            .is_empty());
    }
}
