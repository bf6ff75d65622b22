//! End-to-end runs of `when`, `on_skip` and `for_each` through the real binary.

mod common;
use common::Env;
use serde_json::{json, Value};

/// The `--json` record of task `id`.
fn task<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["id"] == id))
        .unwrap_or_else(|| panic!("no task `{id}` in {json}"))
}

#[test]
fn false_condition_skips_the_task_and_dependants_unless_on_skip_run() {
    let env = Env::new();
    let file = env.write(
        "gates.yaml",
        r#"name: gates
inputs: {mode: fast}
tasks:
  - id: check
    method: python/execute
    params: {code: "result = {'ok': False, 'score': 3}"}
  - id: gated
    method: python/execute
    dependencies: [check]
    when: "${check.result.ok} == true"
    params: {code: "result = 'ran'"}
  - id: downstream
    method: python/execute
    dependencies: [gated]
    params: {code: "result = 'must not run'"}
  - id: tolerant
    method: python/execute
    dependencies: [downstream]
    on_skip: run
    params:
      code: |
        result = {'was_none': ${downstream.result} is None, 'seen': inputs['downstream']}
  - id: scored
    method: python/execute
    dependencies: [check]
    when: "${check.result.score} >= 3 and ${inputs.mode} in ['fast', 'slow'] and not ${check.ok}"
    params: {code: "result = 'scored'"}
"#,
    );
    let run = env.run(&["--json", "run", file.to_str().unwrap()]).ok();
    let json = run.json();
    assert_eq!(json["state"], "completed", "{json}");
    assert_eq!(task(&json, "gated")["state"], "skipped");
    assert_eq!(
        task(&json, "gated")["attempt"],
        0,
        "a skipped task never ran"
    );
    assert_eq!(task(&json, "downstream")["state"], "skipped");
    assert_eq!(task(&json, "tolerant")["state"], "completed");
    assert_eq!(
        task(&json, "tolerant")["result"],
        json!({"was_none": true, "seen": null})
    );
    assert_eq!(task(&json, "scored")["result"], "scored");

    // The human output says why.
    let run = env.run(&["run", file.to_str().unwrap()]).ok();
    assert!(
        run.stdout.contains("`when` condition is false"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("skipped because dependency `gated` was skipped"),
        "{}",
        run.stdout
    );
}

#[test]
fn condition_type_mismatch_fails_the_task_with_gz3026() {
    let env = Env::new();
    let file = env.write(
        "mismatch.yaml",
        "name: mismatch\ntasks:\n  - {id: text, method: python/execute, params: {code: \"result = '5'\"}}\n  - id: compare\n    method: python/execute\n    dependencies: [text]\n    when: \"${text.result} > 3\"\n    params: {code: 'result = 1'}\n",
    );
    let run = env.run(&["run", file.to_str().unwrap()]).code(1);
    assert!(run.stderr.contains("GZ3026"), "{}", run.stderr);
    assert!(
        run.stderr.contains("two numbers or two texts"),
        "{}",
        run.stderr
    );
}

#[test]
fn invalid_condition_is_a_validation_error_with_its_column() {
    let env = Env::new();
    let file = env.write(
        "bad.yaml",
        "name: bad\ntasks:\n  - id: a\n    method: python/execute\n    when: \"${inputs.n} => 3\"\n",
    );
    let run = env.run(&["validate", file.to_str().unwrap()]).code(2);
    assert!(run.stderr.contains("GZ3025"), "{}", run.stderr);
    assert!(run.stderr.contains("bad.yaml:5:"), "{}", run.stderr);
}

#[test]
fn fan_in_keeps_item_order_whatever_the_finishing_order() {
    let env = Env::new();
    let file = env.write(
        "fan.yaml",
        r#"name: fan
tasks:
  - id: list
    method: python/execute
    params: {code: "result = [3, 1, 2, 0]"}
  - id: slow_first
    method: python/execute
    dependencies: [list]
    for_each: "${list.result}"
    max_parallel: 4
    params:
      code: |
        import time
        time.sleep(0.15 * ${item})
        result = {'item': ${item}, 'index': ${index}, 'same': inputs['item'] == ${item}}
  - id: sums
    method: sum
    for_each: [[1, 2], [3, 4], []]
    params: {numbers: "${item}"}
  - id: labels
    method: python/execute
    for_each: range(3)
    params: {code: "result = 'n${index}'"}
  - id: fan_in
    method: python/execute
    dependencies: [slow_first, sums, labels]
    params:
      code: |
        result = [x['item'] for x in ${slow_first.result}] + ${sums.result} + ${labels}
"#,
    );
    let run = env.run(&["--json", "run", file.to_str().unwrap()]).ok();
    let json = run.json();
    assert_eq!(
        task(&json, "slow_first")["result"],
        json!([
            {"item": 3, "index": 0, "same": true},
            {"item": 1, "index": 1, "same": true},
            {"item": 2, "index": 2, "same": true},
            {"item": 0, "index": 3, "same": true},
        ])
    );
    assert_eq!(
        task(&json, "fan_in")["result"],
        json!([3, 1, 2, 0, 3, 7, 0, "n0", "n1", "n2"])
    );
}

#[test]
fn ten_thousand_items_complete_and_fan_in() {
    let env = Env::new();
    let file = env.write(
        "many.yaml",
        r#"name: many
tasks:
  - id: prime
    method: is_prime
    for_each: range(10000)
    params: {n: "${item}"}
  - id: count
    method: python/execute
    dependencies: [prime]
    params:
      code: |
        flags = ${prime.result}
        result = {'items': len(flags), 'primes': sum(1 for f in flags if f), 'seven': flags[7]}
"#,
    );
    let run = env.run(&["--json", "run", file.to_str().unwrap()]).ok();
    let json = run.json();
    assert_eq!(
        task(&json, "count")["result"],
        json!({"items": 10000, "primes": 1229, "seven": true})
    );
}

#[test]
fn for_each_reference_that_is_not_a_list_fails_with_gz3027() {
    let env = Env::new();
    let file = env.write(
        "notlist.yaml",
        "name: notlist\ntasks:\n  - {id: one, method: python/execute, params: {code: 'result = 5'}}\n  - id: each\n    method: python/execute\n    dependencies: [one]\n    for_each: \"${one.result}\"\n    params: {code: 'result = 1'}\n",
    );
    let run = env.run(&["run", file.to_str().unwrap()]).code(1);
    assert!(run.stderr.contains("GZ3027"), "{}", run.stderr);
    assert!(run.stderr.contains("a number (5)"), "{}", run.stderr);
}

#[test]
fn failing_instance_names_its_item_and_a_retry_reruns_only_failed_ones() {
    let env = Env::new();
    let marks = env.path("marks");
    std::fs::create_dir(&marks).unwrap();
    let file = env.write(
        "flaky.yaml",
        &format!(
            r#"name: flaky
tasks:
  - id: each
    method: python/execute
    for_each: [a, b, c]
    retry: {{max_attempts: 2, base_delay: 0, jitter: false}}
    params:
      code: |
        import os
        mark = os.path.join({marks:?}, inputs['item'])
        with open(mark, 'a') as f:
            f.write('x')
        if inputs['item'] == 'b' and os.path.getsize(mark) == 1:
            raise ValueError('first try of b fails')
        result = inputs['item'].upper()
"#,
            marks = marks.display().to_string()
        ),
    );
    let run = env.run(&["--json", "run", file.to_str().unwrap()]).ok();
    assert_eq!(task(&run.json(), "each")["result"], json!(["A", "B", "C"]));
    let runs = |name: &str| std::fs::read_to_string(marks.join(name)).unwrap().len();
    assert_eq!((runs("a"), runs("b"), runs("c")), (1, 2, 1));

    let file = env.write(
        "broken.yaml",
        "name: broken\ntasks:\n  - id: each\n    method: python/execute\n    for_each: [1, 0, 2]\n    params: {code: 'result = 1 / ${item}'}\n",
    );
    let run = env.run(&["run", file.to_str().unwrap()]).code(1);
    assert!(run.stderr.contains("item 1 of 3"), "{}", run.stderr);
    assert!(run.stderr.contains("ZeroDivisionError"), "{}", run.stderr);
}

#[test]
fn cached_results_are_reused_across_processes_until_cleared() {
    let env = Env::new();
    let mark = env.path("runs");
    let file = env.write(
        "cached.yaml",
        &format!(
            r#"name: cached
inputs: {{n: 6}}
tasks:
  - id: slow
    method: python/execute
    cache: true
    params:
      code: |
        with open({mark:?}, 'a') as f:
            f.write('x')
        result = ${{inputs.n}} * 7
  - id: squares
    method: python/execute
    for_each: range(3)
    cache: {{ttl: 1h}}
    params:
      code: |
        with open({mark:?}, 'a') as f:
            f.write('i')
        result = ${{item}} ** 2
"#,
            mark = mark.display().to_string()
        ),
    );
    let runs = || std::fs::read_to_string(&mark).unwrap_or_default();
    let first = env
        .run(&["--json", "run", file.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(task(&first, "slow")["result"], 42);
    assert_eq!(task(&first, "squares")["result"], json!([0, 1, 4]));
    assert_eq!(runs().len(), 4);

    let second = env
        .run(&["--json", "run", file.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(task(&second, "slow")["result"], 42);
    assert_eq!(task(&second, "slow")["record"]["cached"], true);
    assert_eq!(task(&second, "squares")["result"], json!([0, 1, 4]));
    assert_eq!(runs().len(), 4, "nothing ran again");

    // Other parameters are another key. Python code can read every workflow
    // input (the `inputs` dict), so inputs are part of its parameters.
    env.run(&["run", "-q", file.to_str().unwrap(), "--input", "n=7"])
        .ok();
    assert_eq!(runs().len(), 8);

    env.run(&["run", "-q", "--no-cache", file.to_str().unwrap()])
        .ok();
    assert_eq!(runs().len(), 12, "--no-cache runs everything");

    let stats = env.run(&["--json", "cache", "stats"]).ok().json();
    assert_eq!(stats["entries"], 8, "{stats}");
    let cleared = env.run(&["--json", "cache", "clear"]).ok().json();
    assert_eq!(cleared["removed"], 8);
    env.run(&["run", "-q", file.to_str().unwrap()]).ok();
    assert_eq!(runs().len(), 16, "after clear everything runs again");
    let text = env.run(&["cache", "stats"]).ok();
    assert!(text.stdout.contains("4 cached results"), "{}", text.stdout);
}

#[test]
fn control_flow_example_runs() {
    let env = Env::new();
    let file = common::examples().join("control_flow.yaml");
    let run = env.run(&["--json", "run", file.to_str().unwrap()]).ok();
    let json = run.json();
    assert_eq!(task(&json, "square")["result"], json!([9, 64, 225, 16]));
    assert_eq!(task(&json, "never")["state"], "skipped");
    assert_eq!(
        task(&json, "report")["result"],
        json!({"total": 314, "never": null})
    );
}

#[test]
fn sub_workflow_runs_with_inputs_and_returns_its_outputs() {
    let env = Env::new();
    std::fs::create_dir(env.path("lib")).unwrap();
    env.write(
        "lib/child.yaml",
        r#"name: child
inputs: {base: 1}
tasks:
  - id: double
    method: python/execute
    params: {code: "result = ${inputs.base} * 2"}
  - id: words
    method: python/execute
    params: {code: "result = ['a', 'b']"}
outputs:
  doubled: "${double.result}"
  summary: "${inputs.base} -> ${double}"
  words: "${words}"
"#,
    );
    let parent = env.write(
        "parent.yaml",
        r#"name: parent
tasks:
  - id: seed
    method: python/execute
    params: {code: "result = 21"}
  - id: call
    method: workflow/run
    dependencies: [seed]
    params:
      file: lib/child.yaml
      inputs: {base: "${seed.result}"}
  - id: use
    method: python/execute
    dependencies: [call]
    params: {code: "result = ${call.result.doubled} + len(${call.words})"}
"#,
    );
    let run = env.run(&["--json", "run", parent.to_str().unwrap()]).ok();
    let json = run.json();
    assert_eq!(
        task(&json, "call")["result"],
        json!({"doubled": 42, "summary": "21 -> 42", "words": ["a", "b"]})
    );
    assert_eq!(task(&json, "use")["result"], 44);
    // The child is a stored workflow of its own.
    let list = env.run(&["--json", "list"]).ok().json();
    let text = list.to_string();
    assert!(
        text.contains("\"child\"") && text.contains("\"parent\""),
        "{text}"
    );
}

#[test]
fn sub_workflow_cycle_is_a_validation_error() {
    let env = Env::new();
    env.write(
        "a.yaml",
        "name: a\ntasks:\n  - id: to_b\n    method: workflow/run\n    params: {file: b.yaml}\n",
    );
    env.write(
        "b.yaml",
        "name: b\ntasks:\n  - id: back\n    method: workflow/run\n    params: {file: ./a.yaml}\n",
    );
    let a = env.path("a.yaml");
    let run = env.run(&["validate", a.to_str().unwrap()]).code(2);
    assert!(run.stderr.contains("GZ3028"), "{}", run.stderr);
    assert!(run.stderr.contains("b.yaml:5:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("a.yaml -> ") && run.stderr.contains("b.yaml -> "),
        "the cycle is printed: {}",
        run.stderr
    );
    let run = env.run(&["run", a.to_str().unwrap()]).code(2);
    assert!(run.stderr.contains("GZ3028"), "{}", run.stderr);

    env.write(
        "self.yaml",
        "name: s\ntasks:\n  - {id: me, method: workflow/run, params: {file: self.yaml}}\n",
    );
    let run = env
        .run(&["validate", env.path("self.yaml").to_str().unwrap()])
        .code(2);
    assert!(run.stderr.contains("GZ3028"), "{}", run.stderr);
    env.write(
        "missing.yaml",
        "name: m\ntasks:\n  - {id: x, method: workflow/run, params: {file: nope.yaml}}\n",
    );
    let run = env
        .run(&["validate", env.path("missing.yaml").to_str().unwrap()])
        .code(2);
    assert!(run.stderr.contains("GZ5001"), "{}", run.stderr);
}
