//! Every `gleitzeit …` command line in the seeds' shell blocks, run for real.
//!
//! The lines are extracted from the seed documents at test time (a new seed
//! line is picked up without touching this file), placeholders (workflow ids,
//! files, folders, hosts) are replaced by real ones the test creates, and each
//! line runs through `bash` against a real SQLite store, the Ollama test
//! double for LLM calls, and real Redis with a worker node for the scale-out
//! lines. Long-running commands (servers, workers, `--follow`, the monitor)
//! are started, checked for their first output and stopped.

mod common;
use common::{free_port, redis_url, tmux, Env};
use gleitzeit_testkit::{DoubleConfig, OllamaDouble};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The vendored copy, checked against the project's shared copy when present.
fn seeds_dir() -> PathBuf {
    let vendored = workspace().join("docs/seeds");
    let shared = workspace().join("../shared/seeds");
    if shared.is_dir() {
        for entry in std::fs::read_dir(&shared).unwrap().flatten() {
            let name = entry.file_name();
            let ours = std::fs::read(vendored.join(&name)).unwrap_or_default();
            assert_eq!(
                ours,
                std::fs::read(entry.path()).unwrap(),
                "docs/seeds/{} differs from the shared seed: copy it over",
                name.to_string_lossy()
            );
        }
    }
    vendored
}

/// One command line from a seed, with where it came from.
#[derive(Debug, Clone)]
struct SeedLine {
    origin: String,
    text: String,
}

/// `gleitzeit` lines in bash/sh/unlabelled fenced blocks, in document order;
/// a quoted argument spanning lines is joined.
fn extract(dir: &Path) -> Vec<SeedLine> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut block: Option<String> = None;
        let mut pending: Option<(usize, String)> = None;
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if let Some(lang) = trimmed.strip_prefix("```") {
                block = match block {
                    None => Some(lang.trim().to_string()),
                    Some(_) => None,
                };
                continue;
            }
            let Some(lang) = &block else { continue };
            if !matches!(lang.as_str(), "bash" | "sh" | "shell" | "console" | "") {
                continue;
            }
            if let Some((start, mut joined)) = pending.take() {
                joined.push('\n');
                joined.push_str(line);
                if joined.matches('"').count() % 2 == 0 {
                    lines.push(SeedLine {
                        origin: format!("{name}:{start}"),
                        text: joined,
                    });
                } else {
                    pending = Some((start, joined));
                }
                continue;
            }
            let command = trimmed.strip_prefix("$ ").unwrap_or(trimmed);
            let words: Vec<&str> = command.split_whitespace().collect();
            let first = words.iter().position(|w| {
                !(w.contains('=') && w.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
            });
            if first.is_none_or(|i| words[i] != "gleitzeit") {
                continue;
            }
            if command.matches('"').count() % 2 == 1 {
                pending = Some((number + 1, command.to_string()));
            } else {
                lines.push(SeedLine {
                    origin: format!("{name}:{}", number + 1),
                    text: command.to_string(),
                });
            }
        }
    }
    lines
}

/// What a line must do beyond exiting 0 with no usage error.
struct Expect {
    codes: &'static [i32],
    contains: &'static [&'static str],
    /// Extra environment for this line.
    env: &'static [(&'static str, &'static str)],
    stdin: Option<String>,
}

const OK: Expect = Expect {
    codes: &[0],
    contains: &[],
    env: &[],
    stdin: None,
};

fn expectation(line: &str, admin_key: &str) -> Expect {
    let has = |s: &str| line.contains(s);
    if has("--help") {
        return Expect {
            contains: &["Usage", "run", "serve"],
            ..OK
        };
    }
    if has("missing_file.csv") {
        // Seed 000 shows this one failing with GZ5001.
        return Expect {
            codes: &[3],
            contains: &["GZ5001"],
            ..OK
        };
    }
    if has("health") {
        // 0 healthy, 1 degraded (seed 000's contract); either is a working check.
        let contains: &'static [&'static str] = if has("json") { &["\"status\""] } else { &[] };
        return Expect {
            codes: &[0, 1],
            contains,
            ..OK
        };
    }
    if line.trim_end() == "gleitzeit auth login" {
        // Typed at the prompt (here: piped in).
        return Expect {
            stdin: Some(format!("{admin_key}\n")),
            contains: &["well-formed"],
            ..OK
        };
    }
    if has("inspect node") {
        return Expect {
            env: &[("GLEITZEIT_BACKEND", "redis")],
            contains: &["executor_1"],
            ..OK
        };
    }
    if has("exec \"print('Hello") {
        return Expect {
            contains: &["Hello Gleitzeit!"],
            ..OK
        };
    }
    if has("errors show GZ1001") {
        return Expect {
            contains: &["GZ1001"],
            ..OK
        };
    }
    if has("--function fibonacci") {
        return Expect {
            contains: &["34"],
            ..OK
        };
    }
    if has("--text") {
        return Expect {
            contains: &["quantum"],
            ..OK
        };
    }
    if has("discover") {
        return Expect {
            contains: &["image", "--batch-folder"],
            ..OK
        };
    }
    if has("inspect workflow") || has("workflow status") || has("workflow get") {
        return Expect {
            contains: &["seed fixture"],
            ..OK
        };
    }
    OK
}

