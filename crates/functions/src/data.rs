//! Lists and generated data.

use crate::FileGuard;
use crate::{closest, num, Args, Function};
use gleitzeit_core::GzError;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashSet;

type Res = Result<Value, GzError>;

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "random_data",
        category: "data",
        description: "Random test data: numbers (integers when min and max are whole, else decimals), \
                      strings, booleans, names or e-mail addresses. Give a seed for repeatable output.",
        args: &[
            arg!("data_type", String, default "\"numbers\"", "numbers, strings, booleans, names or emails"),
            arg!("count", Integer, default "10", "How many values (0 to 1000000)"),
            arg!("min", Number, default "0", "Smallest number (numbers only)"),
            arg!("max", Number, default "100", "Largest number (numbers only)"),
            arg!("seed", Integer, optional, "Seed for a repeatable sequence"),
        ],
        returns: "list",
        example: "gleitzeit run --function random_data --args data_type=numbers count=100 min=1 max=1000",
        blocking: true,
        run: random_data,
    },
    Function {
        name: "sort_list",
        category: "data",
        description: "Sorts a list: numbers numerically, text alphabetically (null < booleans < numbers < text \
                      < lists < objects when mixed). With `key`, sorts a list of objects by that field.",
        args: &[
            arg!("items", List, required, "The list to sort"),
            arg!("reverse", Boolean, default "false", "Largest first"),
            arg!("key", String, optional, "Field to sort a list of objects by"),
        ],
        returns: "list",
        example: "gleitzeit run --function sort_list --args items=3,10,2 reverse=true",
        blocking: false,
        run: sort_list,
    },
    Function {
        name: "unique",
        category: "data",
        description: "The list without duplicates, keeping the first occurrence of each value in order.",
        args: &[arg!("items", List, required, "The list to de-duplicate")],
        returns: "list",
        example: "gleitzeit run --function unique --args items=a,b,a,c,b",
        blocking: false,
        run: unique,
    },
    Function {
        name: "filter_numbers",
        category: "data",
        description: "The numbers of a list that lie between `min` and `max` (both inclusive, both optional).",
        args: &[
            arg!("numbers", List, required, "The numbers to filter"),
            arg!("min", Number, optional, "Keep numbers >= min"),
            arg!("max", Number, optional, "Keep numbers <= max"),
        ],
        returns: "list of numbers",
        example: "gleitzeit run --function filter_numbers --args numbers=\"[1,5,10,20]\" min=5 max=10",
        blocking: false,
        run: filter_numbers,
    },
    Function {
        name: "join_list",
        category: "data",
        description: "Joins the items of a list into one text (text items as they are, others as JSON).",
        args: &[
            arg!("items", List, required, "The items to join"),
            arg!("separator", String, default "\", \"", "Put between items"),
        ],
        returns: "string",
        example: "gleitzeit run --function join_list --args items=\"[\\\"a\\\",\\\"b\\\"]\" separator=\" | \"",
        blocking: false,
        run: join_list,
    },
];

pub(crate) const RANDOM_MAX_COUNT: i64 = 1_000_000;
const DATA_TYPES: &[&str] = &["numbers", "strings", "booleans", "names", "emails"];
const FIRST_NAMES: &[&str] = &[
    "Alice", "Bob", "Carla", "David", "Emma", "Felix", "Grace", "Hannah", "Ivan", "Julia", "Karl",
    "Lena", "Max", "Nora", "Oscar", "Paula", "Quentin", "Rosa", "Sam", "Tara", "Uwe", "Vera",
    "Wes", "Yara", "Zoe",
];
const LAST_NAMES: &[&str] = &[
    "Anderson", "Becker", "Chen", "Diaz", "Fischer", "Garcia", "Hoffmann", "Ito", "Jensen", "Kim",
    "Lopez", "Meyer", "Nguyen", "Okafor", "Patel", "Rossi", "Schmidt", "Smith", "Tanaka", "Weber",
];

fn pick<'a>(rng: &mut fastrand::Rng, items: &[&'a str]) -> &'a str {
    items
        .get(rng.usize(..items.len().max(1)))
        .copied()
        .unwrap_or("")
}

