//! What an `llm/agent` task asks for: its tools and loop settings, read from
//! the task's parameters. The parser reports problems with positions; the
//! runtime reads the same parameters with the same rules, so both agree on
//! what a tool is.

use crate::errors::{ErrorCode, GzError};
use serde_json::{Map, Value};

/// The method of an agent task.
pub const METHOD: &str = "llm/agent";
pub const DEFAULT_MAX_TURNS: u32 = 10;
/// A loop longer than this is almost surely a model that never stops.
pub const MAX_TURNS_LIMIT: u32 = 200;

/// Parameter keys an agent task takes: its own, plus the LLM options every
/// turn passes on.
pub const KEYS: &[&str] = &[
    "model",
    "system",
    "prompt",
    "messages",
    "tools",
    "max_turns",
    "parallel_tool_calls",
    "format",
    "on_tool_error",
    "temperature",
    "max_tokens",
    "num_predict",
    "top_p",
    "seed",
    "stop",
    "fallback_models",
    "tags",
    "timeout",
];

/// The LLM options an agent passes to each model turn as they are.
pub const TURN_OPTIONS: &[&str] = &[
    "model",
    "temperature",
    "max_tokens",
    "num_predict",
    "top_p",
    "seed",
    "stop",
    "fallback_models",
    "tags",
];

/// Tool kinds of the issue that this version does not provide yet.
const LATER_KINDS: &[&str] = &["workflow", "python"];
const KINDS: &[&str] = &["function", "mcp", "http"];

#[derive(Debug, Clone, PartialEq)]
pub enum ToolSource {
    /// A built-in function; its schema comes from its `ArgSpec`s.
    Function { function: String },
    /// A tool of a configured MCP server, with the server's schema.
    Mcp { server: String, tool: String },
    /// `http/request` to URLs under `url_prefix` (the SSRF guard applies).
    Http { url_prefix: String, method: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    pub description: Option<String>,
    pub source: ToolSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnToolError {
    /// The error goes back to the model as the tool's answer.
    Return,
    /// The task fails with the tool's error.
    Fail,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    pub tools: Vec<ToolSpec>,
    pub max_turns: u32,
    pub parallel_tool_calls: bool,
    pub on_tool_error: OnToolError,
    /// `"json"` or a JSON Schema the final answer must match.
    pub format: Option<Value>,
}

/// One problem with an agent's parameters; `at` is the index of the tool
/// entry it is about, when it is about one.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: ErrorCode,
    pub at: Option<usize>,
    pub key: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    fn new(key: &'static str, at: Option<usize>, message: impl Into<String>) -> Problem {
        Problem {
            code: ErrorCode::InvalidAgentTool,
            at,
            key,
            message: message.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }

    pub fn to_error(&self) -> GzError {
        let mut error = GzError::new(self.code, self.message.clone());
        error.hint = self.hint.clone();
        error
    }
}

/// Whether `name` is a tool name every server accepts (OpenAI's rule).
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Reads an agent task's parameters. `has_function` answers whether a
/// built-in function exists. Every problem is returned, not only the first.
pub fn read(
    params: &Value,
    has_function: &dyn Fn(&str) -> bool,
) -> Result<AgentSpec, Vec<Problem>> {
    let mut problems = Vec::new();
    let empty = Map::new();
    let map = params.as_object().unwrap_or(&empty);
    if !map.contains_key("prompt") && !map.contains_key("messages") {
        problems.push(
            Problem::new("prompt", None, "llm/agent needs `prompt` (or `messages`)")
                .hint("Say what the agent should do: `prompt: \"Summarise …\"`."),
        );
    }
    let max_turns = match map.get("max_turns") {
        None => DEFAULT_MAX_TURNS,
        Some(v) => {
            match v.as_u64() {
                Some(n) if (1..=MAX_TURNS_LIMIT as u64).contains(&n) => n as u32,
                _ => {
                    problems.push(Problem::new(
                    "max_turns",
                    None,
                    format!("`max_turns` must be a whole number from 1 to {MAX_TURNS_LIMIT}, not {v}"),
                ));
                    DEFAULT_MAX_TURNS
                }
            }
        }
    };
    let parallel_tool_calls = match map.get("parallel_tool_calls") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            problems.push(Problem::new(
                "parallel_tool_calls",
                None,
                format!("`parallel_tool_calls` must be true or false, not {v}"),
            ));
            true
        }
    };
    let on_tool_error = match map.get("on_tool_error").map(|v| (v, v.as_str())) {
        None => OnToolError::Return,
        Some((_, Some("return"))) => OnToolError::Return,
        Some((_, Some("fail"))) => OnToolError::Fail,
        Some((v, _)) => {
            problems.push(
                Problem::new(
                    "on_tool_error",
                    None,
                    format!("`on_tool_error` must be `return` or `fail`, not {v}"),
                )
                .hint("`return` hands a tool's error to the model; `fail` ends the task with it."),
            );
            OnToolError::Return
        }
    };
    let format = match map.get("format") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "json" => Some(Value::String(s.clone())),
        Some(Value::Object(o)) => Some(Value::Object(o.clone())),
        Some(v) => {
            problems.push(Problem::new(
                "format",
                None,
                format!("`format` must be \"json\" or a JSON Schema object, not {v}"),
            ));
            None
        }
    };
    let mut tools: Vec<ToolSpec> = Vec::new();
    match map.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(entries)) => {
            for (i, entry) in entries.iter().enumerate() {
                match read_tool(i, entry, has_function) {
                    Ok(specs) => {
                        for spec in specs {
                            if tools.iter().any(|t| t.name == spec.name) {
                                problems.push(
                                    Problem::new(
                                        "tools",
                                        Some(i),
                                        format!("two tools are named `{}`", spec.name),
                                    )
                                    .hint("Give one of them another `name:`; the model calls tools by name."),
                                );
                            } else {
                                tools.push(spec);
                            }
                        }
                    }
                    Err(problem) => problems.push(problem),
                }
            }
        }
        Some(v) => problems.push(Problem::new(
            "tools",
            None,
            format!("`tools` must be a list, not {v}"),
        )),
    }
    if problems.is_empty() {
        Ok(AgentSpec {
            tools,
            max_turns,
            parallel_tool_calls,
            on_tool_error,
            format,
        })
    } else {
        Err(problems)
    }
}

