//! Registry-wide tests: metadata, argument coercion and errors, robustness.
//! Each function's own behaviour is tested next to it.

use super::*;
use serde_json::json;
use std::collections::HashSet;

/// Calls a registered function with a JSON object of arguments.
pub(crate) fn call(name: &str, args: Value) -> Result<Value, GzError> {
    let function = find(name).unwrap_or_else(|| panic!("no function {name}"));
    let Value::Object(map) = args else {
        panic!("arguments must be an object")
    };
    function.call(&map, &everywhere())
}

/// A guard allowing the whole file system: these tests are about the
/// functions, the guard has its own.
pub(crate) fn everywhere() -> FileGuard {
    FileGuard::under(&[std::path::PathBuf::from("/")])
}

/// The error code of a call that must fail.
pub(crate) fn err_code(name: &str, args: Value) -> ErrorCode {
    match call(name, args) {
        Ok(value) => panic!("{name} should fail but returned {value}"),
        Err(error) => error.code,
    }
}

#[test]
fn registry_is_complete_and_well_described() {
    let functions = all();
    assert!(functions.len() >= 32, "only {} functions", functions.len());
    let mut names = HashSet::new();
    for f in functions {
        assert!(names.insert(f.name), "duplicate function name {}", f.name);
        assert!(
            !f.description.trim().is_empty(),
            "{} has no description",
            f.name
        );
        assert!(!f.category.trim().is_empty(), "{} has no category", f.name);
        assert!(
            !f.returns.trim().is_empty(),
            "{} has no return description",
            f.name
        );
        assert!(
            f.example
                .starts_with(&format!("gleitzeit run --function {}", f.name)),
            "{}'s example should be a CLI line calling it: {}",
            f.name,
            f.example
        );
        let mut arg_names = HashSet::new();
        for arg in f.args {
            assert!(
                arg_names.insert(arg.name),
                "{} declares `{}` twice",
                f.name,
                arg.name
            );
            assert!(
                !arg.description.is_empty(),
                "{}.{} has no description",
                f.name,
                arg.name
            );
            assert!(
                !(arg.required && arg.default.is_some()),
                "{}.{} is required and has a default",
                f.name,
                arg.name
            );
            if let Some(default) = arg.default {
                let value: Value = serde_json::from_str(default).unwrap_or_else(|e| {
                    panic!(
                        "{}.{} default {default:?} is not JSON: {e}",
                        f.name, arg.name
                    )
                });
                assert!(
                    coerce_value(f.name, arg, &value).is_ok(),
                    "{}.{} default {default} does not fit its kind",
                    f.name,
                    arg.name
                );
            }
        }
        // Every `--args k=v` in the example names a real argument.
        for word in f.example.split_whitespace().skip(4) {
            if let Some((key, _)) = word.split_once('=') {
                if key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    assert!(
                        f.arg(key).is_some(),
                        "{}'s example uses unknown argument `{key}`",
                        f.name
                    );
                }
            }
        }
        assert!(std::ptr::eq(find(f.name).unwrap(), f));
    }
    assert!(find("no_such_function").is_none());
    assert_eq!(suggest("fibonaci"), Some("fibonacci"));
}

#[test]
fn required_functions_have_the_python_argument_names() {
    let expected: &[(&str, &[&str])] = &[
        ("fibonacci", &["n"]),
        ("analyze_numbers", &["numbers"]),
        ("random_data", &["data_type", "count", "min", "max", "seed"]),
        ("count_words", &["text"]),
        ("extract_keywords", &["text", "max_keywords"]),
        (
            "csv_filter",
            &["file", "column", "min_value", "max_value", "equals"],
        ),
        ("analyze_data", &["data"]),
    ];
    for (name, args) in expected {
        let f = find(name).unwrap_or_else(|| panic!("{name} is missing"));
        let actual: Vec<&str> = f.args.iter().map(|a| a.name).collect();
        assert_eq!(&actual, args, "{name}");
    }
    assert!(find("csv_filter").unwrap().blocking);
    assert!(find("analyze_data").unwrap().blocking);
    assert!(find("sleep_ms").unwrap().blocking);
    assert!(!find("noop").unwrap().blocking);
    for name in [
        "now",
        "parse_date",
        "date_diff",
        "add_days",
        "day_of_week",
        "hash_text",
        "base64_encode",
        "echo",
    ] {
        assert!(find(name).is_some(), "{name} is missing");
    }
}

