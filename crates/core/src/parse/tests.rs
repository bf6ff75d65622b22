use super::*;
use crate::model::{CachePolicy, ForEach, OnError, OnSkip, Priority};
use expect_test::{expect, Expect};

struct TestCatalog;

impl MethodCatalog for TestCatalog {
    fn has_method(&self, method: &str) -> bool {
        CORE_METHODS.contains(&method)
    }
    fn has_function(&self, name: &str) -> bool {
        matches!(name, "fibonacci" | "count_words")
    }
    fn all_names(&self) -> Vec<String> {
        CORE_METHODS
            .iter()
            .map(|s| s.to_string())
            .chain(["fibonacci".into(), "count_words".into()])
            .collect()
    }
}

fn load_ok(text: &str) -> Workflow {
    match load(text, "flow.yaml", &TestCatalog, &Map::new()) {
        Ok(w) => w,
        Err(d) => panic!("unexpected problems: {d:#?}"),
    }
}

/// Prints every diagnostic as `line:col CODE message [hint]`.
fn check_problems(text: &str, expected: Expect) {
    let problems =
        load(text, "flow.yaml", &TestCatalog, &Map::new()).expect_err("should not validate");
    let rendered: String = problems
        .iter()
        .map(|d| {
            let hint = d
                .hint
                .as_deref()
                .map(|h| format!(" [{h}]"))
                .unwrap_or_default();
            format!(
                "{}:{} {} {}{}\n",
                d.pos.line, d.pos.column, d.code, d.message, hint
            )
        })
        .collect();
    expected.assert_eq(&rendered);
}

#[test]
fn seed_001_example_parses_with_names_protocol_and_retry() {
    let workflow = load_ok(
        r#"
name: "Example Workflow"
description: "Demonstrates Python and LLM tasks"
tasks:
  - name: "Generate Data"
    protocol: "python/v1"
    method: "python/execute"
    parameters:
      code: |
        result = {'numbers': [1, 2]}
      timeout: 10
    priority: "high"
  - name: "Process Results"
    protocol: "python/v1"
    method: "python/execute"
    parameters:
      code: |
        data = ${Generate Data.result.result}
    dependencies: ["Generate Data"]
    priority: "normal"
    retry:
      max_attempts: 3
      base_delay: 1.0
      strategy: "exponential"
"#,
    );
    assert_eq!(workflow.tasks.len(), 2);
    let second = &workflow.tasks[1];
    assert_eq!(second.id, "Process Results");
    assert_eq!(second.dependencies, vec!["Generate Data".to_string()]);
    assert_eq!(second.retry.max_attempts, 3);
    assert_eq!(workflow.tasks[0].priority, Priority::High);
}

#[test]
fn synonyms_ids_defaults_and_bare_function_names() {
    let workflow = load_ok(
        r#"
name: syn
defaults: {timeout: 7, priority: low, model: llama3.2, retry: {max_attempts: 2}}
inputs: {n: 5}
tasks:
  - id: fib
    name: Fibonacci numbers
    method: fibonacci
    params: {n: "${inputs.n}"}
  - id: chat
    method: llm/chat
    depends_on: [Fibonacci numbers]
    params: {prompt: "numbers: ${fib}"}
  - id: call
    method: function/count_words
    depends_on: fib
    on_error: continue
    timeout: 2.5
"#,
    );
    let fib = &workflow.tasks[0];
    assert_eq!(fib.method, "function/call");
    assert_eq!(fib.params["function"], "fibonacci");
    assert_eq!(fib.timeout, Some(7.0));
    assert_eq!(fib.priority, Priority::Low);
    assert_eq!(fib.retry.max_attempts, 2);
    let chat = &workflow.tasks[1];
    assert_eq!(chat.dependencies, vec!["fib".to_string()]);
    assert_eq!(
        chat.params["model"], "llama3.2",
        "llm tasks get default model"
    );
    assert!(fib.params.get("model").is_none(), "non-llm tasks do not");
    let call = &workflow.tasks[2];
    assert_eq!(call.params["function"], "count_words");
    assert_eq!(call.on_error, OnError::Continue);
    assert_eq!(call.timeout, Some(2.5));
}

