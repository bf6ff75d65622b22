//! Utilities for testing and benchmarking workflows.

use crate::FileGuard;
use crate::{Args, Function};
use gleitzeit_core::GzError;
use serde_json::{json, Map, Value};

type Res = Result<Value, GzError>;

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "noop",
        category: "util",
        description: "Does nothing and returns `value` (or null). Useful for benchmarks and as a placeholder task.",
        args: &[arg!("value", Any, optional, "Returned unchanged")],
        returns: "any",
        example: "gleitzeit run --function noop",
        blocking: false,
        run: noop,
    },
    Function {
        name: "echo",
        category: "util",
        description: "Returns `value` unchanged (JSON text is parsed), e.g. to pass data between tasks.",
        args: &[arg!("value", Any, required, "The value to return")],
        returns: "any",
        example: "gleitzeit run --function echo --args value=\"hello\"",
        blocking: false,
        run: echo,
    },
    Function {
        name: "sleep_ms",
        category: "util",
        description: "Waits `ms` milliseconds (at most 60000) and returns how long it slept. For testing timeouts \
                      and concurrency.",
        args: &[arg!("ms", Integer, required, "Milliseconds to sleep, 0 to 60000")],
        returns: "object {slept_ms}",
        example: "gleitzeit run --function sleep_ms --args ms=250",
        blocking: true,
        run: sleep_ms,
    },
];

pub(crate) const SLEEP_MAX_MS: i64 = 60_000;

fn noop(m: &Map<String, Value>, _: &FileGuard) -> Res {
    Ok(m.get("value").cloned().unwrap_or(Value::Null))
}

fn echo(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("echo", m);
    a.get("value")
        .cloned()
        .ok_or_else(|| a.error("value", "is required"))
}

fn sleep_ms(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("sleep_ms", m);
    let ms = a.int_in("ms", 0, SLEEP_MAX_MS)? as u64;
    let started = std::time::Instant::now();
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Ok(json!({ "slept_ms": started.elapsed().as_millis() as u64 }))
}

#[cfg(test)]
mod tests {
    use crate::tests::{call, err_code};
    use gleitzeit_core::ErrorCode;
    use serde_json::{json, Value};

    #[test]
    fn noop_returns_value_or_null() {
        assert_eq!(call("noop", json!({})).unwrap(), Value::Null);
        assert_eq!(
            call("noop", json!({"value": {"a": [1]}})).unwrap(),
            json!({"a": [1]})
        );
        assert_eq!(
            call("noop", json!({"value": "[1, 2]"})).unwrap(),
            json!([1, 2])
        );
    }

    #[test]
    fn echo_returns_value() {
        assert_eq!(
            call("echo", json!({"value": "hello"})).unwrap(),
            json!("hello")
        );
        assert_eq!(call("echo", json!({"value": 3})).unwrap(), json!(3));
        assert_eq!(
            err_code("echo", json!({})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn sleep_sleeps_and_caps() {
        let out = call("sleep_ms", json!({"ms": "20"})).unwrap();
        assert!(out["slept_ms"].as_u64().unwrap() >= 20, "{out}");
        let error = call("sleep_ms", json!({"ms": 60_001})).unwrap_err();
        assert_eq!(error.code, ErrorCode::FunctionArgumentInvalid);
        assert!(error.message.contains("60000"), "{}", error.message);
        assert_eq!(
            err_code("sleep_ms", json!({"ms": -1})),
            ErrorCode::FunctionArgumentInvalid
        );
    }
}