/// Commands that keep running: what to see before stopping them.
fn long_running(line: &str) -> Option<&'static str> {
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| !w.contains('='))
        .collect();
    let command = words.get(1).copied().unwrap_or_default();
    match command {
        "dev" | "start" | "hub" => Some("listening on"),
        "components" => Some("joined"),
        "monitor" | "pro" => Some("Gleitzeit monitor"),
        _ if line.contains("--follow") => Some(""),
        "watch" if line.contains("queue") => Some("queue"),
        _ => None,
    }
}

struct Fixture {
    env: Env,
    /// Each seed document runs in its own folder, as a reader following it would.
    cwd: PathBuf,
    bin_dir: PathBuf,
    vars: Vec<(String, String)>,
    workflow_id: String,
    server_port: u16,
}

impl Fixture {
    fn substitute(&self, line: &str) -> String {
        let examples = workspace().join("examples");
        let home = self.env.home.path();
        let mut text = line
            .replace("wf_abc123", &self.workflow_id)
            .replace("<workflow_id>", &self.workflow_id)
            .replace("WORKFLOW_ID", &self.workflow_id)
            .replace("gzt_xxxxx", "GZ_ADMIN_KEY")
            .replace(
                "/path/to/images",
                &home.join("images").display().to_string(),
            )
            .replace(" /docs ", &format!(" {} ", home.join("docs").display()))
            .replace("examples/", &format!("{}/", examples.display()))
            .replace(
                "http://hub-server:8000",
                &format!("http://127.0.0.1:{}", self.server_port),
            )
            .replace("--port 8001", &format!("--port {}", self.server_port));
        if let Some(key) = self.vars.iter().find(|(k, _)| k == "GZ_ADMIN_KEY") {
            text = text.replace("GZ_ADMIN_KEY", &key.1);
        }
        text
    }

    fn command(&self, line: &str, extra: &[(&str, &str)]) -> Command {
        let cmd = self.env.command();
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut bash = Command::new("bash");
        bash.arg("-c").arg(line).env("PATH", path);
        // The Env's settings (home, no server probing, no colour) plus ours.
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => bash.env(key, value),
                None => bash.env_remove(key),
            };
        }
        bash.current_dir(&self.cwd);
        for (key, value) in &self.vars {
            bash.env(key, value);
        }
        for (key, value) in extra {
            bash.env(key, value);
        }
        bash
    }
}

fn wait_output(child: &mut std::process::Child, want: &str, origin: &str, line: &str) -> String {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0
                || tx2
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
            {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while Instant::now() < deadline {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&chunk);
        }
        if let Ok(Some(status)) = child.try_wait() {
            while let Ok(chunk) = rx.try_recv() {
                seen.push_str(&chunk);
            }
            panic!("{origin}: `{line}` exited early ({status}):\n{seen}");
        }
        let started =
            !seen.trim().is_empty() || deadline - Instant::now() < Duration::from_secs(27);
        if started && seen.contains(want) {
            return seen;
        }
    }
    panic!("{origin}: `{line}` never printed `{want}`:\n{seen}");
}

