//! Helpers for end-to-end tests: run the real binary with its own home directory.

#![allow(dead_code)]

// Tests wait for state through this, never for a fixed time; not every
// test binary waits.
#[allow(unused_imports)]
pub use gleitzeit_testkit::poll;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub home: tempfile::TempDir,
}

pub fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// Runs tmux (the test script installs it) and returns what it printed.
pub fn tmux(args: &[&str]) -> String {
    let output = Command::new("tmux")
        .args(args)
        .output()
        .expect("tmux (the test script installs it)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A port nothing listens on right now (the OS picked it and let it go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Redis the scale-out tests use (the test script starts one if needed).
pub fn redis_url() -> String {
    std::env::var("GLEITZEIT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A config pointing the seeds' model names at the real llama.cpp server.
pub fn llama_config(env: &Env) -> PathBuf {
    let url = gleitzeit_testkit::llama_server_url();
    env.write(
        "config.yaml",
        &format!(
            "llm:\n  default_max_tokens: 40\n  endpoints:\n    - name: llama\n      url: {url}\n      kind: openai\n      max_concurrent: 4\n  models:\n    llama3.2: [gemma3]\n    llama3.2:latest: [gemma3]\n    llama3: [gemma3]\n"
        ),
    )
}

impl Env {
    pub fn new() -> Env {
        Env {
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gleitzeit"));
        cmd.env("GLEITZEIT_HOME", self.home.path())
            .env_remove("GLEITZEIT_CONFIG")
            .env_remove("GLEITZEIT_BACKEND")
            .env_remove("GLEITZEIT_DB")
            .env_remove("GLEITZEIT_SQLITE_PATH")
            // Client commands look for a server on GLEITZEIT_PORT; nothing
            // listens on port 1, so tests use their own store unless they
            // name a server.
            .env("GLEITZEIT_PORT", "1")
            .env_remove("GLEITZEIT_HOST")
            .env_remove("GLEITZEIT_SERVER")
            .env_remove("GLEITZEIT_HUB_URL")
            .env("NO_COLOR", "1")
            .current_dir(self.home.path());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let output = self.command().args(args).output().expect("run gleitzeit");
        Run::from(output)
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Five chained Python steps; each appends its name to `effects` and sleeps
/// `pause` seconds, so a kill lands in the middle. Results: 0, 1, 4, 11, 26.
pub fn chain_yaml(effects: &Path, pause: f64) -> String {
    let mut yaml = String::from("name: durable\ntasks:\n");
    for i in 0..5 {
        let deps = if i == 0 {
            String::new()
        } else {
            format!("    dependencies: [step{}]\n", i - 1)
        };
        let previous = if i == 0 {
            "0".to_string()
        } else {
            format!("${{step{}}}", i - 1)
        };
        yaml.push_str(&format!(
            "  - id: step{i}\n    method: python/execute\n{deps}    parameters:\n      code: |\n        import time\n        with open({path:?}, 'a') as f:\n            f.write('step{i}\\n')\n        time.sleep({pause})\n        result = {previous} * 2 + {i}\n",
            path = effects.display().to_string(),
        ));
    }
    yaml
}

/// The lines of a file (none when it does not exist yet).
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// One task of a workflow view (`get --json`, `GET /workflows/{id}`) by id.
pub fn task_of(view: &serde_json::Value, id: &str) -> serde_json::Value {
    view["tasks"]
        .as_array()
        .and_then(|tasks| tasks.iter().find(|t| t["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no task {id} in {view}"))
}

/// `gleitzeit serve` on a free port, killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub url: String,
    /// What `serve` printed from its first line to the `API:` line (the
    /// policy in force, the proxy setting, …).
    pub banner: Vec<String>,
}

impl Server {
    /// A server without API keys (what most tests are not about).
    pub fn start(env: &Env, extra: &[&str]) -> Server {
        let mut args = vec!["--no-auth"];
        args.extend_from_slice(extra);
        Server::spawn(env, &args)
    }

    /// Starts `serve --port 0` with `extra` arguments, reads its URL from
    /// the first line and its banner up to the `API:` line; its log goes to
    /// `server.log` in the home.
    pub fn spawn(env: &Env, extra: &[&str]) -> Server {
        use std::io::BufRead;
        let mut command = env.command();
        command
            .args(["serve", "--port", "0"])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(env.path("server.log"))
                    .expect("server log"),
            );
        let mut child = command.spawn().expect("start server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().expect("a first line").expect("read line");
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in `{first}`"))
            .to_string();
        let mut banner = vec![first];
        for line in lines.by_ref() {
            let line = line.expect("read line");
            let done = line.starts_with("API:");
            banner.push(line);
            if done {
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url, banner }
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits (at most a minute) for the server to exit; its exit code.
    pub fn wait_exit(mut self) -> i32 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status.code().unwrap_or(-1);
            }
            assert!(std::time::Instant::now() < deadline, "server did not exit");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Peak resident memory of the server process so far, in MiB.
    pub fn peak_rss_mb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    }

    /// Kills the server at once (SIGKILL) and waits for it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
