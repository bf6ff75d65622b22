//! Durability and cancellation of the real binary: SIGKILL in the middle of a
//! workflow loses nothing; Ctrl-C cancels cleanly and kills Python children.

mod common;
use common::Env;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chain(env: &Env, side_effects: &std::path::Path, pause: f64) -> std::path::PathBuf {
    env.write("durable.yaml", &common::chain_yaml(side_effects, pause))
}

use common::lines;

fn wait_for(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigkill_then_resume_completes_without_rerunning_completed_tasks() {
    // The uninterrupted run, for the expected results.
    let reference = Env::new();
    let reference_effects = reference.path("effects.txt");
    let file = chain(&reference, &reference_effects, 0.0);
    let expected = reference
        .run(&["--json", "run", file.to_str().unwrap()])
        .ok()
        .json();

    let env = Env::new();
    let effects = env.path("effects.txt");
    let file = chain(&env, &effects, 0.4);
    let mut child = env
        .command()
        .args(["run", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // step2 has started: step0 and step1 are completed and committed.
    wait_for(|| lines(&effects).len() >= 3, "step2 to start");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = lines(&effects);

    let list = env.run(&["--json", "list"]).ok().json();
    assert_eq!(list[0]["state"], "running", "a killed run stays resumable");
    let id = list[0]["id"].as_str().unwrap().to_string();
    let resumed = env.run(&["--json", "resume", &id]).ok().json();
    assert_eq!(resumed["state"], "completed");

    let after = lines(&effects);
    for step in ["step0", "step1"] {
        assert_eq!(
            after.iter().filter(|l| *l == step).count(),
            1,
            "{step} ran twice: {after:?}"
        );
    }
    // The interrupted step may run twice (at-least-once); every later step once.
    for step in ["step3", "step4"] {
        assert_eq!(after.iter().filter(|l| *l == step).count(), 1, "{after:?}");
    }
    assert!(after.len() <= before.len() + 3, "{before:?} -> {after:?}");
    let results = |json: &serde_json::Value| {
        json["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["result"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(results(&resumed), results(&expected));
    assert_eq!(results(&resumed).last().unwrap(), &serde_json::json!(26));
}

#[test]
fn ctrl_c_cancels_and_kills_python_children() {
    let env = Env::new();
    let pid_file = env.path("child.pid");
    let file = env.write(
        "slow.yaml",
        &format!(
            "name: slow\ntasks:\n  - id: sleeper\n    method: python/execute\n    parameters:\n      code: |\n        import os, subprocess, time\n        child = subprocess.Popen(['sleep', '300'])\n        with open({:?}, 'w') as f:\n            f.write(f'{{os.getpid()}} {{child.pid}}')\n        time.sleep(300)\n  - {{id: after, method: fibonacci, dependencies: [sleeper], parameters: {{n: 2}}}}\n",
            pid_file.display().to_string()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_gleitzeit"))
        .env("GLEITZEIT_HOME", env.home.path())
        .env("NO_COLOR", "1")
        .args(["run", file.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(
        || {
            std::fs::read_to_string(&pid_file)
                .map(|s| s.contains(' '))
                .unwrap_or(false)
        },
        "python to start",
    );
    let pids: Vec<i32> = std::fs::read_to_string(&pid_file)
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // SAFETY: sending SIGINT to the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    let mut stderr = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        stderr.push_str(&line.unwrap());
        stderr.push('\n');
    }
    assert!(stderr.contains("Resume with: gleitzeit resume"), "{stderr}");
    for pid in pids {
        wait_for(
            // SAFETY: signal 0 only checks for existence.
            || unsafe { libc::kill(pid, 0) } != 0 || is_zombie(pid),
            "python processes to be killed",
        );
    }
    let list = env.run(&["--json", "list"]).ok().json();
    assert_eq!(list[0]["state"], "cancelled");
    let get = env
        .run(&["--json", "get", list[0]["id"].as_str().unwrap()])
        .ok()
        .json();
    assert_eq!(get["tasks"][0]["state"], "cancelled");
    assert_eq!(get["tasks"][1]["state"], "cancelled");
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[test]
fn cancel_from_another_process() {
    let env = Env::new();
    let file = env.write(
        "wait.yaml",
        "name: wait\ntasks:\n  - id: nap\n    method: python/execute\n    parameters:\n      code: \"import time; time.sleep(120)\"\n",
    );
    let mut child = env
        .command()
        .args(["run", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut id = String::new();
    wait_for(
        || {
            let list = env.run(&["--json", "list", "--state", "running"]);
            match list.json().as_array().and_then(|a| a.first().cloned()) {
                Some(w) => {
                    id = w["id"].as_str().unwrap().to_string();
                    true
                }
                None => false,
            }
        },
        "the workflow to be running",
    );
    let cancel = env.run(&["cancel", &id]).ok();
    assert!(
        cancel.stdout.contains("Asked the process"),
        "{}",
        cancel.stdout
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let get = env.run(&["--json", "get", &id]).ok().json();
    assert_eq!(get["state"], "cancelled");
}
