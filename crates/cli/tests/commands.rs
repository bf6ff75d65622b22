//! The informational commands: init, errors, functions, config.

mod common;
use common::Env;

#[test]
fn init_writes_runnable_templates() {
    let env = Env::new();
    let run = env.run(&["init", "my_workflow", "--type", "python"]).ok();
    assert!(run.stdout.contains("my_workflow.yaml"));
    let run = env.run(&["--json", "run", "my_workflow.yaml"]).ok();
    assert_eq!(run.json()["state"], "completed");
    // Refuses to overwrite, unless forced.
    let again = env.run(&["init", "my_workflow"]).code(2);
    assert!(again.stderr.contains("GZ9004"), "{}", again.stderr);
    env.run(&["init", "my_workflow", "--force"]).ok();
    // The LLM template's hint names the config key that really exists.
    let llm = env.run(&["init", "llm_hint", "--type", "llm"]).ok();
    let said = format!("{}{}", llm.stdout, llm.stderr);
    assert!(
        said.contains("`llm:`") && !said.contains("providers.llm"),
        "{said}"
    );
    for kind in ["llm", "mixed"] {
        env.run(&["init", kind, "--type", kind]).ok();
        env.run(&["validate", &format!("{kind}.yaml")]).ok();
    }
}

#[test]
fn errors_registry_commands() {
    let env = Env::new();
    let list = env.run(&["errors", "list"]).ok();
    assert!(list.stdout.contains("GZ1001") && list.stdout.contains("GZ9004"));
    let count: usize = list.stdout.lines().filter(|l| l.starts_with("GZ")).count();
    assert!(count >= 25, "{count}");
    let show = env.run(&["errors", "show", "GZ1001"]).ok();
    assert!(show.stdout.contains("Redis") && show.stdout.contains("Resolution"));
    let search = env.run(&["errors", "search", "timeout"]).ok();
    assert!(search.stdout.contains("GZ2002"));
    let domain = env
        .run(&["--json", "errors", "list", "--domain", "workflow"])
        .ok()
        .json();
    assert!(domain
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["domain"] == "workflow"));
    let severe = env
        .run(&["--json", "errors", "list", "--severity", "critical"])
        .ok()
        .json();
    assert!(severe
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["severity"] == "critical"));
    // Stats say what they count: every domain with its range and what it
    // covers, and the counts add up to the registry.
    let stats = env.run(&["errors", "stats"]).ok();
    for line in [
        "execution",
        "GZ2000-GZ2999",
        "LLM endpoints",
        "By severity",
        "retryable",
    ] {
        assert!(stats.stdout.contains(line), "{line}: {}", stats.stdout);
    }
    let stats = env.run(&["--json", "errors", "stats"]).ok().json();
    let domains = stats["domains"].as_object().unwrap();
    let sum: u64 = domains.values().map(|d| d["codes"].as_u64().unwrap()).sum();
    assert_eq!(sum, stats["total"].as_u64().unwrap(), "{stats}");
    // Seed 000 lists the LLM endpoint codes and Python under execution.
    for code in ["GZ2011", "GZ2014", "GZ2024"] {
        let shown = env.run(&["--json", "errors", "show", code]).ok().json();
        assert_eq!(shown["domain"], "execution", "{code}: {shown}");
    }
    let bad = env.run(&["errors", "list", "--domain", "nope"]).code(2);
    assert!(
        bad.stderr.contains("unknown domain") && bad.stderr.contains("infrastructure, execution"),
        "{}",
        bad.stderr
    );
    env.run(&["errors", "validate"]).ok();
    let unknown = env.run(&["errors", "show", "GZ0000"]).code(2);
    assert!(unknown.stderr.contains("GZ9001"));
}

#[test]
fn functions_commands() {
    let env = Env::new();
    let list = env.run(&["--json", "functions", "list"]).ok().json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(names.len() >= 30, "{names:?}");
    for required in [
        "fibonacci",
        "analyze_numbers",
        "random_data",
        "count_words",
        "extract_keywords",
        "csv_filter",
    ] {
        assert!(names.contains(&required), "{required} missing");
    }
    let show = env.run(&["functions", "show", "fibonacci"]).ok();
    assert!(
        show.stdout.contains("arguments") && show.stdout.contains("n "),
        "{}",
        show.stdout
    );
    let missing = env.run(&["functions", "show", "fibonaci"]).code(2);
    assert!(
        missing.stderr.contains("Did you mean `fibonacci`?"),
        "{}",
        missing.stderr
    );
}

#[test]
fn config_init_set_show() {
    let env = Env::new();
    env.run(&["config", "init"]).ok();
    assert!(env.path("config.yaml").exists());
    env.run(&["config", "set", "execution.max_concurrent_tasks", "3"])
        .ok();
    let show = env.run(&["--json", "config", "show"]).ok().json();
    assert_eq!(show["execution"]["max_concurrent_tasks"], 3);
    let bad = env.run(&["config", "set", "execution.nope", "1"]).code(2);
    assert!(bad.stderr.contains("GZ9003"));
    // The bare command shows the config, as in the earlier versions.
    let bare = env.run(&["config"]).ok();
    assert!(
        bare.stdout.contains("max_concurrent_tasks: 3"),
        "{}",
        bare.stdout
    );
}