#[test]
fn protocol_without_prefix_on_method() {
    let workflow = load_ok("name: x\ntasks:\n  - id: a\n    protocol: python/v1\n    method: execute\n    parameters: {code: 'result = 1'}\n");
    assert_eq!(workflow.tasks[0].method, "python/execute");
}

#[test]
fn json_workflows_are_accepted() {
    let workflow = load_ok(
        r#"{"name": "j", "tasks": [{"id": "a", "method": "python/execute", "params": {"code": "result = 1"}}]}"#,
    );
    assert_eq!(workflow.tasks[0].id, "a");
}

#[test]
fn input_overrides_replace_declared_inputs() {
    let mut overrides = Map::new();
    overrides.insert("topic".into(), Value::from("Go"));
    let workflow = load(
        "name: x\ninputs: {topic: Rust}\ntasks:\n  - {id: a, method: python/execute, params: {code: '${inputs.topic}'}}\n",
        "f",
        &TestCatalog,
        &overrides,
    )
    .unwrap();
    assert_eq!(workflow.inputs["topic"], "Go");
    assert_eq!(
        parse_input_override("n=5").unwrap(),
        ("n".into(), Value::from(5))
    );
    assert_eq!(
        parse_input_override("s=hello world").unwrap().1,
        Value::from("hello world")
    );
    assert_eq!(
        parse_input_override("novalue").unwrap_err().code,
        ErrorCode::InvalidInput
    );
}