#[test]
fn functions_serialize_for_functions_show() {
    let value = serde_json::to_value(find("random_data").unwrap()).unwrap();
    assert_eq!(value["name"], "random_data");
    assert_eq!(value["blocking"], true);
    assert_eq!(
        value["args"][1],
        json!({
            "name": "count", "kind": "integer", "required": false, "default": "10",
            "description": "How many values (0 to 1000000)",
        })
    );
    assert!(value.get("run").is_none());
    assert!(format!("{:?}", find("noop").unwrap()).contains("noop"));
}

#[test]
fn strings_from_the_command_line_are_coerced() {
    assert_eq!(
        call("fibonacci", json!({"n": "10"}))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        call("fibonacci", json!({"n": " 5 "}))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        call("fibonacci", json!({"n": 5.0}))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        5,
        "5.0 from YAML"
    );
    assert_eq!(
        call("fibonacci", json!({"n": "1e1"}))
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        10
    );
    assert_eq!(
        call("analyze_numbers", json!({"numbers": "[1,5,10]"})).unwrap()["sum"],
        16
    );
    assert_eq!(
        call("analyze_numbers", json!({"numbers": "1, 5, 10"})).unwrap()["sum"],
        16
    );
    assert_eq!(
        call("analyze_numbers", json!({"numbers": ["1", 5, "10.5"]})).unwrap()["sum"],
        16.5
    );
    assert_eq!(
        call("round_number", json!({"value": "2.25", "decimals": "1"})).unwrap(),
        json!(2.2)
    );
    assert_eq!(
        call("split_text", json!({"text": " a , b ", "trim": "false"})).unwrap(),
        json!([" a ", " b "])
    );
    assert_eq!(
        call("split_text", json!({"text": " a , b ", "trim": "no"})).unwrap(),
        json!([" a ", " b "])
    );
    assert_eq!(
        call("uppercase", json!({"text": 42})).unwrap(),
        json!("42"),
        "numbers become text"
    );
    assert_eq!(
        call("json_keys", json!({"data": "{\"k\": 1}"})).unwrap(),
        json!(["k"])
    );
    assert_eq!(
        call("join_list", json!({"items": "a,b", "separator": "+"})).unwrap(),
        json!("a+b")
    );
    assert_eq!(
        call("join_list", json!({"items": ""})).unwrap(),
        json!(""),
        "empty text is an empty list"
    );
    let args = json!({"data_type": "numbers", "count": "100", "min": "1", "max": "1000"});
    assert_eq!(
        call("random_data", args).unwrap().as_array().unwrap().len(),
        100
    );
}

#[test]
fn coercion_helpers() {
    assert_eq!(split_list("1,5,10"), json!([1, 5, 10]));
    assert_eq!(split_list("1.5, -2"), json!([1.5, -2]));
    assert_eq!(split_list("a, b"), json!(["a", "b"]));
    assert_eq!(split_list("007,1"), json!(["007", "1"]));
    assert_eq!(parse_integer("1_000"), Some(1000));
    assert_eq!(parse_integer("2.5"), None);
    assert_eq!(parse_integer("1e308"), None);
    assert_eq!(parse_number("NaN"), None);
    assert_eq!(parse_number("inf"), None);
    assert_eq!(parse_number("-3"), Some(json!(-3)));
    assert_eq!(parse_bool("Yes"), Some(true));
    assert_eq!(parse_bool("maybe"), None);
    assert_eq!(integral(2f64.powi(63)), None, "2^63 is out of range");
    assert_eq!(integral(-(2f64.powi(63))), Some(i64::MIN));
    assert_eq!(num(3.0), json!(3));
    assert_eq!(num(0.5), json!(0.5));
    assert_eq!(num(f64::INFINITY), Value::Null);
}

