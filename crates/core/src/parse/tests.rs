use super::*;
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