#[test]
fn help_is_available_for_every_command() {
    let env = Env::new();
    for cmd in [
        "run",
        "resume",
        "validate",
        "exec",
        "init",
        "status",
        "list",
        "get",
        "cancel",
        "config",
        "functions",
        "errors",
    ] {
        let run = env.run(&[cmd, "--help"]).ok();
        assert!(run.stdout.contains("Usage"), "{cmd}");
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `gleitzeit … | head`: the pipe closes while we still print.
    let env = Env::new();
    let mut child = env
        .command()
        .args(["exec", "print('x' * 400000)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
}

/// Seed 003's distributed deployment: `GLEITZEIT_HUB_URL=http://hub-server:8000
/// gleitzeit hub` listens where the URL says, and client commands given the
/// same variable reach it.
#[test]
fn the_hub_listens_where_gleitzeit_hub_url_points() {
    use std::io::BufRead;
    let env = Env::new();
    let port = common::free_port();
    let hub_url = format!("http://127.0.0.1:{port}");
    let mut hub = env
        .command()
        .env_remove("GLEITZEIT_PORT")
        .env("GLEITZEIT_HUB_URL", &hub_url)
        .args(["hub", "--no-auth"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(hub.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    // Keep reading so the hub never writes its banner into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    assert!(
        first.contains(&format!("listening on {hub_url}")),
        "{first}"
    );
    let health = env
        .command()
        .env_remove("GLEITZEIT_PORT")
        .env("GLEITZEIT_HUB_URL", &hub_url)
        .args(["--json", "health"])
        .output()
        .unwrap();
    let _ = hub.kill();
    let _ = hub.wait();
    // The hub answered with its report (degraded here: no LLM endpoint runs
    // in this test, which `health` reports with exit code 1).
    let answer: serde_json::Value = serde_json::from_slice(&health.stdout).unwrap();
    assert_eq!(answer["store"]["ok"], true, "{answer}");
    assert!(answer["uptime_seconds"].is_u64(), "{answer}");

    // A URL that is not one is refused before anything starts.
    let bad = env
        .command()
        .env_remove("GLEITZEIT_PORT")
        .env("GLEITZEIT_HUB_URL", "hub-server:8000")
        .args(["hub", "--no-auth"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("GZ9003") && stderr.contains("GLEITZEIT_HUB_URL"),
        "{stderr}"
    );
}

/// Runs `gleitzeit ARGS` in a real terminal (tmux) with the Env's settings,
/// types `keys` once `prompt` shows, and returns the screen once `done`
/// shows.
fn in_terminal(env: &Env, args: &str, prompt: &str, keys: &str, done: &str) -> String {
    use common::tmux;
    let session = format!("gz-config-{}-{}", std::process::id(), keys.len());
    let mut exports = String::new();
    for (key, value) in env.command().get_envs() {
        match value {
            Some(value) => exports.push_str(&format!(
                "export {}='{}'; ",
                key.to_string_lossy(),
                value.to_string_lossy()
            )),
            None => exports.push_str(&format!("unset {}; ", key.to_string_lossy())),
        }
    }
    let script = format!(
        "{exports} cd {}; {} {args}; sleep 30",
        env.home.path().display(),
        env!("CARGO_BIN_EXE_gleitzeit")
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "160",
        "-y",
        "50",
        &script,
    ]);
    let wait_for = |text: &str| {
        let mut screen = String::new();
        for _ in 0..300 {
            screen = tmux(&["capture-pane", "-p", "-t", &session]);
            if screen.contains(text) {
                return screen;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        tmux(&["kill-session", "-t", &session]);
        panic!("`{text}` never showed:\n{screen}");
    };
    wait_for(prompt);
    tmux(&["send-keys", "-t", &session, keys, "Enter"]);
    let screen = wait_for(done);
    tmux(&["kill-session", "-t", &session]);
    screen
}

/// Seed 001: `gleitzeit config` with no file yet follows a prompt to create
/// the default config; answering no writes nothing; with a file it prints.
#[test]
fn config_at_a_terminal_offers_to_write_the_defaults() {
    let env = Env::new();
    let file = env.path("config.yaml");
    let screen = in_terminal(&env, "config", "[Y/n]", "n", "Nothing written");
    assert!(screen.contains("No config file at"), "{screen}");
    assert!(!file.exists());

    let screen = in_terminal(&env, "config", "[Y/n]", "", "wrote");
    assert!(file.exists(), "{screen}");
    // What was written is the default configuration and reads back.
    env.run(&["config", "set", "execution.max_concurrent_tasks", "3"])
        .ok();
    let shown = env.run(&["--json", "config"]).ok().json();
    assert_eq!(shown["execution"]["max_concurrent_tasks"], 3);
    // With a file there is nothing to offer: a pipe or a terminal just prints.
    let piped = env.run(&["config"]).ok();
    assert!(!piped.stdout.contains("[Y/n]"), "{}", piped.stdout);
}
