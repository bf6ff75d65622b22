//! The fuzz targets on the stable toolchain: every file of `fuzz/corpus/<target>`
//! (seeded from the examples and the YAML in tests, plus every crash found,
//! under `regressions/`), then a few thousand mutations of corpus entries and
//! token soups, through the same bodies `cargo fuzz` runs
//! (`gleitzeit_core::fuzzing`). Any panic fails the test.

use gleitzeit_core::fuzzing;
use proptest::prelude::*;
use std::path::PathBuf;
use std::sync::OnceLock;

type Body = fn(&[u8]);

const TARGETS: &[(&str, Body)] = &[
    ("workflow", fuzzing::workflow),
    ("references", fuzzing::references),
    ("when_expr", fuzzing::when_expr),
    ("api_body", fuzzing::api_body),
    ("yaml_nesting", fuzzing::yaml_nesting),
];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn read_dir(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_file() {
            out.push(std::fs::read(&path).unwrap());
        }
    }
    out
}

/// Every seed of every target: mutations of one target's seeds are good
/// inputs for the others too.
fn all_seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut all = Vec::new();
        for (name, _) in TARGETS {
            all.extend(read_dir(&corpus_dir().join(name)));
        }
        all.extend(read_dir(&corpus_dir().join("regressions")));
        all
    })
}

#[test]
fn corpus_replays_without_panics() {
    let mut total = 0;
    for (name, body) in TARGETS {
        let files = read_dir(&corpus_dir().join(name));
        assert!(!files.is_empty(), "fuzz/corpus/{name} is empty");
        for data in &files {
            body(data);
        }
        total += files.len();
    }
    // Crashes found by fuzzing are kept here and fed to every target.
    for data in read_dir(&corpus_dir().join("regressions")) {
        for (_, body) in TARGETS {
            body(&data);
        }
        total += 1;
    }
    assert!(total > 100, "only {total} corpus files");
}

const TOKENS: &[&str] = &[
    "${",
    "}",
    "{{",
    "}}",
    "${a",
    "${a.result",
    ".result",
    "[0]",
    "[-1]",
    "['k']",
    "[\"k\"]",
    " | json",
    " | raw",
    " | trim",
    " | code",
    " | default(1)",
    "|",
    "inputs.",
    "item",
    "index",
    "env.HOME",
    "a",
    "b",
    "==",
    "!=",
    "<",
    ">=",
    " and ",
    " or ",
    "not ",
    "in",
    "(",
    ")",
    "[",
    "]",
    ",",
    "'",
    "\"",
    "\\",
    "1",
    "-1",
    "1e999",
    "0.5",
    "true",
    "null",
    "\n",
    "  ",
    "- ",
    "tasks:",
    "id: ",
    "method: ",
    "python/execute",
    "function/call",
    "llm/chat",
    "params:",
    "dependencies: [",
    "when: ",
    "for_each: ",
    "retry:",
    "max_attempts: ",
    "on_error: ",
    "inputs:",
    "name: w",
    "&x",
    "*x",
    "!!str",
    "<<: ",
    "? ",
    "---",
    "...",
    "#",
    "é",
    "\u{0}",
    "workflow/run",
    "timeout: ",
    "cache:",
    "ttl: ",
    "priority: ",
    "code: ",
    "\t",
];

fn soup() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Flip(p, b)),
        (any::<usize>(), soup()).prop_map(|(p, s)| Edit::Insert(p, s)),
        (any::<usize>(), 1usize..32).prop_map(|(p, n)| Edit::Delete(p, n)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Duplicate(p, n)),
    ]
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (any::<usize>(), proptest::collection::vec(edit(), 1..6)).prop_map(|(pick, edits)| {
        let seeds = all_seeds();
        let mut data = seeds[pick % seeds.len()].clone();
        for e in edits {
            let len = data.len();
            let at = |p: usize| if len == 0 { 0 } else { p % (len + 1) };
            match e {
                Edit::Flip(p, b) if len > 0 => data[p % len] ^= b,
                Edit::Flip(..) => {}
                Edit::Insert(p, s) => {
                    let p = at(p);
                    data.splice(p..p, s);
                }
                Edit::Delete(p, n) => {
                    let p = at(p);
                    let end = (p + n).min(len);
                    data.drain(p..end);
                }
                Edit::Truncate(p) => data.truncate(at(p)),
                Edit::Duplicate(p, n) => {
                    let p = at(p);
                    let end = (p + n).min(len);
                    let piece = data[p..end].to_vec();
                    data.splice(p..p, piece);
                }
            }
        }
        data
    })
}

fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => mutated(), 1 => soup()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn workflow_parser_never_panics(data in input()) {
        fuzzing::workflow(&data);
        fuzzing::api_body(&data);
    }

    #[test]
    fn nesting_programs_stay_within_the_limits(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        fuzzing::yaml_nesting(&data);
    }

    #[test]
    fn references_and_conditions_never_panic(data in input()) {
        fuzzing::references(&data);
        fuzzing::when_expr(&data);
    }
}

/// The three documents of the hostile-input report, each refused with a GZ
/// code (deep nesting, alias nesting that overflowed the stack, billion laughs).
#[test]
fn the_reported_hostile_documents_are_refused_with_a_limit_code() {
    use gleitzeit_core::{parse, ErrorCode};
    for name in [
        "deep-150-parameter.yaml",
        "alias-nesting-stack.yaml",
        "billion-laughs.yaml",
    ] {
        let text = std::fs::read_to_string(corpus_dir().join("regressions").join(name)).unwrap();
        let problems =
            parse::load(&text, name, &fuzzing::FuzzCatalog, &Default::default()).expect_err(name);
        assert_eq!(
            problems[0].code,
            ErrorCode::InputLimitExceeded,
            "{name}: {problems:#?}"
        );
    }
}
