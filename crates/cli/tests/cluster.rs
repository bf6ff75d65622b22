//! Scale-out end to end: a real Redis, `gleitzeit serve --backend redis` and
//! real `gleitzeit worker` processes. Workers are killed with SIGKILL in the
//! middle of a workflow, the server is killed and restarted, tasks kill the
//! workers that run them — and every task still ends with exactly one
//! recorded result.
//!
//! Redis: GLEITZEIT_TEST_REDIS_URL, default redis://127.0.0.1:6379 (the test
//! script starts one if nothing answers). Each test works under its own key
//! prefix and deletes its keys at the end.

mod common;
use common::{free_port, poll, redis_url, Env};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn redis() -> redis::Connection {
    redis_at(&redis_url())
}

fn redis_at(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("Redis URL");
    client.get_connection().unwrap_or_else(|e| {
        panic!(
            "these tests need Redis at {} ({e}); start one with `redis-server` or set GLEITZEIT_TEST_REDIS_URL",
            redis_url()
        )
    })
}

struct Cluster {
    env: Env,
    redis_url: String,
    prefix: String,
    server: Option<Child>,
    url: String,
    workers: Vec<Child>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::on(&redis_url())
    }

    fn on(redis_url: &str) -> Cluster {
        let _ = redis_at(redis_url);
        let tag = uuid::Uuid::new_v4().simple().to_string();
        Cluster {
            env: Env::new(),
            redis_url: redis_url.to_string(),
            prefix: format!("gz-test-{}", &tag[..12]),
            server: None,
            url: String::new(),
            workers: Vec::new(),
        }
    }

    fn command(&self) -> Command {
        let mut cmd = self.env.command();
        cmd.env("REDIS_URL", &self.redis_url)
            .env("GLEITZEIT_REDIS_PREFIX", &self.prefix)
            .env("GLEITZEIT_BACKEND", "redis")
            .env("GLEITZEIT_NODE_TIMEOUT", "2");
        cmd
    }

    /// Runs a client command against the server (or Redis when none runs).
    fn run(&self, args: &[&str]) -> common::Run {
        let mut cmd = self.command();
        if !self.url.is_empty() {
            cmd.args(["--server", &self.url]);
        }
        common::Run::from(cmd.args(args).output().expect("run gleitzeit"))
    }

    fn start_server(&mut self) {
        let mut child = self
            .command()
            .args(["serve", "--port", "0", "--no-auth"])
            .stdout(Stdio::piped())
            .stderr(log_file(&self.env, "server.log"))
            .spawn()
            .expect("start server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a first line").expect("read line");
        self.url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in `{first}`"))
            .to_string();
        std::thread::spawn(move || for _ in lines {});
        self.server = Some(child);
    }

    fn kill_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a worker and waits for its "joined" line.
    fn spawn_worker(&self, args: &[&str]) -> Child {
        let mut child = self
            .command()
            .arg("worker")
            .args(["--heartbeat", "0.2", "--reclaim-after", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(log_file(&self.env, "workers.log"))
            .spawn()
            .expect("start worker");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a first line").expect("read line");
        assert!(
            first.starts_with("Worker "),
            "unexpected first line `{first}`"
        );
        std::thread::spawn(move || for _ in lines {});
        child
    }

    fn add_worker(&mut self, args: &[&str]) {
        let child = self.spawn_worker(args);
        self.workers.push(child);
    }

    fn submit(&self, yaml: &str) -> String {
        let file = self.env.write(
            &format!("flow-{}.yaml", uuid::Uuid::new_v4().simple()),
            yaml,
        );
        let out = self.run(&["submit", file.to_str().unwrap(), "--json"]).ok();
        out.json()["workflow_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no workflow_id in {}", out.stdout))
            .to_string()
    }

    fn workflow(&self, id: &str) -> Value {
        self.run(&["get", id, "--json"]).ok().json()
    }

    /// Waits until the workflow is finished; returns it.
    fn wait_finished(&self, id: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let run = self.run(&["get", id, "--json"]);
            if run.code == 0 {
                let view = run.json();
                if matches!(
                    view["state"].as_str(),
                    Some("completed" | "failed" | "cancelled")
                ) {
                    return view;
                }
            }
            assert!(
                Instant::now() < deadline,
                "workflow {id} did not finish in {limit:?}; server log:\n{}\nworkers log:\n{}",
                std::fs::read_to_string(self.env.path("server.log")).unwrap_or_default(),
                tail(&std::fs::read_to_string(self.env.path("workers.log")).unwrap_or_default())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until at least `n` tasks of the workflow completed.
    fn wait_completed(&self, id: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let view = self.workflow(id);
            let done = view["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["state"] == "completed")
                .count();
            if done >= n {
                return;
            }
            assert!(Instant::now() < deadline, "no progress: {view}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// task id → how many `task_completed` events the store holds for it.
    fn completions(&self, id: &str) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        let mut after = 0u64;
        loop {
            let url = format!(
                "{}/api/v1/workflows/{id}/events?after={after}&limit=1000",
                self.url
            );
            let page: Value = runtime()
                .block_on(async { reqwest::get(&url).await.unwrap().json().await.unwrap() });
            let events = page["events"].as_array().cloned().unwrap_or_default();
            if events.is_empty() {
                return counts;
            }
            for event in &events {
                after = event["seq"].as_u64().unwrap();
                if event["type"] == "task_completed" {
                    let task = event["data"]["task_id"].as_str().unwrap().to_string();
                    *counts.entry(task).or_default() += 1;
                }
            }
        }
    }

    fn nodes(&self) -> Vec<Value> {
        self.run(&["nodes", "--json"]).ok().json()["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.workers {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kill_server();
        let Ok(mut conn) =
            redis::Client::open(self.redis_url.as_str()).and_then(|c| c.get_connection())
        else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query(&mut conn)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
        }
    }
}

fn log_file(env: &Env, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env.path(name))
        .expect("log file")
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `n` independent Python tasks; task `tI` returns I * 3 after `pause` s.
fn fan_yaml(n: usize, pause: f64, requires: &str) -> String {
    let mut yaml = String::from("name: fan\ntasks:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - id: t{i}\n    method: python/execute\n{requires}    parameters:\n      code: |\n        import time\n        time.sleep({pause})\n        result = {i} * 3\n"
        ));
    }
    yaml
}

fn assert_exactly_once(cluster: &Cluster, id: &str, view: &Value, n: usize) {
    assert_eq!(view["state"], "completed", "{view}");
    let tasks = view["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), n);
    for task in tasks {
        let i: i64 = task["id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(task["state"], "completed", "{task}");
        assert_eq!(task["result"], i * 3, "{task}");
    }
    let completions = cluster.completions(id);
    assert_eq!(completions.len(), n, "every task has a recorded result");
    let twice: Vec<_> = completions.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        twice.is_empty(),
        "results recorded more than once: {twice:?}"
    );
}

#[test]
fn workers_killed_every_200ms_lose_no_task_and_record_each_result_once() {
    let mut cluster = Cluster::new();
    cluster.start_server();
    for _ in 0..3 {
        cluster.add_worker(&["--concurrency", "4", "--max-deliveries", "20"]);
    }
    let id = cluster.submit(&fan_yaml(2_000, 0.01, ""));
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20 {
        // The scenario: a worker dies every 200 ms, whatever it is doing.
        std::thread::sleep(Duration::from_millis(200));
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = (rng % 3) as usize;
        let _ = cluster.workers[victim].kill();
        let _ = cluster.workers[victim].wait();
        cluster.workers[victim] =
            cluster.spawn_worker(&["--concurrency", "4", "--max-deliveries", "20"]);
    }
    let view = cluster.wait_finished(&id, Duration::from_secs(300));
    assert_exactly_once(&cluster, &id, &view, 2_000);
    // The killed nodes are noticed (no heartbeat for 2 s) and announced.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lost = cluster
            .nodes()
            .iter()
            .filter(|n| n["state"] == "lost")
            .count();
        if lost == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{lost} of 20 killed workers marked lost"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = cluster
        .run(&["events", "--types", "node_left", "-n", "1000000", "--json"])
        .ok();
    assert_eq!(out.stdout.lines().count(), 20, "{}", out.stdout);
}

#[test]
fn server_restart_while_workers_keep_running() {
    let mut cluster = Cluster::new();
    cluster.start_server();
    cluster.add_worker(&["--concurrency", "4"]);
    cluster.add_worker(&["--concurrency", "4"]);
    let id = cluster.submit(&fan_yaml(300, 0.02, ""));
    // Kill the scheduler once some tasks are done, with work still queued.
    cluster.wait_completed(&id, 30);
    cluster.kill_server();
    // The scenario: workers keep finishing tasks while no scheduler is there
    // to hear about it.
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_server();
    let view = cluster.wait_finished(&id, Duration::from_secs(120));
    assert_exactly_once(&cluster, &id, &view, 300);
}

/// A Redis of the test's own that keeps its data on disk (AOF, fsync on
/// every write), so it can be killed and come back with everything it
/// acknowledged.
struct OwnRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        OwnRedis::start_on(free_port())
    }

    fn start_on(port: u16) -> OwnRedis {
        let mut redis = OwnRedis {
            child: Command::new("true").spawn().unwrap(),
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.kill();
        self.child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (the test script installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection())
            .is_err()
        {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn redis_going_away_mid_run_loses_nothing_and_records_nothing_twice() {
    let mut redis = OwnRedis::start();
    let mut cluster = Cluster::on(&redis.url());
    cluster.start_server();
    cluster.add_worker(&["--concurrency", "4"]);
    cluster.add_worker(&["--concurrency", "4"]);
    let id = cluster.submit(&fan_yaml(300, 0.02, ""));
    cluster.wait_completed(&id, 30);
    // Redis dies; server and workers wait it out with backoff.
    redis.kill();
    // The scenario: Redis stays away long enough for every reconnect to fail
    // a few times.
    std::thread::sleep(Duration::from_millis(1500));
    redis.restart();
    let view = cluster.wait_finished(&id, Duration::from_secs(180));
    assert_exactly_once(&cluster, &id, &view, 300);
}

#[test]
fn requires_routes_tasks_only_to_matching_workers() {
    let mut cluster = Cluster::new();
    cluster.start_server();
    cluster.add_worker(&["--id", "gpu-node", "--gpu"]);
    cluster.add_worker(&["--id", "eu-node", "--labels", "region=eu,tier=large"]);
    cluster.add_worker(&["--id", "plain-node"]);
    let completed = |cluster: &Cluster| -> HashMap<String, u64> {
        cluster
            .nodes()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().to_string(),
                    n["completed"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let gpu = cluster.submit(&fan_yaml(8, 0.0, "    requires: {gpu: true}\n"));
    assert_eq!(
        cluster.wait_finished(&gpu, Duration::from_secs(60))["state"],
        "completed"
    );
    let eu = cluster.submit(&fan_yaml(
        8,
        0.0,
        "    requires:\n      labels: {region: eu}\n",
    ));
    assert_eq!(
        cluster.wait_finished(&eu, Duration::from_secs(60))["state"],
        "completed"
    );
    // Heartbeats carry the counts, so they arrive a beat after the results.
    let counts = poll::until(
        "the heartbeats to count 8 tasks on gpu-node and on eu-node",
        || completed(&cluster),
        |counts| counts.get("gpu-node") == Some(&8) && counts.get("eu-node") == Some(&8),
    );
    assert_eq!(counts["plain-node"], 0, "{counts:?}");

    // Nobody offers gpu + region=us: the task waits, then runs on the node
    // that joins with both.
    let us = cluster.submit(&fan_yaml(
        1,
        0.0,
        "    requires: {gpu: true, labels: {region: us}}\n",
    ));
    // Time for a wrong node to take the task if placement let it: that
    // nothing happens cannot be waited for.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.workflow(&us)["state"], "running");
    cluster.add_worker(&["--id", "us-gpu-node", "--gpu", "--labels", "region=us"]);
    assert_eq!(
        cluster.wait_finished(&us, Duration::from_secs(60))["state"],
        "completed"
    );
    let node = cluster
        .run(&["inspect", "node", "us-gpu-node", "--json"])
        .ok()
        .json();
    assert_eq!(node["labels"]["region"], "us");
    assert_eq!(node["gpu"], true);
}

#[test]
fn a_task_that_kills_its_workers_goes_to_the_dead_letters_and_can_be_retried() {
    let mut cluster = Cluster::new();
    cluster.start_server();
    let marker = cluster.env.path("fixed");
    let yaml = format!(
        "name: poison\ntasks:\n  - id: ok\n    method: python/execute\n    parameters:\n      code: import time; time.sleep(0.5); result = 1\n  - id: boom\n    method: python/execute\n    parameters:\n      code: |\n        import os, signal\n        if not os.path.exists({marker:?}):\n            os.kill(os.getppid(), signal.SIGKILL)\n        result = 'survived'\n",
        marker = marker.display().to_string()
    );
    let worker_args = ["--max-deliveries", "2"];
    cluster.add_worker(&worker_args);
    let id = cluster.submit(&yaml);
    // Keep one worker alive: restart it whenever the poison task kills it.
    let deadline = Instant::now() + Duration::from_secs(120);
    let view = loop {
        if let Ok(Some(_)) = cluster.workers[0].try_wait() {
            cluster.workers[0] = cluster.spawn_worker(&worker_args);
        }
        let view = cluster.workflow(&id);
        if view["state"] != "running" && view["state"] != "pending" {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "poison workflow did not finish: {view}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(view["state"], "failed", "{view}");
    let boom = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "boom")
        .unwrap();
    assert_eq!(boom["error"]["code"], "GZ1006", "{boom}");
    // `ok` was running beside `boom` when the first node died; run alone
    // after that, it finished and is not blamed.
    let ok = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "ok")
        .unwrap();
    assert_eq!(ok["state"], "completed", "{ok}");
    assert_eq!(ok["result"], 1, "{ok}");
    let letters = cluster.run(&["dead-letters", "list", "--json"]).ok().json();
    let letters = letters["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["task_id"], "boom");
    assert_eq!(letters[0]["deliveries"], 3);
    assert_eq!(
        letters[0]["holders"].as_array().unwrap().len(),
        2,
        "{letters:?}"
    );
    let text = cluster.run(&["dead-letters", "list"]).ok().stdout;
    assert!(text.contains("boom") && text.contains("held by"), "{text}");

    // Fixed: retry reopens the workflow and the server runs it to the end.
    std::fs::write(&marker, "").unwrap();
    let entry = letters[0]["id"].as_str().unwrap();
    let out = cluster.run(&["dead-letters", "retry", entry]).ok().stdout;
    assert!(out.contains("resumed"), "{out}");
    let view = cluster.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(view["state"], "completed", "{view}");
    let boom = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "boom")
        .unwrap();
    assert_eq!(boom["result"], "survived");
    let letters = cluster.run(&["dead-letters", "list", "--json"]).ok().json();
    assert_eq!(letters["dead_letters"].as_array().unwrap().len(), 0);
    // Unknown ids are an error with a hint, not a crash.
    let missing = cluster.run(&["dead-letters", "drop", "0-0"]).code(2);
    assert!(
        missing.stderr.contains("dead-letters list"),
        "{}",
        missing.stderr
    );
}

#[test]
fn malformed_queue_entries_go_to_the_dead_letters_and_nothing_crashes() {
    let mut cluster = Cluster::new();
    cluster.start_server();
    cluster.add_worker(&[]);
    let stream = format!("{}:q:python", cluster.prefix);
    let mut conn = redis();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:queues", cluster.prefix))
        .arg(&stream)
        .arg(r#"{"protocol":"python"}"#)
        .query(&mut conn)
        .unwrap();
    for payload in ["not json", r#"{"v":99,"call":{}}"#] {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg("*")
            .arg("m")
            .arg(payload)
            .query(&mut conn)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters = cluster.run(&["dead-letters", "list", "--json"]).ok().json()["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if letters.len() == 2 || Instant::now() > deadline {
            break letters;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters
        .iter()
        .any(|l| l["reason"].as_str().unwrap().contains("unreadable")));
    assert!(letters
        .iter()
        .any(|l| l["reason"].as_str().unwrap().contains("protocol 99")));
    // An unreadable entry cannot be retried, only dropped.
    let id = letters[0]["id"].as_str().unwrap().to_string();
    let refused = cluster.run(&["dead-letters", "retry", &id]).code(2);
    assert!(
        refused.stderr.contains("GZ") && refused.stderr.contains("dead-letters drop"),
        "{}",
        refused.stderr
    );
    cluster.run(&["dead-letters", "drop", &id]).ok();
    // The cluster still works.
    let wf = cluster.submit(&fan_yaml(3, 0.0, ""));
    assert_eq!(
        cluster.wait_finished(&wf, Duration::from_secs(60))["state"],
        "completed"
    );
}

#[test]
fn a_worker_of_another_protocol_version_is_refused() {
    let cluster = Cluster::new();
    let mut conn = redis();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}:cluster", cluster.prefix))
        .arg("protocol")
        .arg("999")
        .query(&mut conn)
        .unwrap();
    let out = cluster.run(&["worker"]);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("GZ1007"), "{}", out.stderr);
    assert!(out.stderr.contains("999"), "{}", out.stderr);
}

#[test]
fn unreachable_redis_is_a_clear_error_without_the_password() {
    let env = Env::new();
    for args in [
        vec!["--backend", "redis", "list"],
        vec!["worker"],
        vec!["--backend", "redis", "nodes"],
    ] {
        let out = env
            .command()
            .args(["--redis-url", "redis://:hunter2@127.0.0.1:1/0"])
            .args(&args)
            .output()
            .unwrap();
        let out = common::Run::from(out);
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("GZ1001"), "{}", out.stderr);
        assert!(out.stderr.contains("127.0.0.1:1"), "{}", out.stderr);
        assert!(
            !out.stderr.contains("hunter2"),
            "password leaked: {}",
            out.stderr
        );
    }
}

#[test]
fn nodes_without_scale_out_says_how_to_get_there() {
    let env = Env::new();
    let out = env.run(&["nodes"]).ok();
    assert!(out.stdout.contains("gleitzeit worker"), "{}", out.stdout);
    let out = env.run(&["inspect", "node", "n1"]).code(2);
    assert!(out.stderr.contains("--backend redis"), "{}", out.stderr);
}

#[test]
fn config_show_hides_the_redis_password() {
    let env = Env::new();
    env.write(
        "config.yaml",
        "persistence:\n  backend: redis\n  redis:\n    host: 10.0.0.5\n    password: s3cret-in-file\n",
    );
    for args in [vec!["config", "show"], vec!["config", "show", "--json"]] {
        let out = env
            .command()
            .env("GLEITZEIT_CONFIG", env.path("config.yaml"))
            .env("REDIS_URL", "redis://:hunter2@10.0.0.5:6379/0")
            .args(&args)
            .output()
            .unwrap();
        let out = common::Run::from(out).ok();
        assert!(out.stdout.contains("10.0.0.5"), "{}", out.stdout);
        assert!(!out.stdout.contains("hunter2"), "{}", out.stdout);
        assert!(!out.stdout.contains("s3cret-in-file"), "{}", out.stdout);
    }
}

#[test]
fn run_on_redis_waits_for_a_worker_and_says_so() {
    let mut cluster = Cluster::new();
    let file = cluster.env.write("flow.yaml", &fan_yaml(5, 0.0, ""));
    let mut child = cluster
        .command()
        .args(["run", "--quiet", "--json"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stderr is read as it comes: the worker joins once the run said it waits.
    let stderr = child.stderr.take().unwrap();
    let (line_sender, line_receiver) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = line_sender.send(line);
        }
        all
    });
    let mut said = String::new();
    poll::until(
        "the run to say that it waits for a worker",
        || {
            said.extend(line_receiver.try_iter().map(|line| line + "\n"));
            said.clone()
        },
        |said| said.contains("no worker node is active"),
    );
    cluster.add_worker(&[]);
    let mut output = child.wait_with_output().unwrap();
    output.stderr = reader.join().unwrap().into_bytes();
    let out = common::Run::from(output).ok();
    assert!(
        out.stderr.contains("no worker node is active"),
        "{}",
        out.stderr
    );
    assert_eq!(out.json()["state"], "completed", "{}", out.stdout);
}

#[test]
fn llm_rate_limits_hold_across_worker_nodes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let llm = rt
        .block_on(gleitzeit_testkit::OllamaDouble::start(
            gleitzeit_testkit::DoubleConfig::default(),
        ))
        .unwrap();
    let mut cluster = Cluster::new();
    // Each node alone would send 4 a second; together they must too.
    cluster.env.write(
        "config.yaml",
        &format!(
            "llm:\n  endpoints:\n    - name: limited\n      url: {}\n      kind: ollama\n      max_concurrent: 16\n      requests_per_second: 4\n",
            llm.url()
        ),
    );
    cluster.start_server();
    cluster.add_worker(&["--id", "node-a", "--concurrency", "16"]);
    cluster.add_worker(&["--id", "node-b", "--concurrency", "16"]);
    let n = 24;
    let mut yaml = String::from("name: limited-fan-out\ntasks:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - id: ask{i}\n    method: llm/chat\n    parameters: {{model: llama3.2, prompt: 'question {i}'}}\n"
        ));
    }
    let id = cluster.submit(&yaml);
    let view = cluster.wait_finished(&id, Duration::from_secs(90));
    assert_eq!(view["state"], "completed", "{view}");
    let times: Vec<Instant> = llm
        .stats()
        .requests_to("/api/chat")
        .map(|r| r.received_at)
        .collect();
    assert_eq!(times.len(), n);
    let busiest = gleitzeit_testkit::busiest_window(&times, Duration::from_secs(1));
    assert!(busiest <= 4, "{busiest} requests within one second");
    // Both nodes did part of the work, so the limit was shared, not one node's.
    // Heartbeats carry the counts, so they arrive a beat after the results.
    poll::until(
        "the heartbeats of both nodes to count completed tasks",
        || cluster.nodes(),
        |nodes| {
            nodes.len() == 2
                && nodes
                    .iter()
                    .all(|node| node["completed"].as_u64().unwrap_or(0) > 0)
        },
    );
}

/// A worker node enforces the grant a call carries, narrowed to its own
/// `files.roots`: the server grants `data/`, the node allows only
/// `data/shared/`, so only files under both are read.
#[test]
fn worker_nodes_read_files_only_under_the_grant_and_their_own_roots() {
    let mut cluster = Cluster::new();
    let data = std::fs::canonicalize(cluster.env.home.path())
        .unwrap()
        .join("data");
    std::fs::create_dir_all(data.join("shared")).unwrap();
    std::fs::write(data.join("shared/a.txt"), "shared text").unwrap();
    std::fs::write(data.join("b.txt"), "server-only text").unwrap();
    cluster.env.write(
        "config.yaml",
        &format!("files:\n  roots: ['{}']\n", data.display()),
    );
    let node_config = cluster.env.write(
        "node.yaml",
        &format!("files:\n  roots: ['{}']\n", data.join("shared").display()),
    );
    cluster.start_server();
    cluster.add_worker(&["--config", node_config.to_str().unwrap()]);
    let id = cluster.submit(&format!(
        "name: files on nodes\ntasks:\n\
         \x20 - {{id: both, method: read_file, parameters: {{path: '{}'}}, on_error: continue}}\n\
         \x20 - {{id: grant_only, method: read_file, parameters: {{path: '{}'}}, on_error: continue}}\n\
         \x20 - {{id: neither, method: read_file, parameters: {{path: /etc/hostname}}, on_error: continue}}\n",
        data.join("shared/a.txt").display(),
        data.join("b.txt").display()
    ));
    let view = cluster.wait_finished(&id, Duration::from_secs(60));
    let task = |name: &str| common::task_of(&view, name);
    assert_eq!(task("both")["result"]["content"], "shared text", "{view}");
    for name in ["grant_only", "neither"] {
        assert_eq!(task(name)["error"]["code"], "GZ6010", "{name}: {view}");
    }
    assert!(!view.to_string().contains("server-only text"), "{view}");
}

/// `docker stop` (SIGTERM) on a worker: it takes nothing new, lets the calls
/// it runs finish and records them, then leaves — with no other node to take
/// its tasks over, the workflow completes only if it drained.
#[test]
fn a_worker_stopped_with_sigterm_finishes_its_running_tasks_before_leaving() {
    let mut cluster = Cluster::new();
    cluster.start_server();
    let mut worker = cluster.spawn_worker(&["--concurrency", "2", "--grace", "60"]);
    let id = cluster.submit(&fan_yaml(2, 1.5, ""));
    // The node's own heartbeat says both calls run (a task the server
    // shows as running may still wait in the queue).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = cluster.nodes();
        if nodes.first().is_some_and(|n| n["running"] == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "tasks never ran: {nodes:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let status = worker.wait().expect("worker exit");
    assert!(status.success(), "worker exited {status:?}");
    let view = cluster.wait_finished(&id, Duration::from_secs(30));
    assert_exactly_once(&cluster, &id, &view, 2);
    let node = &cluster.nodes()[0];
    assert_eq!(node["state"], "left", "{node}");
}

/// A worker (or server) started before its Redis — containers coming up in
/// any order — waits with backoff, says so, and joins once Redis answers.
#[test]
fn a_worker_started_before_redis_waits_with_backoff_and_joins_when_it_answers() {
    let env = Env::new();
    let port = free_port();
    let mut worker = env
        .command()
        .args(["--redis-url", &format!("redis://127.0.0.1:{port}")])
        .arg("worker")
        .env("GLEITZEIT_REDIS_WAIT", "120")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start worker");
    let mut stderr = BufReader::new(worker.stderr.take().expect("stderr")).lines();
    let waiting = stderr
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("waiting for Redis"))
        .expect("a line saying it waits");
    assert!(
        waiting.contains(&format!("redis://127.0.0.1:{port}")) && waiting.contains("next try in"),
        "{waiting}"
    );
    let _redis = OwnRedis::start_on(port);
    let joined = BufReader::new(worker.stdout.take().expect("stdout"))
        .lines()
        .next()
        .expect("a line")
        .expect("read line");
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(joined.starts_with("Worker "), "{joined}");
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("answers (attempt")),
        "{rest:?}"
    );
}