#[test]
fn coercion_borrows_when_nothing_changes() {
    let noop = find("noop").unwrap();
    let args = Map::new();
    assert!(matches!(
        coerce_args(noop, &args).unwrap(),
        Cow::Borrowed(_)
    ));
    let fib = find("fibonacci").unwrap();
    let Value::Object(typed) = json!({"n": 3}) else {
        unreachable!()
    };
    assert!(matches!(
        coerce_args(fib, &typed).unwrap(),
        Cow::Borrowed(_)
    ));
    let Value::Object(text) = json!({"n": "3"}) else {
        unreachable!()
    };
    assert_eq!(coerce_args(fib, &text).unwrap()["n"], 3);
}

#[test]
fn defaults_are_applied() {
    let f = find("extract_keywords").unwrap();
    let Value::Object(args) = json!({"text": "x"}) else {
        unreachable!()
    };
    let coerced = coerce_args(f, &args).unwrap();
    assert_eq!(coerced["max_keywords"], 5);
    let Value::Object(nulled) = json!({"text": "x", "max_keywords": null}) else {
        unreachable!()
    };
    assert_eq!(
        coerce_args(f, &nulled).unwrap()["max_keywords"],
        5,
        "null means absent"
    );
    let g = find("random_data").unwrap();
    let empty = Map::new();
    let coerced = coerce_args(g, &empty).unwrap();
    assert_eq!(
        (coerced["data_type"].clone(), coerced["count"].clone()),
        (json!("numbers"), json!(10))
    );
    assert!(!coerced.contains_key("seed"));
}

#[test]
fn missing_argument_is_gz2031_naming_it() {
    let error = call("fibonacci", json!({})).unwrap_err();
    assert_eq!(error.code, ErrorCode::FunctionArgumentInvalid);
    assert_eq!(error.code.as_str(), "GZ2031");
    assert!(
        error.message.contains("fibonacci") && error.message.contains("`n`"),
        "{}",
        error.message
    );
    assert!(error.message.contains("required"), "{}", error.message);
    assert!(
        error
            .hint_text()
            .contains("gleitzeit functions show fibonacci"),
        "{}",
        error.hint_text()
    );
    assert_eq!(error.details["argument"], "n");
}

#[test]
fn unknown_argument_suggests_the_closest_name() {
    let error = call("fibonacci", json!({"m": 3})).unwrap_err();
    assert_eq!(error.code, ErrorCode::FunctionArgumentInvalid);
    assert!(
        error.message.contains("unknown argument `m`"),
        "{}",
        error.message
    );
    let error = call("extract_keywords", json!({"text": "x", "max_keyword": 3})).unwrap_err();
    assert!(
        error.message.contains("did you mean `max_keywords`"),
        "{}",
        error.message
    );
    assert!(
        error
            .hint_text()
            .contains("gleitzeit functions show extract_keywords"),
        "{}",
        error.hint_text()
    );
    assert!(
        error.hint_text().contains("text, max_keywords"),
        "{}",
        error.hint_text()
    );
    let error = call("random_data", json!({"zzz": 1})).unwrap_err();
    assert!(!error.message.contains("did you mean"), "{}", error.message);
    let error = call("now", json!({"formt": "%Y"})).unwrap_err();
    assert!(error.message.contains("`format`"), "{}", error.message);
}