fn text<'v>(entry: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    entry
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn read_tool(
    i: usize,
    entry: &Value,
    has_function: &dyn Fn(&str) -> bool,
) -> Result<Vec<ToolSpec>, Problem> {
    let bad = |message: String| Problem::new("tools", Some(i), message);
    let Some(map) = entry.as_object() else {
        return Err(bad(format!(
            "tools[{i}] must be a mapping like `function: count_words`, not {entry}"
        )));
    };
    let approve = map.get("approve").or_else(|| {
        KINDS
            .iter()
            .filter_map(|k| map.get(*k))
            .find_map(|inner| inner.get("approve"))
    });
    if approve.is_some_and(|a| a != &Value::Bool(false)) {
        let mut problem = bad(format!(
            "tools[{i}] sets `approve`, but approving tool calls is not available in this version"
        ))
        .hint(ErrorCode::ApprovalNotAvailable.def().hint);
        problem.code = ErrorCode::ApprovalNotAvailable;
        return Err(problem);
    }
    let kinds: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| KINDS.contains(k) || LATER_KINDS.contains(k))
        .collect();
    let kind = match kinds.as_slice() {
        [kind] => *kind,
        [] => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            return Err(bad(format!(
                "tools[{i}] names no tool kind (has {})",
                keys.join(", ")
            ))
            .hint("Write `function: NAME`, `mcp: {server: S, tools: [T]}` or `http: {name: N, url_prefix: URL}`."));
        }
        many => {
            return Err(bad(format!(
                "tools[{i}] names several tool kinds ({}); one entry is one kind",
                many.join(", ")
            )))
        }
    };
    if LATER_KINDS.contains(&kind) {
        return Err(bad(format!(
            "tools[{i}]: `{kind}:` tools are not available in this version yet"
        ))
        .hint("Offer it as a built-in function, an MCP tool or an HTTP endpoint instead."));
    }
    let allowed: &[&str] = match kind {
        "function" => &["function", "name", "description", "approve"],
        _ => &[kind, "approve"],
    };
    if let Some(extra) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "tools[{i}]: unknown key `{extra}` for a `{kind}` tool (accepted: {})",
            allowed.join(", ")
        )));
    }
    let description = text(map, "description").map(str::to_string);
    match kind {
        "function" => {
            let Some(function) = text(map, "function") else {
                return Err(bad(format!(
                    "tools[{i}]: `function` must be a function's name"
                )));
            };
            if !has_function(function) {
                return Err(bad(format!("tools[{i}]: unknown function `{function}`"))
                    .hint("`gleitzeit functions list` shows the built-in functions."));
            }
            let name = text(map, "name").unwrap_or(function).to_string();
            if !valid_tool_name(&name) {
                return Err(bad(format!(
                    "tools[{i}]: `{name}` is not a tool name (letters, digits, `_` and `-`, at most 64)"
                )));
            }
            Ok(vec![ToolSpec {
                name,
                description,
                source: ToolSource::Function {
                    function: function.to_string(),
                },
            }])
        }
        "mcp" => {
            let Some(inner) = map.get("mcp").and_then(Value::as_object) else {
                return Err(bad(format!(
                    "tools[{i}]: `mcp` must be a mapping like {{server: files, tools: [read_text_file]}}"
                )));
            };
            if let Some(extra) = inner
                .keys()
                .find(|k| !["server", "tools", "approve"].contains(&k.as_str()))
            {
                return Err(bad(format!(
                    "tools[{i}]: unknown key `{extra}` in `mcp` (accepted: server, tools)"
                )));
            }
            let Some(server) = text(inner, "server") else {
                return Err(bad(format!(
                    "tools[{i}]: `mcp` needs `server`, a configured MCP server's name"
                )));
            };
            let names: Vec<&str> = match inner.get("tools") {
                Some(Value::Array(list)) if !list.is_empty() => {
                    let names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
                    if names.len() != list.len() {
                        return Err(bad(format!("tools[{i}]: `mcp.tools` must list tool names")));
                    }
                    names
                }
                _ => {
                    return Err(bad(format!(
                        "tools[{i}]: `mcp.tools` must list the server's tools the agent may call"
                    ))
                    .hint("Name them, e.g. `tools: [read_text_file, list_directory]`; offering every tool of a server by default would widen what the model can do unnoticed."))
                }
            };
            Ok(names
                .into_iter()
                .map(|tool| ToolSpec {
                    name: tool.to_string(),
                    description: None,
                    source: ToolSource::Mcp {
                        server: server.to_string(),
                        tool: tool.to_string(),
                    },
                })
                .collect())
        }
        _ => {
            let Some(inner) = map.get("http").and_then(Value::as_object) else {
                return Err(bad(format!(
                    "tools[{i}]: `http` must be a mapping like {{name: fetch_json, url_prefix: \"https://api.example.com/\"}}"
                )));
            };
            if let Some(extra) = inner.keys().find(|k| {
                !["name", "url_prefix", "method", "description", "approve"].contains(&k.as_str())
            }) {
                return Err(bad(format!(
                    "tools[{i}]: unknown key `{extra}` in `http` (accepted: name, url_prefix, method, description)"
                )));
            }
            let Some(name) = text(inner, "name") else {
                return Err(bad(format!(
                    "tools[{i}]: `http` needs `name`, what the model calls it"
                )));
            };
            if !valid_tool_name(name) {
                return Err(bad(format!(
                    "tools[{i}]: `{name}` is not a tool name (letters, digits, `_` and `-`, at most 64)"
                )));
            }
            let Some(prefix) = text(inner, "url_prefix") else {
                return Err(bad(format!("tools[{i}]: `http` needs `url_prefix`")));
            };
            let host = prefix
                .strip_prefix("https://")
                .or_else(|| prefix.strip_prefix("http://"))
                .and_then(|rest| rest.split('/').next())
                .filter(|h| !h.is_empty());
            if host.is_none() || prefix.contains(['?', '#']) {
                return Err(bad(format!(
                    "tools[{i}]: `url_prefix` must be an http(s) URL with a host and no query, not `{prefix}`"
                )));
            }
            let method = text(inner, "method").unwrap_or("GET").to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                return Err(bad(format!(
                    "tools[{i}]: `method` must be GET, POST, PUT, PATCH or DELETE, not `{method}`"
                )));
            }
            Ok(vec![ToolSpec {
                name: name.to_string(),
                description: text(inner, "description").map(str::to_string),
                source: ToolSource::Http {
                    url_prefix: prefix.to_string(),
                    method,
                },
            }])
        }
    }
}