fn random_data(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("random_data", m);
    let data_type = a.str("data_type")?.trim().to_ascii_lowercase();
    if !DATA_TYPES.contains(&data_type.as_str()) {
        let mut message = format!("is {data_type:?}; use one of {}", DATA_TYPES.join(", "));
        if let Some(close) = closest(&data_type, DATA_TYPES.iter().copied()) {
            message.push_str(&format!(" (did you mean {close:?}?)"));
        }
        return Err(a.error("data_type", message));
    }
    let count = a.int_in("count", 0, RANDOM_MAX_COUNT)? as usize;
    let (min, max) = (a.number("min")?, a.number("max")?);
    if min > max {
        return Err(a.error(
            "min",
            format!("({min}) must not be larger than `max` ({max})"),
        ));
    }
    let mut rng = match a.opt_int("seed")? {
        Some(seed) => fastrand::Rng::with_seed(seed as u64),
        None => fastrand::Rng::new(),
    };
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let whole =
        min.fract() == 0.0 && max.fract() == 0.0 && min.abs() <= EXACT && max.abs() <= EXACT;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let value = match data_type.as_str() {
            "numbers" if whole => Value::from(rng.i64(min as i64..=max as i64)),
            "numbers" => {
                let t = rng.f64();
                let span = max - min;
                let x = if span.is_finite() {
                    min + span * t
                } else {
                    min * (1.0 - t) + max * t
                };
                num(x.clamp(min, max))
            }
            "strings" => Value::String((0..8).map(|_| rng.alphanumeric()).collect()),
            "booleans" => Value::Bool(rng.bool()),
            "names" => Value::String(format!(
                "{} {}",
                pick(&mut rng, FIRST_NAMES),
                pick(&mut rng, LAST_NAMES)
            )),
            _ => Value::String(format!(
                "{}.{}{}@example.com",
                pick(&mut rng, FIRST_NAMES).to_lowercase(),
                pick(&mut rng, LAST_NAMES).to_lowercase(),
                i + 1
            )),
        };
        out.push(value);
    }
    Ok(Value::Array(out))
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Bool(_) => 1,
        Value::Number(_) => 2,
        Value::String(_) => 3,
        Value::Array(_) => 4,
        Value::Object(_) => 5,
    }
}

/// A total order over JSON values, for sorting.
pub(crate) fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(f64::NAN)
            .total_cmp(&y.as_f64().unwrap_or(f64::NAN)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
            a.to_string().cmp(&b.to_string())
        }
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

fn sort_list(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("sort_list", m);
    let mut items = a.list("items")?.clone();
    let reverse = a.bool("reverse")?;
    let key = a.opt_str("key")?;
    let field = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    if let Some(k) = key {
        if let Some(i) = items.iter().position(|v| !v.is_object()) {
            return Err(a.error(
                "key",
                format!("({k:?}) needs a list of objects, but item {i} is not an object"),
            ));
        }
    }
    items.sort_by(|x, y| {
        let order = compare(&field(x), &field(y));
        if reverse {
            order.reverse()
        } else {
            order
        }
    });
    Ok(Value::Array(items))
}

fn unique(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("unique", m);
    let mut seen = HashSet::new();
    let items = a
        .list("items")?
        .iter()
        .filter(|v| seen.insert(v.to_string()))
        .cloned();
    Ok(Value::Array(items.collect()))
}

fn filter_numbers(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("filter_numbers", m);
    let numbers = a.numbers("numbers")?;
    let min = a.opt_num("min")?.unwrap_or(f64::NEG_INFINITY);
    let max = a.opt_num("max")?.unwrap_or(f64::INFINITY);
    Ok(Value::Array(
        numbers
            .into_iter()
            .filter(|x| (min..=max).contains(x))
            .map(num)
            .collect(),
    ))
}

/// A value as text: strings as they are, everything else as JSON.
pub(crate) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn join_list(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("join_list", m);
    let items: Vec<String> = a.list("items")?.iter().map(plain).collect();
    Ok(Value::String(items.join(a.str("separator")?)))
}

#[cfg(test)]
mod tests {
    use crate::tests::{call, err_code};
    use gleitzeit_core::ErrorCode;
    use serde_json::json;

