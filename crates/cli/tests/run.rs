//! End-to-end runs of the real binary on real files.

mod common;
use common::{examples, Env};
use serde_json::Value;

#[test]
fn quickstart_runs_and_reports() {
    let env = Env::new();
    let file = examples().join("quickstart.yaml");
    let run = env.run(&["run", file.to_str().unwrap()]).ok();
    assert!(
        run.stdout.contains("Workflow \"Quickstart\" completed"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("4/4 tasks completed"), "{}", run.stdout);
    assert!(
        run.stderr.contains("8 numbers, mean"),
        "live output shows task stdout: {}",
        run.stderr
    );
    assert!(
        env.path("gleitzeit.db").exists(),
        "the default store is SQLite in GLEITZEIT_HOME"
    );
}

#[test]
fn seed_001_example_prints_sum_and_average() {
    let env = Env::new();
    let file = examples().join("seed_001_example_workflow.yaml");
    let run = env.run(&["--json", "run", file.to_str().unwrap()]).ok();
    let json = run.json();
    assert_eq!(json["state"], "completed");
    let tasks = json["tasks"].as_array().unwrap();
    let process = &tasks[1];
    let stdout = process["record"]["stdout"].as_str().unwrap();
    assert!(stdout.starts_with("Sum: "), "{stdout}");
    assert!(stdout.contains("Average: "), "{stdout}");
    let numbers = tasks[0]["result"]["numbers"].as_array().unwrap();
    let total: i64 = numbers.iter().map(|n| n.as_i64().unwrap()).sum();
    assert_eq!(process["result"]["total"], total);
    assert_eq!(
        process["result"]["average"].as_f64().unwrap(),
        total as f64 / 5.0
    );
}

#[test]
fn every_python_only_example_runs() {
    let env = Env::new();
    for name in [
        "seed_001_python_provider.yaml",
        "seed_000_functions.yaml",
        "error_handling.yaml",
        "fan_out.yaml",
    ] {
        let file = examples().join(name);
        let run = env.run(&["--json", "run", file.to_str().unwrap()]);
        assert_eq!(run.code, 0, "{name}: {}\n{}", run.stdout, run.stderr);
        assert_eq!(run.json()["state"], "completed", "{name}");
    }
}

#[test]
fn gz_is_the_same_program() {
    let env = Env::new();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gz"))
        .env("GLEITZEIT_HOME", env.home.path())
        .args(["errors", "show", "GZ3007"])
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("cycle"));
}

#[test]
fn inputs_override_and_json_output() {
    let env = Env::new();
    let file = env.write(
        "greet.yaml",
        "name: greet\ninputs: {who: world, n: 1}\ntasks:\n  - id: hi\n    method: python/execute\n    parameters:\n      code: |\n        result = '${inputs.who}' * ${inputs.n}\n",
    );
    let run = env
        .run(&[
            "--json",
            "run",
            file.to_str().unwrap(),
            "--input",
            "who=ab",
            "-i",
            "n=3",
        ])
        .ok();
    assert_eq!(run.json()["tasks"][0]["result"], "ababab");
}

#[test]
fn llm_text_arrives_in_python_as_data_not_code() {
    let env = Env::new();
    let nasty = r#"it's "quoted" """ ''' \ back\slash
new line __import__('os').system('touch PWNED') {x} ${y}"#;
    let file = env.write(
        "inject.yaml",
        &format!(
            "name: inject\ninputs:\n  text: {}\ntasks:\n  - id: source\n    method: python/execute\n    parameters:\n      code: 'result = inputs[\"text\"]'\n  - id: single\n    method: python/execute\n    dependencies: [source]\n    parameters:\n      code: \"result = '${{source}}'\"\n  - id: triple\n    method: python/execute\n    dependencies: [source]\n    parameters:\n      code: |\n        text = \"\"\"${{source}}\"\"\"\n        result = text\n  - id: bare\n    method: python/execute\n    dependencies: [source]\n    parameters:\n      code: |\n        # comment ${{source}}\n        result = ${{source}}\n",
            serde_json::to_string(nasty).unwrap()
        ),
    );
    let run = env.run(&["--json", "run", file.to_str().unwrap()]).ok();
    let json = run.json();
    for (i, task) in json["tasks"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            task["result"],
            Value::String(nasty.to_string()),
            "task {i}: {task}"
        );
    }
    assert!(!env.path("PWNED").exists(), "the text ran as code");
}

#[test]
fn failing_task_exits_1_with_traceback_and_hint() {
    let env = Env::new();
    let file = env.write(
        "fail.yaml",
        "name: fail\ntasks:\n  - id: divide\n    method: python/execute\n    parameters:\n      code: |\n        x = 1\n        y = x / 0\n  - {id: after, method: fibonacci, dependencies: [divide], parameters: {n: 3}}\n",
    );
    let run = env.run(&["run", file.to_str().unwrap()]).code(1);
    assert!(run.stderr.contains("error[GZ2001]"), "{}", run.stderr);
    assert!(run.stderr.contains("ZeroDivisionError"), "{}", run.stderr);
    assert!(run.stderr.contains("hint:"), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("skipped because dependency `divide` failed"),
        "{}",
        run.stdout
    );
}