/// The URL an `http:` tool call goes to: `path` appended to the prefix.
/// Refuses anything that could leave the prefix (another scheme or host,
/// `..` segments, backslashes), so the model reaches only what was offered.
pub fn http_tool_url(prefix: &str, path: &str) -> Result<String, String> {
    let path = path.trim();
    if path.contains("://") || path.starts_with("//") || path.contains('\\') {
        return Err(format!(
            "`path` must be a path under {prefix}, not `{path}`"
        ));
    }
    if path
        .split(['/', '?', '#'])
        .any(|segment| segment == ".." || segment.eq_ignore_ascii_case("%2e%2e"))
        || path.to_ascii_lowercase().contains("%2f")
    {
        return Err(format!("`path` may not leave {prefix}: `{path}`"));
    }
    let url = match (prefix.ends_with('/'), path.starts_with('/')) {
        (true, true) => format!("{prefix}{}", &path[1..]),
        (false, false) if !path.is_empty() && !path.starts_with('?') => format!("{prefix}/{path}"),
        _ => format!("{prefix}{path}"),
    };
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known(name: &str) -> bool {
        name == "count_words"
    }

    #[test]
    fn reads_every_tool_kind_with_defaults() {
        let spec = read(
            &json!({
                "prompt": "p",
                "tools": [
                    {"function": "count_words"},
                    {"function": "count_words", "name": "words2", "description": "d"},
                    {"mcp": {"server": "files", "tools": ["read_text_file", "list_directory"]}},
                    {"http": {"name": "fetch", "url_prefix": "https://api.example.com/", "method": "post"}},
                ],
            }),
            &known,
        )
        .unwrap();
        assert_eq!(spec.max_turns, DEFAULT_MAX_TURNS);
        assert!(spec.parallel_tool_calls);
        assert_eq!(spec.on_tool_error, OnToolError::Return);
        let names: Vec<&str> = spec.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "count_words",
                "words2",
                "read_text_file",
                "list_directory",
                "fetch"
            ]
        );
        assert_eq!(
            spec.tools[4].source,
            ToolSource::Http {
                url_prefix: "https://api.example.com/".into(),
                method: "POST".into()
            }
        );
    }

    #[test]
    fn reports_every_problem() {
        let problems = read(
            &json!({
                "max_turns": 0,
                "on_tool_error": "ignore",
                "tools": [
                    {"function": "nope"},
                    {"function": "count_words", "approve": true},
                    {"python": {"name": "calc"}},
                    {"mcp": {"server": "files"}},
                    {"http": {"name": "x", "url_prefix": "ftp://x"}},
                    {"function": "count_words"},
                    {"function": "count_words"},
                    "count_words",
                ],
            }),
            &known,
        )
        .unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
        assert_eq!(problems.len(), 10, "{text:#?}");
        assert!(text[0].contains("prompt"));
        assert!(text.iter().any(|t| t.contains("unknown function `nope`")));
        let approve = problems
            .iter()
            .find(|p| p.message.contains("approve"))
            .unwrap();
        assert_eq!(approve.code, ErrorCode::ApprovalNotAvailable);
        assert_eq!(approve.at, Some(1));
        assert!(text
            .iter()
            .any(|t| t.contains("`python:` tools are not available")));
        assert!(text.iter().any(|t| t.contains("mcp.tools")));
        assert!(text.iter().any(|t| t.contains("url_prefix")));
        assert!(text
            .iter()
            .any(|t| t.contains("two tools are named `count_words`")));
        assert!(text.iter().any(|t| t.contains("must be a mapping")));
    }

    #[test]
    fn http_tool_urls_stay_under_their_prefix() {
        let p = "https://api.example.com/v1/";
        assert_eq!(
            http_tool_url(p, "items?q=1").unwrap(),
            "https://api.example.com/v1/items?q=1"
        );
        assert_eq!(
            http_tool_url(p, "/items").unwrap(),
            "https://api.example.com/v1/items"
        );
        assert_eq!(
            http_tool_url("https://api.example.com", "items").unwrap(),
            "https://api.example.com/items"
        );
        for bad in [
            "../admin",
            "a/../../b",
            "https://evil.com/",
            "//evil.com",
            "a\\b",
            "%2e%2e/x",
            "a%2Fb",
        ] {
            assert!(http_tool_url(p, bad).is_err(), "{bad}");
        }
    }
}