    #[test]
    fn random_numbers_respect_bounds_and_seed() {
        let args =
            json!({"data_type": "numbers", "count": "100", "min": "1", "max": "1000", "seed": 42});
        let first = call("random_data", args.clone()).unwrap();
        let list = first.as_array().unwrap();
        assert_eq!(list.len(), 100);
        assert!(
            list.iter()
                .all(|v| v.as_i64().is_some_and(|n| (1..=1000).contains(&n))),
            "{first}"
        );
        assert_eq!(
            call("random_data", args).unwrap(),
            first,
            "same seed, same data"
        );
        let floats = call(
            "random_data",
            json!({"min": 0.5, "max": 0.75, "count": 50, "seed": 1}),
        )
        .unwrap();
        assert!(floats
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_f64().is_some_and(|f| (0.5..=0.75).contains(&f))));
        let extreme = call(
            "random_data",
            json!({"min": -1e308, "max": 1e308, "count": 20}),
        )
        .unwrap();
        assert!(extreme.as_array().unwrap().iter().all(|v| v.is_number()));
        assert_eq!(
            call("random_data", json!({}))
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            10,
            "defaults"
        );
    }

    #[test]
    fn random_other_types() {
        let names = call(
            "random_data",
            json!({"data_type": "names", "count": 5, "seed": 7}),
        )
        .unwrap();
        assert!(names
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n.as_str().unwrap().split(' ').count() == 2));
        let emails = call(
            "random_data",
            json!({"data_type": "emails", "count": 3, "seed": 7}),
        )
        .unwrap();
        for (i, e) in emails.as_array().unwrap().iter().enumerate() {
            let e = e.as_str().unwrap();
            assert!(
                e.ends_with(&format!("{}@example.com", i + 1)) && e.contains('.'),
                "{e}"
            );
        }
        let strings = call("random_data", json!({"data_type": "strings", "count": 3})).unwrap();
        assert!(strings
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s.as_str().unwrap().len() == 8));
        let bools = call("random_data", json!({"data_type": "booleans", "count": 3})).unwrap();
        assert!(bools.as_array().unwrap().iter().all(|b| b.is_boolean()));
        let bad = call("random_data", json!({"data_type": "nmbers"})).unwrap_err();
        assert_eq!(bad.code, ErrorCode::FunctionArgumentInvalid);
        assert!(bad.message.contains("\"numbers\""), "{}", bad.message);
        assert_eq!(
            err_code("random_data", json!({"count": 1_000_001})),
            ErrorCode::FunctionArgumentInvalid
        );
        assert_eq!(
            err_code("random_data", json!({"min": 5, "max": 1})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn sorting() {
        assert_eq!(
            call("sort_list", json!({"items": "3,10,2"})).unwrap(),
            json!([2, 3, 10])
        );
        assert_eq!(
            call("sort_list", json!({"items": "b,c,a", "reverse": true})).unwrap(),
            json!(["c", "b", "a"])
        );
        assert_eq!(
            call("sort_list", json!({"items": ["b", 2, null, true, 1.5]})).unwrap(),
            json!([null, true, 1.5, 2, "b"])
        );
        let people = json!([{"name": "b", "age": 30}, {"name": "a", "age": 20}, {"name": "c"}]);
        let by_age = call("sort_list", json!({"items": people, "key": "age"})).unwrap();
        assert_eq!(
            by_age,
            json!([{"name": "c"}, {"name": "a", "age": 20}, {"name": "b", "age": 30}])
        );
        assert_eq!(
            err_code("sort_list", json!({"items": [1], "key": "age"})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn uniqueness() {
        assert_eq!(
            call("unique", json!({"items": "a,b,a,c,b"})).unwrap(),
            json!(["a", "b", "c"])
        );
        assert_eq!(
            call("unique", json!({"items": [1, [1], 1, {"a": 1}, [1]]})).unwrap(),
            json!([1, [1], {"a": 1}])
        );
    }

    #[test]
    fn filtering_numbers() {
        let out = call(
            "filter_numbers",
            json!({"numbers": "[1,5,10,20]", "min": 5, "max": "10"}),
        )
        .unwrap();
        assert_eq!(out, json!([5, 10]));
        assert_eq!(
            call("filter_numbers", json!({"numbers": [1, 2.5], "min": 2})).unwrap(),
            json!([2.5])
        );
        assert_eq!(
            call("filter_numbers", json!({"numbers": [3, -1]})).unwrap(),
            json!([3, -1])
        );
    }

    #[test]
    fn joining() {
        assert_eq!(
            call(
                "join_list",
                json!({"items": ["a", "b"], "separator": " | "})
            )
            .unwrap(),
            json!("a | b")
        );
        assert_eq!(
            call("join_list", json!({"items": [1, "x", null, {"k": 1}]})).unwrap(),
            json!("1, x, null, {\"k\":1}")
        );
    }
}
