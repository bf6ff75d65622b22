//! The one set of limits for everything that enters Gleitzeit: workflow files
//! (over the API and locally), inputs, answers and provider results.
//!
//! Why they exist: a few hundred bytes of YAML can nest deeper than the stored
//! JSON can be read back, or expand through aliases into gigabytes; a result of
//! 50 MB is stored, sent and rendered whole. Every limit is checked before the
//! thing is stored, with the same numbers the store reads back with, so the
//! store never holds what it cannot read again.
//!
//! All checks here are iterative: untrusted structure is never walked by
//! recursion whose depth the input chooses.

use crate::errors::{ErrorCode, GzError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// serde_json refuses to read JSON nested deeper than 128 levels. A stored
/// workflow spec wraps a task's parameters in a few levels of its own
/// (workflow → tasks → [i] → parameters, and each embedded sub-workflow adds
/// as many), so documents are held well below it.
pub const STORED_JSON_MAX_DEPTH: usize = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Nesting depth of any value in a workflow, its inputs or a result
    /// (lists and mappings inside each other). `limits.max_depth`.
    pub max_depth: usize,
    /// YAML aliases may add at most this many times the document's own nodes
    /// (and at least [`ALIAS_ALLOWANCE`] nodes): `limits.max_alias_expansion`.
    pub max_alias_expansion: usize,
    /// Tasks in one workflow: `limits.max_tasks`.
    pub max_tasks: usize,
    /// Characters in a task id or name, an input's name: `limits.max_id_length`.
    pub max_id_length: usize,
    /// Characters in a workflow's name: `limits.max_name_length`.
    pub max_name_length: usize,
    /// Bytes of one task's result as JSON: `limits.max_result_bytes`.
    pub max_result_bytes: usize,
    /// Events in one page of a stored event listing or stream catch-up:
    /// `limits.max_events_page`.
    pub max_events_page: usize,
}

/// Aliases may always add this many nodes, so small documents that reuse a
/// block many times (`<<: *defaults` in every task) are never refused.
pub const ALIAS_ALLOWANCE: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_alias_expansion: 10,
            max_tasks: 100_000,
            max_id_length: 256,
            max_name_length: 1024,
            max_result_bytes: 16 * 1024 * 1024,
            max_events_page: 1000,
        }
    }
}

/// Which limit was exceeded; each names its setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Depth,
    AliasExpansion,
    Tasks,
    IdLength,
    NameLength,
    ResultBytes,
    StoredDepth,
}

impl Limit {
    pub fn setting(self) -> &'static str {
        match self {
            Limit::Depth => "limits.max_depth",
            Limit::AliasExpansion => "limits.max_alias_expansion",
            Limit::Tasks => "limits.max_tasks",
            Limit::IdLength => "limits.max_id_length",
            Limit::NameLength => "limits.max_name_length",
            Limit::ResultBytes => "limits.max_result_bytes",
            Limit::StoredDepth => "limits.max_depth",
        }
    }

    /// The error for a value of `actual` where `allowed` is the most; `what`
    /// says what was measured ("a task's parameters nest 150 levels").
    pub fn exceeded(self, what: impl Into<String>, allowed: usize) -> GzError {
        let code = match self {
            Limit::ResultBytes => ErrorCode::ResultTooLarge,
            _ => ErrorCode::InputLimitExceeded,
        };
        let hint = match self {
            Limit::ResultBytes => format!(
                "Return less (write big data to a file and return its path), or raise `{}` \
                 (now {allowed}) in the config.",
                self.setting()
            ),
            Limit::StoredDepth => format!(
                "Values are stored as JSON, which is read back at most \
                 {STORED_JSON_MAX_DEPTH} levels deep; flatten the structure."
            ),
            _ => format!(
                "The most allowed is {allowed}; simplify the input, or raise `{}` in the \
                 config of the process that reads it.",
                self.setting()
            ),
        };
        GzError::new(code, what.into()).with_hint(hint)
    }
}

/// Nesting depth of a JSON value: a scalar is 0, `[1]` is 1, `[[1]]` is 2.
/// Stops counting as soon as `stop_above` is exceeded.
pub fn depth(value: &Value, stop_above: usize) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, level)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        let level = level + 1;
        deepest = deepest.max(level);
        if deepest > stop_above {
            return deepest;
        }
        stack.extend(children.map(|child| (child, level)));
    }
    deepest
}

/// Size of `value` as compact JSON, without building the text.
pub fn json_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail; a value that cannot be serialised
    // (impossible for `Value`) would count as what was written so far.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

impl Limits {
    /// A value that arrives from outside (inputs, parameters): its depth.
    pub fn check_value(&self, value: &Value, what: &str) -> Result<(), GzError> {
        let found = depth(value, self.max_depth);
        if found > self.max_depth {
            return Err(Limit::Depth.exceeded(
                format!("{what} nests more than {} levels deep", self.max_depth),
                self.max_depth,
            ));
        }
        Ok(())
    }

