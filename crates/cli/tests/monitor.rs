//! `gleitzeit monitor` driven in a real terminal (tmux): it shows workflows and
//! their tasks live, streams an LLM task's tokens, drills in with Enter, filters
//! with `/`, cancels with `c` after a confirmation, and quits with `q`.

mod common;
use common::{poll, tmux, Env};
use gleitzeit_testkit::{DoubleConfig, OllamaDouble};
use std::process::Command;
use std::time::{Duration, Instant};

struct Session(String);

impl Session {
    fn start(name: &str, command: &str) -> Session {
        let session = format!("gz-{name}-{}", std::process::id());
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "40",
            command,
        ]);
        Session(session)
    }

    fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-t", &self.0])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend_from_slice(keys);
        tmux(&args);
    }

    /// Waits until the screen shows `text`; panics with the last screen if not.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut screen = String::new();
        while Instant::now() < deadline {
            screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("`{text}` never appeared; last screen:\n{screen}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.0]);
    }
}

/// CPU seconds a process has used (utime + stime from /proc).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[test]
fn monitor_follows_drills_in_filters_cancels_and_quits() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let llm = rt
        .block_on(OllamaDouble::start(
            DoubleConfig::default().with_token_delay(Duration::from_millis(150)),
        ))
        .unwrap();
    let env = Env::new();
    let words: Vec<String> = (1..=60).map(|i| format!("word{i}")).collect();
    let talk = env.write(
        "talk.yaml",
        &format!(
            "name: talk\ntasks:\n  - id: prep\n    method: python/execute\n    parameters: {{code: 'result = 1'}}\n  - id: chat\n    method: llm/chat\n    dependencies: [prep]\n    parameters: {{model: llama3.2, prompt: '{}'}}\n",
            words.join(" ")
        ),
    );
    let slow = env.write(
        "slow.yaml",
        "name: sleeper\ntasks:\n  - id: nap\n    method: python/execute\n    parameters: {code: 'import time; time.sleep(120)'}\n",
    );
    let done = env.write(
        "done.yaml",
        "name: finished-one\ntasks:\n  - id: quick\n    method: python/execute\n    parameters: {code: 'result = 42'}\n",
    );
    env.run(&["run", done.to_str().unwrap()]).ok();
    // Two workflows running in other processes while the monitor watches.
    let vars = format!(
        "GLEITZEIT_HOME={} GLEITZEIT_PORT=1 OLLAMA_HOST={} NO_COLOR=1",
        env.home.path().display(),
        llm.url()
    );
    let bin = env!("CARGO_BIN_EXE_gleitzeit");
    let mut sleeper = env
        .command()
        .env("OLLAMA_HOST", llm.url())
        .args(["run", "-q", slow.to_str().unwrap()])
        .spawn()
        .unwrap();
    let monitor = Session::start(
        "monitor",
        &format!("env {vars} {bin} monitor; echo MONITOR-EXIT=$?; sleep 30"),
    );
    monitor.wait_for("Gleitzeit monitor");
    let screen = monitor.wait_for("sleeper");
    assert!(screen.contains("finished-one"), "{screen}");
    assert!(screen.contains("local sqlite store"), "{screen}");
    // The providers pane is filled by a background probe; wait for it rather than race it.
    let screen = monitor.wait_for("python");
    assert!(screen.contains("none — tasks run in-process"), "{screen}");

    let mut talker = env
        .command()
        .env("OLLAMA_HOST", llm.url())
        .args(["run", "-q", talk.to_str().unwrap()])
        .spawn()
        .unwrap();
    // The newest workflow comes first (listed while still pending, so wait for
    // its row to say running); drill in and watch its tokens stream.
    poll::until(
        "the row of `talk` to say running",
        || monitor.screen(),
        |screen| {
            screen
                .lines()
                .any(|row| row.contains("talk") && row.contains("running"))
        },
    );
    monitor.keys(&["Home", "Enter"]);
    monitor.wait_for("Tasks of “talk”");
    monitor.keys(&["j"]);
    // The pane opens before the first words arrive.
    poll::until(
        "tokens on screen while streaming",
        || monitor.screen(),
        |screen| screen.contains("Live tokens") && screen.contains("word"),
    );
    let screen = monitor.wait_for("task_completed");
    assert!(screen.contains("chat"), "{screen}");
    let status = talker.wait().unwrap();
    assert!(status.success());
    poll::until(
        "the finished workflow with its result",
        || monitor.screen(),
        |screen| screen.contains("completed · 2/2 tasks") && screen.contains("Result"),
    );

    // Back to the list, filter to the sleeper, cancel it (n first, then y).
    monitor.keys(&["Escape"]);
    monitor.wait_for("Workflows (3)");
    monitor.keys(&["/"]);
    monitor.keys(&["-l", "sleep"]);
    monitor.keys(&["Enter"]);
    let screen = monitor.wait_for("filter “sleep”");
    assert!(!screen.contains("finished-one"), "{screen}");
    monitor.keys(&["c"]);
    monitor.wait_for("Cancel “sleeper”?");
    monitor.keys(&["n"]);
    monitor.wait_for("not cancelled");
    monitor.keys(&["c"]);
    monitor.wait_for("Cancel “sleeper”?");
    monitor.keys(&["y"]);
    monitor.wait_for("cancelled");
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "the cancelled run exits non-zero");

    // Idle: nothing changes, so the monitor sleeps instead of redrawing.
    let pid = tmux(&["list-panes", "-t", &monitor.0, "-F", "#{pane_pid}"]);
    let children = Command::new("pgrep")
        .args(["-f", &format!("{bin} monitor")])
        .output()
        .unwrap();
    let pid = String::from_utf8_lossy(&children.stdout)
        .lines()
        .next()
        .map(str::to_string)
        .unwrap_or(pid.trim().to_string());
    let before = cpu_seconds(&pid);
    // The scenario: CPU time is measured over a stretch of idle time.
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_seconds(&pid) - before;
    assert!(used < 1.0, "idle monitor used {used:.2} CPU seconds in 4 s");

    monitor.keys(&["q"]);
    let screen = monitor.wait_for("MONITOR-EXIT=");
    assert!(screen.contains("MONITOR-EXIT=0"), "{screen}");
}

