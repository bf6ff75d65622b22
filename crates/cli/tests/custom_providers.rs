//! Custom JSON-RPC providers through the real binary: from `--provider FILE`
//! and from the providers folder next to the config, `providers show`, and
//! the errors a user meets.

mod common;
use common::Env;

fn calculator() -> std::path::PathBuf {
    common::examples().join("providers/calculator.yaml")
}

#[test]
fn the_example_runs_with_a_provider_file_or_the_providers_folder() {
    let env = Env::new();
    let workflow = common::examples().join("custom_provider.yaml");
    let w = workflow.to_str().unwrap();
    let out = env
        .run(&[
            "--provider",
            calculator().to_str().unwrap(),
            "--json",
            "run",
            w,
        ])
        .ok()
        .json();
    assert_eq!(out["tasks"][0]["result"], 42);
    assert_eq!(out["tasks"][1]["result"]["sum"], 45);
    assert_eq!(out["tasks"][2]["result"], "3 numbers, mean 15.0");

    // Without it the method is unknown at validation, with a hint.
    let unknown = env.run(&["validate", w]).code(2);
    assert!(
        unknown.stderr.contains("GZ3008") && unknown.stderr.contains("calculator/add"),
        "{}",
        unknown.stderr
    );

    // Installed in ~/.gleitzeit/providers/, it is always there.
    let folder = env.path("providers");
    std::fs::create_dir_all(&folder).unwrap();
    for file in ["calculator.yaml", "calculator.py"] {
        std::fs::copy(
            common::examples().join("providers").join(file),
            folder.join(file),
        )
        .unwrap();
    }
    env.run(&["run", "-q", w]).ok();
    let shown = env.run(&["providers", "show", "calculator"]).ok();
    assert!(
        shown.stdout.contains("calculator/stats") && shown.stdout.contains("minItems"),
        "{}",
        shown.stdout
    );
    let missing = env.run(&["providers", "show", "abacus"]).code(2);
    assert!(missing.stderr.contains("calculator"), "{}", missing.stderr);
}

#[test]
fn schema_violations_rpc_errors_and_bad_files_are_reported() {
    let env = Env::new();
    let p = calculator();
    let p = p.to_str().unwrap();
    let bad_params = env.write(
        "bad.yaml",
        "name: b\ntasks:\n  - id: add\n    method: calculator/add\n    parameters: {a: 1, c: 2}\n",
    );
    let run = env
        .run(&["--provider", p, "run", bad_params.to_str().unwrap()])
        .code(1);
    assert!(
        run.stderr.contains("GZ2004") && run.stderr.contains("\"b\" is a required property"),
        "{}",
        run.stderr
    );

    let divide = env.write(
        "divide.yaml",
        "name: d\ntasks:\n  - id: d\n    method: calculator/divide\n    parameters: {a: 1, b: 0}\n",
    );
    let run = env
        .run(&["--provider", p, "run", divide.to_str().unwrap()])
        .code(1);
    assert!(
        run.stderr.contains("GZ2044") && run.stderr.contains("division by zero"),
        "{}",
        run.stderr
    );

    let broken = env.write(
        "broken.yaml",
        "name: python\ntransport: {command: [x]}\nmethods: {a: {}}\n",
    );
    let run = env
        .run(&["--provider", broken.to_str().unwrap(), "providers", "list"])
        .code(2);
    assert!(
        run.stderr.contains("GZ9003") && run.stderr.contains("broken.yaml"),
        "{}",
        run.stderr
    );
}