#[test]
fn run_function_shortcut() {
    let env = Env::new();
    let run = env
        .run(&["run", "--function", "fibonacci", "--args", "n=10"])
        .ok();
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value, serde_json::json!([0, 1, 1, 2, 3, 5, 8, 13, 21, 34]));
    let run = env
        .run(&[
            "run",
            "--function",
            "random_data",
            "--args",
            "data_type=numbers",
            "count=100",
            "min=1",
            "max=1000",
        ])
        .ok();
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 100);
    let run = env
        .run(&[
            "run",
            "--function",
            "analyze_numbers",
            "--args",
            "numbers=[1,5,10,15,20]",
        ])
        .ok();
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(value["mean"], 10.2);
}

#[test]
fn function_errors_are_gz_errors() {
    let env = Env::new();
    let run = env
        .run(&["run", "--function", "fibonaci", "--args", "n=3"])
        .code(2);
    assert!(
        run.stderr.contains("GZ2030") && run.stderr.contains("fibonacci"),
        "{}",
        run.stderr
    );
    let run = env
        .run(&["run", "--function", "fibonacci", "--args", "n=abc"])
        .code(2);
    assert!(run.stderr.contains("GZ2031"), "{}", run.stderr);
    let run = env
        .run(&[
            "run",
            "--function",
            "analyze_data",
            "--args",
            "data=missing_file.csv",
        ])
        .code(3);
    assert!(
        run.stderr.contains("GZ5001") && run.stderr.contains("missing_file.csv"),
        "{}",
        run.stderr
    );
}

#[test]
fn exec_runs_python_directly() {
    let env = Env::new();
    let run = env.run(&["exec", "print('Hello Gleitzeit!')"]).ok();
    assert_eq!(run.stdout, "Hello Gleitzeit!\n");
    let run = env.run(&["exec", "result = {'x': 1}"]).ok();
    assert!(run.stdout.contains("\"x\": 1"), "{}", run.stdout);
    let run = env.run(&["exec", "raise KeyError('nope')"]).code(1);
    assert!(
        run.stderr.contains("GZ2020") && run.stderr.contains("KeyError"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_python_is_reported_before_running() {
    let env = Env::new();
    let file = examples().join("seed_001_example_workflow.yaml");
    let output = env
        .command()
        .env("GLEITZEIT_PYTHON", "/nonexistent/python3")
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("GZ2024") && stderr.contains("hint:"),
        "{stderr}"
    );
}

#[test]
fn list_get_status_after_runs() {
    let env = Env::new();
    let file = examples().join("fan_out.yaml");
    let run = env.run(&["--json", "run", file.to_str().unwrap()]).ok();
    let id = run.json()["workflow_id"].as_str().unwrap().to_string();
    let list = env.run(&["--json", "list"]).ok().json();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["completed"], 5);
    let get = env.run(&["get", &id[..8]]).ok();
    assert!(get.stdout.contains("total"), "{}", get.stdout);
    let get = env.run(&["--json", "get", &id]).ok().json();
    assert_eq!(get["tasks"][4]["result"], 30);
    let status = env.run(&["status"]).ok();
    assert!(status.stdout.contains("completed 1"), "{}", status.stdout);
    let missing = env.run(&["get", "wf_nope"]).code(2);
    assert!(missing.stderr.contains("GZ3021"), "{}", missing.stderr);
}

#[test]
fn ephemeral_runs_leave_no_database() {
    let env = Env::new();
    let file = examples().join("fan_out.yaml");
    env.run(&["run", "--ephemeral", file.to_str().unwrap()])
        .ok();
    assert!(!env.path("gleitzeit.db").exists());
}

/// A Python task of a real run cannot read the store's database or the
/// config file, although it runs as the same user and knows their paths.
#[test]
fn python_tasks_cannot_read_the_store_end_to_end() {
    let env = Env::new();
    env.write(
        "config.yaml",
        "providers:\n  python:\n    isolation: namespaces\n",
    );
    let db = env.path("gleitzeit.db");
    let config = env.path("config.yaml");
    let flow = env.write(
        "peek.yaml",
        &format!(
            "name: peek\ntasks:\n  - id: peek\n    method: python/execute\n    parameters:\n      code: |\n        found = {{}}\n        for path in [{db:?}, {config:?}]:\n            try:\n                found[path] = len(open(path, 'rb').read())\n            except OSError as e:\n                found[path] = type(e).__name__\n        result = found\n",
            db = db.display().to_string(),
            config = config.display().to_string(),
        ),
    );
    let out = env
        .run(&["--json", "run", "--quiet", flow.to_str().unwrap()])
        .ok();
    let json = out.json();
    let found = &json["tasks"][0]["result"];
    assert_eq!(
        found[db.display().to_string()],
        "PermissionError",
        "{found}"
    );
    assert_eq!(
        found[config.display().to_string()],
        "PermissionError",
        "{found}"
    );
    // The run itself stored its result in that database.
    assert!(std::fs::metadata(&db).unwrap().len() > 0);
}