#[test]
fn monitor_refuses_without_a_terminal() {
    let env = Env::new();
    let run = env.run(&["monitor"]).code(2);
    assert!(run.stderr.contains("needs a terminal"), "{}", run.stderr);
    assert!(run.stderr.contains("events --follow"), "{}", run.stderr);
    let run = env.run(&["pro"]).code(2);
    assert!(run.stderr.contains("needs a terminal"), "{}", run.stderr);
}

/// `serve --no-auth` on a fixed port; returns the child once it listens.
fn serve(env: &Env, port: u16) -> std::process::Child {
    let mut child = env
        .command()
        .args(["serve", "--no-auth", "--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("listening"), "{first}");
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn monitor_reads_a_server_and_reconnects_after_it_went_away() {
    let env = Env::new();
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = serve(&env, port);
    let file = env.write(
        "served.yaml",
        "name: served-flow\ntasks:\n  - id: one\n    method: python/execute\n    parameters: {code: 'result = 1'}\n",
    );
    env.run(&["--server", &url, "submit", file.to_str().unwrap(), "--wait"])
        .ok();
    let monitor = Session::start(
        "monitor-server",
        &format!(
            "env GLEITZEIT_HOME={} NO_COLOR=1 {} --server {url} monitor; echo MONITOR-EXIT=$?; sleep 30",
            env.home.path().display(),
            env!("CARGO_BIN_EXE_gleitzeit")
        ),
    );
    let screen = monitor.wait_for("served-flow");
    assert!(screen.contains(&format!("server {url}")), "{screen}");

    server.kill().unwrap();
    server.wait().unwrap();
    monitor.wait_for("disconnected");
    let mut server = serve(&env, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut screen = monitor.screen();
    while screen.contains("disconnected") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        screen = monitor.screen();
    }
    assert!(
        !screen.contains("disconnected"),
        "banner stays after the server is back:\n{screen}"
    );
    // New work shows up through the resumed connection.
    let again = env.write(
        "again.yaml",
        "name: after-restart\ntasks:\n  - id: one\n    method: python/execute\n    parameters: {code: 'result = 2'}\n",
    );
    env.run(&[
        "--server",
        &url,
        "submit",
        again.to_str().unwrap(),
        "--wait",
    ])
    .ok();
    monitor.wait_for("after-restart");
    monitor.keys(&["q"]);
    assert!(monitor.wait_for("MONITOR-EXIT=").contains("MONITOR-EXIT=0"));
    server.kill().unwrap();
    let _ = server.wait();
}