    /// A provider's result before it is stored: depth and size.
    pub fn check_result(&self, value: &Value) -> Result<(), GzError> {
        self.check_value(value, "the task's result")?;
        let size = json_len(value);
        if size > self.max_result_bytes {
            return Err(Limit::ResultBytes.exceeded(
                format!(
                    "the task's result is {size} bytes as JSON, more than the {} allowed",
                    self.max_result_bytes
                ),
                self.max_result_bytes,
            ));
        }
        Ok(())
    }
}

/// How deep a workflow nests as stored JSON, computed from its parts without
/// serialising it: a task's parameters sit three levels down (workflow →
/// tasks → task), inputs and outputs two. Stops counting past `stop_above`.
pub fn workflow_depth(workflow: &crate::Workflow, stop_above: usize) -> usize {
    let mut deepest = 1;
    for value in workflow.inputs.values().chain(workflow.outputs.values()) {
        deepest = deepest.max(2 + depth(value, stop_above));
    }
    for task in &workflow.tasks {
        deepest = deepest.max(3 + depth(&task.params, stop_above));
        if let Some(crate::ForEach::Items(items)) = &task.for_each {
            for item in items {
                deepest = deepest.max(5 + depth(item, stop_above));
            }
        }
        if deepest > stop_above {
            break;
        }
    }
    deepest
}

/// A workflow about to be stored: refused if the store could not read it back.
pub fn check_storable_workflow(workflow: &crate::Workflow) -> Result<(), GzError> {
    if workflow_depth(workflow, STORED_JSON_MAX_DEPTH) > STORED_JSON_MAX_DEPTH {
        return Err(Limit::StoredDepth.exceeded(
            format!(
                "the workflow nests more than {STORED_JSON_MAX_DEPTH} levels deep as stored JSON"
            ),
            STORED_JSON_MAX_DEPTH,
        ));
    }
    Ok(())
}

/// A document about to be stored: refused if the store could not read it back.
pub fn check_storable(value: &Value, what: &str) -> Result<(), GzError> {
    if depth(value, STORED_JSON_MAX_DEPTH) > STORED_JSON_MAX_DEPTH {
        return Err(Limit::StoredDepth.exceeded(
            format!("{what} nests more than {STORED_JSON_MAX_DEPTH} levels deep as stored JSON"),
            STORED_JSON_MAX_DEPTH,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut value = json!(1);
        for _ in 0..levels {
            value = Value::Array(vec![value]);
        }
        value
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1), 100), 0);
        assert_eq!(depth(&json!([1, {"a": [2]}]), 100), 3);
        assert_eq!(depth(&nested(150), 1000), 150);
        // Stops early once the bound is passed.
        assert!(depth(&nested(150), 10) > 10);
    }

    #[test]
    fn results_over_the_limits_are_refused_with_the_setting_named() {
        let limits = Limits {
            max_result_bytes: 10,
            ..Limits::default()
        };
        let error = limits.check_result(&json!("0123456789abc")).unwrap_err();
        assert_eq!(error.code, ErrorCode::ResultTooLarge);
        assert!(error.message.contains("15 bytes"), "{}", error.message);
        assert!(error
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("limits.max_result_bytes"));
        assert!(limits.check_result(&json!("ok")).is_ok());

        let error = Limits::default().check_result(&nested(65)).unwrap_err();
        assert_eq!(error.code, ErrorCode::InputLimitExceeded);
        assert!(error
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("limits.max_depth"));
    }

    #[test]
    fn json_len_matches_serialisation() {
        let value = json!({"a": [1, 2, "three"], "b": null, "c": "é"});
        assert_eq!(
            json_len(&value),
            serde_json::to_string(&value).unwrap().len()
        );
    }

    #[test]
    fn workflow_depth_matches_the_stored_json() {
        let text = "name: d\ninputs: {a: [[1]]}\ntasks:\n  - {id: t, method: python/execute, parameters: {v: [[[1]]]}, for_each: [[[2]]]}\n";
        let workflow = crate::parse::load(
            text,
            "d.yaml",
            &crate::fuzzing::FuzzCatalog,
            &Default::default(),
        )
        .unwrap_or_else(|d| panic!("{d:#?}"));
        let stored = serde_json::to_value(&workflow).unwrap();
        assert_eq!(workflow_depth(&workflow, 1000), depth(&stored, 1000));
    }

    #[test]
    fn storable_means_readable_again() {
        let ok = nested(STORED_JSON_MAX_DEPTH);
        assert!(check_storable(&ok, "x").is_ok());
        let text = serde_json::to_string(&ok).unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_ok());
        assert!(check_storable(&nested(STORED_JSON_MAX_DEPTH + 1), "x").is_err());
        // What serde_json itself cannot read is far above what we store.
        let unreadable = serde_json::to_string(&nested(129)).unwrap();
        assert!(serde_json::from_str::<Value>(&unreadable).is_err());
    }
}