#[test]
fn unknown_keys_get_suggestions() {
    check_problems(
        "name: x\ntaks: []\ntasks:\n  - id: a\n    methd: python/execute\n    method: python/execute\n    dependancies: []\n",
        expect![[r#"
            2:1 GZ3002 unknown workflow key `taks` [Did you mean `tasks`?]
            5:5 GZ3002 unknown task key `methd` [Did you mean `method`?]
            7:5 GZ3002 unknown task key `dependancies` [Did you mean `dependencies`?]
        "#]],
    );
}

#[test]
fn missing_dependency_duplicate_and_unknown_method_all_reported_at_once() {
    check_problems(
        r#"name: x
tasks:
  - id: a
    method: python/execute
    dependencies: [b_typo]
  - id: b
    method: python/exec
  - id: a
    method: fibonaci
"#,
        expect![[r#"
            5:20 GZ3006 task `a` depends on `b_typo`, which is not a task in this workflow
            7:13 GZ3008 unknown method `python/exec` [Did you mean `python/execute`?]
            8:5 GZ3005 task `a` is defined twice (first at line 3)
            9:13 GZ3008 unknown method `fibonaci` [Did you mean `fibonacci`?]
        "#]],
    );
}

#[test]
fn cycles_are_printed() {
    check_problems(
        r#"name: x
tasks:
  - {id: a, method: python/execute, dependencies: [c]}
  - {id: b, method: python/execute, dependencies: [a]}
  - {id: c, method: python/execute, dependencies: [b]}
  - {id: d, method: python/execute, dependencies: [d]}
"#,
        expect![[r#"
            3:5 GZ3007 dependency cycle: a -> c -> b -> a
            6:52 GZ3007 task `d` depends on itself
        "#]],
    );
}

#[test]
fn references_must_point_at_ancestors_and_known_names() {
    check_problems(
        r#"name: x
tasks:
  - id: a
    method: python/execute
    params: {code: "x = ${b.result}"}
  - id: b
    method: python/execute
    params: {code: "x = ${nobody.result} + ${inputs.missing}"}
  - id: c
    method: python/execute
    dependencies: [b]
    params: {code: "${a | shout}"}
"#,
        expect![[r#"
            5:20 GZ3009 task `a` refers to `b.result` but does not depend on task `b` [Add `b` to this task's `dependencies`.]
            8:20 GZ3012 reference `nobody.result` names no task or input `nobody`
            8:20 GZ3024 reference `inputs.missing` names no workflow input `missing` [Declare it under `inputs:` or pass --input NAME=VALUE.]
            12:20 GZ3013 invalid reference `a | shout`: unknown filter `shout`; filters are json, raw, trim, code, default("x")
        "#]],
    );
}

#[test]
fn bad_retry_values() {
    check_problems(
        r#"name: x
tasks:
  - id: a
    method: python/execute
    retry: {max_attempts: 0, base_delay: -1, strategy: quadratic, jitter: maybe, retry_on: [GZ9999]}
  - id: b
    method: python/execute
    retry: {base_delay: 10, max_delay: 1}
"#,
        expect![[r#"
            5:27 GZ3010 retry.max_attempts must be between 1 and 1000, not 0
            5:42 GZ3010 retry.base_delay must be zero or more seconds, not -1
            5:56 GZ3010 retry.strategy must be one of exponential, linear, fixed, not `quadratic`
            5:75 GZ3004 `retry.jitter` must be true or false, not string
            5:93 GZ3010 retry.retry_on: `GZ9999` is not an error code [Codes look like GZ2002; `gleitzeit errors list` shows them.]
            8:12 GZ3010 retry.max_delay (1) is smaller than retry.base_delay (10)
        "#]],
    );
}

#[test]
fn empty_and_malformed_files() {
    check_problems(
        "name: x\ntasks: []\n",
        expect![[r#"
        2:8 GZ3011 workflow has no tasks
    "#]],
    );
    check_problems(
        "",
        expect![[r#"
        1:1 GZ3011 workflow file is empty
    "#]],
    );
    check_problems(
        "name: x\ntasks:\n  - id: a\n   method: x\n",
        expect![[r#"
        4:4 GZ3001 syntax error: while parsing a block collection, did not find expected '-' indicator
    "#]],
    );
    check_problems(
        "- just\n- a list\n",
        expect![[r#"
        1:1 GZ3004 `the workflow` must be a mapping with `name` and `tasks`, not list
    "#]],
    );
    check_problems(
        "tasks:\n  - method: python/execute\n    priority: asap\n",
        expect![[r#"
        1:1 GZ3003 workflow has no `name` [Add `name: "My workflow"` at the top.]
        2:5 GZ3003 task #1 has neither `id` nor `name`
        3:15 GZ3014 `priority` must be one of low, normal, high, urgent, not `asap`
    "#]],
    );
}

#[test]
fn protocol_must_match_method() {
    check_problems(
        "name: x\ntasks:\n  - id: a\n    protocol: llm/v1\n    method: python/execute\n",
        expect![[r#"
            4:15 GZ3008 protocol `llm` does not match method `python/execute` [Use protocol `python/v1` or drop `protocol:`; it is inferred from the method.]
        "#]],
    );
}

#[test]
fn when_on_skip_for_each_and_max_parallel_parse() {
    let workflow = load_ok(
        r#"
name: flow
inputs: {n: 3}
tasks:
  - id: check
    method: python/execute
    params: {code: "result = True"}
  - id: gated
    method: python/execute
    when: "${check.result} == true and ${inputs.n} > 2"
    dependencies: [check]
    params: {code: "result = 1"}
  - id: after
    method: python/execute
    dependencies: [gated]
    on_skip: run
    params: {code: "result = ${gated.result}"}
  - id: each
    method: python/execute
    for_each: [a, b]
    max_parallel: 2
    params: {code: "result = ${item} * ${index}"}
  - id: counted
    method: python/execute
    for_each: "range(${inputs.n})"
    params: {code: "result = ${item}"}
  - id: over
    method: python/execute
    dependencies: [each]
    for_each: "${each.result}"
    when: true
    params: {code: "result = ${item}"}
"#,
    );
    let t = &workflow.tasks;
    assert_eq!(
        t[1].when.as_deref(),
        Some("${check.result} == true and ${inputs.n} > 2")
    );
    assert_eq!(t[2].on_skip, OnSkip::Run);
    assert_eq!(
        t[3].for_each,
        Some(ForEach::Items(vec!["a".into(), "b".into()]))
    );
    assert_eq!(t[3].max_parallel, Some(2));
    assert_eq!(
        t[4].for_each,
        Some(ForEach::Range(Value::String("${inputs.n}".into())))
    );
    assert_eq!(t[5].for_each, Some(ForEach::Ref("${each.result}".into())));
    assert_eq!(t[5].when.as_deref(), Some("true"));
}

#[test]
fn when_and_for_each_problems_have_positions_and_hints() {
    check_problems(
        r#"
name: flow
tasks:
  - id: check
    method: python/execute
  - id: gated
    method: python/execute
    dependencies: [check]
    when: "${check.result} = true"
  - id: unrelated
    method: python/execute
    when: ${check.result}
  - id: loose
    method: python/execute
    when: "${item} == 1"
    params: {code: "x = ${index}"}
  - id: fan
    method: python/execute
    for_each: "not a list"
    max_parallel: 0
  - id: fan2
    method: python/execute
    for_each: {a: 1}
  - id: fan3
    method: python/execute
    for_each: "range(many)"
  - id: lone
    method: python/execute
    max_parallel: 4
    on_skip: maybe
"#,
        expect![[r#"
            9:28 GZ3025 invalid `when` condition: unexpected `=` (compare with `==`) [Write conditions like `${check.result} == true and ${inputs.n} > 3`: references, quoted text, numbers, true/false/null, [lists], ==, !=, <, <=, >, >=, in, not in, and, or, not, parentheses.]
            12:11 GZ3009 task `unrelated` refers to `check.result` but does not depend on task `check` [Add `check` to this task's `dependencies`.]
            15:11 GZ3013 `item` is only defined in the parameters of `for_each` tasks
            16:20 GZ3013 `index` is only defined in the parameters of `for_each` tasks
            19:15 GZ3027 `for_each` must be a list, `range(N)` or one reference to a list, not the text `not a list` [e.g. `for_each: [a, b]`, `for_each: range(10)` or `for_each: "${list.result}"`.]
            20:19 GZ3014 `max_parallel` must be at least 1, not 0
            23:15 GZ3027 `for_each` must be a list, `range(N)` or one reference to a list, not a mapping [e.g. `for_each: [a, b]`, `for_each: range(10)` or `for_each: "${list.result}"`.]
            26:15 GZ3027 `for_each` must be a list, `range(N)` or one reference to a list, not `range(many)`: range takes a whole number or one reference [e.g. `for_each: [a, b]`, `for_each: range(10)` or `for_each: "${list.result}"`.]
            29:19 GZ3014 task `lone` sets `max_parallel` without `for_each` [`max_parallel` limits the instances of a `for_each` task.]
            30:14 GZ3014 `on_skip` must be one of skip, run, not `maybe`
        "#]],
    );
}

#[test]
fn cache_true_ttl_and_key() {
    let workflow = load_ok(
        r#"
name: f
inputs: {q: x}
tasks:
  - {id: a, method: python/execute, cache: true}
  - {id: b, method: python/execute, cache: {ttl: 1h30m, key: "q=${inputs.q}"}}
  - {id: c, method: python/execute, cache: false}
  - {id: d, method: python/execute, cache: {ttl: 90}}
"#,
    );
    let t = &workflow.tasks;
    assert_eq!(t[0].cache, Some(CachePolicy::default()));
    assert_eq!(
        t[1].cache,
        Some(CachePolicy {
            ttl: Some(5400.0),
            key: Some("q=${inputs.q}".into())
        })
    );
    assert_eq!(t[2].cache, None);
    assert_eq!(t[3].cache.as_ref().and_then(|c| c.ttl), Some(90.0));
    assert_eq!(parse_duration("500ms"), Some(0.5));
    assert_eq!(parse_duration("7d"), Some(604800.0));
    assert_eq!(parse_duration("1 h"), Some(3600.0));
    assert_eq!(parse_duration("soon"), None);
    assert_eq!(parse_duration(""), None);
}

#[test]
fn cache_problems() {
    check_problems(
        "name: f\ntasks:\n  - id: a\n    method: python/execute\n    cache: {ttl: soon, keep: 1, key: \"${b}\"}\n  - {id: b, method: python/execute, cache: yes}\n",
        expect![[r#"
            5:12 GZ3009 task `a` refers to `b` but does not depend on task `b` [Add `b` to this task's `dependencies`.]
            5:18 GZ3014 cache.ttl must be a positive duration, not `soon` [Write seconds (3600) or a duration: 90s, 15m, 1h, 7d, 1h30m.]
            5:24 GZ3002 unknown cache key `keep` [Did you mean `key`?]
            6:44 GZ3004 `cache` must be true, false or a mapping like {ttl: 1h}, not string
        "#]],
    );
}

/// Files by name, for sub-workflow tests.
struct Files(&'static [(&'static str, &'static str)]);

impl Includes for Files {
    fn read(&self, _from: &str, path: &str) -> Result<(String, String), GzError> {
        let name = path.trim_start_matches("./");
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, text)| (text.to_string(), n.to_string()))
            .ok_or_else(|| GzError::new(ErrorCode::FileNotFound, format!("no file {path}")))
    }
}

#[test]
fn sub_workflows_are_embedded_and_outputs_parsed() {
    let files = Files(&[(
        "child.yaml",
        "name: child\ninputs: {n: 1}\ntasks:\n  - {id: t, method: python/execute}\noutputs:\n  out: \"${t.result}\"\n",
    )]);
    let workflow = load_with(
        "name: p\ntasks:\n  - {id: c, method: workflow/run, params: {file: child.yaml, inputs: {n: 2}}}\n",
        "parent.yaml",
        &TestCatalog,
        &Map::new(),
        &files,
        &crate::limits::Limits::default(),
    )
    .unwrap_or_else(|d| panic!("{d:#?}"));
    let child: Workflow =
        serde_json::from_value(workflow.tasks[0].params["workflow"].clone()).unwrap();
    assert_eq!(child.name, "child");
    assert_eq!(child.outputs["out"], "${t.result}");
}

#[test]
fn sub_workflow_problems() {
    let files = Files(&[
        ("a.yaml", "name: a\ntasks:\n  - {id: x, method: workflow/run, params: {file: b.yaml}}\n"),
        ("b.yaml", "name: b\ntasks:\n  - {id: y, method: workflow/run, params: {file: ./a.yaml}}\noutputs: {o: \"${nobody}\"}\n"),
    ]);
    let problems = load_with(
        "name: top\ntasks:\n  - {id: x, method: workflow/run, params: {file: a.yaml}}\n  - {id: y, method: workflow/run}\n  - {id: z, method: workflow/run, params: {file: gone.yaml}}\n",
        "top.yaml",
        &TestCatalog,
        &Map::new(),
        &files,
        &crate::limits::Limits::default(),
    )
    .unwrap_err();
    let rendered: Vec<String> = problems.iter().map(|d| d.to_string()).collect();
    expect![[r#"
        [
            "b.yaml:3:50: GZ3028 sub-workflow cycle: a.yaml -> b.yaml -> a.yaml",
            "top.yaml:4:5: GZ3003 task `y` runs a sub-workflow but names no `file`",
            "b.yaml:4:14: GZ3012 reference `nobody` names no task or input `nobody`",
            "top.yaml:5:50: GZ5001 no file gone.yaml",
        ]
    "#]]
    .assert_debug_eq(&rendered);
    // Without file access (the server), sub-workflows are refused.
    let problems = load(
        "name: top\ntasks:\n  - {id: x, method: workflow/run, params: {file: a.yaml}}\n",
        "request",
        &TestCatalog,
        &Map::new(),
    )
    .unwrap_err();
    assert!(problems[0].message.contains("only be loaded from files"));
}

#[test]
fn requires_routes_by_gpu_and_labels() {
    let wf = load_ok(
        "name: r\ntasks:\n  - id: a\n    method: python/execute\n    requires: {gpu: true, labels: {region: eu, tier: 2}}\n    parameters: {code: 'result = 1'}\n  - id: b\n    method: python/execute\n    parameters: {code: 'result = 1'}\n",
    );
    let a = &wf.tasks[0].requires;
    assert!(a.gpu);
    assert_eq!(a.route_key(), "gpu,region=eu,tier=2");
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("region".to_string(), "eu".to_string());
    assert!(!a.satisfied_by(true, &labels), "tier is missing");
    labels.insert("tier".to_string(), "2".to_string());
    assert!(a.satisfied_by(true, &labels));
    assert!(!a.satisfied_by(false, &labels), "needs a GPU");
    assert!(wf.tasks[1].requires.is_empty());
    assert_eq!(wf.tasks[1].requires.route_key(), "");
    assert!(wf.tasks[1]
        .requires
        .satisfied_by(false, &Default::default()));
}

#[test]
fn bad_requires_values() {
    check_problems(
        "name: r\ntasks:\n  - id: a\n    method: python/execute\n    requires: {gpu: yes please, labels: {region: 'e u'}, cpu: 4}\n",
        expect![[r#"
            5:21 GZ3004 `requires.gpu` must be true or false, not string
            5:50 GZ3014 label `region` needs a short text value without `,`, `=`, `:` or spaces [Labels match `gleitzeit worker --labels key=value`.]
            5:58 GZ3002 unknown requires key `cpu` [Did you mean `gpu`?]
        "#]],
    );
    check_problems(
        "name: r\ntasks:\n  - id: a\n    method: python/execute\n    requires: gpu\n",
        expect![[r#"
            5:15 GZ3004 `requires` must be a mapping like {gpu: true, labels: {region: eu}}, not string
        "#]],
    );
}

// ---- Hostile input: every limit refuses with its code, never a crash ----

fn nested_param(levels: usize) -> String {
    format!(
        "name: deep\ntasks:\n  - id: t\n    method: python/execute\n    parameters: {{code: x, value: {}1{}}}\n",
        "[".repeat(levels),
        "]".repeat(levels)
    )
}

fn only_code(result: Result<Workflow, Vec<Diagnostic>>) -> (ErrorCode, String) {
    let problems = result.expect_err("must be refused");
    let first = &problems[0];
    (first.code, format!("{} {:?}", first.message, first.hint))
}

#[test]
fn a_parameter_nested_150_deep_is_refused_before_it_is_stored() {
    let (code, text) = only_code(load(
        &nested_param(150),
        "deep.yaml",
        &TestCatalog,
        &Map::new(),
    ));
    assert_eq!(code, ErrorCode::InputLimitExceeded);
    assert!(
        text.contains("64 levels") && text.contains("limits.max_depth"),
        "{text}"
    );
    // Within the limit it loads, and the stored form reads back.
    let workflow = load(&nested_param(50), "ok.yaml", &TestCatalog, &Map::new())
        .unwrap_or_else(|d| panic!("{d:#?}"));
    let text = serde_json::to_string(&workflow).unwrap();
    assert!(serde_json::from_str::<Workflow>(&text).is_ok());
}

#[test]
fn aliases_that_nest_past_the_limit_are_refused() {
    // Each anchor wraps the previous alias in 20 brackets: 40 of them nest
    // 800 levels although no single line is deep.
    let mut text = String::from("name: x\nlevels:\n  - &a0 1\n");
    for i in 1..40 {
        text.push_str(&format!(
            "  - &a{i} {}*a{}{}\n",
            "[".repeat(20),
            i - 1,
            "]".repeat(20)
        ));
    }
    text.push_str("tasks:\n  - {id: t, method: python/execute, parameters: {code: x, v: *a39}}\n");
    let (code, text) = only_code(load(&text, "alias.yaml", &TestCatalog, &Map::new()));
    assert_eq!(code, ErrorCode::InputLimitExceeded);
    assert!(text.contains("limits.max_depth"), "{text}");
}

#[test]
fn billion_laughs_is_refused_by_alias_expansion() {
    let mut text =
        String::from("name: lol\nx0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let aliases = vec![format!("*x{}", i - 1); 10].join(", ");
        text.push_str(&format!("x{i}: &x{i} [{aliases}]\n"));
    }
    text.push_str("tasks:\n  - {id: t, method: python/execute, parameters: {code: x, v: *x8}}\n");
    let (code, text) = only_code(load(&text, "lol.yaml", &TestCatalog, &Map::new()));
    assert_eq!(code, ErrorCode::InputLimitExceeded);
    assert!(text.contains("limits.max_alias_expansion"), "{text}");
}

#[test]
fn modest_reuse_through_aliases_still_loads() {
    let mut text = String::from(
        "name: reuse\ndefaults_block: &d {code: \"result = 1\", timeout: 5}\ntasks:\n",
    );
    for i in 0..300 {
        text.push_str(&format!(
            "  - {{id: t{i}, method: python/execute, parameters: *d}}\n"
        ));
    }
    let workflow = load(&text, "reuse.yaml", &TestCatalog, &Map::new());
    // `defaults_block` is an unknown key, so the load reports that, not a limit.
    let problems = workflow.expect_err("unknown key");
    assert!(
        problems.iter().all(|p| p.code == ErrorCode::UnknownKey),
        "{problems:#?}"
    );
}

#[test]
fn task_count_and_id_length_limits_name_their_settings() {
    let limits = crate::limits::Limits {
        max_tasks: 3,
        max_id_length: 8,
        ..Default::default()
    };
    let mut many = String::from("name: many\ntasks:\n");
    for i in 0..4 {
        many.push_str(&format!("  - {{id: t{i}, method: python/execute}}\n"));
    }
    let result = load_with(
        &many,
        "many.yaml",
        &TestCatalog,
        &Map::new(),
        &NoIncludes,
        &limits,
    );
    let (code, text) = only_code(result);
    assert_eq!(code, ErrorCode::InputLimitExceeded);
    assert!(
        text.contains("4 tasks") && text.contains("limits.max_tasks"),
        "{text}"
    );

    let long = "name: long\ntasks:\n  - {id: a_very_long_id, method: python/execute}\n";
    let result = load_with(
        long,
        "long.yaml",
        &TestCatalog,
        &Map::new(),
        &NoIncludes,
        &limits,
    );
    let (code, text) = only_code(result);
    assert_eq!(code, ErrorCode::InputLimitExceeded);
    assert!(text.contains("limits.max_id_length"), "{text}");
}

#[test]
fn a_long_chain_with_far_references_validates_without_recursion() {
    let n = 20_000;
    let mut text = String::from("name: chain\ntasks:\n  - {id: t0, method: python/execute}\n");
    for i in 1..n {
        text.push_str(&format!(
            "  - {{id: t{i}, method: python/execute, dependencies: [t{}], parameters: {{code: \"${{t0.result}}\"}}}}\n",
            i - 1
        ));
    }
    let workflow = load(&text, "chain.yaml", &TestCatalog, &Map::new())
        .unwrap_or_else(|d| panic!("{:#?}", &d[..d.len().min(3)]));
    assert_eq!(workflow.tasks.len(), n);
}

const TRIGGER_TASKS: &str = "tasks:\n  - id: a\n    method: fibonacci\n";

#[test]
fn triggers_of_every_kind_parse() {
    let workflow = load_ok(&format!(
        r#"name: nightly digest
inputs: {{since: "1h", file_path: ""}}
triggers:
  - cron: "0 6 * * 1-5"
    timezone: Europe/Berlin
    inputs: {{since: "24h"}}
    overlap: skip
    catchup: 1h
  - every: 15m
    overlap: buffer_one
  - cron: "@hourly"
  - cron: "*/10 * * * * *"
  - webhook: {{name: new-ticket}}
  - folder: {{path: ./inbox, pattern: "*.pdf", stable: 500ms}}
{TRIGGER_TASKS}"#
    ));
    let kinds: Vec<String> = workflow
        .triggers
        .iter()
        .map(|t| t.kind.describe())
        .collect();
    assert_eq!(
        kinds,
        [
            "cron \"0 6 * * 1-5\" (Europe/Berlin)",
            "every 15m",
            "cron \"@hourly\" (UTC)",
            "cron \"*/10 * * * * *\" (UTC)",
            "webhook new-ticket",
            "folder ./inbox (*.pdf)"
        ]
    );
    assert_eq!(workflow.triggers[0].catchup_ms, Some(3_600_000));
    assert_eq!(workflow.triggers[0].inputs["since"], "24h");
    assert_eq!(
        workflow.triggers[1].overlap,
        crate::triggers::Overlap::BufferOne
    );
    assert_eq!(
        workflow.triggers[1].catchup_ms, None,
        "no catch-up unless asked"
    );
    match &workflow.triggers[5].kind {
        crate::triggers::TriggerKind::Folder { stable_ms, .. } => assert_eq!(*stable_ms, 500),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_triggers_are_reported_with_columns_and_hints() {
    check_problems(
        &format!(
            r#"name: t
inputs: {{since: "1h"}}
triggers:
  - cron: "0 25 * * *"
  - cron: 0 6 * * 1-9
    timezone: "Europe/Berln"
  - every: 500ms
  - every: often
  - cron: "@daily"
    every: 1h
  - webhook: {{name: "bad name"}}
  - every: 1m
    overlap: buffer
    inputs: {{sinse: "2h"}}
    catchup: soon
  - {{}}
{TRIGGER_TASKS}"#
        ),
        expect![[r#"
            4:14 GZ3061 invalid cron expression "0 25 * * *": Component error: Number out of bounds. [Write five fields `minute hour day-of-month month day-of-week` (seconds may come first as a sixth), e.g. "0 6 * * 1-5", or @hourly, @daily, @weekly, @monthly, @yearly.]
            5:19 GZ3061 invalid cron expression "0 6 * * 1-9": Component error: Range out of bounds. [Write five fields `minute hour day-of-month month day-of-week` (seconds may come first as a sixth), e.g. "0 6 * * 1-5", or @hourly, @daily, @weekly, @monthly, @yearly.]
            6:16 GZ3062 `Europe/Berln` is not an IANA time zone [Did you mean `Europe/Berlin`?]
            7:12 GZ3063 `every` is 500 ms; the shortest interval is one second [Write `every:` as a duration of at least one second, e.g. 30s, 15m, 1h.]
            8:12 GZ3063 `every: often` is not a duration [Write `every:` as a duration of at least one second, e.g. 30s, 15m, 1h.]
            9:5 GZ3060 trigger has several kinds (cron, every); each entry is one trigger [Split it into one list entry per kind.]
            11:21 GZ3060 `bad name` is not a webhook name [Use 1-64 letters, digits, `-` or `_`: it becomes /api/v1/hooks/NAME.]
            13:14 GZ3060 `overlap: buffer` is not a policy [Use one of skip, buffer_one, cancel_other, allow_all.]
            14:14 GZ3060 trigger input `sinse` is not an input of the workflow [Did you mean `since`?]
            15:14 GZ3060 `catchup: soon` is not a duration [Write a window such as 1h or 30m, or `none` to skip missed ticks (the default).]
            16:5 GZ3060 trigger has none of cron, every, webhook or folder [Add exactly one of them, e.g. `every: 15m`.]
        "#]],
    );
}