#[test]
fn a_redis_that_never_answers_is_given_up_after_the_wait_with_a_gz_error() {
    let env = Env::new();
    let out = env
        .command()
        .args(["--redis-url", "redis://:hunter2@127.0.0.1:1/0", "worker"])
        .env("GLEITZEIT_REDIS_WAIT", "1")
        .output()
        .unwrap();
    let out = common::Run::from(out);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(out.stderr.contains("waiting for Redis"), "{}", out.stderr);
    assert!(
        out.stderr.contains("GZ1001") && out.stderr.contains("within 1 s"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
}

/// An agent in scale-out: the loop runs in the server, each turn and each
/// tool call is a call of its own on the workers (`task#step`), so no step's
/// outcome is mistaken for another's and none is sent twice.
#[test]
fn an_agents_steps_run_on_workers_one_call_each() {
    // The double serves from this runtime's own thread while the test waits.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let llm = rt
        .block_on(gleitzeit_testkit::OllamaDouble::start(
            gleitzeit_testkit::DoubleConfig::default().with_tool_turns(vec![
                gleitzeit_testkit::ToolTurn::Call(vec![
                    ("count_words".into(), serde_json::json!({"text": "a b c d"})),
                    ("fibonacci".into(), serde_json::json!({"n": 4})),
                ]),
                gleitzeit_testkit::ToolTurn::Call(vec![(
                    "count_words".into(),
                    serde_json::json!({"text": "e f"}),
                )]),
                gleitzeit_testkit::ToolTurn::Answer("Six words.".into()),
            ]),
        ))
        .unwrap();
    let mut cluster = Cluster::new();
    cluster.env.write(
        "config.yaml",
        &format!(
            "llm:\n  health_interval_secs: 0\n  endpoints:\n    - {{name: double, url: '{}', kind: ollama}}\n",
            llm.url()
        ),
    );
    cluster.start_server();
    cluster.add_worker(&["--concurrency", "4"]);
    let id = cluster.submit(
        "name: agent\ntasks:\n  - id: agent\n    method: llm/agent\n    parameters:\n      model: llama3.2\n      prompt: count\n      tools: [{function: count_words}, {function: fibonacci}]\n",
    );
    let view = cluster.wait_finished(&id, Duration::from_secs(60));
    assert_eq!(view["state"], "completed", "{view}");
    let record = &view["tasks"][0]["record"];
    assert_eq!(record["turns"], 3, "{record}");
    let calls = record["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0]["result"]["words"], 4, "{record}");
    assert_eq!(calls[2]["result"]["words"], 2, "{record}");
    assert_eq!(record["response"], "Six words.");
    assert_eq!(llm.stats().chat, 3, "each turn sent once");
}
