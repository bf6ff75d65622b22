//! Numbers: sequences, statistics, primes, rounding.

use crate::FileGuard;
use crate::{num, Args, Function};
use gleitzeit_core::GzError;
use serde_json::{json, Map, Value};

type Res = Result<Value, GzError>;

pub(crate) const FUNCTIONS: &[Function] = &[
    Function {
        name: "fibonacci",
        category: "math",
        description: "The first n Fibonacci numbers, starting 0, 1, 1, 2, 3, 5. Numbers above 18446744073709551615 \
                      (from the 94th on) are returned as decimal text so they stay exact.",
        args: &[arg!("n", Integer, required, "How many numbers to return (0 to 186)")],
        returns: "list of integers",
        example: "gleitzeit run --function fibonacci --args n=10",
        blocking: false,
        run: fibonacci,
    },
    Function {
        name: "analyze_numbers",
        category: "math",
        description: "Summary statistics of a list of numbers: count, sum, mean, median, min, max, \
                      std_dev and variance (sample, n-1; 0 for a single number).",
        args: &[arg!("numbers", List, required, "The numbers, e.g. [1,5,10] or 1,5,10")],
        returns: "object {count, sum, mean, median, min, max, std_dev, variance}",
        example: "gleitzeit run --function analyze_numbers --args numbers=\"[1,5,10,20]\"",
        blocking: false,
        run: analyze_numbers,
    },
    Function {
        name: "sum",
        category: "math",
        description: "The sum of a list of numbers (0 for an empty list).",
        args: &[arg!("numbers", List, required, "The numbers to add")],
        returns: "number",
        example: "gleitzeit run --function sum --args numbers=1,2,3.5",
        blocking: false,
        run: sum,
    },
    Function {
        name: "mean",
        category: "math",
        description: "The arithmetic mean (average) of a non-empty list of numbers.",
        args: &[arg!("numbers", List, required, "The numbers to average")],
        returns: "number",
        example: "gleitzeit run --function mean --args numbers=\"[2,4,9]\"",
        blocking: false,
        run: mean,
    },
    Function {
        name: "factorial",
        category: "math",
        description: "n! — exact up to 20!, a floating-point approximation from 21! to 170!.",
        args: &[arg!("n", Integer, required, "A whole number from 0 to 170")],
        returns: "number",
        example: "gleitzeit run --function factorial --args n=10",
        blocking: false,
        run: factorial,
    },
    Function {
        name: "is_prime",
        category: "math",
        description: "Whether n is a prime number (deterministic for every 64-bit integer).",
        args: &[arg!("n", Integer, required, "The number to test")],
        returns: "boolean",
        example: "gleitzeit run --function is_prime --args n=97",
        blocking: false,
        run: is_prime,
    },
    Function {
        name: "primes",
        category: "math",
        description: "All prime numbers up to and including n (n at most 10000000).",
        args: &[arg!("n", Integer, required, "Upper limit (0 to 10000000)")],
        returns: "list of integers",
        example: "gleitzeit run --function primes --args n=50",
        blocking: true,
        run: primes,
    },
    Function {
        name: "gcd",
        category: "math",
        description: "The greatest common divisor of two integers (gcd(0, 0) is 0).",
        args: &[
            arg!("a", Integer, required, "First integer"),
            arg!("b", Integer, required, "Second integer"),
        ],
        returns: "integer",
        example: "gleitzeit run --function gcd --args a=48 b=18",
        blocking: false,
        run: gcd,
    },
    Function {
        name: "lcm",
        category: "math",
        description: "The least common multiple of two integers (0 when either is 0).",
        args: &[
            arg!("a", Integer, required, "First integer"),
            arg!("b", Integer, required, "Second integer"),
        ],
        returns: "integer",
        example: "gleitzeit run --function lcm --args a=4 b=6",
        blocking: false,
        run: lcm,
    },
    Function {
        name: "round_number",
        category: "math",
        description: "Rounds a number to a number of decimal places (negative places round to tens, hundreds, …); \
                      exact halves round to even, like Python's round().",
        args: &[
            arg!("value", Number, required, "The number to round"),
            arg!("decimals", Integer, default "0", "Decimal places, -15 to 15"),
        ],
        returns: "number",
        example: "gleitzeit run --function round_number --args value=1.23456 decimals=2",
        blocking: false,
        run: round_number,
    },
    Function {
        name: "percent_change",
        category: "math",
        description: "The change from `old` to `new` in percent of |old|: (new - old) / |old| * 100.",
        args: &[
            arg!("old", Number, required, "The starting value (not 0)"),
            arg!("new", Number, required, "The final value"),
        ],
        returns: "number",
        example: "gleitzeit run --function percent_change --args old=80 new=100",
        blocking: false,
        run: percent_change,
    },
];