#[test]
fn wrong_types_are_gz2031_naming_argument_and_expectation() {
    let cases = [
        ("fibonacci", json!({"n": "ten"}), "`n`", "an integer"),
        ("fibonacci", json!({"n": 2.5}), "`n`", "an integer"),
        ("fibonacci", json!({"n": 1e308}), "`n`", "an integer"),
        ("fibonacci", json!({"n": [1]}), "`n`", "an integer"),
        (
            "round_number",
            json!({"value": "abc"}),
            "`value`",
            "a number",
        ),
        ("count_words", json!({"text": ["a"]}), "`text`", "text"),
        (
            "split_text",
            json!({"text": "a", "trim": "perhaps"}),
            "`trim`",
            "true or false",
        ),
        (
            "analyze_numbers",
            json!({"numbers": 5}),
            "`numbers`",
            "a list",
        ),
        (
            "analyze_numbers",
            json!({"numbers": "[1,"}),
            "`numbers`",
            "does not parse",
        ),
        ("json_keys", json!({"data": "[1]"}), "`data`", "an object"),
        (
            "json_keys",
            json!({"data": "{oops"}),
            "`data`",
            "does not parse",
        ),
    ];
    for (name, args, argument, expected) in cases {
        let error = call(name, args.clone()).unwrap_err();
        assert_eq!(
            error.code,
            ErrorCode::FunctionArgumentInvalid,
            "{name} {args}"
        );
        assert!(error.message.contains(name), "{}", error.message);
        assert!(error.message.contains(argument), "{}", error.message);
        assert!(error.message.contains(expected), "{}", error.message);
        assert!(error
            .hint_text()
            .contains(&format!("gleitzeit functions show {name}")));
    }
}

#[test]
fn function_failures_are_gz2032() {
    assert_eq!(
        err_code("mean", json!({"numbers": []})),
        ErrorCode::FunctionFailed
    );
    assert_eq!(
        err_code("percent_change", json!({"old": 0, "new": 1})),
        ErrorCode::FunctionFailed
    );
}

/// Values that have broken parsers before.
fn weird_values() -> Vec<Value> {
    vec![
        json!(""),
        json!(" "),
        json!(1e308),
        json!(-1e308),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(-1),
        json!(0),
        json!(0.5),
        json!([[[]]]),
        json!([1, "a", null, [2]]),
        json!({}),
        json!({"a": {"b": [1]}}),
        json!(true),
        Value::Null,
        json!("[1,"),
        json!("{"),
        json!("%"),
        json!("\u{0}\u{feff}\u{1F600}"),
        json!("9999999999999999999999"),
        json!("-0"),
        json!("../../../../nonexistent"),
    ]
}

#[test]
fn no_function_panics_on_any_input() {
    let run = |f: &Function, args: &Map<String, Value>| {
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(args, &everywhere())));
        assert!(
            outcome.is_ok(),
            "{} panicked with args {}",
            f.name,
            Value::Object(args.clone())
        );
    };
    for f in all() {
        run(f, &Map::new());
        for weird in weird_values() {
            // Every argument weird at once…
            let all_weird: Map<String, Value> = f
                .args
                .iter()
                .map(|a| (a.name.to_string(), weird.clone()))
                .collect();
            run(f, &all_weird);
            // …and one at a time.
            for arg in f.args {
                let one = Map::from_iter([(arg.name.to_string(), weird.clone())]);
                run(f, &one);
            }
        }
        // Calling `run` directly, skipping coercion, must not panic either.
        let outcome = std::panic::catch_unwind(|| (f.run)(&Map::new(), &everywhere()));
        assert!(outcome.is_ok(), "{}.run panicked without coercion", f.name);
    }
}

#[test]
fn noop_is_cheap() {
    let noop = find("noop").unwrap();
    let args = Map::new();
    let started = std::time::Instant::now();
    for _ in 0..100_000 {
        assert_eq!(noop.call(&args, &everywhere()).unwrap(), Value::Null);
    }
    // Generous even for an unoptimised build on a loaded machine.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