fn stop(child: &mut std::process::Child) {
    // SIGINT first (servers and workers shut down cleanly), then kill.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

fn run_in_terminal(fixture: &Fixture, line: &str, origin: &str) {
    let session = format!("gz-seed-{}", std::process::id());
    let mut exports = String::new();
    let cmd = fixture.command(line, &[]);
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            exports.push_str(&format!(
                "export {}='{}'; ",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    let script = format!(
        "{exports} cd {}; {line}; sleep 30",
        fixture.env.home.path().display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "150",
        "-y",
        "40",
        &script,
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut screen = String::new();
    while Instant::now() < deadline {
        screen = tmux(&["capture-pane", "-p", "-t", &session]);
        if screen.contains("Gleitzeit monitor") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&["send-keys", "-t", &session, "q"]);
    // Pacing only: the monitor gets a moment to restore the terminal before
    // the session goes; nothing below depends on it.
    std::thread::sleep(Duration::from_millis(300));
    tmux(&["kill-session", "-t", &session]);
    assert!(
        screen.contains("Gleitzeit monitor"),
        "{origin}: `{line}` showed no dashboard:\n{screen}"
    );
}

fn minimal_jpeg() -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
    bytes.extend_from_slice(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    bytes
}

/// The files a seed document's lines name without creating them first.
fn seed_folder(dir: &Path, document: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("photo.jpg"), minimal_jpeg()).unwrap();
    std::fs::write(dir.join("data.csv"), "name,age\nann,17\nbob,42\ncy,18\n").unwrap();
    let python = |name: &str| {
        format!("name: {name}\ntasks:\n  - id: hello\n    method: python/execute\n    parameters: {{code: \"result = 'hello'\"}}\n")
    };
    std::fs::write(dir.join("workflow.yaml"), python("seed workflow")).unwrap();
    if document == "000" {
        // Seed 000 runs `my_workflow.yaml` that its reader wrote; seed 001 has `init` write it.
        std::fs::write(dir.join("my_workflow.yaml"), python("my workflow")).unwrap();
    }
}

#[test]
fn every_seed_command_line_runs() {
    let redis_url = redis_url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let llm = rt
        .block_on(OllamaDouble::start(DoubleConfig::default().with_models([
            "llama3.2:latest",
            "llama3:latest",
            "llava:latest",
        ])))
        .unwrap();
    let env = Env::new();
    let home = env.home.path().to_path_buf();
    let bin_dir = home.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gleitzeit"), bin_dir.join("gleitzeit")).unwrap();

    // Files and folders the seed lines name.
    std::fs::create_dir_all(home.join("images")).unwrap();
    std::fs::write(home.join("images/cat.jpg"), minimal_jpeg()).unwrap();

    std::fs::create_dir_all(home.join("docs")).unwrap();
    std::fs::write(home.join("docs/a.txt"), "Gleitzeit runs workflows.").unwrap();
    std::fs::write(home.join("docs/b.md"), "# Notes\nLocal first.").unwrap();
    // A finished workflow whose task ids are the seeds' example ids.
    let fixture_file = env.write(
        "fixture.yaml",
        "name: seed fixture\ntasks:\n  - id: task_123\n    method: python/execute\n    parameters: {code: \"print('working on the workflow'); result = 1\"}\n  - id: task_456\n    method: python/execute\n    dependencies: [task_123]\n    parameters: {code: \"result = 2\"}\n",
    );
    let run = env
        .run(&["--json", "run", fixture_file.to_str().unwrap()])
        .ok();
    let workflow_id = run.json()["workflow_id"].as_str().unwrap().to_string();

    let prefix = format!("gzseed{}", std::process::id());
    let mut fixture = Fixture {
        cwd: home.clone(),
        env,
        bin_dir,
        vars: vec![
            ("OLLAMA_HOST".into(), llm.url()),
            ("REDIS_URL".into(), redis_url.clone()),
            ("GLEITZEIT_REDIS_PREFIX".into(), prefix.clone()),
        ],
        workflow_id,
        server_port: free_port(),
    };

    // A worker node named as in seed 000, for the scale-out lines.
    let mut worker = fixture
        .command("exec gleitzeit worker --id executor_1 -c 2", &[])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_output(&mut worker, "joined", "fixture", "gleitzeit worker");

    let lines = extract(&seeds_dir());
    assert!(lines.len() > 80, "only {} seed lines found", lines.len());
    let mut admin_key = String::new();
    let mut ran = 0;
    for seed in &lines {
        let document = seed.origin.split('_').next().unwrap_or("seed").to_string();
        fixture.cwd = home.join(format!("seed{document}"));
        if !fixture.cwd.exists() {
            seed_folder(&fixture.cwd, &document);
        }
        let line = fixture.substitute(&seed.text);
        let origin = &seed.origin;
        if let Some(want) = long_running(&line) {
            if want == "Gleitzeit monitor" {
                run_in_terminal(&fixture, &line, origin);
            } else {
                let port = fixture.server_port.to_string();
                let mut child = fixture
                    .command(&line, &[("GLEITZEIT_PORT", &port)])
                    .process_group(0)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let seen = wait_output(&mut child, want, origin, &line);
                stop(&mut child);
                assert!(!seen.contains("panicked"), "{origin}: {seen}");
            }
            ran += 1;
            continue;
        }
        let expect = expectation(&line, &admin_key);
        let mut cmd = fixture.command(&line, expect.env);
        cmd.stdin(if expect.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = &expect.stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        // `… > file.json`: what went to the file is the output to check.
        if let Some((_, target)) = line.rsplit_once(" > ") {
            let file = fixture
                .cwd
                .join(target.split_whitespace().next().unwrap_or_default());
            stdout.push_str(
                &std::fs::read_to_string(&file).unwrap_or_else(|e| {
                    panic!("{origin}: `{line}` wrote no {}: {e}", file.display())
                }),
            );
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let code = output.status.code().unwrap_or(-1);
        let context =
            format!("{origin}: `{line}` exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(expect.codes.contains(&code), "{context}");
        for clap_error in ["unrecognized subcommand", "unexpected argument", "panicked"] {
            assert!(!stderr.contains(clap_error), "{context}");
        }
        for want in expect.contains {
            assert!(
                stdout.contains(want) || stderr.contains(want),
                "expected `{want}` — {context}"
            );
        }
        if line.trim() == "gleitzeit auth init" {
            admin_key = stdout
                .split_whitespace()
                .find(|w| w.starts_with("gzt_"))
                .unwrap_or_else(|| panic!("no key in {context}"))
                .to_string();
            fixture
                .vars
                .push(("GZ_ADMIN_KEY".into(), admin_key.clone()));
        }
        ran += 1;
    }
    stop(&mut worker);
    let _ = Command::new("redis-cli")
        .args([
            "-u",
            &redis_url,
            "--scan",
            "--pattern",
            &format!("{prefix}:*"),
        ])
        .output();
    assert_eq!(ran, lines.len());
}

#[test]
fn extraction_finds_lines_in_shell_blocks_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.txt"),
        "Run `gleitzeit status` inline.\n```bash\n# comment\n$ gleitzeit list\nFOO=1 gleitzeit hub\ngleitzeit exec \"\nprint(1)\n\"\necho gleitzeit\n```\n```yaml\ngleitzeit: no\n```\n",
    )
    .unwrap();
    let lines: Vec<String> = extract(dir.path()).into_iter().map(|l| l.text).collect();
    assert_eq!(
        lines,
        [
            "gleitzeit list",
            "FOO=1 gleitzeit hub",
            "gleitzeit exec \"\nprint(1)\n\""
        ]
    );
}

/// Seed 003 lists `examples/parallel_workflow.yaml`: it exists, and it runs
/// with its three questions independent of each other and the summary after
/// them all.
#[test]
fn the_parallel_example_seed_003_lists_runs() {
    let seed = std::fs::read_dir(seeds_dir())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("003_"))
        .expect("seed 003");
    let text = std::fs::read_to_string(seed.path()).unwrap();
    assert!(text.contains("`examples/parallel_workflow.yaml`"));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let llm = rt
        .block_on(OllamaDouble::start(DoubleConfig::default()))
        .unwrap();
    let env = Env::new();
    let file = workspace().join("examples/parallel_workflow.yaml");
    let output = env
        .command()
        .env("OLLAMA_HOST", llm.url())
        .args(["--json", "run", file.to_str().unwrap()])
        .output()
        .unwrap();
    let run = common::Run::from(output).ok();
    let view = run.json();
    assert_eq!(view["state"], "completed", "{view}");
    let summary = common::task_of(&view, "summary");
    // The double answers "echo: One sentence about X": 5 words, 3 times.
    assert_eq!(summary["result"]["answers"], 3, "{summary}");
    assert_eq!(summary["result"]["words"], 15, "{summary}");
    assert_eq!(llm.stats().chat, 3);
    let tasks = view["tasks"].as_array().unwrap();
    for question in ["rivers", "mountains", "forests"] {
        let task = tasks.iter().find(|t| t["id"] == question).unwrap();
        assert_eq!(task["dependencies"], serde_json::json!([]), "{task}");
    }
}