pub(crate) const FIBONACCI_MAX: i64 = 186;

fn fibonacci(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("fibonacci", m);
    let n = a.int("n")?;
    if n < 0 {
        return Err(a.error("n", format!("must be 0 or more, got {n}")));
    }
    if n > FIBONACCI_MAX {
        return Err(a.error(
            "n",
            format!(
                "is {n}, but at most {FIBONACCI_MAX} Fibonacci numbers can be returned \
                 (later ones do not fit in 128-bit integers)"
            ),
        ));
    }
    let (mut x, mut y) = (0u128, 1u128);
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(match u64::try_from(x) {
            Ok(small) => Value::from(small),
            Err(_) => Value::String(x.to_string()),
        });
        // The look-ahead value overflows only after the last one returned.
        let next = x.checked_add(y).unwrap_or(0);
        x = y;
        y = next;
    }
    Ok(Value::Array(out))
}

/// Summary statistics of a non-empty slice.
pub(crate) struct Stats {
    pub count: usize,
    pub sum: f64,
    pub mean: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub variance: f64,
    pub std_dev: f64,
}

pub(crate) fn stats(values: &[f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    let count = values.len();
    let sum: f64 = values.iter().sum();
    let mean = if sum.is_finite() {
        sum / count as f64
    } else {
        // The sum overflowed; averaging scaled values still gives a finite mean.
        values.iter().map(|v| v / count as f64).sum()
    };
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = count / 2;
    let median = match (sorted.get(mid.wrapping_sub(1)), sorted.get(mid)) {
        (Some(lo), Some(hi)) if count.is_multiple_of(2) => lo / 2.0 + hi / 2.0,
        (_, Some(m)) => *m,
        _ => f64::NAN,
    };
    let min = sorted.first().copied().unwrap_or(f64::NAN);
    let max = sorted.last().copied().unwrap_or(f64::NAN);
    let variance = if count > 1 {
        values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (count - 1) as f64
    } else {
        0.0
    };
    Some(Stats {
        count,
        sum,
        mean,
        median,
        min,
        max,
        variance,
        std_dev: variance.sqrt(),
    })
}

impl Stats {
    /// As JSON; values that overflow f64 become null.
    pub fn to_json(&self) -> Value {
        json!({
            "count": self.count,
            "sum": num(self.sum),
            "mean": num(self.mean),
            "median": num(self.median),
            "min": num(self.min),
            "max": num(self.max),
            "std_dev": num(self.std_dev),
            "variance": num(self.variance),
        })
    }
}

fn analyze_numbers(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("analyze_numbers", m);
    let numbers = a.numbers("numbers")?;
    stats(&numbers)
        .map(|s| s.to_json())
        .ok_or_else(|| a.failed("`numbers` is empty; give at least one number"))
}

fn sum(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("sum", m);
    let total: f64 = a.numbers("numbers")?.iter().sum();
    if !total.is_finite() {
        return Err(a.failed("the sum is too large for a 64-bit floating-point number"));
    }
    Ok(num(total))
}

fn mean(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("mean", m);
    let numbers = a.numbers("numbers")?;
    let s = stats(&numbers).ok_or_else(|| a.failed("cannot take the mean of an empty list"))?;
    Ok(num(s.mean))
}

fn factorial(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("factorial", m);
    let n = a.int("n")?;
    if n < 0 {
        return Err(a.error("n", format!("must be 0 or more, got {n}")));
    }
    if n > 170 {
        return Err(a.error(
            "n",
            format!("is {n}, but {n}! exceeds the largest floating-point number (n at most 170)"),
        ));
    }
    if n <= 20 {
        let exact: u64 = (1..=n as u64).product();
        return Ok(Value::from(exact));
    }
    let approx: f64 = (1..=n).map(|k| k as f64).product();
    Ok(num(approx))
}

fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    ((a as u128 * b as u128) % m as u128) as u64
}

