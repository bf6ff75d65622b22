//! Bad input: every user-facing failure path ends in a GZ code, a place, a hint
//! and the right exit code — never a panic.

mod common;
use common::Env;

#[test]
fn validate_reports_every_problem_with_positions() {
    let env = Env::new();
    let file = env.write(
        "bad.yaml",
        r#"name: bad
tasks:
  - id: a
    method: python/execute
    dependencies: [c]
    retyr: {max_attempts: 3}
  - id: b
    method: pyhton/execute
    dependencies: [missing]
  - id: c
    method: python/execute
    dependencies: [a]
    parameters: {code: "x = ${b.result}"}
  - id: c
    method: python/execute
    retry: {strategy: sometimes}
"#,
    );
    let run = env.run(&["validate", file.to_str().unwrap()]).code(2);
    for expected in [
        "error[GZ3007]: dependency cycle: a -> c -> a",
        "bad.yaml:6:5",
        "error[GZ3002]: unknown task key `retyr`",
        "Did you mean `retry`?",
        "error[GZ3008]: unknown method `pyhton/execute`",
        "error[GZ3006]",
        "error[GZ3005]: task `c` is defined twice",
        "error[GZ3010]",
        "problems found in",
    ] {
        assert!(
            run.stderr.contains(expected),
            "missing {expected:?} in:\n{}",
            run.stderr
        );
    }
    let json = env
        .run(&["--json", "validate", file.to_str().unwrap()])
        .code(2)
        .json();
    assert_eq!(json["valid"], false);
    assert!(json["problems"].as_array().unwrap().len() >= 6);
}

#[test]
fn validate_accepts_good_files() {
    let env = Env::new();
    let file = common::examples().join("quickstart.yaml");
    let run = env.run(&["validate", file.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("is valid (4 tasks)"), "{}", run.stdout);
}

#[test]
fn malformed_yaml_is_gz3001_with_position() {
    let env = Env::new();
    let file = env.write(
        "broken.yaml",
        "name: x\ntasks:\n  - id: a\n    method: [python\n",
    );
    let run = env.run(&["run", file.to_str().unwrap()]).code(2);
    assert!(run.stderr.contains("error[GZ3001]"), "{}", run.stderr);
    assert!(run.stderr.contains("broken.yaml:"), "{}", run.stderr);
}

#[test]
fn unreadable_and_missing_files() {
    let env = Env::new();
    let run = env.run(&["run", "does-not-exist.yaml"]).code(3);
    assert!(
        run.stderr.contains("GZ5001") && run.stderr.contains("does-not-exist.yaml"),
        "{}",
        run.stderr
    );
    let binary = env.path("binary.yaml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let run = env.run(&["run", binary.to_str().unwrap()]).code(3);
    assert!(run.stderr.contains("GZ5002"), "{}", run.stderr);
}

#[test]
fn corrupt_database_is_gz5004_exit_3_and_left_untouched() {
    let env = Env::new();
    let db = env.path("gleitzeit.db");
    let garbage = vec![b'g'; 4096];
    std::fs::write(&db, &garbage).unwrap();
    let file = common::examples().join("fan_out.yaml");
    let run = env.run(&["run", file.to_str().unwrap()]).code(3);
    assert!(
        run.stderr.contains("error[GZ5004]") && run.stderr.contains("hint:"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "no partial write into a file we do not understand"
    );
}

#[test]
fn locked_database_is_gz5003_exit_3() {
    let env = Env::new();
    let file = common::examples().join("fan_out.yaml");
    env.run(&["run", file.to_str().unwrap()]).ok();
    let db = env.path("gleitzeit.db");
    let mut holder = rusqlite_lock(&db);
    let output = env
        .command()
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("GZ5003"), "{stderr}");
}

/// Holds an exclusive lock on the database from another process (python3's sqlite3).
fn rusqlite_lock(db: &std::path::Path) -> std::process::Child {
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time\nc=sqlite3.connect(sys.argv[1],isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked',flush=True)\ntime.sleep(60)",
            db.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.run(&["run"]).code(2);
    env.run(&["frobnicate"]).code(2);
    let run = env.run(&["run", "x.yaml", "--input", "novalue"]).code(2);
    assert!(run.stderr.contains("GZ3024"), "{}", run.stderr);
    let run = env.run(&["list", "--state", "sleepy"]).code(2);
    assert!(run.stderr.contains("GZ9001"), "{}", run.stderr);
}

#[test]
fn bad_config_is_gz9003() {
    let env = Env::new();
    let config = env.write("cfg.yaml", "execution:\n  max_concurrent_tasks: lots\n");
    let run = env
        .run(&["--config", config.to_str().unwrap(), "status"])
        .code(2);
    assert!(
        run.stderr.contains("GZ9003") && run.stderr.contains("cfg.yaml"),
        "{}",
        run.stderr
    );
}

/// A config file named by GLEITZEIT_CONFIG (a container's mount) must be
/// there: a missing one is an error, not a silent fall-back to the defaults.
#[test]
fn a_config_file_named_by_the_environment_must_exist_and_be_a_file() {
    let env = Env::new();
    let missing = env.path("mounted/config.yaml");
    let run = env
        .command()
        .env("GLEITZEIT_CONFIG", &missing)
        .arg("status")
        .output()
        .unwrap();
    let run = common::Run::from(run);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("GZ5001")
            && run.stderr.contains("GLEITZEIT_CONFIG")
            && run.stderr.contains("mounted/config.yaml"),
        "{}",
        run.stderr
    );

    // What Docker mounts when the host file is missing: a directory.
    std::fs::create_dir_all(&missing).unwrap();
    let run = env
        .command()
        .env("GLEITZEIT_CONFIG", &missing)
        .arg("status")
        .output()
        .unwrap();
    let run = common::Run::from(run);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("GZ5002") && run.stderr.contains("It is a directory"),
        "{}",
        run.stderr
    );

    // `config init` creates the file the variable names.
    let fresh = env.path("fresh/config.yaml");
    env.command()
        .env("GLEITZEIT_CONFIG", &fresh)
        .args(["config", "init"])
        .status()
        .unwrap();
    assert!(fresh.is_file());
    let run = env
        .command()
        .env("GLEITZEIT_CONFIG", &fresh)
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
}

#[test]
fn a_wrong_redis_wait_in_the_environment_is_gz9003() {
    let env = Env::new();
    for value in ["soon", "-1", "NaN"] {
        let run = env
            .command()
            .env("GLEITZEIT_REDIS_WAIT", value)
            .arg("status")
            .output()
            .unwrap();
        let run = common::Run::from(run);
        assert_eq!(run.code, 2, "{value}: {}", run.stderr);
        assert!(
            run.stderr.contains("GZ9003")
                && run
                    .stderr
                    .contains(&format!("GLEITZEIT_REDIS_WAIT={value}")),
            "{value}: {}",
            run.stderr
        );
    }
}

/// A server whose every answer is `body`, whatever was asked.
fn answering_everything_with(body: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                request.push(byte[0]);
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn a_malformed_server_answer_is_an_error_naming_the_endpoint_not_empty_output() {
    let env = Env::new();
    let url = answering_everything_with(r#"{"status": "healthy", "keys": "not a list"}"#);
    let run = env.run(&["--server", &url, "auth", "keys", "list"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("GZ1002") && run.stderr.contains("/api/v1/auth/keys"),
        "{}",
        run.stderr
    );
}