fn pow_mod(mut base: u64, mut exp: u64, m: u64) -> u64 {
    let mut result = 1 % m;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            result = mul_mod(result, base, m);
        }
        base = mul_mod(base, base, m);
        exp >>= 1;
    }
    result
}

/// Deterministic Miller–Rabin for 64-bit integers.
pub(crate) fn prime(n: u64) -> bool {
    const BASES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for p in BASES {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mut d = n - 1;
    let mut r = 0;
    while d.is_multiple_of(2) {
        d /= 2;
        r += 1;
    }
    'bases: for base in BASES {
        let mut x = pow_mod(base, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..r {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

fn is_prime(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("is_prime", m);
    let n = a.int("n")?;
    Ok(Value::Bool(n > 1 && prime(n as u64)))
}

pub(crate) const PRIMES_MAX: i64 = 10_000_000;

fn primes(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("primes", m);
    let n = a.int_in("n", 0, PRIMES_MAX)? as usize;
    if n < 2 {
        return Ok(Value::Array(Vec::new()));
    }
    let mut composite = vec![false; n + 1];
    let mut out = Vec::new();
    for i in 2..=n {
        if composite.get(i).copied().unwrap_or(true) {
            continue;
        }
        out.push(Value::from(i as u64));
        let mut multiple = i.saturating_mul(i);
        while multiple <= n {
            if let Some(slot) = composite.get_mut(multiple) {
                *slot = true;
            }
            multiple += i;
        }
    }
    Ok(Value::Array(out))
}

fn gcd_u64(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn gcd(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("gcd", m);
    let (x, y) = (a.int("a")?, a.int("b")?);
    Ok(Value::from(gcd_u64(x.unsigned_abs(), y.unsigned_abs())))
}

fn lcm(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("lcm", m);
    let (x, y) = (a.int("a")?.unsigned_abs(), a.int("b")?.unsigned_abs());
    if x == 0 || y == 0 {
        return Ok(Value::from(0));
    }
    (x / gcd_u64(x, y))
        .checked_mul(y)
        .map(Value::from)
        .ok_or_else(|| a.failed(format!("lcm({x}, {y}) does not fit in a 64-bit integer")))
}

pub(crate) fn round_to(value: f64, decimals: i64) -> f64 {
    if decimals >= 0 {
        // Formatting rounds the exact binary value, like Python's round().
        format!("{value:.*}", decimals as usize)
            .parse()
            .unwrap_or(value)
    } else {
        let scale = 10f64.powi(decimals.unsigned_abs() as i32);
        let rounded = (value / scale).round_ties_even() * scale;
        if rounded.is_finite() {
            rounded
        } else {
            value
        }
    }
}

fn round_number(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("round_number", m);
    let value = a.number("value")?;
    let decimals = a.int_in("decimals", -15, 15)?;
    Ok(num(round_to(value, decimals)))
}

fn percent_change(m: &Map<String, Value>, _: &FileGuard) -> Res {
    let a = Args::new("percent_change", m);
    let (old, new) = (a.number("old")?, a.number("new")?);
    if old == 0.0 {
        return Err(a.failed("cannot compute a percent change from 0 (`old` is 0)"));
    }
    let change = (new - old) / old.abs() * 100.0;
    if !change.is_finite() {
        return Err(a.failed("the percent change is too large for a 64-bit floating-point number"));
    }
    Ok(num(round_to(change, 10)))
}

#[cfg(test)]
mod tests {
    use crate::tests::{call, err_code};
    use gleitzeit_core::ErrorCode;
    use serde_json::json;

    #[test]
    fn fibonacci_lists_the_first_n() {
        assert_eq!(
            call("fibonacci", json!({"n": 10})).unwrap(),
            json!([0, 1, 1, 2, 3, 5, 8, 13, 21, 34])
        );
        assert_eq!(call("fibonacci", json!({"n": 0})).unwrap(), json!([]));
        let long = call("fibonacci", json!({"n": 186})).unwrap();
        let list = long.as_array().unwrap();
        assert_eq!(list.len(), 186);
        assert_eq!(
            list[93],
            json!(12200160415121876738u64),
            "F(93) is the last u64"
        );
        assert_eq!(list[94], json!("19740274219868223167"));
        assert_eq!(list[185], json!("205697230343233228174223751303346572685"));
        let error = call("fibonacci", json!({"n": 187})).unwrap_err();
        assert_eq!(error.code, ErrorCode::FunctionArgumentInvalid);
        assert!(error.message.contains("186"), "{}", error.message);
        assert_eq!(
            err_code("fibonacci", json!({"n": 10_000})),
            ErrorCode::FunctionArgumentInvalid
        );
        assert_eq!(
            err_code("fibonacci", json!({"n": -1})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn analyze_numbers_summarises() {
        let out = call(
            "analyze_numbers",
            json!({"numbers": [2, 4, 4, 4, 5, 5, 7, 9]}),
        )
        .unwrap();
        assert_eq!(out["count"], 8);
        assert_eq!(out["sum"], 40);
        assert_eq!(out["mean"], 5);
        assert_eq!(out["median"], 4.5);
        assert_eq!(out["min"], 2);
        assert_eq!(out["max"], 9);
        let variance = out["variance"].as_f64().unwrap();
        assert!((variance - 32.0 / 7.0).abs() < 1e-12);
        assert!((out["std_dev"].as_f64().unwrap() - variance.sqrt()).abs() < 1e-12);
        let one = call("analyze_numbers", json!({"numbers": "7"})).unwrap();
        assert_eq!(
            (one["median"].clone(), one["variance"].clone()),
            (json!(7), json!(0))
        );
        assert_eq!(
            err_code("analyze_numbers", json!({"numbers": []})),
            ErrorCode::FunctionFailed
        );
        let bad = call("analyze_numbers", json!({"numbers": [1, "x"]})).unwrap_err();
        assert_eq!(bad.code, ErrorCode::FunctionArgumentInvalid);
        assert!(bad.message.contains("item 1"), "{}", bad.message);
    }

    #[test]
    fn sum_and_mean() {
        assert_eq!(
            call("sum", json!({"numbers": "1,2,3.5"})).unwrap(),
            json!(6.5)
        );
        assert_eq!(call("sum", json!({"numbers": []})).unwrap(), json!(0));
        assert_eq!(
            err_code("sum", json!({"numbers": [1e308, 1e308]})),
            ErrorCode::FunctionFailed
        );
        assert_eq!(
            call("mean", json!({"numbers": [2, 4, 9]})).unwrap(),
            json!(5)
        );
        assert_eq!(
            call("mean", json!({"numbers": [1e308, 1e308]})).unwrap(),
            json!(1e308)
        );
        assert_eq!(
            err_code("mean", json!({"numbers": []})),
            ErrorCode::FunctionFailed
        );
    }

    #[test]
    fn factorial_exact_then_approximate() {
        assert_eq!(call("factorial", json!({"n": 0})).unwrap(), json!(1));
        assert_eq!(call("factorial", json!({"n": 10})).unwrap(), json!(3628800));
        assert_eq!(
            call("factorial", json!({"n": 20})).unwrap(),
            json!(2432902008176640000u64)
        );
        let big = call("factorial", json!({"n": 170}))
            .unwrap()
            .as_f64()
            .unwrap();
        assert!(big > 7.25e306 && big < 7.26e306);
        assert_eq!(
            err_code("factorial", json!({"n": 1000})),
            ErrorCode::FunctionArgumentInvalid
        );
        assert_eq!(
            err_code("factorial", json!({"n": -3})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn primality() {
        assert_eq!(call("is_prime", json!({"n": 97})).unwrap(), json!(true));
        assert_eq!(call("is_prime", json!({"n": 1})).unwrap(), json!(false));
        assert_eq!(call("is_prime", json!({"n": -7})).unwrap(), json!(false));
        assert_eq!(
            call("is_prime", json!({"n": 561})).unwrap(),
            json!(false),
            "Carmichael number"
        );
        assert_eq!(
            call("is_prime", json!({"n": 9223372036854775783i64})).unwrap(),
            json!(true)
        );
        assert_eq!(
            call("is_prime", json!({"n": i64::MAX})).unwrap(),
            json!(false)
        );
    }

    #[test]
    fn primes_up_to_n() {
        assert_eq!(
            call("primes", json!({"n": 30})).unwrap(),
            json!([2, 3, 5, 7, 11, 13, 17, 19, 23, 29])
        );
        assert_eq!(call("primes", json!({"n": 2})).unwrap(), json!([2]));
        assert_eq!(call("primes", json!({"n": 1})).unwrap(), json!([]));
        assert_eq!(
            call("primes", json!({"n": 100_000}))
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            9592
        );
        assert_eq!(
            err_code("primes", json!({"n": 10_000_001})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn gcd_and_lcm() {
        assert_eq!(call("gcd", json!({"a": 48, "b": 18})).unwrap(), json!(6));
        assert_eq!(call("gcd", json!({"a": -48, "b": 0})).unwrap(), json!(48));
        assert_eq!(
            call("gcd", json!({"a": i64::MIN, "b": 0})).unwrap(),
            json!(9223372036854775808u64)
        );
        assert_eq!(call("lcm", json!({"a": 4, "b": 6})).unwrap(), json!(12));
        assert_eq!(call("lcm", json!({"a": 0, "b": 6})).unwrap(), json!(0));
        assert_eq!(
            err_code("lcm", json!({"a": i64::MAX, "b": i64::MAX - 1})),
            ErrorCode::FunctionFailed
        );
    }

    #[test]
    fn rounding() {
        assert_eq!(
            call("round_number", json!({"value": 1.23456, "decimals": 2})).unwrap(),
            json!(1.23)
        );
        assert_eq!(
            call("round_number", json!({"value": 2.5})).unwrap(),
            json!(2),
            "halves to even"
        );
        assert_eq!(
            call("round_number", json!({"value": 3.5})).unwrap(),
            json!(4)
        );
        assert_eq!(
            call("round_number", json!({"value": 2.675, "decimals": 2})).unwrap(),
            json!(2.67),
            "binary value"
        );
        assert_eq!(
            call("round_number", json!({"value": 250, "decimals": -2})).unwrap(),
            json!(200)
        );
        assert_eq!(
            call("round_number", json!({"value": 1234.5, "decimals": -2})).unwrap(),
            json!(1200)
        );
        assert_eq!(
            call("round_number", json!({"value": 1e308, "decimals": 15})).unwrap(),
            json!(1e308)
        );
        assert_eq!(
            err_code("round_number", json!({"value": 1, "decimals": 99})),
            ErrorCode::FunctionArgumentInvalid
        );
    }

    #[test]
    fn percent_changes() {
        assert_eq!(
            call("percent_change", json!({"old": 80, "new": 100})).unwrap(),
            json!(25)
        );
        assert_eq!(
            call("percent_change", json!({"old": -50, "new": -25})).unwrap(),
            json!(50)
        );
        assert_eq!(
            call("percent_change", json!({"old": 3, "new": 1})).unwrap(),
            json!(-66.6666666667)
        );
        assert_eq!(
            err_code("percent_change", json!({"old": 0, "new": 5})),
            ErrorCode::FunctionFailed
        );
    }
}
